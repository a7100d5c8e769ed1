//! The chaos runs' broker relay on a cluster (`RenderOptions::broker_relay`): one pod of
//! `zerodrop-fault-relay` (shipped in the load image, so no image is added) between the
//! api pods and RabbitMQ, and a Service with its AMQP port, which the api's `AMQP_URL`
//! names, and its control port, which the runner reaches through a port-forward.
//! The worker keeps the direct broker: the fault is on the publish path only.

use crate::base::AMQP_PORT;
use crate::objects::{labels, meta, Object};
use crate::placement::{app_affinity, Reserve};
use crate::pod::{deployment, env, pod_spec, DeploymentParts, APP_LABEL};
use crate::RenderOptions;
use k8s_openapi::api::apps::v1::DeploymentStrategy;
use k8s_openapi::api::core::v1::{Container, ContainerPort, HTTPGetAction, Probe, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The relay's Deployment, Service and `app` label.
pub const RELAY_NAME: &str = "broker-relay";
/// The relay's control API (`PUT /fault`, `GET /fault`, `GET /healthz`).
pub const RELAY_CONTROL_PORT: i32 = 9091;
/// Where the load image installs the relay (`services/Dockerfile`).
pub const RELAY_BIN: &str = "/usr/local/bin/zerodrop-fault-relay";

/// The api's broker URL when the relay is on: the relay's Service, same credentials
/// and vhost as the direct one.
pub fn relay_amqp_url(o: &RenderOptions) -> String {
    format!("amqp://guest:guest@{}:{AMQP_PORT}/%2f", o.service_host(RELAY_NAME))
}

/// The relay's Deployment and Service.
pub fn broker_relay(o: &RenderOptions) -> Vec<Object> {
    let l = labels([(APP_LABEL, RELAY_NAME)]);
    let d = deployment(DeploymentParts {
        name: RELAY_NAME,
        namespace: &o.namespace,
        labels: l.clone(),
        selector: l.clone(),
        annotations: BTreeMap::new(),
        replicas: 1,
        // One relay holds the fault; two side by side would each hold their own.
        strategy: DeploymentStrategy { type_: Some("Recreate".into()), ..DeploymentStrategy::default() },
        pod: k8s_openapi::api::core::v1::PodSpec {
            affinity: Some(app_affinity()),
            ..pod_spec(vec![container(o)], Some(5))
        },
    });
    vec![Object::Deployment(Box::new(d)), Object::Service(Box::new(service(o, l)))]
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn container(o: &RenderOptions) -> Container {
    Container {
        name: "relay".into(),
        image: Some(o.load_image()),
        image_pull_policy: Some("IfNotPresent".into()),
        // The load image's ENTRYPOINT is zerodrop-load; the relay is its second binary.
        command: Some(vec![RELAY_BIN.into()]),
        env: Some(vec![
            env("ZD_RELAY_LISTEN", format!("0.0.0.0:{AMQP_PORT}")),
            env("ZD_RELAY_UPSTREAM", format!("{}:{AMQP_PORT}", o.service_host("rabbitmq"))),
            env("ZD_RELAY_CONTROL", format!("0.0.0.0:{RELAY_CONTROL_PORT}")),
        ]),
        ports: Some(vec![port("amqp", AMQP_PORT), port("control", RELAY_CONTROL_PORT)]),
        resources: Some(Reserve::RELAY.requirements()),
        // /healthz answers once both listeners are bound (the relay binds first).
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("control".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(1),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        ..Container::default()
    }
}

fn service(o: &RenderOptions, l: BTreeMap<String, String>) -> Service {
    let sp = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(RELAY_NAME, Some(&o.namespace), &l),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(l),
            ports: Some(vec![sp("amqp", AMQP_PORT), sp("control", RELAY_CONTROL_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage;
    use zerodrop_stages::Stage;

    fn env_of(o: &Object, name: &str) -> Option<String> {
        let v = o.to_json();
        let envs = v.pointer("/spec/template/spec/containers/0/env")?.as_array()?.clone();
        envs.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str().map(str::to_string))
    }

    #[test]
    fn the_relay_is_off_unless_asked_for() {
        let o = RenderOptions::default();
        assert!(!o.broker_relay);
        let objects = stage(&Stage::all().pop().unwrap(), &o);
        assert!(objects.iter().all(|x| x.name() != RELAY_NAME));
        let api = objects.iter().find(|x| x.kind() == "Deployment" && x.name() == "api").unwrap();
        assert_eq!(env_of(api, "AMQP_URL").unwrap(), "amqp://guest:guest@rabbitmq.zerodrop.svc.cluster.local:5672/%2f");
    }

    /// With the relay on: its objects come before the api's (applied first), only the
    /// api's AMQP_URL names it, and it relays to the broker's Service.
    #[test]
    fn with_the_relay_only_the_api_reaches_the_broker_through_it() {
        let o = RenderOptions { broker_relay: true, namespace: "zerodrop-r1".into(), ..RenderOptions::default() };
        let objects = stage(&Stage::all().pop().unwrap(), &o);
        let names: Vec<(&str, &str)> = objects.iter().map(|x| (x.kind(), x.name())).collect();
        assert_eq!(
            names,
            [
                ("Deployment", RELAY_NAME),
                ("Service", RELAY_NAME),
                ("Deployment", "api"),
                ("Service", "api"),
                ("Deployment", "worker")
            ]
        );
        let api = &objects[2];
        let worker = &objects[4];
        assert_eq!(
            env_of(api, "AMQP_URL").unwrap(),
            "amqp://guest:guest@broker-relay.zerodrop-r1.svc.cluster.local:5672/%2f"
        );
        assert_eq!(
            env_of(worker, "AMQP_URL").unwrap(),
            "amqp://guest:guest@rabbitmq.zerodrop-r1.svc.cluster.local:5672/%2f"
        );
        assert_eq!(
            env_of(api, "AMQP_URL").iter().count(),
            1,
            "a single AMQP_URL: the relay's replaces the broker's, it does not follow it"
        );

        let d = objects[0].to_json();
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
        assert_eq!(c["image"], "zerodrop-load:dev");
        assert_eq!(c["command"], serde_json::json!([RELAY_BIN]));
        assert_eq!(env_of(&objects[0], "ZD_RELAY_UPSTREAM").unwrap(), "rabbitmq.zerodrop-r1.svc.cluster.local:5672");
        assert_eq!(env_of(&objects[0], "ZD_RELAY_LISTEN").unwrap(), "0.0.0.0:5672");
        assert_eq!(env_of(&objects[0], "ZD_RELAY_CONTROL").unwrap(), "0.0.0.0:9091");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "control");
        let ports: Vec<(String, i64)> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["containerPort"].as_i64().unwrap()))
            .collect();
        assert_eq!(ports, [("amqp".to_string(), 5672), ("control".to_string(), 9091)]);

        let s = objects[1].to_json();
        assert_eq!(s["spec"]["selector"], serde_json::json!({"app": RELAY_NAME}));
        assert_eq!(
            s["spec"]["ports"],
            serde_json::json!([
                {"name": "amqp", "port": 5672, "targetPort": "amqp", "protocol": "TCP"},
                {"name": "control", "port": 9091, "targetPort": "control", "protocol": "TCP"}
            ])
        );
    }

    #[test]
    fn the_rendered_relay_parses_back_strictly() {
        let o = RenderOptions { broker_relay: true, ..RenderOptions::default() };
        let yaml = crate::to_yaml(&broker_relay(&o));
        let back = crate::parse_strict(&yaml).unwrap();
        assert_eq!(back.len(), 2);
    }
}
