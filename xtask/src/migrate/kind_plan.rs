//! `migrate --platform kind --dry-run`: the session, then per variant the fleet, and
//! per step its load Job, its schema step (through the port-forward to PostgreSQL)
//! and the worker Deployment's patch exactly as `RolloutWithEnv` sends it; then the
//! teardown. Nothing is executed.

use super::plan::{self, VARIANTS};
use super::variant::Settings;
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use zerodrop_platform::kind::objects::{find, Rendered};
use zerodrop_platform::kind::plan::{self as kplan, Plan, AWAITED_PLACEHOLDER};
use zerodrop_platform::kind::{load_job, reconfigure, KindOptions};

pub fn plan(opts: &KindOptions, s: &Settings) -> Result<Plan> {
    let mut p = kplan::session(opts)?;
    for (index, migration_plan) in VARIANTS.into_iter().enumerate() {
        let name = migration_plan.as_str();
        let env = super::variant::stage_env(s, &opts.run_id, index, migration_plan);
        let schema = env.schema.clone();
        let render = opts.stage_render(&env);
        p.section(format!("Variant {name}: queue {}, schema {schema}", env.queue));
        p.api(format!("declare the queues; sqlx migrator (search_path={schema}): schema version 1 (0001_ledger)"));
        let objects = zerodrop_manifests::stage(&s.stage, &render);
        p.apply(format!("the fleet ({}), workers without ZD_LEDGER_WRITES (old)", s.stage.name), &objects);
        let rendered = Rendered::all(&objects);
        let worker: Deployment = serde_json::from_value(
            find(&rendered, "Deployment", "worker").context("no worker Deployment")?.json.clone(),
        )?;
        let target = load_job::service_target(&render, &rendered)?;
        for (i, step) in plan::steps(migration_plan).iter().enumerate() {
            let prefix = format!("{}-{name}-s{}", opts.run_id, i + 1);
            let args = load_job::args(&s.load, &target, &prefix, &[AWAITED_PLACEHOLDER.to_string()]);
            let job = load_job::job_object_nth(opts, &render, env.index, i as u32, args);
            p.api(format!("step {}: {}", i + 1, step.name));
            if i > 0 {
                let earlier = load_job::job_name_nth(&opts.run_id, env.index, i as u32 - 1);
                p.api(format!("delete the previous step's load Job {earlier} (finished, its result read back)"));
            }
            p.apply(format!("the step's load Job {}", job.name()), std::slice::from_ref(&job));
            p.api(format!("publish {} jobs/s with known amounts to {} (with confirms)", s.feed_per_sec, env.queue));
            if let Some(v) = step.migrate_to {
                let m = migration_plan.step(v).context("a step of the plan")?;
                p.api(format!("after {} s: sqlx migrator to version {v} ({})", s.trigger.as_secs(), m.name));
            }
            if let Some(w) = step.deploy {
                let e = [("ZD_LEDGER_WRITES".to_string(), w.as_str().to_string())];
                let patch = reconfigure::patch_for(&worker, "<now, RFC 3339>", &e);
                p.api(format!("patch deployment worker (strategic merge): {patch}"));
                p.api("wait for its rollout, then for every terminating worker pod to exit");
            }
            p.api(format!(
                "wait for the Job's result; drain the queue; reconcile every accepted id through `{}`",
                step.reads.as_str()
            ));
        }
        p.api("delete deployments api and worker; drop the queue and the schema");
    }
    kplan::teardown(&mut p, opts);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_plan_patches_the_worker_env_once_per_deploy_step_after_each_migration() {
        let opts = KindOptions::new(None, false, "20261205-160000".into(), "t1".into(), PathBuf::from("/nonexistent"));
        let (s, _) = super::super::settings(true, false);
        let text = plan(&opts, &s).unwrap().render();
        let both = text.find("\"name\":\"ZD_LEDGER_WRITES\",\"value\":\"both\"").expect(&text);
        let v2 = text.find("version 2 (0002_add_amount_cents)").unwrap();
        let v4 = text.find("version 4 (0004_amount_cents_required)").unwrap();
        let new = text[v4..].find("\"value\":\"new\"").map(|i| i + v4).unwrap();
        let rename = text.find("version 2 (0002_rename_amount)").unwrap();
        assert!(v2 < both && both < v4 && v4 < new && new < rename, "{text}");
        assert_eq!(text.matches("patch deployment worker").count(), 3);
        assert!(text.contains("$ kind delete cluster"), "{text}");
    }
}
