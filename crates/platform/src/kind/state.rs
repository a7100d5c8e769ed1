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
    /// Load Jobs started on this fleet so far: the next one's sequence number.
    pub load_jobs: u32,
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

impl StageState {
    /// Follows load Job `job` from now on, with a fresh [`LoadState`], so that nothing
    /// of an earlier Job's pod (its start, its exit, its log) is taken for this one's.
    /// Returns the earlier Job, for the caller to delete; refused while that Job's
    /// generator has not exited (one load at a time per fleet).
    pub fn begin_load(
        &mut self,
        job: String,
        live: std::sync::Arc<zerodrop_load::Live>,
    ) -> Result<Option<String>, String> {
        let earlier = self.load.job.take();
        if let Some(e) = &earlier {
            if self.load.exit.is_none() {
                self.load.job = earlier.clone();
                return Err(format!("the load Job {e} is still running; one load at a time per fleet"));
            }
        }
        self.load = LoadState { job: Some(job), live: Some(live), ..LoadState::default() };
        self.load_jobs += 1;
        Ok(earlier)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_second_load_starts_clean_and_names_the_first_for_deletion() {
        let mut s = StageState::default();
        let live = Arc::new(zerodrop_load::Live::new());
        assert_eq!(s.begin_load("load-0-r".into(), live.clone()), Ok(None));
        s.load.pod = Some("load-0-r-abcde".into());
        s.load.started = true;
        assert!(s.begin_load("load-0-r-1".into(), live.clone()).is_err(), "the first has not exited");
        assert_eq!(s.load.job.as_deref(), Some("load-0-r"), "a refused start leaves the running load alone");
        assert_eq!(s.load_jobs, 1);
        s.load.exit = Some(Terminated { exit_code: 0, signal: None, reason: Some("Completed".into()) });
        assert_eq!(s.begin_load("load-0-r-1".into(), live), Ok(Some("load-0-r".into())));
        assert_eq!((s.load.job.as_deref(), s.load.pod.as_deref(), s.load.started), (Some("load-0-r-1"), None, false));
        assert!(s.load.exit.is_none() && s.load.live.is_some());
        assert_eq!(s.load_jobs, 2);
    }
}
