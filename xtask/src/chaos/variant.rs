//! One variant of the chaos run: a fresh fleet behind the fault relay, steady load,
//! the fault on for one phase and off again, then the jobs reconciled and the pods'
//! breaker lines read back.

use super::analysis::{self, Input};
use super::profile::{self, ChaosProfile};
use super::report::{Jobs, Variant};
use crate::backing::Backing;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zerodrop_jobs::Topology;
use zerodrop_load::Live;
use zerodrop_platform::{now_ms, DependencyFaults};

pub struct Ctx(Backing);

impl Ctx {
    pub async fn connect<P: DependencyFaults>(platform: &P) -> Result<Ctx> {
        Ok(Ctx(Backing::connect(platform).await?))
    }

    pub async fn close(self) {
        self.0.close().await;
    }

    /// Runs variant `name` (the breaker on or off) with its own queue and schema, and
    /// removes both afterwards.
    #[allow(clippy::too_many_arguments)]
    pub async fn run<P: DependencyFaults>(
        &mut self,
        platform: &mut P,
        p: &ChaosProfile,
        run_id: &str,
        out_dir: &Path,
        index: usize,
        name: &str,
        breaker: bool,
    ) -> Result<Variant> {
        let (queue, schema) = profile::names(run_id, index, name);
        let topology = Topology::new(queue);
        topology.declare(&self.0.channel).await.context("declaring the variant's queues")?;
        zerodrop_ledger::create_schema(&self.0.db, &schema).await.context("creating the variant's ledger schema")?;
        let result = self.run_fleet(platform, p, out_dir, index, name, breaker, &topology, &schema).await;
        // A failed run must not leave the fault on for the next variant.
        let _ = platform.set_fault(None).await;
        if result.is_err() {
            let _ = platform.finish_stage().await;
        }
        let _ = topology.delete(&self.0.channel).await;
        let _ = zerodrop_ledger::drop_schema(&self.0.db, &schema).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_fleet<P: DependencyFaults>(
        &mut self,
        platform: &mut P,
        p: &ChaosProfile,
        out_dir: &Path,
        index: usize,
        name: &str,
        breaker: bool,
        topology: &Topology,
        schema: &str,
    ) -> Result<Variant> {
        let log_dir = out_dir.join("logs").join(name);
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        platform.deploy(&p.stage(), &p.stage_env(&topology.queue, schema, index, breaker), &log_dir).await?;
        let live = Arc::new(Live::new());
        let load = platform.start_load(&p.load, &format!("chaos-{name}"), live.clone()).await?;
        tokio::time::sleep(Duration::from_millis(p.warmup_ms + p.phase_ms)).await;
        let inject = now_ms();
        platform.set_fault(Some(p.fault)).await?;
        eprintln!("[{name}] {} requests so far; fault on: broker path {}", live.snapshot().sent, p.fault.describe());
        tokio::time::sleep(Duration::from_millis(p.phase_ms)).await;
        let heal = now_ms();
        platform.set_fault(None).await?;
        eprintln!("[{name}] fault off; {} requests so far", live.snapshot().sent);
        let result = load.await.context("the load task failed")??;
        let settled = self.0.wait_settled(topology, schema).await;
        let rec = zerodrop_ledger::reconcile(&self.0.db, schema, &result.accepted_jobs)
            .await
            .context("reconciling accepted jobs with the ledger")?;
        let observed = platform.finish_stage().await?;
        std::fs::write(log_dir.join("load.json"), serde_json::to_vec(&result).unwrap_or_default())
            .context("writing the raw load records")?;

        let origin = result.started_unix_ms as i64;
        let since = |unix_ms: i64| ((unix_ms - origin).max(0) as u64) * 1000;
        let mut transitions = Vec::new();
        for log in observed.pod_logs.iter().filter(|l| l.app == "api") {
            for line in zerodrop_evidence::read_pod_log(&log.path, &log.pod, log.app, origin) {
                if line.step != "breaker" {
                    continue;
                }
                let to = line.fields.get("to").and_then(|v| v.as_str()).unwrap_or("?").to_string();
                transitions.push((since(origin + line.t_ms), log.pod.clone(), to));
            }
        }
        let input = Input {
            records: &result.records,
            inject_us: since(inject),
            heal_us: since(heal),
            phase_us: p.phase_ms * 1000,
            transitions: &transitions,
        };
        let bucket_us = (p.phase_ms * 1000 / 10).max(1_000_000);
        Ok(Variant {
            name: name.to_string(),
            breaker,
            phases: analysis::phases(&input),
            timing: analysis::timing(&input),
            transitions: analysis::transitions(&input),
            timeline: analysis::timeline(&input, bucket_us),
            jobs: Jobs {
                accepted: result.accepted_jobs.len() as u64,
                lost: rec.lost.len() as u64,
                applied_twice: rec.duplicated.len() as u64,
                settled,
            },
        })
    }
}
