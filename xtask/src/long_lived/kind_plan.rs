//! `long-lived --platform kind --dry-run`: the kind platform's plan (the session and
//! the teardown from `zerodrop_platform::kind::plan`) with the run's own fleet, its
//! clients' Job exactly as applied, and the control requests between. Nothing is
//! executed.

use anyhow::Result;
use zerodrop_platform::kind::long_lived::{self as ll, CONTROL_PORT, NO_NEW_PATH, STOP_PATH};
use zerodrop_platform::kind::objects::Rendered;
use zerodrop_platform::kind::plan::{self, Plan, AWAITED_PLACEHOLDER};
use zerodrop_platform::kind::{load_job, KindOptions};
use zerodrop_platform::long_lived::Spec;
use zerodrop_platform::StageEnv;
use zerodrop_stages::Stage;

pub fn plan(opts: &KindOptions, stage: &Stage, env: &StageEnv, spec: &Spec) -> Result<Plan> {
    let mut p = plan::session(opts)?;
    let render = opts.stage_render(env);
    p.section(format!("The fleet ({}): queue {}, schema {}", stage.name, env.queue, env.schema));
    p.api("declare the queue and its dead-letter queue, create the ledger schema (through the port-forwards)");
    p.api("delete any api/worker deployment left over, wait until their pods are gone");
    p.api("watch pods and the api Service's EndpointSlices; stream every pod's log to logs/<pod>.log");
    let objects = zerodrop_manifests::stage(stage, &render);
    p.apply(format!("stage {} with drain budget {} s", stage.name, stage.api.drain_budget.as_secs()), &objects);
    p.api(format!(
        "wait for deployments api and worker (rollout condition) and {} ready api endpoints",
        env.api_replicas
    ));

    p.section("The clients, in the cluster");
    let target = load_job::service_target(&render, &Rendered::all(&objects))?;
    let args = ll::args(spec, &target, &[AWAITED_PLACEHOLDER.to_string()]);
    let job = load_job::job_object(opts, &render, env.index, args);
    p.apply(format!("the long-lived Job {}", job.name()), std::slice::from_ref(&job));
    p.api(format!(
        "the Job first probes GET /healthz through the api Service until every ready api pod has answered \
         (--await-pods, at most {} s); then wait for its `load begins:` log line",
        load_job::GATE_TIMEOUT.as_secs()
    ));
    p.api("hold 15 s: streams and operations on the old pods");

    p.section("The rolling deploy and the control requests");
    p.api(format!("patch deployments api and worker: {}", zerodrop_platform::kind::rollout::restart_patch("<now>")));
    p.api(format!(
        "wait for both rollouts, then for every terminating pod to exit (up to its grace, {} s, + 60 s), then 3 s",
        stage.pod.grace.as_secs()
    ));
    p.api(format!(
        "port-forward (kube-rs) to the Job's pod :{CONTROL_PORT} (its loopback): `POST {NO_NEW_PATH}` (no new streams \
         or operations; streams end)"
    ));
    p.api(format!(
        "wait up to {} s (the longest operation + 30 s) for the Job to end; past that, `POST {STOP_PATH}` the same way \
         (what is still in flight is abandoned, counted as such)",
        spec.longest_op().as_secs() + 30
    ));
    p.api(format!(
        "reassemble the counts from the checksummed chunk lines between `{} ...` and `{}` of its log",
        load_job::BEGIN,
        load_job::END
    ));
    p.api(format!("delete deployments api, worker and job {}; write report.md and report.json", job.name()));
    plan::teardown(&mut p, opts);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::PathBuf;
    use zerodrop_platform::kind::plan::Step;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: super::super::Args,
    }

    fn the_plan(line: &str) -> Plan {
        let a = Cli::try_parse_from(line.split_whitespace()).unwrap().a;
        let opts = KindOptions::new(None, false, "20261205-120000".into(), "t1".into(), PathBuf::from("/nonexistent"));
        let drain = std::time::Duration::from_secs(a.drain_s);
        plan(&opts, &super::super::stage(drain), &super::super::env("20261205-120000"), &super::super::spec(&a))
            .unwrap()
    }

    #[test]
    fn the_plan_applies_the_fleet_and_the_clients_job_with_its_long_lived_args() {
        let p = the_plan("x --platform kind --dry-run --drain-s 90 --streams 10 --op-clients 8");
        let mut applied = Vec::new();
        let mut job_args = None;
        for s in &p.steps {
            if let Step::Apply { yaml, .. } = s {
                for o in zerodrop_manifests::parse_strict(yaml).unwrap() {
                    applied.push(format!("{}/{}", o.kind(), o.name()));
                    if o.kind() == "Job" {
                        job_args = o.to_json().pointer("/spec/template/spec/containers/0/args").cloned();
                    }
                }
            }
        }
        for o in ["Deployment/api", "Deployment/worker", "Service/api", "Job/load-150-20261205-120000"] {
            assert!(applied.contains(&o.to_string()), "{o} not applied: {applied:?}");
        }
        let args: Vec<String> = serde_json::from_value(job_args.unwrap()).unwrap();
        let flag = |f: &str| args.iter().position(|a| a == f).map(|i| args[i + 1].clone());
        assert_eq!(args[0], "long-lived");
        assert_eq!(flag("--target").as_deref(), Some("api.zerodrop-20261205-120000.svc.cluster.local:80"));
        assert_eq!(flag("--streams").as_deref(), Some("10"));
        assert_eq!(flag("--op-clients").as_deref(), Some("8"));
        assert_eq!(flag("--op-lengths").as_deref(), Some("13500ms,85500ms"));
        assert_eq!(flag("--await-pods").as_deref(), Some(AWAITED_PLACEHOLDER));
        let text = p.render();
        let no_new = text.find("`POST /no-new`").unwrap();
        let stop = text.find("`POST /stop`").unwrap();
        let teardown = text.find("$ kind delete cluster").unwrap();
        assert!(text.find("terminationGracePeriodSeconds: 113").is_some(), "the drain's grace: {text}");
        assert!(no_new < stop && stop < teardown, "{text}");
        assert!(text.contains(":7070"), "{text}");
    }
}
