//! A circuit breaker in front of the broker publish (`POST /jobs`). While the broker
//! path is slow or failing, an open breaker answers 503 + Retry-After at once instead
//! of letting every job hold a request slot until its confirm times out, which would
//! starve `/work` of slots too.
//!
//! The state machine is `failsafe`'s (closed → open after N consecutive failures,
//! open for a constant time, then half-open; the first success closes it, a failure
//! reopens it). Two things are ours, because failsafe leaves them to the caller:
//! - a call slower than `slow` counts as a failure *when the limit passes*, not when
//!   the call finally ends, so a hung dependency opens the breaker in about `slow`;
//!   the call itself is never cancelled (a publish cut short could still land);
//! - half-open lets one probe through at a time (failsafe lets every call through).
//!
//! Every transition is logged (`step = "breaker"`) and counted in /metrics.

use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Config, StateMachine};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// Consecutive failures (errors or slow calls) that open it.
    pub failures: u32,
    /// How long it stays open before letting a probe through.
    pub open_for: Duration,
    /// A call slower than this is a failure.
    pub slow: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: false,
            failures: 5,
            open_for: Duration::from_secs(2),
            slow: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct To {
    to: String,
}

/// The breaker's series in /metrics.
#[derive(Clone, Default)]
pub struct BreakerMetrics {
    state: Gauge,
    transitions: Family<To, Counter>,
    rejected: Counter,
}

impl BreakerMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("zerodrop_breaker_state", "Publish breaker: 0 closed, 1 open, 2 half-open", self.state.clone());
        r.register(
            "zerodrop_breaker_transitions",
            "Publish breaker state changes, by new state",
            self.transitions.clone(),
        );
        r.register("zerodrop_breaker_rejected", "Jobs refused at once by the open breaker", self.rejected.clone());
    }
}

/// failsafe's hook: records, logs and counts each transition.
#[derive(Clone)]
struct Observer(Arc<Shared>);

struct Shared {
    state: AtomicU8,
    opened_at: Mutex<Option<Instant>>,
    metrics: BreakerMetrics,
    /// failsafe reports `closed` once at construction: the start, not a transition.
    started: AtomicBool,
}

impl Observer {
    fn enter(&self, s: State) {
        self.0.state.store(s as u8, Ordering::SeqCst);
        self.0.metrics.state.set(s as i64);
        if s == State::Open {
            *self.0.opened_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        if !self.0.started.swap(true, Ordering::SeqCst) {
            return;
        }
        self.0.metrics.transitions.get_or_create(&To { to: s.as_str().into() }).inc();
        tracing::warn!(
            step = "breaker",
            dependency = "broker_publish",
            to = s.as_str(),
            "publish breaker {}",
            s.as_str()
        );
    }
}

impl failsafe::Instrument for Observer {
    fn on_call_rejected(&self) {
        self.0.metrics.rejected.inc();
    }
    fn on_open(&self) {
        self.enter(State::Open);
    }
    fn on_half_open(&self) {
        self.enter(State::HalfOpen);
    }
    fn on_closed(&self) {
        self.enter(State::Closed);
    }
}

type Machine = StateMachine<ConsecutiveFailures<Constant>, Observer>;

/// The call was not made: the breaker is open (or half-open with its probe out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// Whole seconds until a probe may go through, at least 1.
    pub retry_after_s: u32,
}

pub struct Breaker {
    cfg: BreakerConfig,
    machine: Option<Machine>,
    observer: Observer,
    probing: AtomicBool,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, metrics: BreakerMetrics) -> Breaker {
        let observer = Observer(Arc::new(Shared {
            state: AtomicU8::new(State::Closed as u8),
            opened_at: Mutex::new(None),
            metrics,
            started: AtomicBool::new(false),
        }));
        let machine = cfg.enabled.then(|| {
            let policy = failure_policy::consecutive_failures(cfg.failures.max(1), backoff::constant(cfg.open_for));
            Config::new().failure_policy(policy).instrument(observer.clone()).build()
        });
        Breaker { cfg, machine, observer, probing: AtomicBool::new(false) }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.observer.0.state.load(Ordering::SeqCst))
    }

    fn open(&self) -> Open {
        let since = self.observer.0.opened_at.lock().unwrap_or_else(PoisonError::into_inner).map(|t| t.elapsed());
        let left = self.cfg.open_for.saturating_sub(since.unwrap_or_default());
        Open { retry_after_s: (left.as_millis().div_ceil(1000) as u32).max(1) }
    }

    /// Runs `call` unless the breaker refuses it; records its outcome (an error, or
    /// taking longer than `slow`, is a failure).
    pub async fn call<T, E, F>(&self, call: F) -> Result<Result<T, E>, Open>
    where
        F: Future<Output = Result<T, E>>,
    {
        let Some(machine) = &self.machine else { return Ok(call.await) };
        if !machine.is_call_permitted() {
            return Err(self.open());
        }
        let probe = self.state() == State::HalfOpen;
        if probe && self.probing.swap(true, Ordering::SeqCst) {
            self.observer.0.metrics.rejected.inc();
            return Err(Open { retry_after_s: 1 });
        }
        let out = self.timed(machine, call).await;
        if probe {
            self.probing.store(false, Ordering::SeqCst);
        }
        Ok(out)
    }

    async fn timed<T, E, F>(&self, machine: &Machine, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        tokio::pin!(call);
        tokio::select! {
            out = &mut call => {
                match &out {
                    Ok(_) => machine.on_success(),
                    Err(_) => machine.on_error(),
                }
                out
            }
            _ = tokio::time::sleep(self.cfg.slow) => {
                machine.on_error();
                call.await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, open_ms: u64, slow_ms: u64) -> Breaker {
        let cfg = BreakerConfig {
            enabled: true,
            failures,
            open_for: Duration::from_millis(open_ms),
            slow: Duration::from_millis(slow_ms),
        };
        Breaker::new(cfg, BreakerMetrics::default())
    }

    // Real time throughout: failsafe's clock is std's `Instant`, which a paused tokio
    // clock does not move. The waits are short and only ever compared with each other.

    #[tokio::test]
    async fn consecutive_failures_open_it_and_a_probe_closes_it() {
        let b = breaker(3, 200, 10_000);
        for _ in 0..3 {
            assert_eq!(b.call(async { Err::<(), _>("down") }).await, Ok(Err("down")));
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.call(async { Ok::<_, ()>(()) }).await, Err(Open { retry_after_s: 1 }));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(b.call(async { Ok::<_, ()>(7) }).await, Ok(Ok(7)));
        assert_eq!(b.state(), State::Closed);
        let m = b.observer.0.metrics.transitions.clone();
        let count = |s: &str| m.get_or_create(&To { to: s.into() }).get();
        assert_eq!((count("open"), count("half_open"), count("closed")), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_slow_call_counts_as_a_failure_when_the_limit_passes_and_still_finishes() {
        let b = breaker(1, 5000, 100);
        let slow = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, ()>("landed")
        };
        let (out, state_meanwhile) = tokio::join!(b.call(slow), async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            b.state()
        });
        assert_eq!(state_meanwhile, State::Open, "opened at 100 ms, before the call ended");
        assert_eq!(out, Ok(Ok("landed")), "the slow call is not cancelled");
        assert_eq!(b.call(async { Ok::<_, ()>("x") }).await, Err(Open { retry_after_s: 5 }));
    }

    #[tokio::test]
    async fn half_open_lets_one_probe_through_and_a_failed_probe_reopens() {
        let b = breaker(1, 200, 10_000);
        let _ = b.call(async { Err::<(), _>(()) }).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let probe = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err::<(), _>(())
        };
        let (first, second) = tokio::join!(b.call(probe), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            b.call(async { Ok::<(), ()>(()) }).await
        });
        assert_eq!(first, Ok(Err(())));
        assert!(second.is_err(), "a second call while the probe is out is refused");
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test]
    async fn disabled_it_passes_everything() {
        let b = Breaker::new(BreakerConfig::default(), BreakerMetrics::default());
        for _ in 0..20 {
            assert_eq!(b.call(async { Err::<(), _>(()) }).await, Ok(Err(())));
        }
        assert_eq!(b.state(), State::Closed);
    }
}
