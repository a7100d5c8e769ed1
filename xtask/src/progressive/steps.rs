//! The canary's staircase on a running fleet: set the weight at the routing tier,
//! hold until the step has its sample, judge it with the gates, promote or roll back
//! to 0%. Every second the routing tier's counters go into the timeline.

use super::clients::{self, Judge};
use super::gates::{self, Observed};
use super::model::Settings;
use super::model::{Decision, Rollback, Side, Step, Tick};
use super::stats::hold_seconds;
use anyhow::Result;
use std::time::{Duration, Instant};
use zerodrop_platform::router::{RoutedFleet, Snapshot};
use zerodrop_report::stats::wilson;

/// Samples the routing tier once a second into the timeline.
pub struct Ticker {
    t0: Instant,
    pub weight_pct: f64,
    last: Snapshot,
    pub ticks: Vec<Tick>,
}

impl Ticker {
    pub fn new(t0: Instant, first: Snapshot) -> Ticker {
        Ticker { t0, weight_pct: 0.0, last: first, ticks: Vec::new() }
    }

    pub fn now_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub async fn tick(&mut self, fleet: &impl RoutedFleet) -> Result<Snapshot> {
        let s = fleet.snapshot().await?;
        let (d_s, d_c) = (s.router.0.since(self.last.router.0), s.router.1.since(self.last.router.1));
        self.ticks.push(Tick {
            t_s: self.now_s(),
            weight_pct: self.weight_pct,
            stable_requests: d_s.requests,
            stable_errors: d_s.http_5xx,
            canary_requests: d_c.requests,
            canary_errors: d_c.http_5xx,
        });
        self.last = s.clone();
        Ok(s)
    }

    /// Ticks for `d`, once a second.
    pub async fn hold(&mut self, fleet: &impl RoutedFleet, d: Duration) -> Result<Snapshot> {
        let end = Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            let s = self.tick(fleet).await?;
            if Instant::now() >= end {
                return Ok(s);
            }
        }
    }
}

/// One version between two snapshots; `canary` picks the side.
pub fn side(end: &Snapshot, start: &Snapshot, canary: bool) -> Side {
    let (r, app) = if canary {
        (end.router.1.since(start.router.1), end.app_canary.since(&start.app_canary))
    } else {
        (end.router.0.since(start.router.0), end.app_stable.since(&start.app_stable))
    };
    Side {
        requests: r.requests,
        errors: r.http_5xx,
        error_rate: wilson(r.http_5xx, r.requests),
        p95_ms: app.p95_ms(),
        app_requests: app.requests,
        app_errors: app.errors_5xx,
    }
}

fn observed(s: &Side) -> Observed {
    Observed { errors: s.errors, requests: s.requests, p95_ms: s.p95_ms }
}

/// The longest a step below 100% holds for its sample before the gates judge what it
/// has (the minimum-requests gate then fails): twice the expected hold, plus 15 s.
pub fn step_limit_s(expected_s: f64) -> f64 {
    expected_s * 2.0 + 15.0
}

/// Runs every step; stops at the first rollback.
pub async fn run(
    fleet: &impl RoutedFleet,
    cfg: &Settings,
    n: u64,
    ticker: &mut Ticker,
) -> Result<(Vec<Step>, Option<Rollback>)> {
    let mut steps = Vec::new();
    let mut baseline_start: Option<Snapshot> = None;
    for &w in &cfg.steps_pct {
        fleet.set_canary_permille((w * 10.0).round() as u32).await?;
        ticker.weight_pct = w;
        tracing::info!(step = "weight", weight_pct = w, "canary weight set");
        eprintln!("[canary] weight {w}%");
        let start = ticker.tick(fleet).await?;
        let baseline_from = baseline_start.get_or_insert_with(|| start.clone()).clone();
        let (start_s, t) = (ticker.now_s(), Instant::now());
        let end = if w >= 100.0 {
            ticker.hold(fleet, Duration::from_secs_f64(cfg.final_hold_s)).await?
        } else {
            let expected = hold_seconds(n, cfg.qps as f64, w / 100.0);
            let limit = Duration::from_secs_f64(step_limit_s(expected));
            loop {
                let s = ticker.hold(fleet, Duration::from_secs(1)).await?;
                if s.router.1.since(start.router.1).requests >= n || t.elapsed() > limit {
                    break s;
                }
            }
        };
        let canary = side(&end, &start, true);
        // At 100% there is no stable traffic left: the baseline is stable's traffic
        // over every earlier step.
        let stable = if w >= 100.0 { side(&end, &baseline_from, false) } else { side(&end, &start, false) };
        let (z, mut gates) = gates::evaluate(&cfg.gates, observed(&stable), observed(&canary));
        let by_client = cfg.clients.as_ref().map(|c| {
            let stable_from = if w >= 100.0 { &baseline_from } else { &start };
            let b = clients::by_client(
                &end.app_stable.since(&stable_from.app_stable).clients,
                &end.app_canary.since(&start.app_canary).clients,
            );
            if c.judge == Judge::Client {
                gates[0] = gates::by_client(&cfg.gates, &b);
            }
            b
        });
        let pass = gates.iter().all(|g| g.pass);
        let decision = match (pass, w >= 100.0) {
            (false, _) => Decision::Rollback,
            (true, true) => Decision::Promoted,
            (true, false) => Decision::Promote,
        };
        eprintln!(
            "[canary] {w}%: canary {}/{} failed, stable {}/{} failed, z {:.2}, p {} -> {}",
            canary.errors,
            canary.requests,
            stable.errors,
            stable.requests,
            z.z,
            gates::fmt_p(z.p),
            decision.as_str()
        );
        steps.push(Step {
            weight_pct: w,
            start_s,
            held_s: t.elapsed().as_secs_f64(),
            required: if w >= 100.0 { cfg.gates.min_requests } else { n },
            stable,
            canary,
            z,
            by_client,
            gates,
            decision,
        });
        if decision == Decision::Rollback {
            let rb = roll_back(fleet, ticker).await?;
            return Ok((steps, Some(rb)));
        }
    }
    Ok((steps, None))
}

/// Weight 0 at once; measures until the routing tier confirms it and until the
/// canary pods have answered their last request.
pub async fn roll_back(fleet: &impl RoutedFleet, ticker: &mut Ticker) -> Result<Rollback> {
    let (breach, breach_s) = (Instant::now(), ticker.now_s());
    fleet.set_canary_permille(0).await?;
    let to_zero_ms = breach.elapsed().as_secs_f64() * 1000.0;
    ticker.weight_pct = 0.0;
    tracing::info!(step = "rollback", to_zero_ms, "canary rolled back to 0%");
    let mut last = fleet.snapshot().await?.app_canary.requests;
    let mut changed = Duration::ZERO;
    while breach.elapsed() < changed + Duration::from_millis(300) && breach.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = fleet.snapshot().await?.app_canary.requests;
        if now != last {
            (last, changed) = (now, breach.elapsed());
        }
    }
    eprintln!("[canary] rolled back: weight 0 confirmed {to_zero_ms:.1} ms after the breach");
    Ok(Rollback { breach_s, to_zero_ms, canary_quiet_ms: changed.as_secs_f64() * 1000.0 })
}
