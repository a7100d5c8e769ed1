//! The long-lived run's clients as one fleet: SSE streams that resume with
//! Last-Event-ID and long-operation clients that honour 503 + Retry-After, all aimed at
//! one Service address. The runner starts them, later tells them to start nothing new
//! (once every old pod is gone), and finishes: the operations in flight get a bounded
//! wait to end on the new pods, whatever is still running then is abandoned and counted
//! as such. The same code runs inside the runner (local) and in a Job (`zerodrop-load
//! long-lived`, on a cluster), so both platforms count alike.

pub mod clients;

pub use clients::{OpTally, StreamTally};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The in-cluster run's control listener, on its pod's loopback (reached through a
/// port-forward, never through a Service).
pub const CONTROL_PORT: u16 = 7070;
/// `POST` here: start no new stream or operation.
pub const NO_NEW_PATH: &str = "/no-new";
/// `POST` here: abandon what is in flight and end the run now.
pub const STOP_PATH: &str = "/stop";

/// How many clients of each kind, and the operation lengths each op client cycles
/// through (client `i` starts at length `i mod n`, so both lengths run at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub streams: u32,
    pub op_clients: u32,
    pub op_lengths: Vec<Duration>,
}

impl Spec {
    /// The longest operation asked for (zero without any).
    pub fn longest_op(&self) -> Duration {
        self.op_lengths.iter().max().copied().unwrap_or_default()
    }
}

/// What the clients saw, handed back whole at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tallies {
    pub streams: StreamTally,
    pub ops: OpTally,
}

/// The two moments the runner decides: no new work (`no_new`; streams end then too),
/// and the end of the run (`stop`: operations still in flight are abandoned).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub no_new: CancellationToken,
    pub stop: CancellationToken,
}

impl Signals {
    /// Stop implies no new work: a client between two operations must not start one.
    pub fn stop(&self) {
        self.no_new.cancel();
        self.stop.cancel();
    }
}

/// The clients under way.
pub struct Running {
    signals: Signals,
    streams: Arc<Mutex<StreamTally>>,
    ops: Arc<Mutex<OpTally>>,
    stream_tasks: Vec<JoinHandle<()>>,
    op_tasks: Vec<JoinHandle<()>>,
}

/// Starts every client against `target`; they run until told otherwise.
pub fn start(target: SocketAddr, spec: &Spec) -> Running {
    let signals = Signals::default();
    let (streams, ops) = (Arc::new(Mutex::new(StreamTally::default())), Arc::new(Mutex::new(OpTally::default())));
    let stream_tasks = (0..spec.streams)
        .map(|_| tokio::spawn(clients::stream_client(target, streams.clone(), signals.no_new.clone())))
        .collect();
    let lengths = &spec.op_lengths;
    let op_tasks = (0..spec.op_clients as usize)
        .map(|i| {
            let mine: Vec<_> = (0..lengths.len()).map(|k| lengths[(i + k) % lengths.len()]).collect();
            let s = &signals;
            tokio::spawn(clients::op_client(target, mine, ops.clone(), s.no_new.clone(), s.stop.clone()))
        })
        .collect();
    Running { signals, streams, ops, stream_tasks, op_tasks }
}

impl Running {
    /// The tokens the clients obey (for a control listener acting on them).
    pub fn signals(&self) -> Signals {
        self.signals.clone()
    }

    /// Start nothing new; streams end, operations in flight go on.
    pub fn no_new(&self) {
        self.signals.no_new.cancel();
    }

    /// Starts nothing new, waits up to `limit` (or until [`Signals::stop`]) for the
    /// operations in flight, abandons the rest, and returns the counts.
    pub async fn finish(self, limit: Duration) -> Tallies {
        let Running { signals, streams, ops, stream_tasks, op_tasks } = self;
        signals.no_new.cancel();
        let all_ops = join_all(op_tasks);
        let waited = tokio::select! {
            r = tokio::time::timeout(limit, all_ops) => r.is_ok(),
            _ = signals.stop.cancelled() => false,
        };
        signals.stop();
        if !waited {
            eprintln!("warning: operations still in flight after {} s or a stop; abandoned", limit.as_secs());
            // The detached clients count themselves as abandoned on `stop`.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for t in stream_tasks {
            let _ = t.await;
        }
        let s = streams.lock().map(|t| t.clone()).unwrap_or_default();
        let o = ops.lock().map(|t| t.clone()).unwrap_or_default();
        Tallies { streams: s, ops: o }
    }
}

/// Every task ended (a panicked client counts as ended: its tally stands as it was).
async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_survive_the_wire() {
        let mut t = Tallies::default();
        t.streams.events = 7;
        t.streams.resumed_on_another_pod = 2;
        t.ops.retry_after_s = vec![3, 41];
        t.ops.abandoned_at_end = 1;
        let back: Tallies = crate::wire::decode(&crate::wire::encode(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    /// Nothing listening: clients retry their connects; `finish` ends them all, and a
    /// stop cuts its wait short.
    #[tokio::test]
    async fn finish_ends_every_client_and_stop_cuts_the_wait() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let spec = Spec { streams: 2, op_clients: 2, op_lengths: vec![Duration::from_millis(5)] };
        let run = start(addr, &spec);
        let signals = run.signals();
        tokio::time::sleep(Duration::from_millis(50)).await;
        signals.stop();
        let t = tokio::time::timeout(Duration::from_secs(10), run.finish(Duration::from_secs(3600))).await.unwrap();
        assert!(t.streams.open_failures > 0, "{t:?}");
        assert_eq!((t.streams.events, t.ops.completed, t.ops.cut), (0, 0, 0), "{t:?}");
    }
}
