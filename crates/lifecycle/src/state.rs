use crate::conn_stats::ConnStats;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use zerodrop_stages::AppBehaviour;

/// Where the process is in its life. Exposed on `/metrics` as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Serving = 1,
    Deregistering = 2,
    Draining = 3,
    Disposing = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Serving,
            2 => Phase::Deregistering,
            3 => Phase::Draining,
            _ => Phase::Disposing,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Deregistering => "deregistering",
            Phase::Draining => "draining",
            Phase::Disposing => "disposing",
        }
    }
}

/// Cheap to clone; every clone is the same process state.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    behaviour: AppBehaviour,
    phase: AtomicU8,
    shutdown: CancellationToken,
    sigterm_at: OnceLock<Instant>,
    born: Instant,
    conns: Arc<ConnStats>,
    /// False while a dependency the instance cannot serve without (the broker) is
    /// being reconnected.
    dependencies_up: AtomicBool,
}

impl Lifecycle {
    pub fn new(behaviour: AppBehaviour) -> Self {
        Lifecycle {
            inner: Arc::new(Inner {
                behaviour,
                phase: AtomicU8::new(Phase::Starting as u8),
                shutdown: CancellationToken::new(),
                sigterm_at: OnceLock::new(),
                born: Instant::now(),
                conns: Arc::new(ConnStats::default()),
                dependencies_up: AtomicBool::new(true),
            }),
        }
    }

    pub fn behaviour(&self) -> &AppBehaviour {
        &self.inner.behaviour
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.inner.phase.load(Ordering::SeqCst))
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        self.inner.phase.store(p as u8, Ordering::SeqCst);
    }

    /// Startup is over: readiness may now succeed.
    pub fn mark_ready(&self) {
        self.set_phase(Phase::Serving);
        tracing::info!(step = "ready", "instance ready");
    }

    /// What `/readyz` answers. Without a readiness gate the app keeps claiming to be
    /// ready while it shuts down, which is exactly the naive behaviour.
    pub fn is_ready(&self) -> bool {
        let up = self.inner.dependencies_up.load(Ordering::SeqCst);
        match self.phase() {
            Phase::Starting => false,
            Phase::Serving => up,
            _ => up && !self.inner.behaviour.readiness_gate,
        }
    }

    /// Reported by whoever owns a connection the instance cannot serve without: while
    /// it is down, readiness fails, so the platform routes around this instance
    /// instead of restarting it. Logged on every change.
    pub fn set_dependencies_up(&self, up: bool, reason: &str) {
        if self.inner.dependencies_up.swap(up, Ordering::SeqCst) != up {
            if up {
                tracing::info!(step = "dependency_up", reason, "dependency back; readiness follows the phase again");
            } else {
                tracing::warn!(step = "dependency_down", reason, "dependency lost; readiness fails until it is back");
            }
        }
    }

    /// Cancelled when SIGTERM starts the graceful sequence: long-running loops that
    /// must react (a consumer, a warm-up) watch this one token.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Milliseconds since SIGTERM, if it arrived.
    pub fn since_sigterm_ms(&self) -> Option<u64> {
        self.inner.sigterm_at.get().map(|t| t.elapsed().as_millis() as u64)
    }

    /// When termination began: SIGTERM minus the preStop the platform ran first
    /// (`ZD_PRESTOP_MS`). `None` before SIGTERM; an unreadable `ZD_PRESTOP_MS` is
    /// logged and counts as no preStop.
    pub(crate) fn termination_start(&self) -> Option<Instant> {
        let sigterm = *self.inner.sigterm_at.get()?;
        let pre_stop = zerodrop_stages::pre_stop_from_lookup(|k| std::env::var(k).ok()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring {}; measuring from SIGTERM", zerodrop_stages::PRESTOP_ENV);
            std::time::Duration::ZERO
        });
        Some(crate::accepts::termination_start(sigterm, pre_stop, self.inner.born))
    }

    /// What is left of the guardian's deadline for the final telemetry flush, less a
    /// margin for the exit itself; never more than 2 s.
    pub(crate) fn flush_budget(&self) -> std::time::Duration {
        use std::time::Duration;
        let since = Duration::from_millis(self.since_sigterm_ms().unwrap_or(0));
        let left = self.inner.behaviour.guardian_deadline().saturating_sub(since);
        left.saturating_sub(Duration::from_millis(250)).min(Duration::from_secs(2))
    }

    pub(crate) fn record_sigterm(&self) {
        let _ = self.inner.sigterm_at.set(Instant::now());
    }

    /// Open connections and in-flight requests of this process's HTTP server.
    pub fn conn_stats(&self) -> &Arc<ConnStats> {
        &self.inner.conns
    }
}
