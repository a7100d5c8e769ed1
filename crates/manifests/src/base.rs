//! What every stage runs on: the namespace, RabbitMQ and PostgreSQL.

use crate::objects::{labels, meta, Object};
use crate::placement::Reserve;
use crate::pod::{deployment, env, pod_spec, service, DeploymentParts};
use crate::{RenderOptions, APP_LABEL};
use k8s_openapi::api::apps::v1::DeploymentStrategy;
use k8s_openapi::api::core::v1::{Container, ContainerPort, ExecAction, Namespace, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The broker image. 3.13 is the last 3.x line; the non-management variant keeps a
/// 2-core node's CPU for the experiment. Its built-in `10-defaults.conf` sets
/// `loopback_users.guest = false`, which is what lets `guest` log in from other pods.
pub const RABBITMQ_IMAGE: &str = "rabbitmq:3.13-alpine";
pub const POSTGRES_IMAGE: &str = "postgres:16-alpine";
/// The public images the base objects run. With [`RenderOptions::image_registry`]
/// the pods name them behind that prefix (the runner mirrors them there).
pub const INFRA_IMAGES: [&str; 2] = [RABBITMQ_IMAGE, POSTGRES_IMAGE];
pub const AMQP_PORT: i32 = 5672;
pub const POSTGRES_PORT: i32 = 5432;

/// Namespace, RabbitMQ Deployment + Service, PostgreSQL Deployment + Service.
pub fn base(o: &RenderOptions) -> Vec<Object> {
    vec![
        Object::Namespace(Box::new(Namespace {
            metadata: meta(&o.namespace, None, &BTreeMap::new()),
            ..Namespace::default()
        })),
        Object::Deployment(Box::new(infra("rabbitmq", o, rabbitmq(o)))),
        Object::Service(Box::new(service("rabbitmq", &o.namespace, "rabbitmq", AMQP_PORT, "amqp"))),
        Object::Deployment(Box::new(infra("postgres", o, postgres(o)))),
        Object::Service(Box::new(service("postgres", &o.namespace, "postgres", POSTGRES_PORT, "postgres"))),
    ]
}

/// A single-replica infrastructure Deployment. `Recreate`, because two brokers or
/// two databases side by side would not share state: a new pod must replace the old
/// one, never run next to it. Storage is the container's own: every run creates its
/// own queue and schema, so nothing has to outlive the pod.
fn infra(name: &str, o: &RenderOptions, container: Container) -> k8s_openapi::api::apps::v1::Deployment {
    let l = labels([(APP_LABEL, name)]);
    deployment(DeploymentParts {
        name,
        namespace: &o.namespace,
        labels: l.clone(),
        selector: l,
        annotations: BTreeMap::new(),
        replicas: 1,
        strategy: DeploymentStrategy { type_: Some("Recreate".into()), ..DeploymentStrategy::default() },
        pod: pod_spec(vec![container], None),
    })
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn rabbitmq(o: &RenderOptions) -> Container {
    Container {
        name: "rabbitmq".into(),
        image: Some(o.registry_image(RABBITMQ_IMAGE.into())),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![port("amqp", AMQP_PORT)]),
        resources: Some(Reserve::RABBITMQ.requirements()),
        // A TCP check rather than `rabbitmq-diagnostics`: each diagnostics run boots
        // an Erlang VM (seconds of CPU on a 2-core node), while the AMQP listener is
        // the last thing the broker opens at boot, so an accepted connection means
        // it is ready for the apps.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("amqp".into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(2),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        ..Container::default()
    }
}

fn postgres(o: &RenderOptions) -> Container {
    Container {
        name: "postgres".into(),
        image: Some(o.registry_image(POSTGRES_IMAGE.into())),
        image_pull_policy: Some("IfNotPresent".into()),
        // A lab database reachable only inside the cluster: no password to manage.
        env: Some(vec![env("POSTGRES_HOST_AUTH_METHOD", "trust")]),
        ports: Some(vec![port("postgres", POSTGRES_PORT)]),
        resources: Some(Reserve::POSTGRES.requirements()),
        // `-h 127.0.0.1`: the image's init phase runs a temporary server on the Unix
        // socket only; asking over TCP is ready only once the real server listens.
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(["pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres"].map(String::from).to_vec()),
            }),
            period_seconds: Some(2),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        ..Container::default()
    }
}
