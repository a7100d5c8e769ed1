//! `cargo xtask up | rollout | status | logs | down`: a long-lived local fleet to poke
//! at by hand. `up` runs in a lab network namespace of its own (local/netns.rs) and
//! stays in the foreground as the control plane (Deployment controller, kubelet,
//! Service); the other commands talk to it over a private Unix control socket
//! (local/control.rs; a path, so it reaches into the namespace) named in
//! target/zerodrop-up/state.json. The Service is kernel DNAT on a virtual IP inside the
//! lab: `cargo xtask client -- curl ...`.
//!
//! With `--platform kind` the cluster is the control plane: `up` applies the stage in
//! a namespace of its own that outlives it, records {platform, context, namespace} in
//! the same state.json and exits; the other commands read that record and act on the
//! cluster (kind/fleet_control.rs decides from the API's answers).

use crate::harness::{self, RunDir};
use crate::platform_args::{Choice, PlatformArgs};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use zerodrop_jobs::Topology;
use zerodrop_platform::infra::Backends;
use zerodrop_platform::kind::fleet_control::{self, KindRecord};
use zerodrop_platform::local::control::{self, Reply, Request};
use zerodrop_platform::local::netns;
use zerodrop_platform::local::nft::VIP;
use zerodrop_platform::local::pod::{App, Isolation};
use zerodrop_platform::local::recorder::Recorder;
use zerodrop_platform::local::rollout::{Verdict, Watch};
use zerodrop_platform::local::{follow, Fleet, FleetConfig};
use zerodrop_platform::profile::ExperimentProfile;
use zerodrop_platform::workspace;
use zerodrop_platform::PlatformKind;
use zerodrop_stages::{Stage, StageName};

#[derive(clap::Args)]
pub struct UpArgs {
    /// The stage to deploy.
    #[arg(long, default_value = "naive")]
    stage: StageName,
    /// local: run the service binaries already built in this directory instead of
    /// building them first (zerodrop-api, zerodrop-worker, zerodrop-init).
    #[arg(long, env = "ZERODROP_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    #[command(flatten)]
    platform: PlatformArgs,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// A pod name (see `cargo xtask status`); without it, every pod's log file is
    /// listed (or, with -f, every pod's log followed).
    pod: Option<String>,
    /// Follow the log as it grows (and, without a pod, the logs of pods created
    /// later) until Ctrl-C or the fleet goes down.
    #[arg(short = 'f', long)]
    follow: bool,
}

#[derive(clap::Args)]
pub struct RolloutArgs {
    /// Fail (exit 4) when the rollout makes no progress for this long, as a
    /// Deployment's progressDeadlineSeconds.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    progress_deadline: Duration,
    /// KEY=VALUE added to every pod's environment from the new revision on (as
    /// `kubectl set env`); repeatable.
    #[arg(long = "set-env", value_parser = parse_env)]
    set_env: Vec<(String, String)>,
    /// Roll out only one deployment.
    #[arg(long, value_parser = ["api", "worker"])]
    only: Option<String>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Print the status again every second until Ctrl-C.
    #[arg(short = 'w', long)]
    watch: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    control: PathBuf,
    /// The Service's address inside the lab.
    service: String,
    stage: String,
    logs: PathBuf,
    pid: u32,
}

fn state_path() -> PathBuf {
    workspace::target_dir().join("zerodrop-up/state.json")
}

/// The fleet `up` left: the local control plane's socket, or a kind record.
enum Fleetref {
    Local(State),
    Kind(KindRecord),
}

fn read_fleet() -> Result<Fleetref> {
    let p = state_path();
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("no fleet is up ({} missing): start one with `cargo xtask up`", p.display()))?;
    Ok(match fleet_control::kind_record(&text)? {
        Some(k) => Fleetref::Kind(k),
        None => Fleetref::Local(serde_json::from_str(&text).context("reading the fleet state file")?),
    })
}

fn read_state() -> Result<State> {
    match read_fleet()? {
        Fleetref::Local(s) => Ok(s),
        Fleetref::Kind(k) => anyhow::bail!("the fleet is on the kind platform (namespace {})", k.namespace),
    }
}

/// `up --platform kind`: the cluster is the control plane; record it and exit.
async fn up_kind(a: UpArgs, choice: Choice) -> Result<()> {
    if a.bin_dir.is_some() {
        anyhow::bail!("--bin-dir applies to the local platform; on kind the services are built into images");
    }
    let stage = Stage::get(a.stage);
    let run = RunDir::new(&workspace::target_dir().join("zerodrop-up/kind"));
    let opts = a.platform.kind_options(&run);
    if choice == Choice::KindPlan {
        print!("{}", fleet_control::up_plan(&opts, &stage)?.render());
        return Ok(());
    }
    if state_path().exists() {
        anyhow::bail!("a fleet is already up ({}): `cargo xtask down` first", state_path().display());
    }
    harness::check_kind(&opts)?;
    run.create()?;
    let rec = fleet_control::up(opts, &stage).await?;
    std::fs::create_dir_all(state_path().parent().context("state path has a parent")?)?;
    std::fs::write(state_path(), serde_json::to_string_pretty(&rec)?)?;
    println!("fleet up: stage {} in namespace {} (context {})", rec.stage, rec.namespace, rec.context);
    println!("reach it: kubectl --context {} -n {} port-forward svc/api 8080:80", rec.context, rec.namespace);
    println!("then:     curl -sS 'http://127.0.0.1:8080/work?ms=100'");
    println!("then:     cargo xtask status | rollout | logs [POD] | down   (the cluster keeps it up)");
    Ok(())
}

pub async fn up(a: UpArgs) -> Result<()> {
    // `up` has always meant the local fleet: without a kind flag, no probe of Docker.
    let p = &a.platform;
    let kind_flags = p.context.is_some() || p.registry.is_some() || p.keep || p.dry_run;
    let choice = if p.platform == PlatformKind::Auto && !kind_flags { Choice::Local } else { p.choose()? };
    if choice != Choice::Local {
        return up_kind(a, choice).await;
    }
    if !netns::inside() {
        // Built here, where the network is: the lab has none, and cargo may need it.
        let bin_dir = match a.bin_dir {
            Some(d) => d,
            None => workspace::build_services()?,
        };
        let status = netns::run_in_lab(&bin_dir).await?;
        std::process::exit(netns::exit_code(status));
    }
    let stage = Stage::get(a.stage);
    let profile = ExperimentProfile::quick();
    let dir = workspace::target_dir().join("zerodrop-up");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let lab = netns::join("up", VIP).await?;
    let backends = Backends::acquire(&dir).await?;
    eprintln!("[infra] {}", backends.describe());
    let result = serve(stage, profile, &backends, lab.bin_dir.clone(), logs).await;
    let _ = std::fs::remove_file(state_path());
    backends.release().await?;
    drop(lab);
    result
}

async fn serve(stage: Stage, p: ExperimentProfile, backends: &Backends, bin_dir: PathBuf, logs: PathBuf) -> Result<()> {
    let queue = Topology::new("zerodrop.up.jobs");
    let cfg = FleetConfig {
        api_replicas: p.api_replicas,
        worker_replicas: p.worker_replicas,
        propagation: p.propagation,
        bin_dir,
        log_dir: logs.clone(),
        base_env: vec![
            ("AMQP_URL".into(), backends.amqp_url.clone()),
            ("DATABASE_URL".into(), backends.database_url.clone()),
            ("ZD_QUEUE".into(), queue.queue.clone()),
            ("ZD_DB_SCHEMA".into(), "zerodrop_up".into()),
            ("ZD_CAPACITY".into(), p.api_capacity.to_string()),
        ],
        worker_env: vec![("ZD_JOB_WORK_MS".into(), p.job_work.as_millis().to_string())],
        command_env: Vec::new(),
        isolation: Isolation::detect(),
        subnet: 240,
        vip: VIP,
    };
    let fleet = Fleet::up(cfg, stage.clone(), Arc::new(Recorder::default())).await?;
    let stop = CancellationToken::new();
    let (control, control_path) = control::bind(&workspace::target_dir().join("zerodrop-up/control"))?;
    let state = State {
        control: control_path.clone(),
        service: VIP.to_string(),
        stage: stage.name.to_string(),
        logs,
        pid: std::process::id(),
    };
    std::fs::write(state_path(), serde_json::to_string_pretty(&state)?)?;
    println!("fleet up: stage {} ({} api, {} worker pods)", stage.name, p.api_replicas, p.worker_replicas);
    println!("Service:  http://{} (nftables DNAT inside the lab's network namespace)", VIP.ip());
    println!(
        "reach it: cargo xtask client -- curl -sS 'http://{}/work?ms=100'   (wrk, hey ... the same way)",
        VIP.ip()
    );
    println!("then:     cargo xtask status | rollout | logs [POD] | down      (Ctrl-C here also stops it)");

    let fleet = Arc::new(Mutex::new(Some(fleet)));
    let rolling = Arc::new(AtomicBool::new(false));
    loop {
        let (conn, _) = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = stop.cancelled() => break,
            a = control.accept() => a?,
        };
        let (fleet, stop, rolling) = (fleet.clone(), stop.clone(), rolling.clone());
        tokio::spawn(async move {
            let (req, reply) = match control::accept_request(conn).await {
                Ok(r) => r,
                Err(e) => return tracing::warn!(error = format!("{e:#}"), "control connection refused"),
            };
            handle(req, reply, fleet, stop, rolling).await;
        });
    }
    stop.cancel();
    if let Some(f) = fleet.lock().await.take() {
        f.down().await;
    }
    let _ = std::fs::remove_file(&control_path);
    println!("fleet down");
    Ok(())
}

type Shared = Arc<Mutex<Option<Fleet>>>;

async fn handle(req: Request, mut reply: Reply, fleet: Shared, stop: CancellationToken, rolling: Arc<AtomicBool>) {
    match req {
        Request::Status => match fleet.lock().await.as_ref() {
            Some(f) => reply.ok(&status_text(f)).await,
            None => reply.error("fleet is going down").await,
        },
        Request::Rollout { progress_deadline_s, set_env, only } => {
            if rolling.swap(true, Ordering::SeqCst) {
                return reply.error("a rollout is already running (watch it with `cargo xtask status -w`)").await;
            }
            let deadline = Duration::from_secs(progress_deadline_s);
            let only = match only.as_deref() {
                None => None,
                Some("api") => Some(App::Api),
                Some("worker") => Some(App::Worker),
                Some(other) => {
                    rolling.store(false, Ordering::SeqCst);
                    return reply.error(&format!("unknown deployment {other:?}: api or worker")).await;
                }
            };
            drive_rollout(&fleet, deadline, set_env, only, &mut reply).await;
            rolling.store(false, Ordering::SeqCst);
        }
        Request::Down => {
            stop.cancel();
            reply.ok("stopping").await;
        }
    }
}

/// Runs the rollout to its end, holding the fleet only for each reconcile step so
/// `status` answers meanwhile, and streams every pod event and count change.
async fn drive_rollout(
    fleet: &Shared,
    deadline: Duration,
    set_env: Vec<(String, String)>,
    only: Option<App>,
    out: &mut Reply,
) {
    let rec = {
        let mut guard = fleet.lock().await;
        let Some(f) = guard.as_mut() else { return out.error("fleet is going down").await };
        f.begin_rollout(set_env, only);
        let revs: Vec<String> = f.deployments().iter().map(|(a, d)| format!("{a} revision {}", d.revision)).collect();
        out.out(&format!("rollout to {} (stage {})", revs.join(", "), f.stage.name)).await;
        f.rec.clone()
    };
    let started = Instant::now();
    let mut seen = rec.events().len();
    let mut watch = Watch::new(deadline, started);
    loop {
        let changed = rec.changed.notified();
        let step = {
            let mut guard = fleet.lock().await;
            let Some(f) = guard.as_mut() else { return out.failed("the fleet went down during the rollout").await };
            match f.rollout_step().await {
                Ok(complete) => watch.check(&f.deployments(), complete, Instant::now()),
                Err(e) => (Verdict::Failed(format!("{e:#}")), Vec::new()),
            }
        };
        let events = rec.events();
        for e in events.iter().skip(seen) {
            let t = started.elapsed().as_secs_f64();
            out.out(&format!("{t:>6.1}s {:<16} {:?}: {}", e.pod, e.kind, e.detail)).await;
        }
        seen = events.len();
        for l in step.1 {
            out.out(&format!("{:>6.1}s {l}", started.elapsed().as_secs_f64())).await;
        }
        match step.0 {
            Verdict::Complete => {
                let msg = format!(
                    "rollout complete in {:.1} s (old pods may still be terminating)",
                    started.elapsed().as_secs_f64()
                );
                return out.ok(&msg).await;
            }
            Verdict::Failed(why) => return out.failed(&why).await,
            Verdict::Progressing => {}
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
    }
}

fn status_text(f: &Fleet) -> String {
    let mut out = format!(
        "stage {}\n{:<16} {:<7} {:>3} {:<6} {:<12} {}\n",
        f.stage.name, "POD", "APP", "REV", "READY", "STATE", "ADDRESS"
    );
    for pod in f.all_pods() {
        let state = if pod.exited.load(Ordering::SeqCst) {
            format!("exited({})", pod.exit_code().unwrap_or(-1))
        } else if pod.terminating.load(Ordering::SeqCst) {
            "terminating".into()
        } else {
            "running".into()
        };
        out += &format!(
            "{:<16} {:<7} {:>3} {:<6} {:<12} {}\n",
            pod.name,
            pod.app.name(),
            pod.revision,
            pod.ready.load(Ordering::SeqCst),
            state,
            pod.addr
        );
    }
    out += &format!(
        "service {} endpoints: {:?}",
        f.service().vip(),
        f.service().endpoints().iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    out
}

/// Sends one control command to the running `up` and prints the answer.
pub async fn control(command: &str) -> Result<()> {
    if let Fleetref::Kind(rec) = read_fleet()? {
        if command == "down" {
            fleet_control::down(&rec).await?;
            let _ = std::fs::remove_file(state_path());
            println!("deleted namespace {} (context {})", rec.namespace, rec.context);
            if let Some(c) = rec.created_cluster {
                println!("the kind cluster stays: `kind delete cluster --name {c}` removes it");
            }
        } else {
            println!("{}", fleet_control::status(&rec).await?);
        }
        return Ok(());
    }
    let req = match command {
        "down" => Request::Down,
        _ => Request::Status,
    };
    control::request(&read_state()?.control, &req).await
}

pub async fn rollout(a: RolloutArgs) -> Result<()> {
    if let Fleetref::Kind(rec) = read_fleet()? {
        return fleet_control::rollout(&rec, a.progress_deadline, &a.set_env, a.only.as_deref(), |l| println!("{l}"))
            .await;
    }
    let req = Request::Rollout {
        progress_deadline_s: a.progress_deadline.as_secs().max(1),
        set_env: a.set_env,
        only: a.only,
    };
    control::request(&read_state()?.control, &req).await
}

pub async fn status(a: StatusArgs) -> Result<()> {
    if let Fleetref::Kind(rec) = read_fleet()? {
        loop {
            if a.watch {
                let now = time::OffsetDateTime::now_utc();
                println!("--- {:02}:{:02}:{:02} UTC", now.hour(), now.minute(), now.second());
            }
            match fleet_control::status(&rec).await {
                Ok(t) => println!("{t}"),
                Err(e) if a.watch => println!("the cluster does not answer: {e:#}"),
                Err(e) => return Err(e),
            }
            if !a.watch {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    let socket = read_state()?.control;
    if !a.watch {
        return control::request(&socket, &Request::Status).await;
    }
    loop {
        let now = time::OffsetDateTime::now_utc();
        println!("--- {:02}:{:02}:{:02} UTC", now.hour(), now.minute(), now.second());
        if let Err(e) = control::request(&socket, &Request::Status).await {
            println!("the fleet no longer answers: {e:#}");
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub async fn logs(a: LogsArgs) -> Result<()> {
    if let Fleetref::Kind(rec) = read_fleet()? {
        return fleet_control::logs(&rec, a.pod.as_deref(), a.follow).await;
    }
    let st = read_state()?;
    if a.follow {
        return follow::follow(&st.logs, a.pod, || !state_path().exists()).await;
    }
    match a.pod {
        None => {
            for e in std::fs::read_dir(&st.logs)? {
                println!("{}", e?.path().display());
            }
        }
        Some(pod) => {
            let p = st.logs.join(format!("{pod}.log"));
            print!(
                "{}",
                std::fs::read_to_string(&p).with_context(|| format!("no log for pod {pod} at {}", p.display()))?
            );
        }
    }
    Ok(())
}
