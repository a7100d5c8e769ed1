//! `--dry-run`: the whole kind run as data — every command it would execute and every
//! object it would apply, in order — built by the same functions the real run uses,
//! without running anything.

use super::cluster::{self, Cmd};
use super::objects::Rendered;
use super::{guardian, load_job, rollout, KindOptions};
use crate::platform::StageEnv;
use crate::profile::ExperimentProfile;
use anyhow::Result;
use std::fmt::Write as _;
use zerodrop_stages::Stage;

#[derive(Debug, Clone)]
pub enum Step {
    /// A section heading.
    Section(String),
    /// An external command (see [`cluster`]).
    Run(Cmd),
    /// A file the runner writes.
    Write { path: String, contents: String },
    /// Objects server-side applied (field manager `zerodrop`), as YAML.
    Apply { what: String, yaml: String },
    /// A call to the Kubernetes API or a wait, described.
    Api(String),
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    fn section(&mut self, s: impl Into<String>) {
        self.steps.push(Step::Section(s.into()));
    }
    fn api(&mut self, s: impl Into<String>) {
        self.steps.push(Step::Api(s.into()));
    }
    fn apply(&mut self, what: impl Into<String>, objects: &[zerodrop_manifests::Object]) {
        self.steps.push(Step::Apply { what: what.into(), yaml: zerodrop_manifests::to_yaml(objects) });
    }

    #[cfg(test)]
    pub fn commands(&self) -> Vec<&Cmd> {
        self.steps.iter().filter_map(|s| if let Step::Run(c) = s { Some(c) } else { None }).collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            let _ = match s {
                Step::Section(t) => writeln!(out, "\n## {t}\n"),
                Step::Run(c) => writeln!(out, "$ {}", c.display()),
                Step::Write { path, contents } => writeln!(out, "write {path}:\n{}", indent(contents)),
                Step::Apply { what, yaml } => writeln!(
                    out,
                    "apply {what} (server-side, field manager {}):\n{}",
                    super::FIELD_MANAGER,
                    indent(yaml)
                ),
                Step::Api(t) => writeln!(out, "- {t}"),
            };
        }
        out
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// The stage environment the experiment will hand to `deploy` for stage `index`
/// (queue and schema named as `experiment.rs` names them).
pub fn stage_env(run_id: &str, profile: &ExperimentProfile, stage: &Stage, index: usize) -> StageEnv {
    StageEnv {
        queue: zerodrop_jobs::Topology::new(format!("zerodrop.{run_id}.{}", stage.name)).queue,
        schema: format!("zd_{}_{}", run_id.replace('-', "").to_lowercase(), index),
        api_replicas: profile.api_replicas,
        worker_replicas: profile.worker_replicas,
        api_capacity: profile.api_capacity,
        job_work: profile.job_work,
        index,
    }
}

pub fn build(opts: &KindOptions, profile: &ExperimentProfile, stages: &[Stage]) -> Result<Plan> {
    opts.validate()?;
    let mut p = Plan::default();
    p.section("Prerequisites (checked first; each missing one stops the run with its own message)");
    if opts.uses_kind_cli() {
        p.api("`docker` and `kind` on PATH; `docker info` answers; services/Dockerfile exists");
    } else {
        p.api("`docker` on PATH (`kind` is not needed); `docker info` answers; services/Dockerfile exists");
    }
    match &opts.context {
        None => p.api(format!("no kind cluster named `{}` exists yet (`kind get clusters`)", opts.cluster)),
        Some(ctx) if opts.uses_kind_cli() => {
            p.api(format!("context {ctx} names the existing kind cluster `{}` and is in the kubeconfig", opts.cluster))
        }
        Some(ctx) => {
            p.api(format!("context {ctx} is in the kubeconfig (the cluster exists and is not created or deleted here)"))
        }
    }
    if let Some(r) = &opts.registry {
        p.api(format!("you are logged in to {r} (`docker login`) and the cluster can pull from it; not checked before the first push"));
        p.api(format!(
            "the public {} images are pulled (Docker Hub), tagged and pushed under {r}: the cluster pulls nothing else",
            zerodrop_manifests::INFRA_IMAGES.join(" and ")
        ));
    }

    p.section("Cluster and images");
    let setup = cluster::setup_commands(opts)?;
    if opts.creates_cluster() {
        p.steps.push(Step::Write {
            path: opts.config_path().display().to_string(),
            contents: zerodrop_manifests::kind_cluster_config(),
        });
    }
    p.steps.extend(setup.into_iter().map(Step::Run));
    p.api(format!(
        "connect with kube-rs to context {} (rustls + ring); read the server version: Kubernetes {}.{} or newer (the preStop `sleep` action), else stop",
        opts.context_name(),
        super::prereq::MIN_KUBERNETES.0,
        super::prereq::MIN_KUBERNETES.1
    ));

    p.section("Broker and database");
    p.apply("the base objects", &zerodrop_manifests::base(&opts.render_options("-", "-")));
    p.api("wait for deployments rabbitmq and postgres: generation observed, all replicas updated and available, no old replicas");
    p.api("port-forward (kube-rs) 127.0.0.1:<free port> -> rabbitmq:5672 and 127.0.0.1:<free port> -> postgres:5432; reconciliation uses these");

    for (i, stage) in stages.iter().enumerate() {
        let env = stage_env(&opts.run_id, profile, stage, i);
        let render = opts.stage_render(&env);
        p.section(format!("Stage {} ({}): queue {}, schema {}", stage.name, stage.lever, env.queue, env.schema));
        p.api("delete any api/worker deployment left over, wait until their pods are gone");
        p.api("watch pods and the api Service's EndpointSlices; stream every pod's log from its start to logs/<stage>/<pod>.log");
        let objects = zerodrop_manifests::stage(stage, &render);
        p.apply(format!("stage {}", stage.name), &objects);
        p.api(format!(
            "wait for deployments api and worker (rollout condition) and {} ready api endpoints",
            env.api_replicas
        ));
        let rendered = Rendered::all(&objects);
        let job = load_job::job_object(
            opts,
            &render,
            &rendered,
            &profile.load,
            &format!("{}-{}", opts.run_id, stage.name),
            i,
        )?;
        p.apply(format!("the load Job {}", job.name()), std::slice::from_ref(&job));
        p.api("wait for the load generator's first log line (requests flowing)");
        p.api(format!(
            "after warm-up + steady ({} s): patch deployments api and worker (strategic merge, field manager {}):",
            (profile.warmup + profile.steady).as_secs(),
            super::FIELD_MANAGER
        ));
        p.api(format!("    {}", rollout::restart_patch("<now, RFC 3339>")));
        p.api("wait for both rollouts (rollout condition), then for every terminating pod to exit");
        p.api(format!(
            "wait for the Job's pod to end; parse its log between `{}` and `{}`",
            load_job::BEGIN,
            load_job::END
        ));
        p.api("reconcile the accepted jobs against the ledger (through the port-forwards)");
        p.api(format!(
            "delete deployments api, worker and job {} (background), then their pods with no grace period",
            job.name()
        ));
    }

    p.section("Guardian exercise");
    let g = guardian::objects(opts)?;
    p.steps.push(Step::Apply {
        what: format!("deployment {}", guardian::NAME),
        yaml: g.iter().map(|o| serde_norway::to_string(&o.json).unwrap_or_default()).collect::<Vec<_>>().join("---\n"),
    });
    p.api("port-forward to its pod, send a request longer than preStop + the shutdown budget, scale it to 0; read the exit code");
    p.api(format!("delete deployment {} and the exercise's queues", guardian::NAME));

    p.section("Teardown (also on failure and Ctrl-C)");
    if opts.keep {
        p.api("--keep: nothing is deleted");
    } else if opts.creates_cluster() {
        p.steps.push(Step::Run(cluster::delete_cluster(opts)));
    } else {
        p.api(format!(
            "delete namespace {} and wait until it is gone (the cluster of context {} stays)",
            opts.namespace,
            opts.context_name()
        ));
    }
    Ok(p)
}
