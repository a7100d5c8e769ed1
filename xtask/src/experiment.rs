//! One run of the experiment, on any [`Platform`]: for each stage a fresh fleet, load
//! across a rolling deploy, reconciliation of jobs against the ledger, and the raw
//! material for the report.

use crate::progress::Progress;
use anyhow::{Context, Result};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use zerodrop_evidence as evidence;
use zerodrop_jobs::Topology;
use zerodrop_load::Live;
use zerodrop_platform::profile::ExperimentProfile;
use zerodrop_platform::{now_ms, Platform, StageEnv};
use zerodrop_report::model::{self, EndpointSample, Jobs, PodEvent, StageRun, Window};
use zerodrop_stages::Stage;

/// How long before the rollout trigger the deploy window opens (see `run_stage`).
pub const DEPLOY_GUARD: Duration = Duration::from_secs(1);

/// What every stage of a run shares.
pub struct RunCtx<P: Platform> {
    pub run_id: String,
    pub out_dir: PathBuf,
    pub profile: ExperimentProfile,
    pub keep_data: bool,
    pub progress: Arc<Progress>,
    pub platform: P,
    /// A third-party client to run beside the load during the deploy.
    pub alongside: Option<crate::alongside::Alongside>,
    backing: crate::backing::Backing,
}

impl<P: Platform> RunCtx<P> {
    pub async fn new(
        run_id: String,
        out_dir: PathBuf,
        profile: ExperimentProfile,
        keep_data: bool,
        platform: P,
    ) -> Result<Self> {
        let backing = crate::backing::Backing::connect(&platform).await?;
        Ok(RunCtx {
            run_id,
            out_dir,
            profile,
            keep_data,
            progress: Progress::new(),
            platform,
            alongside: None,
            backing,
        })
    }

    pub async fn close(self) {
        self.backing.close().await;
    }

    /// Runs one stage end to end. `index` keeps queue, schema and addresses unique.
    /// On failure the fleet is still stopped before the error is returned.
    pub async fn run_stage(&mut self, stage: Stage, index: usize, repeat: u32) -> Result<StageRun> {
        let result = self.run_stage_inner(stage, index, repeat).await;
        if result.is_err() {
            let _ = self.platform.finish_stage().await;
        }
        result
    }

    async fn run_stage_inner(&mut self, stage: Stage, index: usize, repeat: u32) -> Result<StageRun> {
        let p = self.profile.clone();
        let name = stage.name.as_str();
        let topology = Topology::new(format!("zerodrop.{}.{}.{}", self.run_id, name, repeat));
        let schema = format!("zd_{}_{}", self.run_id.replace('-', "").to_lowercase(), index);
        topology.declare(&self.backing.channel).await.context("declaring the stage's queues")?;
        zerodrop_ledger::create_schema(&self.backing.db, &schema)
            .await
            .context("creating the stage's ledger schema")?;
        let pod_logs_dir = if repeat == 0 { format!("logs/{name}") } else { format!("logs/{name}.{}", repeat + 1) };
        let log_dir = self.out_dir.join(&pod_logs_dir);
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let env = StageEnv {
            queue: topology.queue.clone(),
            schema: schema.clone(),
            api_replicas: p.api_replicas,
            worker_replicas: p.worker_replicas,
            api_capacity: p.api_capacity,
            job_work: p.job_work,
            index,
            listen_queues: false,
            api_env: Vec::new(),
            worker_env: Vec::new(),
        };

        self.progress.phase(format!("{name}: starting the fleet"));
        self.platform.deploy(&stage, &env, &log_dir).await?;
        if let Some(hint) = self.platform.client_hint() {
            eprintln!("[{name}] {hint}");
        }
        let live = Arc::new(Live::default());
        let endpoints = Arc::new(AtomicU32::new(self.platform.ready_endpoints()));
        let stop_watch = CancellationToken::new();
        {
            let endpoints = endpoints.clone();
            let replicas = p.api_replicas;
            let label = move || format!("endpoints={}/{replicas}", endpoints.load(Ordering::Relaxed));
            self.progress.watch(name.to_string(), live.clone(), label, stop_watch.clone());
        }
        let backlog =
            self.seed_backlog(&topology, &format!("{}-{}-{}-b", self.run_id, name, repeat), p.job_backlog).await?;
        let load =
            self.platform.start_load(&p.load, &format!("{}-{}-{}", self.run_id, name, repeat), live.clone()).await?;

        self.progress.phase("warm-up + steady");
        self.sleep_tracking(p.warmup + p.steady, &endpoints).await;
        self.progress.phase("rolling deploy");
        let trigger = now_ms();
        let third_party = self.start_alongside(stage.name, &log_dir, &pod_logs_dir);
        let rollout = self.platform.rollout().await;
        endpoints.store(self.platform.ready_endpoints(), Ordering::Relaxed);
        self.progress.phase("old pods terminating");
        self.platform.wait_terminations().await?;
        endpoints.store(self.platform.ready_endpoints(), Ordering::Relaxed);
        let roll_end = now_ms() + 1000;
        self.progress.phase("cool-down");
        let mut result = load.await.context("the load generator task failed")??;
        let third_party = match third_party {
            Some(h) => Some(h.await.context("the third-party client task failed")??),
            None => None,
        };
        result.accepted_jobs.extend(backlog);
        stop_watch.cancel();
        let rollout_seconds = rollout.context("the rolling deploy failed")?.as_secs_f64();

        self.progress.phase("waiting for the queue to drain");
        let settled = self.backing.wait_settled(&topology, &schema).await;
        let rec_jobs = zerodrop_ledger::reconcile(&self.backing.db, &schema, &result.accepted_jobs)
            .await
            .context("reconciling jobs against the ledger")?;
        let dead_lettered = topology.depths(&self.backing.channel).await.map(|(_, d)| d as u64).unwrap_or(0);
        let observed = self.platform.finish_stage().await?;

        // One clock for everything: the load run's start.
        let origin = result.started_unix_ms as i64;
        let rel = |unix: i64| unix - origin;
        let us = |unix: i64| (rel(unix).max(0) as u64) * 1000;
        // Windows are by intended start. A request sent just before the trigger can
        // still be cut by the deploy, so the deploy window opens one guard interval
        // (longer than any request in the mix) before the trigger, and the steady
        // window ends there: nothing the deploy touched counts as steady.
        let guard = DEPLOY_GUARD.as_micros() as u64;
        let steady_from = p.warmup.as_micros() as u64;
        let deploy_from = us(trigger).saturating_sub(guard).max(steady_from);
        let steady = Window { from_us: steady_from, to_us: deploy_from };
        let load_end = p.load.duration.as_micros() as u64;
        // Every stage is judged over the same deploy window, from its trigger, so
        // counts and rates compare across stages; it is sized for the slowest stage.
        let window_end = deploy_from + p.roll.as_micros() as u64;
        if us(roll_end) > window_end {
            eprintln!(
                "warning: {name}: the deploy outlasted the {} s deploy window by {:.1} s; what happened after the window is not counted",
                p.roll.as_secs(),
                (us(roll_end) - window_end) as f64 / 1e6
            );
        }
        let roll = Window { from_us: deploy_from, to_us: window_end.min(load_end) };
        let events = observed
            .events
            .into_iter()
            .map(|e| PodEvent {
                t_ms: rel(e.unix_ms),
                pod: e.pod,
                app: e.app.to_string(),
                kind: e.kind,
                detail: e.detail,
            })
            .collect();
        let endpoints =
            observed.endpoints.into_iter().map(|(t, n)| EndpointSample { t_ms: rel(t), ready: n }).collect();
        let mut logs: Vec<_> =
            observed.pod_logs.iter().flat_map(|l| evidence::read_pod_log(&l.path, &l.pod, l.app, origin)).collect();
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
            let _ = topology.delete(&self.backing.channel).await;
            let _ = zerodrop_ledger::drop_schema(&self.backing.db, &schema).await;
        }
        Ok(StageRun {
            stage,
            repeat,
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
            third_party: third_party.map(|mut t| {
                t.started_ms -= origin;
                t.ended_ms -= origin;
                t
            }),
        })
    }

    /// Starts `--alongside` for this stage at the rollout trigger; its times come
    /// back in unix ms (the caller makes them relative).
    fn start_alongside(
        &self,
        stage: zerodrop_stages::StageName,
        log_dir: &std::path::Path,
        rel_dir: &str,
    ) -> Option<tokio::task::JoinHandle<Result<crate::alongside::ThirdPartyRun>>> {
        let a = self.alongside.as_ref().filter(|a| a.applies_to(stage))?;
        let Some(url) = self.platform.service_url() else {
            eprintln!("warning: --alongside: this platform offers no Service address to aim a client at");
            return None;
        };
        let template = a.template.clone();
        let out = log_dir.join("third-party.txt");
        let rel = format!("{rel_dir}/third-party.txt");
        let limit = self.profile.roll + Duration::from_secs(30);
        Some(tokio::spawn(async move {
            let started_ms = now_ms();
            let (exit_code, command) = crate::alongside::run(&template, &url, &out, limit).await?;
            let ended_ms = now_ms();
            let counts = std::fs::read_to_string(&out).ok().and_then(|t| crate::alongside::parse_hey(&t));
            Ok(crate::alongside::ThirdPartyRun { command, started_ms, ended_ms, exit_code, output: rel, counts })
        }))
    }

    /// Puts `n` jobs in the queue before the load starts, published with confirms:
    /// the work the workers are chewing through when the deploy comes. With an
    /// unlimited prefetch the broker pushes it all into the workers' buffers, which is
    /// what auto-ack then loses; their ids are reconciled like any accepted job.
    async fn seed_backlog(&self, topology: &Topology, prefix: &str, n: u32) -> Result<Vec<String>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.progress.phase(format!("seeding a backlog of {n} jobs"));
        let ch = self.backing.amqp.create_channel().await.context("opening a channel for the backlog")?;
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        let mut ids = Vec::with_capacity(n as usize);
        let mut pending = Vec::with_capacity(n as usize);
        for i in 0..n {
            let job = zerodrop_jobs::Job { id: format!("{prefix}-{i}"), amount: 1 };
            let props = lapin::BasicProperties::default().with_delivery_mode(2);
            let confirm = ch
                .basic_publish(
                    "".into(),
                    topology.queue.as_str().into(),
                    lapin::options::BasicPublishOptions::default(),
                    &job.to_payload(),
                    props,
                )
                .await
                .context("publishing the backlog")?;
            pending.push(confirm);
            ids.push(job.id);
        }
        for c in pending {
            if !matches!(c.await.context("waiting for the broker's confirm")?, lapin::Confirmation::Ack(_)) {
                anyhow::bail!("the broker refused a backlog job");
            }
        }
        let _ = ch.close(200, "backlog seeded".into()).await;
        Ok(ids)
    }

    async fn sleep_tracking(&self, d: Duration, endpoints: &AtomicU32) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            endpoints.store(self.platform.ready_endpoints(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250).min(end.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// The machine the run happened on, for the report.
pub fn machine() -> model::Machine {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let hostname = match read("/proc/sys/kernel/hostname") {
        h if h.is_empty() => read("/etc/hostname"),
        h => h,
    };
    model::Machine {
        hostname,
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        os,
        kernel: read("/proc/sys/kernel/osrelease"),
    }
}
