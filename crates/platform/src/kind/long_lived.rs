//! [`LongLivedLoad`] on a cluster: the clients run in a `zerodrop-load long-lived` Job
//! aimed at the api Service's ClusterIP (through kube-proxy, as any client pod's
//! traffic goes), behind the same data-plane gate as the stage's load. The runner's two
//! decisions reach the Job's process on its pod's loopback (`POST /no-new`,
//! `POST /stop` on port [`CONTROL_PORT`]) through a port-forward to that very pod;
//! its counts come back through its log as checksummed chunks ([`zerodrop_load::wire`]).

use super::two_versions::wire::response_complete;
use super::{load_job, KindPlatform};
use crate::long_lived::{LongLivedLoad, LongLivedRun, Spec, Tallies};
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
pub use zerodrop_load::long_lived::{CONTROL_PORT, NO_NEW_PATH, STOP_PATH};

/// Bound on one control request, the port-forward's setup included.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// The Job's own bound on the operations in flight after `no-new`: a safety net for a
/// runner that never sends `stop`, well past any limit the runner sets itself.
pub const POD_FINISH_SLACK: Duration = Duration::from_secs(600);

/// `zerodrop-load long-lived` arguments for `spec` against `target` (`host:port`),
/// first awaiting `await_pods` through it (no gate when empty), its counts printed as
/// every load Job's result is.
pub fn args(spec: &Spec, target: &str, await_pods: &[String]) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let lengths: Vec<String> = spec.op_lengths.iter().map(|d| ms(*d)).collect();
    let own = [
        "--streams".to_string(),
        spec.streams.to_string(),
        "--op-clients".into(),
        spec.op_clients.to_string(),
        "--op-lengths".into(),
        lengths.join(","),
        "--finish-limit".into(),
        ms(spec.longest_op() + POD_FINISH_SLACK),
    ];
    load_job::subcommand("long-lived", target, await_pods, own)
}

/// How long the Job may run in all: the old pods' whole grace, the longest operation
/// twice over (one started just before `no-new`, and its retry), and the Job's own
/// slack after `no-new`.
pub fn run_limit(spec: &Spec, grace: Duration) -> Duration {
    grace + spec.longest_op() * 2 + POD_FINISH_SLACK + Duration::from_secs(120)
}

/// One control request as sent through the port-forward: HTTP/1.0, so the process
/// closes after its answer.
pub fn control_request(path: &str) -> String {
    format!("POST {path} HTTP/1.0\r\nHost: load\r\nContent-Length: 0\r\n\r\n")
}

/// The process's answer to a control request: its body when the status is 200.
pub fn control_answer(raw: &[u8]) -> Result<String> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no complete answer ({} bytes)", raw.len());
    };
    let status = head.lines().next().unwrap_or_default();
    let ok = status.split_whitespace().nth(1) == Some("200");
    if !ok {
        bail!("answered {status:?}: {}", body.trim());
    }
    Ok(body.trim().to_string())
}

/// `POST path` to the long-lived process in `pod`, through a port-forward of its own.
pub async fn send_control(pods: &Api<Pod>, pod: &str, path: &str) -> Result<String> {
    let work = async {
        let raw =
            super::forward::exchange(pods, pod, CONTROL_PORT, control_request(path).as_bytes(), response_complete)
                .await?;
        control_answer(&raw)
    };
    tokio::time::timeout(CONTROL_TIMEOUT, work)
        .await
        .with_context(|| format!("{pod}:{CONTROL_PORT}{path} did not answer within {CONTROL_TIMEOUT:?}"))?
        .with_context(|| format!("POST {path} to {pod}:{CONTROL_PORT}"))
}

/// The Job under way.
pub struct KindRun {
    pods: Api<Pod>,
    pod: String,
    result: JoinHandle<Result<Tallies>>,
    no_new_sent: bool,
}

impl LongLivedLoad for KindPlatform {
    type Run = KindRun;

    async fn start_long_lived(&mut self, spec: &Spec) -> Result<KindRun> {
        let limit = run_limit(spec, self.fleet()?.stage.pod.grace);
        let live = Arc::new(zerodrop_load::Live::new());
        let result = self.start_load_job(|target, awaited| args(spec, target, awaited), live, limit).await?;
        let pod = self.fleet()?.shared.with(|s| s.load.pod.clone()).context("the long-lived Job's pod has no name")?;
        eprintln!("[kind] long-lived clients run in {pod}; control through a port-forward to its :{CONTROL_PORT}");
        Ok(KindRun { pods: self.pods(), pod, result, no_new_sent: false })
    }
}

impl LongLivedRun for KindRun {
    async fn no_new(&mut self) -> Result<()> {
        let sent = send_control(&self.pods, &self.pod, NO_NEW_PATH).await;
        if let Err(e) = sent {
            // Nobody listening because the process is gone: that is the news.
            if self.result.is_finished() {
                return Err(e.context(format!("the long-lived Job had already ended; see {}'s log", self.pod)));
            }
            return Err(e);
        }
        self.no_new_sent = true;
        Ok(())
    }

    async fn finish(mut self, limit: Duration) -> Result<Tallies> {
        if !self.no_new_sent {
            self.no_new().await?;
        }
        let waited = tokio::time::timeout(limit, &mut self.result).await;
        let joined = match waited {
            Ok(j) => j,
            Err(_) => {
                // The process abandons what is still in flight and prints its counts.
                if let Err(e) = send_control(&self.pods, &self.pod, STOP_PATH).await {
                    eprintln!("warning: {e:#}");
                }
                self.result.await
            }
        };
        joined.context("the long-lived Job's watcher failed")?.context("the long-lived Job")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            streams: 40,
            op_clients: 32,
            op_lengths: vec![Duration::from_millis(13_500), Duration::from_millis(85_500)],
        }
    }

    #[test]
    fn the_args_name_the_subcommand_the_spec_and_the_gate() {
        let pods = ["api-7c9f6d5b8d-4xk2p".to_string(), "api-7c9f6d5b8d-9wq7m".into()];
        let a = args(&spec(), "api.zerodrop-r1.svc.cluster.local:80", &pods);
        let flag = |f: &str| a.iter().position(|x| x == f).map(|i| a[i + 1].clone());
        assert_eq!(a[0], "long-lived");
        assert_eq!(flag("--target").as_deref(), Some("api.zerodrop-r1.svc.cluster.local:80"));
        assert!(a.contains(&"--allow-non-loopback".to_string()));
        assert_eq!(flag("--streams").as_deref(), Some("40"));
        assert_eq!(flag("--op-clients").as_deref(), Some("32"));
        assert_eq!(flag("--out").as_deref(), Some("-"), "the counts come back through the log");
        let lengths: Vec<Duration> =
            flag("--op-lengths").unwrap().split(',').map(|d| humantime::parse_duration(d).unwrap()).collect();
        assert_eq!(lengths, spec().op_lengths);
        let finish = humantime::parse_duration(&flag("--finish-limit").unwrap()).unwrap();
        assert_eq!(finish, Duration::from_millis(85_500) + POD_FINISH_SLACK);
        assert_eq!(flag("--await-pods").as_deref(), Some("api-7c9f6d5b8d-4xk2p,api-7c9f6d5b8d-9wq7m"));
        assert_eq!(humantime::parse_duration(&flag("--await-timeout").unwrap()).unwrap(), load_job::GATE_TIMEOUT);
        let ungated = args(&spec(), "t:80", &[]);
        assert!(!ungated.iter().any(|x| x.starts_with("--await")), "{ungated:?}");
    }

    #[test]
    fn the_job_may_outlive_the_grace_and_an_operation_with_its_retry() {
        let l = run_limit(&spec(), Duration::from_secs(115));
        assert!(l > Duration::from_secs(115) + Duration::from_millis(2 * 85_500) + POD_FINISH_SLACK, "{l:?}");
    }

    #[test]
    fn a_control_request_is_one_post_that_the_process_closes_after() {
        assert_eq!(control_request("/no-new"), "POST /no-new HTTP/1.0\r\nHost: load\r\nContent-Length: 0\r\n\r\n");
    }

    /// Answers as hyper's server sends them to an HTTP/1.0 request.
    #[test]
    fn only_a_200_answer_is_an_acknowledged_control_request() {
        let ok = b"HTTP/1.0 200 OK\r\ncontent-length: 10\r\ndate: Sat, 05 Dec 2026 12:00:00 GMT\r\n\r\nok no-new\n";
        assert!(response_complete(ok));
        assert_eq!(control_answer(ok).unwrap(), "ok no-new");
        let refused = b"HTTP/1.0 405 Method Not Allowed\r\ncontent-length: 28\r\n\r\nPOST /no-new or POST /stop\n";
        let e = control_answer(refused).unwrap_err().to_string();
        assert!(e.contains("405 Method Not Allowed") && e.contains("POST /no-new or POST /stop"), "{e}");
        let e = control_answer(b"HTTP/1.0 200 OK\r\ncontent-len").unwrap_err().to_string();
        assert!(e.contains("no complete answer"), "{e}");
        assert!(control_answer(b"").is_err());
    }
}
