//! `zerodrop-load keepalive`: the keep-alive client profile (the thundering
//! reconnect's load) against a Service address, after the same data-plane gate as
//! `run`, with the same progress lines and result hand-back.

use super::shared::{self, OutArgs, TargetArgs};
use std::sync::Arc;
use std::time::Duration;
use zerodrop_load::keepalive::{self, KeepAliveProfile, KeepAliveResult};
use zerodrop_load::Live;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: TargetArgs,
    /// Clients, each holding one HTTP/1.1 connection and reconnecting the moment it closes.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    clients: u32,
    /// Each client sends one request per period.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    period: Duration,
    /// The clients' first connects are spread evenly over this.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// The whole run, ramp included.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// `GET /work?ms=` of every request.
    #[arg(long, default_value_t = 5)]
    work_ms: u32,
    /// Whole-request timeout, counted from the intended start.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// After a failed connect, the first retry waits this long, doubling up to 1 s.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    retry_backoff: Duration,
    #[command(flatten)]
    out: OutArgs,
}

impl Args {
    fn profile(&self) -> KeepAliveProfile {
        KeepAliveProfile {
            clients: self.clients,
            period: self.period,
            ramp: self.ramp,
            duration: self.duration,
            work_ms: self.work_ms,
            request_timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            retry_backoff: self.retry_backoff,
        }
    }
}

pub async fn main(args: Args) -> anyhow::Result<()> {
    let profile = args.profile();
    let addr = args.target.reach(profile.connect_timeout, profile.request_timeout).await?;
    shared::load_begins(format_args!(
        "{} keep-alive clients, {:.0} req/s, for {:?} to {addr}",
        profile.clients,
        profile.rate_per_sec(),
        profile.duration
    ));
    let live = Arc::new(Live::new());
    let progress = tokio::spawn(shared::progress(live.clone()));
    let result = keepalive::run(&profile, addr, live).await;
    progress.abort();
    print_summary(&result);
    args.out.write(&result)
}

fn print_summary(r: &KeepAliveResult) {
    let ok = r.requests.iter().filter(|q| q.class == zerodrop_load::Class::Ok).count();
    let reconnects = r.connects.iter().filter(|c| c.reconnect).count();
    println!(
        "requests {}  ok {}  connects {} (reconnects {})  closes seen {}  peak open {}",
        r.requests.len(),
        ok,
        r.connects.len(),
        reconnects,
        r.closes_us.len(),
        r.peak_open
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// What the runner puts in a Job parses back into the very profile it came from.
    #[test]
    fn profile_args_parse_back_into_the_same_profile() {
        let p = KeepAliveProfile {
            clients: 2400,
            period: Duration::from_secs(10),
            ramp: Duration::from_secs(8),
            duration: Duration::from_millis(62_500),
            work_ms: 5,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(50),
        };
        let mut argv = vec!["x".to_string(), "--target".into(), "api.ns.svc.cluster.local:80".into()];
        argv.extend(p.cli_args());
        let cli = Cli::try_parse_from(argv).unwrap();
        assert_eq!(cli.args.profile(), p);
    }
}
