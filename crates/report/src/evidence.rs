//! The bounded log evidence shown in report.md: per pod, its lifecycle from the start
//! of its termination onward, pod log lines merged with the platform's pod events.

use super::model::{LogLine, PodEventKind, StageRun};
use std::collections::BTreeMap;

/// At most this many rows per stage in report.md.
pub const MAX_ROWS: usize = 40;

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub t_ms: i64,
    /// Milliseconds since the pod's termination began.
    pub since_ms: i64,
    pub pod: String,
    /// `log` (the pod wrote it) or `platform` (a pod event).
    pub source: &'static str,
    pub step: String,
    pub fields: String,
}

pub struct Evidence {
    pub rows: Vec<Row>,
    /// Rows left out by the cap.
    pub omitted: usize,
    /// Pods with rows left out.
    pub omitted_pods: Vec<String>,
}

/// Where a pod's termination begins: its first terminating/sigterm event or its
/// first `sigterm_received` line, whichever is earlier.
fn termination_starts(run: &StageRun) -> BTreeMap<&str, i64> {
    let mut starts: BTreeMap<&str, i64> = BTreeMap::new();
    let events = run
        .events
        .iter()
        .filter(|e| matches!(e.kind, PodEventKind::Terminating | PodEventKind::Sigterm))
        .map(|e| (e.pod.as_str(), e.t_ms));
    let logs = run.logs.iter().filter(|l| l.step == "sigterm_received").map(|l| (l.pod.as_str(), l.t_ms));
    for (pod, t) in events.chain(logs) {
        let e = starts.entry(pod).or_insert(t);
        *e = (*e).min(t);
    }
    starts
}

pub fn collect(run: &StageRun, cap: usize) -> Evidence {
    let starts = termination_starts(run);
    let mut rows = Vec::new();
    for (pod, lines) in super::checks::by_pod(&run.logs) {
        let Some(&start) = starts.get(pod) else { continue };
        let lines: Vec<&LogLine> = lines.into_iter().filter(|l| l.t_ms >= start).collect();
        let mut i = 0;
        while i < lines.len() {
            let l = lines[i];
            if l.step == "dispose" {
                // Collapse a run of dispose lines into one row that shows the order.
                let mut res = Vec::new();
                while i < lines.len() && lines[i].step == "dispose" {
                    res.push(lines[i].fields.get("resource").and_then(|r| r.as_str()).unwrap_or("?").to_string());
                    i += 1;
                }
                let step = if res.len() > 1 { format!("dispose ×{}", res.len()) } else { "dispose".into() };
                rows.push(row(l, start, step, res.join(" → ")));
                continue;
            }
            rows.push(row(l, start, l.step.clone(), compact_fields(&l.fields)));
            i += 1;
        }
    }
    for e in &run.events {
        let Some(&start) = starts.get(e.pod.as_str()) else { continue };
        if e.t_ms < start || matches!(e.kind, PodEventKind::Created | PodEventKind::Ready) {
            continue;
        }
        let step = serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        rows.push(Row {
            t_ms: e.t_ms,
            since_ms: e.t_ms - start,
            pod: e.pod.clone(),
            source: "platform",
            step,
            fields: e.detail.clone(),
        });
    }
    rows.sort_by(|a, b| a.t_ms.cmp(&b.t_ms).then(a.pod.cmp(&b.pod)));
    let omitted = rows.len().saturating_sub(cap);
    let mut omitted_pods: Vec<String> = rows.iter().skip(cap).map(|r| r.pod.clone()).collect();
    omitted_pods.sort();
    omitted_pods.dedup();
    rows.truncate(cap);
    Evidence { rows, omitted, omitted_pods }
}

fn row(l: &LogLine, start: i64, step: String, fields: String) -> Row {
    Row { t_ms: l.t_ms, since_ms: l.t_ms - start, pod: l.pod.clone(), source: "log", step, fields }
}

/// `k=v, k=v` of a log line's fields, bulky keys left out, bounded in length.
pub fn compact_fields(fields: &serde_json::Value) -> String {
    const SKIP: [&str; 6] = ["step", "message", "msg", "pod", "app", "timestamp"];
    let text = match fields {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !SKIP.contains(&k.as_str()))
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    truncate(&text, 90)
}

pub fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}
