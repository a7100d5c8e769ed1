//! Following one pod's log into a file. The API server may end a followed stream
//! while the container still runs (an empty answer before the container started, a
//! connection the API server or kubelet closes, a log file rotated under it): the
//! stream is then opened again from where it got to, and the lines it repeats are
//! skipped, so the file holds every line once.
//!
//! Where it got to is the kubelet's own per-line timestamp (`timestamps=true`,
//! RFC 3339 with nanoseconds). A reopened stream starts at `sinceTime`, which the API
//! takes in whole seconds, so it repeats the lines of that second already written:
//! [`LogCursor`] drops every line older than the last one written and, of the lines
//! stamped exactly like it, as many as were already written.

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{RoundMode, Timestamp, TimestampRound, Unit};
use kube::api::{Api, LogParams};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Called with every line of a streamed log (without the kubelet's timestamp).
pub type LineHook = Box<dyn FnMut(&str) + Send>;

/// Reopenings of one pod's stream after it has shown lines; bounds a stream the API
/// keeps closing.
const MAX_REOPENS: u32 = 200;

/// How far a followed log has been written, by the kubelet's timestamps.
#[derive(Debug, Default, Clone)]
pub struct LogCursor {
    last: Option<Timestamp>,
    /// Lines written that carry exactly `last`.
    at_last: u32,
    /// Of those, how many the current opening has yet to repeat.
    to_skip: u32,
}

impl LogCursor {
    /// A new opening of the stream begins: it repeats from `sinceTime` on.
    pub fn reopened(&mut self) {
        self.to_skip = self.at_last;
    }

    /// `sinceTime` for the next opening: the last written line's second (the API
    /// rounds to whole seconds; rounding down never loses a line).
    pub fn since(&self) -> Option<Timestamp> {
        self.last.and_then(|t| t.round(TimestampRound::new().smallest(Unit::Second).mode(RoundMode::Floor)).ok())
    }

    /// The text of `raw` (a `timestamps=true` line) when it is new, `None` when this
    /// opening repeats it. A line without a timestamp is passed through.
    pub fn accept<'a>(&mut self, raw: &'a str) -> Option<&'a str> {
        let Some((ts, text)) = raw.split_once(' ').and_then(|(t, rest)| Some((t.parse::<Timestamp>().ok()?, rest)))
        else {
            return Some(raw);
        };
        match self.last {
            Some(last) if ts < last => None,
            Some(last) if ts == last => {
                if self.to_skip > 0 {
                    self.to_skip -= 1;
                    None
                } else {
                    self.at_last += 1;
                    Some(text)
                }
            }
            _ => {
                self.last = Some(ts);
                self.at_last = 1;
                self.to_skip = 0;
                Some(text)
            }
        }
    }
}

/// How one opening of a followed log ended.
enum Ended {
    /// The body ended; `lines` lines had come (repeats included).
    Eof {
        lines: u64,
    },
    Broke,
    /// `stop` fired: the stage is over and nothing after it belongs to its evidence.
    Cut,
}

/// Streams `pod`'s log (following, from the container's start) into `path`. Retries
/// while the log cannot be opened; gives up on that after two minutes, or when `stop`
/// fires first. A stream that ends while the pod object says its container still
/// runs is opened again from where it got to (see [`LogCursor`]); one that broke off
/// after the container ended is read once more, whole, for its tail. When `stop`
/// fires the stream is cut there: no later line is written.
pub fn spawn_log_stream(
    api: Api<Pod>,
    pod: String,
    path: PathBuf,
    hook: Option<LineHook>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    spawn_container_log_stream(api, pod, None, path, hook, stop)
}

/// [`spawn_log_stream`] of one named container of the pod (a sidecar's); `None` is
/// the pod's one regular container, which the API picks when no name is given (a
/// native sidecar is an init container, so it does not count against that).
pub fn spawn_container_log_stream(
    api: Api<Pod>,
    pod: String,
    container: Option<String>,
    path: PathBuf,
    mut hook: Option<LineHook>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut cursor = LogCursor::default();
        let mut out: Option<std::io::LineWriter<std::fs::File>> = None;
        let (mut reopens, mut follow) = (0u32, true);
        loop {
            let params = LogParams {
                container: container.clone(),
                follow,
                timestamps: true,
                since_time: cursor.since(),
                ..LogParams::default()
            };
            let reader = loop {
                match api.log_stream(&pod, &params).await {
                    Ok(r) => break r,
                    Err(kube::Error::Api(s)) if s.code == 404 => return,
                    Err(e) => {
                        if Instant::now() > deadline || stop.is_cancelled() {
                            eprintln!("warning: no log stream for pod {pod}: {e}");
                            return;
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            };
            if out.is_none() {
                match std::fs::File::create(&path) {
                    Ok(f) => out = Some(std::io::LineWriter::new(f)),
                    Err(e) => {
                        eprintln!("warning: cannot write {}: {e}", path.display());
                        return;
                    }
                }
            }
            let Some(w) = out.as_mut() else { return };
            cursor.reopened();
            let mut lines = std::pin::pin!(reader.lines());
            let mut n = 0u64;
            let ended = loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break Ended::Cut,
                    next = lines.try_next() => next,
                };
                match next {
                    Ok(Some(raw)) => {
                        n += 1;
                        let Some(line) = cursor.accept(&raw) else { continue };
                        if let Some(h) = hook.as_mut() {
                            h(line);
                        }
                        if writeln!(w, "{line}").is_err() {
                            return;
                        }
                    }
                    Ok(None) => break Ended::Eof { lines: n },
                    Err(e) => {
                        eprintln!("warning: the log stream of pod {pod} broke off: {e}");
                        break Ended::Broke;
                    }
                }
            };
            if !follow {
                break; // the whole-log read after a break is the last
            }
            let again = match ended {
                Ended::Cut => {
                    let _ = writeln!(w, "# zerodrop: cut at the end of the stage");
                    break;
                }
                // Nothing yet: the API's empty answer for a container not started.
                Ended::Eof { lines: 0 } => Instant::now() < deadline && still_running(&api, &pod).await,
                Ended::Eof { .. } | Ended::Broke if reopens >= MAX_REOPENS => false,
                Ended::Eof { .. } => still_running(&api, &pod).await,
                Ended::Broke => {
                    // Followed or not, the rest of the log is read once more.
                    follow = still_running(&api, &pod).await;
                    true
                }
            };
            if !again {
                break;
            }
            reopens += 1;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        if let Some(mut w) = out {
            let _ = w.flush();
        }
    })
}

/// The pod exists and its container runs (so a stream that ended was premature). A
/// sidecar's stream asks about the regular container too: the sidecar is stopped only
/// after it, so a sidecar stream that ends while the main container runs was premature.
async fn still_running(api: &Api<Pod>, pod: &str) -> bool {
    api.get_opt(pod).await.ok().flatten().is_some_and(|p| super::pods::facts(&p).running)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_reopened_stream_repeats_nothing() {
        let mut c = LogCursor::default();
        let first = [
            "2026-11-23T13:02:10.998000000Z a",
            "2026-11-23T13:02:11.204539112Z b",
            "2026-11-23T13:02:11.391000000Z c",
            "2026-11-23T13:02:11.391000000Z d",
        ];
        let got: Vec<_> = first.iter().filter_map(|l| c.accept(l)).collect();
        assert_eq!(got, ["a", "b", "c", "d"], "lines stamped alike within one opening all count");
        assert_eq!(c.since(), Some(ts("2026-11-23T13:02:11Z")), "floored, never rounded up past a line");
        // sinceTime 13:02:11 repeats b, c, d, then the new lines come.
        c.reopened();
        let second = [
            "2026-11-23T13:02:11.204539112Z b",
            "2026-11-23T13:02:11.391000000Z c",
            "2026-11-23T13:02:11.391000000Z d",
            "2026-11-23T13:02:11.391000000Z e",
            "2026-11-23T13:02:12.000000001Z f",
        ];
        let got: Vec<_> = second.iter().filter_map(|l| c.accept(l)).collect();
        assert_eq!(got, ["e", "f"]);
        assert_eq!(c.accept("no timestamp here"), Some("no timestamp here"));
        assert_eq!(LogCursor::default().since(), None, "the first opening reads from the container's start");
    }
}
