//! What the platform saw, timestamped on the wall clock (unix ms) so it can be lined
//! up with the load generator's records and the pods' own log lines.

pub use crate::now_ms;
use crate::RawEvent;
use std::sync::Mutex;
use tokio::sync::Notify;
use zerodrop_evidence::PodEventKind;

#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<RawEvent>>,
    endpoints: Mutex<Vec<(i64, u32)>>,
    /// Woken on every pod state change; the controller waits on it.
    pub changed: Notify,
}

impl Recorder {
    pub fn event(&self, pod: &str, app: &'static str, kind: PodEventKind, detail: impl Into<String>) {
        let e = RawEvent { unix_ms: now_ms(), pod: pod.to_string(), app, kind, detail: detail.into() };
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
        self.changed.notify_waiters();
    }

    pub fn endpoints_now(&self, ready: u32) {
        if let Ok(mut v) = self.endpoints.lock() {
            v.push((now_ms(), ready));
        }
    }

    pub fn events(&self) -> Vec<RawEvent> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn endpoint_samples(&self) -> Vec<(i64, u32)> {
        self.endpoints.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
