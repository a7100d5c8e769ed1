//! The kind path cannot run without a cluster: these tests are its proof. The pure
//! parts on recorded objects; the drive (apply, retire, down) against a fake API
//! server answering in the API's exact shapes and a stand-in for HAProxy's runtime API.

use super::fleet::{scale_patch, wait_gone};
use super::ledger::Ledger;
use super::*;
use crate::kind::fake_api::{self, Reply};
use crate::router::{RoutedFleet, VersionSpec};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

pub(super) fn spec(replicas: u32, regression: &str) -> TwoVersionsSpec {
    TwoVersionsSpec {
        replicas,
        v1: VersionSpec { name: "v1", regression: "none".into() },
        v2: VersionSpec { name: "v2", regression: regression.into() },
        routing: Default::default(),
        jobs: None,
    }
}

fn opts() -> KindOptions {
    KindOptions::new(None, false, "r1".into(), "t".into(), PathBuf::from("/tmp"))
}

fn env(o: &Rendered, name: &str) -> Option<String> {
    super::super::objects::container_env(&o.json, name)
}

#[test]
fn the_plan_is_exactly_progressive_s_seven_objects_in_the_run_s_namespace() {
    let (o, s) = (opts(), spec(2, "errors=2%"));
    let render = render_for(&o, &s);
    let objects = plan(&render, &s).unwrap();
    let direct = zerodrop_manifests::progressive(
        &zerodrop_manifests::RenderOptions { api_replicas: 2, ..render.clone() },
        ["none", "errors=2%"],
        &Default::default(),
        None,
    );
    assert_eq!(objects.len(), 7);
    for (got, want) in objects.iter().zip(Rendered::all(&direct)) {
        assert_eq!((&got.kind, &got.name), (&want.kind, &want.name));
        assert_eq!(got.json, want.json, "{} {}", got.kind, got.name);
        assert_eq!(got.namespace.as_deref(), Some("zerodrop-r1"), "{} {}", got.kind, got.name);
    }
    let d = |n: &str| super::super::objects::find(&objects, "Deployment", n).unwrap();
    for v in [STABLE, CANARY] {
        assert_eq!(d(v).json.pointer("/spec/replicas").and_then(|r| r.as_u64()), Some(2), "{v}");
        assert_eq!(env(d(v), "ZD_QUEUE").as_deref(), Some(QUEUE));
        assert_eq!(env(d(v), "ZD_CAPACITY").as_deref(), Some("64"));
        assert!(super::super::objects::images(&d(v).json)[0].ends_with("-t"), "the run's image tag");
    }
    assert_eq!(env(d(STABLE), "ZD_REGRESSION").as_deref(), Some("none"));
    assert_eq!(env(d(CANARY), "ZD_REGRESSION").as_deref(), Some("errors=2%"));
    assert_eq!(
        env(d(CANARY), "AMQP_URL").as_deref(),
        Some("amqp://guest:guest@rabbitmq.zerodrop-r1.svc.cluster.local:5672/%2f")
    );
}

#[test]
fn a_spec_the_manifests_cannot_honour_is_refused() {
    let render = render_for(&opts(), &spec(1, "none"));
    // A defect both versions share goes to v1 as well (the known bug of a sticky canary).
    let mut s = spec(1, "errors=5%@top=1;errors=10%@clients=20%");
    s.v1.regression = "errors=5%@top=1".into();
    let objects = plan(&render, &s).unwrap();
    let d = |n: &str| super::super::objects::find(&objects, "Deployment", n).unwrap();
    assert_eq!(env(d(STABLE), "ZD_REGRESSION").as_deref(), Some("errors=5%@top=1"));
    assert_eq!(env(d(CANARY), "ZD_REGRESSION").as_deref(), Some("errors=5%@top=1;errors=10%@clients=20%"));
    let mut s = spec(1, "none");
    s.v2.name = "green";
    assert!(plan(&render, &s).unwrap_err().to_string().contains("v1 and v2"));
    assert!(plan(&render, &spec(0, "none")).unwrap_err().to_string().contains("at least one pod"));
}

#[test]
fn the_runner_connects_where_the_plan_says() {
    let s = spec(3, "none");
    let objects = plan(&render_for(&opts(), &s), &s).unwrap();
    let t = targets(&objects).unwrap();
    let grace = zerodrop_stages::Stage::get(zerodrop_stages::StageName::SurgeJitter).pod.grace.as_secs_f64().ceil();
    assert_eq!(
        t,
        Targets {
            router_selector: "app=haproxy".into(),
            frontend_port: 8000,
            runtime_port: 9999,
            metrics_port: 8080,
            grace: Duration::from_secs(grace as u64),
        }
    );
    // The names the runtime API is driven with are the ones HAProxy runs with.
    let cfg = super::super::objects::find(&objects, "ConfigMap", ROUTER).unwrap().json["data"]["haproxy.cfg"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cfg.contains(&format!("backend {STABLE_BACKEND}\n")), "{cfg}");
    assert!(cfg.contains(&format!("    server {STABLE} api-v1.zerodrop-r1.svc.cluster.local:8080 check")), "{cfg}");
    assert!(cfg.contains(&format!("map_str_int({},0)", canary_map())), "{cfg}");
    assert!(cfg.contains("stats socket ipv4@127.0.0.1:9999 "), "{cfg}");
    assert_eq!(scale_patch(0), serde_json::json!({"spec": {"replicas": 0}}));
}

#[test]
fn the_dry_run_shows_exactly_what_is_applied() {
    let (o, s) = (opts(), spec(2, "latency=+80ms"));
    let p = dry_run(&o, &s).unwrap();
    let yaml = p
        .steps
        .iter()
        .find_map(|st| if let Step::Apply { yaml, .. } = st { Some(yaml.clone()) } else { None })
        .unwrap();
    let back = zerodrop_manifests::parse_strict(&yaml).unwrap();
    let applied = plan(&render_for(&o, &s), &s).unwrap();
    let back = Rendered::all(&back);
    assert_eq!(back.len(), applied.len());
    for (b, a) in back.iter().zip(&applied) {
        assert_eq!(b.json, a.json, "{} {}", a.kind, a.name);
    }
    let text = p.render();
    for words in
        ["namespace zerodrop-r1", "haproxy.zerodrop-r1.svc.cluster.local:80", "set server stable/api-v1 state drain"]
    {
        assert!(text.contains(words), "`{words}` missing:\n{text}");
    }
    assert!(dry_run(&o, &spec(0, "none")).is_err(), "the dry run refuses what the run would");
}

#[test]
fn pods_that_hold_up_a_rollout_say_why() {
    let ready: Pod = serde_json::from_str(include_str!("testdata/pod-api-v1-ready.json")).unwrap();
    let list: k8s_openapi::List<Pod> = serde_json::from_str(&format!(
        r#"{{"apiVersion":"v1","kind":"PodList","metadata":{{"resourceVersion":"7001"}},"items":[{},
        {{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"api-v2-7f6b5c4d3-a1b2c","namespace":"zerodrop-r1","creationTimestamp":"2026-11-23T13:02:30Z","labels":{{"app":"api-v2"}}}},"spec":{{"containers":[{{"name":"api","image":"zerodrop-api:init-t"}}]}}}},
        {{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"api-v2-7f6b5c4d3-d3e4f","namespace":"zerodrop-r1","labels":{{"app":"api-v2"}}}},"spec":{{"containers":[{{"name":"api","image":"zerodrop-api:init-t"}}],"nodeName":"zerodrop-worker"}},"status":{{"phase":"Pending","containerStatuses":[{{"name":"api","state":{{"waiting":{{"reason":"ErrImageNeverPull","message":"Container image \"zerodrop-api:init-t\" is not present with pull policy of Never"}}}},"lastState":{{}},"ready":false,"restartCount":0,"image":"zerodrop-api:init-t","imageID":""}}]}}}},
        {{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"api-v2-7f6b5c4d3-g5h6i","namespace":"zerodrop-r1","labels":{{"app":"api-v2"}}}},"spec":{{"containers":[{{"name":"api","image":"zerodrop-api:init-t"}}]}},"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"False","lastProbeTime":null,"lastTransitionTime":"2026-11-23T13:02:31Z"}}],"containerStatuses":[{{"name":"api","state":{{"running":{{"startedAt":"2026-11-23T13:02:32Z"}}}},"lastState":{{"terminated":{{"exitCode":1,"reason":"Error","startedAt":"2026-11-23T13:02:20Z","finishedAt":"2026-11-23T13:02:31Z"}}}},"ready":false,"restartCount":2,"image":"zerodrop-api:init-t","imageID":"","started":true}}]}}}},
        {{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"api-v2-7f6b5c4d3-j7k8l","namespace":"zerodrop-r1","deletionTimestamp":"2026-11-23T13:05:12Z","deletionGracePeriodSeconds":12,"labels":{{"app":"api-v2"}}}},"spec":{{"containers":[{{"name":"api","image":"zerodrop-api:init-t"}}]}},"status":{{"phase":"Running"}}}}]}}"#,
        serde_json::to_string(&ready).unwrap()
    ))
    .unwrap();
    assert_eq!(
        not_ready(&list.items),
        [
            "api-v2-7f6b5c4d3-a1b2c: no status yet",
            "api-v2-7f6b5c4d3-d3e4f: ErrImageNeverPull: Container image \"zerodrop-api:init-t\" is not present with pull policy of Never",
            "api-v2-7f6b5c4d3-g5h6i: running, not Ready (2 restarts)",
            "api-v2-7f6b5c4d3-j7k8l: being deleted",
        ]
    );
    let empty: k8s_openapi::List<Pod> =
        serde_json::from_str(r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}"#)
            .unwrap();
    assert!(not_ready(&empty.items).is_empty());
}

#[tokio::test]
async fn applying_the_plan_sends_the_seven_objects_to_the_run_s_namespace() {
    let s = spec(2, "none");
    let objects = plan(&render_for(&opts(), &s), &s).unwrap();
    // The API server answers an apply with the object; this one echoes the request's.
    let (client, requests) = fake_api::client_with_body(|_, body| Reply::ok(body.to_string()));
    apply::apply_all(&client, "zerodrop-r1", &objects).await.unwrap();
    let paths: Vec<String> =
        requests.lock().unwrap().iter().map(|r| r.split('?').next().unwrap_or("").to_string()).collect();
    assert_eq!(
        paths,
        [
            "PATCH /api/v1/namespaces/zerodrop-r1/configmaps/haproxy",
            "PATCH /apis/apps/v1/namespaces/zerodrop-r1/deployments/haproxy",
            "PATCH /api/v1/namespaces/zerodrop-r1/services/haproxy",
            "PATCH /apis/apps/v1/namespaces/zerodrop-r1/deployments/api-v1",
            "PATCH /api/v1/namespaces/zerodrop-r1/services/api-v1",
            "PATCH /apis/apps/v1/namespaces/zerodrop-r1/deployments/api-v2",
            "PATCH /api/v1/namespaces/zerodrop-r1/services/api-v2",
        ]
    );
    assert!(requests.lock().unwrap().iter().all(|r| r.contains("fieldManager=zerodrop") && r.contains("force=true")));
}

/// A stand-in for HAProxy's runtime API that answers `\n` (done) to every command and
/// writes it into `log`.
async fn fake_haproxy(log: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let mut s = tokio::io::BufReader::new(s);
            let mut line = String::new();
            let _ = s.read_line(&mut line).await;
            log.lock().unwrap().push(format!("haproxy: {}", line.trim_end()));
            let _ = s.get_mut().write_all(b"\n").await;
        }
    });
    addr
}

async fn fleet(client: kube::Client, haproxy: std::net::SocketAddr) -> KindVersionFleet {
    let (o, s) = (opts(), spec(1, "none"));
    let render = render_for(&o, &s);
    let objects = plan(&render, &s).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "zerodrop-r1");
    let mut targets = targets(&objects).unwrap();
    targets.grace = Duration::ZERO;
    KindVersionFleet {
        client,
        opts: o,
        render,
        objects,
        targets,
        api: RuntimeApi { transport: TcpTransport(haproxy), map: canary_map() },
        frontend: Forward::start(pods.clone(), "app=haproxy".into(), 8000).await.unwrap(),
        runtime: Forward::start(pods, "app=haproxy".into(), 9999).await.unwrap(),
        log_dir: std::env::temp_dir(),
        ledger: Default::default(),
        stop: Default::default(),
        log_tasks: Default::default(),
        jobs: Default::default(),
        loads: Default::default(),
    }
}

fn pod_json(file: &str, edit: impl Fn(&mut serde_json::Value)) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(file).unwrap();
    edit(&mut v);
    v
}

/// Stable is retired in order (drain at HAProxy, scale to zero, the pods' watch) and
/// only once the watch shows its pod gone: first MODIFIED (terminating), then DELETED
/// with the exited container.
#[tokio::test]
async fn retiring_stable_drains_scales_to_zero_then_waits_for_its_pods_to_go() {
    let ready = include_str!("testdata/pod-api-v1-ready.json");
    let deleting = pod_json(ready, |v| {
        v["metadata"]["deletionTimestamp"] = "2026-11-23T13:05:12Z".into();
        v["metadata"]["deletionGracePeriodSeconds"] = 12.into();
        v["metadata"]["resourceVersion"] = "5201".into();
    });
    let exited = pod_json(&deleting.to_string(), |v| {
        v["metadata"]["resourceVersion"] = "5230".into();
        v["status"]["containerStatuses"][0]["state"] = serde_json::json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-11-23T13:02:11Z", "finishedAt": "2026-11-23T13:05:04Z"}});
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let scaled = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api-v1", "namespace": "zerodrop-r1", "generation": 2, "resourceVersion": "5200"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "api-v1"}}, "template": {"metadata": {"labels": {"app": "api-v1"}}, "spec": {"containers": [{"name": "api", "image": "zerodrop-api:init-t"}]}}}});
    let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5201"}, "items": [deleting]});
    let event = |ty: &str, o: &serde_json::Value| format!("{}\n", serde_json::json!({"type": ty, "object": o}));
    let watch = vec![
        (Duration::from_millis(50), event("MODIFIED", &deleting)),
        (Duration::from_millis(100), event("DELETED", &exited)),
        (Duration::from_secs(30), String::new()),
    ];
    let (client, _) = fake_api::client(move |req| {
        seen.lock().unwrap().push(req.to_string());
        if req.starts_with("PATCH /apis/apps/v1/namespaces/zerodrop-r1/deployments/api-v1?") {
            Reply::ok(scaled.to_string())
        } else if req.starts_with("GET /api/v1/namespaces/zerodrop-r1/pods?") && req.contains("watch=true") {
            Reply::chunked(watch.clone())
        } else if req.starts_with("GET /api/v1/namespaces/zerodrop-r1/pods?") {
            Reply::ok(list.to_string())
        } else {
            Reply::not_found()
        }
    });
    let mut f = fleet(client, fake_haproxy(log.clone()).await).await;
    let r: Pod = serde_json::from_str(ready).unwrap();
    f.ledger.lock().unwrap().listed(STABLE, &[r], "2026-11-23T13:03:00Z".parse().unwrap());
    tokio::time::timeout(Duration::from_secs(5), f.retire_stable()).await.unwrap().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(log[0], "haproxy: set server stable/api-v1 state drain", "{log:#?}");
    assert!(log[1].starts_with("PATCH /apis/apps/v1/namespaces/zerodrop-r1/deployments/api-v1?"), "{log:#?}");
    assert!(log[2..].iter().all(|r| r.contains("labelSelector=app%3Dapi-v1")), "{log:#?}");
    assert!(f.ledger.lock().unwrap().present(STABLE).is_empty());
    // Created 13:02:10, its container exited 13:05:04.
    assert_eq!(f.pod_seconds(), 174.0);
}

#[tokio::test]
async fn a_pod_that_does_not_go_is_named_when_the_wait_ends() {
    let ready: serde_json::Value = serde_json::from_str(include_str!("testdata/pod-api-v1-ready.json")).unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5201"}, "items": [ready]});
    let (client, _) = fake_api::client(move |req| {
        if req.contains("watch=true") {
            Reply::chunked(vec![(Duration::from_secs(30), String::new())])
        } else {
            Reply::ok(list.to_string())
        }
    });
    let ledger = Mutex::new(Ledger::default());
    let err = wait_gone(Api::namespaced(client, "zerodrop-r1"), &ledger, STABLE, Duration::from_millis(500))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("api-v1 pods still there after 500ms: api-v1-5d9c7b8f6-r7t4w"), "{err}");

    // An empty list: nothing to wait for.
    let (client, _) = fake_api::client(|req| {
        if req.contains("watch=true") {
            Reply::chunked(vec![(Duration::from_secs(30), String::new())])
        } else {
            Reply::ok(r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}"#)
        }
    });
    wait_gone(Api::namespaced(client, "zerodrop-r1"), &ledger, STABLE, Duration::from_secs(2)).await.unwrap();
}

#[tokio::test]
async fn down_deletes_the_seven_objects_and_the_load_jobs() {
    let (client, requests) = fake_api::client(|req| {
        if req.starts_with("GET /api/v1/namespaces/zerodrop-r1/pods?") {
            Reply::ok(r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}"#)
        } else if req.starts_with("DELETE /api/v1/namespaces/zerodrop-r1/configmaps/") {
            Reply::not_found() // already gone: fine
        } else if req.starts_with("DELETE ") {
            Reply::ok(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"}"#)
        } else {
            Reply::not_found()
        }
    });
    let f = fleet(client, fake_haproxy(Default::default()).await).await;
    f.jobs.lock().unwrap().push("load-0-routed-r1".into());
    f.down().await;
    let deletes: Vec<String> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("DELETE ") && !r.contains("/pods"))
        .map(|r| r.split('?').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        deletes,
        [
            "DELETE /apis/apps/v1/namespaces/zerodrop-r1/deployments/haproxy",
            "DELETE /apis/apps/v1/namespaces/zerodrop-r1/deployments/api-v1",
            "DELETE /apis/apps/v1/namespaces/zerodrop-r1/deployments/api-v2",
            "DELETE /apis/batch/v1/namespaces/zerodrop-r1/jobs/load-0-routed-r1",
            "DELETE /api/v1/namespaces/zerodrop-r1/configmaps/haproxy",
            "DELETE /api/v1/namespaces/zerodrop-r1/services/haproxy",
            "DELETE /api/v1/namespaces/zerodrop-r1/services/api-v1",
            "DELETE /api/v1/namespaces/zerodrop-r1/services/api-v2",
        ]
    );
}

/// HAProxy's pod may be running before HAProxy has bound its stats socket: the
/// port-forward then closes each connection without an answer. The runner asks again
/// until it answers, within a bound.
#[tokio::test]
async fn the_runtime_api_is_awaited_until_haproxy_answers() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((s, _)) = l.accept().await {
            n += 1;
            if n <= 2 {
                drop(s); // the forward could not reach the socket yet
                continue;
            }
            let mut s = tokio::io::BufReader::new(s);
            let mut line = String::new();
            let _ = s.read_line(&mut line).await;
            let _ = s.get_mut().write_all(b"Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nTainted: 0\n\n").await;
        }
    });
    let api = RuntimeApi { transport: TcpTransport(addr), map: canary_map() };
    wait_answering(&api, Duration::from_secs(5)).await.unwrap();

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            drop(s)
        }
    });
    let api = RuntimeApi { transport: TcpTransport(addr), map: canary_map() };
    let err = format!("{:#}", wait_answering(&api, Duration::from_millis(300)).await.unwrap_err());
    // Closed unread, the connection may also end in a reset: either way, no answer.
    assert!(err.starts_with("haproxy's runtime API did not answer within 300ms: "), "{err}");
}

/// Compiles only if every step's future can move between threads (a caller may spawn
/// the run on a multi-threaded runtime).
#[allow(dead_code)]
fn every_step_is_send(p: &mut KindPlatform, f: &mut KindVersionFleet, owned: KindVersionFleet, s: &TwoVersionsSpec) {
    fn send<T: Send>(_: T) {}
    send(p.two_versions(s, Path::new("/tmp")));
    send(f.start_load(zerodrop_load::Profile::default()));
    send(f.set_canary_permille(50));
    send(f.snapshot());
    send(f.retire_stable());
    send(owned.down());
}
