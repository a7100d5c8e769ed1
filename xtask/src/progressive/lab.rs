//! What `canary` and `blue-green` share beyond the run harness: the load through the
//! routing tier, and the run's end (agreement, load).

use super::model::{Agreement, LoadSummary};
use std::time::Duration;
use zerodrop_load::{Class, Mix, Profile, RunResult};
use zerodrop_platform::router::Snapshot;

/// Fast requests only (`GET /work?ms=5`) at `qps`: the api's own endpoint, no jobs,
/// so every request is judged on the same route.
pub fn profile(qps: u32, duration: Duration) -> Profile {
    Profile { rate_per_sec: qps, duration, mix: Mix { fast: 1, slow: 0, job: 0 }, ..Profile::default() }
}

pub fn summarise(load: &RunResult) -> LoadSummary {
    let mut by_class = std::collections::BTreeMap::new();
    for r in &load.records {
        *by_class.entry(r.class.key().to_string()).or_insert(0u64) += 1;
    }
    LoadSummary {
        rate_per_sec: load.profile.rate_per_sec,
        total: load.records.len() as u64,
        failed: load.records.iter().filter(|r| r.class != Class::Ok).count() as u64,
        by_class,
    }
}

/// HAProxy's counters against the apps' over the whole run.
pub fn agreement(end: &Snapshot, start: &Snapshot) -> Agreement {
    let rs = end.router.0.requests - start.router.0.requests.min(end.router.0.requests);
    let rc = end.router.1.requests - start.router.1.requests.min(end.router.1.requests);
    let re = (end.router.0.http_5xx + end.router.1.http_5xx)
        .saturating_sub(start.router.0.http_5xx + start.router.1.http_5xx);
    let s = end.app_stable.since(&start.app_stable);
    let c = end.app_canary.since(&start.app_canary);
    let diff = |a: u64, b: u64| if a.max(b) == 0 { 0.0 } else { a.abs_diff(b) as f64 * 100.0 / a.max(b) as f64 };
    let max_diff_pct = diff(rs, s.requests).max(diff(rc, c.requests)).max(diff(rs + rc, s.requests + c.requests));
    Agreement {
        router_stable: rs,
        app_stable: s.requests,
        router_canary: rc,
        app_canary: c.requests,
        router_errors: re,
        app_errors: s.errors_5xx + c.errors_5xx,
        max_diff_pct,
        within_1pct: max_diff_pct <= 1.0,
    }
}

pub fn started_at() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
