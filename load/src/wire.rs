//! A run's result (a [`RunResult`], a keep-alive result, ...) as log lines, for a run
//! inside a cluster that hands its result back through the pod's log
//! (`zerodrop-load run --out -`).
//!
//! One JSON line can exceed what the container runtime keeps as one line (the
//! kubelet's CRI log splits lines over 16 KiB), and a log read back may be
//! interleaved with other output, reopened, or repeated. So the JSON goes out in
//! numbered chunks of at most [`CHUNK_BYTES`], each with its own checksum, after a
//! header that gives the count, the length and the checksum of the whole:
//!
//! ```text
//! --- zerodrop-load result: 3 chunks, 9123 bytes, fnv1a64 6c62272e07bb0142 ---
//! zdr 1/3 0f1e2d3c4b5a6978 {"started_unix_ms":...
//! zdr 2/3 ...
//! zdr 3/3 ...
//! --- end ---
//! ```
//!
//! [`decode`] takes the chunks from anywhere in the text, keeps one good copy of
//! each, and checks the whole before parsing it.

use std::collections::BTreeMap;

/// The header line's start.
pub const BEGIN: &str = "--- zerodrop-load result:";
pub const END: &str = "--- end ---";
const CHUNK: &str = "zdr";
/// Well under the kubelet's 16 KiB line limit.
pub const CHUNK_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("no result header (`{BEGIN} ...`) in the log")]
    NoHeader,
    #[error("the result is incomplete: chunks {missing:?} of {total} are missing or fail their checksum")]
    Missing { missing: Vec<usize>, total: usize },
    #[error("the reassembled result is {got} bytes with checksum {got_sum:016x}; the header says {want} bytes, {want_sum:016x}")]
    Checksum { got: usize, got_sum: u64, want: usize, want_sum: u64 },
    #[error("the reassembled result does not parse as the expected result: {0}")]
    Json(String),
}

/// FNV-1a, 64 bits: catches a damaged or truncated chunk; not a defence against
/// anyone forging one.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The result as the lines `--out -` prints (each ending in `\n`).
pub fn encode<T: serde::Serialize>(result: &T) -> serde_json::Result<String> {
    let json = serde_json::to_string(result)?;
    let chunks = split(&json, CHUNK_BYTES);
    let mut out = format!(
        "{BEGIN} {} chunks, {} bytes, fnv1a64 {:016x} ---\n",
        chunks.len(),
        json.len(),
        fnv1a64(json.as_bytes())
    );
    for (i, c) in chunks.iter().enumerate() {
        out.push_str(&format!("{CHUNK} {}/{} {:016x} {c}\n", i + 1, chunks.len(), fnv1a64(c.as_bytes())));
    }
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

/// Pieces of at most `max` bytes, cut on character boundaries.
fn split(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut at = rest.len().min(max);
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        let (head, tail) = rest.split_at(at);
        out.push(head);
        rest = tail;
    }
    out
}

struct Header {
    chunks: usize,
    bytes: usize,
    sum: u64,
}

fn header(line: &str) -> Option<Header> {
    let rest = line.trim_end().strip_prefix(BEGIN)?.strip_suffix("---")?;
    let w: Vec<&str> = rest.split_whitespace().collect();
    match w[..] {
        [n, "chunks,", b, "bytes,", "fnv1a64", sum] => {
            Some(Header { chunks: n.parse().ok()?, bytes: b.parse().ok()?, sum: u64::from_str_radix(sum, 16).ok()? })
        }
        _ => None,
    }
}

/// `zdr i/n sum data` with a checksum that holds: (i, n, data).
fn chunk(line: &str) -> Option<(usize, usize, &str)> {
    let rest = line.strip_prefix(CHUNK)?.strip_prefix(' ')?;
    let (pos, rest) = rest.split_once(' ')?;
    let (sum, data) = rest.split_once(' ')?;
    let (i, n) = pos.split_once('/')?;
    let (i, n): (usize, usize) = (i.parse().ok()?, n.parse().ok()?);
    (u64::from_str_radix(sum, 16).ok()? == fnv1a64(data.as_bytes()) && (1..=n).contains(&i)).then_some((i, n, data))
}

/// The result in `log`, whatever else the log holds around and between its lines,
/// and however often a line repeats. The last header wins (a rerun prints a new one).
pub fn decode<T: serde::de::DeserializeOwned>(log: &str) -> Result<T, WireError> {
    let h = log.lines().rev().find_map(header).ok_or(WireError::NoHeader)?;
    let mut got: BTreeMap<usize, &str> = BTreeMap::new();
    for (i, n, data) in log.lines().filter_map(chunk) {
        if n == h.chunks {
            got.entry(i).or_insert(data);
        }
    }
    let missing: Vec<usize> = (1..=h.chunks).filter(|i| !got.contains_key(i)).collect();
    if !missing.is_empty() {
        return Err(WireError::Missing { missing, total: h.chunks });
    }
    let json: String = got.into_values().collect();
    let sum = fnv1a64(json.as_bytes());
    if json.len() != h.bytes || sum != h.sum {
        return Err(WireError::Checksum { got: json.len(), got_sum: sum, want: h.bytes, want_sum: h.sum });
    }
    serde_json::from_str(&json).map_err(|e| WireError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Class, Kind, Profile, Record, RunResult};

    fn result(records: usize) -> RunResult {
        let r = |i: u64| {
            let class = if i.is_multiple_of(97) { Class::Reset } else { Class::Ok };
            Record::new(i * 5_000, 1_200 + i, class, Kind::Fast)
                .with_marked(i.is_multiple_of(10))
                .with_client(Some((i % 7) as u32))
        };
        RunResult {
            started_unix_ms: 1_795_438_951_000,
            profile: Profile::default(),
            records: (0..records as u64).map(r).collect(),
            accepted_jobs: vec!["run-naive-7".into(), "run-naive-ü".into()],
            late_sends: 3,
            connections_opened: 64,
            pods: vec![],
            mirrored: vec![],
            mirrored_accepted_jobs: vec![],
        }
    }

    #[test]
    fn a_large_result_goes_out_in_short_lines_and_comes_back() {
        let r = result(2_000);
        let text = encode(&r).unwrap();
        assert!(text.lines().all(|l| l.len() <= CHUNK_BYTES + 64), "every line fits the kubelet's limit");
        assert!(text.lines().count() > 10);
        let back = decode::<RunResult>(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&r).unwrap());
    }

    #[test]
    fn interleaved_repeated_and_reordered_lines_still_decode() {
        let r = result(1_500);
        let text = encode(&r).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // A progress line in between, a reopened stream repeating the first half,
        // chunks out of order.
        let mut log = vec!["   9s  sent 1800  ok 1800  errors 0"];
        log.extend(&lines[..lines.len() / 2]);
        log.push("   10s  sent 2000  ok 1999  errors reset=1");
        log.extend(&lines[..]);
        log.swap(3, 4);
        let back = decode::<RunResult>(&log.join("\n")).unwrap();
        assert_eq!(back.records.len(), r.records.len());
    }

    #[test]
    fn a_missing_or_damaged_chunk_is_named() {
        let text = encode(&result(1_500)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let n = lines.len() - 2;
        assert!(n >= 3);
        let without: Vec<&str> = lines.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| *l).collect();
        assert_eq!(
            decode::<RunResult>(&without.join("\n")).unwrap_err(),
            WireError::Missing { missing: vec![2], total: n }
        );
        let damaged = text.replacen("\"latency_us\":1201", "\"latency_us\":9201", 1);
        assert_eq!(decode::<RunResult>(&damaged).unwrap_err(), WireError::Missing { missing: vec![1], total: n });
        assert_eq!(decode::<RunResult>("   1s  sent 200  ok 200  errors 0\n").unwrap_err(), WireError::NoHeader);
        // A chunk that checks out but belongs to another whole.
        let other = encode(&result(1_501)).unwrap();
        let mixed = format!("{}\n{}", lines[0], other.lines().skip(1).collect::<Vec<_>>().join("\n"));
        assert!(matches!(decode::<RunResult>(&mixed), Err(WireError::Missing { .. } | WireError::Checksum { .. })));
    }
}
