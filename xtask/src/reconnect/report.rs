//! reports/<run-id>/: report.md, report.json and charts/reconnect.svg for one
//! thundering-reconnect run.

use super::analysis::{Bucket, Latency, PodGroup, VariantSummary};
use super::profile::ReconnectProfile;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use zerodrop_report::folder::Folder;
use zerodrop_report::model::Machine;
use zerodrop_report::stats::{describe, verdict};

#[derive(Debug, Serialize)]
pub struct Variant {
    pub summary: VariantSummary,
    pub buckets: Vec<Bucket>,
    /// How the platform read the accept queues.
    pub accept_queue_source: String,
}

#[derive(Debug, Serialize)]
pub struct ReconnectReport {
    pub run_id: String,
    pub command: String,
    pub platform: String,
    pub machine: Machine,
    pub wall_time_s: f64,
    pub profile: ReconnectProfile,
    /// How long the Service kept routing to a terminating pod, as the platform knows it
    /// (the lab's configured delay, or what the cluster measured).
    pub propagation: Option<zerodrop_evidence::Propagation>,
    pub variants: Vec<Variant>,
}

pub fn write(r: &ReconnectReport, dir: &Path) -> Result<()> {
    let folder = Folder::create(dir)?;
    folder.json(r)?;
    let panels: Vec<(&str, &[Bucket])> =
        r.variants.iter().map(|v| (v.summary.name.as_str(), v.buckets.as_slice())).collect();
    let title =
        format!("Thundering reconnect: {} keep-alive clients, rolling deploy of 3 api pods", r.profile.load.clients);
    folder.chart("reconnect", super::chart::render(&title, &panels))?;
    folder.markdown(markdown(r))
}

fn lat(l: &Latency) -> String {
    if l.n == 0 {
        "–".into()
    } else {
        format!("{:.0} / {:.0} / {:.0} ms (n={})", l.p50_ms, l.p99_ms, l.max_ms, l.n)
    }
}

fn group(g: &PodGroup) -> String {
    format!("{} on {}", describe(&g.http_503), if g.pods.is_empty() { "–".into() } else { g.pods.join(", ") })
}

pub fn markdown(r: &ReconnectReport) -> String {
    let p = &r.profile;
    let mut s = String::new();
    let _ = writeln!(s, "# Thundering reconnect: {}\n", r.run_id);
    let _ = writeln!(s, "Command: `{}` · wall time {:.0} s · platform {}", r.command, r.wall_time_s, r.platform);
    let _ = writeln!(s, "· {} ({} CPUs, kernel {})\n", r.machine.os, r.machine.cpus, r.machine.kernel);
    let _ = writeln!(s, "## Setup\n");
    let _ = writeln!(
        s,
        "- Load: {} keep-alive clients, one `GET /work?ms={}` each every {} s ({:.0} req/s in all), first connects spread over {} s; a client whose connection closes reconnects at once and resubscribes (one request). Connect timeout {} ms, request timeout {} s.",
        p.load.clients,
        p.load.work_ms,
        p.load.period.as_secs(),
        p.load.rate_per_sec(),
        p.load.ramp.as_secs(),
        p.load.connect_timeout.as_millis(),
        p.load.request_timeout.as_secs()
    );
    let _ = writeln!(
        s,
        "- Fleet: {} api pods (stage `surge-jitter`: maxSurge 1, warm before ready), {} slots each; every new connection costs {} ms of set-up with {} set up at once per pod (`ZD_CONN_SETUP_MS`, `ZD_CONN_SETUP_CONCURRENCY`), its first request {} ms more inside a slot (`ZD_FIRST_REQUEST_MS`), and the accept queue holds {} (`ZD_ACCEPT_BACKLOG`). Endpoint propagation: {}.",
        p.api_replicas,
        p.api_capacity,
        p.conn_setup.as_millis(),
        p.conn_setup_concurrency,
        p.first_request_cost.as_millis(),
        p.accept_backlog,
        r.propagation.as_ref().map(|pr| pr.describe()).unwrap_or_else(|| "not known on this platform".into())
    );
    let _ = writeln!(
        s,
        "- The variants run the same load (same clients, same schedule) and differ in `ZD_KEEPALIVE_CLOSE` only. Deploy window: from 1 s before the rollout trigger, {} s long in both.\n",
        p.roll.as_secs()
    );
    let _ = writeln!(s, "![reconnects, failures and accept queue per 100 ms](charts/reconnect.svg)\n");
    let _ = writeln!(s, "## Results\n");
    let mut head = String::from("| | ");
    head += &r.variants.iter().map(|v| format!("`{}`", v.summary.name)).collect::<Vec<_>>().join(" | ");
    let _ = writeln!(s, "{head} |\n|---|{}", "---|".repeat(r.variants.len()));
    let row = |s: &mut String, label: &str, f: &dyn Fn(&VariantSummary) -> String| {
        let cells: Vec<String> = r.variants.iter().map(|v| f(&v.summary)).collect();
        let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
    };
    row(&mut s, "clients / most connections open", &|v| format!("{} / {}", v.clients, v.peak_open));
    row(&mut s, "rollout duration", &|v| format!("{:.1} s", v.rollout_s));
    row(&mut s, "connections closed by the server (peak per 100 ms)", &|v| {
        format!("{} ({})", v.closes, v.peak_closes_per_100ms)
    });
    row(&mut s, "reconnects (peak per 100 ms)", &|v| format!("{} ({})", v.reconnects, v.peak_reconnects_per_100ms));
    row(&mut s, "accept queue peak: all pods / one pod (backlog)", &|v| {
        format!("{} / {} ({})", v.accept_queue_peak, v.accept_queue_peak_single, v.accept_backlog)
    });
    row(&mut s, "SYNs dropped on a full accept queue (ListenOverflows / ListenDrops)", &|v| {
        format!("{} / {}", v.listen_overflows, v.listen_drops)
    });
    row(&mut s, "failed connects", &|v| {
        if v.connect_failures.is_empty() {
            "0".into()
        } else {
            v.connect_failures.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        }
    });
    row(&mut s, "connect time p50 / p99 / max", &|v| lat(&v.connect_latency));
    row(&mut s, "failed requests (95% CI)", &|v| describe(&v.failed));
    row(&mut s, "failures by class", &|v| {
        if v.failures_by_class.is_empty() {
            "–".into()
        } else {
            v.failures_by_class.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        }
    });
    row(&mut s, "503 on the cold (new) pods", &|v| group(&v.cold_pods));
    row(&mut s, "latency on the cold pods p50 / p99 / max", &|v| lat(&v.cold_pods.latency));
    row(&mut s, "503 on the other pods", &|v| group(&v.other_pods));
    row(&mut s, "latency on the other pods p50 / p99 / max", &|v| lat(&v.other_pods.latency));
    row(&mut s, "resubscribe requests p50 / p99 / max", &|v| lat(&v.reconnect_requests));
    row(&mut s, "failed requests before the deploy (steady)", &|v| describe(&v.steady_failed));
    if let [a, b] = r.variants.as_slice() {
        let (a, b) = (&a.summary, &b.summary);
        let v = verdict(&[(a.failed.k, a.failed.n)], &[(b.failed.k, b.failed.n)]);
        let v503 = verdict(
            &[(a.cold_pods.http_503.k, a.cold_pods.http_503.n)],
            &[(b.cold_pods.http_503.k, b.cold_pods.http_503.n)],
        );
        let _ = writeln!(
            s,
            "\nVerdict of `{}` against `{}` (pooled 95% Wilson intervals, as in the staircase): failed requests **{}**, 503s on the cold pods **{}**. Peak reconnects per 100 ms went from {} to {}, the accept-queue peak from {} to {}.",
            b.name,
            a.name,
            v.as_str(),
            v503.as_str(),
            a.peak_reconnects_per_100ms,
            b.peak_reconnects_per_100ms,
            a.accept_queue_peak,
            b.accept_queue_peak
        );
    }
    let source = r.variants.first().map(|v| v.accept_queue_source.as_str()).unwrap_or("not read");
    let _ = writeln!(
        s,
        "\nThe accept queue is the kernel's: {source}. Cold pods are the pods the rollout created; which pod answered comes from the `x-zd-pod` response header."
    );
    s
}
