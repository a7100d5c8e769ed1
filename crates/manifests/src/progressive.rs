//! Progressive delivery on kind: HAProxy as a Deployment in front of two api
//! Deployments, v1 and v2, each behind its own Service. The HAProxy configuration is
//! the same text the local platform runs ([`haproxy_config`]); the split is a weight
//! in permille in a map, changed at runtime through the stats socket (`set map`).

use crate::objects::{labels, meta, Object};
use crate::pod::{deployment, env, pod_spec, service, DeploymentParts};
use crate::routing::Routing;
use crate::stage::{ceil_secs, container, App};
use crate::RenderOptions;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, Volume, VolumeMount,
};
use std::collections::BTreeMap;
use zerodrop_stages::{Stage, StageName};

/// The HAProxy image the kind path runs (Debian's package runs locally).
pub const HAPROXY_IMAGE: &str = "haproxy:2.6";
/// Where the ConfigMap is mounted in the HAProxy pod.
pub const HAPROXY_DIR: &str = "/usr/local/etc/haproxy";

/// HAProxy's runtime API inside its pod (reach it with `kubectl port-forward`).
pub const STATS_SOCKET: &str = "ipv4@127.0.0.1:9999";

/// One `server` line: a name and a `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub addr: String,
}

/// HAProxy's configuration. `X-Canary: always|never` pins a request to a side; then a
/// request matching one of `routing`'s rules goes to the canary; otherwise
/// `rand(1000)` below the map's `weight` (permille) picks the canary. With
/// `routing.strip_hop`, a frontend in front drops what the rules match on.
pub fn haproxy_config(
    bind: &str,
    stable: &[Backend],
    canary: &[Backend],
    map: &str,
    socket: &str,
    routing: &Routing,
) -> String {
    let (hop, bind) = routing.hop(bind);
    let servers = |v: &[Backend]| {
        v.iter()
            .map(|s| format!("    server {} {} check inter 500ms fall 2 rise 1\n", s.name, s.addr))
            .collect::<String>()
    };
    format!(
        "global\n    stats socket {socket} mode 600 level admin\n    maxconn 8192\n\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    \
         timeout http-keep-alive 30s\n    option httpchk GET /readyz\n\n\
         {hop}frontend fe\n    bind {bind}\n    \
         http-request set-var(txn.w) str(weight),map_str_int({map},0)\n\
         {draw}    \
         use_backend canary if {{ req.hdr(x-canary) -m str always }}\n    \
         use_backend stable if {{ req.hdr(x-canary) -m str never }}\n\
         {rules}    \
         use_backend canary if {{ var(txn.r),sub(txn.w) lt 0 }}\n    \
         default_backend stable\n\n\
         backend stable\n    balance roundrobin\n{stable}\n\
         backend canary\n    balance roundrobin\n{canary}",
        stable = servers(stable),
        canary = servers(canary),
        rules = routing.use_backend_lines(),
        draw = routing.draw_lines(),
    )
}

/// The objects of a canary on kind: the HAProxy ConfigMap, Deployment and Service,
/// and per version an api Deployment and Service (`api-v1`, `api-v2`). Each version
/// carries its own regression (`ZD_REGRESSION`): v2 the change under test, v1 `none`
/// or a defect both versions share (a known bug some clients hit).
pub fn progressive(
    o: &RenderOptions,
    regressions: [&str; 2],
    routing: &Routing,
    jobs: Option<&JobsSpec>,
) -> Vec<Object> {
    let stage = Stage::get(StageName::SurgeJitter);
    let mut out = vec![Object::ConfigMap(Box::new(haproxy_configmap(o, routing)))];
    out.push(Object::Deployment(Box::new(haproxy_deployment(o))));
    out.push(Object::Service(Box::new(service("haproxy", &o.namespace, "haproxy", 80, "http"))));
    let api = match jobs {
        Some(j) => RenderOptions { queue: j.queue.clone(), ..o.clone() },
        None => o.clone(),
    };
    for (version, regression) in [("v1", regressions[0]), ("v2", regressions[1])] {
        let name = format!("api-{version}");
        let shadow = jobs.map(|j| env("ZD_SHADOW_QUEUE", j.shadow_queue.clone()));
        out.push(Object::Deployment(Box::new(version_deployment(&name, version, regression, shadow, &stage, &api))));
        out.push(Object::Service(Box::new(service(&name, &o.namespace, &name, 8080, "http"))));
    }
    if let Some(j) = jobs {
        for (name, version, queue, schema) in
            [(WORKER, "v1", &j.queue, &j.schema), (SHADOW_WORKER, "v2", &j.shadow_queue, &j.shadow_schema)]
        {
            let o = RenderOptions { queue: queue.clone(), schema: schema.clone(), ..o.clone() };
            out.push(Object::Deployment(Box::new(worker_deployment(name, version, &stage, &o))));
        }
    }
    out
}

/// Where a two-versions fleet's jobs go. Both versions' api pods publish users' jobs to
/// `queue`, which v1's worker applies to the ledger in `schema`; a shadow copy of a job
/// (Host name ending in `-shadow`) goes to `shadow_queue`, which v2's worker applies to
/// `shadow_schema`, so a copied job never reaches the users' ledger. The caller
/// declares the queues and creates the schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsSpec {
    pub queue: String,
    pub schema: String,
    pub shadow_queue: String,
    pub shadow_schema: String,
}

/// The worker Deployments of a fleet with jobs: v1's on the work queue, v2's on the
/// shadow sink.
pub const WORKER: &str = "worker-v1";
pub const SHADOW_WORKER: &str = "worker-v2-shadow";

fn worker_deployment(name: &str, version: &str, stage: &Stage, o: &RenderOptions) -> Deployment {
    versioned(name, version, 1, container(App::Worker, stage, o), stage, o)
}

/// One version's Deployment of `c`: labelled with its version, replaced whole
/// (`Recreate`), with the stage's grace period.
fn versioned(name: &str, version: &str, replicas: u32, c: Container, stage: &Stage, o: &RenderOptions) -> Deployment {
    let l = labels([(crate::APP_LABEL, name), ("zerodrop.dev/version", version)]);
    deployment(DeploymentParts {
        name,
        namespace: &o.namespace,
        labels: l.clone(),
        selector: labels([(crate::APP_LABEL, name)]),
        annotations: BTreeMap::new(),
        replicas,
        strategy: DeploymentStrategy { type_: Some("Recreate".into()), ..DeploymentStrategy::default() },
        pod: pod_spec(vec![c], Some(ceil_secs(stage.pod.grace))),
    })
}

fn haproxy_configmap(o: &RenderOptions, routing: &Routing) -> ConfigMap {
    // One server per version: its Service, which kube-proxy spreads over the pods.
    let backend = |v: &str| {
        vec![Backend { name: format!("api-{v}"), addr: format!("{}:8080", o.service_host(&format!("api-{v}"))) }]
    };
    let cfg = haproxy_config(
        "*:8000",
        &backend("v1"),
        &backend("v2"),
        &format!("{HAPROXY_DIR}/canary.map"),
        // On TCP inside the pod, so the runner reaches it through `kubectl port-forward`.
        STATS_SOCKET,
        routing,
    );
    let mut data = BTreeMap::new();
    data.insert("haproxy.cfg".to_string(), cfg);
    data.insert("canary.map".to_string(), "weight 0\n".to_string());
    ConfigMap {
        metadata: meta("haproxy", Some(&o.namespace), &labels([(crate::APP_LABEL, "haproxy")])),
        data: Some(data),
        ..ConfigMap::default()
    }
}

fn haproxy_deployment(o: &RenderOptions) -> Deployment {
    let l = labels([(crate::APP_LABEL, "haproxy")]);
    let c = Container {
        name: "haproxy".into(),
        image: Some(o.registry_image(HAPROXY_IMAGE.to_string())),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["haproxy".into(), "-db".into(), "-f".into(), format!("{HAPROXY_DIR}/haproxy.cfg")]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8000,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: HAPROXY_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let mut pod = pod_spec(vec![c], Some(30));
    pod.volumes = Some(vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource { name: "haproxy".into(), ..ConfigMapVolumeSource::default() }),
        ..Volume::default()
    }]);
    deployment(DeploymentParts {
        name: "haproxy",
        namespace: &o.namespace,
        labels: l.clone(),
        selector: l,
        annotations: BTreeMap::new(),
        // One routing tier: the weight lives in its memory (`set map`).
        replicas: 1,
        strategy: DeploymentStrategy { type_: Some("Recreate".into()), ..DeploymentStrategy::default() },
        pod,
    })
}

fn version_deployment(
    name: &str,
    version: &str,
    regression: &str,
    shadow_sink: Option<EnvVar>,
    stage: &Stage,
    o: &RenderOptions,
) -> Deployment {
    let mut c = container(App::Api, stage, o);
    let envs = c.env.get_or_insert_with(Vec::new);
    envs.push(env("ZD_VERSION", version));
    envs.push(env("ZD_REGRESSION", regression));
    envs.extend(shadow_sink);
    versioned(name, version, o.api_replicas, c, stage, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_and_the_routing_tier_are_rendered() {
        let objs = progressive(&RenderOptions::default(), ["errors=1%@top=1", "errors=2%"], &Routing::default(), None);
        let names: Vec<String> = objs.iter().map(|o| format!("{}/{}", o.kind(), o.name())).collect();
        assert_eq!(
            names,
            [
                "ConfigMap/haproxy",
                "Deployment/haproxy",
                "Service/haproxy",
                "Deployment/api-v1",
                "Service/api-v1",
                "Deployment/api-v2",
                "Service/api-v2"
            ]
        );
        let yaml = crate::to_yaml(&objs);
        assert!(yaml.contains("value: errors=2%"), "{yaml}");
        assert!(yaml.contains("value: errors=1%@top=1"), "{yaml}");
        assert!(yaml.contains("api-v2.zerodrop.svc.cluster.local:8080"), "{yaml}");
        assert_eq!(crate::parse_strict(&yaml).unwrap().len(), 7);
    }

    #[test]
    fn with_jobs_both_versions_get_the_shadow_sink_and_two_workers_their_own_ledgers() {
        let jobs = JobsSpec {
            queue: "q".into(),
            schema: "s".into(),
            shadow_queue: "q.shadow".into(),
            shadow_schema: "s_shadow".into(),
        };
        let objs = progressive(&RenderOptions::default(), ["none", "errors=2%"], &Routing::default(), Some(&jobs));
        let names: Vec<String> = objs.iter().map(|o| format!("{}/{}", o.kind(), o.name())).collect();
        assert_eq!(names[7..], ["Deployment/worker-v1", "Deployment/worker-v2-shadow"]);
        let json = |name: &str| {
            let o = objs.iter().find(|o| o.name() == name).unwrap();
            serde_json::to_string(&o.to_json()).unwrap()
        };
        for api in ["api-v1", "api-v2"] {
            let j = json(api);
            assert!(j.contains(r#""name":"ZD_SHADOW_QUEUE","value":"q.shadow""#), "{j}");
            assert!(j.contains(r#""name":"ZD_QUEUE","value":"q""#), "{j}");
        }
        let w = json(WORKER);
        assert!(
            w.contains(r#""name":"ZD_QUEUE","value":"q""#) && w.contains(r#""name":"ZD_DB_SCHEMA","value":"s""#),
            "{w}"
        );
        let sw = json(SHADOW_WORKER);
        assert!(sw.contains(r#""value":"q.shadow""#) && sw.contains(r#""value":"s_shadow""#), "{sw}");
        assert!(sw.contains(r#""zerodrop.dev/version":"v2""#), "{sw}");
        assert_eq!(crate::parse_strict(&crate::to_yaml(&objs)).unwrap().len(), 9);
    }
}
