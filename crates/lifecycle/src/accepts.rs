//! When this process accepted the connections that carried traffic, so that at
//! termination it can tell how long the Service kept sending it new ones: the
//! deregistration delay, measured from the pod's own side (no platform table is read,
//! so it is the same on every platform).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Enough for a preStop of tens of seconds at hundreds of new connections a second;
/// older accepts cannot fall after a termination that has not begun yet.
const KEEP: usize = 16_384;

/// Probe paths: the kubelet opens a fresh connection per probe straight to the pod,
/// not through the Service, and keeps probing during termination.
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/readyz" | "/healthz" | "/metrics")
}

#[derive(Debug, Default)]
pub struct AcceptLog {
    recent: Mutex<VecDeque<Instant>>,
}

impl AcceptLog {
    /// Records a connection accepted at `at` whose first request was not a probe.
    pub fn record(&self, at: Instant) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == KEEP {
                r.pop_front();
            }
            r.push_back(at);
        }
    }

    /// The accepts at or after `start`.
    pub fn since(&self, start: Instant) -> AfterTermination {
        let r = self.recent.lock().map(|r| r.iter().copied().collect::<Vec<_>>()).unwrap_or_default();
        after_termination(&r, start)
    }
}

/// What the Service sent this pod once its termination had begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterTermination {
    pub accepted: u64,
    /// From termination start to the last accepted connection; `None` without one.
    pub last_ms: Option<u64>,
}

pub fn after_termination(accepts: &[Instant], start: Instant) -> AfterTermination {
    let after: Vec<Duration> = accepts.iter().filter(|a| **a >= start).map(|a| a.duration_since(start)).collect();
    AfterTermination { accepted: after.len() as u64, last_ms: after.iter().max().map(|d| d.as_millis() as u64) }
}

/// Termination began preStop before SIGTERM (the kubelet runs preStop to completion
/// first); a process younger than its preStop counts from its own start.
pub fn termination_start(sigterm: Instant, pre_stop: Duration, born: Instant) -> Instant {
    sigterm.checked_sub(pre_stop).filter(|t| *t >= born).unwrap_or(born)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_accepts_after_termination_began() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let log = AcceptLog::default();
        for ms in [100, 900, 1000, 1450, 1700] {
            log.record(at(ms));
        }
        let got = log.since(at(1000));
        assert_eq!(got, AfterTermination { accepted: 3, last_ms: Some(700) });
        assert_eq!(log.since(at(2000)), AfterTermination { accepted: 0, last_ms: None });
    }

    #[test]
    fn termination_starts_pre_stop_before_sigterm() {
        let born = Instant::now();
        let sigterm = born + Duration::from_secs(10);
        assert_eq!(termination_start(sigterm, Duration::from_secs(3), born), born + Duration::from_secs(7));
        assert_eq!(termination_start(sigterm, Duration::from_secs(30), born), born, "younger than its preStop");
        assert_eq!(termination_start(sigterm, Duration::ZERO, born), sigterm);
    }

    #[test]
    fn the_log_is_bounded() {
        let t0 = Instant::now();
        let log = AcceptLog::default();
        for i in 0..(KEEP as u64 + 10) {
            log.record(t0 + Duration::from_micros(i));
        }
        assert_eq!(log.since(t0).accepted, KEEP as u64);
    }

    #[test]
    fn probes_are_not_traffic() {
        assert!(is_probe("/readyz") && is_probe("/healthz"));
        assert!(!is_probe("/work") && !is_probe("/jobs"));
    }
}
