//! Shutdown-order checks, proven from the pods' lifecycle log lines and the platform's
//! pod events alone.

use super::model::{LogLine, PodEventKind, StageRun};
use serde::Serialize;
use std::collections::BTreeMap;

/// Teardown order per app, first disposed first.
pub const API_TEARDOWN: [&str; 4] = ["http_server", "publisher", "amqp_channel", "amqp_connection"];
pub const WORKER_TEARDOWN: [&str; 5] = ["http_server", "consumer", "amqp_channel", "amqp_connection", "db_pool"];

/// `None` means not applicable (serialised as `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// SIGTERM got to the app process: its handler logged it, or an init forwarded it.
    pub sigterm_reached_app: bool,
    pub sigterm_handler_fired: bool,
    pub readiness_before_listener_close: Option<bool>,
    /// Every api pod that stopped listening did so only after the Service stopped
    /// routing new connections to it (its `endpoint_removed` event came first).
    pub deregistered_before_listener_close: Option<bool>,
    pub teardown_reverse_order: Option<bool>,
    pub guardian_fired: bool,
    pub killed_by_sigkill: u64,
}

pub fn expected_teardown(app: &str) -> Option<&'static [&'static str]> {
    match app {
        "api" => Some(&API_TEARDOWN),
        "worker" => Some(&WORKER_TEARDOWN),
        _ => None,
    }
}

/// Each pod's lines in time order (stable for equal times), pods by name.
pub fn by_pod(logs: &[LogLine]) -> BTreeMap<&str, Vec<&LogLine>> {
    let mut map: BTreeMap<&str, Vec<&LogLine>> = BTreeMap::new();
    for l in logs {
        map.entry(l.pod.as_str()).or_default().push(l);
    }
    for lines in map.values_mut() {
        lines.sort_by_key(|l| l.t_ms);
    }
    map
}

/// The checks, plus one human-readable note per violation or oddity found.
pub fn compute(run: &StageRun) -> (Checks, Vec<String>) {
    let mut notes = Vec::new();
    let pods = by_pod(&run.logs);
    let any = |step: &str| run.logs.iter().any(|l| l.step == step);

    let mut readiness = None;
    let mut teardown = None;
    for (pod, lines) in &pods {
        let pos = |step: &str| lines.iter().position(|l| l.step == step);
        if let Some(closed) = pos("listener_closed") {
            let ok = matches!(pos("readiness_failing"), Some(r) if r < closed);
            if !ok {
                notes.push(format!("{pod}: listener_closed without an earlier readiness_failing"));
            }
            readiness = Some(readiness.unwrap_or(true) && ok);
        }
        if let Some(ok) = teardown_ok(pod, lines, &mut notes) {
            teardown = Some(teardown.unwrap_or(true) && ok);
        }
    }

    let checks = Checks {
        sigterm_reached_app: any("sigterm_received") || any("signal_forwarded"),
        sigterm_handler_fired: any("sigterm_received"),
        readiness_before_listener_close: readiness,
        deregistered_before_listener_close: deregistered_first(run, &pods, &mut notes),
        teardown_reverse_order: teardown,
        guardian_fired: any("guardian_fired"),
        killed_by_sigkill: run.events.iter().filter(|e| e.kind == PodEventKind::Sigkill).count() as u64,
    };
    (checks, notes)
}

/// `None` when no api pod logged that it stopped listening (`listener_closed`, or
/// `exit_now`, which closes the listener with the process).
fn deregistered_first(run: &StageRun, pods: &BTreeMap<&str, Vec<&LogLine>>, notes: &mut Vec<String>) -> Option<bool> {
    let mut verdict = None;
    for (pod, lines) in pods {
        let Some(closed) = lines
            .iter()
            .find(|l| l.app == "api" && matches!(l.step.as_str(), "listener_closed" | "exit_now" | "app_exited"))
        else {
            continue;
        };
        let removed =
            run.events.iter().find(|e| e.pod == *pod && e.kind == PodEventKind::EndpointRemoved).map(|e| e.t_ms);
        let ok = matches!(removed, Some(t) if t <= closed.t_ms);
        if !ok {
            let when = removed.map(|t| format!("{} ms later", t - closed.t_ms)).unwrap_or_else(|| "never".into());
            notes.push(format!(
                "{pod}: stopped listening ({}) while still routed; endpoint removed {when}",
                closed.step
            ));
        }
        verdict = Some(verdict.unwrap_or(true) && ok);
    }
    verdict
}

/// `None` when the pod disposed nothing.
fn teardown_ok(pod: &str, lines: &[&LogLine], notes: &mut Vec<String>) -> Option<bool> {
    let disposes: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.step == "dispose")
        .map(|(i, l)| (i, l.fields.get("resource").and_then(|r| r.as_str()).unwrap_or("?")))
        .collect();
    let last = disposes.last()?.0;
    let app = lines[0].app.as_str();
    let mut ok = true;
    match expected_teardown(app) {
        Some(order) => {
            let mut prev: Option<(usize, &str)> = None;
            for &(_, res) in &disposes {
                let Some(rank) = order.iter().position(|r| *r == res) else {
                    notes.push(format!("{pod}: disposed unknown resource `{res}` (not checked)"));
                    continue;
                };
                if let Some((prev_rank, prev_res)) = prev {
                    if rank <= prev_rank {
                        ok = false;
                        notes.push(format!(
                            "{pod}: disposed `{res}` after `{prev_res}`; {app} order is {}",
                            order.join(" → ")
                        ));
                    }
                }
                prev = Some((rank, res));
            }
        }
        None => notes.push(format!("{pod}: no teardown order known for app `{app}` (order not checked)")),
    }
    let flushed_after = lines.iter().enumerate().any(|(i, l)| l.step == "telemetry_flushed" && i > last);
    if !flushed_after {
        ok = false;
        notes.push(format!("{pod}: no telemetry_flushed after the last dispose"));
    }
    Some(ok)
}
