//! Turns one variant's raw observations into the numbers the report compares:
//! reconnects, closes and failures per 100 ms bucket around the deploy, the accept
//! queue, and 503s and latency on the cold (new) pods against the rest.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use zerodrop_load::keepalive::{KeepAliveResult, Trigger};
use zerodrop_load::Class;
use zerodrop_platform::accept_queue::QueueTick;
use zerodrop_report::stats::{wilson, Rate};

/// Bucket width of the reconnect-rate curve.
pub const BUCKET_US: u64 = 100_000;
/// How much of the time before the trigger the curve shows.
pub const LEAD_US: u64 = 2_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Start, ms relative to the rollout trigger.
    pub t_ms: i64,
    pub closes: u32,
    pub reconnects: u32,
    pub connect_failures: u32,
    pub requests: u32,
    pub failed: u32,
    pub http_503: u32,
    /// Longest total accept queue (all api listeners) sampled in the bucket.
    pub accept_queue: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub n: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Requests answered by one group of pods in the deploy window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodGroup {
    pub pods: Vec<String>,
    pub http_503: Rate,
    pub latency: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantSummary {
    pub name: String,
    pub keepalive_close: String,
    pub clients: u32,
    pub peak_open: u64,
    pub rollout_s: f64,
    pub closes: u64,
    pub reconnects: u64,
    pub peak_closes_per_100ms: u32,
    pub peak_reconnects_per_100ms: u32,
    /// Failed connect attempts in the window, by class key.
    pub connect_failures: BTreeMap<String, u64>,
    pub connect_latency: Latency,
    pub accept_queue_peak: u32,
    pub accept_queue_peak_single: u32,
    pub accept_backlog: u32,
    /// SYNs the kernel dropped on full accept queues during the run (lab namespace).
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// Every request of the deploy window; failed = anything but 2xx.
    pub failed: Rate,
    pub http_503: Rate,
    pub failures_by_class: BTreeMap<String, u64>,
    pub cold_pods: PodGroup,
    pub other_pods: PodGroup,
    pub reconnect_requests: Latency,
    /// Requests that failed before the trigger (the steady state must be clean).
    pub steady_failed: Rate,
}

pub struct Input<'a> {
    pub name: &'a str,
    pub close: &'a str,
    pub result: &'a KeepAliveResult,
    pub trigger_us: u64,
    pub window_us: u64,
    pub steady_from_us: u64,
    pub ticks: &'a [QueueTick],
    pub cold: &'a BTreeSet<String>,
    pub rollout_s: f64,
    pub drops: (u64, u64),
    pub backlog: u32,
}

pub fn buckets(i: &Input) -> Vec<Bucket> {
    let from = i.trigger_us.saturating_sub(LEAD_US);
    let to = i.trigger_us + i.window_us;
    let n = ((to - from) / BUCKET_US) as usize;
    let mut b: Vec<Bucket> = (0..n)
        .map(|k| Bucket {
            t_ms: (from + k as u64 * BUCKET_US) as i64 / 1000 - i.trigger_us as i64 / 1000,
            ..Bucket::default()
        })
        .collect();
    let slot = |us: u64| (us >= from && us < to).then(|| ((us - from) / BUCKET_US) as usize).filter(|k| *k < n);
    for &c in &i.result.closes_us {
        if let Some(k) = slot(c) {
            b[k].closes += 1;
        }
    }
    for c in &i.result.connects {
        if let Some(k) = slot(c.at_us) {
            b[k].reconnects += u32::from(c.reconnect);
            b[k].connect_failures += u32::from(c.class != Class::Ok);
        }
    }
    for r in &i.result.requests {
        if let Some(k) = slot(r.at_us) {
            b[k].requests += 1;
            b[k].failed += u32::from(r.class.is_failure());
            b[k].http_503 += u32::from(r.class == Class::Http503);
        }
    }
    let origin_ms = i.result.started_unix_ms as i64;
    for t in i.ticks {
        let us = (t.unix_ms - origin_ms).max(0) as u64 * 1000;
        if let Some(k) = slot(us) {
            b[k].accept_queue = b[k].accept_queue.max(t.total);
        }
    }
    b
}

pub fn summarise(i: &Input, b: &[Bucket]) -> VariantSummary {
    let (from, to) =
        (i.trigger_us.saturating_sub(crate::experiment::DEPLOY_GUARD.as_micros() as u64), i.trigger_us + i.window_us);
    let in_window = |us: u64| us >= from && us < to;
    let reqs: Vec<_> = i.result.requests.iter().filter(|r| in_window(r.at_us)).collect();
    let n = reqs.len() as u64;
    let count = |f: &dyn Fn(&&zerodrop_load::keepalive::KaRequest) -> bool| reqs.iter().filter(|r| f(r)).count() as u64;
    let mut failures_by_class = BTreeMap::new();
    for r in reqs.iter().filter(|r| r.class.is_failure()) {
        *failures_by_class.entry(r.class.key().to_string()).or_insert(0) += 1;
    }
    let group = |cold: bool| {
        let mine: Vec<_> = reqs.iter().filter(|r| r.pod.as_ref().is_some_and(|p| i.cold.contains(p) == cold)).collect();
        let pods: BTreeSet<String> = mine.iter().filter_map(|r| r.pod.clone()).collect();
        let k = mine.iter().filter(|r| r.class == Class::Http503).count() as u64;
        PodGroup {
            pods: pods.into_iter().collect(),
            http_503: wilson(k, mine.len() as u64),
            latency: latency(mine.iter().map(|r| r.latency_us)),
        }
    };
    let conns: Vec<_> = i.result.connects.iter().filter(|c| in_window(c.at_us)).collect();
    let mut connect_failures = BTreeMap::new();
    for c in conns.iter().filter(|c| c.class != Class::Ok) {
        *connect_failures.entry(c.class.key().to_string()).or_insert(0) += 1;
    }
    let steady: Vec<_> = i.result.requests.iter().filter(|r| r.at_us >= i.steady_from_us && r.at_us < from).collect();
    VariantSummary {
        name: i.name.to_string(),
        keepalive_close: i.close.to_string(),
        clients: i.result.profile.clients,
        peak_open: i.result.peak_open,
        rollout_s: i.rollout_s,
        closes: i.result.closes_us.iter().filter(|c| in_window(**c)).count() as u64,
        reconnects: conns.iter().filter(|c| c.reconnect).count() as u64,
        peak_closes_per_100ms: b.iter().map(|x| x.closes).max().unwrap_or(0),
        peak_reconnects_per_100ms: b.iter().map(|x| x.reconnects).max().unwrap_or(0),
        connect_failures,
        connect_latency: latency(conns.iter().filter(|c| c.class == Class::Ok).map(|c| c.took_us)),
        accept_queue_peak: i.ticks.iter().map(|t| t.total).max().unwrap_or(0),
        accept_queue_peak_single: i.ticks.iter().map(|t| t.max).max().unwrap_or(0),
        accept_backlog: i.backlog,
        listen_overflows: i.drops.0,
        listen_drops: i.drops.1,
        failed: wilson(count(&|r| r.class.is_failure()), n),
        http_503: wilson(count(&|r| r.class == Class::Http503), n),
        failures_by_class,
        cold_pods: group(true),
        other_pods: group(false),
        reconnect_requests: latency(reqs.iter().filter(|r| r.trigger == Trigger::Reconnect).map(|r| r.latency_us)),
        steady_failed: wilson(steady.iter().filter(|r| r.class.is_failure()).count() as u64, steady.len() as u64),
    }
}

pub fn latency(us: impl Iterator<Item = u64>) -> Latency {
    let mut v: Vec<u64> = us.collect();
    if v.is_empty() {
        return Latency::default();
    }
    v.sort_unstable();
    let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
    Latency { n: v.len() as u64, p50_ms: q(0.5), p99_ms: q(0.99), max_ms: v[v.len() - 1] as f64 / 1000.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_load::keepalive::{KaConnect, KaRequest, KeepAliveProfile};

    fn result() -> KeepAliveResult {
        let profile = crate::reconnect::profile::ReconnectProfile::standard().load;
        let req = |at_us, class, pod: &str| KaRequest {
            client: 0,
            at_us,
            latency_us: 10_000,
            class,
            trigger: Trigger::Scheduled,
            pod: Some(pod.into()),
        };
        let conn = |at_us, class| KaConnect { client: 0, at_us, took_us: 1000, class, reconnect: true };
        KeepAliveResult {
            started_unix_ms: 1_000_000,
            profile: KeepAliveProfile { clients: 2, ..profile },
            requests: vec![
                req(9_000_000, Class::Ok, "old"),
                req(10_050_000, Class::Http503, "new"),
                req(10_060_000, Class::Ok, "new"),
            ],
            connects: vec![conn(10_010_000, Class::Ok), conn(10_020_000, Class::Timeout)],
            closes_us: vec![10_005_000, 10_006_000],
            peak_open: 2,
        }
    }

    #[test]
    fn buckets_and_cold_pod_groups_count_what_happened() {
        let r = result();
        let cold: BTreeSet<String> = ["new".to_string()].into();
        let ticks = [QueueTick { unix_ms: 1_000_000 + 10_030, total: 40, max: 30 }];
        let i = Input {
            name: "at-once",
            close: "at-once",
            result: &r,
            trigger_us: 10_000_000,
            window_us: 1_000_000,
            steady_from_us: 8_000_000,
            ticks: &ticks,
            cold: &cold,
            rollout_s: 1.0,
            drops: (0, 0),
            backlog: 128,
        };
        let b = buckets(&i);
        assert_eq!(b.len(), 30);
        let first = &b[20];
        assert_eq!(first.t_ms, 0);
        assert_eq!((first.closes, first.reconnects, first.connect_failures), (2, 2, 1));
        assert_eq!((first.requests, first.http_503, first.accept_queue), (2, 1, 40));
        let s = summarise(&i, &b);
        assert_eq!(s.cold_pods.http_503.k, 1);
        assert_eq!(s.cold_pods.http_503.n, 2);
        assert_eq!(s.other_pods.http_503.n, 1, "the request 1 s before the trigger is in the guarded window");
        assert_eq!(s.connect_failures.get("timeout"), Some(&1));
        assert_eq!(s.peak_reconnects_per_100ms, 2);
    }
}
