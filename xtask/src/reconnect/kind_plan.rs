//! `reconnect --platform kind --dry-run`: the session, then per variant the fleet with
//! its accept-queue sidecars, the keep-alive Job and the rolling deploy, then the
//! teardown; every object exactly as the kind platform applies it. Nothing is executed.

use super::profile::{self, ReconnectProfile, VARIANTS};
use anyhow::Result;
use zerodrop_platform::kind::objects::Rendered;
use zerodrop_platform::kind::plan::{self, Plan, AWAITED_PLACEHOLDER};
use zerodrop_platform::kind::{load_job, rollout, KindOptions};

pub fn plan(opts: &KindOptions, p: &ReconnectProfile) -> Result<Plan> {
    let mut out = plan::session(opts)?;
    for (index, (name, close)) in VARIANTS.into_iter().enumerate() {
        let (queue, schema) = profile::names(&opts.run_id, index, name);
        let env = p.stage_env(&queue, &schema, index);
        let render = opts.stage_render(&env);
        let stage = p.stage(close);
        out.section(format!("Variant {name} (ZD_KEEPALIVE_CLOSE): queue {queue}, schema {schema}"));
        out.api("delete any api/worker deployment left over, wait until their pods are gone");
        out.api(
            "watch pods and the api Service's EndpointSlices; stream every pod's log to logs/<variant>/<pod>.log \
             and each api pod's `queues` sidecar to logs/<variant>/<pod>.queues.log",
        );
        let objects = zerodrop_manifests::stage(&stage, &render);
        out.apply(format!("the fleet of variant {name}, api pods with the accept-queue sidecar"), &objects);
        out.api(format!("wait for deployments api and worker and {} ready api endpoints", env.api_replicas));
        let target = load_job::service_target(&render, &Rendered::all(&objects))?;
        let args = load_job::keepalive_args(&p.load, &target, &[AWAITED_PLACEHOLDER.to_string()]);
        let job = load_job::job_object(opts, &render, env.index, args);
        out.apply(format!("the keep-alive Job {}", job.name()), std::slice::from_ref(&job));
        out.api("wait for its `load begins:` log line (the data-plane gate behind it)");
        out.api(format!(
            "after the ramp and the steady part ({} s): patch deployments api and worker: {}",
            (p.load.ramp + p.steady).as_secs(),
            rollout::restart_patch("<now, RFC 3339>")
        ));
        out.api("wait for both rollouts, then for every terminating pod to exit");
        out.api(format!(
            "wait for the Job's pod to end and read its result from the chunk lines between `{} ...` and `{}`",
            load_job::BEGIN,
            load_job::END
        ));
        out.api(
            "merge the sidecars' `zdq <unix_ms> <queued> <max> <ListenOverflows> <ListenDrops>` lines into \
             one accept-queue series over the run",
        );
        out.api(format!("delete deployments api, worker and job {}", job.name()));
    }
    plan::teardown(&mut out, opts);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use zerodrop_platform::kind::plan::Step;

    /// Every object the plan applies parses strictly, each variant's api pods carry the
    /// sidecar, and the keep-alive Job runs the profile against the api Service.
    #[test]
    fn the_plan_applies_sidecars_and_a_keepalive_job_per_variant() {
        let opts =
            KindOptions::new(None, false, "20261205-120000".into(), "t1".into(), PathBuf::from("/nonexistent/zd"));
        let p = ReconnectProfile::standard();
        let plan = plan(&opts, &p).unwrap();
        let mut sidecars = 0;
        let mut jobs = Vec::new();
        for s in &plan.steps {
            let Step::Apply { yaml, .. } = s else { continue };
            for o in zerodrop_manifests::parse_strict(yaml).unwrap() {
                let json = o.to_json();
                if o.kind() == "Deployment" && o.name() == "api" {
                    let init = json.pointer("/spec/template/spec/initContainers/0").unwrap();
                    assert_eq!(init["name"], zerodrop_manifests::QUEUES_CONTAINER);
                    assert_eq!(init["restartPolicy"], "Always", "a native sidecar: {init}");
                    assert_eq!(init["args"][0], "queues");
                    sidecars += 1;
                }
                if o.kind() == "Job" {
                    let args: Vec<String> =
                        serde_json::from_value(json.pointer("/spec/template/spec/containers/0/args").unwrap().clone())
                            .unwrap();
                    jobs.push(args);
                }
            }
        }
        assert_eq!(sidecars, 2, "one fleet per variant");
        assert_eq!(jobs.len(), 2);
        for args in &jobs {
            assert_eq!(args[0], "keepalive");
            let at = |k: &str| args.iter().position(|a| a == k).map(|i| args[i + 1].as_str());
            assert_eq!(at("--target"), Some("api.zerodrop-20261205-120000.svc.cluster.local:80"));
            assert_eq!(at("--clients"), Some("2400"));
            assert_eq!(at("--out"), Some("-"));
            assert_eq!(at("--await-pods"), Some(AWAITED_PLACEHOLDER));
        }
        let text = plan.render();
        assert!(text.contains("zerodrop.20261205-120000.reconnect.at-once"), "{text}");
        assert!(text.contains("$ kind delete cluster"), "the teardown is planned: {text}");
    }
}
