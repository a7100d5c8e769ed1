//! The write-up, generated from the measured numbers and the verdicts in `levers`:
//! only the connecting words are fixed, and nothing is called better or worse unless
//! the intervals say so.

use super::causes::Cause;
use super::levers::TargetEffect;
use super::stats::{self, Verdict};
use super::StageGroup;
use zerodrop_load::Class;
use zerodrop_stages::StageName;

/// Which part of a bundled lever acts on what, and what the numbers say about it.
fn parts(stage: StageName, g: &StageGroup, prev: &StageGroup) -> Option<String> {
    match stage {
        StageName::ReverseDrain => {
            let n = |g: &StageGroup, c: Cause, kind: Option<zerodrop_load::Kind>| -> u64 {
                g.runs
                    .iter()
                    .map(|(r, s)| {
                        s.causes
                            .requests
                            .iter()
                            .filter(|e| e.cause == c)
                            .filter_map(|e| r.load.records.get(e.record))
                            .filter(|x| x.at_us >= r.roll.from_us && x.at_us < r.roll.to_us)
                            .filter(|x| kind.is_none_or(|k| x.kind == k))
                            .count() as u64
                    })
                    .sum()
            };
            let job = Some(zerodrop_load::Kind::Job);
            let (all_b, all_a) = (n(prev, Cause::CutByShutdown, None), n(g, Cause::CutByShutdown, None));
            let (jobs_b, jobs_a) = (n(prev, Cause::CutByShutdown, job), n(g, Cause::CutByShutdown, job));
            let (race_b, race_a) = (n(prev, Cause::KeepaliveCloseRace, None), n(g, Cause::KeepaliveCloseRace, None));
            Some(format!(
                "Of its parts, draining in-flight requests and keep-alive connections acts on requests cut mid-flight \
                 ({all_b} → {all_a} over all repeats, of which job submissions {jobs_b} → {jobs_a}: publisher confirms \
                 and the ordered teardown keep a submission from being cut in the api); the guardian only bounds how \
                 long all this may take (see the guardian exercise). Closing idle keep-alive connections at once leaves \
                 HTTP/1.1's race, a request sent just as its connection is closed ({race_b} → {race_a}, cause \
                 `keepalive_close_race`), which no server-side lever here removes."
            ))
        }
        StageName::SurgeJitter => {
            let n = |g: &StageGroup, c: Cause| -> u64 { g.runs.iter().map(|(_, s)| s.causes.deploy_count(c)).sum() };
            let (short_b, short_a) = (n(prev, Cause::ShedFleetShort), n(g, Cause::ShedFleetShort));
            let cold = |g: &StageGroup| n(g, Cause::ShedColdPod) + n(g, Cause::SlowColdPod);
            Some(format!(
                "Of its parts, maxSurge 1 / maxUnavailable 0 acts on 503s while fewer api endpoints than desired were \
                 ready ({short_b} → {short_a} requests over all repeats); warming before ready and the jittered keep-alive \
                 close act on requests shed or held up by cold replacement pods taking reconnecting clients ({} → {}).",
                cold(prev),
                cold(g)
            ))
        }
        _ => None,
    }
}

fn target_sentence(t: &TargetEffect) -> String {
    let noise = match t.verdict {
        Verdict::Removed => "",
        Verdict::Reduced => " It is lower, but not gone.",
        Verdict::Unchanged => " The difference is within noise: the intervals overlap.",
        Verdict::NotDetectable => " Too few events on either side to tell a difference from noise.",
        Verdict::Worse => " It got worse.",
    };
    format!(
        "{}: {} → {} — **{}**.{noise}",
        t.label,
        stats::describe(&t.before),
        stats::describe(&t.after),
        t.verdict.as_str()
    )
}

/// One paragraph per stage from the second on, against the stage before it.
pub fn per_stage(groups: &[StageGroup]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 1..groups.len() {
        let (g, prev) = (&groups[i], &groups[i - 1]);
        let (run, s) = g.first();
        let Some(e) = &g.effect else { continue };
        let mut p = format!("**{}** vs {} — adds *{}*. ", s.name, e.compared_with, run.stage.lever);
        let t: Vec<String> = e.per_target.iter().map(target_sentence).collect();
        p.push_str(&format!("Its target, {} ", t.join(" Also ")));
        if let Some(parts) = parts(run.stage.name, g, prev) {
            p.push_str(&parts);
            p.push(' ');
        }
        // Any other failure class that rose beyond noise in this stage.
        for class in Class::FAILURES {
            let b: Vec<(u64, u64)> = prev.runs.iter().map(|(_, s)| (s.count(class), s.roll.total)).collect();
            let a: Vec<(u64, u64)> = g.runs.iter().map(|(_, s)| (s.count(class), s.roll.total)).collect();
            if stats::verdict(&b, &a) == Verdict::Worse {
                p.push_str(&format!(
                    "{} rose beyond noise: {} → {}. ",
                    class.key(),
                    stats::describe(&stats::pooled(&b)),
                    stats::describe(&stats::pooled(&a))
                ));
            }
        }
        for (name, c) in [
            ("readiness before listener close", s.checks.readiness_before_listener_close),
            ("deregistered before listener close", s.checks.deregistered_before_listener_close),
            ("reverse-order teardown", s.checks.teardown_reverse_order),
        ] {
            if c == Some(false) {
                p.push_str(&format!("The {name} check failed. "));
            }
        }
        if g.runs.iter().any(|(r, _)| !r.jobs.settled) {
            p.push_str(
                "(Jobs had not settled at reconciliation in every run: lost may include jobs still in flight.) ",
            );
        }
        p.push_str(&format!(
            "Rollout took {:.1} s (was {:.1} s).",
            run.rollout_seconds,
            prev.first().0.rollout_seconds
        ));
        out.push(p);
    }
    out
}

/// The closing write-up: the staircase in one list, what the last stage lost, and
/// what the readiness gate does and does not do.
pub fn closing(groups: &[StageGroup]) -> Vec<String> {
    let Some(last) = groups.last() else { return vec!["No stage was run.".into()] };
    let mut paras = Vec::new();
    let list: Vec<String> = groups
        .iter()
        .filter_map(|g| {
            g.effect.as_ref().map(|e| format!("- **{}** — {}", g.first().1.name, target_sentence(&e.per_target[0])))
        })
        .collect();
    if !list.is_empty() {
        paras.push(list.join("\n"));
    }
    let not_removed: Vec<&str> = groups
        .iter()
        .filter(|g| g.effect.as_ref().is_some_and(|e| e.verdict != Verdict::Removed))
        .map(|g| g.first().1.name.as_str())
        .collect();
    if !not_removed.is_empty() {
        paras.push(format!(
            "In this run the lever of {} did not earn a *removed* verdict: see its row above for what the intervals allow.",
            not_removed.join(", ")
        ));
    }
    let failed: Vec<(u64, u64)> = last.runs.iter().map(|(_, s)| (s.roll.failed, s.roll.total)).collect();
    let jobs: Vec<(u64, u64)> =
        last.runs.iter().map(|(r, _)| (r.jobs.lost + r.jobs.duplicated, r.jobs.accepted)).collect();
    paras.push(format!(
        "The last stage, {}, over {} run(s): failed requests in the deploy window {}; jobs lost or applied twice {}.",
        last.first().1.name,
        last.runs.len(),
        stats::describe(&stats::pooled(&failed)),
        stats::describe(&stats::pooled(&jobs))
    ));
    paras.push(
        "What the readiness gate does: once SIGTERM arrives, `/readyz` fails, so anything that routes by readiness \
         (a Service for a pod that is not being deleted, an external load balancer's health check) stops sending new \
         work. What it does not do here: a pod being deleted is dropped from the Service's endpoints by the control plane \
         at once, ready or not, on kind as on the local platform. The refused connections of pid1 are removed by the time \
         between the start of termination and the listener closing (preStop + deregistration wait), which outlasts the \
         propagation of that removal to the routing rules."
            .into(),
    );
    paras
}
