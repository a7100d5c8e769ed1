//! Long-lived connections against the real binary and the real broker: a stream
//! resumed on another instance with Last-Event-ID loses nothing, and a long operation
//! that cannot finish in the drain budget is refused at admission, never cut.

mod common;
use common::{stage_env, unique, Api};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use zerodrop_stages::{Stage, StageName};

fn behaviour(deregistration_ms: u64, budget_ms: u64) -> Vec<(&'static str, String)> {
    let mut b = Stage::get(StageName::SurgeJitter).api;
    b.deregistration_wait = Duration::from_millis(deregistration_ms);
    b.drain_budget = Duration::from_millis(budget_ms);
    stage_env(b)
}

/// Opens `GET /stream`, optionally resuming, and returns the reader past the head.
fn open_stream(addr: SocketAddr, last: Option<u64>) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let resume = last.map(|l| format!("Last-Event-ID: {l}\r\n")).unwrap_or_default();
    write!(s, "GET /stream HTTP/1.1\r\nHost: test\r\n{resume}\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    r
}

/// Reads events until `until` says stop or the stream ends: (ids, saw `reconnect`).
fn read_events(r: &mut BufReader<TcpStream>, until: impl Fn(&[u64]) -> bool) -> (Vec<u64>, bool) {
    let (mut ids, mut line) = (Vec::new(), String::new());
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return (ids, false),
            Ok(_) => {}
        }
        if line.trim_end() == "event: reconnect" {
            return (ids, true);
        }
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            ids.push(id.parse().unwrap());
            if until(&ids) {
                return (ids, false);
            }
        }
    }
}

#[test]
fn a_stream_told_to_reconnect_resumes_on_another_instance_without_a_gap() {
    let env = behaviour(300, 2000);
    let mut a = Api::start(&unique("stream-a"), &env);
    let b = Api::start(&unique("stream-b"), &env);
    let mut on_a = open_stream(a.addr, None);
    let (before, told) = read_events(&mut on_a, |ids| ids.len() >= 5);
    assert!(!told && before.len() == 5);
    a.signal(libc::SIGTERM);
    let (rest, told) = read_events(&mut on_a, |_| false);
    assert!(told, "a draining instance must tell its streams to reconnect; got {rest:?}");
    let mut seen: Vec<u64> = before.into_iter().chain(rest).collect();
    let last = *seen.last().unwrap();
    // Events go by while the client is away; the resume must replay them.
    std::thread::sleep(Duration::from_millis(350));
    let mut on_b = open_stream(b.addr, Some(last));
    let (resumed, _) = read_events(&mut on_b, |ids| ids.len() >= 8);
    assert_eq!(resumed.first(), Some(&(last + 1)), "the resume starts right after Last-Event-ID");
    seen.extend(resumed);
    let gaps = seen.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(gaps, 0, "events must arrive once each, in order: {seen:?}");
    assert_eq!(a.wait(Duration::from_secs(10)), Some(0), "steps: {:#?}", a.steps());
}

/// A request on a fresh connection; the whole response text.
fn raw(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

#[test]
fn a_long_operation_that_cannot_finish_is_refused_at_admission_with_retry_after() {
    // Routed for 3 s after SIGTERM, then 4 s of drain budget.
    let mut api = Api::start(&unique("long-op"), &behaviour(3000, 4000));
    let addr = api.addr;
    let admitted_before = std::thread::spawn(move || raw(addr, "POST", "/long-op?ms=2500"));
    std::thread::sleep(Duration::from_millis(150));
    let t_sigterm = Instant::now();
    api.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));

    let refused = raw(addr, "POST", "/long-op?ms=10000").unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let retry_after: u64 = header(&refused, "retry-after").expect("Retry-After").parse().unwrap();
    // 3 s of routing minus the ~0.2 s already gone, rounded up.
    assert_eq!(retry_after, 3, "{refused}");
    let fits = raw(addr, "POST", "/long-op?ms=500").unwrap();
    assert!(fits.starts_with("HTTP/1.1 200"), "an operation that fits the budget is admitted: {fits}");

    // Retry-After is when this instance stops taking connections: by then a retry
    // can only reach another one.
    std::thread::sleep(
        Duration::from_secs(retry_after).saturating_sub(t_sigterm.elapsed()) + Duration::from_millis(300),
    );
    let again = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(again.is_err(), "after Retry-After this instance must no longer accept");

    let before = admitted_before.join().unwrap().unwrap();
    assert!(before.starts_with("HTTP/1.1 200"), "an admitted operation is never cut: {before}");
    assert_eq!(api.wait(Duration::from_secs(15)), Some(0), "steps: {:#?}", api.steps());
    assert!(api.steps().iter().any(|s| s == "long_op_refused"), "{:#?}", api.steps());
}
