//! One variant of the reconnect run: a fresh fleet, the keep-alive load, a rolling
//! deploy, and the raw observations turned into a summary.

use super::analysis::{self, Input};
use super::profile::ReconnectProfile;
use super::report::Variant;
use crate::backing::Backing;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use zerodrop_jobs::Topology;
use zerodrop_load::Live;
use zerodrop_platform::{now_ms, KeepAliveLoad, Platform};
use zerodrop_report::model::PodEventKind;
use zerodrop_stages::KeepAliveClose;

/// Accept-queue sampling period: finer than the 100 ms buckets.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

pub struct Ctx(Backing);

impl Ctx {
    pub async fn connect<P: Platform>(platform: &P) -> Result<Ctx> {
        Ok(Ctx(Backing::connect(platform).await?))
    }

    pub async fn close(self) {
        self.0.close().await;
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn run<P: Platform + KeepAliveLoad>(
        &mut self,
        platform: &mut P,
        p: &ReconnectProfile,
        run_id: &str,
        out_dir: &std::path::Path,
        index: usize,
        name: &str,
        close: KeepAliveClose,
    ) -> Result<Variant> {
        let (queue, schema) = super::profile::names(run_id, index, name);
        let topology = Topology::new(queue);
        topology.declare(&self.0.channel).await.context("declaring the variant's queues")?;
        zerodrop_ledger::create_schema(&self.0.db, &schema).await.context("creating the variant's ledger schema")?;
        let result = self.run_fleet(platform, p, out_dir, index, name, close, &topology, &schema).await;
        if result.is_err() {
            let _ = platform.finish_stage().await;
        }
        let _ = topology.delete(&self.0.channel).await;
        let _ = zerodrop_ledger::drop_schema(&self.0.db, &schema).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_fleet<P: Platform + KeepAliveLoad>(
        &mut self,
        platform: &mut P,
        p: &ReconnectProfile,
        out_dir: &std::path::Path,
        index: usize,
        name: &str,
        close: KeepAliveClose,
        topology: &Topology,
        schema: &str,
    ) -> Result<Variant> {
        let log_dir = out_dir.join("logs").join(name);
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let env = p.stage_env(&topology.queue, schema, index);
        platform.deploy(&p.stage(close), &env, &log_dir).await?;
        let queues = platform.watch_listen_queues(SAMPLE_EVERY)?;
        let live = Arc::new(Live::new());
        let load = platform.start_keepalive_load(&p.load, live.clone()).await?;
        tokio::time::sleep(p.load.ramp + p.steady).await;
        eprintln!("[{name}] {} requests so far; rolling deploy", live.snapshot().sent);
        let trigger = now_ms();
        let rollout = platform.rollout().await.context("the rolling deploy failed")?;
        platform.wait_terminations().await?;
        let result = load.await.context("the keep-alive load task failed")??;
        let queues = queues.finish().await.context("reading the listen queues")?;
        let observed = platform.finish_stage().await?;
        std::fs::write(log_dir.join("keepalive.json"), serde_json::to_vec(&result).unwrap_or_default())
            .context("writing the raw keep-alive records")?;

        let cold: BTreeSet<String> = observed
            .events
            .iter()
            .filter(|e| e.app == "api" && e.kind == PodEventKind::Created && e.unix_ms >= trigger)
            .map(|e| e.pod.clone())
            .collect();
        let origin = result.started_unix_ms as i64;
        let input = Input {
            name,
            close: match close {
                KeepAliveClose::AtOnce => "at-once",
                KeepAliveClose::Jittered => "jittered",
            },
            result: &result,
            trigger_us: ((trigger - origin).max(0) as u64) * 1000,
            window_us: p.roll.as_micros() as u64,
            steady_from_us: p.load.ramp.as_micros() as u64,
            ticks: &queues.ticks,
            cold: &cold,
            rollout_s: rollout.as_secs_f64(),
            drops: (queues.overflows, queues.drops),
            backlog: p.accept_backlog,
        };
        let buckets = analysis::buckets(&input);
        let summary = analysis::summarise(&input, &buckets);
        Ok(Variant { summary, buckets, accept_queue_source: queues.source.clone() })
    }
}
