//! Routing by rule in a canary run: testers (a share of the load carrying the rule's
//! header or cookie) reach v2 whatever the weight. What reached v2 is counted from the
//! clients' side, by rule (marked requests) and by weight (the rest), from the pod that
//! answered each request.
//!
//! The verdict is judged on the testers-only phase before the first step, at weight 0,
//! because only there is the cause unambiguous: a marked request on v2 got there by the
//! rule, and one on v1 got there because the rule did not match. Once the weight rises,
//! a stripped marker still reaches v2 by weight (at 100%, always), so the whole run's
//! counts cannot tell a working rule from a stripped one.

use serde::Serialize;
use std::fmt::Write;
use zerodrop_load::{Mark, RunResult};
use zerodrop_platform::router::{RouteRule, Routing};

/// A canary run's rule, the testers' share and whether the stripping hop is in front.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSettings {
    pub rule: RouteRule,
    pub testers_pct: f64,
    pub strip_hop: bool,
}

impl RuleSettings {
    /// The routing tier's configuration for this run.
    pub fn routing(&self) -> Routing {
        Routing { rules: vec![self.rule.clone()], strip_hop: self.strip_hop, ..Routing::default() }
    }

    /// What the testers' requests carry.
    pub fn mark(&self) -> Mark {
        let (header, value) = self.rule.header();
        Mark { permille: (self.testers_pct * 10.0).round() as u32, header, value }
    }
}

/// Requests by marker and by the version that answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByVersion {
    pub v1: u64,
    pub v2: u64,
    /// No answer named a pod (refused, reset, timed out).
    pub unanswered: u64,
}

impl ByVersion {
    pub fn total(&self) -> u64 {
        self.v1 + self.v2 + self.unanswered
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every answered marked request reached v2.
    Delivered,
    /// Marked requests were answered, none by v2: something on the way drops the marker.
    Stripped,
    /// Some marked requests reached v2 and some v1.
    Leaky,
    /// No marked request was answered: nothing to judge.
    NoEvidence,
}

/// Marked and unmarked requests over one stretch of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Phase {
    /// The testers' requests: v2 by rule.
    pub marked: ByVersion,
    /// Everyone else's: v2 by weight.
    pub unmarked: ByVersion,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub settings: RuleSettings,
    /// Requests that started in the first `testers_only_s` seconds of the load, at
    /// weight 0, minus a margin for the clocks of the load and the runner.
    pub testers_only_s: f64,
    pub testers_only: Phase,
    pub whole_run: Phase,
    /// Judged on `testers_only`.
    pub verdict: Verdict,
}

/// The version in an api pod's name: `api-v2-1` (local) or `api-v2-5d8f7c9b6-x2x7k` (kind).
pub fn version_of(pod: &str) -> Option<&str> {
    pod.strip_prefix("api-")?.split('-').next().filter(|v| !v.is_empty())
}

/// Counts `load`; `testers_only_s` is how long into the load the weight was still 0.
pub fn count(load: &RunResult, settings: RuleSettings, testers_only_s: f64) -> RuleReport {
    let (mut testers_only, mut whole_run) = (Phase::default(), Phase::default());
    let until_us = (testers_only_s * 1e6) as u64;
    for r in &load.records {
        let version = load.pod_of(r).and_then(version_of);
        let add = |p: &mut Phase| {
            let side = if r.marked { &mut p.marked } else { &mut p.unmarked };
            match version {
                Some("v2") => side.v2 += 1,
                Some(_) => side.v1 += 1,
                None => side.unanswered += 1,
            }
        };
        add(&mut whole_run);
        if r.at_us < until_us {
            add(&mut testers_only);
        }
    }
    let verdict = match (testers_only.marked.v1, testers_only.marked.v2) {
        (0, 0) => Verdict::NoEvidence,
        (_, 0) => Verdict::Stripped,
        (0, _) => Verdict::Delivered,
        _ => Verdict::Leaky,
    };
    RuleReport { settings, testers_only_s, testers_only, whole_run, verdict }
}

impl RuleReport {
    /// What the run was meant to show: every tester on v2, or with the stripping hop in
    /// front, none of them. `Err` says what went wrong instead.
    pub fn check(&self) -> Result<(), String> {
        let want = if self.settings.strip_hop { Verdict::Stripped } else { Verdict::Delivered };
        if self.verdict == want {
            return Ok(());
        }
        Err(format!("routing by {}: {}", self.settings.rule.describe(), self.sentence()))
    }

    pub fn sentence(&self) -> String {
        let m = &self.testers_only.marked;
        let answered = m.v1 + m.v2;
        match self.verdict {
            Verdict::Delivered => format!("at weight 0, all {answered} answered tester requests reached v2"),
            Verdict::Stripped => format!(
                "at weight 0, v2 got 0 of the {answered} answered tester requests: every tester landed on v1, so the \
                 rule never matched. A hop in front of the router drops the {}",
                what(&self.settings.rule)
            ),
            Verdict::Leaky => format!(
                "at weight 0, {} of the {answered} answered tester requests reached v1: the rule matched only some \
                 of them",
                m.v1
            ),
            Verdict::NoEvidence => "no tester request was answered at weight 0: nothing to judge".into(),
        }
    }

    pub fn markdown(&self, o: &mut String) {
        let s = &self.settings;
        let _ = writeln!(o, "## Routing by rule\n");
        let _ = writeln!(
            o,
            "Testers: {}% of the requests carry `{}`; the router sends a request with {} to v2 whatever the weight{}. \
             Counted by the pod that answered each request (the load's own records). At weight 0 a tester on v2 \
             got there by the rule and anyone else on v2 would be a leak; once the weight rises, both also reach v2 \
             by weight.\n",
            s.testers_pct,
            {
                let (h, v) = s.rule.header();
                format!("{h}: {v}")
            },
            s.rule.describe(),
            if s.strip_hop {
                "; **a hop in front of the router strips it** (`--strip-hop`, the lab's failure demo)"
            } else {
                ""
            }
        );
        let _ = writeln!(o, "| requests | sent | reached v2 | reached v1 | unanswered |\n|---|---|---|---|---|");
        let phases = [
            (format!("first {:.1} s, weight 0 (testers only)", self.testers_only_s), &self.testers_only),
            ("whole run".to_string(), &self.whole_run),
        ];
        for (phase, p) in phases {
            for (who, b) in [("testers", &p.marked), ("everyone else", &p.unmarked)] {
                let _ = writeln!(o, "| {phase}: {who} | {} | {} | {} | {} |", b.total(), b.v2, b.v1, b.unanswered);
            }
        }
        let m = &self.testers_only.marked;
        let _ = writeln!(
            o,
            "\n**{:?}:** {}. v2's share of the answered tester requests at weight 0: {} (95% Wilson interval). \
             Judged at weight 0 only: later a tester can reach v2 by weight whether the rule matched or not.\n",
            self.verdict,
            self.sentence(),
            zerodrop_report::stats::describe(&zerodrop_report::stats::wilson(m.v2, m.v1 + m.v2))
        );
        let _ = writeln!(
            o,
            "The steps' v2 counts include the testers' requests: at a small weight they are most of v2's sample. \
             The z-test stays fair for a defect that hits every request alike; a defect that hits only some clients \
             is the stickiness chapter's subject.\n"
        );
    }
}

fn what(rule: &RouteRule) -> String {
    let (h, _) = rule.header();
    if h == "cookie" {
        format!("`cookie` header, and with it the `{}` cookie", rule.name)
    } else {
        format!("`{h}` header")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_load::{Class, Kind, Profile, Record};
    use zerodrop_platform::router::MatchOn;

    fn settings(strip_hop: bool) -> RuleSettings {
        RuleSettings { rule: RouteRule::parse(MatchOn::Header, "x-tester=1").unwrap(), testers_pct: 5.0, strip_hop }
    }

    /// `(marked, pod index)`; pods are api-v1-1, api-v2-5d8f7c9b6-x2x7k, and None.
    fn load(rows: &[(bool, Option<u16>)]) -> RunResult {
        let records = rows
            .iter()
            .enumerate()
            .map(|(i, &(marked, pod))| {
                let class = if pod.is_some() { Class::Ok } else { Class::Refused };
                Record::new(i as u64 * 1000, 500, class, Kind::Fast).with_pod(pod).with_marked(marked)
            })
            .collect();
        RunResult {
            started_unix_ms: 0,
            profile: Profile::default(),
            records,
            accepted_jobs: vec![],
            late_sends: 0,
            connections_opened: 1,
            pods: vec!["api-v1-1".into(), "api-v2-5d8f7c9b6-x2x7k".into()],
            mirrored: vec![],
            mirrored_accepted_jobs: vec![],
        }
    }

    #[test]
    fn versions_come_from_either_platform_s_pod_names() {
        assert_eq!(version_of("api-v2-1"), Some("v2"));
        assert_eq!(version_of("api-v1-7c9f6d5b8d-4xk2p"), Some("v1"));
        assert_eq!(version_of("haproxy-1"), None);
        assert_eq!(version_of("api-"), None);
    }

    #[test]
    fn marked_and_unmarked_are_counted_by_the_version_that_answered() {
        // One request per ms: the first five at weight 0, then one marked on v1 by weight.
        let rows =
            [(true, Some(1)), (true, Some(1)), (true, None), (false, Some(0)), (false, Some(0)), (true, Some(0))];
        let r = count(&load(&rows), settings(false), 0.005);
        assert_eq!(r.testers_only.marked, ByVersion { v1: 0, v2: 2, unanswered: 1 });
        assert_eq!(r.testers_only.unmarked, ByVersion { v1: 2, v2: 0, unanswered: 0 });
        assert_eq!(r.whole_run.marked, ByVersion { v1: 1, v2: 2, unanswered: 1 });
        assert_eq!(r.verdict, Verdict::Delivered, "what happened after weight 0 does not judge the rule");
        assert!(r.check().is_ok());
        let mut md = String::new();
        r.markdown(&mut md);
        assert!(md.contains("| first 0.0 s, weight 0 (testers only): testers | 3 | 2 | 0 | 1 |"), "{md}");
        assert!(md.contains("| whole run: testers | 4 | 2 | 1 | 1 |"), "{md}");
    }

    #[test]
    fn no_tester_on_v2_is_the_stripped_header_and_fails_unless_it_was_the_demo() {
        // At 100% later, the stripped testers reach v2 by weight: not a delivered rule.
        let rows = [(true, Some(0)), (true, Some(0)), (false, Some(0)), (true, Some(1)), (false, Some(1))];
        let r = count(&load(&rows), settings(false), 0.003);
        assert_eq!(r.verdict, Verdict::Stripped);
        let e = r.check().unwrap_err();
        assert!(e.contains("v2 got 0 of the 2 answered tester requests") && e.contains("`x-tester` header"), "{e}");
        assert!(count(&load(&rows), settings(true), 0.003).check().is_ok(), "the demo shows what it set out to show");
        let delivered = count(&load(&[(true, Some(1))]), settings(true), 1.0);
        assert!(
            delivered.check().unwrap_err().contains("all 1 answered"),
            "a hop that strips nothing is a failed demo"
        );
    }

    #[test]
    fn mixed_or_missing_evidence_is_said_so() {
        assert_eq!(count(&load(&[(true, Some(0)), (true, Some(1))]), settings(false), 1.0).verdict, Verdict::Leaky);
        let none = count(&load(&[(true, None), (false, Some(0)), (true, Some(1))]), settings(false), 0.002);
        assert_eq!(none.verdict, Verdict::NoEvidence);
        assert!(none.check().is_err());
    }

    #[test]
    fn the_testers_carry_the_rule_s_own_header() {
        let c = RuleSettings { rule: RouteRule::parse(MatchOn::Cookie, "zd_group=beta").unwrap(), ..settings(false) };
        assert_eq!(c.mark(), Mark { permille: 50, header: "cookie".into(), value: "zd_group=beta".into() });
        assert_eq!(c.routing().rules.len(), 1);
    }
}
