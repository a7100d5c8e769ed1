//! Builders shared by the infrastructure and the app Deployments.

use crate::objects::meta;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Selects an app's pods; the same in every stage. It lives with the builders, whose
/// Services select by it: stage.rs and base.rs use this module, and it uses neither.
pub const APP_LABEL: &str = "app";

pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), ..EnvVar::default() }
}

/// An env var filled in by the downward API, e.g. `metadata.name`.
pub(crate) fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A pod running `containers`, with service links off: every peer is found by DNS,
/// and the `<SERVICE>_PORT=tcp://…` variables Kubernetes would otherwise inject
/// (`RABBITMQ_PORT`, `POSTGRES_PORT`) land in the very prefixes RabbitMQ's and the
/// postgres image's own configuration read.
pub(crate) fn pod_spec(containers: Vec<Container>, grace_seconds: Option<i64>) -> PodSpec {
    PodSpec {
        containers,
        enable_service_links: Some(false),
        termination_grace_period_seconds: grace_seconds,
        ..PodSpec::default()
    }
}

pub(crate) struct DeploymentParts<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// On the Deployment and on its pods.
    pub labels: BTreeMap<String, String>,
    /// A subset of `labels` that never changes between stages: a Deployment's
    /// selector is immutable, so applying the next stage must not touch it.
    pub selector: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub replicas: u32,
    pub strategy: DeploymentStrategy,
    pub pod: PodSpec,
}

pub(crate) fn deployment(p: DeploymentParts<'_>) -> Deployment {
    let mut metadata = meta(p.name, Some(p.namespace), &p.labels);
    metadata.annotations = (!p.annotations.is_empty()).then_some(p.annotations);
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(clamp_i32(p.replicas)),
            selector: LabelSelector { match_labels: Some(p.selector), ..LabelSelector::default() },
            strategy: Some(p.strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(p.labels), ..ObjectMeta::default() }),
                spec: Some(p.pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// A ClusterIP Service sending `port` to the pods' named container port.
pub(crate) fn service(name: &str, namespace: &str, app: &str, port: i32, target_port: &str) -> Service {
    let labels = crate::objects::labels([(APP_LABEL, app)]);
    Service {
        metadata: meta(name, Some(namespace), &labels),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels),
            ports: Some(vec![ServicePort {
                name: Some(target_port.to_string()),
                port,
                target_port: Some(IntOrString::String(target_port.to_string())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Kubernetes counts replicas in i32; no lab asks for two billion pods.
pub(crate) fn clamp_i32<T: TryInto<i32>>(n: T) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}
