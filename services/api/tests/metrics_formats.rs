//! `/metrics` of the real api in both exposition formats, each read by a real parser
//! of its format: the format follows `Accept`, and the same series are in both.

mod common;

use common::{unique, Api};
use zerodrop_metrics_check::{
    header, openmetrics_sample_names, openmetrics_type, parse_openmetrics, parse_text, text_histogram_count,
    text_sample_names, text_type, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_ACCEPT, TEXT_ACCEPT, TEXT_CONTENT_TYPE,
};

const DURATION: &str = "zerodrop_http_request_duration_seconds";

#[test]
fn metrics_follow_accept_and_parse_in_either_format() {
    let api = Api::start(&unique("metrics_formats"), &[]);
    assert_eq!(api.request("GET", "/work?ms=1", &[], b"").0, 200);
    let job = br#"{"id":"metrics-formats-1","amount":3}"#;
    assert_eq!(api.request("POST", "/jobs", &[("content-type", "application/json")], job).0, 202);

    // Also the warm-up: after it, `/metrics` itself has its series in both formats.
    for (accept, content_type) in [
        (None, TEXT_CONTENT_TYPE),
        (Some("*/*"), TEXT_CONTENT_TYPE),
        (Some(TEXT_ACCEPT), TEXT_CONTENT_TYPE),
        (Some("application/openmetrics-text;q=0.4, text/plain;q=0.9"), TEXT_CONTENT_TYPE),
        (Some(PROMETHEUS_ACCEPT), OPENMETRICS_CONTENT_TYPE),
        (Some("application/openmetrics-text"), OPENMETRICS_CONTENT_TYPE),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (status, head, _) = api.exchange("GET", "/metrics", &headers, b"").expect("a scrape");
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "content-type"), Some(content_type), "Accept: {accept:?}\n{head}");
        assert_eq!(header(&head, "vary"), Some("accept"), "{head}");
    }

    let (_, _, text) = api.exchange("GET", "/metrics", &[("accept", TEXT_ACCEPT)], b"").expect("a scrape");
    let scrape = parse_text(&text);
    assert_eq!(text_type(&scrape, DURATION), Some("histogram"), "{text}");
    assert!(text_histogram_count(&scrape, DURATION).is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(text_type(&scrape, "zerodrop_http_requests_total"), Some("counter"), "{text}");
    assert_eq!(text_type(&scrape, "zerodrop_jobs_published_total"), Some("counter"), "{text}");
    assert_eq!(text_type(&scrape, "zerodrop_build_info"), Some("gauge"), "{text}");

    let (_, _, om) = api.exchange("GET", "/metrics", &[("accept", PROMETHEUS_ACCEPT)], b"").expect("a scrape");
    let families = parse_openmetrics(&om);
    assert_eq!(openmetrics_type(&families, DURATION).as_deref(), Some("histogram"), "{om}");
    assert_eq!(openmetrics_type(&families, "zerodrop_http_requests").as_deref(), Some("counter"), "{om}");
    assert_eq!(openmetrics_type(&families, "zerodrop_jobs_published").as_deref(), Some("counter"), "{om}");
    assert!(om.contains("zerodrop_jobs_published_total 1\n"), "{om}");
    assert_eq!(text_sample_names(&scrape), openmetrics_sample_names(&families));
    assert!(!zerodrop_metrics_check::is_openmetrics(&text), "the classic text has no # EOF:\n{text}");
}
