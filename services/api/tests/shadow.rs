//! Shadow copies of jobs on the real api and the real RabbitMQ: a copy (Host name
//! ending in `-shadow`) goes to the shadow sink and never to the work queue, and a pod
//! without a shadow sink refuses it with 421 and publishes nothing (a copied read it
//! answers as any other).

mod common;

use common::{queue_depth, unique, Api};

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn a_copied_job_goes_to_the_shadow_sink_and_an_original_to_the_work_queue() {
    let queue = unique("shadow_sink");
    let shadow = format!("{queue}.shadow");
    let api = Api::start(&queue, &[("ZD_SHADOW_QUEUE", shadow.clone())]);
    let copy = api.request("POST", "/jobs", &[JSON, ("host", "api-shadow:8080")], br#"{"id":"s-1","amount":1}"#);
    assert_eq!(copy.0, 202, "{copy:?}");
    let original = api.request("POST", "/jobs", &[JSON, ("host", "api:8080")], br#"{"id":"s-1","amount":1}"#);
    assert_eq!(original.0, 202, "{original:?}");
    assert_eq!(queue_depth(&shadow), 1, "the copy, in the shadow sink");
    assert_eq!(queue_depth(&queue), 1, "the original alone, in the work queue");
}

#[test]
fn without_a_shadow_sink_a_copied_job_is_refused_and_nothing_is_published() {
    let queue = unique("shadow_none");
    let api = Api::start(&queue, &[]);
    let (status, body) = api.request("POST", "/jobs", &[JSON, ("host", "api-shadow")], br#"{"id":"s-2","amount":1}"#);
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("ZD_SHADOW_QUEUE"), "the reason names the setting: {body}");
    assert_eq!(queue_depth(&queue), 0, "a refused copy must not reach the work queue");
    let (status, body) = api.request("GET", "/work?ms=1", &[("host", "api-shadow")], b"");
    assert_eq!(status, 200, "a copied read is harmless and answered as any read: {body}");
    let (status, _) = api.request("POST", "/jobs", &[JSON], br#"{"id":"s-2","amount":1}"#);
    assert_eq!(status, 202, "an original is accepted as before");
    assert_eq!(queue_depth(&queue), 1);
}
