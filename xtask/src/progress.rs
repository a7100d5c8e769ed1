//! One status line for long runs: which stage, which phase, and the running error
//! counts, so a watcher sees a deploy go wrong while it happens.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use zerodrop_load::Live;

pub struct Progress {
    phase: Mutex<String>,
    started: Instant,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress { phase: Mutex::new(String::new()), started: Instant::now() })
    }

    pub fn phase(&self, p: impl Into<String>) {
        let p = p.into();
        if let Ok(mut g) = self.phase.lock() {
            *g = p.clone();
        }
        if !std::io::stderr().is_terminal() {
            eprintln!("[{:>4}s] {p}", self.started.elapsed().as_secs());
        }
    }

    /// Prints a status line every second until `stop`; on a terminal it rewrites one
    /// line, elsewhere (CI logs) it prints every 5 s.
    pub fn watch(
        self: &Arc<Self>,
        stage: String,
        live: Arc<Live>,
        ready: impl Fn() -> String + Send + 'static,
        stop: CancellationToken,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                n += 1;
                if !tty && !n.is_multiple_of(5) {
                    continue;
                }
                let s = live.snapshot();
                let errors: Vec<String> =
                    s.errors.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k}={v}")).collect();
                let phase = me.phase.lock().map(|p| p.clone()).unwrap_or_default();
                let line = format!(
                    "[{stage}] {phase:<28} sent={} ok={} errors: {}  {}",
                    s.sent,
                    s.ok,
                    if errors.is_empty() { "none".to_string() } else { errors.join(" ") },
                    ready()
                );
                if tty {
                    eprint!("\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{line}");
                }
            }
            if tty {
                eprintln!();
            }
        });
    }
}
