//! Fault injection and the publish breaker, against the real api binary and the real
//! RabbitMQ: the fault header is inert unless the pod was started with `ZD_FAULTS=on`,
//! and the breaker opens, answers fast 503s, and closes again through a half-open
//! probe when a real slowdown on the broker path comes and goes.

mod common;

use common::{unique, Api};
use std::time::{Duration, Instant};
use zerodrop_platform::local::fault_relay::FaultRelay;
use zerodrop_platform::NetFault;

const FAULT: (&str, &str) = ("x-zd-fault", "error=500,delay=300ms");

#[test]
fn the_fault_header_does_nothing_unless_faults_are_switched_on() {
    let off = Api::start(&unique("faults-off"), &[]);
    let started = Instant::now();
    let (status, head, _) = off.exchange("GET", "/work?ms=1", &[FAULT], b"").unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(!head.to_ascii_lowercase().contains("x-zd-fault-injected"), "{head}");
    assert!(started.elapsed() < Duration::from_millis(300), "no delay was added");

    let on = Api::start(&unique("faults-on"), &[("ZD_FAULTS", "on".into())]);
    let started = Instant::now();
    let (status, head, body) = on.exchange("GET", "/work?ms=1", &[FAULT], b"").unwrap();
    assert_eq!(status, 500, "{head}");
    assert!(head.to_ascii_lowercase().contains("x-zd-fault-injected: 1"), "{head}");
    assert!(body.contains("injected fault"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300), "the delay came first");
    let (status, _, body) = on.exchange("GET", "/work?ms=1", &[("x-zd-fault", "explode")], b"").unwrap();
    assert_eq!(status, 400, "a bad header is a 400 with a reason: {body}");
    // Without the header, nothing is configured: a normal answer.
    assert_eq!(on.exchange("GET", "/work?ms=1", &[], b"").unwrap().0, 200);
}

fn broker_host_port() -> (String, u16) {
    let url = common::amqp_url();
    let authority = url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("127.0.0.1:5672");
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5672"));
    (host.to_string(), port.parse().unwrap_or(5672))
}

fn post_job(api: &Api, id: &str) -> (u16, String, Duration) {
    let t = Instant::now();
    let body = format!(r#"{{"id":"{id}","amount":1}}"#);
    let (s, head, body) =
        api.exchange("POST", "/jobs", &[("content-type", "application/json")], body.as_bytes()).unwrap();
    (s, format!("{head}\n{body}"), t.elapsed())
}

fn metric(api: &Api, line_start: &str) -> Option<f64> {
    let (_, text) = api.try_request("GET", "/metrics", &[], b"").ok()?;
    text.lines().find(|l| l.starts_with(line_start))?.rsplit(' ').next()?.parse().ok()
}

#[test]
fn the_breaker_opens_on_a_slow_broker_path_and_closes_after_it_heals() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = rt.block_on(FaultRelay::start(broker_host_port())).unwrap();
    let url = common::amqp_url().replacen(
        &format!("{}:{}", broker_host_port().0, broker_host_port().1),
        &relay.addr().to_string(),
        1,
    );
    let api = Api::start(
        &unique("breaker"),
        &[
            ("AMQP_URL", url),
            ("ZD_BREAKER", "on".into()),
            // With confirms a publish waits for the broker, so the slow path shows.
            ("ZD_PUBLISHER_CONFIRMS", "true".into()),
            ("ZD_BREAKER_FAILURES", "3".into()),
            ("ZD_BREAKER_OPEN_MS", "1500".into()),
            ("ZD_BREAKER_SLOW_MS", "200".into()),
        ],
    );
    assert_eq!(post_job(&api, "healthy").0, 202);

    relay.set(Some(NetFault::Delay { each_way: Duration::from_millis(400) }));
    // Three concurrent publishes, each slower than 200 ms: the breaker opens while they
    // are still out, and each of them still lands (nothing is cancelled).
    let slow: Vec<_> = (0..3)
        .map(|i| {
            let addr = api.addr;
            std::thread::spawn(move || {
                let body = format!(r#"{{"id":"slow-{i}","amount":1}}"#);
                let req = format!(
                    "POST /jobs HTTP/1.1\r\nHost: t\r\nConnection: close\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(req.as_bytes()).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(350));
    let (status, text, took) = post_job(&api, "while-open");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("breaker open") && text.to_ascii_lowercase().contains("retry-after"), "{text}");
    assert!(took < Duration::from_millis(200), "answered at once, not after the slow path: {took:?}");
    for t in slow {
        let out = t.join().unwrap();
        assert!(out.starts_with("HTTP/1.1 202"), "the slow publishes still land: {out}");
    }
    assert_eq!(metric(&api, "zerodrop_breaker_state "), Some(1.0));

    relay.set(None);
    std::thread::sleep(Duration::from_millis(1600));
    let (status, text, _) = post_job(&api, "probe");
    assert_eq!(status, 202, "the half-open probe goes through and closes the breaker: {text}");
    assert_eq!(metric(&api, "zerodrop_breaker_state "), Some(0.0));
    for to in ["open", "half_open", "closed"] {
        let n = metric(&api, &format!("zerodrop_breaker_transitions_total{{to=\"{to}\"}}"));
        assert_eq!(n, Some(1.0), "{to}");
    }
    let logged: Vec<String> = api.steps().into_iter().filter(|s| s == "breaker").collect();
    assert_eq!(logged.len(), 3, "every transition is logged: {:?}", api.steps());
    drop(relay);
}
