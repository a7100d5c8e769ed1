//! Each stage's Deployments carry exactly the stage's pod spec, strategy and env.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use zerodrop_manifests::{base, parse_strict, stage, to_yaml, App, Object, RenderOptions};
use zerodrop_stages::{Entrypoint, Stage, StageName};

fn deployment<'a>(objects: &'a [Object], name: &str) -> &'a Deployment {
    objects
        .iter()
        .find_map(|o| match o {
            Object::Deployment(d) if o.name() == name => Some(d.as_ref()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn container(d: &Deployment) -> &Container {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn plain_env(env: &[EnvVar]) -> Vec<(String, String)> {
    env.iter().filter_map(|e| Some((e.name.clone(), e.value.clone()?))).collect()
}

#[test]
fn every_deployment_reflects_its_stage() {
    let o = RenderOptions::default();
    for s in Stage::all() {
        // Through YAML and back, so what is checked is what a reader of k8s/ sees.
        let objects = parse_strict(&to_yaml(&stage(&s, &o))).unwrap();
        for app in App::ALL {
            let d = deployment(&objects, app.name());
            let labels = d.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["app"], app.name());
            assert_eq!(labels["zerodrop.dev/stage"], s.name.as_str());
            let spec = d.spec.as_ref().unwrap();
            assert_eq!(spec.template.metadata.as_ref().unwrap().labels.as_ref(), Some(labels));
            assert_eq!(spec.selector.match_labels.as_ref().unwrap().len(), 1, "the selector must not change per stage");

            let rolling = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
            assert_eq!(rolling.max_surge, Some(IntOrString::Int(s.strategy.max_surge as i32)));
            assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(s.strategy.max_unavailable as i32)));

            let pod = spec.template.spec.as_ref().unwrap();
            assert_eq!(pod.termination_grace_period_seconds, Some(s.pod.grace.as_secs() as i64));

            let c = container(d);
            let form = match s.pod.entrypoint {
                Entrypoint::Shell => "shell",
                Entrypoint::Init => "init",
            };
            assert_eq!(c.image.as_deref(), Some(format!("zerodrop-{}:{form}-dev", app.name()).as_str()));
            assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));

            let pre_stop = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).and_then(|h| h.sleep.as_ref());
            if s.pod.pre_stop.is_zero() {
                assert!(c.lifecycle.is_none(), "{}: no preStop expected", s.name);
            } else {
                assert_eq!(pre_stop.map(|p| p.seconds), Some(s.pod.pre_stop.as_secs() as i64), "{}", s.name);
            }

            let r = c.readiness_probe.as_ref().unwrap();
            assert_eq!(r.http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
            let secs = |d: std::time::Duration| ((d.as_millis() + 500) / 1000).max(1) as i32;
            assert_eq!(r.period_seconds, Some(secs(s.pod.readiness.period)));
            assert_eq!(r.timeout_seconds, Some(secs(s.pod.readiness.timeout)));
            assert_eq!(r.failure_threshold, Some(s.pod.readiness.failure_threshold as i32));
            assert_eq!(r.success_threshold, Some(s.pod.readiness.success_threshold as i32));
            let l = c.liveness_probe.as_ref().unwrap();
            assert_eq!(l.http_get.as_ref().unwrap().path.as_deref(), Some("/healthz"));

            // The stage's knobs come last, exactly as `to_env` lists them, and no
            // platform variable shadows one of them.
            let behaviour = match app {
                App::Api => s.api,
                App::Worker => s.worker,
            };
            let knobs: Vec<(String, String)> =
                behaviour.to_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let env = c.env.as_ref().unwrap();
            let (platform, tail) = env.split_at(env.len() - knobs.len());
            assert_eq!(plain_env(tail), knobs, "{} {}", s.name, app.name());
            assert!(platform.iter().all(|e| !knobs.iter().any(|(k, _)| *k == e.name)));
            let pod_var = platform.iter().find(|e| e.name == "ZD_POD").unwrap();
            let field = pod_var.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
            assert_eq!(field.field_path, "metadata.name");
            let plain = plain_env(platform);
            let get = |k: &str| plain.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let port = if app == App::Api { "8080" } else { "9090" };
            assert_eq!(get("ZD_LISTEN"), Some(format!("0.0.0.0:{port}").as_str()));
            assert_eq!(get("ZD_LOG_FORMAT"), Some("json"));
            // What the kubelet sleeps in preStop, which the app subtracts from SIGTERM.
            let slept = pre_stop.map(|p| p.seconds * 1000).unwrap_or(0);
            assert_eq!(get("ZD_PRESTOP_MS"), Some(slept.to_string().as_str()), "{}", s.name);
            let res = c.resources.as_ref().unwrap();
            let requests = res.requests.as_ref().unwrap();
            assert!(requests.contains_key("cpu") && requests.contains_key("memory"), "{} {}", s.name, app.name());
            assert!(res.limits.as_ref().unwrap().contains_key("memory"));
            assert!(!res.limits.as_ref().unwrap().contains_key("cpu"), "a CPU limit would throttle the timings");
            let avoid = pod.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).unwrap();
            let term =
                &avoid.required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms[0];
            let expr = &term.match_expressions.as_ref().unwrap()[0];
            assert_eq!((expr.key.as_str(), expr.operator.as_str()), ("zerodrop.dev/pool", "NotIn"));
            assert_eq!(expr.values.as_deref(), Some(&["load".to_string()][..]));
            assert_eq!(get("ZD_QUEUE"), Some("zerodrop.jobs"));
            assert_eq!(get("AMQP_URL"), Some("amqp://guest:guest@rabbitmq.zerodrop.svc.cluster.local:5672/%2f"));
            match app {
                App::Api => assert_eq!(get("ZD_CAPACITY"), Some("16")),
                App::Worker => {
                    assert_eq!(get("ZD_DB_SCHEMA"), Some("zerodrop"));
                    assert_eq!(get("ZD_JOB_WORK_MS"), Some("250"));
                    assert_eq!(
                        get("DATABASE_URL"),
                        Some("postgres://postgres@postgres.zerodrop.svc.cluster.local:5432/postgres")
                    );
                }
            }
        }
    }
}

#[test]
fn naive_runs_the_shell_image_without_pre_stop() {
    let objects = stage(&Stage::get(StageName::Naive), &RenderOptions::default());
    for app in App::ALL {
        let c = container(deployment(&objects, app.name()));
        assert_eq!(c.image.as_deref(), Some(format!("zerodrop-{}:shell-dev", app.name()).as_str()));
        assert!(c.lifecycle.is_none());
        assert_eq!(c.command, None, "the image's shell-form CMD must run, not an override");
    }
}

#[test]
fn surge_jitter_surges_without_unavailability() {
    let objects = stage(&Stage::get(StageName::SurgeJitter), &RenderOptions::default());
    for app in App::ALL {
        let d = deployment(&objects, app.name());
        let rolling = d.spec.as_ref().unwrap().strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(container(d).image.as_deref(), Some(format!("zerodrop-{}:init-dev", app.name()).as_str()));
    }
}

#[test]
fn the_api_service_sends_port_80_to_the_api_pods() {
    let objects = stage(&Stage::get(StageName::Pid1), &RenderOptions::default());
    let svc: &Service = objects
        .iter()
        .find_map(|o| match o {
            Object::Service(s) if o.name() == "api" => Some(s.as_ref()),
            _ => None,
        })
        .unwrap();
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.selector.as_ref().unwrap()["app"], "api");
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 80);
    assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    let api = container(deployment(&objects, "api"));
    let ports = api.ports.as_ref().unwrap();
    assert_eq!((ports[0].name.as_deref(), ports[0].container_port), (Some("http"), 8080));
}

#[test]
fn options_reach_the_render() {
    let o = RenderOptions {
        namespace: "lab".into(),
        image_tag: "abc".into(),
        api_replicas: 2,
        worker_replicas: 5,
        ..RenderOptions::default()
    };
    let objects = stage(&Stage::get(StageName::ReverseDrain), &o);
    assert!(objects.iter().all(|x| x.metadata().namespace.as_deref() == Some("lab")));
    assert_eq!(deployment(&objects, "api").spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(deployment(&objects, "worker").spec.as_ref().unwrap().replicas, Some(5));
    assert_eq!(container(deployment(&objects, "worker")).image.as_deref(), Some("zerodrop-worker:init-abc"));
}

#[test]
fn base_has_a_namespace_and_ready_checked_infrastructure() {
    let objects = base(&RenderOptions::default());
    let kinds: Vec<_> = objects.iter().map(|o| (o.kind(), o.name())).collect();
    assert_eq!(
        kinds,
        [
            ("Namespace", "zerodrop"),
            ("Deployment", "rabbitmq"),
            ("Service", "rabbitmq"),
            ("Deployment", "postgres"),
            ("Service", "postgres")
        ]
    );
    let pg = container(deployment(&objects, "postgres"));
    assert_eq!(pg.image.as_deref(), Some("postgres:16-alpine"));
    assert_eq!(plain_env(pg.env.as_ref().unwrap()), [("POSTGRES_HOST_AUTH_METHOD".to_string(), "trust".to_string())]);
    let cmd = pg.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.as_ref().unwrap();
    assert_eq!(cmd[0], "pg_isready");
    let mq = container(deployment(&objects, "rabbitmq"));
    assert!(mq.image.as_deref().unwrap().starts_with("rabbitmq:3"));
    let tcp = mq.readiness_probe.as_ref().unwrap().tcp_socket.as_ref().unwrap();
    assert_eq!(tcp.port, IntOrString::String("amqp".into()));
    assert_eq!(mq.ports.as_ref().unwrap()[0].container_port, 5672);
    for c in [pg, mq] {
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap().len(), 2, "{}: cpu and memory requested", c.name);
        assert!(r.limits.as_ref().unwrap().contains_key("memory"), "{}", c.name);
    }
}
