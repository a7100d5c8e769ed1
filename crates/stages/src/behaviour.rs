//! The app-level half of a stage: how a process behaves from SIGTERM to exit.

use crate::ms_serde as ms;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the app does when SIGTERM reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigtermResponse {
    /// No handler installed: the kernel's default disposition. As PID 1 of a PID
    /// namespace the kernel then drops SIGTERM; under an init (not PID 1) SIGTERM's
    /// default action kills the process on the spot.
    NoHandler,
    /// A handler that exits at once, as most frameworks do by default.
    ExitNow,
    /// The full sequence: readiness, deregistration wait, drain, teardown.
    Graceful,
}

/// How a draining server lets go of its keep-alive connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepAliveClose {
    /// Every connection is told to close at the same instant.
    AtOnce,
    /// Each connection closes at a random point of the first half of the drain budget.
    Jittered,
}

/// When the worker acknowledges a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    /// `no_ack`: the broker forgets the message as soon as it is sent.
    Auto,
    /// Manual ack, sent only after the database transaction committed.
    AfterCommit,
}

/// Every shutdown and delivery knob of one app. Fields that do not apply to an app
/// (an API has no ack mode) are ignored by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppBehaviour {
    pub on_sigterm: SigtermResponse,
    /// Fail `/readyz` as soon as SIGTERM arrives.
    pub readiness_gate: bool,
    /// After readiness fails, keep accepting and serving for this long.
    #[serde(with = "ms")]
    pub deregistration_wait: Duration,
    /// Drain in-flight work and keep-alive connections before exiting.
    pub drain: bool,
    #[serde(with = "ms")]
    pub drain_budget: Duration,
    /// Arm an OS-thread watchdog that force-exits when the budget is exceeded.
    pub guardian: bool,
    /// Close resources one by one in reverse dependency order (else: process exit).
    pub ordered_teardown: bool,
    pub keepalive_close: KeepAliveClose,
    /// API: answer 202 only after the broker confirmed the publish.
    pub publisher_confirms: bool,
    /// Worker: when to ack.
    pub ack: AckMode,
    /// Worker: basic.qos prefetch; 0 means unlimited.
    pub prefetch: u16,
    /// Worker: dedupe by job id in the same transaction as the side effect.
    pub idempotent: bool,
    /// Fill caches and pools before reporting ready.
    pub warm_before_ready: bool,
    /// HTTP: a connection that has not sent a full request head within this is
    /// closed (slowloris). The same in every stage: not a lever.
    #[serde(with = "ms")]
    pub header_read_timeout: Duration,
    /// HTTP: connections served at once per listener; beyond it, new ones wait in
    /// the kernel's backlog. Sized for 4,096 keep-alive clients per pod.
    pub max_connections: u32,
    /// Worker, manual ack: tries of a job failing for a transient reason (database)
    /// before it is parked in the dead-letter queue with its reason.
    pub max_deliveries: u32,
    /// API: what each new connection costs before its first byte is read (a TLS
    /// handshake, per-connection auth). Zero: free.
    #[serde(with = "ms", default)]
    pub conn_setup: Duration,
    /// API: connections set up at once; while all are busy the instance stops
    /// accepting and new connections wait in the kernel's accept queue.
    #[serde(default = "default_setup_concurrency")]
    pub conn_setup_concurrency: u16,
    /// API: extra work of the first request on a connection (session lookup, cold
    /// per-connection state), paid while holding a capacity slot.
    #[serde(with = "ms", default)]
    pub first_request_cost: Duration,
    /// API: the listen backlog (the accept queue's bound).
    #[serde(default = "default_accept_backlog")]
    pub accept_backlog: u32,
}

/// Concurrent connection set-ups per instance unless a stage says otherwise.
pub const DEFAULT_SETUP_CONCURRENCY: u16 = 4;
/// tokio's own default listen backlog.
pub const DEFAULT_ACCEPT_BACKLOG: u32 = 1024;

fn default_setup_concurrency() -> u16 {
    DEFAULT_SETUP_CONCURRENCY
}

fn default_accept_backlog() -> u32 {
    DEFAULT_ACCEPT_BACKLOG
}

impl AppBehaviour {
    pub const fn naive() -> Self {
        AppBehaviour {
            on_sigterm: SigtermResponse::NoHandler,
            readiness_gate: false,
            deregistration_wait: Duration::ZERO,
            drain: false,
            drain_budget: Duration::ZERO,
            guardian: false,
            ordered_teardown: false,
            keepalive_close: KeepAliveClose::AtOnce,
            publisher_confirms: false,
            ack: AckMode::Auto,
            prefetch: 0,
            idempotent: false,
            warm_before_ready: false,
            header_read_timeout: Duration::from_secs(5),
            max_connections: 8_192,
            max_deliveries: 10,
            conn_setup: Duration::ZERO,
            conn_setup_concurrency: DEFAULT_SETUP_CONCURRENCY,
            first_request_cost: Duration::ZERO,
            accept_backlog: DEFAULT_ACCEPT_BACKLOG,
        }
    }

    /// Time allowed for closing resources once draining is over.
    pub const fn teardown_margin(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// When the guardian fires, counted from SIGTERM.
    pub fn guardian_deadline(&self) -> Duration {
        self.deregistration_wait + self.drain_budget + self.teardown_margin()
    }
}

impl Default for AppBehaviour {
    fn default() -> Self {
        Self::naive()
    }
}
