//! The guardian exercise, once per experiment: one api instance with the final
//! stage's settings gets a request longer than its whole shutdown budget, then
//! SIGTERM. The guardian thread must force the exit with its own code.

use super::pod::{App, Isolation, Pod, PodTemplate};
use super::recorder::{now_ms, Recorder};
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerodrop_evidence as evidence;
use zerodrop_evidence::GuardianCheck;
use zerodrop_jobs::Topology;
use zerodrop_stages::{Entrypoint, Stage, StageName};

pub async fn run(amqp_url: &str, bin_dir: &Path, isolation: Isolation, log_dir: &Path) -> Result<GuardianCheck> {
    let stage = Stage::get(StageName::SurgeJitter);
    let b = stage.api;
    let topology = Topology::new(format!("zerodrop.guardian.{}", std::process::id()));
    std::fs::create_dir_all(log_dir)?;
    let mut env =
        vec![("AMQP_URL".to_string(), amqp_url.to_string()), ("ZD_QUEUE".to_string(), topology.queue.clone())];
    env.extend(b.to_env().into_iter().map(|(k, v)| (k.to_string(), v)));
    let t = PodTemplate {
        app: App::Api,
        revision: 1,
        entrypoint: Entrypoint::Init,
        readiness: stage.pod.readiness,
        bin_dir: bin_dir.to_path_buf(),
        env,
        isolation,
    };
    let rec = Arc::new(Recorder::default());
    let pod = Pod::start(&t, "api-guardian".into(), Ipv4Addr::new(127, 77, 250, 1), log_dir, rec).await?;
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !pod.ready.load(Ordering::SeqCst) {
        if Instant::now() > ready_by || pod.exited.load(Ordering::SeqCst) {
            pod.kill_now().await;
            bail!("the guardian test instance did not become ready; see {}", log_dir.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let request_ms = (b.guardian_deadline() + Duration::from_secs(3)).as_millis() as u64;
    let client = tokio::spawn(crate::guardian::long_request(pod.addr, request_ms));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sigterm_at = now_ms();
    let t0 = Instant::now();
    pod.signal(libc::SIGTERM);
    let exited = pod.wait_exit(stage.pod.grace).await;
    let exit_after_ms = t0.elapsed().as_millis() as u64;
    if !exited {
        pod.kill_now().await;
    }
    let client_outcome = client.await.context("guardian client task")?;
    crate::guardian::delete_queues(amqp_url, &topology).await;
    let logs = evidence::read_pod_log(&pod.log_path, &pod.name, "api", sigterm_at);
    Ok(GuardianCheck {
        drain_budget_ms: b.drain_budget.as_millis() as u64,
        request_ms,
        expected_exit_code: zerodrop_lifecycle_exit_code(),
        exit_code: pod.exit_code(),
        exit_after_ms,
        client_outcome,
        logs,
    })
}

/// Mirrors `zerodrop_lifecycle::EXIT_GUARDIAN`; the runner does not link the
/// services' library, and the integration test of the lifecycle pins the value.
fn zerodrop_lifecycle_exit_code() -> i32 {
    70
}
