//! The Service's data plane against the real kernel: each test re-runs itself inside
//! a fresh network namespace (`unshare --net`, a child process, because the test
//! harness is multi-threaded and must not unshare itself) with real listeners on
//! 127.77.250.1/.2 and the real `Service` programming nftables. A test that cannot
//! create the namespace fails and says why; it never passes without having run.

use super::nft::VIP;
use super::pod::Pod;
use super::recorder::Recorder;
use super::service::{Dataplane, Service};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const INSIDE: &str = "ZERODROP_TEST_IN_NETNS";
const EP1: &str = "127.77.250.1:8080";
const EP2: &str = "127.77.250.2:8080";

/// True inside the namespace (run the body). Outside, runs this one test in a child
/// inside a fresh namespace, asserts it passed, and returns false.
fn in_fresh_netns(test: &str) -> bool {
    if std::env::var(INSIDE).as_deref() == Ok("1") {
        let out = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).output().expect("running ip");
        assert!(out.status.success(), "ip link set lo up: {out:?}");
        return true;
    }
    // The test binary names tests by their path inside the crate, without the crate's name.
    let path = module_path!().split_once("::").map_or(module_path!(), |(_, inside)| inside);
    let name = format!("{path}::{test}");
    let exe = std::env::current_exe().expect("the test binary");
    let mut args = vec!["--net"];
    if !super::netns::is_root() {
        args.extend(["--user", "--map-root-user"]);
    }
    let out = std::process::Command::new("unshare")
        .args(&args)
        .arg("--")
        .arg(exe)
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("running unshare (util-linux)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{name} inside a fresh network namespace failed. It needs `unshare --net` (root, or unprivileged \
         user namespaces), `ip` and `nft`. Output:\n{text}"
    );
    assert!(text.contains("1 passed"), "the child ran no test named {name}:\n{text}");
    eprintln!("{text}");
    false
}

/// A server that says which address it is, on accept and for every line it gets.
async fn listener(addr: &str) -> JoinHandle<()> {
    let l = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            tokio::spawn(async move {
                let me = c.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let (r, mut w) = c.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(format!("{me}\n").as_bytes()).await;
                while let Ok(Some(_)) = lines.next_line().await {
                    let _ = w.write_all(format!("{me}\n").as_bytes()).await;
                }
            });
        }
    })
}

struct Conn(BufReader<TcpStream>);

impl Conn {
    async fn open() -> std::io::Result<(Conn, String)> {
        let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(SocketAddr::V4(VIP)))
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))??;
        let mut c = Conn(BufReader::new(s));
        let who = c.line().await;
        Ok((c, who))
    }
    async fn ask(&mut self) -> String {
        self.0.get_mut().write_all(b"who\n").await.expect("write on an established connection");
        self.line().await
    }
    async fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).await.expect("read");
        l.trim().to_string()
    }
}

/// The real Service, with no propagation delay, over pods that are just addresses.
async fn service(pods: &[&Arc<Pod>]) -> (Arc<Service>, CancellationToken) {
    let stop = CancellationToken::new();
    let plane = Dataplane::Nft { vip: VIP };
    let svc = Service::new(
        super::propagation::PropagationModel::constant(Duration::ZERO),
        Arc::new(Recorder::default()),
        stop.clone(),
        plane,
    )
    .await
    .expect("programming nftables (is `nft` installed?)");
    for p in pods {
        svc.watch((*p).clone());
    }
    wait_endpoints(&svc, pods.len() as u32).await;
    (svc, stop)
}

async fn wait_endpoints(svc: &Service, n: u32) {
    for _ in 0..200 {
        if svc.ready_endpoints() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the Service never got to {n} endpoints: {:?}", svc.endpoints());
}

#[tokio::test]
async fn new_connections_to_the_vip_reach_both_endpoints() {
    if !in_fresh_netns("new_connections_to_the_vip_reach_both_endpoints") {
        return;
    }
    let _l = (listener(EP1).await, listener(EP2).await);
    let (a, b) = (Pod::fake_at("a", 1, true, EP1), Pod::fake_at("b", 1, true, EP2));
    let (_svc, stop) = service(&[&a, &b]).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..50 {
        let (_c, who) = Conn::open().await.expect("connecting to the VIP");
        *seen.entry(who).or_default() += 1;
    }
    eprintln!("50 connections to {VIP}: {seen:?}");
    assert_eq!(seen.len(), 2, "both endpoints must be used: {seen:?}");
    assert!(seen.contains_key(EP1) && seen.contains_key(EP2), "{seen:?}");
    stop.cancel();
}

#[tokio::test]
async fn an_established_connection_survives_a_reprogram_that_removes_its_endpoint() {
    if !in_fresh_netns("an_established_connection_survives_a_reprogram_that_removes_its_endpoint") {
        return;
    }
    let _l = (listener(EP1).await, listener(EP2).await);
    let (a, b) = (Pod::fake_at("a", 1, true, EP1), Pod::fake_at("b", 2, false, EP2));
    let (svc, stop) = service(&[&a]).await;
    let (mut old, who) = Conn::open().await.expect("connecting to the VIP");
    assert_eq!(who, EP1);

    // b becomes ready and a terminates: one re-program swaps them.
    svc.watch(b.clone());
    b.ready.store(true, Ordering::SeqCst);
    a.terminating.store(true, Ordering::SeqCst);
    for _ in 0..200 {
        if svc.endpoints().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>() == ["b"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(svc.endpoints().len(), 1);
    assert_eq!(old.ask().await, EP1, "conntrack keeps the established connection on its endpoint");
    for _ in 0..10 {
        let (_c, who) = Conn::open().await.expect("connecting to the VIP");
        assert_eq!(who, EP2, "a new connection must not reach the removed endpoint");
    }
    assert_eq!(old.ask().await, EP1);
    stop.cancel();
}

#[tokio::test]
async fn a_routed_endpoint_that_stopped_listening_refuses_and_so_does_an_empty_service() {
    if !in_fresh_netns("a_routed_endpoint_that_stopped_listening_refuses_and_so_does_an_empty_service") {
        return;
    }
    let l1 = listener(EP1).await;
    let a = Pod::fake_at("a", 1, true, EP1);
    let (svc, stop) = service(&[&a]).await;
    assert_eq!(Conn::open().await.expect("connecting to the VIP").1, EP1);

    // The pod exits while still routed (what pid1 does): the kernel answers the DNATed
    // SYN with a reset, which the client sees as a refusal, not as a reset.
    l1.abort();
    let _ = l1.await;
    for _ in 0..5 {
        let err = Conn::open().await.err().expect("nothing listens behind the VIP");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
    }

    a.terminating.store(true, Ordering::SeqCst);
    wait_endpoints(&svc, 0).await;
    let err = Conn::open().await.err().expect("no endpoints");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "an empty Service refuses: {err:?}");
    svc.close().await.expect("removing the table");
    let err = Conn::open().await.err().expect("no table");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
    stop.cancel();
}
