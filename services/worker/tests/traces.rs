//! One job is one trace: `POST /jobs` on the real api, the job through the real broker,
//! the real worker applying it to the real ledger, both exporting over OTLP/HTTP to a
//! collector inside this test that decodes the protobuf export requests.

mod common;

use common::api::ApiProc;
use common::{stage_env, wait_until, Fixture};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zerodrop_stages::StageName;

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

/// A minimal OTLP/HTTP collector: `POST /v1/traces` with a protobuf body.
async fn collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let sink = sink.clone();
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let sink = sink.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    if path == "/v1/traces" {
                        let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
                        sink.lock().unwrap().extend(flatten(export));
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::new(),
                    )))
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
        }
    });
    (url, spans)
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    service: service.clone(),
                    name: s.name,
                    trace: s.trace_id,
                    id: s.span_id,
                    parent: s.parent_span_id,
                });
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_from_post_jobs_to_the_ledger_transaction() {
    let (endpoint, spans) = collector().await;
    let fx = Fixture::new("traces").await;
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()), ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string())];
    let stage = stage_env(StageName::SurgeJitter);
    let mut wenv = stage.clone();
    wenv.extend(otel.iter().cloned());
    let mut w = fx.spawn_worker(&wenv);
    w.wait_ready(Duration::from_secs(15)).await;

    let mut aenv = stage.clone();
    aenv.extend(otel.iter().cloned());
    let api = ApiProc::start(&common::amqp_url(), &fx.topology.queue, &aenv);

    let id = fx.job_id("traced");
    assert_eq!(api.post_job(&id, 1), Some(202));
    assert!(wait_until(Duration::from_secs(10), || async { fx.count_rows(&id).await == 1 }).await, "job not applied");

    let find = |spans: &[Span], service: &str, name: &str| {
        spans.iter().find(|s| s.service == service && s.name == name).cloned()
    };
    let complete = wait_until(Duration::from_secs(15), || async {
        let s = spans.lock().unwrap();
        find(&s, "worker", "ledger.transaction").is_some() && find(&s, "api", "publish").is_some()
    })
    .await;
    let all = spans.lock().unwrap().clone();
    assert!(complete, "spans received: {all:#?}");
    let publish = find(&all, "api", "publish").unwrap();
    let consume = find(&all, "worker", "consume").expect("a consume span");
    let tx = find(&all, "worker", "ledger.transaction").unwrap();
    let request = all
        .iter()
        .find(|s| s.service == "api" && s.id == publish.parent)
        .expect("publish inside the HTTP request span");
    assert_eq!(request.name, "request", "{all:#?}");
    assert_eq!(request.trace, publish.trace);
    assert_eq!(consume.trace, publish.trace, "the worker did not continue the api's trace");
    assert_eq!(consume.parent, publish.id, "consume is not a child of publish");
    assert_eq!(tx.trace, publish.trace);
    assert_eq!(tx.parent, consume.id, "the ledger transaction is not inside the consume span");
    assert!(all.iter().any(|s| s.service == "worker" && s.name == "ack" && s.parent == consume.id), "{all:#?}");

    api.stop();
    w.sigterm();
    let _ = w.wait_exit(Duration::from_secs(15)).await;
    fx.cleanup().await;
}
