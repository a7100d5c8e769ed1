//! Benchmarks the generator against the built-in target, on loopback only.

use super::wrk;
use anyhow::Context;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zerodrop_load::{window_stats, FixedResolver, Live, Mix, Profile, RunResult};

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

#[derive(clap::Args)]
pub struct Args {
    /// Intended rates to try, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000,10000,20000")]
    rates: Vec<u32>,
    /// How long each rate runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    step: Duration,
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// wrk's connection count; by default the connections the generator opened at the
    /// highest rate it held, so both tools load the server through as many sockets.
    #[arg(long)]
    wrk_connections: Option<usize>,
    /// Markdown file whose `bench:begin`/`bench:end` section is replaced (created if absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Row {
    rate: u32,
    sent: u64,
    achieved: f64,
    late_pct: f64,
    p50: f64,
    p99: f64,
    max: f64,
    errors: u64,
    connections: u64,
}

impl Row {
    fn holds(&self) -> bool {
        self.achieved >= 0.99 * f64::from(self.rate) && self.late_pct < 1.0 && self.errors == 0
    }
}

pub async fn main(args: Args) -> anyhow::Result<()> {
    let target = start_target()?;
    eprintln!("target on http://{target}");
    // Untimed warm-up: first connections, allocator and page faults.
    measure(target, 500, Duration::from_secs(1), args.max_connections).await;

    let mut rows = Vec::new();
    for &rate in &args.rates {
        let result = measure(target, rate, args.step, args.max_connections).await;
        let row = row(&result);
        eprintln!(
            "{rate:>6} rps: achieved {:.0}, late {:.2}%, p99 {:.2} ms, errors {}{}",
            row.achieved,
            row.late_pct,
            row.p99,
            row.errors,
            if row.holds() { "  holds" } else { "" }
        );
        rows.push(row);
    }

    let best = rows.iter().filter(|r| r.holds()).max_by_key(|r| r.rate);
    let wrk_result = match wrk::find() {
        None => {
            println!("wrk not found: install it with apt-get install wrk");
            None
        }
        Some(path) => {
            let c = args.wrk_connections.or(best.map(|r| r.connections as usize)).unwrap_or(4).max(1);
            eprintln!("wrk -t1 -c{c} -d{}s", args.step.as_secs());
            Some(wrk::run(&path, target, c, args.step).await?)
        }
    };

    let md = render(&args, &rows, best, wrk_result.as_ref());
    println!("{md}");
    if let Some(path) = &args.out {
        write_section(path, &md)?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}

/// The target gets its own thread and single-threaded runtime, so the generator's
/// runtime schedules only the generator (the two still share the machine's cores).
fn start_target() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind target")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("target".into()).spawn(move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = zerodrop_load::target::serve(l).await {
                        eprintln!("target stopped: {e}");
                    }
                }
                Err(e) => eprintln!("target: {e}"),
            }
        })
    })?;
    Ok(addr)
}

async fn measure(target: SocketAddr, rate: u32, step: Duration, max_connections: usize) -> RunResult {
    let profile = Profile {
        rate_per_sec: rate,
        duration: step,
        mix: Mix { fast: 1, slow: 0, job: 0 },
        max_connections,
        ..Profile::default()
    };
    zerodrop_load::run(&profile, Arc::new(FixedResolver(target)), "bench", Arc::new(Live::new())).await
}

fn row(r: &RunResult) -> Row {
    let step_us = r.profile.duration.as_micros() as u64;
    let w = window_stats(&r.records, 0, u64::MAX);
    let ok = w.by_class.get("ok").copied().unwrap_or_default();
    // Over the time until the last response, so a generator that falls behind and
    // finishes late shows a lower rate even if every request eventually succeeds.
    let span_us = r.records.iter().map(|x| x.at_us + x.latency_us).max().unwrap_or(0).max(step_us);
    let sent = r.records.len() as u64;
    Row {
        rate: r.profile.rate_per_sec,
        sent,
        achieved: ok as f64 / (span_us as f64 / 1e6),
        late_pct: if sent == 0 { 0.0 } else { 100.0 * r.late_sends as f64 / sent as f64 },
        p50: w.latency_ms.p50,
        p99: w.latency_ms.p99,
        max: w.latency_ms.max,
        errors: w.failed,
        connections: r.connections_opened,
    }
}

fn render(args: &Args, rows: &[Row], best: Option<&Row>, wrk: Option<&wrk::WrkResult>) -> String {
    let mut s = String::new();
    let rates: Vec<String> = args.rates.iter().map(u32::to_string).collect();
    let out = args.out.as_ref().map(|p| format!(" --out {}", p.display())).unwrap_or_default();
    let _ = writeln!(s, "Measured {} on {}.\n", utc_date(), machine());
    let _ = writeln!(
        s,
        "```\ncargo run -p zerodrop-load -- bench --rates {} --step {}{out}\n```\n",
        rates.join(","),
        humantime::format_duration(args.step)
    );
    let _ = writeln!(
        s,
        "| intended rps | sent | achieved rps | late sends | p50 ms | p99 ms | max ms | errors | connections | holds |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.2}% | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            r.rate,
            r.sent,
            r.achieved,
            r.late_pct,
            r.p50,
            r.p99,
            r.max,
            r.errors,
            r.connections,
            if r.holds() { "yes" } else { "no" }
        );
    }
    let _ = match best {
        Some(b) => writeln!(s, "\nHighest rate held: **{} rps**.", b.rate),
        None => writeln!(s, "\nHighest rate held: none of the rates tried."),
    };
    match wrk {
        Some(w) => {
            let _ = writeln!(
                s,
                "\n`wrk -t1 -c{} -d{}s --latency` against the same target:\n\n| connections | requests/s | p50 ms | p99 ms | max ms | errors |\n|---:|---:|---:|---:|---:|---:|\n| {} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
                w.connections,
                args.step.as_secs().max(1),
                w.connections,
                w.requests_per_sec,
                w.p50_ms,
                w.p99_ms,
                w.max_ms,
                w.errors
            );
        }
        None => {
            let _ = writeln!(s, "\nwrk was not installed; no comparison.");
        }
    }
    s
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cores (`nproc`), {model}, kernel `{}` (`uname -r`)", kernel.trim())
}

/// YYYY-MM-DD from the system clock (Howard Hinnant's days-to-civil algorithm).
fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Replaces the generated section, keeping the prose around it.
fn write_section(path: &Path, md: &str) -> anyhow::Result<()> {
    let section = format!("{BEGIN}\n{md}{END}");
    let text = match std::fs::read_to_string(path) {
        Ok(old) => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
            _ => format!("{old}\n{section}\n"),
        },
        Err(_) => format!("# Load generator benchmark\n\n{section}\n"),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_section_keeps_the_prose_around_it() {
        let path = std::env::temp_dir().join(format!("zerodrop-bench-{}.md", std::process::id()));
        std::fs::write(&path, format!("intro\n{BEGIN}\nold\n{END}\nnotes\n")).unwrap();
        write_section(&path, "new\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, format!("intro\n{BEGIN}\nnew\n{END}\nnotes\n"));
    }

    #[test]
    fn utc_date_is_well_formed() {
        let d = super::utc_date();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
