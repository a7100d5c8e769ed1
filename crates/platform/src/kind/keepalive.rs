//! The thundering reconnect on a cluster ([`crate::KeepAliveLoad`]): the keep-alive
//! clients run as a `zerodrop-load keepalive` Job, so their connections cross
//! kube-proxy as a real client's would; each api pod's accept-queue sidecar
//! (`zerodrop-load queues`, rendered when [`crate::StageEnv::listen_queues`]) prints its
//! own network namespace's listen queue, the pod watch streams it to
//! `<pod>.queues.log`, and the watch merges the pods' series when it is finished.

use super::{load_job, KindPlatform};
use crate::accept_queue::{self, ListenQueues, Sample, Watch};
use crate::now_ms;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zerodrop_load::keepalive::{KeepAliveProfile, KeepAliveResult};
use zerodrop_load::Live;

/// After the watch is finished, how long the sidecars' streams get to write the
/// samples taken up to then (the API server relays them a little behind).
const SETTLE: Duration = Duration::from_secs(2);

impl crate::KeepAliveLoad for KindPlatform {
    async fn start_keepalive_load(
        &mut self,
        profile: &KeepAliveProfile,
        live: Arc<Live>,
    ) -> Result<JoinHandle<Result<KeepAliveResult>>> {
        let limit = profile.duration + profile.request_timeout + Duration::from_secs(120);
        let args = |target: &str, awaited: &[String]| load_job::keepalive_args(profile, target, awaited);
        self.start_load_job(args, live, limit).await
    }

    fn watch_listen_queues(&mut self, every: Duration) -> Result<Watch> {
        let f = self.fleet()?;
        if !f.env.listen_queues {
            bail!("the stage was deployed without StageEnv::listen_queues: its api pods carry no accept-queue sidecar");
        }
        let shared = f.shared.clone();
        // Samples come as often as the sidecar takes them; a finer `every` would only
        // see each one twice.
        let every = every.max(Duration::from_millis(zerodrop_manifests::QUEUES_EVERY_MS));
        let from = now_ms();
        Ok(Watch::new(CancellationToken::new(), async move {
            let to = now_ms();
            tokio::time::sleep(SETTLE).await;
            let logs = shared.with(|s| s.queue_logs.clone());
            merge_logs(&logs, from, to, every)
        }))
    }
}

/// The api pods' sample series read off their sidecar logs, merged over
/// `[from_ms, to_ms]`. A pod whose sidecar printed nothing (started and stopped within
/// the settle time, or no stream at all) adds nothing; no samples at all is an error,
/// never an empty chart.
pub fn merge_logs(logs: &BTreeMap<String, PathBuf>, from_ms: i64, to_ms: i64, every: Duration) -> Result<ListenQueues> {
    if logs.is_empty() {
        bail!("no api pod's accept-queue sidecar log was streamed (is the sidecar in the api pods?)");
    }
    let mut series = Vec::new();
    for path in logs.values() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        series.push(samples(&text));
    }
    if series.iter().all(Vec::is_empty) {
        let names: Vec<_> = logs.values().map(|p| p.display().to_string()).collect();
        bail!("the accept-queue sidecar logs hold no `zdq` sample line: {}", names.join(", "));
    }
    let mut q = accept_queue::merge(&series, from_ms, to_ms, every);
    q.source = format!(
        "rx_queue of the api listener in /proc/net/tcp, read every {} ms by each api pod's sidecar \
         (`zerodrop-load queues`, in the pod's own network namespace) and summed over the pods; dropped SYNs are \
         each pod's TcpExt counters over the run, summed",
        zerodrop_manifests::QUEUES_EVERY_MS
    );
    Ok(q)
}

/// Every sample line of one sidecar log; anything else (a warning, the stream's own
/// cut marker) is skipped.
pub fn samples(log: &str) -> Vec<Sample> {
    log.lines().filter_map(Sample::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zd-keepalive-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sidecar_logs_merge_into_one_series_and_their_drops_add_up() {
        let d = dir("merge");
        let (a, b) = (d.join("api-a.queues.log"), d.join("api-b.queues.log"));
        // api-a: seen before the watch (its counters then are the baseline), queued 3
        // and 5, and 4 overflows within the watch. api-b: born during the watch, its
        // counters start at 0; a stray line and the stream's cut marker are skipped.
        std::fs::write(&a, "zdq 900 0 0 10 12\nzdq 1000 3 3 10 12\nzdq 1050 5 5 14 16\n").unwrap();
        std::fs::write(&b, "starting\nzdq 1050 2 2 1 1\n# zerodrop: cut at the end of the stage\n").unwrap();
        let logs = BTreeMap::from([("api-a".to_string(), a), ("api-b".to_string(), b)]);
        let q = merge_logs(&logs, 1000, 1100, Duration::from_millis(50)).unwrap();
        assert_eq!((q.overflows, q.drops), (4 + 1, 4 + 1));
        let at_1050 = q.ticks.iter().find(|t| t.unix_ms == 1050).unwrap();
        assert_eq!((at_1050.total, at_1050.max), (7, 5));
    }

    #[test]
    fn no_samples_is_an_error_that_says_where_it_looked() {
        let a = dir("empty").join("api-a.queues.log");
        std::fs::write(&a, "Error: something\n").unwrap();
        let logs = BTreeMap::from([("api-a".to_string(), a)]);
        let e = merge_logs(&logs, 0, 1, Duration::from_millis(50)).unwrap_err().to_string();
        assert!(e.contains("no `zdq` sample line") && e.contains("api-a.queues.log"), "{e}");
        let e = merge_logs(&BTreeMap::new(), 0, 1, Duration::from_millis(50)).unwrap_err().to_string();
        assert!(e.contains("no api pod's accept-queue sidecar log"), "{e}");
    }
}
