//! The RBAC preflight: before anything is built or created, one
//! SelfSubjectAccessReview per API call the run makes, so a context that may not do
//! one of them fails at once with the whole list of what is missing, instead of
//! half-way through a stage.

use anyhow::{bail, Context, Result};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::Client;

/// One permission the run needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub verb: &'static str,
    /// API group; "" is the core group.
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    /// In the run's namespace, or cluster-wide (namespaces themselves).
    pub namespaced: bool,
    /// Which step of the run makes the call.
    pub why: &'static str,
}

const fn need(verb: &'static str, group: &'static str, resource: &'static str, why: &'static str) -> Need {
    Need { verb, group, resource, subresource: "", namespaced: true, why }
}

/// Every verb the runner uses, each with the step that uses it. Server-side apply is
/// a `patch`, and also a `create` when the object does not exist yet.
pub const NEEDS: &[Need] = &[
    Need { namespaced: false, ..need("create", "", "namespaces", "server-side apply of the run's namespace") },
    Need { namespaced: false, ..need("patch", "", "namespaces", "server-side apply of the run's namespace") },
    Need { namespaced: false, ..need("get", "", "namespaces", "waiting for the namespace to be gone") },
    Need { namespaced: false, ..need("delete", "", "namespaces", "teardown") },
    need("create", "apps", "deployments", "server-side apply of rabbitmq, postgres, api, worker"),
    need("patch", "apps", "deployments", "apply, the rolling restart, scaling the guardian pod to 0"),
    need("get", "apps", "deployments", "the rollout condition"),
    need("list", "apps", "deployments", "the rollout condition (a watch)"),
    need("watch", "apps", "deployments", "the rollout condition (a watch)"),
    need("delete", "apps", "deployments", "removing a stage's fleet"),
    need("create", "", "services", "server-side apply of the Services"),
    need("patch", "", "services", "server-side apply of the Services"),
    need("create", "batch", "jobs", "server-side apply of the load Job"),
    need("patch", "batch", "jobs", "server-side apply of the load Job"),
    need("delete", "batch", "jobs", "removing a stage's load Job"),
    need("get", "", "pods", "checking whether a container still runs"),
    need("list", "", "pods", "the pod watch, port-forward targets"),
    need("watch", "", "pods", "the pod watch"),
    need("deletecollection", "", "pods", "removing a stage's pods without grace"),
    Need { subresource: "log", ..need("get", "", "pods", "streaming every pod's log") },
    Need {
        subresource: "portforward",
        ..need("create", "", "pods", "port-forwards to RabbitMQ, PostgreSQL, the guardian pod")
    },
    need("list", "discovery.k8s.io", "endpointslices", "the api Service's EndpointSlice watch"),
    need("watch", "discovery.k8s.io", "endpointslices", "the api Service's EndpointSlice watch"),
];

impl Need {
    /// `create pods/portforward in namespace zerodrop-r1`, the way RBAC reads.
    pub fn describe(&self, ns: &str) -> String {
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        let sub = if self.subresource.is_empty() { String::new() } else { format!("/{}", self.subresource) };
        let scope = if self.namespaced { format!("in namespace {ns}") } else { "cluster-wide".to_string() };
        format!("{} {}{group}{sub} {scope}", self.verb, self.resource)
    }

    pub fn review(&self, ns: &str) -> SelfSubjectAccessReview {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(self.verb.into()),
                    group: Some(self.group.into()),
                    resource: Some(self.resource.into()),
                    subresource: opt(self.subresource),
                    namespace: self.namespaced.then(|| ns.to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        }
    }
}

/// What the API server answered for one [`Need`]: `None` when allowed, else why not
/// (the authorizer's reason when it gives one).
pub fn denied(answer: &SelfSubjectAccessReview) -> Option<String> {
    let st = answer.status.as_ref();
    if st.is_some_and(|s| s.allowed && s.denied != Some(true)) {
        return None;
    }
    let reason = st.and_then(|s| s.reason.clone().or_else(|| s.evaluation_error.clone())).unwrap_or_default();
    Some(if reason.is_empty() { "not allowed".into() } else { reason })
}

/// Asks the API server about every [`NEEDS`] entry for namespace `ns` (which need
/// not exist yet) as the context's own user; fails naming everything missing.
pub async fn preflight(client: &Client, ctx: &str, ns: &str) -> Result<()> {
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let mut missing = Vec::new();
    for n in NEEDS {
        let answer = api
            .create(&PostParams::default(), &n.review(ns))
            .await
            .with_context(|| format!("asking the API server whether context {ctx} may {}", n.describe(ns)))?;
        if let Some(why) = denied(&answer) {
            missing.push(format!("  {} (for {}): {why}", n.describe(ns), n.why));
        }
    }
    if !missing.is_empty() {
        bail!(
            "context {ctx} lacks {} of the {} permissions the run needs (SelfSubjectAccessReview):\n{}\n\
             grant them with a Role in the run's namespace and a ClusterRole for namespaces, or use a context \
             that has them",
            missing.len(),
            NEEDS.len(),
            missing.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::fake_api::{self, Reply};

    /// The API server's answer to a SelfSubjectAccessReview, in its exact shape:
    /// the spec echoed back, and a status.
    fn answer(body: &str, status: serde_json::Value) -> String {
        let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["metadata"] = serde_json::json!({"creationTimestamp": null});
        v["status"] = status;
        v.to_string()
    }

    #[test]
    fn the_reviews_ask_in_the_runs_namespace_and_cluster_wide_for_namespaces() {
        let portforward = NEEDS.iter().find(|n| n.subresource == "portforward").unwrap();
        assert_eq!(portforward.describe("zerodrop-r1"), "create pods/portforward in namespace zerodrop-r1");
        let json = serde_json::to_value(portforward.review("zerodrop-r1")).unwrap();
        assert_eq!(
            json["spec"]["resourceAttributes"],
            serde_json::json!({"verb": "create", "group": "", "resource": "pods", "subresource": "portforward", "namespace": "zerodrop-r1"})
        );
        let ns = NEEDS.iter().find(|n| n.resource == "namespaces" && n.verb == "delete").unwrap();
        assert_eq!(ns.describe("x"), "delete namespaces cluster-wide");
        assert!(serde_json::to_value(ns.review("x")).unwrap()["spec"]["resourceAttributes"].get("namespace").is_none());
        let slices = NEEDS.iter().find(|n| n.resource == "endpointslices").unwrap();
        assert_eq!(slices.describe("x"), "list endpointslices.discovery.k8s.io in namespace x");
    }

    /// A context allowed everything but the port-forward and the EndpointSlice watch:
    /// the preflight names exactly those, with the authorizer's reason.
    #[tokio::test]
    async fn the_preflight_names_every_missing_permission() {
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = bodies.clone();
        let (client, requests) = fake_api::client_with_body(move |req, body| {
            if req != "POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews?" {
                return Reply::not_found();
            }
            seen.lock().unwrap().push(body.to_string());
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let a = &v["spec"]["resourceAttributes"];
            let no = a["subresource"] == "portforward" || (a["resource"] == "endpointslices" && a["verb"] == "watch");
            let status = if no {
                serde_json::json!({"allowed": false})
            } else {
                serde_json::json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"lab/zerodrop-r1\" of Role \"lab\" to User \"student\""})
            };
            Reply::ok(answer(body, status))
        });
        let err = preflight(&client, "lab", "zerodrop-r1").await.unwrap_err().to_string();
        assert_eq!(requests.lock().unwrap().len(), NEEDS.len(), "one review per need");
        assert!(err.starts_with("context lab lacks 2 of the"), "{err}");
        assert!(err.contains("create pods/portforward in namespace zerodrop-r1 (for port-forwards"), "{err}");
        assert!(err.contains("watch endpointslices.discovery.k8s.io in namespace zerodrop-r1"), "{err}");
        assert!(!err.contains("list endpointslices"), "{err}");
        assert_eq!(bodies.lock().unwrap().len(), NEEDS.len());

        // Everything allowed: the run goes on.
        let (client, _) =
            fake_api::client_with_body(|_, body| Reply::ok(answer(body, serde_json::json!({"allowed": true}))));
        preflight(&client, "lab", "zerodrop-r1").await.unwrap();
    }

    #[test]
    fn a_denial_or_an_error_is_not_allowed() {
        let review = |status: serde_json::Value| -> SelfSubjectAccessReview {
            serde_json::from_value(serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": {}, "spec": {}, "status": status})).unwrap()
        };
        assert_eq!(denied(&review(serde_json::json!({"allowed": true}))), None);
        assert_eq!(denied(&review(serde_json::json!({"allowed": false}))).as_deref(), Some("not allowed"));
        assert_eq!(
            denied(&review(serde_json::json!({"allowed": false, "denied": true, "reason": "webhook said no"})))
                .as_deref(),
            Some("webhook said no")
        );
        assert_eq!(
            denied(&review(serde_json::json!({"allowed": false, "evaluationError": "no RBAC policy matched"})))
                .as_deref(),
            Some("no RBAC policy matched")
        );
    }
}
