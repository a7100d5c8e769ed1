//! The kind platform: the same experiment on a real Kubernetes cluster (kind, in
//! Docker, or with `--registry` any cluster a kube context reaches). The runner builds
//! the images, loads them into the nodes (kind) or pushes them to the registry the
//! cluster pulls from, and drives the cluster through its API with kube-rs: server-side apply, its own rollout
//! condition, watches on pods and EndpointSlices, log streams, port-forwards. The load
//! generator runs inside the cluster as a Job against the api Service's ClusterIP.
//!
//! Everything the report needs comes out through the [`Platform`] interface; nothing
//! downstream knows which platform produced it.

pub mod access;
pub mod apply;
pub mod cluster;
pub mod endpoints;
#[cfg(test)]
mod fake_api;
pub mod fault;
pub mod fleet_control;
pub mod forward;
pub mod guardian;
#[cfg(test)]
mod join_tests;
mod keepalive;
pub mod load_job;
mod load_run;
pub mod log_stream;
pub mod long_lived;
pub mod objects;
pub mod placement;
pub mod plan;
pub mod pod_watch;
pub mod pods;
pub mod prereq;
pub mod reconfigure;
pub mod rollout;
pub mod state;
pub mod two_versions;

use crate::{LoadRun, Observed, Platform, StageEnv};
use anyhow::{bail, Context, Result};
use forward::Forward;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, LogParams};
use kube::config::KubeConfigOptions;
use kube::Client;
use objects::{container_env, find, forward_target, rewrite_host_port, url_host_port, Rendered};
use state::Shared;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zerodrop_evidence::GuardianCheck;
use zerodrop_load::{Live, Profile};
use zerodrop_stages::{Stage, StageName};

/// The field manager of every apply and patch.
pub const FIELD_MANAGER: &str = "zerodrop";
/// The cluster `kind create cluster` makes when no --context is given.
pub const CLUSTER: &str = "zerodrop";

/// How one kind run is set up.
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// The kind cluster's name (`zerodrop`, or taken from `--context kind-<name>`;
    /// unused for a context that is not kind).
    pub cluster: String,
    /// `--context`: an existing cluster; `None` creates (and later deletes) one.
    pub context: Option<String>,
    /// `--registry`: a prefix (`ghcr.io/me`, `registry.local:5000`) the images are
    /// pushed under and pulled from; `None` loads them onto kind's nodes instead.
    pub registry: Option<String>,
    /// `--keep`: leave the cluster (or the namespace) up at the end.
    pub keep: bool,
    pub namespace: String,
    pub image_tag: String,
    pub run_id: String,
    /// The run's report directory (the kind config file is written there).
    pub out_dir: PathBuf,
    /// The workspace root: the images' build context.
    pub root: PathBuf,
}

/// The run's own namespace, `zerodrop-<run id>` (a DNS-1123 label): a run never
/// shares one with an earlier run's leftovers, or with another run on the cluster.
pub fn run_namespace(run_id: &str) -> String {
    let base = zerodrop_manifests::RenderOptions::default().namespace;
    let id: String = run_id.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut ns = format!("{base}-{id}");
    ns.truncate(63);
    ns.trim_end_matches('-').to_string()
}

/// Deletes namespace `ns` and waits until the API server no longer has it (its
/// objects are finalized first), up to `limit`.
pub async fn delete_namespace(client: &Client, ns: &str, limit: Duration) -> Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    match api.delete(ns, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
    }
    let until = Instant::now() + limit;
    loop {
        match api.get_opt(ns).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) | Err(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(500)).await,
            Ok(Some(_)) => bail!("namespace {ns} is still terminating after {limit:?}"),
            Err(e) => return Err(e).with_context(|| format!("waiting for namespace {ns} to go")),
        }
    }
}

impl KindOptions {
    pub fn new(
        context: Option<String>,
        keep: bool,
        run_id: String,
        image_tag: String,
        out_dir: PathBuf,
    ) -> KindOptions {
        let cluster = context.as_deref().and_then(|c| c.strip_prefix("kind-")).unwrap_or(CLUSTER).to_string();
        KindOptions {
            cluster,
            context,
            registry: None,
            keep,
            namespace: run_namespace(&run_id),
            image_tag,
            run_id,
            out_dir,
            root: crate::workspace::root(),
        }
    }

    /// `--registry <prefix>`: images are pushed there and the manifests name them so.
    pub fn with_registry(mut self, registry: Option<String>) -> KindOptions {
        self.registry = registry.map(|r| r.trim().trim_end_matches('/').to_string());
        self
    }

    pub fn creates_cluster(&self) -> bool {
        self.context.is_none()
    }

    /// The cluster is a kind cluster: created here, or named by a `kind-<name>` context.
    pub fn is_kind(&self) -> bool {
        self.context.as_deref().is_none_or(|c| c.starts_with("kind-"))
    }

    /// The `kind` CLI is needed: to create the cluster, or to load the images (no
    /// --registry). With --registry and an existing context it is not.
    pub fn uses_kind_cli(&self) -> bool {
        self.creates_cluster() || self.registry.is_none()
    }

    /// The flag combinations a run can work with, checked before anything else.
    pub fn validate(&self) -> Result<()> {
        if let Some(r) = &self.registry {
            if r.is_empty() || r.contains("://") || r.chars().any(char::is_whitespace) || r.contains('@') {
                bail!("--registry {r:?} is not an image prefix: give a registry host and path such as `ghcr.io/you` or `registry.local:5000`");
            }
        }
        if let (Some(ctx), None) = (&self.context, &self.registry) {
            if !self.is_kind() {
                bail!(
                    "--context {ctx} is not a kind cluster's context (kind-<name>), and a non-kind cluster cannot see \
                     local images; pass --registry <prefix> that the cluster can pull from (e.g. ghcr.io/you or \
                     registry.local:5000): the images are then pushed there with `docker push`"
                );
            }
        }
        Ok(())
    }

    /// The kubeconfig context used for every API call (never the current context).
    pub fn context_name(&self) -> String {
        self.context.clone().unwrap_or_else(|| format!("kind-{}", self.cluster))
    }

    pub fn config_path(&self) -> PathBuf {
        self.out_dir.join("kind-cluster.yaml")
    }

    pub fn render_options(&self, queue: &str, schema: &str) -> zerodrop_manifests::RenderOptions {
        zerodrop_manifests::RenderOptions {
            namespace: self.namespace.clone(),
            image_tag: self.image_tag.clone(),
            queue: queue.into(),
            schema: schema.into(),
            image_registry: self.registry.clone(),
            ..zerodrop_manifests::RenderOptions::default()
        }
    }

    pub fn stage_render(&self, env: &StageEnv) -> zerodrop_manifests::RenderOptions {
        zerodrop_manifests::RenderOptions {
            api_replicas: env.api_replicas,
            worker_replicas: env.worker_replicas,
            api_capacity: env.api_capacity,
            job_work_ms: env.job_work.as_millis() as u64,
            listen_queue_sidecar: env.listen_queues,
            api_env: env.api_env.clone(),
            worker_env: env.worker_env.clone(),
            ..self.render_options(&env.queue, &env.schema)
        }
    }
}

/// The cluster's life around the experiment: what setup created is what teardown
/// removes, whatever way the run ends.
pub struct Session {
    pub opts: KindOptions,
    /// `kind create cluster` was started, so `kind delete cluster` is ours to run.
    cluster_started: bool,
}

impl Session {
    pub fn new(opts: KindOptions) -> Session {
        Session { opts, cluster_started: false }
    }

    /// Creates the cluster (unless --context), checks the cluster (version, RBAC)
    /// before any image is built, then builds the images and loads them (or, with
    /// --registry, pushes them).
    pub async fn setup(&mut self) -> Result<()> {
        let cmds = cluster::setup_commands(&self.opts)?;
        if self.opts.creates_cluster() {
            let path = self.opts.config_path();
            std::fs::write(&path, zerodrop_manifests::kind_cluster_config())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let create = cluster::create_cluster(&self.opts);
        let (first, rest): (Vec<_>, Vec<_>) = cmds.into_iter().partition(|c| *c == create);
        for c in first {
            self.cluster_started = true;
            tokio::task::spawn_blocking(move || c.run()).await.context("a setup command's thread failed")??;
        }
        check_cluster(&self.opts).await?;
        for c in rest {
            tokio::task::spawn_blocking(move || c.run()).await.context("a setup command's thread failed")??;
        }
        Ok(())
    }

    /// Deletes what this run created, unless --keep.
    pub async fn teardown(&self) {
        let ctx = self.opts.context_name();
        if self.opts.keep {
            eprintln!(
                "[kind] --keep: left up. Inspect with `kubectl --context {ctx} -n {} get pods`",
                self.opts.namespace
            );
            if self.cluster_started {
                eprintln!("[kind] delete it with `{}`", cluster::delete_cluster(&self.opts).display());
            }
            return;
        }
        if self.cluster_started {
            let c = cluster::delete_cluster(&self.opts);
            match tokio::task::spawn_blocking(move || c.run()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: deleting the cluster: {e:#}"),
                Err(e) => eprintln!("warning: deleting the cluster: {e}"),
            }
        } else if self.opts.context.is_some() {
            let ns = self.opts.namespace.clone();
            let deleted = async {
                let client = connect(&ctx).await?;
                delete_namespace(&client, &ns, Duration::from_secs(180)).await
            };
            match deleted.await {
                Ok(()) => eprintln!("[kind] deleted namespace {ns} (context {ctx}; the cluster stays)"),
                Err(e) => eprintln!("warning: {e:#}"),
            }
        }
    }
}

/// A kube-rs client for `context` of the kubeconfig (KUBECONFIG or ~/.kube/config).
pub async fn connect(context: &str) -> Result<Client> {
    let opts = KubeConfigOptions { context: Some(context.to_string()), ..KubeConfigOptions::default() };
    let config =
        kube::Config::from_kubeconfig(&opts).await.with_context(|| format!("loading kubeconfig context {context}"))?;
    Client::try_from(config).with_context(|| format!("creating a Kubernetes client for context {context}"))
}

/// What the report says about propagation on a cluster: nothing here applies a
/// delay; the cluster's own, measured per api pod from its deletion (pod watch) to
/// its endpoint leaving the api Service's EndpointSlices (slice watch). That is the
/// control plane's view; clients see the change later, and the text says so.
pub fn measured_propagation(delays_ms: &[i64]) -> zerodrop_evidence::Propagation {
    zerodrop_evidence::Propagation {
        configured_ms: None,
        measured: zerodrop_evidence::MeasuredDelay::of(delays_ms),
        what: "the cluster's own delay from an api pod turning terminating (pod watch) to its endpoint turning \
               not-ready or leaving the api Service's EndpointSlices (EndpointSlice watch), on the runner's clock. \
               This is the control plane: clients stop reaching the pod only once kube-proxy on their own node has \
               rewritten its rules, later and not observed here, so this understates what clients see; the pods' \
               `listener_closed` log step (connections accepted after termination began) is the pod-side measure"
            .into(),
    }
}

/// [`measured_propagation`] with where the load ran (see [`placement`]).
pub fn measured_propagation_placed(
    delays_ms: &[i64],
    placements: &[placement::Placement],
) -> zerodrop_evidence::Propagation {
    let mut p = measured_propagation(delays_ms);
    if let Some(s) = placement::summary(placements) {
        p.what = format!("{}; {s}", p.what);
    }
    p
}

/// The stage's record as its watches left it: the events, each endpoint removal with
/// its delay after the pod turned terminating, in time order; the ready-endpoint
/// samples; the pods' logs.
pub fn observed(s: &state::StageState) -> Observed {
    let mut events = s.events.clone();
    endpoints::annotate_removals(&mut events);
    events.sort_by_key(|e| e.unix_ms);
    Observed { events, endpoints: s.samples.clone(), pod_logs: s.pod_logs.clone() }
}

/// Stops every log stream and watch of a stage (`stop`) and waits for them to end.
async fn cut_streams(shared: &Shared, stop: &CancellationToken, watchers: Vec<JoinHandle<()>>) {
    stop.cancel();
    let tasks = shared.with(|s| {
        let mut t = std::mem::take(&mut s.log_tasks);
        t.extend(s.load.log_task.take());
        t
    });
    for t in tasks.into_iter().chain(watchers) {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(15), t).await.is_err() {
            abort.abort();
        }
    }
}

/// After the load pod started or exited: requests are flowing if its log had a line
/// saying the load began ([`load_job::load_began`]). A pod that exited before its
/// followed stream showed one gets its whole log read (the stream may have opened too
/// early, or broken off) before the Job is declared silent, or stopped before its load
/// (its data-plane gate failed); what that read finds replaces the streamed file.
async fn confirm_started(pods: &Api<Pod>, shared: &Shared, job: &str) -> Result<()> {
    let (started, exit, pod, path) =
        shared.with(|s| (s.load.started, s.load.exit.clone(), s.load.pod.clone(), s.load.log_path.clone()));
    if started {
        return Ok(());
    }
    let exit = exit.map(|e| e.describe()).unwrap_or_default();
    let Some(pod) = pod else { bail!("the load Job {job} ended before its pod was seen: {exit}") };
    let full = pods.logs(&pod, &LogParams::default()).await.with_context(|| format!("reading the log of {pod}"))?;
    if full.trim().is_empty() {
        bail!("the load Job {job} ended before printing anything: {exit} (its pod {pod}'s whole log is empty)");
    }
    if let Some(path) = path {
        std::fs::write(&path, &full).with_context(|| format!("writing {}", path.display()))?;
    }
    if !full.lines().any(load_job::load_began) {
        let lines: Vec<&str> = full.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        bail!("the load Job {job} ended before its load began: {exit}; the last lines of {pod}'s log:\n{tail}");
    }
    shared.with(|s| s.load.started = true);
    Ok(())
}

/// What the cluster must allow before minutes go into image builds: a Kubernetes
/// new enough for the manifests, and every permission the run uses.
pub async fn check_cluster(opts: &KindOptions) -> Result<()> {
    let ctx = opts.context_name();
    let client = connect(&ctx).await?;
    let v = server_version(&client, &ctx).await?;
    access::preflight(&client, &ctx, &opts.namespace).await?;
    eprintln!(
        "[kind] context {ctx}: Kubernetes {}; all {} permissions the run needs are granted",
        v.git_version,
        access::NEEDS.len()
    );
    Ok(())
}

/// The API server's version, refused when older than the manifests need
/// ([`prereq::MIN_KUBERNETES`]).
pub async fn server_version(client: &Client, ctx: &str) -> Result<k8s_openapi::apimachinery::pkg::version::Info> {
    let v =
        client.apiserver_version().await.with_context(|| format!("the API server of context {ctx} does not answer"))?;
    prereq::check_server_version(&v).with_context(|| format!("context {ctx}"))?;
    Ok(v)
}

/// One stage's fleet as the platform keeps track of it.
struct Fleet {
    stage: Stage,
    env: StageEnv,
    render: zerodrop_manifests::RenderOptions,
    objects: Vec<Rendered>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    watchers: Vec<JoinHandle<()>>,
    load_job: Option<String>,
}

pub struct KindPlatform {
    opts: KindOptions,
    client: Client,
    server_version: String,
    amqp_url: String,
    database_url: String,
    /// Kept open for the platform's lifetime; closed when it is dropped.
    #[allow(dead_code)]
    forwards: Vec<Forward>,
    /// Bound on one rolling deploy and on the old pods' exits.
    roll_timeout: Duration,
    fleet: Option<Fleet>,
    /// Terminating -> endpoint-removed delay (ms) of every api pod of every stage so far.
    removal_delays: Vec<i64>,
    /// Where each stage's load pod ran relative to its api pods.
    placements: Vec<placement::Placement>,
    /// Each fleet from now on carries the broker relay (`fault.rs`, chaos).
    broker_relay: bool,
}

const DEPLOYMENTS: [&str; 2] = ["api", "worker"];

impl KindPlatform {
    /// Connects, applies the base objects (namespace, RabbitMQ, PostgreSQL), waits for
    /// them, and opens the port-forwards the runner reconciles through.
    pub async fn connect(opts: KindOptions, roll_timeout: Duration) -> Result<KindPlatform> {
        let ctx = opts.context_name();
        let client = connect(&ctx).await?;
        let v = server_version(&client, &ctx).await?;
        let ns = opts.namespace.clone();
        let base = Rendered::all(&zerodrop_manifests::base(&opts.render_options("-", "-")));
        eprintln!("[kind] context {ctx}: Kubernetes {}; applying namespace {ns}, rabbitmq, postgres", v.git_version);
        let applied = apply::apply_all(&client, &ns, &base).await?;
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
        for (o, a) in base.iter().zip(&applied) {
            if o.kind == "Deployment" {
                // First start pulls the images from Docker Hub: minutes, not seconds.
                rollout::wait_complete(&deployments, &o.name, a.generation, Duration::from_secs(600)).await?;
            }
        }
        // The apps' own in-cluster URLs, with the host swapped for a port-forward.
        let probe =
            Rendered::all(&zerodrop_manifests::stage(&Stage::get(StageName::Naive), &opts.render_options("-", "-")));
        let amqp_in = find(&probe, "Deployment", "api")
            .and_then(|d| container_env(&d.json, "AMQP_URL"))
            .context("the api Deployment sets no AMQP_URL")?;
        let db_in = find(&probe, "Deployment", "worker")
            .and_then(|d| container_env(&d.json, "DATABASE_URL"))
            .context("the worker Deployment sets no DATABASE_URL")?;
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        let mut forwards = Vec::new();
        let mut local = Vec::new();
        for url in [&amqp_in, &db_in] {
            let (host, port) = url_host_port(url)?;
            let t = forward_target(&base, &host, port)?;
            let f = Forward::start(pods.clone(), t.pod_selector.clone(), t.container_port).await?;
            eprintln!("[kind] port-forward {} -> {}:{}", f.local, t.service, t.container_port);
            local.push(rewrite_host_port(url, &f.local.to_string())?);
            forwards.push(f);
        }
        let database_url = local.pop().context("no database URL")?;
        let amqp_url = local.pop().context("no broker URL")?;
        Ok(KindPlatform {
            opts,
            client,
            server_version: v.git_version,
            amqp_url,
            database_url,
            forwards,
            roll_timeout,
            fleet: None,
            removal_delays: Vec::new(),
            placements: Vec::new(),
            broker_relay: false,
        })
    }

    fn fleet(&self) -> Result<&Fleet> {
        self.fleet.as_ref().context("no fleet deployed")
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.opts.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.opts.namespace)
    }

    async fn wait_or<F: FnMut(&mut state::StageState) -> bool>(shared: &Shared, limit: Duration, done: F) -> bool {
        tokio::time::timeout(limit, shared.wait_for(done)).await.is_ok()
    }
}

impl Platform for KindPlatform {
    fn describe(&self) -> String {
        let pulled = self.opts.registry.as_deref().map(|r| format!(", pulled from {r}")).unwrap_or_default();
        if self.opts.is_kind() {
            format!(
                "kind (cluster {}, context {}, Kubernetes {}, images tagged {}{pulled})",
                self.opts.cluster,
                self.opts.context_name(),
                self.server_version,
                self.opts.image_tag
            )
        } else {
            format!(
                "Kubernetes (context {}, {}, images tagged {}{pulled})",
                self.opts.context_name(),
                self.server_version,
                self.opts.image_tag
            )
        }
    }

    fn amqp_url(&self) -> &str {
        &self.amqp_url
    }

    fn propagation(&self) -> Option<zerodrop_evidence::Propagation> {
        Some(measured_propagation_placed(&self.removal_delays, &self.placements))
    }

    fn database_url(&self) -> &str {
        &self.database_url
    }

    async fn deploy(&mut self, stage: &Stage, env: &StageEnv, log_dir: &Path) -> Result<()> {
        let ns = self.opts.namespace.clone();
        apply::delete_fleet(&self.client, &ns, &DEPLOYMENTS, &[], Duration::from_secs(120))
            .await
            .context("removing a leftover fleet")?;
        let shared = Arc::new(Shared::default());
        shared.with(|s| s.pre_stop_ms = stage.pod.pre_stop.as_millis() as u64);
        let stop = CancellationToken::new();
        let watchers = vec![
            pod_watch::spawn_watch(self.pods(), shared.clone(), log_dir.to_path_buf(), stop.clone()),
            endpoints::spawn_watch(
                Api::<EndpointSlice>::namespaced(self.client.clone(), &ns),
                "api",
                shared.clone(),
                stop.clone(),
            ),
        ];
        let render =
            zerodrop_manifests::RenderOptions { broker_relay: self.broker_relay, ..self.opts.stage_render(env) };
        let objects = Rendered::all(&zerodrop_manifests::stage(stage, &render));
        self.fleet = Some(Fleet {
            stage: stage.clone(),
            env: env.clone(),
            render,
            objects: objects.clone(),
            shared: shared.clone(),
            stop,
            watchers,
            load_job: None,
        });
        // Both watches must be listing before the first pod exists, or its creation
        // would be timestamped late.
        if !Self::wait_or(&shared, Duration::from_secs(30), |s| s.synced >= 2).await {
            bail!("the pod and EndpointSlice watches did not start within 30 s");
        }
        let applied = apply::apply_all(&self.client, &ns, &objects).await?;
        let api = self.deployments();
        let limit = Duration::from_secs(180);
        for (o, a) in objects.iter().zip(&applied) {
            if o.kind == "Deployment" {
                if let Err(e) = rollout::wait_complete(&api, &o.name, a.generation, limit).await {
                    let pods = shared.with(|s| s.pods.not_ready());
                    return Err(e).with_context(|| {
                        format!(
                            "stage {}: pods not ready: {}",
                            stage.name,
                            if pods.is_empty() { "none".into() } else { pods.join("; ") }
                        )
                    });
                }
            }
        }
        let want = env.api_replicas;
        if !Self::wait_or(&shared, Duration::from_secs(60), |s| s.samples.last().map(|(_, n)| *n) == Some(want)).await {
            bail!("the api Service did not reach {want} ready endpoints within 60 s of the rollout");
        }
        Ok(())
    }

    async fn start_load(&mut self, profile: &Profile, job_prefix: &str, live: Arc<Live>) -> Result<LoadRun> {
        let limit = profile.duration + profile.request_timeout + Duration::from_secs(120);
        let args = |target: &str, awaited: &[String]| load_job::args(profile, target, job_prefix, awaited);
        self.start_load_job(args, live, limit).await
    }

    fn ready_endpoints(&self) -> u32 {
        self.fleet.as_ref().map(|f| f.shared.ready_endpoints.load(Ordering::Relaxed)).unwrap_or(0)
    }

    async fn rollout(&mut self) -> Result<Duration> {
        self.fleet()?;
        let api = self.deployments();
        let at =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let t0 = Instant::now();
        let mut generations = Vec::new();
        for d in DEPLOYMENTS {
            generations.push((d, rollout::restart(&api, d, &at).await?));
        }
        let waits = generations.iter().map(|(d, g)| rollout::wait_complete(&api, d, *g, self.roll_timeout));
        futures::future::try_join_all(waits).await?;
        Ok(t0.elapsed())
    }

    async fn wait_terminations(&mut self) -> Result<()> {
        let f = self.fleet()?;
        let limit = f.stage.pod.grace + Duration::from_secs(60);
        if !Self::wait_or(&f.shared, limit, |s| s.pods.awaiting_exit().is_empty()).await {
            let left = f.shared.with(|s| s.pods.awaiting_exit());
            bail!("pods still terminating after {limit:?}: {}", left.join(", "));
        }
        Ok(())
    }

    async fn finish_stage(&mut self) -> Result<Observed> {
        let Some(f) = self.fleet.take() else { return Ok(Observed::default()) };
        // What the stage showed, before the teardown adds its own kills.
        let (observed, placed) = f.shared.with(|s| {
            let placed = s.load.job.is_some().then(|| placement::Placement::of(s.load.node.as_deref(), &s.api_nodes));
            (observed(s), placed)
        });
        if let Some(p) = placed {
            eprintln!("[kind] {}: {}", f.stage.name, p.describe());
            self.placements.push(p);
        }
        // The stage ends here: the log streams are cut and the watches stopped before
        // the fleet is deleted, so the surviving pods' shutdown after the delete never
        // enters this stage's logs (its events already stopped at the snapshot).
        cut_streams(&f.shared, &f.stop, f.watchers).await;
        let jobs: Vec<String> = f.load_job.iter().cloned().collect();
        let down =
            apply::delete_fleet(&self.client, &self.opts.namespace, &DEPLOYMENTS, &jobs, Duration::from_secs(120))
                .await;
        let delays = endpoints::removal_delays(&observed.events);
        self.removal_delays.extend(delays.iter().map(|(_, d)| *d));
        if !delays.is_empty() {
            let mut ms: Vec<i64> = delays.iter().map(|(_, d)| *d).collect();
            ms.sort_unstable();
            eprintln!(
                "[kind] {}: terminating -> endpoint removed: {} pods, {}..{} ms (median {} ms)",
                f.stage.name,
                ms.len(),
                ms[0],
                ms[ms.len() - 1],
                ms[ms.len() / 2]
            );
        }
        if let Err(e) = down {
            // The next deploy removes leftovers before it starts; the data stands.
            eprintln!("warning: stopping the {} fleet: {e:#}", f.stage.name);
        }
        Ok(observed)
    }

    async fn guardian_exercise(&mut self, log_dir: &Path) -> Result<GuardianCheck> {
        guardian::run(&self.client, &self.opts, &self.amqp_url, log_dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake_api::Reply;

    fn exited_silently(path: &Path) -> Arc<Shared> {
        let shared = Arc::new(Shared::default());
        shared.with(|s| {
            s.load.job = Some("load-0-20261123-130150".into());
            s.load.pod = Some("load-0-20261123-130150-x7k2m".into());
            s.load.log_path = Some(path.to_path_buf());
            s.load.exit = Some(pods::Terminated { exit_code: 0, signal: None, reason: Some("Completed".into()) });
        });
        std::fs::write(path, "").unwrap(); // what the too-early stream left
        shared
    }

    /// Defect 1 (issue #8), the load Job: its pod exited (exit code 0) while the
    /// followed stream, opened too early, had shown nothing. The whole log, read once
    /// more, has the run: the stage goes on instead of "ended before printing anything".
    #[tokio::test]
    async fn a_load_job_is_silent_only_if_its_whole_log_is_empty() {
        let full = format!(
            "gate: data plane carries 3/3 endpoints after 7 probes, 160 ms\nload begins: 200 rps for 37s to 10.96.0.12:80\n   1s  sent 200  ok 200  errors 0\n{} 1 chunks, 2 bytes, fnv1a64 0 ---\n",
            load_job::BEGIN,
        );
        let body = full.clone();
        let (client, requests) = fake_api::client(move |req| {
            if req.starts_with("GET /api/v1/namespaces/zerodrop/pods/load-0-20261123-130150-x7k2m/log") {
                Reply::ok(body.clone())
            } else {
                Reply::not_found()
            }
        });
        let path = std::env::temp_dir().join(format!("zerodrop-kind-{}-load.log", std::process::id()));
        let shared = exited_silently(&path);
        let pods = Api::<Pod>::namespaced(client, "zerodrop");
        confirm_started(&pods, &shared, "load-0-20261123-130150").await.unwrap();
        assert!(shared.with(|s| s.load.started));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), full);
        assert!(!requests.lock().unwrap()[0].contains("follow=true"), "the whole log, not a followed stream");

        // A pod whose whole log is empty did print nothing.
        let (client, _) = fake_api::client(|_| Reply::ok(""));
        let shared = exited_silently(&path);
        let err = confirm_started(&Api::namespaced(client, "zerodrop"), &shared, "load-0-20261123-130150")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ended before printing anything: exit code 0"), "{err}");
        assert!(err.contains("whole log is empty"), "{err}");

        // Issue 15, item 4: a pod whose data-plane gate failed printed only the gate's
        // lines and its error; that is not a load that ran, and the error says why.
        let gate_failed =
            "gate: awaiting 3 pods through 10.96.0.12:80 (GET /healthz on a new connection each): a, b, c\n\
                           gate: a answered (1/3) after 1 probes, 2 ms\n\
                           Error: no load sent: the api Service's data plane does not reach every awaited pod\n";
        let (client, _) = fake_api::client(move |_| Reply::ok(gate_failed));
        let shared = exited_silently(&path);
        shared.with(|s| {
            s.load.exit = Some(pods::Terminated { exit_code: 1, signal: None, reason: Some("Error".into()) })
        });
        let err = confirm_started(&Api::namespaced(client, "zerodrop"), &shared, "load-0-20261123-130150")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ended before its load began: exit code 1"), "{err}");
        assert!(err.contains("data plane does not reach every awaited pod"), "{err}");
        assert!(!shared.with(|s| s.load.started));
        let _ = std::fs::remove_file(&path);
    }

    /// Issue #8, item 6: the report says the delay is the control plane's, what
    /// clients see instead, and where the load ran.
    #[test]
    fn the_propagation_says_what_was_measured_and_where_the_load_ran() {
        let api: std::collections::BTreeSet<String> = ["zerodrop-worker".to_string()].into();
        let placed = [placement::Placement::of(Some("zerodrop-worker2"), &api)];
        let p = measured_propagation_placed(&[4, 38, 12], &placed);
        assert_eq!(p.measured.map(|m| (m.p50_ms, m.max_ms, m.n)), Some((12, 38, 3)));
        assert_eq!(p.configured_ms, None, "nothing on a cluster applies a delay");
        for words in [
            "This is the control plane",
            "kube-proxy on their own node",
            "understates what clients see",
            "listener_closed",
            "without api pods in 1 of 1 stages",
        ] {
            assert!(p.what.contains(words), "`{words}` missing: {}", p.what);
        }
    }

    #[test]
    fn each_run_has_its_own_namespace() {
        assert_eq!(run_namespace("20261123-130150"), "zerodrop-20261123-130150");
        assert_eq!(run_namespace("R2_x"), "zerodrop-r2-x");
        assert!(run_namespace(&"9".repeat(80)).len() <= 63);
        let opts = KindOptions::new(None, false, "20261123-130150".into(), "t".into(), PathBuf::from("/tmp"));
        assert_eq!(opts.namespace, "zerodrop-20261123-130150");
        assert_eq!(opts.render_options("q", "s").namespace, opts.namespace);
    }

    /// Teardown deletes the run's namespace and returns only once the API server no
    /// longer has it (it answers the namespace as Terminating first, then 404).
    #[tokio::test]
    async fn the_namespace_is_gone_before_teardown_returns() {
        let ns = serde_json::json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": "zerodrop-r1", "uid": "1f0e3c2a-5b4d-4e6f-8a7b-9c0d1e2f3a4b", "resourceVersion": "9120", "creationTimestamp": "2026-11-23T13:01:52Z", "deletionTimestamp": "2026-11-23T13:09:40Z", "labels": {"kubernetes.io/metadata.name": "zerodrop-r1"}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}});
        let gets = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let g = gets.clone();
        let (client, requests) = fake_api::client(move |req| match req {
            "DELETE /api/v1/namespaces/zerodrop-r1?" | "DELETE /api/v1/namespaces/zerodrop-r1" => {
                Reply::ok(ns.to_string())
            }
            "GET /api/v1/namespaces/zerodrop-r1" if g.fetch_add(1, Ordering::SeqCst) < 2 => Reply::ok(ns.to_string()),
            _ => Reply::not_found(),
        });
        delete_namespace(&client, "zerodrop-r1", Duration::from_secs(10)).await.unwrap();
        let reqs = requests.lock().unwrap().clone();
        assert!(reqs[0].starts_with("DELETE /api/v1/namespaces/zerodrop-r1"), "{reqs:#?}");
        assert_eq!(gets.load(Ordering::SeqCst), 3, "polled until the 404: {reqs:#?}");
        // Gone already: nothing to wait for.
        let (client, _) = fake_api::client(|_| Reply::not_found());
        delete_namespace(&client, "zerodrop-r1", Duration::from_secs(1)).await.unwrap();
    }
}
