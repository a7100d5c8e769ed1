//! A third-party client (hey, wrk, curl, ...) run beside the experiment's own load
//! during a stage's deploy, against the same Service address, so anyone can check the
//! project's counts with a tool of their own. Its output is kept verbatim; hey's
//! summary is also parsed so the report can put its counts next to ours.

use anyhow::{Context, Result};
#[cfg(test)]
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
pub use zerodrop_report::model::{ClientCounts, ThirdPartyRun};
use zerodrop_stages::StageName;

/// `--alongside`: the command (with `{url}` for the Service address) and the stages
/// it runs in.
#[derive(Debug, Clone)]
pub struct Alongside {
    pub template: String,
    pub stages: Vec<StageName>,
}

impl Alongside {
    pub fn applies_to(&self, stage: StageName) -> bool {
        self.stages.is_empty() || self.stages.contains(&stage)
    }
}

/// Parses hey's `Status code distribution` and `Error distribution` sections.
pub fn parse_hey(text: &str) -> Option<ClientCounts> {
    let mut c = ClientCounts::default();
    let mut section = "";
    let mut seen = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Status code distribution") {
            section = "status";
            seen = true;
            continue;
        }
        if t.starts_with("Error distribution") {
            section = "errors";
            seen = true;
            continue;
        }
        let Some(rest) = t.strip_prefix('[') else {
            if !t.is_empty() {
                section = "";
            }
            continue;
        };
        let Some((n, tail)) = rest.split_once(']') else { continue };
        let Ok(n) = n.trim().parse::<u64>() else { continue };
        match section {
            // `[200]	1222 responses`
            "status" => {
                let count = tail.split_whitespace().next().and_then(|v| v.parse::<u64>().ok());
                if let (Ok(code), Some(count)) = (n.to_string().parse::<u16>(), count) {
                    *c.responses.entry(code).or_default() += count;
                }
            }
            // `[214]	Get "...": dial tcp ...: connect: connection refused`
            "errors" => {
                if tail.contains("connection refused") {
                    c.refused += n;
                } else if tail.contains("connection reset") || tail.contains("EOF") {
                    c.reset += n;
                } else {
                    c.other_errors += n;
                }
            }
            _ => {}
        }
    }
    seen.then_some(c)
}

/// Runs `template` with `{url}` replaced through `sh -c`, its output going to
/// `out`. Bounded: killed after `limit`.
pub async fn run(template: &str, url: &str, out: &Path, limit: Duration) -> Result<(Option<i32>, String)> {
    let command = template.replace("{url}", url);
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &command])
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the third-party client `{command}`"))?;
    let code = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.context("waiting for the third-party client")?.code(),
        Err(_) => {
            let _ = child.kill().await;
            eprintln!("warning: the third-party client ran longer than {} s and was stopped", limit.as_secs());
            None
        }
    };
    Ok((code, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hey 0.1.4's summary, as it printed it during a pid1 deploy (trimmed).
    const HEY: &str = "
Summary:
  Total:	8.0045 secs
  Requests/sec:	192.5

Status code distribution:
  [200]	1222 responses
  [503]	107 responses

Error distribution:
  [200]	Get \"http://127.96.0.1/work?ms=5\": dial tcp 127.96.0.1:80: connect: connection refused
  [14]	Get \"http://127.96.0.1/work?ms=5\": dial tcp 127.96.0.1:80: connect: connection refused
  [3]	Get \"http://127.96.0.1/work?ms=5\": read tcp 127.0.0.1:4242->127.96.0.1:80: read: connection reset by peer
  [1]	Get \"http://127.96.0.1/work?ms=5\": EOF
  [2]	Get \"http://127.96.0.1/work?ms=5\": context deadline exceeded
";

    #[test]
    fn hey_summary_is_parsed() {
        let c = parse_hey(HEY).unwrap();
        assert_eq!(c.responses, BTreeMap::from([(200, 1222), (503, 107)]));
        assert_eq!((c.refused, c.reset, c.other_errors), (214, 4, 2));
        assert_eq!(c.total(), 1222 + 107 + 214 + 4 + 2);
        assert_eq!(c.failed(), 107 + 214 + 4 + 2);
    }

    #[test]
    fn other_tools_are_kept_but_not_parsed() {
        assert!(parse_hey("Running 10s test @ http://127.96.0.1\n  2 threads and 10 connections").is_none());
    }

    #[tokio::test]
    async fn the_command_runs_with_the_url_and_its_output_is_kept() {
        let out = std::env::temp_dir().join(format!("zerodrop-alongside-{}.txt", std::process::id()));
        let (code, cmd) = run("echo hit {url}; exit 3", "http://x", &out, Duration::from_secs(5)).await.unwrap();
        assert_eq!(code, Some(3));
        assert_eq!(cmd, "echo hit http://x; exit 3");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hit http://x\n");
        let (code, _) = run("sleep 5", "u", &out, Duration::from_millis(200)).await.unwrap();
        assert_eq!(code, None, "stopped at its limit");
        let _ = std::fs::remove_file(out);
    }
}
