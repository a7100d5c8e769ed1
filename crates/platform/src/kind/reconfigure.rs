//! [`RolloutWithEnv`] on a cluster: each chosen Deployment read, patched with
//! `fleet_control::rollout_patch` (the restart annotation plus the env on every
//! container, merged by name, so it stays in the template for every later rollout),
//! and waited for with the platform's own rollout condition.

use super::{fleet_control, rollout, KindPlatform, DEPLOYMENTS};
use crate::local::pod::App;
use crate::reconfigure::RolloutWithEnv;
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use std::time::{Duration, Instant};

/// The Deployments a rollout of `only` (or of both) patches.
pub fn targets(only: Option<App>) -> Vec<&'static str> {
    DEPLOYMENTS.into_iter().filter(|d| only.is_none_or(|a| a.name() == *d)).collect()
}

/// The patch for one Deployment as read from the API server.
pub fn patch_for(d: &Deployment, at: &str, env: &[(String, String)]) -> serde_json::Value {
    fleet_control::rollout_patch(d, at, env)
}

impl RolloutWithEnv for KindPlatform {
    async fn rollout_with_env(&mut self, env: &[(String, String)], only: Option<App>) -> Result<Duration> {
        self.fleet()?;
        let api = self.deployments();
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .context("formatting the restart time")?;
        let t0 = Instant::now();
        let pp = PatchParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() };
        let mut generations = Vec::new();
        for name in targets(only) {
            let d = api.get(name).await.with_context(|| format!("reading deployment {name}"))?;
            let patched = api
                .patch(name, &pp, &Patch::Strategic(patch_for(&d, &at, env)))
                .await
                .with_context(|| format!("patching deployment {name} with {env:?}"))?;
            let g = patched.metadata.generation.with_context(|| format!("deployment {name} has no generation"))?;
            tracing::info!(deployment = name, generation = g, ?env, "rolling deploy with a changed environment");
            generations.push((name, g));
        }
        let waits = generations.iter().map(|(d, g)| rollout::wait_complete(&api, d, *g, self.roll_timeout));
        futures::future::try_join_all(waits).await?;
        Ok(t0.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_stages::{Stage, StageName};

    /// The worker Deployment exactly as the platform applies it, read back as the API
    /// server would return it.
    fn worker() -> Deployment {
        let opts = super::super::KindOptions::new(
            None,
            false,
            "20261205-160000".into(),
            "t1".into(),
            std::path::PathBuf::from("/nonexistent"),
        );
        let objects = zerodrop_manifests::stage(&Stage::get(StageName::SurgeJitter), &opts.render_options("q", "s"));
        let rendered = super::super::objects::Rendered::all(&objects);
        let w = super::super::objects::find(&rendered, "Deployment", "worker").expect("a worker Deployment");
        serde_json::from_value(w.json.clone()).expect("a Deployment in the API's shape")
    }

    #[test]
    fn only_the_worker_is_patched_when_only_the_worker_is_asked_for() {
        assert_eq!(targets(Some(App::Worker)), ["worker"]);
        assert_eq!(targets(Some(App::Api)), ["api"]);
        assert_eq!(targets(None), ["api", "worker"]);
    }

    #[test]
    fn the_patch_sets_the_env_on_every_container_of_the_worker_and_restarts_it() {
        let d = worker();
        let env = [("ZD_LEDGER_WRITES".to_string(), "both".to_string())];
        let p = patch_for(&d, "2026-12-05T16:00:00Z", &env);
        assert_eq!(
            p.pointer("/spec/template/metadata/annotations/zerodrop.dev~1restartedAt").unwrap(),
            "2026-12-05T16:00:00Z"
        );
        let names: Vec<&str> = d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let patched = p.pointer("/spec/template/spec/containers").unwrap().as_array().unwrap();
        assert_eq!(patched.len(), names.len());
        for (c, name) in patched.iter().zip(&names) {
            assert_eq!(c["name"], *name);
            assert_eq!(c["env"], serde_json::json!([{"name": "ZD_LEDGER_WRITES", "value": "both"}]));
        }
    }
}
