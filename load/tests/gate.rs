//! The data-plane gate against real HTTP servers on loopback: each "pod" is its own
//! listener naming itself in `x-zd-pod`, and a resolver plays the Service's DNAT,
//! choosing among the addresses it has been "programmed" with per new connection.

mod common;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zerodrop_load::gate::{self, GateConfig, Limit};
use zerodrop_load::Resolver;

/// A pod: answers every request with `x-zd-pod: name`; counts connections and paths.
struct Pod {
    addr: SocketAddr,
    connections: Arc<AtomicU32>,
    paths: Arc<Mutex<Vec<String>>>,
}

async fn pod(name: &'static str) -> Pod {
    let connections = Arc::new(AtomicU32::new(0));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (c, p) = (connections.clone(), paths.clone());
    let addr = common::raw(move |stream| {
        c.fetch_add(1, Ordering::SeqCst);
        let p = p.clone();
        async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                p.lock().unwrap().push(req.uri().path().to_string());
                let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                res.headers_mut().insert(gate::POD_HEADER, name.parse().unwrap());
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        }
    })
    .await;
    Pod { addr, connections, paths }
}

/// Round-robin over the addresses programmed so far; more can be programmed later.
#[derive(Clone, Default)]
struct Dnat {
    programmed: Arc<Mutex<Vec<SocketAddr>>>,
    next: Arc<AtomicUsize>,
}

impl Dnat {
    fn with(addrs: &[SocketAddr]) -> Dnat {
        let d = Dnat::default();
        d.programmed.lock().unwrap().extend_from_slice(addrs);
        d
    }
    fn program(&self, addr: SocketAddr) {
        self.programmed.lock().unwrap().push(addr);
    }
}

impl Resolver for Dnat {
    fn pick(&self) -> Option<SocketAddr> {
        let p = self.programmed.lock().unwrap();
        (!p.is_empty()).then(|| p[self.next.fetch_add(1, Ordering::SeqCst) % p.len()])
    }
}

fn cfg(deadline: Duration, max_probes: u32) -> GateConfig {
    GateConfig {
        deadline,
        max_probes,
        pause: Duration::from_millis(2),
        connect_timeout: Duration::from_millis(500),
        probe_timeout: Duration::from_secs(1),
    }
}

/// A loopback port nothing listens on: connecting is refused.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn passes_once_every_pod_answered_each_probe_on_a_new_connection() {
    let pods = [pod("api-a").await, pod("api-b").await, pod("api-c").await];
    let dnat = Dnat::with(&pods.iter().map(|p| p.addr).collect::<Vec<_>>());
    let mut announced = Vec::new();
    let passed = gate::await_pods(&dnat, ["api-a", "api-b", "api-c"], &cfg(Duration::from_secs(5), 100), |p, s, _| {
        announced.push((p.to_string(), s.seen()))
    })
    .await
    .unwrap();
    assert_eq!(passed.pods, 3);
    assert_eq!(passed.probes, 3, "round-robin over three reaches each at once");
    assert_eq!(announced, vec![("api-a".into(), 1), ("api-b".into(), 2), ("api-c".into(), 3)]);
    for p in &pods {
        assert_eq!(p.connections.load(Ordering::SeqCst), 1, "one new connection per probe");
        assert_eq!(*p.paths.lock().unwrap(), vec![gate::PROBE_PATH.to_string()]);
    }
}

#[tokio::test]
async fn waits_for_an_endpoint_programmed_late_and_survives_refusals() {
    let (a, b, c) = (pod("api-a").await, pod("api-b").await, pod("api-c").await);
    // A stale rule to a pod that is gone answers with a refusal until then.
    let dnat = Dnat::with(&[a.addr, closed_port().await, b.addr]);
    let late = dnat.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        late.program(c.addr);
    });
    let t0 = Instant::now();
    let passed =
        gate::await_pods(&dnat, ["api-a", "api-b", "api-c"], &cfg(Duration::from_secs(5), 10_000), |_, _, _| {})
            .await
            .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150), "passed before api-c was reachable");
    assert!(passed.probes > 3, "{passed:?}");
    assert!(a.connections.load(Ordering::SeqCst) > 1 && b.connections.load(Ordering::SeqCst) > 1);
}

#[tokio::test]
async fn times_out_naming_the_pod_never_reached() {
    let (a, b) = (pod("api-a").await, pod("api-b").await);
    // api-c is ready in the control plane's list, but no rule leads to it.
    let dnat = Dnat::with(&[a.addr, b.addr]);
    let t0 = Instant::now();
    let err =
        gate::await_pods(&dnat, ["api-a", "api-b", "api-c"], &cfg(Duration::from_millis(300), 10_000), |_, _, _| {})
            .await
            .unwrap_err();
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(err.missing, vec!["api-c"]);
    assert_eq!(err.limit, Limit::Deadline(Duration::from_millis(300)));
    assert!(err.probes > 2 && err.failed == 0, "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("(api-c)") && msg.contains(&format!("after {} probes", err.probes)), "{msg}");
}

#[tokio::test]
async fn stops_at_the_probe_limit_and_reports_why_probes_failed() {
    let a = pod("api-a").await;
    let dnat = Dnat::with(&[a.addr, closed_port().await]);
    let err =
        gate::await_pods(&dnat, ["api-a", "api-b"], &cfg(Duration::from_secs(30), 6), |_, _, _| {}).await.unwrap_err();
    assert_eq!(err.limit, Limit::MaxProbes(6));
    assert_eq!((err.probes, err.failed), (6, 3));
    assert_eq!(err.missing, vec!["api-b"]);
    let why = err.last_failure.unwrap_or_default();
    assert!(why.contains("refused"), "{why}");
    // No endpoint at all is a failed probe too, not a hang.
    let err = gate::await_pods(&Dnat::default(), ["api-a"], &cfg(Duration::from_secs(30), 3), |_, _, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.last_failure.as_deref(), Some("the Service has no endpoint to connect to"));
}

/// `zerodrop-load run` against `addr` (a short fast-only load), with `extra` flags.
async fn cli(addr: SocketAddr, extra: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zerodrop-load"));
    cmd.args(["run", "--target", &addr.to_string(), "--rate", "20", "--duration", "200ms", "--mix", "1,0,0"]);
    cmd.args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The CLI: gate lines first, then the load; a failed gate sends no load and exits
/// non-zero naming the missing pod.
#[tokio::test]
async fn the_cli_runs_the_gate_before_the_load() {
    let a = pod("api-a").await;
    let (ok, err) = cli(a.addr, &["--await-pods", "api-a,api-b", "--await-timeout", "300ms"]).await;
    assert!(!ok, "{err}");
    assert!(err.contains("no load sent") && err.contains("(api-b)"), "{err}");
    assert!(!err.contains(gate::LOAD_BEGINS), "{err}");
    assert!(a.paths.lock().unwrap().iter().all(|p| p == gate::PROBE_PATH), "a load request was sent");

    let (ok, err) = cli(a.addr, &["--await-pods", "api-a"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("gate: awaiting 1 pods through "), "{err}");
    assert!(lines[1].starts_with("gate: api-a answered (1/1) after 1 probes, "), "{err}");
    assert!(lines[2].starts_with("gate: data plane carries 1/1 endpoints after 1 probes, "), "{err}");
    assert!(lines[3].starts_with(gate::LOAD_BEGINS), "{err}");
    assert!(a.paths.lock().unwrap().iter().any(|p| p == "/work"), "the load ran after the gate");
}
