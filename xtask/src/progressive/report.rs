//! reports/<run-id>/ for `canary`: report.md (the per-step table, the rollback, the
//! blast radius, the two sources' agreement), report.json, charts/timeline.svg.

use super::gates::fmt_p;
use super::model::{Agreement, CanaryReport, LoadSummary, Side, Tick};
use super::stats::human;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;
use zerodrop_report::folder::Folder;
use zerodrop_report::stats::describe;

pub fn write(r: &CanaryReport, dir: &Path) -> Result<()> {
    let folder = Folder::create(dir)?;
    folder.json(r)?;
    folder.chart("timeline", timeline_svg(&r.timeline, &r.steps_markers()))?;
    folder.markdown(markdown(r))
}

impl CanaryReport {
    /// (second, label) of every gate decision, for the chart.
    fn steps_markers(&self) -> Vec<(f64, String)> {
        self.steps
            .iter()
            .map(|s| (s.start_s + s.held_s, format!("{}% {}", s.weight_pct, s.decision.as_str())))
            .collect()
    }
}

fn p95(s: &Side) -> String {
    s.p95_ms.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "–".into())
}

pub fn markdown(r: &CanaryReport) -> String {
    let mut o = String::new();
    let st = &r.settings;
    let _ = writeln!(o, "# Canary {}: {}\n", r.run_id, r.outcome);
    let _ =
        writeln!(o, "`{}` · started {} · {} · {} CPUs\n", r.command, r.started_at, r.machine.hostname, r.machine.cpus);
    let _ = writeln!(
        o,
        "v1 (stable) and v2 (canary, regression `{}`) run as {} real api processes each behind HAProxy \
         in the lab's network namespace; the load generator sends {} req/s to HAProxy and makes no routing decision. \
         Steps {:?}%.\n",
        st.regression, st.replicas, st.qps, st.steps_pct
    );
    let d = &st.detect;
    let _ = writeln!(
        o,
        "**Sample size.** To tell a baseline error rate of {}% from {}% at α = {} (two-sided) with power {}, \
         each step holds until the canary has served **{} requests** (two-proportion z-test). At {} req/s the steps \
         below 100% need {} in all (blue-green's bake at 100% would need {}).\n",
        d.baseline * 100.0,
        d.detectable * 100.0,
        d.alpha,
        d.power,
        r.sample_size,
        st.qps,
        human(r.plan.total_s),
        human(r.plan.blue_green_bake_s)
    );
    if r.outcome == "refused" {
        let _ = writeln!(
            o,
            "**Refused by the low-traffic guard:** the steps would take {}, more than the limit of {}. \
             Use blue-green (a bake at 100% of the traffic: {}), larger steps, or a larger detectable difference.\n",
            human(r.plan.total_s),
            human(st.max_duration_s),
            human(r.plan.blue_green_bake_s)
        );
        for (w, s) in &r.plan.per_step_s {
            let _ = writeln!(o, "- step {w}%: {}", human(*s));
        }
        return o;
    }
    if let Some(s) = &r.shadow {
        s.markdown(&mut o);
    }
    if r.steps.is_empty() {
        load_and_sources(&mut o, r.load.as_ref(), r.agreement.as_ref(), ("v1", "v2"));
        let _ = writeln!(o, "Pod-seconds used: {:.0}. Wall time {:.0} s.", r.pod_seconds, r.wall_s);
        return o;
    }
    let _ = writeln!(o, "## Steps\n");
    let _ = writeln!(
        o,
        "Requests and failures are HAProxy's per-backend counters; p95 is read from the apps' latency histograms \
         (`/work`). Error rates carry 95% Wilson intervals.\n"
    );
    let _ = writeln!(o, "| weight | held | v1 requests | v1 error rate | v1 p95 | v2 requests | v2 error rate | v2 p95 | z | p | decision |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &r.steps {
        let _ = writeln!(
            o,
            "| {}% | {:.1} s | {} | {} | {} | {} | {} | {} | {:.2} | {} | **{}** |",
            s.weight_pct,
            s.held_s,
            s.stable.requests,
            describe(&s.stable.error_rate),
            p95(&s.stable),
            s.canary.requests,
            describe(&s.canary.error_rate),
            p95(&s.canary),
            s.z.z,
            fmt_p(s.z.p),
            s.decision.as_str()
        );
    }
    let _ = writeln!(o, "\nGates of each step:\n");
    for s in &r.steps {
        let gates: Vec<String> = s
            .gates
            .iter()
            .map(|g| format!("{} {} ({})", g.name, if g.pass { "pass" } else { "FAIL" }, g.detail))
            .collect();
        let _ = writeln!(o, "- {}%: {}", s.weight_pct, gates.join("; "));
    }
    let _ = writeln!(o, "\n![timeline](charts/timeline.svg)\n");
    super::client_report::markdown(&mut o, r);
    if let Some(rb) = &r.rollback {
        let _ = writeln!(
            o,
            "## Rollback\n\nThe gate failed {:.1} s into the run; HAProxy's map showed weight 0 **{:.1} ms** later \
             (runtime API, no reload), and the canary pods answered their last request {:.0} ms after the breach.\n",
            rb.breach_s, rb.to_zero_ms, rb.canary_quiet_ms
        );
    }
    if let (Some(b), Some(_)) = (&r.blast_radius, &r.rollback) {
        let _ = writeln!(
            o,
            "## Blast radius\n\nThe bad version served **{} requests, {} of them failed**. An all-at-once rollout of the \
             same v2 over the same {:.1} s would have sent it all {} requests: at v2's measured error rate that is \
             about **{:.0} failed requests** ({}).\n",
            b.canary_requests, b.canary_errors, b.window_s, b.all_at_once_requests, b.all_at_once_errors_expected, b.how
        );
    }
    if let Some(rr) = &r.routing {
        rr.markdown(&mut o);
    }
    load_and_sources(&mut o, r.load.as_ref(), r.agreement.as_ref(), ("v1", "v2"));
    let _ = writeln!(
        o,
        "Pod-seconds used: {:.0} (all api pods from the fleet's start to the end of the run). Wall time {:.0} s.",
        r.pod_seconds, r.wall_s
    );
    o
}

/// Weight (%) and both versions' per-second error rates (%), with a mark at every
/// gate decision.
pub fn timeline_svg(ticks: &[Tick], marks: &[(f64, String)]) -> String {
    let (w, h, pad) = (900.0, 320.0, 50.0);
    let t_max = ticks.last().map(|t| t.t_s).unwrap_or(1.0).max(1.0);
    let x = |t: f64| pad + t / t_max * (w - 2.0 * pad);
    let y = |pct: f64| h - pad - pct.clamp(0.0, 100.0) / 100.0 * (h - 2.0 * pad);
    let rate = |e: u64, n: u64| if n == 0 { 0.0 } else { e as f64 * 100.0 / n as f64 };
    let line = |f: &dyn Fn(&Tick) -> f64| {
        ticks.iter().map(|t| format!("{:.1},{:.1}", x(t.t_s), y(f(t)))).collect::<Vec<_>>().join(" ")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#888\"/>\n\
         <text x=\"{pad}\" y=\"20\">weight % (blue), v2 error rate % (red), v1 error rate % (green); per second, HAProxy counters</text>\n\
         <text x=\"5\" y=\"{top}\">100%</text><text x=\"5\" y=\"{b}\">0</text><text x=\"{r}\" y=\"{lbl}\" text-anchor=\"end\">{t_max:.0} s</text>\n",
        b = h - pad,
        r = w - pad,
        top = pad + 4.0,
        lbl = h - pad + 16.0
    );
    for (t, label) in marks {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{pad}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#bbb\" stroke-dasharray=\"3,3\"/><text x=\"{0:.1}\" y=\"{2}\" transform=\"rotate(-30 {0:.1} {2})\">{3}</text>",
            x(*t),
            h - pad,
            pad - 4.0,
            label
        );
    }
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
        line(&|t| t.weight_pct)
    );
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#d62728\" points=\"{}\"/>",
        line(&|t| rate(t.canary_errors, t.canary_requests))
    );
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#2ca02c\" points=\"{}\"/>",
        line(&|t| rate(t.stable_errors, t.stable_requests))
    );
    s.push_str("</svg>\n");
    s
}

/// The load's totals and the two sources' counts side by side (HAProxy against the apps'
/// `/metrics`), as both `canary` and `blue-green` report them; `labels` names the stable
/// and the new side.
pub(super) fn load_and_sources(
    o: &mut String,
    load: Option<&LoadSummary>,
    a: Option<&Agreement>,
    labels: (&str, &str),
) {
    if let Some(l) = load {
        let classes: Vec<String> = l.by_class.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            o,
            "## Load\n\n{} requests sent at {} req/s, **{} failed** ({}).\n",
            l.total,
            l.rate_per_sec,
            l.failed,
            classes.join(", ")
        );
    }
    if let Some(a) = a {
        let (stable, new) = labels;
        let _ = writeln!(
            o,
            "## Two sources\n\n| | HAProxy | apps' /metrics |\n|---|---|---|\n| {stable} requests | {} | {} |\n| {new} requests | {} | {} |\n| 5xx | {} | {} |\n\n\
             Largest difference {:.3}%: {}.\n",
            a.router_stable,
            a.app_stable,
            a.router_canary,
            a.app_canary,
            a.router_errors,
            a.app_errors,
            a.max_diff_pct,
            if a.within_1pct { "the two sources agree within 1%" } else { "the two sources DISAGREE by more than 1%" }
        );
    }
}
