//! Every derived number of one stage, computed once from its raw measurements and
//! shared by report.json, report.md, the prose and the chart.

use super::causes::{self, Causes};
use super::checks::{self, Checks};
use super::model::{StageRun, Window};
use serde::Serialize;
use zerodrop_load::{timeline, window_stats, Class, LatencySummary, Second, WindowStats};

#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    pub total: u64,
    pub failed: u64,
    /// Every class key, zeros included.
    pub by_class: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub roll: LatencySummary,
    pub steady: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    /// Lowest number of ready api endpoints during the roll window; `None` when no
    /// endpoint sample covers the window.
    pub min_ready_endpoints: Option<u32>,
    /// Lowest number of api pods ready and not terminating during the roll window:
    /// what a Deployment's maxUnavailable counts. `None` without pod events.
    pub min_ready_pods: Option<u32>,
    pub desired: u32,
    /// Lowest per-second ok throughput during the roll against the steady mean, in %
    /// (0 when the roll never dipped below the steady mean).
    pub throughput_dip_pct: f64,
    pub steady_ok_per_sec: f64,
    /// The lowest per-second ok count among the seconds wholly inside the roll.
    pub roll_min_ok_per_sec: Option<u64>,
}

/// The derived view of one [`StageRun`].
#[derive(Debug, Clone)]
pub struct StageSummary {
    pub name: String,
    pub roll: WindowStats,
    pub steady: WindowStats,
    /// `roll.failed / roll.total`, 0 when the window holds no request.
    pub error_rate: f64,
    pub capacity: Capacity,
    pub timeline: Vec<Second>,
    pub checks: Checks,
    pub check_notes: Vec<String>,
    /// Every failed or slow request and every lost or twice-applied job, explained.
    pub causes: Causes,
}

impl StageSummary {
    pub fn of(run: &StageRun) -> StageSummary {
        let records = &run.load.records;
        let roll = window_stats(records, run.roll.from_us, run.roll.to_us);
        let steady = window_stats(records, run.steady.from_us, run.steady.to_us);
        let timeline = timeline(records);
        let error_rate = ratio(roll.failed, roll.total);
        let capacity = capacity(run, &steady, &timeline);
        let (checks, check_notes) = checks::compute(run);
        let causes = causes::explain(run);
        StageSummary {
            causes,
            name: run.stage.name.as_str().to_string(),
            error_rate,
            capacity,
            timeline,
            checks,
            check_notes,
            roll,
            steady,
        }
    }

    pub fn requests(&self) -> Requests {
        Requests { total: self.roll.total, failed: self.roll.failed, by_class: self.roll.by_class.clone() }
    }

    pub fn latency(&self) -> Latency {
        Latency { roll: self.roll.latency_ms, steady: self.steady.latency_ms }
    }

    /// Roll-window count of one class.
    pub fn count(&self, class: Class) -> u64 {
        self.roll.by_class.get(class.key()).copied().unwrap_or(0)
    }

    /// Failures not in any of the named columns of the table (4xx, 500, other).
    pub fn other_failures(&self) -> u64 {
        let named: u64 = [Class::Refused, Class::Reset, Class::Timeout, Class::Http502, Class::Http503, Class::Http504]
            .iter()
            .map(|c| self.count(*c))
            .sum();
        self.roll.failed.saturating_sub(named)
    }

    pub fn error_rate_pct(&self) -> f64 {
        self.error_rate * 100.0
    }
}

pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn capacity(run: &StageRun, steady: &WindowStats, timeline: &[Second]) -> Capacity {
    let steady_mean = steady_mean(timeline, run.steady).unwrap_or(steady.ok_per_sec);
    let roll_min = roll_min_ok(timeline, run.roll);
    let dip = match roll_min {
        Some(min) if steady_mean > 0.0 => ((steady_mean - min as f64) / steady_mean * 100.0).max(0.0),
        _ => 0.0,
    };
    Capacity {
        min_ready_endpoints: min_ready(run),
        min_ready_pods: min_ready_pods(run),
        desired: run.desired_endpoints,
        throughput_dip_pct: dip,
        steady_ok_per_sec: steady_mean,
        roll_min_ok_per_sec: roll_min,
    }
}

/// Seconds `[t, t+1)` wholly inside `w`.
fn inside(w: Window) -> impl Fn(&&Second) -> bool {
    move |s| {
        let from = u64::from(s.t) * 1_000_000;
        from >= w.from_us && from + 1_000_000 <= w.to_us
    }
}

fn steady_mean(timeline: &[Second], w: Window) -> Option<f64> {
    let oks: Vec<u64> = timeline.iter().filter(inside(w)).map(|s| s.ok).collect();
    (!oks.is_empty()).then(|| oks.iter().sum::<u64>() as f64 / oks.len() as f64)
}

fn roll_min_ok(timeline: &[Second], w: Window) -> Option<u64> {
    let whole = timeline.iter().filter(inside(w)).map(|s| s.ok).min();
    // A roll shorter than a second: fall back to the seconds it touches.
    whole.or_else(|| {
        timeline
            .iter()
            .filter(|s| {
                let from = u64::from(s.t) * 1_000_000;
                from < w.to_us && from + 1_000_000 > w.from_us
            })
            .map(|s| s.ok)
            .min()
    })
}

/// The endpoint count in force at the roll start, and every sample inside the roll.
fn min_ready(run: &StageRun) -> Option<u32> {
    let from_ms = (run.roll.from_us / 1000) as i64;
    let to_ms = (run.roll.to_us / 1000) as i64;
    let at_start = run.endpoints.iter().filter(|e| e.t_ms <= from_ms).max_by_key(|e| e.t_ms).map(|e| e.ready);
    let during = run.endpoints.iter().filter(|e| e.t_ms > from_ms && e.t_ms < to_ms).map(|e| e.ready);
    at_start.into_iter().chain(during).min()
}

/// Replays the api pods' events: a pod counts from `Ready` until `Unready`,
/// `Terminating`, `Sigterm` or its exit; the lowest count in force during the roll.
fn min_ready_pods(run: &StageRun) -> Option<u32> {
    use super::model::PodEventKind as K;
    let from_ms = (run.roll.from_us / 1000) as i64;
    let to_ms = (run.roll.to_us / 1000) as i64;
    let mut events: Vec<_> = run.events.iter().filter(|e| e.app == "api").collect();
    events.sort_by_key(|e| e.t_ms);
    let mut ready = std::collections::BTreeSet::new();
    let mut min: Option<u32> = None;
    let mut seen_start = false;
    for e in events {
        if e.t_ms > to_ms {
            break;
        }
        if e.t_ms > from_ms && !seen_start {
            // The count in force when the window opened.
            seen_start = true;
            min = Some(ready.len() as u32);
        }
        match e.kind {
            K::Ready => {
                ready.insert(e.pod.as_str());
            }
            K::Unready | K::Terminating | K::Sigterm | K::Sigkill | K::Exited => {
                ready.remove(e.pod.as_str());
            }
            K::Created | K::EndpointRemoved => {}
        }
        if e.t_ms > from_ms {
            let n = ready.len() as u32;
            min = Some(min.map_or(n, |m| m.min(n)));
        }
    }
    min.or_else(|| (!ready.is_empty()).then_some(ready.len() as u32))
}
