//! Engine behaviour on real sockets: determinism, job bookkeeping, connection reuse.

mod common;

use bytes::Bytes;
use common::{profile, run, status};
use http_body_util::Full;
use hyper::Response;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zerodrop_load::{Class, FixedResolver, Kind, Live, Mix, Profile};

#[tokio::test]
async fn same_seed_same_kinds() {
    let addr = common::http(|_, _| status(200)).await;
    let p = Profile {
        rate_per_sec: 200,
        duration: Duration::from_millis(200),
        mix: Mix { fast: 5, slow: 3, job: 2 },
        slow_ms: 1,
        ..profile(0)
    };
    let a = run(&Profile { seed: 7, ..p.clone() }, addr).await;
    let b = run(&Profile { seed: 7, ..p.clone() }, addr).await;
    let c = run(&Profile { seed: 8, ..p.clone() }, addr).await;
    assert_eq!(a.records.len(), 40);
    assert_eq!(kinds(&a), kinds(&b));
    assert_ne!(kinds(&a), kinds(&c));
    for k in [Kind::Fast, Kind::Slow, Kind::Job] {
        assert!(kinds(&a).contains(&k), "{k:?} missing from the mix");
    }
    assert!(a.records.iter().all(|x| x.class == Class::Ok));
    assert!(a.records.windows(2).all(|w| w[0].at_us < w[1].at_us), "records in schedule order");
}

#[tokio::test]
async fn accepted_jobs_are_exactly_the_202s() {
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = accepted.clone();
    let addr = common::http(move |req, body| {
        let well_formed = req.method() == hyper::Method::POST
            && req.uri().path() == "/jobs"
            && req.headers().get("content-type").is_some_and(|v| v == "application/json")
            && req.headers().contains_key("host");
        let Ok(job) = serde_json::from_slice::<serde_json::Value>(body) else { return status(400) };
        let (Some(id), Some(amount)) = (job["id"].as_str(), job["amount"].as_u64()) else { return status(400) };
        if !well_formed || !(1..=1000).contains(&amount) {
            return status(400);
        }
        // Accept odd amounts, turn even ones away: a deterministic split.
        if amount % 2 == 1 {
            seen.lock().unwrap().insert(id.to_string());
            status(202)
        } else {
            status(409)
        }
    })
    .await;
    let p = Profile {
        rate_per_sec: 100,
        duration: Duration::from_millis(300),
        mix: Mix { fast: 0, slow: 0, job: 1 },
        ..profile(0)
    };
    let r = run(&p, addr).await;
    let ok = r.records.iter().filter(|x| x.class == Class::Ok).count();
    let rejected = r.records.iter().filter(|x| x.class == Class::Http4xx).count();
    assert_eq!(ok + rejected, 30, "only 202 and 409 expected");
    assert!(ok > 0 && rejected > 0);
    let got: BTreeSet<String> = r.accepted_jobs.iter().cloned().collect();
    assert_eq!(got.len(), r.accepted_jobs.len(), "no duplicates");
    assert_eq!(got, *accepted.lock().unwrap());
    assert!(got.iter().all(|id| id.starts_with("t-")));
}

/// One second of the mixed plan at 400/s: the profile the marker and client tests vary.
fn mixed_second() -> Profile {
    Profile {
        rate_per_sec: 400,
        duration: Duration::from_millis(1000),
        mix: Mix { fast: 5, slow: 3, job: 2 },
        slow_ms: 1,
        ..profile(0)
    }
}

fn kinds(r: &zerodrop_load::RunResult) -> Vec<Kind> {
    r.records.iter().map(|x| x.kind).collect()
}

/// The marked share carries the header, exactly it, and marking leaves the rest of the
/// plan (the kinds) as it was: a run with testers is the same load plus a header.
#[tokio::test]
async fn marked_requests_and_only_they_carry_the_marker() {
    // 200 for a request with the marker, 409 without: the record's class says what the
    // server saw.
    let addr =
        common::http(|req, _| status(if req.headers().get("x-tester").is_some_and(|v| v == "1") { 200 } else { 409 }))
            .await;
    let p = mixed_second();
    let mark = zerodrop_load::Mark { permille: 100, header: "x-tester".into(), value: "1".into() };
    let marked = run(&Profile { mark: Some(mark.clone()), ..p.clone() }, addr).await;
    let plain = run(&p, addr).await;
    assert_eq!(marked.records.len(), 400);
    assert_eq!(kinds(&marked), kinds(&plain), "marking must not shift the mix");
    assert!(!plain.records.iter().any(|r| r.marked || r.class == Class::Ok));
    let n = marked.records.iter().filter(|r| r.marked).count();
    // 10% of 400 = 40 expected; a binomial's 4-sigma band is 40 ± 24.
    assert!((16..=64).contains(&n), "{n} of 400 marked at 100 permille");
    for (i, r) in marked.records.iter().enumerate() {
        assert_eq!(r.marked, mark.marks(p.seed, i as u64));
        assert_eq!(r.class == Class::Ok, r.marked, "request {i}: the server saw the marker iff it was marked");
    }
}

/// Every request names its client in the header, the server sees exactly the counts
/// the records give, and clients leave the plan's kinds as they were.
#[tokio::test]
async fn each_request_names_its_client_and_the_heavy_ones_dominate() {
    let seen = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let log = seen.clone();
    let addr = common::http(move |req, _| match req.headers().get("x-zd-client").and_then(|v| v.to_str().ok()) {
        Some(c) => {
            *log.lock().unwrap().entry(c.to_string()).or_default() += 1;
            status(200)
        }
        None => status(409),
    })
    .await;
    let p = mixed_second();
    let clients = zerodrop_load::Clients { count: 10, zipf_s: 1.0, header: "x-zd-client".into() };
    let with = run(&Profile { clients: Some(clients), ..p.clone() }, addr).await;
    let without_clients = kinds(&run(&p, addr).await);
    assert_eq!(kinds(&with), without_clients, "clients must not shift the mix");
    let mut by_client = std::collections::BTreeMap::<String, u64>::new();
    for r in &with.records {
        assert_eq!(r.class, Class::Ok, "the server saw a client header");
        *by_client.entry(zerodrop_load::Clients::id(r.client.expect("every request has a client"))).or_default() += 1;
    }
    assert_eq!(by_client, *seen.lock().unwrap(), "the server counted what the records say");
    // H(10) = 2.93: client 0 expects 34% of 400 requests, client 9 about 3.4%.
    let c0 = by_client.get("c0").copied().unwrap_or(0);
    assert!((100..180).contains(&c0), "{by_client:?}");
}

/// A copied request goes out twice: the original, which the run's own records,
/// counters and accepted jobs see exactly as without a mirror, and the copy, which
/// alone carries the mirror's header and the `-shadow` Host, carries the same job id, and is kept apart,
/// paired by sequence number. Nothing is copied after the shadow phase.
#[tokio::test]
async fn mirrored_requests_go_out_twice_and_only_the_copy_carries_the_header() {
    let jobs = Arc::new(Mutex::new((BTreeSet::<String>::new(), BTreeSet::<String>::new())));
    let seen = jobs.clone();
    let misplaced_host = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let misplaced = misplaced_host.clone();
    let addr = common::http(move |req, body| {
        let copy = req.headers().get("x-canary").is_some_and(|v| v == "always");
        // A copy's Host is marked as Envoy marks its copies, an original's never.
        let host = req.headers().get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
        if copy != (host.contains("-shadow:") || host.ends_with("-shadow")) {
            misplaced.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(id) =
            serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|j| j["id"].as_str().map(String::from))
        {
            let mut s = seen.lock().unwrap();
            if copy {
                s.1.insert(id)
            } else {
                s.0.insert(id)
            };
        }
        // The shadow fails everything: none of it may show in the run's own records.
        status(if copy {
            503
        } else if req.method() == hyper::Method::POST {
            202
        } else {
            200
        })
    })
    .await;
    let p = mixed_second();
    let mirror = zerodrop_load::Mirror {
        permille: 250,
        header: "x-canary".into(),
        value: "always".into(),
        until: Duration::from_millis(500),
    };
    let with = run(&Profile { mirror: Some(mirror.clone()), ..p.clone() }, addr).await;
    let plain = run(&p, addr).await;
    assert_eq!(kinds(&with), kinds(&plain), "mirroring must not shift the mix");
    assert!(with.records.iter().all(|r| r.class == Class::Ok), "a copy's answer leaked into the run's records");
    assert_eq!(with.accepted_jobs, plain.accepted_jobs);
    assert_eq!(
        misplaced_host.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a copy without the -shadow Host, or an original with it"
    );
    assert!(with.mirrored_accepted_jobs.is_empty(), "the shadow answered no copy 202");
    let want: Vec<u64> = (0..400u64)
        .filter(|&s| mirror.mirrors(p.seed, s, Duration::from_micros(with.records[s as usize].at_us)))
        .collect();
    let got: Vec<u64> = with.mirrored.iter().map(|m| m.seq).collect();
    assert_eq!(got, want, "the copies are the plan's choice, in sequence order");
    // 25% of the 200 requests of the first half second: 50 ± 4 sigma (about 25).
    assert!((25..=75).contains(&got.len()), "{} copies", got.len());
    for m in &with.mirrored {
        let original = with.records[m.seq as usize];
        assert_eq!((m.record.class, m.record.at_us, m.record.kind), (Class::Http503, original.at_us, original.kind));
        assert!(m.record.at_us < 500_000, "copied after the shadow phase: {m:?}");
    }
    let (originals, copies) = jobs.lock().unwrap().clone();
    assert!(!copies.is_empty() && copies.is_subset(&originals), "a copy carries its original's job id");
}

fn with_close() -> Response<Full<Bytes>> {
    let mut r = status(200);
    r.headers_mut().insert("connection", "close".parse().unwrap());
    r
}

#[tokio::test]
async fn connection_close_forces_a_new_connection() {
    let addr = common::http(|_, _| with_close()).await;
    let r = run(&profile(5), addr).await;
    assert!(r.records.iter().all(|x| x.class == Class::Ok));
    assert_eq!(r.connections_opened, 5);
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let addr = common::http(|_, _| status(200)).await;
    let r = run(&profile(5), addr).await;
    assert!(r.records.iter().all(|x| x.class == Class::Ok));
    assert!(r.connections_opened < 5, "opened {}", r.connections_opened);
}

#[tokio::test]
async fn the_pool_never_exceeds_max_connections() {
    // Slow answers force requests to queue for the two connections.
    let addr = common::raw(|stream| async move {
        let service = hyper::service::service_fn(|_req| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, std::convert::Infallible>(status(200))
        });
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
    })
    .await;
    let p = Profile { rate_per_sec: 200, duration: Duration::from_millis(100), max_connections: 2, ..profile(0) };
    let live = Arc::new(Live::new());
    let r = zerodrop_load::run(&p, Arc::new(FixedResolver(addr)), "t", live.clone()).await;
    assert_eq!(r.records.len(), 20);
    assert!(r.records.iter().all(|x| x.class == Class::Ok));
    assert!(r.connections_opened <= 2, "opened {}", r.connections_opened);
    let snap = live.snapshot();
    assert_eq!((snap.sent, snap.ok), (20, 20));
    assert!(snap.errors.is_empty());
}

#[tokio::test]
async fn idle_connection_closed_by_the_server_is_not_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request as keep-alive, then closes while the client holds it idle.
    let addr = common::raw(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    })
    .await;
    let p = Profile { rate_per_sec: 5, duration: Duration::from_millis(600), ..profile(0) };
    let r = run(&p, addr).await;
    assert_eq!(r.records.iter().map(|x| x.class).collect::<Vec<_>>(), vec![Class::Ok; 3]);
    assert_eq!(r.connections_opened, 3);
}
