//! Reads the lifecycle lines (`{"fields": {"step": ...}}`) back out of pod logs.

use crate::LogLine;
use std::path::Path;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Parses one JSON log line; `None` for anything that is not a lifecycle step.
pub fn parse_line(line: &str, pod: &str, app: &str, origin_unix_ms: i64) -> Option<LogLine> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    let step = fields.get("step")?.as_str()?.to_string();
    let timestamp = v.get("timestamp")?.as_str()?.to_string();
    let at = OffsetDateTime::parse(&timestamp, &Rfc3339).ok()?;
    let unix_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    Some(LogLine {
        t_ms: unix_ms - origin_unix_ms,
        timestamp,
        pod: pod.to_string(),
        app: app.to_string(),
        step,
        fields: fields.clone(),
    })
}

/// Every lifecycle line of one pod's log file.
pub fn read_pod_log(path: &Path, pod: &str, app: &str, origin_unix_ms: i64) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| parse_line(l, pod, app, origin_unix_ms)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_lifecycle_line_and_skips_others() {
        let l = r#"{"timestamp":"2026-11-23T13:02:31.268150Z","level":"INFO","fields":{"message":"instance ready","step":"ready"},"target":"x"}"#;
        let origin = 1_795_438_951_000; // 2026-11-23T13:02:31Z
        let got = super::parse_line(l, "api-r1-1", "api", origin).unwrap();
        assert_eq!(got.step, "ready");
        assert_eq!(got.t_ms, 268);
        assert!(super::parse_line(r#"{"fields":{"message":"x"}}"#, "p", "api", 0).is_none());
        assert!(super::parse_line("entrypoint: app exited with 0", "p", "api", 0).is_none());
    }
}
