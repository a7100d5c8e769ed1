//! One run of the experiment: for each stage, a fresh fleet, load across a rolling
//! deploy, reconciliation of jobs against the ledger, and the raw material for the
//! report.

use crate::evidence;
use crate::local::pod::{App, Isolation};
use crate::local::recorder::{now_ms, Recorder};
use crate::local::{Fleet, FleetConfig};
use crate::profile::ExperimentProfile;
use crate::progress::Progress;
use crate::report::model::{self, EndpointSample, Jobs, PodEvent, StageRun, Window};
use anyhow::{Context, Result};
use lapin::{Channel, Connection, ConnectionProperties};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use zerodrop_jobs::Topology;
use zerodrop_load::Live;
use zerodrop_stages::Stage;

/// What every stage of a run shares.
pub struct RunCtx {
    pub run_id: String,
    pub out_dir: PathBuf,
    pub amqp_url: String,
    pub database_url: String,
    pub bin_dir: PathBuf,
    pub isolation: Isolation,
    pub profile: ExperimentProfile,
    pub keep_data: bool,
    pub progress: Arc<Progress>,
    amqp: Connection,
    channel: Channel,
    db: tokio_postgres::Client,
}

impl RunCtx {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        run_id: String,
        out_dir: PathBuf,
        amqp_url: String,
        database_url: String,
        bin_dir: PathBuf,
        isolation: Isolation,
        profile: ExperimentProfile,
        keep_data: bool,
    ) -> Result<RunCtx> {
        let amqp = Connection::connect(&amqp_url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {amqp_url}"))?;
        let channel = amqp.create_channel().await.context("opening an AMQP channel")?;
        let db = zerodrop_ledger::connect(&database_url).await.with_context(|| format!("connecting to PostgreSQL at {database_url}"))?;
        Ok(RunCtx { run_id, out_dir, amqp_url, database_url, bin_dir, isolation, profile, keep_data, progress: Progress::new(), amqp, channel, db })
    }

    pub async fn close(self) {
        let _ = self.channel.close(200, "done").await;
        let _ = self.amqp.close(200, "done").await;
    }

    /// Runs one stage end to end. `index` keeps queue and schema names unique.
    pub async fn run_stage(&self, stage: Stage, index: usize) -> Result<StageRun> {
        let p = &self.profile;
        let name = stage.name.as_str();
        let short = self.run_id.replace('-', "");
        let topology = Topology::new(format!("zerodrop.{}.{}", self.run_id, name));
        let schema = format!("zd_{}_{}", short.to_lowercase(), index);
        topology.declare(&self.channel).await.context("declaring the stage's queues")?;
        zerodrop_ledger::create_schema(&self.db, &schema).await.context("creating the stage's ledger schema")?;

        let pod_logs_dir = format!("logs/{name}");
        let log_dir = self.out_dir.join(&pod_logs_dir);
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let base_env = vec![
            ("AMQP_URL".to_string(), self.amqp_url.clone()),
            ("DATABASE_URL".to_string(), self.database_url.clone()),
            ("ZD_QUEUE".to_string(), topology.queue.clone()),
            ("ZD_DB_SCHEMA".to_string(), schema.clone()),
            ("ZD_CAPACITY".to_string(), p.api_capacity.to_string()),
        ];
        let worker_env = vec![("ZD_JOB_WORK_MS".to_string(), p.job_work.as_millis().to_string())];
        let cfg = FleetConfig {
            api_replicas: p.api_replicas,
            worker_replicas: p.worker_replicas,
            propagation_delay: p.propagation_delay,
            bin_dir: self.bin_dir.clone(),
            log_dir: log_dir.clone(),
            base_env,
            worker_env,
            isolation: self.isolation,
            subnet: (index % 200) as u8 + 1,
        };
        self.progress.phase(format!("{name}: starting the fleet"));
        let rec = Arc::new(Recorder::default());
        let mut fleet = Fleet::up(cfg, stage.clone(), rec.clone()).await?;

        let live = Arc::new(Live::default());
        let stop_watch = CancellationToken::new();
        let svc = fleet.service();
        {
            let svc = svc.clone();
            let replicas = p.api_replicas;
            self.progress.watch(name.to_string(), live.clone(), move || format!("endpoints={}/{replicas}", svc.ready_endpoints()), stop_watch.clone());
        }
        rec.endpoints_now(svc.ready_endpoints());
        let load_profile = p.load.clone();
        let prefix = format!("{}-{}", self.run_id, name);
        let resolver: Arc<dyn zerodrop_load::Resolver> = svc.clone();
        let load_live = live.clone();
        let load = tokio::spawn(async move { zerodrop_load::run(&load_profile, resolver, &prefix, load_live).await });
        let load_started = now_ms();

        self.progress.phase("warm-up + steady");
        tokio::time::sleep(p.warmup + p.steady).await;
        self.progress.phase("rolling deploy");
        let trigger = now_ms();
        let rollout = fleet.rollout().await;
        let rollout_seconds = match &rollout {
            Ok(d) => d.as_secs_f64(),
            Err(_) => f64::NAN,
        };
        self.progress.phase("old pods terminating");
        fleet.wait_terminations().await;
        let roll_end = now_ms() + 1000;
        self.progress.phase("cool-down");
        let result = load.await.context("the load generator task failed")?;
        stop_watch.cancel();
        rollout.context("the rolling deploy failed")?;

        self.progress.phase("waiting for the queue to drain");
        let settled = self.wait_settled(&topology, &schema).await;
        let rec_jobs = zerodrop_ledger::reconcile(&self.db, &schema, &result.accepted_jobs).await.context("reconciling jobs against the ledger")?;
        let dead_lettered = topology.depths(&self.channel).await.map(|(_, d)| d as u64).unwrap_or(0);
        fleet.down().await;

        // One clock for everything: the load run's start.
        let origin = result.started_unix_ms as i64;
        let _ = load_started;
        let rel = |unix: i64| unix - origin;
        let us = |unix: i64| (rel(unix).max(0) as u64) * 1000;
        let steady_from = p.warmup.as_micros() as u64;
        let steady = Window { from_us: steady_from, to_us: steady_from + p.steady.as_micros() as u64 };
        let roll = Window { from_us: us(trigger), to_us: us(roll_end).min(p.load.duration.as_micros() as u64) };

        let events: Vec<PodEvent> = rec
            .events()
            .into_iter()
            .map(|e| PodEvent { t_ms: rel(e.unix_ms), pod: e.pod, app: e.app.to_string(), kind: e.kind, detail: e.detail })
            .collect();
        let endpoints = rec.endpoint_samples().into_iter().map(|(t, n)| EndpointSample { t_ms: rel(t), ready: n }).collect();
        let mut logs = Vec::new();
        let mut pods: Vec<(String, &'static str)> = Vec::new();
        for e in rec.events() {
            if e.kind == model::PodEventKind::Created && !pods.iter().any(|(n, _)| *n == e.pod) {
                pods.push((e.pod.clone(), e.app));
            }
        }
        for (pod, app) in &pods {
            logs.extend(evidence::read_pod_log(&log_dir.join(format!("{pod}.log")), pod, app, origin));
        }
        logs.sort_by_key(|l| l.t_ms);

        let jobs = Jobs {
            accepted: result.accepted_jobs.len() as u64,
            applied_rows: rec_jobs.applied_rows.max(0) as u64,
            lost: rec_jobs.lost.len() as u64,
            duplicated: rec_jobs.duplicated.len() as u64,
            extra_applications: rec_jobs.duplicated.iter().map(|(_, n)| (*n - 1).max(0) as u64).sum(),
            dead_lettered,
            lost_sample: rec_jobs.lost.iter().take(10).cloned().collect(),
            duplicated_sample: rec_jobs.duplicated.iter().take(10).map(|(id, _)| id.clone()).collect(),
            settled,
        };
        if !self.keep_data {
            let _ = topology.delete(&self.channel).await;
            let _ = zerodrop_ledger::drop_schema(&self.db, &schema).await;
        }
        Ok(StageRun {
            stage,
            load: result,
            steady,
            roll,
            rollout_seconds,
            endpoints,
            desired_endpoints: p.api_replicas,
            events,
            logs,
            jobs,
            pod_logs_dir,
        })
    }

    /// Waits until the work queue is empty and the ledger stopped growing, bounded.
    async fn wait_settled(&self, topology: &Topology, schema: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut last = -1i64;
        let mut stable_since = Instant::now();
        while Instant::now() < deadline {
            let ready = topology.depths(&self.channel).await.map(|(q, _)| q).unwrap_or(u32::MAX);
            let rows = zerodrop_ledger::total_rows(&self.db, schema).await.unwrap_or(-1);
            if rows != last {
                last = rows;
                stable_since = Instant::now();
            }
            if ready == 0 && stable_since.elapsed() > Duration::from_millis(1500) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }
}

/// The machine the run happened on, for the report.
pub fn machine() -> model::Machine {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let hostname = {
        let h = read("/proc/sys/kernel/hostname");
        if h.is_empty() { read("/etc/hostname") } else { h }
    };
    model::Machine {
        hostname,
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        os,
        kernel: read("/proc/sys/kernel/osrelease"),
    }
}

impl App {
    pub fn all() -> [App; 2] {
        [App::Api, App::Worker]
    }
}
