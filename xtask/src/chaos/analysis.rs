//! From one variant's raw records and the api pods' breaker lines to what the report
//! shows: per phase and request kind, error rate and p50/p99 with 95% intervals; the
//! breaker's transitions; the time to open and to recover; a bucketed timeline.

use serde::Serialize;
use zerodrop_load::{Kind, Record};
use zerodrop_report::stats::{quantile, wilson, Quantile, Rate};

pub const PHASES: [&str; 3] = ["before", "fault", "after"];

/// Times in microseconds since the load started.
pub struct Input<'a> {
    pub records: &'a [Record],
    pub inject_us: u64,
    pub heal_us: u64,
    pub phase_us: u64,
    /// (µs since the load started, pod, new state), in any order.
    pub transitions: &'a [(u64, String, String)],
}

#[derive(Debug, Clone, Serialize)]
pub struct KindStats {
    pub requests: u64,
    pub failed: Rate,
    pub http_503: u64,
    pub p50_ms: Quantile,
    pub p99_ms: Quantile,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub name: &'static str,
    pub from_s: f64,
    pub to_s: f64,
    /// `GET /work` (fast and slow): the requests that never touch the broker.
    pub work: KindStats,
    /// `POST /jobs`: the requests that publish.
    pub jobs: KindStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub t_s: f64,
    pub pod: String,
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    /// From the fault to the first breaker opening (any pod).
    pub to_open_ms: Option<u64>,
    /// From the heal to the moment the last pod whose breaker opened closed it again.
    pub to_close_ms: Option<u64>,
    /// From the heal to the last failed request (of any kind); `None`: none after it.
    pub last_failure_after_heal_ms: Option<u64>,
    pub pods_opened: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub t_s: f64,
    pub sent: u64,
    pub work_failed: u64,
    pub jobs_failed: u64,
    pub work_p99_ms: f64,
    pub jobs_p99_ms: f64,
    /// The fault's edges and the breaker transitions that fell in this bucket.
    pub marks: String,
}

pub fn phases(i: &Input) -> Vec<PhaseStats> {
    let bounds = [
        (i.inject_us.saturating_sub(i.phase_us), i.inject_us),
        (i.inject_us, i.heal_us),
        (i.heal_us, i.heal_us + i.phase_us),
    ];
    PHASES
        .iter()
        .zip(bounds)
        .map(|(name, (from, to))| PhaseStats {
            name,
            from_s: from as f64 / 1e6,
            to_s: to as f64 / 1e6,
            work: kind_stats(i.records, from, to, |k| k != Kind::Job),
            jobs: kind_stats(i.records, from, to, |k| k == Kind::Job),
        })
        .collect()
}

fn kind_stats(records: &[Record], from: u64, to: u64, kind: impl Fn(Kind) -> bool) -> KindStats {
    let picked: Vec<&Record> = records.iter().filter(|r| r.at_us >= from && r.at_us < to && kind(r.kind)).collect();
    let failed = picked.iter().filter(|r| r.class.is_failure()).count() as u64;
    let http_503 = picked.iter().filter(|r| r.class == zerodrop_load::Class::Http503).count() as u64;
    let mut ms: Vec<f64> = picked.iter().map(|r| r.latency_us as f64 / 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    KindStats {
        requests: picked.len() as u64,
        failed: wilson(failed, picked.len() as u64),
        http_503,
        p50_ms: quantile(&ms, 0.5),
        p99_ms: quantile(&ms, 0.99),
    }
}

pub fn transitions(i: &Input) -> Vec<Transition> {
    let mut t: Vec<Transition> = i
        .transitions
        .iter()
        .map(|(us, pod, to)| Transition { t_s: *us as f64 / 1e6, pod: pod.clone(), to: to.clone() })
        .collect();
    t.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then_with(|| a.pod.cmp(&b.pod)));
    t
}

pub fn timing(i: &Input) -> Timing {
    let ms = |us: u64| us / 1000;
    let opened: Vec<&(u64, String, String)> = i.transitions.iter().filter(|(_, _, to)| to == "open").collect();
    let to_open_ms = opened.iter().filter(|(t, _, _)| *t >= i.inject_us).map(|(t, _, _)| ms(t - i.inject_us)).min();
    let mut pods: Vec<&String> = opened.iter().map(|(_, p, _)| p).collect();
    pods.sort();
    pods.dedup();
    // Each pod that opened must close after the heal; the fleet has recovered when the
    // last one did. A pod that never closed leaves the time unknown.
    let closes: Option<Vec<u64>> = pods
        .iter()
        .map(|p| {
            i.transitions
                .iter()
                .filter(|(t, q, to)| q == *p && to == "closed" && *t >= i.heal_us)
                .map(|(t, _, _)| ms(t - i.heal_us))
                .min()
        })
        .collect();
    let to_close_ms = closes.filter(|c| !c.is_empty()).and_then(|c| c.into_iter().max());
    let last_failure_after_heal_ms = i
        .records
        .iter()
        .filter(|r| r.class.is_failure() && r.at_us >= i.heal_us && r.at_us < i.heal_us + i.phase_us)
        .map(|r| ms(r.at_us - i.heal_us))
        .max();
    Timing { to_open_ms, to_close_ms, last_failure_after_heal_ms, pods_opened: pods.len() }
}

/// `width_us` buckets from the first phase's start to the last one's end.
pub fn timeline(i: &Input, width_us: u64) -> Vec<Bucket> {
    let start = i.inject_us.saturating_sub(i.phase_us);
    let end = i.heal_us + i.phase_us;
    let mut out = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + width_us).min(end);
        let inside = |t: u64| t >= from && t < to;
        let recs: Vec<&Record> = i.records.iter().filter(|r| inside(r.at_us)).collect();
        let p99 = |job: bool| {
            let mut v: Vec<f64> =
                recs.iter().filter(|r| (r.kind == Kind::Job) == job).map(|r| r.latency_us as f64 / 1000.0).collect();
            v.sort_by(f64::total_cmp);
            quantile(&v, 0.99).value
        };
        let failed =
            |job: bool| recs.iter().filter(|r| (r.kind == Kind::Job) == job && r.class.is_failure()).count() as u64;
        let mut marks = Vec::new();
        if inside(i.inject_us) {
            marks.push("fault on".to_string());
        }
        if inside(i.heal_us) {
            marks.push("fault off".to_string());
        }
        for state in ["open", "half_open", "closed"] {
            let n = i.transitions.iter().filter(|(t, _, to)| inside(*t) && to == state).count();
            if n > 0 {
                marks.push(format!("{n}× {}", state.replace('_', "-")));
            }
        }
        out.push(Bucket {
            t_s: (from - start) as f64 / 1e6,
            sent: recs.len() as u64,
            work_failed: failed(false),
            jobs_failed: failed(true),
            work_p99_ms: p99(false),
            jobs_p99_ms: p99(true),
            marks: marks.join(", "),
        });
        from = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_load::Class;

    fn rec(at_ms: u64, latency_ms: u64, class: Class, kind: Kind) -> Record {
        Record::new(at_ms * 1000, latency_ms * 1000, class, kind)
    }

    #[test]
    fn phases_timing_and_timeline_from_records_and_transitions() {
        let mut records = Vec::new();
        for s in 0..30u64 {
            let faulty = (10..20).contains(&s);
            let job = if faulty { Class::Http503 } else { Class::Ok };
            records.push(rec(s * 1000, if faulty { 2 } else { 3 }, job, Kind::Job));
            records.push(rec(s * 1000 + 10, 5, Class::Ok, Kind::Fast));
        }
        records.push(rec(21_500, 5, Class::Reset, Kind::Slow));
        let tr = vec![
            (10_600_000, "api-b".to_string(), "open".to_string()),
            (10_500_000, "api-a".to_string(), "open".to_string()),
            (20_900_000, "api-a".to_string(), "closed".to_string()),
            (22_100_000, "api-b".to_string(), "closed".to_string()),
        ];
        let i = Input {
            records: &records,
            inject_us: 10_000_000,
            heal_us: 20_000_000,
            phase_us: 10_000_000,
            transitions: &tr,
        };
        let p = phases(&i);
        assert_eq!(p.iter().map(|p| p.name).collect::<Vec<_>>(), PHASES);
        assert_eq!((p[0].jobs.failed.k, p[1].jobs.failed.k, p[1].jobs.failed.n), (0, 10, 10));
        assert_eq!(p[1].jobs.http_503, 10);
        assert_eq!((p[2].work.failed.k, p[2].work.requests), (1, 11));
        let t = timing(&i);
        assert_eq!(t.to_open_ms, Some(500));
        assert_eq!(t.to_close_ms, Some(2_100), "the last pod to close decides");
        assert_eq!(t.last_failure_after_heal_ms, Some(1_500));
        assert_eq!(t.pods_opened, 2);
        assert_eq!(transitions(&i)[0].pod, "api-a");
        let tl = timeline(&i, 5_000_000);
        assert_eq!(tl.len(), 6);
        assert_eq!(tl[2].marks, "fault on, 2× open");
        assert_eq!(tl[4].marks, "fault off, 2× closed");
        assert_eq!(tl[2].jobs_failed, 5);
    }

    #[test]
    fn a_pod_that_never_closes_leaves_the_recovery_unknown() {
        let tr = vec![(1_000, "api-a".to_string(), "open".to_string())];
        let i = Input { records: &[], inject_us: 0, heal_us: 5_000, phase_us: 5_000, transitions: &tr };
        assert_eq!(timing(&i).to_close_ms, None);
        let none = Input { transitions: &[], ..i };
        assert_eq!((timing(&none).to_open_ms, timing(&none).to_close_ms, timing(&none).pods_opened), (None, None, 0));
    }
}
