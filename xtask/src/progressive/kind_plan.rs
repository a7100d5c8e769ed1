//! `canary --dry-run` and `blue-green --dry-run`: the kind platform's plan
//! (`zerodrop_platform::kind::plan`: the session and the teardown;
//! `kind::two_versions::dry_run`: both versions behind HAProxy, exactly as applied)
//! with the command's own runtime-API steps in between. Nothing is executed.

use super::model::Settings;
use zerodrop_manifests::HAPROXY_DIR;
use zerodrop_platform::kind::plan::{self, Plan};
use zerodrop_platform::kind::{two_versions, KindOptions};
use zerodrop_platform::router::{runtime_api, TwoVersionsSpec};

fn map() -> String {
    format!("{HAPROXY_DIR}/canary.map")
}

/// The canary's plan: every step's weight and what it waits for.
pub fn canary(opts: &KindOptions, spec: &TwoVersionsSpec, cfg: &Settings, n: u64) -> anyhow::Result<Plan> {
    let mut p = plan::session(opts)?;
    p.steps.extend(two_versions::dry_run(opts, spec)?.steps);
    if let Some(s) = &cfg.shadow {
        let m = s.mirror();
        p.section(format!("Shadow phase at weight 0, {} req/s", cfg.qps));
        p.api(format!(
            "a load Job of {:.0} s copies {} permille of its requests, at the same moment, with `{}: {}` \
             (--mirror-header, --mirror-permille, --mirror-until): HAProxy pins the copies to backend canary; \
             its result (originals and copies, paired by sequence) comes back through the pod's log",
            s.phase_s, m.permille, m.header, m.value
        ));
        if let Some(j) = &spec.jobs {
            p.api(format!(
                "before the fleet: declare queues {} and {}, create schemas {} and {} (through the port-forwards \
                 to rabbitmq and postgres)",
                j.queue, j.shadow_queue, j.schema, j.shadow_schema
            ));
            p.api(format!(
                "{}% of the requests are jobs; a copy carries its Host name suffixed `-shadow`, so both versions' \
                 api pods publish copied jobs to {} (ZD_SHADOW_QUEUE), applied by deployment {} to schema {}; \
                 users' jobs go to {}, applied by deployment {} to schema {}",
                super::shadow::JOB_SHARE_PCT,
                j.shadow_queue,
                zerodrop_manifests::SHADOW_WORKER,
                j.shadow_schema,
                j.queue,
                zerodrop_manifests::WORKER,
                j.schema
            ));
        }
        p.api(
            "the pairs are compared (McNemar on the pairs where one side failed, the p95 rule on both sides); \
               a v2 that does worse ends the run here, before any user reaches it",
        );
        if spec.jobs.is_some() {
            p.api(
                "after the run: wait until both queues are empty and both ledgers stop growing (45 s at most), \
                 then reconcile both by job id: the users' exactly the jobs users were told were accepted, \
                 the shadow's exactly the copies v2 accepted",
            );
        }
    }
    p.section(format!("Canary steps at {} req/s", cfg.qps));
    if let Some(r) = &cfg.routing {
        let m = r.mark();
        p.api(format!(
            "testers: the load Job marks {} permille of its requests with `{}: {}` (--mark-header); HAProxy's \
             configuration sends {} to backend canary whatever the weight{}",
            m.permille,
            m.header,
            m.value,
            r.rule.describe(),
            if r.strip_hop { ", behind frontend `edge`, which strips it (--strip-hop)" } else { "" }
        ));
    }
    if let Some(c) = &cfg.clients {
        p.api(format!(
            "clients: the load Job names {} Zipf clients (s = {}) in `{}` (--clients, --zipf); the split {}; \
             the error gate judges by {}",
            c.count,
            c.zipf_s,
            super::clients::HEADER,
            if c.sticky {
                "is sticky: HAProxy hashes that header (crc32) instead of drawing per request"
            } else {
                "draws per request"
            },
            match c.judge {
                super::clients::Judge::Request => "request",
                super::clients::Judge::Client => "client (the apps' per-client counters)",
            }
        ));
    }
    for w in &cfg.steps_pct {
        let permille = (w * 10.0).round() as u32;
        p.api(format!("runtime API: `{}` (step {w}%)", runtime_api::set_weight(&map(), permille)));
        if *w < 100.0 {
            p.api(format!(
                "hold until `show stat` counts {n} more requests on backend canary, then gates: z-test (alpha {}), p95 within {}% or {} ms, at least {} requests",
                cfg.gates.alpha, cfg.gates.p95_tolerance_pct, cfg.gates.p95_floor_ms, cfg.gates.min_requests
            ));
        } else {
            p.api(format!("hold {} s at 100%, gates against v1's traffic of the earlier steps", cfg.final_hold_s));
        }
    }
    p.api(format!("on a failed gate: runtime API `{}`", runtime_api::set_weight(&map(), 0)));
    plan::teardown(&mut p, opts);
    Ok(p)
}

/// Blue-green's plan: smoke tests pinned to green, the switch, the bake, then blue's
/// retirement or the rollback.
pub fn blue_green(opts: &KindOptions, spec: &TwoVersionsSpec, smoke: u32, n: u64) -> anyhow::Result<Plan> {
    let mut p = plan::session(opts)?;
    p.steps.extend(two_versions::dry_run(opts, spec)?.steps);
    p.section("Blue-green");
    p.api(format!("{smoke} smoke requests through the frontend's port-forward with `X-Canary: always` (green only)"));
    p.api(format!("runtime API: `{}` (the switch)", runtime_api::set_weight(&map(), 1000)));
    p.api(format!("bake: hold until `show stat` counts {n} requests on backend canary, then the canary's gates"));
    p.api("promote: runtime API `set server stable/api-v1 state drain`, scale deployment api-v1 to 0, wait until its pods are gone");
    p.api(format!("or roll back: runtime API `{}`", runtime_api::set_weight(&map(), 0)));
    plan::teardown(&mut p, opts);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progressive::gates::GateConfig;
    use crate::progressive::stats::Detect;
    use std::path::PathBuf;
    use zerodrop_platform::kind::plan::Step;

    use crate::progressive::clients::{ClientSettings, Judge};
    use crate::progressive::routing::RuleSettings;
    use zerodrop_platform::router::{MatchOn, RouteRule, Routing};

    fn opts() -> KindOptions {
        KindOptions::new(None, false, "20261205-070000".into(), "t1".into(), PathBuf::from("/nonexistent/zd"))
    }

    fn spec(regression: &str) -> TwoVersionsSpec {
        TwoVersionsSpec::v2_with(2, regression)
    }

    /// Every object the plan applies, parsed strictly back.
    fn applied(p: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        for s in &p.steps {
            if let Step::Apply { yaml, .. } = s {
                for o in zerodrop_manifests::parse_strict(yaml).unwrap() {
                    out.push(format!("{}/{}", o.kind(), o.name()));
                }
            }
        }
        out
    }

    #[test]
    fn the_canary_plan_applies_both_versions_and_sets_each_step_in_permille() {
        let cfg = Settings {
            regression: "errors=2%".into(),
            steps_pct: vec![0.1, 5.0, 100.0],
            qps: 250,
            replicas: 2,
            detect: Detect { baseline: 0.001, detectable: 0.02, alpha: 0.05, power: 0.8 },
            gates: GateConfig { alpha: 0.05, p95_tolerance_pct: 50.0, p95_floor_ms: 5.0, min_requests: 200 },
            final_hold_s: 10.0,
            max_duration_s: 300.0,
            routing: None,
            clients: None,
            shadow: None,
        };
        let p = canary(&opts(), &spec("errors=2%"), &cfg, 448).unwrap();
        let text = p.render();
        let objects = applied(&p);
        for o in
            ["ConfigMap/haproxy", "Deployment/haproxy", "Service/haproxy", "Deployment/api-v1", "Deployment/api-v2"]
        {
            assert!(objects.contains(&o.to_string()), "{o} not applied: {objects:?}");
        }
        assert!(text.contains("value: errors=2%"), "{text}");
        assert!(text.contains("weight 1`") && text.contains("weight 50`") && text.contains("weight 1000`"), "{text}");
        assert!(text.contains("448 more requests on backend canary"), "{text}");
        assert!(text.contains("namespace: zerodrop-20261205-070000"), "the run's namespace: {text}");
        assert!(text.contains("$ kind delete cluster"), "the teardown is planned: {text}");
        assert!(!text.contains("testers"), "{text}");

        let rule = RouteRule::parse(MatchOn::Cookie, "zd_group=beta").unwrap();
        let routing = Some(RuleSettings { rule, testers_pct: 5.0, strip_hop: true });
        let cfg = Settings { routing, ..cfg };
        let spec = TwoVersionsSpec { routing: cfg.routing.as_ref().unwrap().routing(), ..spec("errors=2%") };
        let text = canary(&opts(), &spec, &cfg, 448).unwrap().render();
        assert!(text.contains("marks 50 permille of its requests with `cookie: zd_group=beta`"), "{text}");
        assert!(text.contains("use_backend canary if { req.cook(zd_group) -m str beta }"), "the ConfigMap: {text}");
        assert!(text.contains("http-request del-header cookie"), "the stripping hop: {text}");

        let clients = ClientSettings { count: 100, zipf_s: 1.0, sticky: true, known_bug: None, judge: Judge::Client };
        let sticky = TwoVersionsSpec {
            routing: Routing { sticky: clients.sticky_key(), ..Routing::default() },
            ..super::tests::spec("errors=10%@clients=20%")
        };
        let cfg = Settings { routing: None, clients: Some(clients), ..cfg };
        let text = canary(&opts(), &sticky, &cfg, 448).unwrap().render();
        assert!(text.contains("names 100 Zipf clients"), "{text}");
        assert!(text.contains("req.hdr(x-zd-client),crc32(1),mod(1000)"), "the sticky split in the ConfigMap: {text}");
        assert!(!text.contains("Shadow phase"), "{text}");

        let shadow = crate::progressive::shadow::ShadowSettings { copy_pct: 20.0, phase_s: 15.0 };
        let cfg = Settings { clients: None, shadow: Some(shadow), ..cfg };
        let jobs = crate::progressive::shadow_writes::jobs_spec("20261205-070000");
        let with_jobs = TwoVersionsSpec { jobs: Some(jobs), ..super::tests::spec("errors=2%") };
        let text = canary(&opts(), &with_jobs, &cfg, 448).unwrap().render();
        assert!(
            text.contains("copies 200 permille of its requests, at the same moment, with `x-canary: always`"),
            "{text}"
        );
        assert!(text.find("Shadow phase").unwrap() < text.find("Canary steps").unwrap(), "{text}");
        // The workers are applied with the versions, each on its own queue and schema.
        let objects = applied(&canary(&opts(), &with_jobs, &cfg, 448).unwrap());
        assert!(objects.contains(&"Deployment/worker-v1".to_string()), "{objects:?}");
        assert!(objects.contains(&"Deployment/worker-v2-shadow".to_string()), "{objects:?}");
        assert!(text.contains("publish copied jobs to zerodrop.20261205-070000.progressive.shadow"), "{text}");
        assert!(text.contains("to schema zd_20261205070000_shadow"), "{text}");
        assert!(text.contains("api-v1, api-v2, worker-v1, worker-v2-shadow (180s each)"), "{text}");
        assert!(text.contains("create schemas zd_20261205070000_users and zd_20261205070000_shadow"), "{text}");
        assert!(text.contains("then reconcile both by job id"), "{text}");
    }

    #[test]
    fn the_blue_green_plan_switches_whole_and_retires_blue_through_its_lifecycle() {
        let text = blue_green(&opts(), &spec("none"), 50, 900).unwrap().render();
        let switch = text.find("weight 1000` (the switch)").unwrap();
        let drain = text.rfind("state drain").unwrap();
        assert!(text.find("50 smoke requests").unwrap() < switch && switch < drain, "{text}");
        assert!(text.contains("900 requests on backend canary"), "{text}");
    }
}
