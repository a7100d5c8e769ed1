//! The write-up, generated from the measured numbers: only the connecting words are
//! fixed. What a lever targets is read from what changed in the stage definition.

use super::model::StageRun;
use super::summary::StageSummary;
use zerodrop_load::Class;
use zerodrop_stages::{SigtermResponse, Stage};

/// A per-stage number the prose compares.
#[derive(Clone, Copy)]
struct Metric {
    label: &'static str,
    kind: Kind,
    get: fn(&StageRun, &StageSummary) -> f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Lower is better; any change is a change.
    Count,
    /// Lower is better, in percent; changes within `eps` points are noise.
    Pct { eps: f64 },
    /// Lower is better, in ms; changes within 10% + 5 ms are noise.
    Ms,
    /// 1 when no pod logged `sigterm_received`, else 0.
    SigtermMissing,
}

fn class(c: Class) -> fn(&StageRun, &StageSummary) -> f64 {
    match c {
        Class::Refused => |_, s| s.count(Class::Refused) as f64,
        Class::Reset => |_, s| s.count(Class::Reset) as f64,
        Class::Timeout => |_, s| s.count(Class::Timeout) as f64,
        Class::Http502 => |_, s| s.count(Class::Http502) as f64,
        Class::Http503 => |_, s| s.count(Class::Http503) as f64,
        Class::Http504 => |_, s| s.count(Class::Http504) as f64,
        _ => |_, s| s.other_failures() as f64,
    }
}

const fn m(label: &'static str, kind: Kind, get: fn(&StageRun, &StageSummary) -> f64) -> Metric {
    Metric { label, kind, get }
}

fn refused() -> Metric {
    m("refused", Kind::Count, class(Class::Refused))
}
fn reset() -> Metric {
    m("reset", Kind::Count, class(Class::Reset))
}
fn http_502() -> Metric {
    m("http_502", Kind::Count, class(Class::Http502))
}
fn lost() -> Metric {
    m("lost jobs", Kind::Count, |r, _| r.jobs.lost as f64)
}
fn duplicated() -> Metric {
    m("duplicated jobs", Kind::Count, |r, _| r.jobs.duplicated as f64)
}
fn sigkills() -> Metric {
    m("SIGKILLs", Kind::Count, |_, s| s.sigkills as f64)
}
fn sigterm_missing() -> Metric {
    m("sigterm_received", Kind::SigtermMissing, |_, s| if s.checks.sigterm_handler_fired { 0.0 } else { 1.0 })
}
fn missing_endpoints() -> Metric {
    m("missing endpoints", Kind::Count, |_, s| {
        s.capacity.min_ready_endpoints.map_or(0.0, |r| f64::from(s.capacity.desired.saturating_sub(r)))
    })
}
fn dip() -> Metric {
    m("throughput dip", Kind::Pct { eps: 5.0 }, |_, s| s.capacity.throughput_dip_pct)
}

/// Failure modes, as the write-up names them.
fn failure_modes() -> Vec<Metric> {
    vec![
        refused(),
        reset(),
        m("timeout", Kind::Count, class(Class::Timeout)),
        http_502(),
        m("http_503", Kind::Count, class(Class::Http503)),
        m("http_504", Kind::Count, class(Class::Http504)),
        m("other failed requests (4xx/500/other)", Kind::Count, class(Class::Other)),
        lost(),
        duplicated(),
        sigkills(),
        missing_endpoints(),
    ]
}

/// Everything a stage paragraph compares.
fn all_metrics() -> Vec<Metric> {
    let mut v = vec![m("error rate", Kind::Pct { eps: 0.05 }, |_, s| s.error_rate_pct())];
    v.extend(failure_modes());
    v.push(dip());
    v.push(m("roll p99", Kind::Ms, |_, s| s.roll.latency_ms.p99));
    v
}

fn fmt(kind: Kind, v: f64) -> String {
    match kind {
        Kind::Count => format!("{v:.0}"),
        Kind::Pct { eps } if eps < 1.0 => format!("{v:.2}%"),
        Kind::Pct { .. } => format!("{v:.0}%"),
        Kind::Ms => format!("{v:.0} ms"),
        Kind::SigtermMissing if v > 0.0 => "not logged".into(),
        Kind::SigtermMissing => "logged".into(),
    }
}

#[derive(PartialEq, Debug)]
enum Change {
    Better,
    Worse,
    Same,
}

fn change(kind: Kind, prev: f64, cur: f64) -> Change {
    let noise = match kind {
        Kind::Count | Kind::SigtermMissing => 0.0,
        Kind::Pct { eps } => eps,
        Kind::Ms => 5.0 + 0.1 * prev.max(cur),
    };
    if (cur - prev).abs() <= noise {
        Change::Same
    } else if cur < prev {
        Change::Better
    } else {
        Change::Worse
    }
}

/// The failure modes a lever targets, read from what changed between two stages.
fn targets(prev: &Stage, cur: &Stage) -> Vec<(&'static str, Vec<Metric>)> {
    let mut t = Vec::new();
    let apps = [(&prev.api, &cur.api), (&prev.worker, &cur.worker)];
    let signal = prev.pod.entrypoint != cur.pod.entrypoint
        || apps.iter().any(|(p, c)| p.on_sigterm == SigtermResponse::Ignore && c.on_sigterm != SigtermResponse::Ignore);
    if signal {
        t.push(("SIGTERM not reaching the app", vec![sigterm_missing(), sigkills()]));
    }
    let routed = prev.pod.pre_stop != cur.pod.pre_stop
        || apps
            .iter()
            .any(|(p, c)| p.readiness_gate != c.readiness_gate || p.deregistration_wait != c.deregistration_wait);
    if routed {
        t.push(("connections refused while still routed", vec![refused()]));
    }
    let drain = apps.iter().any(|(p, c)| {
        p.drain != c.drain
            || p.drain_budget != c.drain_budget
            || p.ordered_teardown != c.ordered_teardown
            || p.publisher_confirms != c.publisher_confirms
    });
    if drain {
        t.push(("requests cut mid-flight", vec![reset(), http_502()]));
    }
    let (pw, cw) = (&prev.worker, &cur.worker);
    if pw.ack != cw.ack || pw.idempotent != cw.idempotent || pw.prefetch != cw.prefetch {
        t.push(("lost and duplicated jobs", vec![lost(), duplicated()]));
    }
    let capacity = prev.strategy != cur.strategy
        || apps
            .iter()
            .any(|(p, c)| p.keepalive_close != c.keepalive_close || p.warm_before_ready != c.warm_before_ready);
    if capacity {
        t.push(("capacity lost during the roll", vec![missing_endpoints(), dip()]));
    }
    t
}

fn from_to(metric: &Metric, prev: f64, cur: f64) -> String {
    format!("{} {} → {}", metric.label, fmt(metric.kind, prev), fmt(metric.kind, cur))
}

fn verdict(
    name: &str,
    metrics: &[Metric],
    prev: (&StageRun, &StageSummary),
    cur: (&StageRun, &StageSummary),
) -> String {
    let vals: Vec<(f64, f64)> = metrics.iter().map(|m| ((m.get)(prev.0, prev.1), (m.get)(cur.0, cur.1))).collect();
    let shown: Vec<String> = metrics.iter().zip(&vals).map(|(m, (p, c))| from_to(m, *p, *c)).collect();
    let changes: Vec<Change> = metrics.iter().zip(&vals).map(|(m, (p, c))| change(m.kind, *p, *c)).collect();
    let zero_now = metrics.iter().zip(&vals).all(|(m, (_, c))| change(m.kind, 0.0, *c) == Change::Same);
    let zero_before = metrics.iter().zip(&vals).all(|(m, (p, _))| change(m.kind, 0.0, *p) == Change::Same);
    let outcome = if zero_now && zero_before {
        "absent before and after, so this run cannot show what the lever does for it"
    } else if zero_now {
        "removed"
    } else if changes.contains(&Change::Worse) && !changes.contains(&Change::Better) {
        "made worse, not removed"
    } else if changes.contains(&Change::Better) && changes.contains(&Change::Worse) {
        "mixed, not removed"
    } else if changes.contains(&Change::Better) {
        "reduced but not removed"
    } else {
        "not removed: unchanged"
    };
    format!("{name} ({}): **{outcome}**", shown.join(", "))
}

/// One paragraph per stage from the second on, against the stage before it.
pub fn per_stage(runs: &[StageRun], sums: &[StageSummary]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 1..runs.len().min(sums.len()) {
        let (pr, ps, cr, cs) = (&runs[i - 1], &sums[i - 1], &runs[i], &sums[i]);
        let mut p = format!("**{}** vs {} — adds *{}*. ", cs.name, ps.name, cr.stage.lever);
        let tg = targets(&pr.stage, &cr.stage);
        if tg.is_empty() {
            p.push_str("No shutdown or rollout knob differs from the previous stage. ");
        } else {
            let v: Vec<String> = tg.iter().map(|(n, ms)| verdict(n, ms, (pr, ps), (cr, cs))).collect();
            p.push_str(&format!("Its target: {}. ", v.join("; ")));
        }
        let signal_targeted = tg.iter().any(|(_, ms)| ms.iter().any(|m| m.kind == Kind::SigtermMissing));
        if !signal_targeted && ps.checks.sigterm_handler_fired != cs.checks.sigterm_handler_fired {
            let now = if cs.checks.sigterm_handler_fired { "logged" } else { "not logged" };
            let before = if ps.checks.sigterm_handler_fired { "logged" } else { "not logged" };
            p.push_str(&format!("`sigterm_received` was {now} (before: {before}). "));
        }
        let (mut better, mut worse) = (Vec::new(), Vec::new());
        for m in all_metrics() {
            let (a, b) = ((m.get)(pr, ps), (m.get)(cr, cs));
            match change(m.kind, a, b) {
                Change::Better => {
                    better.push(format!("{} fell from {} to {}", m.label, fmt(m.kind, a), fmt(m.kind, b)))
                }
                Change::Worse => worse.push(format!("{} rose from {} to {}", m.label, fmt(m.kind, a), fmt(m.kind, b))),
                Change::Same => {}
            }
        }
        if !better.is_empty() {
            p.push_str(&format!("Better: {}. ", better.join(", ")));
        }
        if worse.is_empty() {
            p.push_str("Nothing measured got worse. ");
        } else {
            p.push_str(&format!("**Worse:** {}. ", worse.join(", ")));
        }
        for (name, c) in [
            ("readiness before listener close", cs.checks.readiness_before_listener_close),
            ("deregistered before listener close", cs.checks.deregistered_before_listener_close),
            ("reverse-order teardown", cs.checks.teardown_reverse_order),
        ] {
            if c == Some(false) {
                p.push_str(&format!("The {name} check failed. "));
            }
        }
        if !cr.jobs.settled {
            p.push_str("(Jobs had not settled at reconciliation: lost may include jobs still in flight.) ");
        }
        p.push_str(&format!("Rollout took {:.1} s (was {:.1} s).", cr.rollout_seconds, pr.rollout_seconds));
        out.push(p);
    }
    out
}

/// The closing write-up: which lever removed each failure mode, and why the order
/// of the stages matters, from the numbers.
pub fn closing(runs: &[StageRun], sums: &[StageSummary]) -> Vec<String> {
    let n = runs.len().min(sums.len());
    if n == 0 {
        return vec!["No stage was run.".into()];
    }
    let name = |i: usize| sums[i].name.as_str();
    let mut paras = Vec::new();

    let mut fixed = Vec::new();
    let mut never = Vec::new();
    for m in failure_modes() {
        let v: Vec<f64> = (0..n).map(|i| (m.get)(&runs[i], &sums[i])).collect();
        if v.iter().all(|x| *x == 0.0) {
            never.push(m.label);
            continue;
        }
        // The first stage at the peak.
        let peak = (0..n).min_by(|a, b| v[*b].total_cmp(&v[*a])).unwrap_or(0);
        let peak_txt = format!("peak {} at {}", fmt(m.kind, v[peak]), name(peak));
        let last = v[n - 1];
        if last == 0.0 {
            // The stage after the last non-zero one removed it for good.
            let k = (0..n).rev().find(|i| v[*i] > 0.0).map_or(0, |i| i + 1);
            let stayed = if k + 1 < n { ", and it stayed at 0 in every later stage" } else { "" };
            // An earlier stage that had brought it to 0 before it came back.
            let first_nz = v.iter().position(|x| *x > 0.0).unwrap_or(0);
            let back = (first_nz + 1..k)
                .find(|z| v[*z] == 0.0)
                .and_then(|z| (z + 1..k).find(|c| v[*c] > 0.0).map(|c| (z, c)))
                .map_or(String::new(), |(z, c)| {
                    format!(" It had been 0 at {} already but came back at {}.", name(z), name(c))
                });
            fixed.push((
                k,
                format!(
                    "**{}** was removed by **{}** (*{}*): {} → 0{stayed} ({peak_txt}).{back}",
                    m.label,
                    name(k),
                    runs[k].stage.lever,
                    fmt(m.kind, v[k - 1])
                ),
            ));
        } else {
            let low = (0..n).min_by(|a, b| v[*a].total_cmp(&v[*b])).unwrap_or(0);
            fixed.push((n, format!(
                "**{}** is still present in the last stage, {} ({}); no lever removed it (lowest {} at {}, {peak_txt}).",
                m.label,
                name(n - 1),
                fmt(m.kind, last),
                fmt(m.kind, v[low]),
                name(low)
            )));
        }
    }
    // In the order the stages removed them; what no stage removed last.
    fixed.sort_by_key(|(k, _)| *k);
    let mut list: Vec<String> = fixed.into_iter().map(|(_, t)| format!("- {t}")).collect();
    if !never.is_empty() {
        list.push(format!("- Never observed in any stage: {}.", never.join(", ")));
    }
    paras.push(list.join("\n"));

    let mut order = Vec::new();
    let rates: Vec<String> = (0..n).map(|i| format!("{:.2}% ({})", sums[i].error_rate_pct(), name(i))).collect();
    order.push(format!("In this order, the deploy-window error rate went {}.", rates.join(" → ")));
    match (0..n).find(|i| sums[*i].checks.sigterm_handler_fired) {
        Some(0) => {}
        Some(k) => {
            let kills: u64 = (0..k).map(|i| sums[i].sigkills).sum();
            let before: Vec<&str> = (0..k).map(name).collect();
            order.push(format!(
                "SIGTERM first reached an app's handler in {} (`sigterm_received` logged); in {} no pod logged it and the \
                 platform sent {kills} SIGKILL(s). Every later lever runs inside that handler, so the signal fix has to come first.",
                name(k),
                join_and(&before)
            ));
        }
        None => order.push("No stage logged `sigterm_received`: none of the in-app shutdown levers could act.".into()),
    }
    for i in 1..n {
        for m in failure_modes() {
            let (a, b) = ((m.get)(&runs[i - 1], &sums[i - 1]), (m.get)(&runs[i], &sums[i]));
            if change(m.kind, a, b) != Change::Worse {
                continue;
            }
            let fix = (i + 1..n).find(|j| (m.get)(&runs[*j], &sums[*j]) < b);
            let after = match fix {
                Some(j) => format!("{} then brought it to {}", name(j), fmt(m.kind, (m.get)(&runs[j], &sums[j]))),
                None => "no later stage brought it back down".into(),
            };
            order.push(format!(
                "{} made {} worse ({} → {}); {after}.",
                name(i),
                m.label,
                fmt(m.kind, a),
                fmt(m.kind, b)
            ));
        }
    }
    if order.len() > 1 {
        order.push(
            "Each lever is measured on top of the ones before it: a fix can expose the next failure mode, \
             and a lever that depends on an earlier one shows nothing without it."
                .into(),
        );
    }
    paras.push(order.join(" "));
    paras
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
