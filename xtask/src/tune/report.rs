//! reports/<run-id>/ of `cargo xtask tune`: report.md, report.json, charts/dereg.svg
//! and the recommendation as `recommended.json` (a stage override).

use super::compare::{Setting, SettingRun, SettingSummary};
use super::recommend::{Dist, Recommendation};
use super::Measured;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use zerodrop_report::folder::Folder;
use zerodrop_report::model::{Machine, Propagation};
use zerodrop_report::stats::Rate;

#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    pub run_id: String,
    pub started_at: String,
    pub platform: String,
    pub command: String,
    pub wall_time_s: f64,
    pub machine: Machine,
    pub profile: zerodrop_report::model::ExperimentProfile,
    pub roll_s: u32,
    pub stage: String,
    pub longest_request_ms: u64,
    pub worker_drain_budget_ms: u64,
    pub measured: Measured,
    pub recommendation: Recommendation,
    pub override_file: String,
    pub settings: Vec<Setting>,
    pub runs: Vec<SettingRun>,
    pub summary: Vec<SettingSummary>,
}

/// Writes the folder; `chart` is the rendered `charts/dereg.svg` (`tune::chart`, which
/// reads this report: passed in so the two modules do not import each other).
pub fn write(r: &TuneReport, chart: &str, dir: &Path) -> Result<()> {
    let folder = Folder::create(dir)?;
    folder.json(r)?;
    folder.markdown(markdown(r))?;
    folder.chart("dereg", chart)
}

fn row(name: &str, d: &Option<Dist>) -> String {
    match d {
        Some(d) => format!("| {name} | {} | {:.0} | {:.0} | {:.0} |\n", d.n, d.p50, d.p99, d.max),
        None => format!("| {name} | 0 | – | – | – |\n"),
    }
}

fn pct(r: &Rate) -> String {
    format!("{}/{} = {:.3}% [{:.3}%, {:.3}%]", r.k, r.n, 100.0 * r.value, 100.0 * r.ci95[0], 100.0 * r.ci95[1])
}

fn propagation_line(p: &Option<Propagation>) -> String {
    match p {
        Some(p) => match p.configured_ms {
            Some(ms) => format!("{} ({} ms)", p.what, ms),
            None => p.what.clone(),
        },
        None => "not known on this platform".into(),
    }
}

pub fn markdown(r: &TuneReport) -> String {
    let m = &r.measured;
    let rec = &r.recommendation;
    let mut s = String::new();
    let _ = writeln!(s, "# Deregistration delay and preStop sizing: {}\n", r.run_id);
    let _ = writeln!(s, "- command: `{}`", r.command);
    let _ = writeln!(s, "- wall time: {:.1} min; started {}", r.wall_time_s / 60.0, r.started_at);
    let _ = writeln!(s, "- platform: {}", r.platform);
    let _ = writeln!(
        s,
        "- machine: {} ({} CPUs, {}, kernel {})",
        r.machine.hostname, r.machine.cpus, r.machine.os, r.machine.kernel
    );
    let p = &r.profile;
    let _ = writeln!(s, "\n## Profile (identical for every run below)\n");
    let _ = writeln!(s, "| what | value |\n|---|---|");
    let _ = writeln!(s, "| stage | `{}` (maxSurge 1, jittered keep-alive close) |", r.stage);
    let _ = writeln!(
        s,
        "| keep-alive load | {} req/s open-loop, mix fast {} / slow {} / job {} (fast {} ms, slow {} ms), ≤ {} connections, seed {} |",
        p.load.rate_per_sec, p.load.mix.fast, p.load.mix.slow, p.load.mix.job, p.load.fast_ms, p.load.slow_ms,
        p.load.max_connections, p.load.seed
    );
    let _ = writeln!(
        s,
        "| fresh-connection client | {} req/s, one new connection each (`Connection: close`) |",
        m.fresh_rate
    );
    let _ = writeln!(
        s,
        "| replicas | {} api, {} worker; {} request slots per api pod |",
        p.api_replicas, p.worker_replicas, p.api_capacity
    );
    let _ = writeln!(
        s,
        "| windows | warm-up {} s, steady {} s, deploy window {} s, cool-down {} s |",
        p.warmup_s, p.steady_s, r.roll_s, p.cooldown_s
    );
    let _ = writeln!(s, "| endpoint propagation | {} |", propagation_line(&p.propagation));

    let _ = writeln!(s, "\n## Measured deregistration delay\n");
    let _ = writeln!(
        s,
        "Each terminated api pod logs, at `listener_closed`, how long after its termination began \
         (SIGTERM minus `ZD_PRESTOP_MS`) it accepted its last new connection (`last_accept_after_term_ms`). \
         {} api pods terminated under load; {} logged the measurement, {} of them with no new connection after \
         termination began, {} within 100 ms of their listener closing (possibly cut short).\n",
        m.terminations.len() as u32 + m.unmeasured,
        m.terminations.len(),
        m.no_accept,
        m.censored
    );
    let _ = writeln!(s, "| ms | n | p50 | p99 | max |\n|---|---|---|---|---|");
    s += &row("deregistration delay, pod side (last accept after termination start)", &m.dereg_ms);
    s += &row("platform's own view (terminating → endpoint removed)", &m.platform_dereg_ms);
    s += &row("request latency, 2xx answers, all trials", &m.latency_ms);
    if let Some(res) = m.resolution_ms {
        let _ = writeln!(
            s,
            "\nResolution: the fresh-connection client opens {} connections/s over ~{} endpoints, so a pod gets a new \
             connection every ~{res:.0} ms on average (plus the keep-alive pool's reconnects); the pod-side value \
             underestimates the true delay by about that much, which the 3× factor covers. With {} samples the p99 \
             is the largest or second-largest value. The fresh-connection client itself: {} of {} requests failed \
             in the deploy windows of the measurement trials.",
            m.fresh_rate,
            p.api_replicas,
            m.terminations.len(),
            m.fresh_failed,
            m.fresh_total
        );
    } else {
        let _ = writeln!(
            s,
            "\nResolution: this platform offers no Service address to the runner, so only the load's own \
             reconnects reach terminating pods; the values are lower bounds."
        );
    }

    let _ = writeln!(s, "\n## Recommendation\n");
    let _ = writeln!(s, "| knob | value | rule |\n|---|---|---|");
    let p99 = m.dereg_ms.map(|d| d.p99).unwrap_or(0.0);
    let lat99 = m.latency_ms.map(|d| d.p99).unwrap_or(0.0);
    let _ = writeln!(
        s,
        "| preStop | {} ms | 3 × deregistration p99 ({p99:.0} ms), rounded up to 100 ms |",
        rec.pre_stop_ms
    );
    let _ = writeln!(s, "| deregistration wait (app) | 0 ms | preStop alone holds the pod in service |");
    let _ = writeln!(
        s,
        "| api drain budget | {} ms | 2 × max(latency p99 {lat99:.0} ms, longest allowed request {} ms), ≥ 1 s, rounded up to 500 ms: a jittered close lands in the first half |",
        rec.drain_budget_ms, r.longest_request_ms
    );
    let _ = writeln!(
        s,
        "| grace period | {} ms | preStop + max(api budget, worker budget {} ms) + {} ms teardown margin, rounded up to 1 s |",
        rec.grace_ms,
        r.worker_drain_budget_ms,
        super::recommend::MARGIN_MS
    );
    let _ = writeln!(
        s,
        "\nWritten as a stage override to [`{}`]({}); apply it with `cargo xtask experiment --override reports/{}/{}` \
         (where this report's directory is).",
        r.override_file, r.override_file, r.run_id, r.override_file
    );

    if !r.summary.is_empty() {
        s += &comparison(r);
    }
    let _ = writeln!(s, "\n## Every termination\n");
    let _ = writeln!(s, "| trial logs | pod | accepted after termination start | last accept (ms) | platform: endpoint removed (ms) | listener closed at (ms) |\n|---|---|---|---|---|---|");
    for (t, dir) in m.terminations.iter().zip(pod_dirs(m)) {
        let o = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {dir} | {} | {} | {} | {} | {} |",
            t.pod,
            t.accepted_after_term,
            o(t.last_accept_ms.map(|v| v as i64)),
            o(t.platform_ms),
            t.listen_window_ms
        );
    }
    s
}

/// The trial log directory of each termination, in order.
fn pod_dirs(m: &Measured) -> Vec<String> {
    m.terminations.iter().map(|t| t.trial.clone()).collect()
}

fn comparison(r: &TuneReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## Three settings under identical load\n");
    let _ = writeln!(
        s,
        "Same stage, profile, load seed and drain budget; only preStop and the grace period that must fit it differ. \
         Counts are over the same {} s deploy window from each rollout trigger, pooled over {} repeat(s), with 95% \
         Wilson intervals; durations are min / median / max over the repeats.\n",
        r.roll_s,
        r.summary.first().map(|x| x.repeats).unwrap_or(0)
    );
    let _ = writeln!(s, "| setting | preStop | grace | failed requests | refused | fresh-connection client failed | rollout (s) | deploy window (s): trigger → last old pod exited |\n|---|---|---|---|---|---|---|---|");
    for x in &r.summary {
        let sp = |v: &zerodrop_report::stats::Spread| format!("{:.1} / {:.1} / {:.1}", v.min, v.median, v.max);
        let _ = writeln!(
            s,
            "| {} | {} ms | {} ms | {} | {} | {} | {} | {} |",
            x.setting,
            x.pre_stop_ms,
            x.grace_ms,
            pct(&x.failed),
            x.refused.k,
            x.fresh_failed.as_ref().map(pct).unwrap_or_else(|| "–".into()),
            sp(&x.rollout_s),
            sp(&x.deploy_window_s)
        );
    }
    let _ = writeln!(s, "\n{}", verdict(&r.summary));
    let _ = writeln!(s, "\n| setting | repeat | requests | failed | refused | reset | 503 | rollout (s) | deploy window (s) | logs |\n|---|---|---|---|---|---|---|---|---|---|");
    for x in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
            x.setting,
            x.repeat + 1,
            x.requests,
            x.failed,
            x.refused,
            x.reset,
            x.http_503,
            x.rollout_s,
            x.deploy_window_s.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into()),
            x.pod_logs_dir
        );
    }
    s
}

/// Sentences from the numbers: what holds and what does not, never a difference
/// inside the noise called one.
pub fn verdict(sum: &[SettingSummary]) -> String {
    let get = |n: &str| sum.iter().find(|x| x.setting == n);
    let mut out = Vec::new();
    if let (Some(t), Some(f)) = (get("tuned"), get("folklore-15s")) {
        out.push(format!(
            "Tuned: {} failed requests {}; its deploy window (median {:.1} s) is {} the folklore's ({:.1} s).",
            t.failed.k,
            if t.failed.k == 0 { "(zero loss)" } else { "(not zero)" },
            t.deploy_window_s.median,
            if t.deploy_window_s.max < f.deploy_window_s.min {
                "shorter in every repeat than"
            } else {
                "not shorter in every repeat than"
            },
            f.deploy_window_s.median
        ));
    }
    if let (Some(t), Some(x)) = (get("tuned"), get("too-short")) {
        let above = |a: &Rate, b: &Rate| a.ci95[0] > b.ci95[1];
        let say = |apart: bool| {
            if apart {
                "its interval lies above the tuned one's"
            } else {
                "its interval overlaps the tuned one's: not a detectable difference"
            }
        };
        let mut line = format!(
            "Too short: {} refused connections and {} failed requests in the keep-alive load ({})",
            x.refused.k,
            x.failed.k,
            say(above(&x.failed, &t.failed))
        );
        if let (Some(xf), Some(tf)) = (x.fresh_failed, t.fresh_failed) {
            line += &format!(
                "; {} of {} fresh-connection requests failed against {} of {} tuned ({})",
                xf.k,
                xf.n,
                tf.k,
                tf.n,
                say(above(&xf, &tf))
            );
        }
        out.push(line + ".");
    }
    out.join(" ")
}
