//! `canary --dry-run`: what the kind path applies and sends, as text. Nothing is
//! executed; the same manifests are checked in under k8s/progressive/.

use super::model::Settings;
use std::fmt::Write;
use zerodrop_manifests::{progressive, to_yaml, RenderOptions, HAPROXY_DIR};

pub fn render(cfg: &Settings, n: u64, o: &RenderOptions) -> String {
    let ns = &o.namespace;
    let map = format!("{HAPROXY_DIR}/canary.map");
    let mut s = String::new();
    let _ = writeln!(s, "# cargo xtask canary on kind: the plan (dry run; nothing below was executed)");
    let _ = writeln!(s, "kubectl apply -f - <<'EOF'\n{}EOF", to_yaml(&progressive(o, &cfg.regression)));
    for d in ["haproxy", "api-v1", "api-v2"] {
        let _ = writeln!(s, "kubectl -n {ns} rollout status deployment/{d} --timeout=120s");
    }
    let _ = writeln!(s, "kubectl -n {ns} port-forward deployment/haproxy 9999:9999 &   # HAProxy's runtime API");
    let _ = writeln!(s, "kubectl -n {ns} port-forward service/haproxy 8000:80 &      # the load goes through HAProxy");
    for w in &cfg.steps_pct {
        let permille = (w * 10.0).round() as u32;
        let _ = writeln!(s, "echo 'set map {map} weight {permille}' | nc 127.0.0.1 9999   # step {w}%");
        if *w < 100.0 {
            let _ = writeln!(
                s,
                "# hold until `show stat` counts {n} more requests on backend canary, then gates: z-test (alpha {}), p95 within {}% or {} ms, at least {} requests",
                cfg.gates.alpha, cfg.gates.p95_tolerance_pct, cfg.gates.p95_floor_ms, cfg.gates.min_requests
            );
        } else {
            let _ =
                writeln!(s, "# hold {} s at 100%, gates against v1's traffic of the earlier steps", cfg.final_hold_s);
        }
    }
    let _ = writeln!(s, "# on a failed gate: echo 'set map {map} weight 0' | nc 127.0.0.1 9999");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progressive::gates::GateConfig;
    use crate::progressive::stats::Detect;

    #[test]
    fn the_plan_applies_both_versions_and_sets_each_step_in_permille() {
        let cfg = Settings {
            regression: "errors=2%".into(),
            steps_pct: vec![0.1, 5.0, 100.0],
            qps: 250,
            replicas: 2,
            detect: Detect { baseline: 0.001, detectable: 0.02, alpha: 0.05, power: 0.8 },
            gates: GateConfig { alpha: 0.05, p95_tolerance_pct: 50.0, p95_floor_ms: 5.0, min_requests: 200 },
            final_hold_s: 10.0,
            max_duration_s: 300.0,
        };
        let p = render(&cfg, 448, &RenderOptions::default());
        assert!(p.contains("name: api-v2") && p.contains("value: errors=2%") && p.contains("name: haproxy"), "{p}");
        assert!(p.contains("weight 1'") && p.contains("weight 50'") && p.contains("weight 1000'"), "{p}");
        assert!(p.contains("448 more requests on backend canary"), "{p}");
        let yaml = p.split("<<'EOF'\n").nth(1).and_then(|r| r.split("EOF\n").next()).unwrap();
        assert_eq!(zerodrop_manifests::parse_strict(yaml).unwrap().len(), 7);
    }
}
