use super::shared::{self, OutArgs, TargetArgs};
use std::sync::Arc;
use std::time::Duration;
use zerodrop_load::{
    window_stats, Class, Clients, FixedResolver, Live, Mark, Mirror, Mix, Profile, Resolver, RunResult,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: TargetArgs,
    /// Intended requests per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Weights of fast,slow,job requests.
    #[arg(long, default_value = "70,20,10", value_parser = parse_mix)]
    mix: Mix,
    #[arg(long, default_value_t = 5)]
    fast_ms: u32,
    #[arg(long, default_value_t = 250)]
    slow_ms: u32,
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Whole-request timeout, counted from the intended start.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    #[arg(long, default_value = "load")]
    job_prefix: String,
    /// A marker header (`NAME: VALUE`, e.g. `cookie: zd-tester=1`) that a share of the
    /// requests carries (`--mark-permille`): testers reaching a canary by rule.
    #[arg(long, value_parser = parse_header, requires = "mark_permille")]
    mark_header: Option<(String, String)>,
    /// Share of the requests that carry `--mark-header`, in permille (0..=1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000), requires = "mark_header")]
    mark_permille: Option<u32>,
    /// Requests come from this many clients, each named in `--client-header` (`c0`,
    /// `c1`, ...), drawn Zipf-like with exponent `--zipf` (at most 10,000: the api
    /// counts no client beyond `c9999`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=zerodrop_load::MAX_CLIENTS as i64))]
    clients: Option<u32>,
    /// The Zipf exponent of the clients' shares (0: even; 1: a few heavy clients).
    #[arg(long, default_value_t = 1.0, requires = "clients")]
    zipf: f64,
    #[arg(long, default_value = zerodrop_load::CLIENT_HEADER, requires = "clients")]
    client_header: String,
    /// Shadow traffic: a copy of a share of the requests (`--mirror-permille`) goes out
    /// at the same moment carrying this header (`NAME: VALUE`, e.g. `x-canary: always`);
    /// its answers are kept apart from the run's own, paired by sequence number.
    #[arg(long, value_parser = parse_header, requires_all = ["mirror_permille", "mirror_until"])]
    mirror_header: Option<(String, String)>,
    /// Share of the requests copied with `--mirror-header`, in permille (0..=1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000), requires = "mirror_header")]
    mirror_permille: Option<u32>,
    /// Only requests intended before this point of the run are copied (the shadow phase).
    #[arg(long, value_parser = humantime::parse_duration, requires = "mirror_header")]
    mirror_until: Option<Duration>,
    #[command(flatten)]
    out: OutArgs,
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    let parts: Vec<u32> =
        s.split(',').map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}"))).collect::<Result<_, _>>()?;
    match parts[..] {
        [fast, slow, job] if fast + slow + job > 0 => Ok(Mix { fast, slow, job }),
        _ => Err("expected three weights fast,slow,job, not all zero".into()),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((n, v)) if !n.trim().is_empty() => Ok((n.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?}: expected `NAME: VALUE`, e.g. `x-tester: 1` or `cookie: zd-tester=1`")),
    }
}

pub async fn main(args: Args) -> anyhow::Result<()> {
    let addr = args.target.reach(args.connect_timeout, args.timeout).await?;
    let profile = Profile {
        rate_per_sec: args.rate,
        duration: args.duration,
        seed: args.seed,
        mix: args.mix,
        fast_ms: args.fast_ms,
        slow_ms: args.slow_ms,
        max_connections: args.max_connections,
        request_timeout: args.timeout,
        connect_timeout: args.connect_timeout,
        clients: args.clients.map(|count| Clients { count, zipf_s: args.zipf, header: args.client_header.clone() }),
        mark: args.mark_header.zip(args.mark_permille).map(|((header, value), permille)| Mark {
            permille,
            header,
            value,
        }),
        mirror: match (args.mirror_header, args.mirror_permille, args.mirror_until) {
            (Some((header, value)), Some(permille), Some(until)) => Some(Mirror { permille, header, value, until }),
            _ => None,
        },
    };
    let resolver: Arc<dyn Resolver> = Arc::new(FixedResolver(addr));
    // The load's own t=0 is set inside `run`, after the gate.
    shared::load_begins(format_args!("{} rps for {:?} to {addr}", profile.rate_per_sec, profile.duration));
    let live = Arc::new(Live::new());
    let progress = tokio::spawn(shared::progress(live.clone()));
    let result = zerodrop_load::run(&profile, resolver, &args.job_prefix, live).await;
    progress.abort();
    print_summary(&result);
    args.out.write(&result)
}

pub fn print_summary(r: &RunResult) {
    let w = window_stats(&r.records, 0, r.profile.duration.as_micros() as u64);
    let pct = |n: u64| if w.total == 0 { 0.0 } else { 100.0 * n as f64 / w.total as f64 };
    println!("total {}  failed {} ({:.2}%)", w.total, w.failed, pct(w.failed));
    println!("{:<10} {:>9} {:>8}", "class", "count", "%");
    for c in std::iter::once(Class::Ok).chain(Class::FAILURES).chain([Class::Http4xx]) {
        let n = w.by_class.get(c.key()).copied().unwrap_or_default();
        println!("{:<10} {:>9} {:>7.2}%", c.key(), n, pct(n));
    }
    let l = w.latency_ms;
    println!("latency ms  p50 {:.2}  p99 {:.2}  max {:.2}", l.p50, l.p99, l.max);
    println!("ok/s {:.1}  late sends {} ({:.2}%)", w.ok_per_sec, r.late_sends, pct(r.late_sends));
    println!("connections opened {}  jobs accepted {}", r.connections_opened, r.accepted_jobs.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_dash_prints_the_result_between_the_markers() {
        let r = RunResult {
            started_unix_ms: 1,
            profile: Profile::default(),
            records: vec![],
            accepted_jobs: vec!["load-1".into()],
            late_sends: 0,
            connections_opened: 2,
            pods: vec![],
            mirrored: vec![],
            mirrored_accepted_jobs: vec![],
        };
        let mut buf = Vec::new();
        shared::write_result(&mut buf, &r).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("--- zerodrop-load result: 1 chunks, "), "{}", lines[0]);
        assert!(lines[1].starts_with("zdr 1/1 "), "{}", lines[1]);
        assert_eq!(lines[2], "--- end ---");
        let back = zerodrop_load::wire::decode::<RunResult>(&text).unwrap();
        assert_eq!(back.accepted_jobs, r.accepted_jobs);
    }
}
