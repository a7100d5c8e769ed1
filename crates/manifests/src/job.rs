//! The load generator as a batch Job inside the cluster, so its connections go
//! through kube-proxy to the api Service exactly as a client's would.

use crate::objects::{labels, meta, Object};
use crate::placement::{load_affinity, Reserve};
use crate::pod::pod_spec;
use crate::{RenderOptions, APP_LABEL};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A load run: the Job's name and the `zerodrop-load` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadJobSpec {
    pub name: String,
    pub args: Vec<String>,
}

impl LoadJobSpec {
    /// The quick profile aimed at the api Service, printing its result JSON to stdout
    /// (`--out -`) so it can be read from the pod's log.
    pub fn quick_example(o: &RenderOptions) -> LoadJobSpec {
        let target = format!("{}:80", o.service_host("api"));
        let args = [
            "run",
            "--target",
            &target,
            "--rate",
            "200",
            "--duration",
            "37s",
            "--seed",
            "42",
            "--mix",
            "80,15,5",
            "--fast-ms",
            "5",
            "--slow-ms",
            "250",
            "--allow-non-loopback",
            "--job-prefix",
            "kind",
            "--out",
            "-",
        ];
        LoadJobSpec { name: "load".into(), args: args.map(String::from).to_vec() }
    }
}

/// The image built by the `load` target of `services/Dockerfile`.
pub fn load_image(tag: &str) -> String {
    format!("zerodrop-load:{tag}")
}

/// A Job running `zerodrop-load <args>` once: no retries (a second run would be a
/// different measurement), and kept for ten minutes after it finishes so its log
/// can still be collected.
pub fn load_job(spec: &LoadJobSpec, o: &RenderOptions) -> Object {
    let l = labels([(APP_LABEL, "load")]);
    let container = Container {
        name: "load".into(),
        image: Some(o.load_image()),
        image_pull_policy: Some("IfNotPresent".into()),
        // The image's ENTRYPOINT is the binary; these are its arguments.
        args: Some(spec.args.clone()),
        resources: Some(Reserve::LOAD.requirements()),
        ..Container::default()
    };
    let mut pod = pod_spec(vec![container], None);
    pod.restart_policy = Some("Never".into());
    pod.affinity = Some(load_affinity(labels([(APP_LABEL, "api")])));
    Object::Job(Box::new(Job {
        metadata: meta(&spec.name, Some(&o.namespace), &l),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(l), ..ObjectMeta::default() }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }))
}
