//! `cargo xtask up | rollout | status | logs | down`: a long-lived local fleet to poke
//! at by hand. `up` runs in a lab network namespace of its own (local/netns.rs) and
//! stays in the foreground as the control plane (Deployment controller, kubelet,
//! Service); the other commands talk to it over a Unix control socket (a path, so it
//! reaches into the namespace) named in target/zerodrop-up/state.json. The Service is
//! kernel DNAT on a virtual IP inside the lab: `cargo xtask client -- curl ...`.

use crate::infra::Backends;
use crate::local::netns;
use crate::local::nft::VIP;
use crate::local::pod::Isolation;
use crate::local::recorder::Recorder;
use crate::local::{Fleet, FleetConfig};
use crate::profile::ExperimentProfile;
use crate::workspace;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use zerodrop_jobs::Topology;
use zerodrop_stages::{Stage, StageName};

#[derive(clap::Args)]
pub struct UpArgs {
    /// The stage to deploy.
    #[arg(long, default_value = "naive")]
    stage: StageName,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// A pod name (see `cargo xtask status`); without it, every pod's log file is listed.
    pod: Option<String>,
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

fn read_state() -> Result<State> {
    let p = state_path();
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("no fleet is up ({} missing): start one with `cargo xtask up`", p.display()))?;
    serde_json::from_str(&text).context("reading the fleet state file")
}

pub async fn up(a: UpArgs) -> Result<()> {
    if !netns::inside() {
        // Built here, where the network is: the lab has none, and cargo may need it.
        let bin_dir = workspace::build_services()?;
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
        isolation: Isolation::detect(),
        subnet: 240,
        vip: VIP,
    };
    let fleet = Fleet::up(cfg, stage.clone(), Arc::new(Recorder::default())).await?;
    let stop = CancellationToken::new();
    let control_path = workspace::target_dir().join("zerodrop-up/control.sock");
    // A socket file left by an `up` that was killed would make bind fail.
    let _ = std::fs::remove_file(&control_path);
    let control = UnixListener::bind(&control_path)
        .with_context(|| format!("binding the control socket {}", control_path.display()))?;
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
    loop {
        let (conn, _) = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = stop.cancelled() => break,
            a = control.accept() => a?,
        };
        let (fleet, stop) = (fleet.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(conn, fleet, stop).await {
                eprintln!("control: {e:#}");
            }
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

async fn handle(conn: UnixStream, fleet: Arc<Mutex<Option<Fleet>>>, stop: CancellationToken) -> Result<()> {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let reply = match line.trim() {
        "status" => {
            let guard = fleet.lock().await;
            let Some(f) = guard.as_ref() else { bail!("fleet is going down") };
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
                "service {} endpoints: {:?}\n",
                f.service().vip(),
                f.service().endpoints().iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
            );
            out
        }
        "rollout" => {
            let mut guard = fleet.lock().await;
            let Some(f) = guard.as_mut() else { bail!("fleet is going down") };
            let took = f.rollout().await?;
            format!("rollout complete in {:.1} s (old pods may still be terminating)\n", took.as_secs_f64())
        }
        "down" => {
            stop.cancel();
            "stopping\n".to_string()
        }
        other => format!("unknown command {other:?}\n"),
    };
    w.write_all(reply.as_bytes()).await?;
    Ok(())
}

/// Sends one control command to the running `up` and prints the answer.
pub async fn control(command: &str) -> Result<()> {
    let st = read_state()?;
    let mut s = UnixStream::connect(&st.control).await.with_context(|| {
        format!(
            "the fleet's control socket {} does not answer; is `cargo xtask up` still running?",
            st.control.display()
        )
    })?;
    s.write_all(format!("{command}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await?;
    print!("{out}");
    Ok(())
}

pub fn logs(a: LogsArgs) -> Result<()> {
    let st = read_state()?;
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
