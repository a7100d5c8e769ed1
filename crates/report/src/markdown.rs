//! report.md: readable at a glance. Every number comes from the summaries.

use super::escape::cell;
use super::evidence::{self, MAX_ROWS};
use super::levers;
use super::model::{GuardianCheck, Report, StageRun};
use super::prose;
use super::stats::{self, Verdict};
use super::summary::StageSummary;
use super::StageGroup;
use std::fmt::Write as _;
use zerodrop_load::Class;

pub fn render(report: &Report, groups: &[StageGroup]) -> String {
    let mut md = String::new();
    header(&mut md, report);
    profile(&mut md, report);
    staircase(&mut md, report, groups);
    super::cause_table::render(&mut md, groups);
    table(&mut md, report, groups);
    repeats(&mut md, groups);
    for (i, g) in groups.iter().enumerate() {
        let (run, s) = g.first();
        stage_section(&mut md, i + 1, run, s, g.runs.len());
    }
    let _ = writeln!(md, "## What each lever fixed\n");
    for p in prose::per_stage(groups) {
        let _ = writeln!(md, "{p}\n");
    }
    let _ = writeln!(md, "## Write-up\n");
    for p in prose::closing(groups) {
        let _ = writeln!(md, "{p}\n");
    }
    guardian(&mut md, report.guardian.as_ref());
    md
}

fn icon(v: Verdict) -> &'static str {
    match v {
        Verdict::Removed => "✅",
        Verdict::Reduced => "🟡",
        Verdict::Unchanged | Verdict::NotDetectable => "⚪",
        Verdict::Worse => "❌",
    }
}

fn counts(v: &[u64]) -> String {
    if v.len() == 1 {
        return v[0].to_string();
    }
    let sp = stats::spread(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
    format!("{:.0} ({:.0}–{:.0})", sp.median, sp.min, sp.max)
}

/// The staircase: each lever's target, in the stage before and in its own, with
/// pooled 95% Wilson intervals and the verdict they support.
fn staircase(md: &mut String, r: &Report, groups: &[StageGroup]) {
    let _ = writeln!(md, "## The staircase\n");
    let n = groups.first().map_or(0, |g| g.runs.len());
    let per = if n > 1 {
        format!("median (min–max) over {n} repeats; rates pooled over the repeats")
    } else {
        "one run each".to_string()
    };
    let _ = writeln!(
        md,
        "Each lever's target failure, counted in the stage before it and in its own stage over the same {:.0} s deploy \
         window ({per}), with 95% Wilson intervals. A verdict needs the intervals apart: *removed* = apart and zero in \
         every repeat; *not detectable* / *unchanged* = within noise.\n",
        window_s(r)
    );
    let _ = writeln!(
        md,
        "| Stage | Target | Before (count) | Before (rate, 95% CI) | After (count) | After (rate, 95% CI) | Verdict |"
    );
    let _ = writeln!(md, "|---|---|---:|---|---:|---|---|");
    for g in groups {
        let Some(e) = &g.effect else { continue };
        for (i, t) in e.per_target.iter().enumerate() {
            let stage =
                if i == 0 { format!("**{}** (vs {})", g.first().1.name, e.compared_with) } else { String::new() };
            let _ = writeln!(
                md,
                "| {stage} | {} | {} | {} | {} | {} | {} {} |",
                cell(t.label),
                counts(&t.before_counts),
                stats::describe(&t.before),
                counts(&t.after_counts),
                stats::describe(&t.after),
                icon(t.verdict),
                t.verdict.as_str()
            );
        }
    }
    let _ = writeln!(md);
}

fn window_s(r: &Report) -> f64 {
    r.stages.first().map_or(0.0, |s| s.roll.to_us.saturating_sub(s.roll.from_us) as f64 / 1e6)
}

/// Min / median / max of the headline numbers when stages were repeated.
fn repeats(md: &mut String, groups: &[StageGroup]) {
    let n = groups.first().map_or(0, |g| g.runs.len());
    if n < 2 {
        return;
    }
    let _ = writeln!(md, "## Over {n} repeats\n");
    let _ = writeln!(
        md,
        "Each cell is median (min–max) over the repeats, deploy window; *steady failed* is the pre-deploy window.\n"
    );
    let first = levers::spreads(&groups[0].runs);
    let names: Vec<&str> = first.iter().map(|(k, _)| *k).collect();
    let _ = writeln!(md, "| Stage | {} |", names.join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(names.len()));
    for g in groups {
        let row: Vec<String> = levers::spreads(&g.runs)
            .iter()
            .map(|(k, sp)| {
                let f = |x: f64| {
                    if k.ends_with("_pct") {
                        format!("{x:.2}")
                    } else if *k == "rollout_seconds" {
                        format!("{x:.1}")
                    } else {
                        format!("{x:.0}")
                    }
                };
                format!("{} ({}–{})", f(sp.median), f(sp.min), f(sp.max))
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", g.first().1.name, row.join(" | "));
    }
    let _ = writeln!(md);
}

pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn header(md: &mut String, r: &Report) {
    let m = &r.machine;
    let _ = writeln!(md, "# zerodrop report — {}\n", cell(&r.run_id));
    if let Some(i) = &r.incomplete {
        let _ = writeln!(
            md,
            "> **INCOMPLETE.** Stage `{}` (repeat {}) failed: {}. This report holds only the {} stage run(s) \
             completed before it; no verdict covers the stages that did not run.\n",
            cell(&i.stage),
            i.repeat + 1,
            cell(&i.reason),
            r.stages.len()
        );
    }
    let _ = writeln!(md, "- **Date:** {}", cell(&r.started_at));
    let _ = writeln!(md, "- **Platform:** {}", cell(&r.platform));
    let _ = writeln!(
        md,
        "- **Machine:** {} ({} CPUs, {}, kernel {})",
        cell(&m.hostname),
        m.cpus,
        cell(&m.os),
        cell(&m.kernel)
    );
    let fence = if r.command.contains("```") { "~~~~" } else { "```" };
    let _ = writeln!(md, "- **Command:**\n\n{fence}sh\n{}\n{fence}\n", r.command);
}

fn profile(md: &mut String, r: &Report) {
    let p = &r.profile;
    let l = &p.load;
    let w = l.mix.fast + l.mix.slow + l.mix.job;
    let pct = |x: u32| if w == 0 { 0.0 } else { f64::from(x) * 100.0 / f64::from(w) };
    let _ = writeln!(md, "## Load profile (`{}`)\n", cell(&p.name));
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Arrival rate | {} req/s, open loop (latency from intended start) |", l.rate_per_sec);
    let _ = writeln!(
        md,
        "| Mix | fast {:.0}% (`/work?ms={}`), slow {:.0}% (`/work?ms={}`), job {:.0}% (publish) |",
        pct(l.mix.fast),
        l.fast_ms,
        pct(l.mix.slow),
        l.slow_ms,
        pct(l.mix.job)
    );
    let _ = writeln!(
        md,
        "| Durations | load run {:.0} s per stage: warm-up {} s, steady {} s, then the deploy, cool-down {} s |",
        l.duration.as_secs_f64(),
        p.warmup_s,
        p.steady_s,
        p.cooldown_s
    );
    let _ = writeln!(
        md,
        "| Client | ≤ {} connections, request timeout {} ms, connect timeout {} ms, seed {} |",
        l.max_connections,
        l.request_timeout.as_millis(),
        l.connect_timeout.as_millis(),
        l.seed
    );
    let _ = writeln!(
        md,
        "| Deploy window | {:.0} s, opening 1 s before the rollout trigger (requests in flight at the trigger belong to the deploy); the same in every stage |",
        window_s(r)
    );
    let _ = writeln!(
        md,
        "| Replicas | api {} ({} request slots each), worker {} |",
        p.api_replicas, p.api_capacity, p.worker_replicas
    );
    if p.job_backlog > 0 {
        let _ = writeln!(
            md,
            "| Job backlog | {} jobs queued (with publisher confirms) before the load starts |",
            p.job_backlog
        );
    }
    let _ = writeln!(md, "| Propagation delay | {} |\n", propagation(p));
}

fn table(md: &mut String, r: &Report, groups: &[StageGroup]) {
    let _ = writeln!(md, "## Before / after\n");
    let which = if r.repeats > 1 { " First repeat; see below for all of them." } else { "" };
    let _ = writeln!(
        md,
        "Request numbers are over each stage's deploy window ({:.0} s from the rollout trigger, equal for every \
         stage); *error rate* carries its 95% Wilson interval; *steady p99* and *steady failed* are the same stage's \
         pre-deploy baseline. Latency in ms. *other* = 4xx, 500 and unclassified failures.{which}\n",
        window_s(r)
    );
    let _ = writeln!(
        md,
        "| Stage | Error rate (95% CI) | steady failed | 502 | 503 | 504 | refused | reset | timeout | other | p50 | p99 | max | steady p99 | min ready pods / endpoints / desired | dip | lost jobs | dup jobs | rollout s |"
    );
    let _ =
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut unsettled = false;
    for g in groups {
        let (run, s) = g.first();
        let rate = stats::wilson(s.roll.failed, s.roll.total);
        let c = |class| s.count(class).to_string();
        let lr = &s.roll.latency_ms;
        let q = |m: Option<u32>| m.map_or("?".to_string(), |m| m.to_string());
        let min_ready = format!("{} / {}", q(s.capacity.min_ready_pods), q(s.capacity.min_ready_endpoints));
        let star = if run.jobs.settled { "" } else { "\\*" };
        unsettled |= !run.jobs.settled;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {:.0}% | {}{star} | {} | {:.1} |",
            s.name,
            rate_cell(&rate),
            s.steady.failed,
            c(Class::Http502),
            c(Class::Http503),
            c(Class::Http504),
            c(Class::Refused),
            c(Class::Reset),
            c(Class::Timeout),
            s.other_failures(),
            ms(lr.p50),
            ms(lr.p99),
            ms(lr.max),
            ms(s.steady.latency_ms.p99),
            min_ready,
            s.capacity.desired,
            s.capacity.throughput_dip_pct,
            run.jobs.lost,
            run.jobs.duplicated,
            run.rollout_seconds
        );
    }
    let _ = writeln!(
        md,
        "\n*min ready*: the fewest api pods ready and not terminating (what maxUnavailable counts), and the fewest \
         endpoints the Service routed to, during the deploy window. The Service learns each change one propagation \
         delay late, a removal sometimes sooner than an addition, so its endpoints can dip below the pods' count even \
         with maxUnavailable 0."
    );
    if unsettled {
        let _ = writeln!(
            md,
            "\n\\* The queue or the ledger had not settled when jobs were reconciled: *lost* may include jobs still in flight."
        );
    }
    let _ = writeln!(md);
}

fn rate_cell(r: &stats::Rate) -> String {
    if r.k == 0 {
        format!("0% (≤ {})", stats::pct(r.ci95[1]))
    } else {
        format!("{} ({}–{})", stats::pct(r.value), stats::pct(r.ci95[0]), stats::pct(r.ci95[1]))
    }
}

fn stage_section(md: &mut String, n: usize, run: &StageRun, s: &StageSummary, repeats: usize) {
    let st = &run.stage;
    let _ = writeln!(md, "## {n}. {}\n", s.name);
    let _ = writeln!(md, "**Lever:** {}  ", cell(&st.lever));
    let targets = if st.targets.is_empty() { "— (baseline)" } else { &st.targets };
    let _ = writeln!(md, "**Targets:** {}\n", cell(targets));
    let roll_s = run.roll.to_us.saturating_sub(run.roll.from_us) as f64 / 1e6;
    let _ = writeln!(
        md,
        "Deploy window {roll_s:.1} s: {} requests, {} failed ({:.2}%); rollout complete after {:.1} s. \
         Jobs: {} accepted, {} lost, {} duplicated ({} extra applications), {} dead-lettered.\n",
        s.roll.total,
        s.roll.failed,
        s.error_rate_pct(),
        run.rollout_seconds,
        run.jobs.accepted,
        run.jobs.lost,
        run.jobs.duplicated,
        run.jobs.extra_applications,
        run.jobs.dead_lettered
    );
    if repeats > 1 {
        let _ = writeln!(md, "Shown: repeat 1 of {repeats}; the other repeats' logs are beside it in `logs/`.\n");
    }
    let _ = writeln!(md, "![{} timeline](charts/{}.svg)\n", s.name, s.name);
    checks(md, run, s);
    third_party(md, run);
    evidence_table(md, run);
    let _ = writeln!(md, "Raw pod logs: [`{0}`]({0})\n", run.pod_logs_dir.replace(' ', "%20"));
}

fn checks(md: &mut String, run: &StageRun, s: &StageSummary) {
    let c = &s.checks;
    let icon = |v: Option<bool>| match v {
        Some(true) => "✅",
        Some(false) => "❌",
        None => "—",
    };
    let opt = |v: Option<bool>| v.map_or("null".into(), |b| b.to_string());
    let armed = run.logs.iter().any(|l| l.step == "guardian_armed");
    let guardian = if c.guardian_fired {
        Some(false)
    } else if armed {
        Some(true)
    } else {
        None
    };
    let rows = [
        (
            "SIGTERM reached the app (its handler, or an init forwarding it)",
            icon(Some(c.sigterm_reached_app)),
            format!("sigterm_reached_app = {}", c.sigterm_reached_app),
        ),
        (
            "SIGTERM reached the app's handler",
            icon(Some(c.sigterm_handler_fired)),
            format!("sigterm_handler_fired = {}", c.sigterm_handler_fired),
        ),
        (
            "Readiness failed before the listener closed",
            icon(c.readiness_before_listener_close),
            format!("readiness_before_listener_close = {}", opt(c.readiness_before_listener_close)),
        ),
        (
            "The Service stopped routing to a pod before it stopped listening",
            icon(c.deregistered_before_listener_close),
            format!("deregistered_before_listener_close = {}", opt(c.deregistered_before_listener_close)),
        ),
        (
            "Resources disposed in reverse order, telemetry flushed last",
            icon(c.teardown_reverse_order),
            format!("teardown_reverse_order = {}", opt(c.teardown_reverse_order)),
        ),
        ("No pod needed the guardian", icon(guardian), format!("guardian_fired = {}", c.guardian_fired)),
        (
            "No pod was SIGKILLed",
            icon(Some(c.killed_by_sigkill == 0)),
            format!("killed_by_sigkill = {}", c.killed_by_sigkill),
        ),
    ];
    let _ = writeln!(md, "| Check | | Measured |\n|---|:-:|---|");
    for (label, icon, measured) in rows {
        let _ = writeln!(md, "| {label} | {icon} | `{measured}` |");
    }
    let _ = writeln!(md);
    for note in &s.check_notes {
        let _ = writeln!(md, "- {}", cell(note));
    }
    if !s.check_notes.is_empty() {
        let _ = writeln!(md);
    }
}

fn evidence_table(md: &mut String, run: &StageRun) {
    let ev = evidence::collect(run, MAX_ROWS);
    if ev.rows.is_empty() {
        let _ = writeln!(md, "No pod logged a lifecycle step or got a termination event during this stage.\n");
        return;
    }
    let _ = writeln!(
        md,
        "Evidence: each terminated pod from the start of its termination (`+s` counts from there); \
         `platform` rows are pod events, the others are the pod's own log lines.\n"
    );
    let _ = writeln!(md, "| t (s) | +s | pod | step | fields |\n|---:|---:|---|---|---|");
    for r in &ev.rows {
        let step = if r.source == "platform" {
            format!("*{}* (platform)", cell(&r.step))
        } else {
            format!("`{}`", cell(&r.step))
        };
        let _ = writeln!(
            md,
            "| {:.3} | +{:.3} | {} | {} | {} |",
            r.t_ms as f64 / 1000.0,
            r.since_ms as f64 / 1000.0,
            cell(&r.pod),
            step,
            cell(&r.fields)
        );
    }
    if ev.omitted > 0 {
        let _ = writeln!(
            md,
            "\n{} more rows omitted (pods {}); report.json `evidence` and the raw pod logs have them all.",
            ev.omitted,
            cell(&ev.omitted_pods.join(", "))
        );
    }
    let _ = writeln!(md);
}

fn guardian(md: &mut String, g: Option<&GuardianCheck>) {
    let _ = writeln!(md, "## Guardian exercise\n");
    let Some(g) = g else {
        let _ = writeln!(md, "Not run.");
        return;
    };
    let fired = g.exit_code == Some(g.expected_exit_code);
    let code = g.exit_code.map_or("none (no exit observed)".into(), |c| c.to_string());
    let _ = writeln!(
        md,
        "One api instance with the last stage's settings got a {} ms request, longer than its {} ms drain budget, then SIGTERM.\n",
        g.request_ms, g.drain_budget_ms
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Drain budget | {} ms |", g.drain_budget_ms);
    let _ = writeln!(md, "| Request length | {} ms |", g.request_ms);
    let _ =
        writeln!(md, "| Exit code | {} {code} (expected {}) |", if fired { "✅" } else { "❌" }, g.expected_exit_code);
    let _ = writeln!(md, "| SIGTERM → exit | {} ms |", g.exit_after_ms);
    let _ = writeln!(md, "| Client of the long request saw | `{}` |\n", cell(&g.client_outcome));
    let lines: Vec<_> = g.logs.iter().filter(|l| l.step == "guardian_fired").collect();
    if lines.is_empty() {
        let _ = writeln!(md, "No `guardian_fired` line was logged.");
    } else {
        let _ = writeln!(md, "The guardian's log line:\n\n```text");
        for l in lines {
            let _ = writeln!(md, "{} {} {} {}", l.timestamp, l.pod, l.step, l.fields);
        }
        let _ = writeln!(md, "```");
    }
}

/// `--alongside`: the third-party client's own counts next to ours, over the time it
/// ran (our requests by intended start in that interval), rates with 95% intervals.
fn third_party(md: &mut String, run: &StageRun) {
    let Some(t) = &run.third_party else { return };
    let from_us = (t.started_ms.max(0) as u64) * 1000;
    let to_us = (t.ended_ms.max(0) as u64) * 1000;
    let ours = zerodrop_load::window_stats(&run.load.records, from_us, to_us);
    let c = |k: Class| ours.by_class.get(k.key()).copied().unwrap_or(0);
    let _ = writeln!(
        md,
        "Third-party client, from {:.3} s to {:.3} s: `{}` (exit {}; output in [`{}`]({})).\n",
        t.started_ms as f64 / 1000.0,
        t.ended_ms as f64 / 1000.0,
        cell(&t.command),
        t.exit_code.map_or("none".into(), |c| c.to_string()),
        cell(&t.output),
        t.output.replace(' ', "%20")
    );
    let Some(k) = &t.counts else {
        let _ = writeln!(md, "Its output is not hey's summary, so it is kept but not tallied.\n");
        return;
    };
    let theirs_503 = k.responses.get(&503).copied().unwrap_or(0);
    let rows = [
        ("the third-party client", k.total(), k.failed(), k.refused, k.reset, theirs_503),
        (
            "zerodrop's load, same interval",
            ours.total,
            ours.failed,
            c(Class::Refused),
            c(Class::Reset),
            c(Class::Http503),
        ),
    ];
    let _ = writeln!(md, "| client | requests | failed (rate, 95% CI) | refused (rate, 95% CI) | reset | 503 |\n|---|---:|---|---|---:|---:|");
    for (who, total, failed, refused, reset, r503) in rows {
        let _ = writeln!(
            md,
            "| {who} | {total} | {} | {} | {reset} | {r503} |",
            stats::describe(&stats::wilson(failed, total)),
            stats::describe(&stats::wilson(refused, total))
        );
    }
    let overlap = |a: stats::Rate, b: stats::Rate| a.ci95[0] <= b.ci95[1] && b.ci95[0] <= a.ci95[1];
    let (tf, of) = (stats::wilson(k.failed(), k.total()), stats::wilson(ours.failed, ours.total));
    let (tr, or) = (stats::wilson(k.refused, k.total()), stats::wilson(c(Class::Refused), ours.total));
    let agree = overlap(tf, of) && overlap(tr, or);
    let _ = writeln!(
        md,
        "\n{}\n",
        if agree {
            "The two failure rates, and the two refused rates, agree: their 95% intervals overlap."
        } else {
            "The rates differ beyond their 95% intervals: the clients differ in request mix and connection reuse, so read \
             the kinds of failure (refused vs reset vs 503) rather than the exact rates."
        }
    );
}

/// The profile's propagation line: what the platform measured, else the delay it
/// applies (older reports: `propagation_delay_ms`).
fn propagation(p: &crate::model::ExperimentProfile) -> String {
    let applied = |ms: u64| format!("{ms} ms (Service keeps routing to a terminating pod)");
    match &p.propagation {
        None => applied(p.propagation_delay_ms),
        Some(pr) => pr.describe(),
    }
}
