//! The routing rules against a real HAProxy (Debian's, as the lab runs it): two
//! loopback "pods" that name themselves in `x-zd-pod`, the lab's own configuration,
//! weight 0, and the lab's load generator sending a marked share. A marked request
//! must reach v2 and an unmarked one v1; behind the stripping hop every request
//! reaches v1; and HAProxy's backend counters agree with what the clients saw.

use super::haproxy::{Haproxy, Layout, Server};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zerodrop_load::{Class, Clients, FixedResolver, Live, Mark, Mix, Profile, RunResult};
use zerodrop_manifests::{MatchOn, RouteRule, Routing, StickyKey};

/// A pod that answers every request (the health check's `/readyz` too) with 200 and
/// its name, on a new connection each (`connection: close`).
async fn pod(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("binding a pod");
    let addr = l.local_addr().expect("the pod's address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp =
                    format!("HTTP/1.1 200 OK\r\nx-zd-pod: {name}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

/// HAProxy in front of v1 and v2 with `routing`, the weight at 0.
async fn router(routing: Routing, dir: &std::path::Path) -> Haproxy {
    let layout = Layout {
        bind: free_port(),
        stable: vec![Server { name: "api-v1-1".into(), addr: pod("api-v1-1").await }],
        canary: vec![Server { name: "api-v2-1".into(), addr: pod("api-v2-1").await }],
        routing,
    };
    let h = Haproxy::start(&layout, dir).await.expect("haproxy starts (Debian: apt-get install haproxy)");
    h.api.wait_all_up(Duration::from_secs(10)).await.expect("both pods UP");
    h
}

/// 200 fast requests, a quarter carrying `header: value`.
async fn load(h: &Haproxy, header: &str, value: &str) -> RunResult {
    let p = Profile {
        rate_per_sec: 400,
        duration: Duration::from_millis(500),
        mix: Mix { fast: 1, slow: 0, job: 0 },
        mark: Some(Mark { permille: 250, header: header.into(), value: value.into() }),
        ..Profile::default()
    };
    zerodrop_load::run(&p, Arc::new(FixedResolver(h.bind)), "t", Arc::new(Live::new())).await
}

/// (marked to v1, marked to v2, unmarked to v1, unmarked to v2); every request answered.
fn split(r: &RunResult) -> [u64; 4] {
    let mut n = [0u64; 4];
    for rec in &r.records {
        assert_eq!(rec.class, Class::Ok, "{rec:?}");
        let v2 = match r.pod_of(rec) {
            Some("api-v1-1") => 0,
            Some("api-v2-1") => 1,
            other => panic!("answered by {other:?}"),
        };
        n[if rec.marked { v2 } else { 2 + v2 }] += 1;
    }
    n
}

async fn counters_agree(h: &Haproxy, n: [u64; 4]) {
    let (stable, canary) = h.api.stats().await.expect("show stat");
    assert_eq!((stable.requests, canary.requests), (n[0] + n[2], n[1] + n[3]), "HAProxy's counters vs the clients'");
}

fn rules() -> Routing {
    Routing {
        rules: vec![
            RouteRule::parse(MatchOn::Header, "x-tester=1").expect("a rule"),
            RouteRule::parse(MatchOn::Cookie, "zd_group=beta").expect("a rule"),
        ],
        ..Routing::default()
    }
}

#[tokio::test]
async fn a_header_or_a_cookie_reaches_v2_at_weight_zero_and_nothing_else_does() {
    let dir = tempdir("rules");
    let h = router(rules(), &dir).await;
    let by_header = split(&load(&h, "x-tester", "1").await);
    let by_cookie = split(&load(&h, "cookie", "theme=dark; zd_group=beta").await);
    let wrong = split(&load(&h, "x-tester", "2").await);
    let total = [0, 1, 2, 3].map(|i| by_header[i] + by_cookie[i] + wrong[i]);
    counters_agree(&h, total).await;
    h.stop().await;
    for n in [by_header, by_cookie] {
        assert_eq!((n[0], n[3]), (0, 0), "marked to v1 / unmarked to v2: {n:?}");
        assert!(n[1] > 20 && n[2] > 100, "{n:?}");
    }
    assert_eq!((wrong[1], wrong[3]), (0, 0), "a value the rule does not name stays on v1: {wrong:?}");
}

#[tokio::test]
async fn behind_the_stripping_hop_every_tester_lands_on_v1() {
    let dir = tempdir("strip");
    let h = router(Routing { strip_hop: true, ..rules() }, &dir).await;
    let by_header = split(&load(&h, "x-tester", "1").await);
    let by_cookie = split(&load(&h, "cookie", "zd_group=beta").await);
    counters_agree(&h, [0, 1, 2, 3].map(|i| by_header[i] + by_cookie[i])).await;
    h.stop().await;
    for n in [by_header, by_cookie] {
        assert_eq!((n[1], n[3]), (0, 0), "nothing reaches v2 once the hop strips the marker: {n:?}");
        assert!(n[0] > 20, "the marked requests were sent and answered by v1: {n:?}");
    }
}

/// Per client: how many of its requests v1 and v2 answered, at weight 30%.
async fn sides_per_client(routing: Routing, name: &str) -> Vec<(u64, u64)> {
    let dir = tempdir(name);
    let h = router(routing, &dir).await;
    h.api.set_permille(300).await.expect("weight 30%");
    let p = Profile {
        rate_per_sec: 400,
        duration: Duration::from_millis(1000),
        mix: Mix { fast: 1, slow: 0, job: 0 },
        clients: Some(Clients { count: 40, zipf_s: 0.0, header: "x-zd-client".into() }),
        ..Profile::default()
    };
    let r = zerodrop_load::run(&p, Arc::new(FixedResolver(h.bind)), "t", Arc::new(Live::new())).await;
    let mut per = vec![(0u64, 0u64); 40];
    for rec in &r.records {
        assert_eq!(rec.class, Class::Ok, "{rec:?}");
        let c = &mut per[rec.client.expect("a client") as usize];
        match r.pod_of(rec) {
            Some("api-v1-1") => c.0 += 1,
            Some("api-v2-1") => c.1 += 1,
            other => panic!("answered by {other:?}"),
        }
    }
    let (v1, v2) = per.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    counters_agree(&h, [v1, 0, 0, v2]).await;
    h.stop().await;
    per
}

#[tokio::test]
async fn a_sticky_split_keeps_each_client_on_one_side_and_a_random_one_does_not() {
    let key = StickyKey::parse(MatchOn::Header, "x-zd-client").expect("a key");
    let sticky = sides_per_client(Routing { sticky: Some(key), ..Routing::default() }, "sticky").await;
    let on_both = |per: &[(u64, u64)]| per.iter().filter(|c| c.0 > 0 && c.1 > 0).count();
    assert_eq!(on_both(&sticky), 0, "every client on one side: {sticky:?}");
    // 30% of 40 clients expected on v2 (12); the crc32 of `c0`..`c39` decides, so the
    // count is fixed, and anywhere in a wide binomial band is a working split.
    let on_v2 = sticky.iter().filter(|c| c.1 > 0).count();
    assert!((3..=22).contains(&on_v2), "{on_v2} of 40 clients on v2: {sticky:?}");
    // About 10 requests per client at 30%: all on one side by chance for under 3% of them.
    let random = sides_per_client(Routing::default(), "random").await;
    assert!(on_both(&random) >= 28, "without stickiness most clients see both sides: {random:?}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("zd-haproxy-routing-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
