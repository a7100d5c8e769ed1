//! `zerodrop-load queues`: the accept-queue sidecar. Beside the api container it shares
//! the pod's network namespace, so the kernel's tables it reads are the pod's own; it
//! prints one [`Sample`] line per period on stdout until it is stopped, which the
//! runner reads off its log.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zerodrop_load::listen_queue::Sample;

#[derive(clap::Args)]
pub struct Args {
    /// The listening port whose accept queue is read.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sampling period.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    every: Duration,
}

pub async fn main(args: Args) -> anyhow::Result<()> {
    if args.every < Duration::from_millis(10) {
        anyhow::bail!("--every must be at least 10ms, got {:?}", args.every);
    }
    let mut iv = tokio::time::interval(args.every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // SIGTERM ends the pod's sidecar after the api container has exited; the default
    // disposition (exit) is right, and every line written so far is already out.
    loop {
        iv.tick().await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let line = Sample::take(args.port, now).line();
        let mut out = std::io::stdout().lock();
        // A closed stdout means nobody reads the samples any more: stop.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
}
