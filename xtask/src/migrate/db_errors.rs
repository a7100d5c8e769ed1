//! Database errors as the workers logged them, counted per pod log. Old pods' metrics
//! are gone with the pods; their logs stay in the run folder on both platforms, so the
//! logs are the record. A database failure is logged once per attempt: a retry's
//! "database error; ..." warning, the auto-ack "database error with auto-ack ..."
//! error, or, on the last attempt, "job parked in the dead-letter queue ..."
//! (`services/worker/src/delivery.rs`).

use std::collections::BTreeMap;
use std::path::Path;

fn is_db_error(line: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { return false };
    let msg = v.pointer("/fields/message").and_then(|m| m.as_str()).unwrap_or("");
    msg.starts_with("database error") || msg.starts_with("job parked in the dead-letter queue")
}

/// Database errors in one log's text.
pub fn count(text: &str) -> u64 {
    text.lines().filter(|l| is_db_error(l)).count() as u64
}

/// Database errors so far in each worker pod's log in `dir` (`worker*.log`).
pub fn snapshot(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pod) = name.strip_suffix(".log").filter(|p| p.starts_with("worker")) else { continue };
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.insert(pod.to_string(), count(&text));
    }
    out
}

/// Errors between two snapshots, split into pods that existed at `before` (the old
/// version) and pods that appeared since (the new one).
pub fn since(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> (u64, u64) {
    let (mut old, mut new) = (0, 0);
    for (pod, n) in after {
        match before.get(pod) {
            Some(b) => old += n.saturating_sub(*b),
            None => new += n,
        }
    }
    (old, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_parks_and_auto_ack_losses_count_and_nothing_else() {
        let text = [
            r#"{"timestamp":"t","level":"WARN","fields":{"message":"database error; the job will be retried","job_id":"a","error":"database: column \"amount\" of relation \"ledger\" does not exist"},"target":"zerodrop_worker::delivery"}"#,
            r#"{"timestamp":"t","level":"ERROR","fields":{"message":"job parked in the dead-letter queue after its last attempt","job_id":"b"},"target":"zerodrop_worker::delivery"}"#,
            r#"{"timestamp":"t","level":"ERROR","fields":{"message":"database error with auto-ack: the job is lost","job_id":"c"},"target":"zerodrop_worker::delivery"}"#,
            r#"{"timestamp":"t","level":"INFO","fields":{"message":"starting","step":"started"},"target":"x"}"#,
            "not json: database error",
            "",
        ]
        .join("\n");
        assert_eq!(count(&text), 3);
    }

    #[test]
    fn pods_present_before_are_old_and_new_ones_are_new() {
        let before: BTreeMap<String, u64> = [("worker-r1-4".into(), 2)].into();
        let after: BTreeMap<String, u64> = [("worker-r1-4".into(), 7), ("worker-r2-9".into(), 1)].into();
        assert_eq!(since(&before, &after), (5, 1));
    }
}
