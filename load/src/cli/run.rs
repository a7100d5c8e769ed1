use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use zerodrop_load::gate::{self, GateConfig, GateState};
use zerodrop_load::{window_stats, Class, FixedResolver, Live, Mix, Profile, Resolver, RunResult};

#[derive(clap::Args)]
pub struct Args {
    /// host:port. Must be on loopback unless --allow-non-loopback.
    #[arg(long)]
    target: String,
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
    /// Write the full RunResult here as JSON. `-` prints it to stdout instead, as
    /// checksummed chunk lines between `--- zerodrop-load result: ...` and
    /// `--- end ---` (how a run inside a cluster hands its result back through the
    /// pod's log; `zerodrop_load::wire::decode` reads it back).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Permit a target outside loopback (e.g. a ClusterIP from inside a cluster).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Before the load, wait until these pods (comma-separated) have each answered a
    /// `GET /healthz` sent through --target on a new connection (their `x-zd-pod`
    /// header): the data plane carries them, not just the control plane's list.
    #[arg(long, value_delimiter = ',', value_name = "POD,POD,...")]
    await_pods: Vec<String>,
    /// Give up on --await-pods after this long (exit non-zero, no load sent).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    await_timeout: Duration,
    /// Give up on --await-pods after this many probes.
    #[arg(long, default_value_t = 2000)]
    await_max_probes: u32,
}

/// `--out -`: the result as checksummed chunk lines (see [`zerodrop_load::wire`]).
fn write_result(out: &mut impl std::io::Write, result: &RunResult) -> anyhow::Result<()> {
    out.write_all(zerodrop_load::wire::encode(result)?.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    let parts: Vec<u32> =
        s.split(',').map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}"))).collect::<Result<_, _>>()?;
    match parts[..] {
        [fast, slow, job] if fast + slow + job > 0 => Ok(Mix { fast, slow, job }),
        _ => Err("expected three weights fast,slow,job, not all zero".into()),
    }
}

pub async fn main(args: Args) -> anyhow::Result<()> {
    let addr = resolve(&args.target, args.allow_non_loopback).await?;
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
    };
    let resolver: Arc<dyn Resolver> = Arc::new(FixedResolver(addr));
    if !args.await_pods.is_empty() {
        let cfg = GateConfig {
            deadline: args.await_timeout,
            max_probes: args.await_max_probes,
            pause: gate::DEFAULT_PAUSE,
            connect_timeout: args.connect_timeout,
            probe_timeout: args.timeout,
        };
        await_data_plane(resolver.as_ref(), addr, &args.await_pods, &cfg).await?;
    }
    // The load's own t=0 is set inside `run`, after the gate.
    eprintln!("{}{} rps for {:?} to {addr}", gate::LOAD_BEGINS, profile.rate_per_sec, profile.duration);
    let live = Arc::new(Live::new());
    let progress = tokio::spawn(progress(live.clone()));
    let result = zerodrop_load::run(&profile, resolver, &args.job_prefix, live).await;
    progress.abort();
    print_summary(&result);
    if args.out.as_deref() == Some(std::path::Path::new("-")) {
        write_result(&mut std::io::stdout().lock(), &result)?;
    } else if let Some(path) = &args.out {
        let json = serde_json::to_vec_pretty(&result)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs the gate, one line per newly seen pod and one at the end (all prefixed
/// [`gate::LINE_PREFIX`], so a log reader knows no load was sent yet).
async fn await_data_plane(
    resolver: &dyn Resolver,
    addr: SocketAddr,
    pods: &[String],
    cfg: &GateConfig,
) -> anyhow::Result<()> {
    let p = gate::LINE_PREFIX;
    // Deduplicated and sorted, as the gate counts them.
    let names = GateState::new(pods).missing();
    let n = names.len();
    eprintln!(
        "{p}awaiting {n} pods through {addr} (GET {} on a new connection each): {}",
        gate::PROBE_PATH,
        names.join(", ")
    );
    let passed = gate::await_pods(resolver, pods, cfg, |pod, s, t| {
        eprintln!(
            "{p}{pod} answered ({}/{}) after {} probes, {} ms",
            s.seen(),
            s.expected(),
            s.probes(),
            t.as_millis()
        );
    })
    .await
    .context("no load sent: the api Service's data plane does not reach every awaited pod")?;
    eprintln!(
        "{p}data plane carries {}/{n} endpoints after {} probes, {} ms",
        passed.pods,
        passed.probes,
        passed.elapsed.as_millis()
    );
    Ok(())
}

/// The lab aims load at its own servers; a typo must not send it to someone else's.
async fn resolve(target: &str, allow_non_loopback: bool) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(target).await.with_context(|| format!("resolve {target}"))?.collect();
    let Some(&first) = addrs.first() else { bail!("{target} resolves to no address") };
    if !allow_non_loopback && addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("{target} resolves to {first}, outside loopback; pass --allow-non-loopback if that is intended");
    }
    Ok(first)
}

async fn progress(live: Arc<Live>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for t in 1.. {
        tick.tick().await;
        // The kind platform reads these lines back for its live counters.
        eprintln!("{}", live.snapshot().progress_line(t));
    }
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
        };
        let mut buf = Vec::new();
        write_result(&mut buf, &r).unwrap();
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
