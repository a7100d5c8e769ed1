//! The request timeout against the real binary and the real broker: `/work` and
//! `/jobs` that overrun `ZD_REQUEST_TIMEOUT_MS` are answered 503 with a reason, while
//! `/long-op` and `/stream` run past it untouched.

mod common;
use common::{queue_depth, unique, Api};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const LIMIT_MS: u64 = 400;

fn raw(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// The value of one series on `/metrics`, e.g. `zerodrop_http_requests_total{...}`.
fn metric(api: &Api, series: &str) -> Option<u64> {
    let (status, body) = api.request("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn timed(addr: SocketAddr, method: &str, path: &str, body: &str) -> (String, Duration) {
    let t = Instant::now();
    let text = raw(addr, method, path, body);
    (text, t.elapsed())
}

#[test]
fn work_that_overruns_the_timeout_is_answered_503_with_a_reason() {
    let env = [("ZD_REQUEST_TIMEOUT_MS", LIMIT_MS.to_string()), ("ZD_WARM_FILL_MS", "0".into())];
    let api = Api::start(&unique("timeout-work"), &env);

    let (fast, _) = timed(api.addr, "GET", "/work?ms=50", "");
    assert!(fast.starts_with("HTTP/1.1 200"), "{fast}");

    let (cut, took) = timed(api.addr, "GET", "/work?ms=3000", "");
    assert!(cut.starts_with("HTTP/1.1 503"), "{cut}");
    assert!(cut.contains("request timeout"), "the 503 says why: {cut}");
    assert!(cut.contains("\"status\":503"), "{cut}");
    assert_eq!(header(&cut, "retry-after"), Some("1"), "{cut}");
    assert!(
        took >= Duration::from_millis(LIMIT_MS) && took < Duration::from_millis(2000),
        "answered after {took:?}, expected about {LIMIT_MS} ms"
    );
    assert_eq!(metric(&api, "zerodrop_http_requests_total{route=\"/work\",status=\"503\"}"), Some(1));
    // A timeout is not a capacity refusal.
    assert_eq!(metric(&api, "zerodrop_capacity_rejected_total"), Some(0));

    // The slot the cut request held is free again: the instance still serves.
    let (after, _) = timed(api.addr, "GET", "/work?ms=10", "");
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
}

#[test]
fn long_operations_and_streams_are_not_cut_by_the_request_timeout() {
    let env = [("ZD_REQUEST_TIMEOUT_MS", LIMIT_MS.to_string())];
    let api = Api::start(&unique("timeout-long"), &env);

    let (op, took) = timed(api.addr, "POST", "/long-op?ms=1200", "");
    assert!(op.starts_with("HTTP/1.1 200"), "{op}");
    assert!(op.contains("\"done_ms\":1200"), "{op}");
    assert!(took >= Duration::from_millis(1200), "{took:?}");

    // Events keep coming for three times the timeout on one stream.
    let mut s = TcpStream::connect_timeout(&api.addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /stream HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let opened = Instant::now();
    let mut events = 0;
    while opened.elapsed() < Duration::from_millis(3 * LIMIT_MS) {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended after {:?}", opened.elapsed());
        events += usize::from(line.starts_with("id: "));
    }
    // One event per 100 ms tick.
    assert!(events >= 10, "only {events} events in {:?}", opened.elapsed());
}

#[test]
fn a_job_that_overruns_the_timeout_is_refused_and_not_published() {
    // The deliberate latency regression holds every /jobs before it publishes.
    let env = [("ZD_REQUEST_TIMEOUT_MS", LIMIT_MS.to_string()), ("ZD_REGRESSION", "latency=+1500ms".into())];
    let api = Api::start(&unique("timeout-jobs"), &env);

    let (cut, took) = timed(api.addr, "POST", "/jobs", r#"{"id":"slow-1","amount":7}"#);
    assert!(cut.starts_with("HTTP/1.1 503"), "{cut}");
    assert!(cut.contains("POST /jobs did not finish"), "{cut}");
    assert!(took < Duration::from_millis(1500), "answered after {took:?}");
    // Wait past the regression: had the handler kept running, it would have published.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(queue_depth(&api.queue), 0, "a job answered 503 by the timeout was published");
    assert_eq!(metric(&api, "zerodrop_jobs_published_total"), Some(0));
}

#[test]
fn by_default_the_longest_allowed_work_is_not_cut() {
    let api = Api::start(&unique("timeout-default"), &[("ZD_MAX_WORK_MS", "1000".into())]);
    let listening = api.step_line("listening");
    // ZD_MAX_WORK_MS plus 5 s of headroom.
    assert_eq!(listening["fields"]["timeout_ms"], 6000, "{listening}");
    let (done, _) = timed(api.addr, "GET", "/work?ms=1000", "");
    assert!(done.starts_with("HTTP/1.1 200"), "{done}");
}
