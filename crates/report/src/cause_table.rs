//! report.md's "Why each request failed": every failed or slow request of every
//! stage under its cause (`causes.rs`), the steady window's failures, and, loudly,
//! anything left unexplained with the evidence to chase it.

use super::causes::Cause;
use super::escape::cell;
use super::StageGroup;
use std::fmt::Write as _;

/// At most this many unexplained requests are listed, per stage run.
const MAX_UNEXPLAINED_ROWS: usize = 10;

fn summed(g: &StageGroup, c: Cause, steady: bool) -> u64 {
    g.runs
        .iter()
        .map(|(_, s)| {
            let m = if steady { &s.causes.steady } else { &s.causes.deploy };
            m.get(&c).copied().unwrap_or(0)
        })
        .sum()
}

pub fn render(md: &mut String, groups: &[StageGroup]) {
    let _ = writeln!(md, "## Why each request failed\n");
    let n = groups.first().map_or(0, |g| g.runs.len());
    let over = if n > 1 { format!(", summed over {n} repeats") } else { String::new() };
    let _ = writeln!(
        md,
        "Every failed request of the deploy window, every success slower than 2× its kind's steady p99, and every \
         lost or twice-applied job, under one cause: the client's outcome (time, class, and the pod that answered \
         when one did) joined with the stage's timeline (pod events, the pods' own lifecycle log lines, the ready \
         endpoints){over}. Each lever's target above counts causes, not classes. Bold: a lever's target in its own stage \
         and the stage before.\n"
    );
    let _ = writeln!(
        md,
        "| Cause | {} |",
        groups.iter().map(|g| g.first().1.name.as_str()).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---:|".repeat(groups.len()));
    let targeted = |g: &StageGroup, c: Cause| {
        g.effect.is_some() && super::levers::targets(g.first().0.stage.name).iter().any(|t| t.causes.contains(&c))
    };
    for c in Cause::ALL {
        if groups.iter().all(|g| summed(g, c, false) == 0) && c != Cause::Unexplained {
            continue;
        }
        let cells: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let v = summed(g, c, false);
                let next_targets = groups.get(i + 1).is_some_and(|n| targeted(n, c));
                if targeted(g, c) || next_targets {
                    format!("**{v}**")
                } else {
                    v.to_string()
                }
            })
            .collect();
        let label = if c == Cause::Unexplained { format!("**{}**", c.label()) } else { cell(c.label()) };
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    let steady: Vec<String> = groups
        .iter()
        .map(|g| g.runs.iter().map(|(_, s)| s.causes.steady_failures()).sum::<u64>().to_string())
        .collect();
    let _ = writeln!(md, "| *steady window: failed requests, any cause* | {} |", steady.join(" | "));
    let _ = writeln!(md);
    unexplained(md, groups);
}

/// Lists the unexplained requests with what the timeline showed around them.
fn unexplained(md: &mut String, groups: &[StageGroup]) {
    let total: u64 =
        groups.iter().map(|g| summed(g, Cause::Unexplained, false) + summed(g, Cause::Unexplained, true)).sum();
    if total == 0 {
        let _ = writeln!(md, "Unexplained: **0**.\n");
        return;
    }
    let _ = writeln!(
        md,
        "> ⚠️ **{total} request(s) have no cause on the list.** Each is shown with the pod that answered (if any) \
         and the ready endpoints at that moment; read the stage's pod logs around that time.\n"
    );
    let _ = writeln!(md, "| Stage | repeat | t (ms) | latency (ms) | kind | class | pod | ready endpoints |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|---|---|---:|");
    for g in groups {
        for (run, s) in &g.runs {
            // The same windows the total counts: the deploy and the steady one.
            let in_windows = |at: u64| {
                (at >= run.roll.from_us && at < run.roll.to_us) || (at >= run.steady.from_us && at < run.steady.to_us)
            };
            let rows = s
                .causes
                .requests
                .iter()
                .filter(|e| e.cause == Cause::Unexplained)
                .filter_map(|e| run.load.records.get(e.record))
                .filter(|rec| in_windows(rec.at_us))
                .take(MAX_UNEXPLAINED_ROWS);
            for rec in rows {
                let t = (rec.at_us / 1000) as i64;
                let ready = super::causes::pods::ready_at(run, t).map_or("?".to_string(), |r| r.to_string());
                let _ = writeln!(
                    md,
                    "| {} | {} | {t} | {} | {:?} | {} | {} | {ready} |",
                    s.name,
                    run.repeat + 1,
                    rec.latency_us / 1000,
                    rec.kind,
                    rec.class.key(),
                    run.load.pod_of(rec).unwrap_or("—"),
                );
            }
        }
    }
    let _ = writeln!(md);
}
