//! Every endpoint answers bad input with a 4xx and a JSON reason, never a 500.

mod common;
use common::{unique, Api};

/// method, path, headers, body, expected status
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], u16);

#[test]
fn bad_input_gets_a_4xx_with_a_reason_on_every_endpoint() {
    let api = Api::start(&unique("badinput"), &[("ZD_MAX_WORK_MS", "1000".into())]);
    let json = [("content-type", "application/json")];
    let big = vec![b'a'; 20 * 1024];
    let cases: Vec<Case> = vec![
        ("GET", "/work", &[], b"", 400),
        ("GET", "/work?ms=", &[], b"", 400),
        ("GET", "/work?ms=abc", &[], b"", 400),
        ("GET", "/work?ms=-5", &[], b"", 400),
        ("GET", "/work?ms=1001", &[], b"", 400),
        ("GET", "/work?ms=1&evil=1", &[], b"", 400),
        ("POST", "/work?ms=1", &[], b"", 405),
        ("POST", "/jobs", &json, b"{\"id\":", 400),
        ("POST", "/jobs", &json, b"", 400),
        ("POST", "/jobs", &json, b"[1,2]", 422),
        ("POST", "/jobs", &json, br#"{"id":"a","amount":"7"}"#, 422),
        ("POST", "/jobs", &json, br#"{"id":7,"amount":7}"#, 422),
        ("POST", "/jobs", &json, br#"{"id":"a"}"#, 422),
        ("POST", "/jobs", &json, br#"{"id":"a","amount":7,"extra":1}"#, 422),
        ("POST", "/jobs", &json, br#"{"id":"has space","amount":7}"#, 422),
        ("POST", "/jobs", &json, br#"{"id":"a","amount":0}"#, 422),
        ("POST", "/jobs", &json, br#"{"id":"a","amount":1000001}"#, 422),
        ("POST", "/jobs", &[("content-type", "text/plain")], br#"{"id":"a","amount":7}"#, 415),
        ("POST", "/jobs", &[], br#"{"id":"a","amount":7}"#, 415),
        ("POST", "/jobs", &json, &big, 413),
        ("GET", "/jobs", &[], b"", 405),
        ("GET", "/nope", &[], b"", 404),
        ("DELETE", "/healthz", &[], b"", 405),
        ("POST", "/readyz", &[], b"", 405),
        ("PUT", "/metrics", &[], b"", 405),
    ];
    for (method, path, headers, body, want) in cases {
        let (status, text) = api.request(method, path, headers, body);
        assert_eq!(
            status,
            want,
            "{method} {path} {:?} -> {status} {text}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: body is not JSON: {text}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: no reason in {text}");
    }
    // And the good paths still work afterwards.
    assert_eq!(api.request("GET", "/work?ms=1", &[], b"").0, 200);
    assert_eq!(api.request("POST", "/jobs", &json, br#"{"id":"ok-1","amount":7}"#).0, 202);
    let (status, metrics) = api.request("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(metrics.contains("zerodrop_shutdown_phase 1"), "{metrics}");
}
