//! What the watchers of one stage share with the platform.

use super::pods::{PodTracker, Terminated};
use crate::{PodLog, RawEvent};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Shared {
    state: Mutex<StageState>,
    /// Woken on every recorded change.
    pub changed: Notify,
    pub ready_endpoints: AtomicU32,
}

#[derive(Default)]
pub struct StageState {
    pub pods: PodTracker,
    pub events: Vec<RawEvent>,
    /// (unix ms, ready api endpoints), one per change.
    pub samples: Vec<(i64, u32)>,
    /// The api pods the EndpointSlices last said are ready and not terminating
    /// ([`super::endpoints::awaited_pods`]): what the load's data-plane gate awaits.
    pub awaited_pods: Vec<String>,
    pub pod_logs: Vec<PodLog>,
    /// The api pods' accept-queue sidecar logs (`<pod>.queues.log`), by pod.
    pub queue_logs: std::collections::BTreeMap<String, PathBuf>,
    pub log_tasks: Vec<JoinHandle<()>>,
    /// Pods (and `<pod>/<sidecar>`s) whose log stream was opened (once each: when the
    /// container has started).
    pub streaming: std::collections::BTreeSet<String>,
    pub load: LoadState,
    /// The stage's preStop, for the terminating events' detail.
    pub pre_stop_ms: u64,
    /// Watches that completed their first list.
    pub synced: u32,
    /// Nodes the stage's api pods were scheduled on.
    pub api_nodes: std::collections::BTreeSet<String>,
}

/// The load generator's pod, once its Job exists.
#[derive(Default)]
pub struct LoadState {
    pub job: Option<String>,
    pub pod: Option<String>,
    /// The node the load pod was scheduled on.
    pub node: Option<String>,
    pub log_path: Option<PathBuf>,
    /// The generator wrote its first line: requests are flowing.
    pub started: bool,
    pub exit: Option<Terminated>,
    /// Why the pod is not running yet (image pull, scheduling ...), for errors.
    pub waiting: Option<String>,
    pub log_task: Option<JoinHandle<()>>,
    /// The log stream was opened (the task may since have been taken).
    pub streaming: bool,
    /// The run's live counters, fed from the generator's per-second progress lines.
    pub live: Option<std::sync::Arc<zerodrop_load::Live>>,
}

impl Shared {
    pub fn with<R>(&self, f: impl FnOnce(&mut StageState) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Waits until `done` holds (checked after every change, and every 500 ms as a
    /// safety net against a change that landed between check and wait).
    pub async fn wait_for(&self, mut done: impl FnMut(&mut StageState) -> bool) {
        loop {
            let notified = self.changed.notified();
            if self.with(&mut done) {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    }
}
