//! The closed set of object kinds this crate renders and reads back.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::Serialize;
use std::collections::BTreeMap;

/// One Kubernetes object. Boxed because the API structs are large and of very
/// different sizes.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Box<Namespace>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    Job(Box<Job>),
    ConfigMap(Box<ConfigMap>),
}

impl Object {
    /// The API kind, e.g. `Deployment`.
    pub fn kind(&self) -> &str {
        match self {
            Object::Namespace(_) => Namespace::KIND,
            Object::Deployment(_) => Deployment::KIND,
            Object::Service(_) => Service::KIND,
            Object::Job(_) => Job::KIND,
            Object::ConfigMap(_) => ConfigMap::KIND,
        }
    }

    /// `metadata.name`, or "" when unset (only possible for hand-written input).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => o.metadata(),
            Object::Deployment(o) => o.metadata(),
            Object::Service(o) => o.metadata(),
            Object::Job(o) => o.metadata(),
            Object::ConfigMap(o) => o.metadata(),
        }
    }

    /// The object as JSON, `apiVersion` and `kind` included.
    pub fn to_json(&self) -> serde_json::Value {
        // These types hold only string-keyed maps and plain scalars, so serialising
        // to a Value cannot fail; if it ever did, Null makes every strict-parse and
        // drift test fail loudly rather than rendering half an object.
        let v = match self {
            Object::Namespace(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::Job(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
        };
        v.unwrap_or(serde_json::Value::Null)
    }

    fn to_yaml(&self) -> String {
        // Serialise the typed struct directly (not via a JSON Value) so the field
        // order is the type's own: apiVersion, kind, metadata, spec — stable and
        // readable, where a Value would sort keys alphabetically.
        match self {
            Object::Namespace(o) => yaml(o),
            Object::Deployment(o) => yaml(o),
            Object::Service(o) => yaml(o),
            Object::Job(o) => yaml(o),
            Object::ConfigMap(o) => yaml(o),
        }
    }
}

/// Multi-document YAML, one document per object, separated by `---`.
pub fn to_yaml(objects: &[Object]) -> String {
    objects.iter().map(Object::to_yaml).collect::<Vec<_>>().join("---\n")
}

/// YAML for a value whose serialisation cannot fail (string keys, plain scalars). An
/// error still ends up in the output, as a comment that no parser accepts as the
/// object, so the drift and strict-parse tests catch it.
pub(crate) fn yaml<T: Serialize>(v: &T) -> String {
    serde_norway::to_string(v).unwrap_or_else(|e| format!("# render error: {e}\n"))
}

/// `metadata` with a name, an optional namespace and labels.
pub(crate) fn meta(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then(|| labels.clone()),
        ..ObjectMeta::default()
    }
}

pub(crate) fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
