//! The glue between the API server's pod watch and the stage: it timestamps each change
//! on the runner's clock, feeds the pure tracker (`pods.rs`) into the shared stage state,
//! follows the load pod, and streams every pod's log from its container's start into
//! `<log_dir>/<pod>.log` (a deleted pod's log is gone). Apart from the tracker because
//! the stage state and the log streams use the tracker's types: the glue sits above all
//! three, so none of them needs it.

use super::log_stream::{spawn_container_log_stream, spawn_log_stream, LineHook};
use super::pods::{app_of, facts, job_of, log_ready, PodFacts, Seen, Terminated};
use super::state::{Shared, StageState};
use crate::{now_ms, PodLog, RawEvent};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Watches every pod of the namespace until `stop`; records the api and worker pods'
/// events ([`record`]), follows the load pod, and streams each pod's log into `log_dir`.
pub fn spawn_watch(api: Api<Pod>, shared: Arc<Shared>, log_dir: PathBuf, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api.clone(), watcher::Config::default()).default_backoff());
        let (mut warned, mut synced) = (false, false);
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => break,
                ev = stream.next() => ev,
            };
            let Some(ev) = ev else { break };
            let at = now_ms();
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    if !warned {
                        eprintln!("warning: watching pods: {e} (retrying)");
                        warned = true;
                    }
                    continue;
                }
            };
            shared.with(|s| record(s, at, &ev, &log_dir));
            match &ev {
                Event::Apply(p) | Event::InitApply(p) => follow(&api, &shared, &log_dir, &stop, &facts(p)),
                Event::Delete(p) => {
                    follow(&api, &shared, &log_dir, &stop, &facts(p));
                    let name = p.metadata.name.clone().unwrap_or_default();
                    shared.with(|s| {
                        if s.load.pod.as_deref() == Some(name.as_str()) && s.load.exit.is_none() {
                            s.load.exit =
                                Some(Terminated { exit_code: -1, signal: None, reason: Some("pod deleted".into()) });
                        }
                    });
                }
                Event::InitDone if !synced => {
                    synced = true;
                    shared.with(|s| s.synced += 1);
                }
                Event::InitDone | Event::Init => {}
            }
            shared.changed.notify_waiters();
        }
    })
}

/// What the pod watch records of one event, all but what needs the API (log streams,
/// the load pod: [`spawn_watch`]): the api and worker pods' events, their logs'
/// paths, the api pods' nodes, and once a re-list is complete an exit for every pod
/// it no longer lists (the watcher says such pods were deleted; it sends no delete
/// for them). Pure: `at` is when the event arrived.
pub fn record(s: &mut StageState, at: i64, ev: &Event<Pod>, log_dir: &Path) {
    match ev {
        Event::Init => s.pods.begin_resync(),
        Event::InitApply(p) | Event::Apply(p) => record_pod(s, at, &facts(p), log_dir),
        Event::Delete(p) => {
            let f = facts(p);
            // The last state first: a final status may only arrive with the delete.
            record_pod(s, at, &f, log_dir);
            if let Some(app) = app_of(&f.labels) {
                let seen = s.pods.deleted(at, &f.name);
                push(&mut s.events, &f.name, app, seen);
            }
        }
        Event::InitDone => {
            for (pod, seen) in s.pods.end_resync(at) {
                if let Some(app) = s.pods.app(&pod) {
                    push(&mut s.events, &pod, app, seen);
                }
            }
        }
    }
}

fn record_pod(s: &mut StageState, at: i64, f: &PodFacts, log_dir: &Path) {
    let Some(app) = app_of(&f.labels) else { return };
    if !s.pods.knows(&f.name) {
        s.pod_logs.push(PodLog { pod: f.name.clone(), app, path: log_path(log_dir, &f.name) });
    }
    let seen = s.pods.observe(at, f, s.pre_stop_ms);
    push(&mut s.events, &f.name, app, seen);
    if let (Some(node), "api") = (&f.node, app) {
        s.api_nodes.insert(node.clone());
    }
}

fn log_path(log_dir: &Path, pod: &str) -> PathBuf {
    log_dir.join(format!("{pod}.log"))
}

/// Beside the pod's own log, and not among the stage's pod logs: the samples are not
/// lifecycle evidence.
fn queue_log_path(log_dir: &Path, pod: &str) -> PathBuf {
    log_dir.join(format!("{pod}.queues.log"))
}

fn push(events: &mut Vec<RawEvent>, pod: &str, app: &'static str, seen: Seen) {
    events.extend(seen.into_iter().map(|(unix_ms, kind, detail)| RawEvent {
        unix_ms,
        pod: pod.to_string(),
        app,
        kind,
        detail,
    }));
}

/// Opens the log stream of an api or worker pod once its container has started, and
/// follows the load pod (its state, its log with the line hook).
fn follow(api: &Api<Pod>, shared: &Arc<Shared>, log_dir: &Path, stop: &CancellationToken, f: &PodFacts) {
    let app = app_of(&f.labels);
    let is_load = shared.with(|s| s.load.job.is_some() && s.load.job.as_deref() == job_of(&f.labels));
    if app.is_none() && !is_load {
        return;
    }
    let path = log_path(log_dir, &f.name);
    shared.with(|s| {
        if app.is_some() {
            if log_ready(f) && s.streaming.insert(f.name.clone()) {
                let task = spawn_log_stream(api.clone(), f.name.clone(), path.clone(), None, stop.clone());
                s.log_tasks.push(task);
            }
            // A native sidecar has started before the regular container has: its log is
            // there once the main one is.
            let queues = zerodrop_manifests::QUEUES_CONTAINER;
            if log_ready(f)
                && f.sidecars.iter().any(|c| c == queues)
                && s.streaming.insert(format!("{}/{queues}", f.name))
            {
                let path = queue_log_path(log_dir, &f.name);
                let task = spawn_container_log_stream(
                    api.clone(),
                    f.name.clone(),
                    Some(queues.to_string()),
                    path.clone(),
                    None,
                    stop.clone(),
                );
                s.log_tasks.push(task);
                s.queue_logs.insert(f.name.clone(), path);
            }
        } else {
            let l = &mut s.load;
            if l.pod.is_none() {
                l.pod = Some(f.name.clone());
                l.log_path = Some(path.clone());
            }
            if l.pod.as_deref() == Some(f.name.as_str()) {
                l.waiting = f.waiting.clone();
                if f.node.is_some() {
                    l.node = f.node.clone();
                }
                if l.exit.is_none() {
                    l.exit = f.terminated.clone();
                }
                if log_ready(f) && !l.streaming {
                    l.streaming = true;
                    let hook = load_line_hook(shared.clone());
                    l.log_task =
                        Some(spawn_log_stream(api.clone(), f.name.clone(), path.clone(), Some(hook), stop.clone()));
                }
            }
        }
    });
}

/// The load pod's line hook: its first line that says the load began
/// ([`super::load_job::load_began`]; the data-plane gate's lines before it do not)
/// says requests are flowing, and its per-second progress lines
/// (`   3s  sent 600  ok 597  errors refused=3`, on stderr, which the pod log
/// carries) feed the run's live counters.
pub fn load_line_hook(shared: Arc<Shared>) -> LineHook {
    Box::new(move |line| {
        let began = super::load_job::load_began(line);
        let (was, live) = shared.with(|s| {
            let was = s.load.started;
            s.load.started |= began;
            (was, s.load.live.clone())
        });
        if let (Some(live), Some((_, counts))) = (live, zerodrop_load::LiveSnapshot::parse_progress_line(line)) {
            live.show(&counts);
        }
        if began && !was {
            shared.changed.notify_waiters();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::fake_api::{self, Reply};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    fn pod(json: serde_json::Value) -> PodFacts {
        facts(&serde_json::from_value(json).unwrap())
    }

    /// `text` as the API server sends it with `timestamps=true`: each line after the
    /// kubelet's RFC 3339 nanosecond time of it (here 13:02:11 plus `i` ms).
    pub(crate) fn stamped(text: &str) -> String {
        text.lines().enumerate().map(|(i, l)| format!("2026-11-23T13:02:11.{:03}000000Z {l}\n", i)).collect()
    }

    fn recorded(name: &str) -> serde_json::Value {
        let text = match name {
            "pending" => include_str!("testdata/pod-pending.json"),
            "scheduled" => include_str!("testdata/pod-scheduled.json"),
            "completed" => include_str!("testdata/pod-completed.json"),
            _ => include_str!("testdata/pod-running.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zerodrop-kind-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f()
    }

    const WORKER_LINES: &str = "{\"timestamp\":\"2026-11-23T13:02:11.204Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"starting\",\"step\":\"started\",\"service\":\"worker\",\"pid\":1},\"target\":\"zerodrop_lifecycle::telemetry\"}\n{\"timestamp\":\"2026-11-23T13:02:11.391Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"consuming\",\"step\":\"consuming\"},\"target\":\"zerodrop_worker\"}\n";

    #[test]
    fn a_log_can_be_followed_once_the_pod_has_a_node_and_its_container_started() {
        assert!(!log_ready(&pod(recorded("pending"))), "no spec.nodeName yet");
        assert!(!log_ready(&pod(recorded("scheduled"))), "node, but the container is still being created");
        assert!(log_ready(&pod(recorded("running"))));
    }

    /// Defect 1 (issue #8): the watcher saw the pod before it had a node and opened
    /// its log then; the API server answered 200 with an empty body and the log stayed
    /// empty. The fake API server answers the log request exactly so until the
    /// kubelet has started the container (which it does 300 ms after the watch opens,
    /// the watch then delivering the scheduled and the running pod objects).
    #[tokio::test]
    async fn a_pod_seen_before_it_had_a_node_still_gets_its_whole_log() {
        let watch_opened: Arc<Mutex<Option<Instant>>> = Arc::default();
        let opened = watch_opened.clone();
        let started = move || opened.lock().unwrap().is_some_and(|t| t.elapsed() >= Duration::from_millis(300));
        let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "4211"}, "items": [recorded("pending")]});
        let event = |ty: &str, o: &str| format!("{}\n", serde_json::json!({"type": ty, "object": recorded(o)}));
        let (client, requests) = fake_api::client(move |req| {
            let long = Duration::from_secs(30);
            if req.contains("/log?") {
                if started() {
                    Reply::chunked(vec![(Duration::ZERO, stamped(WORKER_LINES)), (long, String::new())])
                } else {
                    Reply::ok("") // what the API server answers for a pod with no node
                }
            } else if req.contains("watch=true") {
                let mut w = watch_opened.lock().unwrap();
                if w.is_some() {
                    return Reply::chunked(vec![(long, String::new())]);
                }
                *w = Some(Instant::now());
                Reply::chunked(vec![
                    (Duration::from_millis(100), event("MODIFIED", "scheduled")),
                    (Duration::from_millis(300), event("MODIFIED", "running")),
                    (long, String::new()),
                ])
            } else if req.starts_with("GET /api/v1/namespaces/zerodrop/pods/worker-6d8f7b9c4-q7zpl") {
                Reply::ok(recorded(if started() { "running" } else { "scheduled" }).to_string())
            } else if req.starts_with("GET /api/v1/namespaces/zerodrop/pods?") {
                Reply::ok(list.to_string())
            } else {
                Reply::not_found()
            }
        });
        let dir = scratch("early-log");
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let watch = spawn_watch(Api::namespaced(client, "zerodrop"), shared.clone(), dir.clone(), stop.clone());
        let path = dir.join("worker-6d8f7b9c4-q7zpl.log");
        let got = wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&path).is_ok_and(|l| l.contains("\"step\":\"consuming\""))
        })
        .await;
        stop.cancel();
        let _ = watch.await;
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let reqs = requests.lock().unwrap().clone();
        assert!(got, "the worker's log is {} bytes: {log:?}; requests: {reqs:#?}", log.len());
        assert!(log.starts_with(WORKER_LINES), "{log}");
        assert_eq!(shared.with(|s| s.pod_logs.len()), 1);
    }

    type Requests = Arc<std::sync::Mutex<Vec<String>>>;

    /// A fake API whose first log answer is `first` and every later one `later`, and
    /// whose pod object says the worker runs until its log has been opened twice
    /// (completed after): a stream the API server ended early, then reopened.
    fn reopening_api(first: String, later: String) -> (kube::Client, Requests, Arc<std::sync::atomic::AtomicU32>) {
        use std::sync::atomic::Ordering::SeqCst;
        let opens = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = opens.clone();
        let (client, requests) = fake_api::client(move |req| {
            if req.contains("/log?") {
                Reply::ok(if n.fetch_add(1, SeqCst) == 0 { first.clone() } else { later.clone() })
            } else if req == "GET /api/v1/namespaces/zerodrop/pods/worker-6d8f7b9c4-q7zpl" {
                let done = n.load(SeqCst) > 1;
                Reply::ok(recorded(if done { "completed" } else { "running" }).to_string())
            } else {
                Reply::not_found()
            }
        });
        (client, requests, opens)
    }

    /// Follows the worker's log (or one container's) into `path` until it ends.
    async fn follow_to_end(client: kube::Client, container: Option<&str>, path: &Path) {
        let task = spawn_container_log_stream(
            Api::namespaced(client, "zerodrop"),
            "worker-6d8f7b9c4-q7zpl".into(),
            container.map(str::to_string),
            path.to_path_buf(),
            None,
            CancellationToken::new(),
        );
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// Defect 1 (issue #8), the other half: a stream that ends without a line while
    /// the pod object says its container runs is opened again, not given up.
    #[tokio::test]
    async fn an_empty_stream_of_a_running_container_is_reopened() {
        let (client, requests, opens) = reopening_api(String::new(), stamped(WORKER_LINES));
        let path = scratch("reopen").join("worker.log");
        follow_to_end(client, None, &path).await;
        let reqs = requests.lock().unwrap().clone();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), WORKER_LINES, "{reqs:#?}");
        assert_eq!(opens.load(std::sync::atomic::Ordering::SeqCst), 2, "{reqs:#?}");
        assert!(reqs.iter().all(|r| !r.contains("container=")), "the pod's one container is the API's pick: {reqs:#?}");
    }

    /// A sidecar's stream names its container on every opening, reopenings included.
    #[tokio::test]
    async fn a_sidecar_stream_names_its_container() {
        let (client, requests, _) = reopening_api(String::new(), stamped("zdq 1000 3 3 0 0\n"));
        let path = scratch("sidecar").join("worker.queues.log");
        follow_to_end(client, Some("queues"), &path).await;
        let reqs = requests.lock().unwrap().clone();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "zdq 1000 3 3 0 0\n");
        let logs: Vec<&String> = reqs.iter().filter(|r| r.contains("/log?")).collect();
        assert_eq!(logs.len(), 2, "{reqs:#?}");
        assert!(logs.iter().all(|r| r.contains("container=queues")), "{reqs:#?}");
    }

    /// A followed stream that ends after some lines while the container still runs
    /// (the API server closed it) is opened again at `sinceTime` = the last line's
    /// second. The API repeats that second's lines; none is written twice.
    #[tokio::test]
    async fn a_stream_that_ends_while_its_container_runs_is_reopened_without_repeats() {
        let all: Vec<String> = (0..5)
            .map(|i| format!("{{\"timestamp\":\"2026-11-23T13:02:11.{i:03}Z\",\"level\":\"INFO\",\"fields\":{{\"message\":\"job done\",\"n\":{i}}},\"target\":\"zerodrop_worker\"}}\n"))
            .collect();
        // From 13:02:11 on, the second answer repeats the three lines already written.
        let (client, requests, _) = reopening_api(stamped(&all[..3].concat()), stamped(&all.concat()));
        let path = scratch("reopen-repeats").join("worker.log");
        follow_to_end(client, None, &path).await;
        let reqs = requests.lock().unwrap().clone();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), all.concat(), "{reqs:#?}");
        let logs: Vec<&String> = reqs.iter().filter(|r| r.contains("/log?")).collect();
        assert_eq!(logs.len(), 2, "{reqs:#?}");
        assert!(
            logs[0].contains("follow=true") && logs[0].contains("timestamps=true") && !logs[0].contains("sinceTime")
        );
        assert!(logs[1].contains("sinceTime=2026-11-23T13%3A02%3A11Z"), "{}", logs[1]);
    }

    /// Defect 2 (issue #8): a pod's log went on being written after the stage's
    /// snapshot (the delete's shutdown lines). Once `stop` fires, nothing more enters.
    #[tokio::test]
    async fn a_log_stream_is_cut_when_the_stage_ends() {
        let before = "{\"timestamp\":\"2026-11-23T13:02:30.000Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"listening\",\"step\":\"listening\"},\"target\":\"zerodrop_api\"}\n";
        let after = "{\"timestamp\":\"2026-11-23T13:03:10.000Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"SIGTERM\",\"step\":\"sigterm\"},\"target\":\"zerodrop_lifecycle\"}\n";
        let (client, _) = fake_api::client(move |req| {
            if req.contains("/log?") {
                Reply::chunked(vec![(Duration::ZERO, stamped(before)), (Duration::from_millis(700), stamped(after))])
            } else {
                Reply::not_found()
            }
        });
        let dir = scratch("cut");
        let path = dir.join("api.log");
        let stop = CancellationToken::new();
        let task =
            spawn_log_stream(Api::namespaced(client, "zerodrop"), "api-x".into(), path.clone(), None, stop.clone());
        assert!(
            wait_until(Duration::from_secs(5), || std::fs::read_to_string(&path)
                .is_ok_and(|l| l.contains("listening")))
            .await
        );
        stop.cancel(); // the stage's snapshot
        let ended = tokio::time::timeout(Duration::from_secs(3), task).await.is_ok();
        tokio::time::sleep(Duration::from_millis(900)).await;
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(!log.contains("sigterm"), "a line from after the stage's end entered its log:\n{log}");
        assert!(ended, "the stream did not end when the stage did");
    }

    /// Defect 3 (issue #8): the load pod's per-second progress lines feed the live
    /// counters (they stayed at `sent=0 ok=0`).
    #[test]
    fn the_load_pods_progress_lines_feed_the_live_counters() {
        let shared = Arc::new(Shared::default());
        let live = Arc::new(zerodrop_load::Live::new());
        shared.with(|s| s.load.live = Some(live.clone()));
        let mut hook = load_line_hook(shared.clone());
        for line in [
            "gate: awaiting 1 pods through 10.96.0.12:80 (GET /healthz on a new connection each): api-7c9f6d5b8d-4xk2p",
            "gate: api-7c9f6d5b8d-4xk2p answered (1/1) after 3 probes, 52 ms",
            "gate: data plane carries 1/1 endpoints after 3 probes, 52 ms",
        ] {
            hook(line);
        }
        assert!(!shared.with(|s| s.load.started), "the gate's lines are not the load");
        for line in [
            "load begins: 200 rps for 37s to 10.96.0.12:80",
            "   1s  sent 200  ok 200  errors 0",
            "   2s  sent 400  ok 391  errors refused=3 reset=1 http_503=5",
        ] {
            hook(line);
        }
        let s = live.snapshot();
        assert_eq!((s.sent, s.ok), (400, 391));
        assert_eq!(s.errors.get("refused"), Some(&3));
        assert_eq!(s.errors.values().sum::<u64>(), 9);
        assert!(shared.with(|s| s.load.started));
        // The generator prints exactly what is parsed back.
        let line = s.progress_line(2);
        assert_eq!(line, "   2s  sent 400  ok 391  errors http_503=5 refused=3 reset=1");
        assert_eq!(zerodrop_load::LiveSnapshot::parse_progress_line(&line), Some((2, s)));
        assert_eq!(zerodrop_load::LiveSnapshot::parse_progress_line("total 7400  failed 0 (0.00%)"), None);
    }
}
