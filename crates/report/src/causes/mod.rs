//! Every failed or slow request, and every lost or twice-applied job, given one cause
//! from a closed list, by joining the client's outcome (its time, class, and the pod
//! that answered where one did) with the stage's timeline (pod events, the pods' own
//! lifecycle log lines, the ready endpoints). The levers' targets are defined over
//! these causes (`levers.rs`), so a failure from one mechanism never counts against
//! the lever of another.

pub mod pods;
#[cfg(test)]
mod tests;

use super::model::StageRun;
use pods::PodLife;
use serde::Serialize;
use std::collections::BTreeMap;
use zerodrop_load::{Class, Kind, Record};

/// Why a request failed or was slow, or why a job was lost or applied twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Connection refused: a pod had stopped listening while the Service still routed
    /// new connections to it.
    RefusedStoppedListener,
    /// Connection refused while the Service had no ready endpoint at all.
    RefusedNoEndpoint,
    /// Reset, cut or timed out within [`KILL_REACH_MS`] after an api pod's SIGKILL.
    CutBySigkill,
    /// Reset or cut while the only pods shutting down were draining cleanly: a request
    /// sent on an idle keep-alive connection at the moment the pod closed it. HTTP/1.1
    /// cannot rule this race out on the server side; a client retries idempotent
    /// requests on a reused connection.
    KeepaliveCloseRace,
    /// Reset, cut or timed out (or a job submission failed in the server) while an api
    /// pod was shutting down, with no SIGKILL to blame.
    CutByShutdown,
    /// 503 from a pod that was shutting down: refused up front, retryable.
    ShedDrainingPod,
    /// 503 from a pod still in its cold period (its cache not yet filled).
    ShedColdPod,
    /// 503 from a warm pod while fewer api pods than desired were ready, warm and
    /// serving (or the Service routed to fewer endpoints than desired).
    ShedFleetShort,
    /// 503 from a warm pod of a full, warm fleet that was answering far more than its
    /// share of the requests: keep-alive connections piled onto it (clients that all
    /// reconnected at once while it was the only new endpoint routed) and stayed.
    ShedImbalanced,
    /// 503 from a warm pod with every desired pod ready, warm and serving, and the
    /// load spread evenly: steady overload, a calibration fault, no lever's target.
    ShedFullWarm,
    /// Answered, but slower than [`SLOW_FACTOR`]× its kind's steady p99, by a pod in its
    /// cold period.
    SlowColdPod,
    /// Answered slowly by a warm pod: the host's own tail, no lever's target.
    SlowWarmPod,
    /// Accepted (202), never applied.
    JobLost,
    /// Applied more than once.
    JobAppliedTwice,
    /// None of the above fits: shown loudly, with the evidence.
    Unexplained,
}

impl Cause {
    pub const ALL: [Cause; 15] = [
        Cause::RefusedStoppedListener,
        Cause::RefusedNoEndpoint,
        Cause::CutBySigkill,
        Cause::KeepaliveCloseRace,
        Cause::CutByShutdown,
        Cause::ShedDrainingPod,
        Cause::ShedColdPod,
        Cause::ShedFleetShort,
        Cause::ShedImbalanced,
        Cause::ShedFullWarm,
        Cause::SlowColdPod,
        Cause::SlowWarmPod,
        Cause::JobLost,
        Cause::JobAppliedTwice,
        Cause::Unexplained,
    ];

    /// The key in report.json.
    pub fn key(self) -> &'static str {
        match self {
            Cause::RefusedStoppedListener => "refused_stopped_listener",
            Cause::RefusedNoEndpoint => "refused_no_endpoint",
            Cause::CutBySigkill => "cut_by_sigkill",
            Cause::KeepaliveCloseRace => "keepalive_close_race",
            Cause::CutByShutdown => "cut_by_shutdown",
            Cause::ShedDrainingPod => "shed_draining_pod",
            Cause::ShedColdPod => "shed_cold_pod",
            Cause::ShedFleetShort => "shed_fleet_short",
            Cause::ShedImbalanced => "shed_imbalanced",
            Cause::ShedFullWarm => "shed_full_warm",
            Cause::SlowColdPod => "slow_cold_pod",
            Cause::SlowWarmPod => "slow_warm_pod",
            Cause::JobLost => "job_lost",
            Cause::JobAppliedTwice => "job_applied_twice",
            Cause::Unexplained => "unexplained",
        }
    }

    /// What report.md prints.
    pub fn label(self) -> &'static str {
        match self {
            Cause::RefusedStoppedListener => "refused by an endpoint that stopped listening while still routed",
            Cause::RefusedNoEndpoint => "refused: the Service had no ready endpoint",
            Cause::CutBySigkill => "cut by a SIGKILL",
            Cause::KeepaliveCloseRace => {
                "reset: sent on an idle keep-alive connection as a cleanly draining pod closed it"
            }
            Cause::CutByShutdown => "cut mid-flight by a pod's shutdown",
            Cause::ShedDrainingPod => "503 from a pod shutting down (refused up front, retryable)",
            Cause::ShedColdPod => "503 from a cold pod",
            Cause::ShedFleetShort => "503 with the fleet short of ready, warm pods",
            Cause::ShedImbalanced => "503 from a warm pod holding far more than its share of the connections",
            Cause::ShedFullWarm => "503 with the fleet full, warm and evenly loaded (overload: a calibration fault)",
            Cause::SlowColdPod => "slow, served by a cold pod",
            Cause::SlowWarmPod => "slow, served by a warm pod (the host's tail; not a failure)",
            Cause::JobLost => "job accepted, never applied",
            Cause::JobAppliedTwice => "job applied twice",
            Cause::Unexplained => "unexplained",
        }
    }

    /// A failure (as opposed to a slow success).
    pub fn is_failure(self) -> bool {
        !matches!(self, Cause::SlowColdPod | Cause::SlowWarmPod)
    }
}

/// A SIGKILL cuts what is in flight; a failure that ends this soon after one is its.
pub const KILL_REACH_MS: i64 = 300;
/// A connection cut this soon after a pod exited was cut by that exit.
const EXIT_REACH_MS: i64 = 300;
/// How long after the Service's recorded removal of an endpoint a client may still
/// be routed to it: the last sync of the local Service's rules, or the node's proxy
/// catching up with the EndpointSlice on a cluster.
const ROUTE_LAG_MS: i64 = 1_000;
/// A pod answering more than this many times its fair share (1 / desired) of a
/// second's requests holds more than its share of the connections.
const IMBALANCE_FACTOR: f64 = 1.5;
/// The keep-alive close race answers at once: the request was written onto a
/// connection the server had already closed. A reset that took longer was in flight.
const RACE_MAX_LATENCY_US: u64 = 20_000;
/// A success slower than this many times its kind's steady p99 was held up.
pub const SLOW_FACTOR: f64 = 2.0;

/// One record's cause, by its index in `StageRun::load.records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explained {
    pub record: usize,
    pub cause: Cause,
}

/// The causes of one stage run.
#[derive(Debug, Clone, Default)]
pub struct Causes {
    /// Every failed or slow request in the whole load run, in record order.
    pub requests: Vec<Explained>,
    /// Tallies over the deploy window, jobs included.
    pub deploy: BTreeMap<Cause, u64>,
    /// Tallies over the steady window (requests only).
    pub steady: BTreeMap<Cause, u64>,
    /// The slow thresholds used, per kind, in microseconds.
    pub slow_us: BTreeMap<&'static str, u64>,
}

impl Causes {
    pub fn deploy_count(&self, cause: Cause) -> u64 {
        self.deploy.get(&cause).copied().unwrap_or(0)
    }
    pub fn steady_failures(&self) -> u64 {
        self.steady.iter().filter(|(c, _)| c.is_failure()).map(|(_, n)| n).sum()
    }
    /// Tallies keyed as report.json writes them.
    pub fn keyed(map: &BTreeMap<Cause, u64>) -> BTreeMap<&'static str, u64> {
        map.iter().map(|(c, n)| (c.key(), *n)).collect()
    }
    /// The cause given to record `i`, if it failed or was slow.
    pub fn of_record(&self, i: usize) -> Option<Cause> {
        self.requests.binary_search_by_key(&i, |e| e.record).ok().map(|k| self.requests[k].cause)
    }
}

/// Explains every failed or slow request of `run`, and its lost and twice-applied jobs.
pub fn explain(run: &StageRun) -> Causes {
    let pods = pods::api_pods(run);
    let slow_us = slow_thresholds(run);
    let kills: Vec<i64> = pods.values().filter_map(|p| p.sigkill).collect();
    let shares = Shares::of(run);
    let ctx = Ctx { run, pods: &pods, kills: &kills, shares: &shares };
    let mut out = Causes { slow_us: slow_us.iter().map(|(k, v)| (kind_key(*k), *v)).collect(), ..Causes::default() };
    for (i, rec) in run.load.records.iter().enumerate() {
        let slow = rec.class == Class::Ok && slow_us.get(&rec.kind).is_some_and(|&t| rec.latency_us > t);
        if rec.class == Class::Ok && !slow {
            continue;
        }
        let cause = ctx.cause(rec);
        out.requests.push(Explained { record: i, cause });
        let tally = if in_window(rec, run.roll) {
            &mut out.deploy
        } else if in_window(rec, run.steady) {
            &mut out.steady
        } else {
            continue;
        };
        *tally.entry(cause).or_default() += 1;
    }
    for (cause, n) in [(Cause::JobLost, run.jobs.lost), (Cause::JobAppliedTwice, run.jobs.duplicated)] {
        if n > 0 {
            *out.deploy.entry(cause).or_default() += n;
        }
    }
    out
}

/// `outcomes.csv`: one line per failed or slow request, with its cause, so a reader
/// can check any count of the cause table against the requests behind it.
pub fn csv(run: &StageRun, causes: &Causes) -> String {
    let mut out = String::from("t_ms,latency_ms,window,kind,class,pod,cause\n");
    for e in &causes.requests {
        let Some(rec) = run.load.records.get(e.record) else { continue };
        let window = if in_window(rec, run.roll) {
            "deploy"
        } else if in_window(rec, run.steady) {
            "steady"
        } else {
            "other"
        };
        out.push_str(&format!(
            "{},{},{window},{},{},{},{}\n",
            rec.at_us / 1000,
            rec.latency_us / 1000,
            kind_key(rec.kind),
            rec.class.key(),
            run.load.pod_of(rec).unwrap_or(""),
            e.cause.key()
        ));
    }
    out
}

fn in_window(rec: &Record, w: super::model::Window) -> bool {
    rec.at_us >= w.from_us && rec.at_us < w.to_us
}

fn kind_key(k: Kind) -> &'static str {
    match k {
        Kind::Fast => "fast",
        Kind::Slow => "slow",
        Kind::Job => "job",
    }
}

/// Per kind: [`SLOW_FACTOR`]× the p99 of that kind's successes in the steady window.
/// A fast request is held up long before it reaches the slow requests' tail, so one
/// threshold for all kinds would miss it.
fn slow_thresholds(run: &StageRun) -> BTreeMap<Kind, u64> {
    let mut by_kind: BTreeMap<Kind, Vec<u64>> = BTreeMap::new();
    for rec in run.load.records.iter().filter(|r| r.class == Class::Ok && in_window(r, run.steady)) {
        by_kind.entry(rec.kind).or_default().push(rec.latency_us);
    }
    by_kind
        .into_iter()
        .filter_map(|(k, mut v)| {
            v.sort_unstable();
            let p99 = *v.get(((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))?;
            Some((k, (p99 as f64 * SLOW_FACTOR) as u64))
        })
        .collect()
}

struct Ctx<'a> {
    run: &'a StageRun,
    pods: &'a BTreeMap<String, PodLife>,
    kills: &'a [i64],
    shares: &'a Shares,
}

/// Answers per pod per second of the load, to tell which pod carried more than its
/// share when it shed.
struct Shares {
    /// (second, pod index) -> answers; second -> answers by any pod.
    by_pod: BTreeMap<(u64, u16), u64>,
    total: BTreeMap<u64, u64>,
}

impl Shares {
    fn of(run: &StageRun) -> Shares {
        let (mut by_pod, mut total) = (BTreeMap::new(), BTreeMap::new());
        for rec in &run.load.records {
            if let Some(p) = rec.pod {
                let sec = rec.at_us / 1_000_000;
                *by_pod.entry((sec, p)).or_default() += 1;
                *total.entry(sec).or_default() += 1;
            }
        }
        Shares { by_pod, total }
    }

    /// The share of the second around `at_us` that pod `p` answered.
    fn share(&self, at_us: u64, p: u16) -> f64 {
        let sec = at_us / 1_000_000;
        let total = self.total.get(&sec).copied().unwrap_or(0);
        let mine = self.by_pod.get(&(sec, p)).copied().unwrap_or(0);
        if total == 0 {
            0.0
        } else {
            mine as f64 / total as f64
        }
    }
}

impl Ctx<'_> {
    fn cause(&self, rec: &Record) -> Cause {
        let start = (rec.at_us / 1000) as i64;
        let end = ((rec.at_us + rec.latency_us) / 1000) as i64;
        let pod = self.run.load.pod_of(rec).and_then(|name| self.pods.get(name));
        match rec.class {
            Class::Ok => match pod {
                Some(p) if p.cold_at(start) => Cause::SlowColdPod,
                _ => Cause::SlowWarmPod,
            },
            Class::Refused => self.refused(start, end),
            Class::Http503 => self.shed(rec, pod, start, end),
            Class::Reset | Class::Timeout | Class::Other | Class::Http504 => self.cut(rec, pod, start, end),
            Class::Http500 | Class::Http502 if rec.kind == Kind::Job => self.cut(rec, pod, start, end),
            Class::Http500 | Class::Http502 | Class::Http4xx => Cause::Unexplained,
        }
    }

    fn refused(&self, start: i64, end: i64) -> Cause {
        if self.pods.values().any(|p| p.dead_but_routed_during(start, end, ROUTE_LAG_MS)) {
            Cause::RefusedStoppedListener
        } else if pods::ready_at(self.run, start) == Some(0) {
            Cause::RefusedNoEndpoint
        } else {
            Cause::Unexplained
        }
    }

    fn shed(&self, rec: &Record, pod: Option<&PodLife>, start: i64, end: i64) -> Cause {
        if let Some(p) = pod {
            if p.shutting_down_at(end) {
                return Cause::ShedDrainingPod;
            }
            if p.cold_at(start) {
                return Cause::ShedColdPod;
            }
        }
        let serving = self.pods.values().filter(|p| p.warm_and_serving_at(start)).count() as u32;
        let routed = pods::ready_at(self.run, start);
        let desired = self.run.desired_endpoints;
        let fair = 1.0 / f64::from(desired.max(1));
        if serving < desired || routed.is_some_and(|r| r < desired) {
            Cause::ShedFleetShort
        } else if rec.pod.is_some_and(|p| self.shares.share(rec.at_us, p) > fair * IMBALANCE_FACTOR) {
            Cause::ShedImbalanced
        } else if pod.is_some() {
            Cause::ShedFullWarm
        } else {
            // No pod named the 503: nothing ties it to a state.
            Cause::Unexplained
        }
    }

    /// A request cut (or a job submission failed in the server): by a SIGKILL, else
    /// by the shutdown of the pod that answered, else by the shutdown of any api pod
    /// (a cut connection names no pod). Only a reset that came back at once, during
    /// nothing but clean drains, is the race of an idle connection closed under a
    /// request just sent; anything else then is still the shutdown's.
    fn cut(&self, rec: &Record, pod: Option<&PodLife>, start: i64, end: i64) -> Cause {
        let killed_pod: Vec<i64> = match pod.and_then(|p| p.sigkill) {
            Some(k) => vec![k],
            None => self.kills.to_vec(),
        };
        // A timeout ends at the client's deadline, long after the kill that hung it.
        let kill_reached = |k: i64| match rec.class {
            Class::Timeout => k >= start && k <= end,
            _ => end >= k && end <= k + KILL_REACH_MS,
        };
        if killed_pod.into_iter().any(kill_reached) {
            return Cause::CutBySigkill;
        }
        // A pod that will drain closes nothing before its drain starts (it is still in
        // its deregistration wait, serving as before).
        let during_shutdown = |p: &&PodLife| {
            p.shutting_down_at(end)
                && p.drain_started.is_none_or(|d| end >= d)
                && p.exited.or(p.sigkill).is_none_or(|x| end <= x + EXIT_REACH_MS)
        };
        let shutting: Vec<&PodLife> = match pod {
            Some(p) => std::iter::once(p).filter(during_shutdown).collect(),
            None => self.pods.values().filter(during_shutdown).collect(),
        };
        if shutting.is_empty() {
            Cause::Unexplained
        } else if rec.class == Class::Reset
            && rec.latency_us <= RACE_MAX_LATENCY_US
            && shutting.iter().all(|p| p.clean_drain_at(end, EXIT_REACH_MS))
        {
            Cause::KeepaliveCloseRace
        } else {
            Cause::CutByShutdown
        }
    }
}
