//! The data-plane gate: the load starts when the Service's address answers from every
//! endpoint it should, not when the control plane lists them ready.
//!
//! An EndpointSlice saying "3 ready" is the control plane's view; a client reaches a
//! pod only once its own node's kube-proxy has rules for it. Load started in between
//! meets refused connections and timeouts, and a keep-alive pool opened then stays
//! on whichever pods were programmed. So the gate probes `GET /healthz` through the
//! Service address, each probe on a new TCP connection (the Service's DNAT picks an
//! endpoint per connection), and reads the answering pod from its `x-zd-pod` header
//! until every awaited pod has answered once. `/healthz` is a probe path to the api
//! (`lifecycle::accepts::is_probe`), so these connections are not counted as traffic.
//!
//! [`GateState`] is the pure bookkeeping; [`await_pods`] is the network loop around it.

use crate::Resolver;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Every line the CLI prints before the load begins starts with this, so a reader of
/// the log (the kind runner) can tell the gate's lines from the load's.
pub const LINE_PREFIX: &str = "gate: ";
/// The line the CLI prints when the gate is behind it and the load's own clock starts:
/// a log reader takes it (or the first per-second progress line) as "requests flow".
pub const LOAD_BEGINS: &str = "load begins: ";
/// What each probe asks for.
pub const PROBE_PATH: &str = "/healthz";
/// The response header naming the pod (services/api `conn_cost.rs`).
pub const POD_HEADER: &str = "x-zd-pod";
/// Between two probes: often enough to notice a newly programmed endpoint within a
/// few tens of ms, rare enough not to be load of its own.
pub const DEFAULT_PAUSE: Duration = Duration::from_millis(25);

/// How long and how hard the gate tries.
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub deadline: Duration,
    pub max_probes: u32,
    pub pause: Duration,
    pub connect_timeout: Duration,
    /// One probe, connect included.
    pub probe_timeout: Duration,
}

/// Which limit ended an unsuccessful wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Deadline(Duration),
    MaxProbes(u32),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Deadline(d) => write!(f, "the {d:?} deadline passed"),
            Limit::MaxProbes(n) => write!(f, "the limit of {n} probes was reached"),
        }
    }
}

/// The gate gave up: the pods never seen, and what the probes saw instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data plane never reached {} of {expected} awaited pods ({}) through the Service: {limit} after {probes} probes \
     ({failed} failed) in {} ms{}",
    missing.len(),
    missing.join(", "),
    elapsed.as_millis(),
    notes(unexpected, last_failure)
)]
pub struct GateError {
    pub missing: Vec<String>,
    pub expected: usize,
    pub probes: u32,
    pub failed: u32,
    pub elapsed: Duration,
    pub limit: Limit,
    /// Pods that answered without being awaited.
    pub unexpected: Vec<String>,
    pub last_failure: Option<String>,
}

fn notes(unexpected: &[String], last_failure: &Option<String>) -> String {
    let mut s = String::new();
    if !unexpected.is_empty() {
        s.push_str(&format!("; answered but not awaited: {}", unexpected.join(", ")));
    }
    if let Some(f) = last_failure {
        s.push_str(&format!("; last failed probe: {f}"));
    }
    s
}

/// What one answer meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// An awaited pod answered for the first time.
    New,
    /// An awaited pod answered again.
    Again,
    /// A pod that is not awaited answered (e.g. the endpoints changed since the list
    /// was taken); noted, never required.
    Unexpected,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Done,
    Probe,
    GiveUp(Limit),
}

/// The gate's bookkeeping, free of I/O.
#[derive(Debug, Clone, Default)]
pub struct GateState {
    expected: BTreeSet<String>,
    seen: BTreeSet<String>,
    unexpected: BTreeSet<String>,
    probes: u32,
    failed: u32,
    last_failure: Option<String>,
}

impl GateState {
    /// Awaits these pods; blanks and repeats are dropped.
    pub fn new<S: AsRef<str>>(expected: impl IntoIterator<Item = S>) -> GateState {
        let expected = expected.into_iter().map(|p| p.as_ref().trim().to_string()).filter(|p| !p.is_empty()).collect();
        GateState { expected, ..GateState::default() }
    }

    /// A probe was answered by `pod`.
    pub fn observe(&mut self, pod: &str) -> Seen {
        self.probes += 1;
        if !self.expected.contains(pod) {
            self.unexpected.insert(pod.to_string());
            Seen::Unexpected
        } else if self.seen.insert(pod.to_string()) {
            Seen::New
        } else {
            Seen::Again
        }
    }

    /// A probe got no answer naming a pod.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.probes += 1;
        self.failed += 1;
        self.last_failure = Some(why.into());
    }

    pub fn done(&self) -> bool {
        self.seen.len() == self.expected.len()
    }

    /// Awaited pods not seen yet, in name order.
    pub fn missing(&self) -> Vec<String> {
        self.expected.difference(&self.seen).cloned().collect()
    }

    pub fn seen(&self) -> usize {
        self.seen.len()
    }

    pub fn expected(&self) -> usize {
        self.expected.len()
    }

    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// Success wins over a limit reached by the same probe.
    pub fn verdict(&self, elapsed: Duration, cfg: &GateConfig) -> Verdict {
        if self.done() {
            Verdict::Done
        } else if self.probes >= cfg.max_probes {
            Verdict::GiveUp(Limit::MaxProbes(cfg.max_probes))
        } else if elapsed >= cfg.deadline {
            Verdict::GiveUp(Limit::Deadline(cfg.deadline))
        } else {
            Verdict::Probe
        }
    }

    pub fn error(&self, limit: Limit, elapsed: Duration) -> GateError {
        GateError {
            missing: self.missing(),
            expected: self.expected.len(),
            probes: self.probes,
            failed: self.failed,
            elapsed,
            limit,
            unexpected: self.unexpected.iter().cloned().collect(),
            last_failure: self.last_failure.clone(),
        }
    }
}

/// A successful wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub pods: usize,
    pub probes: u32,
    pub elapsed: Duration,
}

/// Probes through `resolver` until every pod of `expected` has answered, calling
/// `on_new(pod, state, elapsed)` once per newly seen pod. Nothing awaited passes at once.
pub async fn await_pods<S: AsRef<str>>(
    resolver: &dyn Resolver,
    expected: impl IntoIterator<Item = S>,
    cfg: &GateConfig,
    mut on_new: impl FnMut(&str, &GateState, Duration),
) -> Result<Passed, GateError> {
    let start = Instant::now();
    let mut state = GateState::new(expected);
    loop {
        let elapsed = start.elapsed();
        match state.verdict(elapsed, cfg) {
            Verdict::Done => return Ok(Passed { pods: state.seen(), probes: state.probes(), elapsed }),
            Verdict::GiveUp(limit) => return Err(state.error(limit, elapsed)),
            Verdict::Probe => {}
        }
        let left = cfg.deadline.saturating_sub(elapsed);
        match probe(resolver, cfg.connect_timeout.min(left), cfg.probe_timeout.min(left)).await {
            Ok(pod) => {
                if state.observe(&pod) == Seen::New {
                    on_new(&pod, &state, start.elapsed());
                }
            }
            Err(e) => state.fail(e.to_string()),
        }
        if !state.done() {
            tokio::time::sleep(cfg.pause.min(cfg.deadline.saturating_sub(start.elapsed()))).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("the Service has no endpoint to connect to")]
    NoEndpoint,
    #[error("connect {0}: no answer within {1:?}")]
    ConnectTimeout(SocketAddr, Duration),
    #[error("connect {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0}: {1}")]
    Http(SocketAddr, hyper::Error),
    #[error("{0}: no response within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0} answered {1} without an {POD_HEADER} header")]
    NoPod(SocketAddr, hyper::StatusCode),
    #[error("building the probe request: {0}")]
    Build(hyper::http::Error),
}

/// One `GET /healthz` on a new connection; the pod that answered. Any status counts:
/// an answer at all proves the path through the data plane.
async fn probe(resolver: &dyn Resolver, connect_timeout: Duration, limit: Duration) -> Result<String, ProbeError> {
    let addr = resolver.pick().ok_or(ProbeError::NoEndpoint)?;
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ProbeError::ConnectTimeout(addr, connect_timeout)),
        Ok(r) => r.map_err(|e| ProbeError::Connect(addr, e))?,
    };
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| ProbeError::Http(addr, e))?;
        // Aborted on every way out, so a stuck probe leaves no task behind.
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let req = Request::get(PROBE_PATH)
            .header(HOST, addr.to_string())
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(ProbeError::Build)?;
        let res = sender.send_request(req).await.map_err(|e| ProbeError::Http(addr, e))?;
        drop(driver);
        let pod = res.headers().get(POD_HEADER).and_then(|v| v.to_str().ok()).map(str::trim);
        match pod {
            Some(p) if !p.is_empty() => Ok(p.to_string()),
            _ => Err(ProbeError::NoPod(addr, res.status())),
        }
    };
    tokio::time::timeout(limit, exchange).await.map_err(|_| ProbeError::Timeout(addr, limit))?
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_probes: u32, deadline_ms: u64) -> GateConfig {
        GateConfig {
            deadline: Duration::from_millis(deadline_ms),
            max_probes,
            pause: Duration::ZERO,
            connect_timeout: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(100),
        }
    }

    #[test]
    fn done_once_every_awaited_pod_answered_at_least_once() {
        let mut s = GateState::new(["api-a", "api-b", "api-c"]);
        assert!(!s.done());
        assert_eq!(s.observe("api-a"), Seen::New);
        assert_eq!(s.observe("api-a"), Seen::Again);
        assert_eq!(s.observe("api-c"), Seen::New);
        assert_eq!(s.missing(), vec!["api-b"]);
        assert!(!s.done());
        assert_eq!(s.observe("api-b"), Seen::New);
        assert!(s.done() && s.missing().is_empty());
        assert_eq!((s.seen(), s.expected(), s.probes()), (3, 3, 4));
    }

    #[test]
    fn an_unawaited_pod_is_noted_but_never_needed() {
        let mut s = GateState::new(["api-a"]);
        assert_eq!(s.observe("api-old"), Seen::Unexpected);
        assert!(!s.done());
        assert_eq!(s.observe("api-a"), Seen::New);
        assert!(s.done());
        assert_eq!(s.error(Limit::MaxProbes(2), Duration::ZERO).unexpected, vec!["api-old"]);
    }

    #[test]
    fn blanks_and_repeats_in_the_list_are_dropped() {
        let s = GateState::new(["a", " a ", "", "b"]);
        assert_eq!(s.expected(), 2);
        assert!(GateState::new(Vec::<String>::new()).done(), "nothing awaited passes at once");
    }

    #[test]
    fn limits_end_the_wait_but_success_wins() {
        let c = cfg(3, 1000);
        let mut s = GateState::new(["a", "b"]);
        assert_eq!(s.verdict(Duration::ZERO, &c), Verdict::Probe);
        s.fail("refused");
        s.observe("a");
        assert_eq!(s.verdict(Duration::from_millis(1000), &c), Verdict::GiveUp(Limit::Deadline(c.deadline)));
        s.observe("b");
        assert_eq!(s.verdict(Duration::from_secs(9), &c), Verdict::Done, "the third probe saw the last pod");
        let mut s = GateState::new(["a", "b"]);
        for _ in 0..3 {
            s.observe("a");
        }
        assert_eq!(s.verdict(Duration::ZERO, &c), Verdict::GiveUp(Limit::MaxProbes(3)));
    }

    #[test]
    fn the_error_names_the_missing_pods_and_the_probes() {
        let mut s = GateState::new(["api-a", "api-b", "api-c"]);
        s.observe("api-b");
        s.fail("connect 10.96.0.12:80: connection refused");
        let e = s.error(Limit::Deadline(Duration::from_secs(60)), Duration::from_millis(60_004));
        assert_eq!(e.missing, vec!["api-a", "api-c"]);
        assert_eq!((e.probes, e.failed), (2, 1));
        assert_eq!(
            e.to_string(),
            "the data plane never reached 2 of 3 awaited pods (api-a, api-c) through the Service: the 60s deadline \
             passed after 2 probes (1 failed) in 60004 ms; last failed probe: connect 10.96.0.12:80: connection refused"
        );
    }
}
