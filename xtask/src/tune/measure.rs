//! What one trial's pod logs and load say: the deregistration delay of every
//! terminated api pod (from its own `listener_closed` line) and request latency.

use serde::Serialize;
use zerodrop_report::model::{LogLine, PodEventKind, StageRun};

/// One api pod's termination, as the pod measured it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Termination {
    pub pod: String,
    /// The trial's pod-log directory, relative to the report.
    pub trial: String,
    /// Connections accepted after termination began.
    pub accepted_after_term: u64,
    /// Termination start → last accepted connection; `None`: none arrived.
    pub last_accept_ms: Option<u64>,
    /// Termination start → listener closed (preStop + deregistration wait): a delay
    /// this close to it may have been cut short (censored).
    pub listen_window_ms: u64,
    /// The platform's own view where it has one: terminating → endpoint removed.
    pub platform_ms: Option<i64>,
}

impl Termination {
    /// The last accept came within 100 ms of the listener closing: the Service may
    /// have kept routing longer than the pod could see.
    pub fn censored(&self) -> bool {
        self.last_accept_ms.is_some_and(|m| m + 100 >= self.listen_window_ms)
    }
}

/// Reads `accepted_after_term` / `last_accept_after_term_ms` from a `listener_closed`
/// line; `None` for another step or a line without the measurement.
pub fn from_line(l: &LogLine) -> Option<(u64, Option<u64>)> {
    if l.step != "listener_closed" {
        return None;
    }
    let accepted = l.fields.get("accepted_after_term")?.as_u64()?;
    Some((accepted, l.fields.get("last_accept_after_term_ms").and_then(|v| v.as_u64())))
}

/// Every api pod of `run` that logged the measurement.
pub fn terminations(run: &StageRun) -> Vec<Termination> {
    let window = (run.stage.pod.pre_stop + run.stage.api.deregistration_wait).as_millis() as u64;
    let at = |pod: &str, kind: PodEventKind| run.events.iter().find(|e| e.pod == pod && e.kind == kind).map(|e| e.t_ms);
    run.logs
        .iter()
        .filter(|l| l.app == "api")
        .filter_map(|l| from_line(l).map(|m| (l, m)))
        .map(|(l, (accepted, last))| Termination {
            pod: l.pod.clone(),
            trial: run.pod_logs_dir.clone(),
            accepted_after_term: accepted,
            last_accept_ms: last,
            listen_window_ms: window,
            platform_ms: at(&l.pod, PodEventKind::Terminating)
                .zip(at(&l.pod, PodEventKind::EndpointRemoved))
                .map(|(t, r)| r - t),
        })
        .collect()
}

/// Latency (ms) of every request answered 2xx in the run.
pub fn ok_latencies_ms(run: &StageRun) -> Vec<f64> {
    run.load
        .records
        .iter()
        .filter(|r| r.class == zerodrop_load::Class::Ok)
        .map(|r| r.latency_us as f64 / 1000.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(step: &str, fields: serde_json::Value) -> LogLine {
        LogLine {
            t_ms: 0,
            timestamp: String::new(),
            pod: "api-r2-4".into(),
            app: "api".into(),
            step: step.into(),
            fields,
        }
    }

    /// The shape the lifecycle writes (tracing's JSON `fields`), with and without an
    /// accept after termination began.
    #[test]
    fn parses_the_listener_closed_fields() {
        let raw = r#"{"timestamp":"2026-12-01T03:00:00.000000Z","level":"INFO","fields":{"message":"listener closed","step":"listener_closed","connections":3,"in_flight":1,"accepted_after_term":17,"last_accept_after_term_ms":1432},"target":"zerodrop_lifecycle::sequence"}"#;
        let l = zerodrop_evidence::parse_line(raw, "api-r2-4", "api", 0).unwrap();
        assert_eq!(from_line(&l), Some((17, Some(1432))));
        let none = line("listener_closed", json!({"accepted_after_term": 0}));
        assert_eq!(from_line(&none), Some((0, None)), "absent when no connection came");
        assert_eq!(from_line(&line("listener_closed", json!({"connections": 1}))), None, "an older pod");
        assert_eq!(from_line(&line("drain_started", json!({"accepted_after_term": 1}))), None);
    }

    #[test]
    fn censoring_is_flagged_near_the_listener_close() {
        let t = |last| Termination {
            pod: "p".into(),
            trial: String::new(),
            accepted_after_term: 1,
            last_accept_ms: last,
            listen_window_ms: 4000,
            platform_ms: None,
        };
        assert!(t(Some(3950)).censored());
        assert!(!t(Some(1500)).censored());
        assert!(!t(None).censored());
    }
}
