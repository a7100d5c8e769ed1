//! Kubernetes objects for the kind platform, rendered from the typed stage definitions.
//!
//! Everything is built as k8s-openapi values, never as text, so a misspelt field is a
//! compile error here and a strict-parse error in [`parse_strict`] for anything read
//! back. The checked-in renders under `k8s/` come from [`files`]; a drift test keeps
//! them equal to what this crate renders now (`ZERODROP_BLESS=1` rewrites them).

mod base;
mod files;
mod job;
mod kind;
mod objects;
mod placement;
mod pod;
mod progressive;
mod relay;
mod routing;
mod stage;
mod strict;

pub use base::{base, AMQP_PORT, INFRA_IMAGES, POSTGRES_IMAGE, POSTGRES_PORT, RABBITMQ_IMAGE};
pub use files::{files, RenderedFile, HEADER};
pub use job::{load_image, load_job, LoadJobSpec};
pub use kind::{kind_cluster_config, KindCluster, KindNode};
pub use objects::{to_yaml, Object};
pub use placement::{Reserve, LOAD_POOL, POOL_LABEL};
pub use pod::APP_LABEL;
pub use progressive::{
    haproxy_config, progressive, Backend, JobsSpec, HAPROXY_DIR, HAPROXY_IMAGE, SHADOW_WORKER, STATS_SOCKET, WORKER,
};
pub use relay::{broker_relay, relay_amqp_url, RELAY_BIN, RELAY_CONTROL_PORT, RELAY_NAME};
pub use routing::{MatchOn, RouteRule, Routing, RuleError, StickyKey};
pub use stage::{stage, App, QUEUES_CONTAINER, QUEUES_EVERY_MS, STAGE_LABEL};
pub use strict::{parse_strict, ManifestError};

/// Everything about a render that is not part of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    pub namespace: String,
    /// Suffix of every image tag: `zerodrop-api:init-<tag>`, `zerodrop-load:<tag>`.
    pub image_tag: String,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    /// `ZD_CAPACITY`: requests one api pod serves at once.
    pub api_capacity: u32,
    /// `ZD_JOB_WORK_MS`: simulated work per job inside the worker's transaction.
    pub job_work_ms: u64,
    /// `ZD_QUEUE`
    pub queue: String,
    /// `ZD_DB_SCHEMA`
    pub schema: String,
    /// A registry prefix (`ghcr.io/me`, `registry.local:5000`) the cluster pulls the
    /// runner's images from: `<prefix>/zerodrop-api:init-<tag>`. `None` (kind, where
    /// the images are loaded onto the nodes) names them without one.
    pub image_registry: Option<String>,
    /// Every api pod carries the accept-queue sidecar ([`stage::QUEUES_CONTAINER`]):
    /// `zerodrop-load queues` in the pod's network namespace, printing its listen
    /// queue (the thundering reconnect watches it).
    pub listen_queue_sidecar: bool,
    /// Extra variables for the api containers, after every other (a command's own
    /// features: fault injection, the breaker).
    pub api_env: Vec<(String, String)>,
    /// Extra variables for the worker containers, after every other.
    pub worker_env: Vec<(String, String)>,
    /// The chaos runs' broker relay ([`broker_relay`]) is part of the stage, and the
    /// api pods (not the workers) reach the broker through it.
    pub broker_relay: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            namespace: "zerodrop".into(),
            image_tag: "dev".into(),
            api_replicas: 3,
            worker_replicas: 3,
            api_capacity: 16,
            job_work_ms: 250,
            queue: "zerodrop.jobs".into(),
            schema: "zerodrop".into(),
            image_registry: None,
            listen_queue_sidecar: false,
            api_env: Vec::new(),
            worker_env: Vec::new(),
            broker_relay: false,
        }
    }
}

impl RenderOptions {
    /// The in-cluster DNS name of a Service in this namespace.
    pub fn service_host(&self, service: &str) -> String {
        format!("{service}.{}.svc.cluster.local", self.namespace)
    }

    /// `image` (one of the runner's own, e.g. `zerodrop-load:<tag>`, or one of
    /// [`INFRA_IMAGES`], which the runner mirrors) as the pods reference it: behind [`RenderOptions::image_registry`] when there is one.
    pub fn registry_image(&self, image: String) -> String {
        match self.image_registry.as_deref().map(|r| r.trim_end_matches('/')) {
            Some(r) if !r.is_empty() => format!("{r}/{image}"),
            _ => image,
        }
    }

    /// The image an app's pods run for `entrypoint`: [`App::image`] with this
    /// render's tag, behind the registry prefix if any.
    pub fn app_image(&self, app: App, entrypoint: zerodrop_stages::Entrypoint) -> String {
        self.registry_image(app.image(entrypoint, &self.image_tag))
    }

    /// The load generator's image: [`load_image`] with this render's tag, behind the
    /// registry prefix if any.
    pub fn load_image(&self) -> String {
        self.registry_image(load_image(&self.image_tag))
    }
}
