//! The HTTP edges against the real binary and the real broker: a client that
//! half-closes after a complete request is answered; a body that stops arriving is
//! answered 408 with a reason within the body-read timeout, while a slow body that
//! keeps coming is served; and the answers hyper gives by itself before the router
//! (400, 431) are the documented status-only ones.

mod common;
use common::{queue_depth, unique, Api};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const BODY_TIMEOUT_MS: u64 = 300;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Everything until the server closes (a reset after the answer included).
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = text.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

fn json_body(text: &str) -> serde_json::Value {
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("body is not JSON: {text:?}"))
}

#[test]
fn a_client_that_half_closes_after_a_complete_request_gets_the_answer() {
    let api = Api::start(&unique("edge-halfclose"), &[("ZD_WARM_FILL_MS", "0".into())]);
    for _ in 0..10 {
        let mut s = connect(api.addr);
        // No `Connection: close`: the client only says it has nothing more to send.
        s.write_all(b"GET /work?ms=50 HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let text = read_all(&mut s);
        assert!(text.starts_with("HTTP/1.1 200"), "no answer after a half-close: {text:?}");
        assert_eq!(json_body(&text)["worked_ms"], 50, "{text}");
    }
}

/// Sends `head` and `first` and then nothing; returns the answer and when it came.
fn stall(addr: SocketAddr, head: &str, first: &[u8]) -> (String, Duration) {
    let mut s = connect(addr);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(first).unwrap();
    let sent = Instant::now();
    let text = read_all(&mut s);
    (text, sent.elapsed())
}

fn assert_408_in_time(text: &str, took: Duration) {
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    let v = json_body(text);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("body stopped arriving")), "{text}");
    assert_eq!(v["status"], 408, "{text}");
    assert_eq!(header(text, "connection"), Some("close"), "{text}");
    assert!(
        took >= Duration::from_millis(BODY_TIMEOUT_MS - 20) && took < Duration::from_millis(BODY_TIMEOUT_MS + 1000),
        "answered {took:?} after the last byte, expected about {BODY_TIMEOUT_MS} ms"
    );
}

#[test]
fn a_stalled_body_is_answered_408_with_a_reason_within_the_body_read_timeout() {
    let env = [("ZD_BODY_READ_TIMEOUT_MS", BODY_TIMEOUT_MS.to_string())];
    let api = Api::start(&unique("edge-stall"), &env);

    // Content-Length says 100, 10 bytes come.
    let head = "POST /jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let (text, took) = stall(api.addr, head, br#"{"id":"st-"#);
    eprintln!("short Content-Length: 408 after {} ms", took.as_millis());
    assert_408_in_time(&text, took);

    // One chunk, then silence.
    let head =
        "POST /jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (text, took) = stall(api.addr, head, b"a\r\n{\"id\":\"st-\r\n");
    eprintln!("stalled chunked body: 408 after {} ms", took.as_millis());
    assert_408_in_time(&text, took);

    assert_eq!(queue_depth(&api.queue), 0, "a job whose body never arrived was published");
    let (status, _) = api.request("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
}

#[test]
fn a_slow_body_that_keeps_coming_is_served() {
    let env = [("ZD_BODY_READ_TIMEOUT_MS", BODY_TIMEOUT_MS.to_string())];
    let api = Api::start(&unique("edge-slow"), &env);
    let body = br#"{"id":"slow-body-1","amount":7}"#;
    let mut s = connect(api.addr);
    let head = format!(
        "POST /jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // Three pieces, each gap under the timeout, the whole body well over it.
    let started = Instant::now();
    for piece in body.chunks(body.len().div_ceil(3)) {
        std::thread::sleep(Duration::from_millis(BODY_TIMEOUT_MS / 2));
        s.write_all(piece).unwrap();
    }
    let text = read_all(&mut s);
    assert!(started.elapsed() > Duration::from_millis(BODY_TIMEOUT_MS), "{:?}", started.elapsed());
    assert!(text.starts_with("HTTP/1.1 202"), "{text:?}");
}

#[test]
fn the_body_read_timeout_defaults_to_5_s() {
    let api = Api::start(&unique("edge-default"), &[]);
    let listening = api.step_line("listening");
    assert_eq!(listening["fields"]["body_timeout_ms"], 5000, "{listening}");
}

/// Sends `head` as is, tolerating a reset once the server has refused it.
fn answer_to(addr: SocketAddr, head: &[u8]) -> String {
    let mut s = connect(addr);
    let _ = s.write_all(head);
    read_all(&mut s)
}

#[test]
fn what_hyper_refuses_before_the_router_is_status_only_as_documented() {
    let api = Api::start(&unique("edge-hyper"), &[]);
    let limit = zerodrop_lifecycle::http::MAX_HEAD_BYTES;
    let padded = |len: usize| {
        let mut head = b"GET /nope HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Pad: ".to_vec();
        head.resize(len - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    // Under the head limit the router answers, with a reason.
    let text = answer_to(api.addr, &padded(limit - 1024));
    assert!(text.starts_with("HTTP/1.1 404"), "{text:?}");
    assert!(json_body(&text)["error"].is_string(), "{text}");

    // Over it, and for malformed heads, hyper answers by itself: a status, no body.
    let over = padded(limit + 1024);
    let cases: [(&[u8], &str); 3] = [
        (&over, "HTTP/1.1 431"),
        (b"GET /work?ms=1 HTTP/1.1\r\nHost: test\r\nno colon\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /work?ms=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "HTTP/1.1 400"),
    ];
    for (head, want) in cases {
        let text = answer_to(api.addr, head);
        assert!(text.starts_with(want), "{:?} -> {text:?}", String::from_utf8_lossy(&head[..head.len().min(60)]));
        assert_eq!(header(&text, "content-length"), Some("0"), "{text:?}");
    }
    // The instance is unharmed.
    assert_eq!(api.request("GET", "/work?ms=1", &[], b"").0, 200);
}
