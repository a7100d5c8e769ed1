//! When is a rolling deploy done? Our own condition, checked on every watch event of
//! the Deployment (never a sleep loop):
//!
//! - the controller has seen the latest spec: `metadata.generation ==
//!   status.observedGeneration` (kube-runtime's stock `is_deployment_completed` only
//!   reads the `Progressing` condition, which can still describe the previous
//!   generation right after a change);
//! - every replica runs the new template and is available: `updatedReplicas ==
//!   availableReplicas == spec.replicas`;
//! - no old replica is left: `status.replicas == spec.replicas` (old pods being
//!   deleted no longer count; waiting for them to exit is `wait_terminations`).

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, Condition};
use std::time::Duration;

/// The annotation whose change rolls the pods, as `kubectl rollout restart` does
/// with its own.
pub const RESTARTED_AT: &str = "zerodrop.dev/restartedAt";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    Done,
    /// Not yet, and why.
    Waiting(String),
}

/// The condition, on one observed Deployment. `min_generation` is the generation our
/// own change produced, so an object read from a cache older than the change can
/// never count as done.
pub fn rollout_state(d: &Deployment, min_generation: i64) -> RolloutState {
    let generation = d.metadata.generation.unwrap_or(0);
    if generation < min_generation {
        return RolloutState::Waiting(format!("generation {generation} is older than our change ({min_generation})"));
    }
    let Some(st) = &d.status else { return RolloutState::Waiting("no status yet".into()) };
    let observed = st.observed_generation.unwrap_or(0);
    if observed != generation {
        return RolloutState::Waiting(format!("the controller has observed generation {observed}, not {generation}"));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    if updated != want {
        return RolloutState::Waiting(format!("{updated} of {want} replicas updated"));
    }
    if total != want {
        return RolloutState::Waiting(format!(
            "{} old replica(s) remaining ({total} counted, {want} wanted)",
            total - want
        ));
    }
    if available != want {
        return RolloutState::Waiting(format!("{available} of {want} replicas available"));
    }
    RolloutState::Done
}

/// [`rollout_state`] as a kube-runtime [`Condition`].
pub fn rollout_complete(min_generation: i64) -> impl Condition<Deployment> {
    move |d: Option<&Deployment>| matches!(d.map(|d| rollout_state(d, min_generation)), Some(RolloutState::Done))
}

/// Waits (on a watch) until `name` satisfies [`rollout_complete`]; on timeout the
/// error says what it was still waiting for.
pub async fn wait_complete(api: &Api<Deployment>, name: &str, min_generation: i64, timeout: Duration) -> Result<()> {
    let waited =
        tokio::time::timeout(timeout, await_condition(api.clone(), name, rollout_complete(min_generation))).await;
    match waited {
        Ok(r) => {
            r.with_context(|| format!("watching deployment {name}"))?;
            Ok(())
        }
        Err(_) => {
            let why = match api.get_opt(name).await {
                Ok(Some(d)) => match rollout_state(&d, min_generation) {
                    RolloutState::Waiting(w) => w,
                    RolloutState::Done => "done just now".into(),
                },
                Ok(None) => "the deployment does not exist".into(),
                Err(e) => format!("could not read it: {e}"),
            };
            anyhow::bail!("deployment {name} did not complete its rollout within {timeout:?}: {why}")
        }
    }
}

/// The patch that rolls the pods: a new value of [`RESTARTED_AT`] in the pod template.
pub fn restart_patch(at: &str) -> serde_json::Value {
    serde_json::json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: at } } } } })
}

/// Triggers a rolling deploy of `name`; returns the generation it produced.
pub async fn restart(api: &Api<Deployment>, name: &str, at: &str) -> Result<i64> {
    // A strategic-merge patch, not an apply: an apply of just this annotation would
    // tell the API server that the field manager no longer wants the rest of the spec.
    let d = api
        .patch(
            name,
            &PatchParams { field_manager: Some(super::FIELD_MANAGER.into()), ..PatchParams::default() },
            &Patch::Strategic(restart_patch(at)),
        )
        .await
        .with_context(|| format!("patching deployment {name} to restart its pods"))?;
    d.metadata.generation.with_context(|| format!("deployment {name} has no generation after the patch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(name: &str) -> Vec<(String, Deployment)> {
        let all: serde_json::Value = serde_json::from_str(include_str!("testdata/deployments.json")).unwrap();
        all[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["note"].as_str().unwrap().to_string(), serde_json::from_value(c["object"].clone()).unwrap()))
            .collect()
    }

    #[test]
    fn a_rollout_is_done_only_when_the_new_generation_is_observed_updated_available_and_alone() {
        let seq = recorded("rollout");
        let states: Vec<(String, RolloutState)> = seq.iter().map(|(n, d)| (n.clone(), rollout_state(d, 2))).collect();
        let expect = [
            ("stale observedGeneration", "the controller has observed generation 1, not 2"),
            ("updated but old replicas remaining", "1 old replica(s) remaining (4 counted, 3 wanted)"),
            ("updated, not yet available", "2 of 3 replicas available"),
        ];
        for ((note, state), (want_note, why)) in states.iter().zip(expect) {
            assert_eq!(note, want_note);
            assert_eq!(state, &RolloutState::Waiting(why.to_string()), "{note}");
        }
        assert_eq!(states.last().unwrap().1, RolloutState::Done, "all updated and available");
        assert_eq!(states.len(), 4);
    }

    #[test]
    fn the_stock_condition_would_have_said_done_too_early() {
        // The stale object still carries the previous rollout's
        // Progressing=True/NewReplicaSetAvailable condition.
        let (_, stale) = &recorded("rollout")[0];
        assert!(kube::runtime::wait::conditions::is_deployment_completed().matches_object(Some(stale)));
        assert!(!rollout_complete(2).matches_object(Some(stale)));
        assert!(!rollout_complete(2).matches_object(None));
    }

    #[test]
    fn an_object_older_than_our_change_never_counts() {
        let (_, done) = recorded("rollout").pop().unwrap();
        assert_eq!(rollout_state(&done, 2), RolloutState::Done);
        assert!(matches!(rollout_state(&done, 3), RolloutState::Waiting(w) if w.contains("older than our change")));
    }

    #[test]
    fn the_restart_patch_touches_only_the_template_annotation() {
        let p = restart_patch("2026-11-23T13:00:00Z");
        assert_eq!(
            p.pointer("/spec/template/metadata/annotations/zerodrop.dev~1restartedAt").unwrap(),
            "2026-11-23T13:00:00Z"
        );
        assert_eq!(p["spec"].as_object().unwrap().len(), 1);
    }
}
