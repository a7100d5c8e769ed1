//! `--dry-run`: the whole kind run as data — every command it would execute and every
//! object it would apply, in order — built by the same functions the real run uses,
//! without running anything.

use super::cluster::{self, Cmd};
use super::objects::Rendered;
use super::{guardian, load_job, rollout, KindOptions};
use crate::profile::ExperimentProfile;
use crate::StageEnv;
use anyhow::Result;
use std::fmt::Write as _;
use zerodrop_stages::Stage;

/// `--await-pods` in a plan: the names are only known once the stage's pods exist.
pub const AWAITED_PLACEHOLDER: &str = "<ready-api-pods>";

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
    pub fn section(&mut self, s: impl Into<String>) {
        self.steps.push(Step::Section(s.into()));
    }
    pub fn api(&mut self, s: impl Into<String>) {
        self.steps.push(Step::Api(s.into()));
    }
    pub fn apply(&mut self, what: impl Into<String>, objects: &[zerodrop_manifests::Object]) {
        self.steps.push(Step::Apply { what: what.into(), yaml: zerodrop_manifests::to_yaml(objects) });
    }

    /// Every command of the plan, in order (what a dry run's tests read).
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
        listen_queues: false,
        api_env: Vec::new(),
        worker_env: Vec::new(),
    }
}

/// (workload, image) for every pod the run starts: the base objects, both apps in
/// both entrypoint forms (stages differ in the form), the load Job and the guardian.
pub fn workload_images(opts: &KindOptions) -> Result<Vec<(String, String)>> {
    use super::objects::images;
    let render = opts.render_options("-", "-");
    let mut out = Vec::new();
    for o in Rendered::all(&zerodrop_manifests::base(&render)) {
        out.extend(images(&o.json).into_iter().map(|i| (format!("deployment {}", o.name), i)));
    }
    for app in zerodrop_manifests::App::ALL {
        for form in [zerodrop_stages::Entrypoint::Shell, zerodrop_stages::Entrypoint::Init] {
            let which = match form {
                zerodrop_stages::Entrypoint::Shell => "shell-form stages",
                zerodrop_stages::Entrypoint::Init => "init stages",
            };
            out.push((format!("deployment {} ({which})", app.name()), render.app_image(app, form)));
        }
    }
    out.push(("job load-<stage>-<run>".into(), render.load_image()));
    for o in guardian::objects(opts)? {
        out.extend(images(&o.json).into_iter().map(|i| (format!("deployment {}", o.name), i)));
    }
    Ok(out)
}

/// The experiment's (and tune's) run: the session, then every stage, the guardian
/// exercise and the teardown.
pub fn build(opts: &KindOptions, profile: &ExperimentProfile, stages: &[Stage]) -> Result<Plan> {
    let mut p = session(opts)?;
    for (i, stage) in stages.iter().enumerate() {
        stage_steps(&mut p, opts, profile, stage, i)?;
    }
    p.section("Guardian exercise");
    let g = guardian::objects(opts)?;
    p.steps.push(Step::Apply {
        what: format!("deployment {}", guardian::NAME),
        yaml: g.iter().map(|o| serde_norway::to_string(&o.json).unwrap_or_default()).collect::<Vec<_>>().join("---\n"),
    });
    p.api("port-forward to its pod, send a request longer than preStop + the shutdown budget, scale it to 0; read the exit code");
    p.api(format!("delete deployment {} and the exercise's queues", guardian::NAME));
    teardown(&mut p, opts);
    Ok(p)
}

/// What every command's kind run starts with: prerequisites, the cluster, the RBAC
/// preflight, the images, the broker and the database (`Session::setup` and
/// `KindPlatform::connect`).
pub fn session(opts: &KindOptions) -> Result<Plan> {
    opts.validate()?;
    let mut p = Plan::default();
    p.section("Prerequisites (checked first; each missing one stops the run with its own message)");
    if opts.uses_kind_cli() {
        p.api("`docker` and `kind` on PATH; `docker info` answers; services/Dockerfile exists");
    } else {
        p.api("`docker` on PATH (`kind` is not needed); `docker info` answers; services/Dockerfile exists");
    }
    p.api(format!(
        "this run's own namespace: {} (every object below goes there; deleted and waited for at the end)",
        opts.namespace
    ));
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
            super::cluster::public_images().join(", ")
        ));
    }

    p.section("Cluster");
    let create = cluster::create_cluster(opts);
    let (first, builds): (Vec<_>, Vec<_>) = cluster::setup_commands(opts)?.into_iter().partition(|c| *c == create);
    if opts.creates_cluster() {
        p.steps.push(Step::Write {
            path: opts.config_path().display().to_string(),
            contents: zerodrop_manifests::kind_cluster_config(),
        });
    }
    p.steps.extend(first.into_iter().map(Step::Run));
    p.api(format!(
        "connect with kube-rs to context {} (rustls + ring); read the server version: Kubernetes {}.{} or newer (the preStop `sleep` action), else stop before any image is built",
        opts.context_name(),
        super::prereq::MIN_KUBERNETES.0,
        super::prereq::MIN_KUBERNETES.1
    ));

    p.section(format!(
        "RBAC preflight: one SelfSubjectAccessReview each; any denied one stops the run, naming all that are ({} checks)",
        super::access::NEEDS.len()
    ));
    for n in super::access::NEEDS {
        p.api(format!("may {} — {}", n.describe(&opts.namespace), n.why));
    }

    p.section("Images (every workload's, as the pods name them)");
    for (workload, image) in workload_images(opts)? {
        p.api(format!("{workload}: {image}"));
    }
    p.steps.extend(builds.into_iter().map(Step::Run));

    p.section("Broker and database");
    p.apply("the base objects", &zerodrop_manifests::base(&opts.render_options("-", "-")));
    p.api("wait for deployments rabbitmq and postgres: generation observed, all replicas updated and available, no old replicas");
    p.api("port-forward (kube-rs) 127.0.0.1:<free port> -> rabbitmq:5672 and 127.0.0.1:<free port> -> postgres:5432; reconciliation uses these");
    Ok(p)
}

/// One stage of the experiment: its fleet, the load Job, the rolling deploy.
fn stage_steps(p: &mut Plan, opts: &KindOptions, profile: &ExperimentProfile, stage: &Stage, i: usize) -> Result<()> {
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
    let target = load_job::service_target(&render, &rendered)?;
    let prefix = format!("{}-{}", opts.run_id, stage.name);
    let args = load_job::args(&profile.load, &target, &prefix, &[AWAITED_PLACEHOLDER.to_string()]);
    let job = load_job::job_object(opts, &render, i, args);
    p.apply(format!("the load Job {}", job.name()), std::slice::from_ref(&job));
    p.api(format!(
        "the Job first probes GET /healthz through the api Service, a new connection each, until every api pod \
         the EndpointSlices list as ready and not terminating (targetRef names, passed as --await-pods) has \
         answered (x-zd-pod), at most {} s",
        load_job::GATE_TIMEOUT.as_secs()
    ));
    p.api("wait for the load generator's `load begins:` log line (requests flowing)");
    p.api(format!(
        "after warm-up + steady ({} s): patch deployments api and worker (strategic merge, field manager {}):",
        (profile.warmup + profile.steady).as_secs(),
        super::FIELD_MANAGER
    ));
    p.api(format!("    {}", rollout::restart_patch("<now, RFC 3339>")));
    p.api("wait for both rollouts (rollout condition), then for every terminating pod to exit");
    p.api(format!(
        "wait for the Job's pod to end; reassemble the result from the checksummed chunk lines between `{} ...` \
         and `{}` of its log (read again whole if the followed copy lacks a chunk)",
        load_job::BEGIN,
        load_job::END
    ));
    p.api("reconcile the accepted jobs against the ledger (through the port-forwards)");
    p.api(format!(
        "delete deployments api, worker and job {} (background), then their pods with no grace period",
        job.name()
    ));
    Ok(())
}

/// What every command's kind run ends with, on success, failure and Ctrl-C alike.
pub fn teardown(p: &mut Plan, opts: &KindOptions) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use zerodrop_stages::StageName;

    fn plan(context: Option<&str>, registry: Option<&str>) -> String {
        let opts = KindOptions::new(
            context.map(String::from),
            false,
            "20261123-130150".into(),
            "t1".into(),
            PathBuf::from("/nonexistent/zerodrop-plan"),
        )
        .with_registry(registry.map(String::from));
        build(&opts, &ExperimentProfile::quick(), &[Stage::get(StageName::Naive)]).unwrap().render()
    }

    /// Issue #8's must-show for `--dry-run`: the run's namespace, the RBAC preflight
    /// with every verb, the version check before the first image build, and every
    /// workload's image under --registry (RabbitMQ and PostgreSQL included).
    #[test]
    fn the_dry_run_shows_namespace_preflight_version_check_and_every_image() {
        let text = plan(Some("prod"), Some("registry.local:5000/lab"));
        assert!(text.contains("this run's own namespace: zerodrop-20261123-130150"), "{text}");
        for n in crate::kind::access::NEEDS {
            let line = format!("- may {} — {}", n.describe("zerodrop-20261123-130150"), n.why);
            assert!(text.contains(&line), "missing `{line}`");
        }
        assert!(text.contains("may create pods/portforward in namespace zerodrop-20261123-130150"));
        assert!(text.contains("may delete namespaces cluster-wide"));
        let version = text.find("read the server version: Kubernetes 1.30 or newer").unwrap();
        let preflight = text.find("## RBAC preflight").unwrap();
        let first_build = text.find("$ (cd ").unwrap();
        assert!(version < preflight && preflight < first_build, "checked before any image is built:\n{text}");
        for (workload, image) in [
            ("deployment rabbitmq", "registry.local:5000/lab/rabbitmq:3.13-alpine"),
            ("deployment postgres", "registry.local:5000/lab/postgres:16-alpine"),
            ("deployment api (shell-form stages)", "registry.local:5000/lab/zerodrop-api:shell-t1"),
            ("deployment api (init stages)", "registry.local:5000/lab/zerodrop-api:init-t1"),
            ("deployment worker (shell-form stages)", "registry.local:5000/lab/zerodrop-worker:shell-t1"),
            ("deployment worker (init stages)", "registry.local:5000/lab/zerodrop-worker:init-t1"),
            ("job load-<stage>-<run>", "registry.local:5000/lab/zerodrop-load:t1"),
            ("deployment api-guardian", "registry.local:5000/lab/zerodrop-api:init-t1"),
        ] {
            assert!(text.contains(&format!("- {workload}: {image}\n")), "missing {workload}: {image} in\n{text}");
        }
        // A kind cluster created here: the cluster first, then the checks, then builds.
        let text = plan(None, None);
        let create = text.find("$ kind create cluster").unwrap();
        assert!(create < text.find("read the server version").unwrap());
        assert!(text.contains("- deployment rabbitmq: rabbitmq:3.13-alpine\n"), "{text}");
    }

    #[test]
    fn every_workload_requests_resources() {
        let opts = KindOptions::new(None, false, "r".into(), "t".into(), PathBuf::from("/nonexistent"));
        let text = plan(None, None);
        let requests = text.matches("requests:").count();
        // rabbitmq, postgres, api, worker, the load Job, the guardian.
        assert_eq!(requests, 6, "{text}");
        assert_eq!(workload_images(&opts).unwrap().len(), 8);
    }
}
