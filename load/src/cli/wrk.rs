//! Runs Debian's `wrk` (closed loop: each connection sends its next request when the
//! previous answer arrives) and reads its summary.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    pub connections: usize,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

pub fn find() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("wrk")).find(|p| p.is_file())
}

pub async fn run(
    wrk: &PathBuf,
    target: SocketAddr,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<WrkResult> {
    let out = tokio::process::Command::new(wrk)
        .args(["-t1", &format!("-c{connections}"), &format!("-d{}s", duration.as_secs().max(1)), "--latency"])
        .arg(format!("http://{target}/"))
        .output()
        .await
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    parse(&text, connections).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse(text: &str, connections: usize) -> Option<WrkResult> {
    let mut r = WrkResult { connections, requests_per_sec: 0.0, p50_ms: 0.0, p99_ms: 0.0, max_ms: 0.0, errors: 0 };
    let (mut rps, mut p50, mut p99, mut max) = (None, None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = ms(v),
            ["99%", v] => p99 = ms(v),
            // Thread Stats: Avg, Stdev, Max, +/- Stdev.
            ["Latency", _avg, _stdev, m, _] => max = ms(m),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", ..] => {
                r.errors += words.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    r.requests_per_sec = rps?;
    r.p50_ms = p50?;
    r.p99_ms = p99?;
    r.max_ms = max?;
    Some(r)
}

/// wrk prints durations as `85.00us`, `1.23ms`, `2.00s` or `1.00m`.
fn ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:4000/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    89.43us   40.10us   3.21ms   95.12%
    Req/Sec    41.20k     2.03k   44.01k    80.00%
  Latency Distribution
     50%   82.00us
     75%   95.00us
     90%  110.00us
     99%  240.00us
  410000 requests in 10.00s, 29.72MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  40995.12
Transfer/sec:      2.97MB
";

    #[test]
    fn parses_summary() {
        let r = parse(SAMPLE, 4).unwrap();
        assert_eq!(r.requests_per_sec, 40995.12);
        assert!((r.p50_ms - 0.082).abs() < 1e-9);
        assert!((r.p99_ms - 0.24).abs() < 1e-9);
        assert!((r.max_ms - 3.21).abs() < 1e-9);
        assert_eq!(r.errors, 3);
    }
}
