//! What the kind platform reads out of the rendered manifests. Everything it needs to
//! know about the objects (selectors, images, in-cluster URLs, ports) comes from the
//! render itself, so the manifests crate stays the single source of truth.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use zerodrop_manifests::Object;

/// One rendered object, as the platform handles it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub json: Value,
}

impl Rendered {
    pub fn from_object(o: &Object) -> Rendered {
        Rendered {
            kind: o.kind().to_string(),
            name: o.name().to_string(),
            namespace: o.metadata().namespace.clone(),
            json: o.to_json(),
        }
    }

    pub fn all(objects: &[Object]) -> Vec<Rendered> {
        objects.iter().map(Rendered::from_object).collect()
    }
}

pub fn find<'a>(objects: &'a [Rendered], kind: &str, name: &str) -> Option<&'a Rendered> {
    objects.iter().find(|o| o.kind == kind && o.name == name)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// `spec.selector` of a Service.
pub fn service_selector(service: &Value) -> BTreeMap<String, String> {
    string_map(service.pointer("/spec/selector"))
}

/// The labels a workload puts on its pods.
pub fn template_labels(workload: &Value) -> BTreeMap<String, String> {
    string_map(workload.pointer("/spec/template/metadata/labels"))
}

/// `a=b,c=d`, for list and watch calls.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Every label of `selector` is on `labels` with the same value.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn containers(workload: &Value) -> impl Iterator<Item = &Value> {
    workload.pointer("/spec/template/spec/containers").and_then(Value::as_array).into_iter().flatten()
}

/// Every container image of a workload (Deployment or Job), its init containers'
/// (the api's accept-queue sidecar) included.
pub fn images(workload: &Value) -> Vec<String> {
    let init = workload.pointer("/spec/template/spec/initContainers").and_then(Value::as_array).into_iter().flatten();
    containers(workload).chain(init).filter_map(|c| c.get("image")?.as_str().map(str::to_string)).collect()
}

/// The literal value of env var `name` in the workload's first container that sets it.
pub fn container_env(workload: &Value, name: &str) -> Option<String> {
    containers(workload)
        .flat_map(|c| c.get("env").and_then(Value::as_array).into_iter().flatten())
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|e| e.get("value")?.as_str().map(str::to_string))
}

/// The number (or, for a named port, the resolved container port) a Service port
/// sends to, and the pods behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTarget {
    pub service: String,
    pub pod_selector: String,
    pub container_port: u16,
}

/// `scheme://[user@]host:port/rest` -> (host, port).
pub fn url_host_port(url: &str) -> Result<(String, u16)> {
    let (_, rest) = url.split_once("://").with_context(|| format!("{url}: no scheme"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let (host, port) = host_port.rsplit_once(':').with_context(|| format!("{url}: no port"))?;
    let port = port.parse().with_context(|| format!("{url}: bad port {port:?}"))?;
    Ok((host.to_string(), port))
}

/// The same URL with its `host:port` replaced, credentials and path kept.
pub fn rewrite_host_port(url: &str, host_port: &str) -> Result<String> {
    let (scheme, rest) = url.split_once("://").with_context(|| format!("{url}: no scheme"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    Ok(format!("{scheme}://{user}{host_port}{tail}"))
}

/// Where to port-forward so that `host:port` (an in-cluster Service address such as
/// `rabbitmq.zerodrop.svc.cluster.local:5672`) is reached: the Service's pods and the
/// container port its `targetPort` names.
pub fn forward_target(objects: &[Rendered], host: &str, port: u16) -> Result<ForwardTarget> {
    let service = host.split('.').next().unwrap_or(host);
    let svc = find(objects, "Service", service)
        .with_context(|| format!("no Service `{service}` among the rendered objects"))?;
    let ports = svc.json.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let entry = ports
        .iter()
        .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
        .with_context(|| format!("Service `{service}` has no port {port}"))?;
    let selector = service_selector(&svc.json);
    let container_port = match entry.get("targetPort") {
        None => port,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .with_context(|| format!("Service `{service}`: bad targetPort {n}"))?,
        Some(Value::String(named)) => {
            let workload = objects
                .iter()
                .find(|o| o.kind == "Deployment" && selects(&selector, &template_labels(&o.json)))
                .with_context(|| format!("no Deployment behind Service `{service}`"))?;
            containers(&workload.json)
                .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
                .find(|p| p.get("name").and_then(Value::as_str) == Some(named.as_str()))
                .and_then(|p| p.get("containerPort")?.as_u64())
                .and_then(|n| u16::try_from(n).ok())
                .with_context(|| format!("Deployment `{}` has no container port named `{named}`", workload.name))?
        }
        Some(other) => bail!("Service `{service}`: unexpected targetPort {other}"),
    };
    Ok(ForwardTarget { service: service.to_string(), pod_selector: selector_string(&selector), container_port })
}

/// `port` of the Service `name`'s first port.
pub fn service_port(objects: &[Rendered], name: &str) -> Result<u16> {
    let svc =
        find(objects, "Service", name).with_context(|| format!("no Service `{name}` among the rendered objects"))?;
    svc.json
        .pointer("/spec/ports/0/port")
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .with_context(|| format!("Service `{name}` has no port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_credentials_and_path_when_the_host_changes() {
        let amqp = "amqp://guest:guest@rabbitmq.zerodrop.svc.cluster.local:5672/%2f";
        assert_eq!(url_host_port(amqp).unwrap(), ("rabbitmq.zerodrop.svc.cluster.local".to_string(), 5672));
        assert_eq!(rewrite_host_port(amqp, "127.0.0.1:40001").unwrap(), "amqp://guest:guest@127.0.0.1:40001/%2f");
        let pg = "postgres://postgres@postgres.zerodrop.svc.cluster.local:5432/postgres";
        assert_eq!(rewrite_host_port(pg, "127.0.0.1:40002").unwrap(), "postgres://postgres@127.0.0.1:40002/postgres");
        assert_eq!(rewrite_host_port("amqp://h:1", "x:2").unwrap(), "amqp://x:2");
        assert!(url_host_port("no-scheme").is_err());
    }

    #[test]
    fn the_broker_and_database_forward_targets_come_from_the_render() {
        let o = zerodrop_manifests::RenderOptions::default();
        let base = Rendered::all(&zerodrop_manifests::base(&o));
        let stage = Rendered::all(&zerodrop_manifests::stage(
            &zerodrop_stages::Stage::get(zerodrop_stages::StageName::Naive),
            &o,
        ));
        let api = find(&stage, "Deployment", "api").unwrap();
        let worker = find(&stage, "Deployment", "worker").unwrap();
        let amqp = container_env(&api.json, "AMQP_URL").unwrap();
        let db = container_env(&worker.json, "DATABASE_URL").unwrap();
        let (h, p) = url_host_port(&amqp).unwrap();
        let t = forward_target(&base, &h, p).unwrap();
        assert_eq!(t.service, "rabbitmq");
        assert_eq!(t.pod_selector, "app=rabbitmq");
        assert_eq!(t.container_port, 5672);
        let (h, p) = url_host_port(&db).unwrap();
        let t = forward_target(&base, &h, p).unwrap();
        assert_eq!((t.service.as_str(), t.container_port), ("postgres", 5432));
        let selector = string_map(api.json.pointer("/spec/selector/matchLabels"));
        assert_eq!(selector_string(&selector), "app=api");
        assert!(selects(&selector, &template_labels(&api.json)));
        assert_eq!(service_port(&stage, "api").unwrap(), 80);
    }
}
