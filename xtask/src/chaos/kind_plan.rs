//! `chaos --platform kind --dry-run`: the session, the broker relay, then per variant
//! the fleet with the relay (exactly as `deploy` applies it), the load Job, and each
//! fault change as the `PUT /fault` request the platform sends through its
//! port-forward; then the teardown. Nothing is executed.

use super::profile::{self, ChaosProfile, VARIANTS};
use anyhow::Result;
use std::time::Duration;
use zerodrop_manifests::{RenderOptions, RELAY_CONTROL_PORT, RELAY_NAME};
use zerodrop_platform::kind::fault::{fault_request, relay_selector, FAULT_TIMEOUT};
use zerodrop_platform::kind::objects::Rendered;
use zerodrop_platform::kind::plan::{self as kplan, Plan, AWAITED_PLACEHOLDER};
use zerodrop_platform::kind::{load_job, KindOptions};

pub fn plan(opts: &KindOptions, p: &ChaosProfile) -> Result<Plan> {
    let mut plan = kplan::session(opts)?;
    let secs = |ms: u64| Duration::from_millis(ms).as_secs_f64();
    plan.section("The broker relay (DependencyFaults on kind)");
    plan.api(format!(
        "relay_dependency(broker): every fleet below carries deployment {RELAY_NAME} (one pod of \
         zerodrop-fault-relay, from the load image) and its Service (:5672 AMQP to rabbitmq, :{RELAY_CONTROL_PORT} \
         control); only the api's AMQP_URL names it, the workers keep the direct broker"
    ));
    for (index, (name, breaker)) in VARIANTS.into_iter().enumerate() {
        let (queue, schema) = profile::names(&opts.run_id, index, name);
        let env = p.stage_env(&queue, &schema, index, breaker);
        let render = RenderOptions { broker_relay: true, ..opts.stage_render(&env) };
        let stage = p.stage();
        plan.section(format!(
            "Variant {name} (breaker {}): queue {queue}, schema {schema}",
            if breaker { "on" } else { "off" }
        ));
        plan.api("declare the queues; create the ledger schema (through the port-forwards)");
        let objects = zerodrop_manifests::stage(&stage, &render);
        plan.apply(format!("the fleet ({}) behind the broker relay", stage.name), &objects);
        plan.api(format!(
            "wait for deployments {RELAY_NAME}, api and worker (rollout condition) and {} ready api endpoints",
            env.api_replicas
        ));
        let target = load_job::service_target(&render, &Rendered::all(&objects))?;
        let args = load_job::args(&p.load, &target, &format!("chaos-{name}"), &[AWAITED_PLACEHOLDER.to_string()]);
        let job = load_job::job_object(opts, &render, env.index, args);
        plan.apply(format!("the load Job {}", job.name()), std::slice::from_ref(&job));
        let put = |f| fault_request(f).replace("\r\n", "\\r\\n");
        plan.api(format!(
            "after {:.0} s of load (warm-up + the steady phase): port-forward to a ready pod {} :{RELAY_CONTROL_PORT} \
             and send `{}`; the fault counts as set only on a 200 echoing it (at most {} s)",
            secs(p.warmup_ms + p.phase_ms),
            relay_selector(),
            put(Some(p.fault)),
            FAULT_TIMEOUT.as_secs()
        ));
        plan.api(format!("after {:.0} s more: the heal, `{}`; 200 echoing null", secs(p.phase_ms), put(None)));
        plan.api("wait for the Job's result; drain the queue; reconcile every accepted job; read the api pods' breaker lines");
        plan.api(format!(
            "clear the fault again whatever happened; delete deployments api and worker and the Job ({RELAY_NAME} \
             stays for the next variant); drop the queue and the schema"
        ));
    }
    kplan::teardown(&mut plan, opts);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_plan_puts_the_relay_before_the_api_and_sets_then_clears_the_fault_per_variant() {
        let opts = KindOptions::new(None, false, "20261205-160000".into(), "t1".into(), PathBuf::from("/nonexistent"));
        let text = plan(&opts, &ChaosProfile::new(true)).unwrap().render();
        assert_eq!(text.matches("## Variant ").count(), 2, "{text}");
        let relay = text.find("name: broker-relay").expect(&text);
        let api = text.find("name: api\n").expect(&text);
        assert!(relay < api, "the relay is applied before the api");
        assert!(
            text.contains("value: amqp://guest:guest@broker-relay.zerodrop-20261205-160000.svc.cluster.local:5672/%2f")
        );
        assert!(text.contains("value: amqp://guest:guest@rabbitmq.zerodrop-20261205-160000.svc.cluster.local:5672/%2f"));
        assert!(text.contains("- /usr/local/bin/zerodrop-fault-relay"), "{text}");
        let set = r#"PUT /fault HTTP/1.0\r\nHost: broker-relay\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n{"kind":"delay","ms":800}"#;
        assert_eq!(text.matches(set).count(), 2, "{text}");
        assert_eq!(text.matches(r#"Content-Length: 4\r\n\r\nnull"#).count(), 2, "{text}");
        assert!(text.contains("after 15 s of load") && text.contains("after 10 s more"), "{text}");
        assert!(text.contains("$ kind delete cluster"), "{text}");
    }
}
