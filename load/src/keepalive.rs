//! The keep-alive client profile: thousands of clients, each holding one HTTP/1.1
//! connection and sending at a low rate, that reconnect the moment their connection
//! closes (as gRPC channels, SSE and WebSocket clients do). A pod that closes all its
//! connections at once sends every one of its clients back through the Service at the
//! same instant: the thundering reconnect.
//!
//! Each client's requests are scheduled (a fixed period from a per-client phase) and
//! timed from their intended start, so a stalled reconnect shows in the latency. The
//! request sent right after a reconnect (the client's resubscribe) is counted too.

mod client;

use crate::{Class, Live};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The keep-alive load: `clients` connections, one request each every `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepAliveProfile {
    pub clients: u32,
    #[serde(with = "ms", rename = "period_ms")]
    pub period: Duration,
    /// The clients' first connects are spread evenly over this.
    #[serde(with = "ms", rename = "ramp_ms")]
    pub ramp: Duration,
    #[serde(with = "ms", rename = "duration_ms")]
    pub duration: Duration,
    /// `GET /work?ms=` of every request.
    pub work_ms: u32,
    #[serde(with = "ms", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    #[serde(with = "ms", rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
    /// After a failed connect, the first retry waits this long, doubling up to 1 s.
    #[serde(with = "ms", rename = "retry_backoff_ms")]
    pub retry_backoff: Duration,
}

impl KeepAliveProfile {
    /// Intended requests per second over all clients.
    pub fn rate_per_sec(&self) -> f64 {
        f64::from(self.clients) / self.period.as_secs_f64().max(1e-3)
    }

    /// The `zerodrop-load keepalive` flags that run this profile (what a runner puts
    /// in a cluster Job), without the target's and the result's.
    pub fn cli_args(&self) -> Vec<String> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        [
            ("--clients", self.clients.to_string()),
            ("--period", ms(self.period)),
            ("--ramp", ms(self.ramp)),
            ("--duration", ms(self.duration)),
            ("--work-ms", self.work_ms.to_string()),
            ("--timeout", ms(self.request_timeout)),
            ("--connect-timeout", ms(self.connect_timeout)),
            ("--retry-backoff", ms(self.retry_backoff)),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }
}

/// Why a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The client's schedule.
    Scheduled,
    /// Right after a (re)connect: the resubscribe.
    Reconnect,
}

/// One request of a keep-alive client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KaRequest {
    pub client: u32,
    /// Intended start, µs since the run started.
    pub at_us: u64,
    pub latency_us: u64,
    pub class: Class,
    pub trigger: Trigger,
    /// The pod that answered (`x-zd-pod`), when an answer came.
    pub pod: Option<String>,
}

/// One connect attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KaConnect {
    pub client: u32,
    pub at_us: u64,
    /// Until the connection was usable, or the failure.
    pub took_us: u64,
    /// `Ok`, or the failure class (`refused`, `timeout`, `reset`, ...).
    pub class: Class,
    /// Not the client's first connect: its previous connection had closed.
    pub reconnect: bool,
}

/// Everything a keep-alive run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeepAliveResult {
    pub started_unix_ms: u64,
    pub profile: KeepAliveProfile,
    pub requests: Vec<KaRequest>,
    pub connects: Vec<KaConnect>,
    /// When an open connection was seen closing (µs since start).
    pub closes_us: Vec<u64>,
    /// Most connections open at once.
    pub peak_open: u64,
}

/// Runs `profile` against `addr` (a Service address: which pod a connection reaches
/// is the Service's decision). Ends after `profile.duration` plus the request timeout.
pub async fn run(profile: &KeepAliveProfile, addr: SocketAddr, live: Arc<Live>) -> KeepAliveResult {
    client::run_all(profile, addr, live).await
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
