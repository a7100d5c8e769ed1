//! A regression scoped to some clients, and the per-client counters a canary judged by
//! client reads, on the real api: the clients in scope fail, the others do not, and
//! `/metrics` counts each named client's requests and 5xx, ignoring ids out of bounds.

mod common;

use common::{unique, Api};

fn client_line(metrics: &str, client: &str, outcome: &str) -> Option<u64> {
    let series = format!("zerodrop_client_requests_total{{client=\"{client}\",outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
}

#[test]
fn a_scoped_regression_fails_its_clients_and_metrics_count_every_named_client() {
    let api = Api::start(&unique("per_client"), &[("ZD_REGRESSION", "errors=100%@top=1".into())]);
    let work = |client: Option<&str>| {
        let headers: Vec<(&str, &str)> = client.map(|c| ("x-zd-client", c)).into_iter().collect();
        api.request("GET", "/work?ms=1", &headers, b"").0
    };
    for _ in 0..3 {
        assert_eq!(work(Some("c0")), 500, "c0 is the heaviest client: in scope");
        assert_eq!(work(Some("c1")), 200, "c1 is out of scope");
    }
    assert_eq!(work(None), 200, "no client: outside every scoped defect");
    assert_eq!(work(Some("c10000")), 200, "an id beyond the bound is no client");
    let job = br#"{"id":"per-client-1","amount":3}"#;
    let headers = [("content-type", "application/json"), ("x-zd-client", "c0")];
    assert_eq!(api.request("POST", "/jobs", &headers, job).0, 500, "/jobs carries the regression too");

    let (_, _, text) = api.exchange("GET", "/metrics", &[], b"").expect("a scrape");
    assert_eq!(client_line(&text, "c0", "5xx"), Some(4), "{text}");
    assert_eq!(client_line(&text, "c0", "other"), None, "{text}");
    assert_eq!(client_line(&text, "c1", "other"), Some(3), "{text}");
    assert!(!text.contains("c10000"), "an id out of bounds must not become a label:\n{text}");
    let named: usize = text.lines().filter(|l| l.starts_with("zerodrop_client_requests_total{")).count();
    assert_eq!(named, 2, "{text}");
}
