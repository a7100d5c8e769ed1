//! One stage of the experiment as two Deployments (api, worker) and the api Service.

use crate::objects::{labels, Object};
use crate::placement::Reserve;
use crate::pod::{clamp_i32, deployment, env, env_from_field, pod_spec, service, DeploymentParts, APP_LABEL};
use crate::RenderOptions;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec, Probe, SleepAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;
use zerodrop_stages::{AppBehaviour, Entrypoint, Stage};

/// The api pods' accept-queue sidecar's container name (its log holds the samples).
pub const QUEUES_CONTAINER: &str = "queues";
/// How often the sidecar samples: finer than the reconnect report's 100 ms buckets.
pub const QUEUES_EVERY_MS: u64 = 50;

/// Which stage a pod was rendered from. Changing it is what makes applying the next
/// stage's file roll the pods.
pub const STAGE_LABEL: &str = "zerodrop.dev/stage";

/// The two apps of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Api,
    Worker,
}

impl App {
    pub const ALL: [App; 2] = [App::Api, App::Worker];

    pub fn name(self) -> &'static str {
        match self {
            App::Api => "api",
            App::Worker => "worker",
        }
    }

    /// The container port: the api's HTTP port, the worker's admin (probe) port.
    pub fn port(self) -> (&'static str, i32) {
        match self {
            App::Api => ("http", 8080),
            App::Worker => ("admin", 9090),
        }
    }

    /// `zerodrop-api:shell-<tag>` / `zerodrop-api:init-<tag>`: the entrypoint form is
    /// baked into the image's CMD, so the stage picks the image, not a command.
    pub fn image(self, entrypoint: Entrypoint, tag: &str) -> String {
        format!("zerodrop-{}:{}-{tag}", self.name(), form(entrypoint))
    }

    /// The `services/Dockerfile` target that builds [`App::image`].
    pub fn dockerfile_target(self, entrypoint: Entrypoint) -> String {
        format!("{}-{}", self.name(), form(entrypoint))
    }

    fn behaviour(self, stage: &Stage) -> &AppBehaviour {
        match self {
            App::Api => &stage.api,
            App::Worker => &stage.worker,
        }
    }
}

fn form(entrypoint: Entrypoint) -> &'static str {
    match entrypoint {
        Entrypoint::Shell => "shell",
        Entrypoint::Init => "init",
    }
}

/// The api Deployment, the api Service (port 80 -> 8080) and the worker Deployment;
/// with [`RenderOptions::broker_relay`], the relay's objects first, so that they are
/// applied before the api pods that connect through them.
pub fn stage(stage: &Stage, o: &RenderOptions) -> Vec<Object> {
    let relay = if o.broker_relay { crate::relay::broker_relay(o) } else { Vec::new() };
    let apps = [
        Object::Deployment(Box::new(app_deployment(App::Api, stage, o))),
        Object::Service(Box::new(service("api", &o.namespace, "api", 80, App::Api.port().0))),
        Object::Deployment(Box::new(app_deployment(App::Worker, stage, o))),
    ];
    relay.into_iter().chain(apps).collect()
}

fn app_deployment(app: App, stage: &Stage, o: &RenderOptions) -> Deployment {
    let name = app.name();
    let mut annotations = labels([("zerodrop.dev/lever", stage.lever.as_str())]);
    if !stage.targets.is_empty() {
        annotations.insert("zerodrop.dev/targets".into(), stage.targets.clone());
    }
    deployment(DeploymentParts {
        name,
        namespace: &o.namespace,
        labels: labels([(APP_LABEL, name), (STAGE_LABEL, stage.name.as_str())]),
        selector: labels([(APP_LABEL, name)]),
        annotations,
        replicas: match app {
            App::Api => o.api_replicas,
            App::Worker => o.worker_replicas,
        },
        strategy: DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(clamp_i32(stage.strategy.max_surge))),
                max_unavailable: Some(IntOrString::Int(clamp_i32(stage.strategy.max_unavailable))),
            }),
        },
        // Rounded up: rounding down could SIGKILL before the app's guardian fires,
        // which the stage's timing budget (`Stage::validate`) rules out.
        pod: PodSpec {
            affinity: Some(crate::placement::app_affinity()),
            init_containers: (app == App::Api && o.listen_queue_sidecar).then(|| vec![queues_sidecar(app, o)]),
            ..pod_spec(vec![container(app, stage, o)], Some(ceil_secs(stage.pod.grace)))
        },
    })
}

/// A native sidecar (an init container that keeps running: `restartPolicy: Always`,
/// Kubernetes 1.29+): it starts before the api and is stopped only after the api
/// container has exited, so it samples the listen queue through the whole drain. It
/// shares the pod's network namespace, so the kernel tables it reads are the pod's.
fn queues_sidecar(app: App, o: &RenderOptions) -> Container {
    Container {
        name: QUEUES_CONTAINER.into(),
        image: Some(o.load_image()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "queues".into(),
            "--port".into(),
            app.port().1.to_string(),
            "--every".into(),
            format!("{QUEUES_EVERY_MS}ms"),
        ]),
        restart_policy: Some("Always".into()),
        resources: Some(Reserve::QUEUES.requirements()),
        ..Container::default()
    }
}

pub(crate) fn container(app: App, stage: &Stage, o: &RenderOptions) -> Container {
    let (port_name, port) = app.port();
    let p = &stage.pod.readiness;
    Container {
        name: app.name().into(),
        image: Some(o.app_image(app, stage.pod.entrypoint)),
        // On kind the images reach the nodes with `kind load docker-image` (no
        // registry to pull from); with `image_registry` every run's tag is new, so
        // the first use pulls it either way.
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(app_env(app, stage, o)),
        resources: Some(
            match app {
                App::Api => Reserve::API,
                App::Worker => Reserve::WORKER,
            }
            .requirements(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some(port_name.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // Kubernetes probes count in whole seconds while a stage counts in
        // milliseconds: each value is rounded to the nearest second, and at least 1
        // because 0 is not a valid period or timeout (naive's 500 ms period -> 1 s).
        readiness_probe: Some(Probe {
            http_get: Some(http_get("/readyz", port_name)),
            period_seconds: Some(probe_secs(p.period)),
            timeout_seconds: Some(probe_secs(p.timeout)),
            failure_threshold: Some(clamp_i32(p.failure_threshold)),
            success_threshold: Some(clamp_i32(p.success_threshold)),
            ..Probe::default()
        }),
        // Liveness only catches a wedged process; it is lenient so that it never
        // restarts a pod that is slow because the node is busy with the experiment.
        liveness_probe: Some(Probe {
            http_get: Some(http_get("/healthz", port_name)),
            period_seconds: Some(10),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        lifecycle: (!stage.pod.pre_stop.is_zero()).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                // Rounded up so a sub-second preStop is not rounded away with its lever.
                sleep: Some(SleepAction { seconds: ceil_secs(stage.pod.pre_stop) }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    }
}

/// Platform wiring first, then the stage's `ZD_*` knobs exactly as
/// [`AppBehaviour::to_env`] lists them. Each app gets only the variables it reads.
fn app_env(app: App, stage: &Stage, o: &RenderOptions) -> Vec<EnvVar> {
    let amqp = if app == App::Api && o.broker_relay {
        crate::relay::relay_amqp_url(o)
    } else {
        format!("amqp://guest:guest@{}:{}/%2f", o.service_host("rabbitmq"), crate::base::AMQP_PORT)
    };
    let mut env_vars = vec![
        // The pod's own name, so every log line and ledger row says which pod it was.
        env_from_field("ZD_POD", "metadata.name"),
        env("ZD_LISTEN", format!("0.0.0.0:{}", app.port().1)),
        env("ZD_LOG_FORMAT", "json"),
        env("AMQP_URL", amqp),
        // The preStop the kubelet actually runs (whole seconds, see `container`): the
        // app counts termination from SIGTERM minus this.
        env("ZD_PRESTOP_MS", (ceil_secs(stage.pod.pre_stop) * 1000).to_string()),
    ];
    match app {
        App::Api => env_vars.extend([env("ZD_QUEUE", o.queue.clone()), env("ZD_CAPACITY", o.api_capacity.to_string())]),
        App::Worker => env_vars.extend([
            env(
                "DATABASE_URL",
                format!("postgres://postgres@{}:{}/postgres", o.service_host("postgres"), crate::base::POSTGRES_PORT),
            ),
            env("ZD_QUEUE", o.queue.clone()),
            env("ZD_DB_SCHEMA", o.schema.clone()),
            env("ZD_JOB_WORK_MS", o.job_work_ms.to_string()),
        ]),
    }
    env_vars.extend(app.behaviour(stage).to_env().into_iter().map(|(k, v)| env(k, v)));
    let extra = match app {
        App::Api => &o.api_env,
        App::Worker => &o.worker_env,
    };
    env_vars.extend(extra.iter().map(|(k, v)| env(k, v.clone())));
    env_vars
}

fn http_get(path: &str, port_name: &str) -> HTTPGetAction {
    HTTPGetAction { path: Some(path.into()), port: IntOrString::String(port_name.into()), ..HTTPGetAction::default() }
}

/// Nearest whole second, at least 1 (see the readiness probe above).
fn probe_secs(d: Duration) -> i32 {
    clamp_i32(d.as_millis().saturating_add(500) / 1000).max(1)
}

pub(crate) fn ceil_secs(d: Duration) -> i64 {
    i64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_seconds_round_to_nearest_with_a_floor_of_one() {
        let ms = Duration::from_millis;
        assert_eq!(probe_secs(ms(0)), 1);
        assert_eq!(probe_secs(ms(400)), 1);
        assert_eq!(probe_secs(ms(500)), 1);
        assert_eq!(probe_secs(ms(1499)), 1);
        assert_eq!(probe_secs(ms(1500)), 2);
        assert_eq!(probe_secs(ms(3000)), 3);
    }

    /// A command's own variables reach only their app, after the stage's (so they win).
    #[test]
    fn command_env_goes_last_and_to_its_app_only() {
        let stage = Stage::all().pop().expect("stages");
        let o = RenderOptions {
            api_env: vec![("ZD_FAULTS".into(), "on".into())],
            worker_env: vec![("ZD_LEDGER_WRITES".into(), "both".into())],
            ..RenderOptions::default()
        };
        let names = |app| app_env(app, &stage, &o).into_iter().map(|e| e.name).collect::<Vec<_>>();
        let (api, worker) = (names(App::Api), names(App::Worker));
        assert_eq!(api.last().map(String::as_str), Some("ZD_FAULTS"));
        assert_eq!(worker.last().map(String::as_str), Some("ZD_LEDGER_WRITES"));
        assert!(!api.iter().any(|n| n == "ZD_LEDGER_WRITES") && !worker.iter().any(|n| n == "ZD_FAULTS"));
    }

    #[test]
    fn waits_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(12)), 12);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
