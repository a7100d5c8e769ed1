//! `cargo xtask experiment`.

use crate::experiment::{machine, RunCtx};
use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use zerodrop_platform::profile::ExperimentProfile;
use zerodrop_platform::Platform;
use zerodrop_report::model::{self, Report};
use zerodrop_stages::{Stage, StageName};

#[derive(clap::Args)]
pub struct Args {
    /// The short profile: all six stages in a few minutes on a 2-core machine.
    #[arg(long)]
    quick: bool,
    /// Only these stages, comma-separated (default: all six, in order).
    #[arg(long, value_parser = crate::parse_stages)]
    stages: Option<std::vec::Vec<StageName>>,
    /// Where reports go; each run gets its own <run-id> directory inside.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Keep each stage's queues and ledger schema instead of deleting them.
    #[arg(long)]
    keep_data: bool,
    /// Run every stage this many times (interleaved: all stages, then again) and
    /// report min / median / max, with verdicts from all repeats pooled.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
    /// Exit 3 unless every lever's verdict is `removed` against the stage run before
    /// it (its target present before in every repeat) and, when surge-jitter ran
    /// last, it lost nothing in any repeat (used by CI).
    #[arg(long, alias = "assert-fixed")]
    assert_staircase: bool,
    /// With --assert-staircase: a stage whose lever's verdict is reported but not
    /// asserted, because this workload does not yet produce its target (a known gap,
    /// printed as such). Repeatable.
    #[arg(long, value_name = "STAGE")]
    known_gap: Vec<StageName>,
    /// Run your own client beside the load during each deploy, against the same
    /// Service address, and put its counts next to ours in the report: a shell
    /// command with `{url}` for the Service URL, e.g.
    /// `--alongside "hey -z 10s -c 10 -q 20 '{url}/work?ms=5'"` (hey's summary is
    /// parsed; any other tool's output is kept in logs/<stage>/third-party.txt).
    /// Local platform.
    #[arg(long, value_name = "COMMAND")]
    alongside: Option<String>,
    /// Keep one CPU core busy for the whole run (a spinning thread at normal
    /// priority, like a noisy neighbour), to show the steady windows stay clean on a
    /// loaded machine.
    #[arg(long)]
    busy_core: bool,
    /// With --alongside: only in these stages (comma-separated; default: all).
    #[arg(long, value_parser = crate::parse_stages)]
    alongside_stages: Option<std::vec::Vec<StageName>>,
    #[command(flatten)]
    platform: PlatformArgs,
    /// Apply a stage override (JSON: pre_stop_ms, deregistration_wait_ms,
    /// api_drain_budget_ms, grace_ms), e.g. the `recommended.json` that `cargo xtask
    /// tune` writes, to every stage from readiness-prestop on.
    #[arg(long = "override", value_name = "FILE")]
    overrides: Option<PathBuf>,
}

pub async fn run(a: Args) -> Result<()> {
    let choice = a.platform.choose()?;
    let run = RunDir::new(&a.out);
    if choice == Choice::KindPlan {
        harness::print_plan("experiment", "the plan", &dry_run_plan(&a, &run)?);
        return Ok(());
    }
    let profile = profile_of(&a);
    let stages = stages_of(&a)?;
    let session = LocalSession { announce: true, ..LocalSession::service(profile.propagation) };
    let roll_timeout = profile.roll * 3 + std::time::Duration::from_secs(60);
    let needs_linux =
        "the local platform needs Linux (PID namespaces, 127.0.0.0/8 addresses); use --platform kind elsewhere";
    let started = |run: &RunDir| announce(&run.id, &profile, &stages);
    let command = RunDir::command();
    let work = Stages { a: &a, run: &run, profile: profile.clone(), stages: stages.clone(), command };
    let report =
        harness::on_chosen(choice, &a.platform, &run, session, needs_linux, roll_timeout, started, work).await?;
    finish(report, &run.dir, a.assert_staircase, &a.known_gap)
}

fn stages_of(a: &Args) -> Result<Vec<Stage>> {
    let mut stages: Vec<Stage> =
        a.stages.clone().unwrap_or_else(|| StageName::ALL.to_vec()).into_iter().map(Stage::get).collect();
    if let Some(path) = &a.overrides {
        let o = crate::tune::overrides::StageOverride::read(path)?;
        crate::tune::overrides::apply_all(&o, path, &mut stages)?;
    }
    Ok(stages)
}

fn profile_of(a: &Args) -> ExperimentProfile {
    if a.quick {
        ExperimentProfile::quick()
    } else {
        ExperimentProfile::default_profile()
    }
}

pub fn dry_run_plan(a: &Args, run: &RunDir) -> Result<zerodrop_platform::kind::plan::Plan> {
    zerodrop_platform::kind::plan::build(&a.platform.kind_options(run), &profile_of(a), &stages_of(a)?)
}

/// Every stage of the run, on whichever platform the harness brings up.
struct Stages<'a> {
    a: &'a Args,
    run: &'a RunDir,
    profile: ExperimentProfile,
    stages: Vec<Stage>,
    command: String,
}

impl<P: Platform> Work<P> for Stages<'_> {
    type Output = Report;
    async fn run(self, platform: P) -> Result<Report> {
        let Stages { a, run, profile, stages, command } = self;
        run_stages(a, &run.id, &run.dir, platform, profile, stages, command).await
    }
}

/// The run's first line, on either platform.
fn announce(run_id: &str, profile: &ExperimentProfile, stages: &[Stage]) {
    eprintln!(
        "zerodrop experiment {run_id}: profile {}, stages {}",
        profile.name,
        stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    );
}

/// Writes the report, prints the summary and, for CI, checks the staircase.
fn finish(report: Report, out_dir: &std::path::Path, assert: bool, known_gaps: &[StageName]) -> Result<()> {
    zerodrop_report::write(&report, out_dir).context("writing the report")?;
    print_summary(&report, out_dir);
    if let Some(i) = report.incomplete {
        return Err(crate::exit::Incomplete {
            stage: i.stage,
            reason: i.reason,
            report: out_dir.join("report.md").display().to_string(),
        }
        .into());
    }
    if assert {
        if let Err(e) = assert_staircase(&report, known_gaps) {
            return Err(crate::exit::CheckFailed(format!("{e:#}")).into());
        }
    }
    Ok(())
}

async fn run_stages<P: Platform>(
    a: &Args,
    run_id: &str,
    out_dir: &std::path::Path,
    platform: P,
    profile: ExperimentProfile,
    stages: Vec<Stage>,
    command: String,
) -> Result<Report> {
    let _neighbour = a.busy_core.then(BusyCore::start);
    let mut ctx =
        RunCtx::new(run_id.to_string(), out_dir.to_path_buf(), profile.clone(), a.keep_data, platform).await?;
    ctx.alongside = a.alongside.clone().map(|template| crate::alongside::Alongside {
        template,
        stages: a.alongside_stages.clone().unwrap_or_default(),
    });
    let started_at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let mut runs = Vec::new();
    let mut incomplete = None;
    let total = stages.len() * a.repeat as usize;
    'all: for repeat in 0..a.repeat {
        for (i, stage) in stages.iter().cloned().enumerate() {
            let name = stage.name;
            let index = repeat as usize * stages.len() + i;
            let of = if a.repeat > 1 { format!(" (repeat {}/{})", repeat + 1, a.repeat) } else { String::new() };
            eprintln!("[{name}] stage {}/{total}{of}", index + 1);
            let run = match ctx.run_stage(stage, index, repeat).await {
                Ok(run) => run,
                Err(e) => {
                    // What ran so far is still measured data: it goes into a partial
                    // report, and the exit code says the run is incomplete.
                    eprintln!("[{name}] FAILED{of}: {e:#}");
                    incomplete = Some(model::Incomplete { stage: name.to_string(), repeat, reason: format!("{e:#}") });
                    break 'all;
                }
            };
            let roll = zerodrop_load::window_stats(&run.load.records, run.roll.from_us, run.roll.to_us);
            let steady = zerodrop_load::window_stats(&run.load.records, run.steady.from_us, run.steady.to_us);
            eprintln!(
                "[{name}] done: {} requests in the deploy window, {} failed (steady window: {} failed); jobs accepted {}, lost {}, duplicated {}",
                roll.total, roll.failed, steady.failed, run.jobs.accepted, run.jobs.lost, run.jobs.duplicated
            );
            runs.push(run);
        }
    }
    let guardian = if incomplete.is_some() {
        eprintln!("[guardian] skipped: a stage failed");
        None
    } else {
        ctx.progress.phase("guardian exercise");
        match ctx.platform.guardian_exercise(&out_dir.join("logs/guardian")).await {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("warning: the guardian exercise failed: {e:#}");
                None
            }
        }
    };
    let ctx_platform = ctx.platform.describe();
    let propagation = ctx.platform.propagation();
    ctx.close().await;
    let p = &profile;
    Ok(Report {
        run_id: run_id.to_string(),
        started_at,
        platform: ctx_platform,
        command,
        machine: machine(),
        profile: model::ExperimentProfile {
            name: p.name.to_string(),
            load: p.load.clone(),
            warmup_s: p.warmup.as_secs() as u32,
            steady_s: p.steady.as_secs() as u32,
            cooldown_s: p.cooldown.as_secs() as u32,
            api_replicas: p.api_replicas,
            worker_replicas: p.worker_replicas,
            propagation_delay_ms: p.propagation.mean().as_millis() as u64,
            job_backlog: p.job_backlog,
            api_capacity: p.api_capacity,
            propagation,
        },
        stages: runs,
        repeats: a.repeat,
        guardian,
        incomplete,
    })
}

/// A noisy neighbour: one OS thread spinning until dropped.
struct BusyCore(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl BusyCore {
    fn start() -> BusyCore {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        eprintln!("[busy-core] one thread keeps a CPU core busy for the whole run");
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        BusyCore(stop)
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn print_summary(r: &Report, dir: &std::path::Path) {
    println!();
    println!(
        "{:<20} {:>3} {:>8} {:>7} {:>8} {:>6} {:>6} {:>7} {:>5} {:>5}  lever verdict",
        "stage", "rep", "requests", "failed", "refused", "reset", "503", "steady", "lost", "dup"
    );
    let summaries: Vec<_> = r.stages.iter().map(zerodrop_report::summary_of).collect();
    let groups = zerodrop_report::analyse(r, &summaries);
    for g in &groups {
        for (run, s) in &g.runs {
            let c = |k: zerodrop_load::Class| s.roll.by_class.get(k.key()).copied().unwrap_or(0);
            let verdict = match (&g.effect, run.repeat) {
                (Some(e), 0) => format!("{} ({}: {} → {})", e.verdict.as_str(), e.targets[0], e.before, e.after),
                _ => String::new(),
            };
            println!(
                "{:<20} {:>3} {:>8} {:>7} {:>8} {:>6} {:>6} {:>7} {:>5} {:>5}  {}",
                s.name,
                run.repeat + 1,
                s.roll.total,
                s.roll.failed,
                c(zerodrop_load::Class::Refused),
                c(zerodrop_load::Class::Reset),
                c(zerodrop_load::Class::Http503),
                s.steady.failed,
                run.jobs.lost,
                run.jobs.duplicated,
                verdict
            );
        }
    }
    if let Some(g) = &r.guardian {
        println!(
            "guardian: {} (expected exit code {}), {} ms after SIGTERM",
            zerodrop_platform::guardian::describe_exit(g.exit_code),
            g.expected_exit_code,
            g.exit_after_ms
        );
    }
    println!("\nreport: {}", dir.join("report.md").display());
}

/// CI's contract: every lever removed its target against the stage run before it
/// (pooled intervals apart, zero in every repeat), the target was present before in
/// every repeat, and the last stage lost nothing in any repeat.
fn assert_staircase(r: &Report, known_gaps: &[StageName]) -> Result<()> {
    let summaries: Vec<_> = r.stages.iter().map(zerodrop_report::summary_of).collect();
    let groups = zerodrop_report::analyse(r, &summaries);
    let Some(last) = groups.last() else { bail!("no stage ran") };
    let mut problems = Vec::new();
    for g in &groups {
        let Some(e) = &g.effect else { continue };
        let name = &g.first().1.name;
        let t = &e.per_target[0];
        if known_gaps.contains(&g.first().0.stage.name) {
            eprintln!(
                "assert-staircase: KNOWN GAP, not asserted: {name}: {} is {} ({:?} → {:?})",
                t.metric,
                e.verdict.as_str(),
                t.before_counts,
                t.after_counts
            );
            continue;
        }
        if e.verdict != zerodrop_report::stats::Verdict::Removed {
            problems.push(format!(
                "{name}: {} is {} ({:?} → {:?})",
                t.metric,
                e.verdict.as_str(),
                t.before_counts,
                t.after_counts
            ));
        } else if t.before_counts.contains(&0) {
            problems.push(format!("{name}: {} was absent before in some repeat ({:?})", t.metric, t.before_counts));
        }
    }
    // Zero loss is the promise of the whole staircase, so only of its final stage.
    let final_stage = last.first().0.stage.name == *StageName::ALL.last().unwrap_or(&StageName::SurgeJitter);
    for (run, s) in last.runs.iter().filter(|_| final_stage) {
        let steady = s.steady.failed;
        if s.roll.failed != 0 || steady != 0 || run.jobs.lost != 0 || run.jobs.duplicated != 0 || !run.jobs.settled {
            problems.push(format!(
                "{} (repeat {}) lost something: {} failed in the deploy window, {steady} in the steady window, {} lost jobs, {} duplicated (settled: {})",
                s.name, run.repeat + 1, s.roll.failed, run.jobs.lost, run.jobs.duplicated, run.jobs.settled
            ));
        }
    }
    if !problems.is_empty() {
        bail!("the staircase does not hold:\n  - {}", problems.join("\n  - "));
    }
    let tail = if final_stage { format!("; {} lost nothing", last.first().1.name) } else { String::new() };
    eprintln!("assert-staircase: every lever run removed its target{tail}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use zerodrop_platform::kind::plan::Step;
    use zerodrop_platform::PlatformKind;

    fn plan(a: &Args, run_id: &str) -> Result<zerodrop_platform::kind::plan::Plan> {
        dry_run_plan(a, &RunDir::with_id(&a.out, run_id))
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &str) -> Args {
        Cli::try_parse_from(std::iter::once("experiment").chain(line.split_whitespace())).unwrap().args
    }

    /// `--dry-run` for `--platform kind --quick --stages naive`: the real plan
    /// builder, which returns data and runs nothing.
    #[test]
    fn the_dry_run_lists_every_command_and_every_object() {
        let out = std::env::temp_dir().join(format!("zerodrop-dry-run-{}", std::process::id()));
        let a = args(&format!("--platform kind --quick --stages naive --dry-run --out {}", out.display()));
        let run_id = "20261123-130150";
        let plan = plan(&a, run_id).unwrap();
        let text = plan.render();
        let cmds: Vec<String> = plan.commands().iter().map(|c| c.display()).collect();

        let config = out.join(run_id).join("kind-cluster.yaml");
        assert_eq!(cmds[0], format!("kind create cluster --name zerodrop --config {} --wait 120s", config.display()));
        let images = [
            ("api-shell", "zerodrop-api:shell-20261123-130150"),
            ("api-init", "zerodrop-api:init-20261123-130150"),
            ("worker-shell", "zerodrop-worker:shell-20261123-130150"),
            ("worker-init", "zerodrop-worker:init-20261123-130150"),
            ("load", "zerodrop-load:20261123-130150"),
        ];
        let root = zerodrop_platform::workspace::root();
        for (target, tag) in images {
            let build =
                format!("(cd {} && docker build -f services/Dockerfile --target {target} -t {tag} .)", root.display());
            assert!(cmds.contains(&build), "missing `{build}` in {cmds:#?}");
            let load = format!("kind load docker-image --name zerodrop {tag}");
            assert!(cmds.contains(&load), "missing `{load}`");
        }
        assert_eq!(cmds.last().unwrap(), "kind delete cluster --name zerodrop", "teardown without --keep");
        assert_eq!(cmds.len(), 1 + 5 + 5 + 1);
        assert!(text.contains(&format!("write {}:\n    kind: Cluster", config.display())), "the kind config is shown");

        // Every object it would apply, as YAML that parses strictly back into objects.
        let mut applied: Vec<(String, String)> = Vec::new();
        for s in &plan.steps {
            if let Step::Apply { yaml, .. } = s {
                if let Ok(objs) = zerodrop_manifests::parse_strict(yaml) {
                    applied.extend(objs.iter().map(|o| (o.kind().to_string(), o.name().to_string())));
                } else {
                    // The guardian Deployment is a modified render, serialised from JSON.
                    let d: k8s_openapi::api::apps::v1::Deployment = serde_norway::from_str(yaml).unwrap();
                    applied.push(("Deployment".into(), d.metadata.name.unwrap()));
                }
            }
        }
        let want = [
            ("Namespace", "zerodrop-20261123-130150"),
            ("Deployment", "rabbitmq"),
            ("Service", "rabbitmq"),
            ("Deployment", "postgres"),
            ("Service", "postgres"),
            ("Deployment", "api"),
            ("Service", "api"),
            ("Deployment", "worker"),
            ("Job", "load-0-20261123-130150"),
            ("Deployment", "api-guardian"),
        ];
        assert_eq!(applied, want.map(|(k, n)| (k.to_string(), n.to_string())).to_vec());
        assert!(text.contains("image: zerodrop-api:shell-20261123-130150"), "naive runs the shell-form image");
        assert!(text.contains("- --out\n") && text.contains("- '-'"), "the load Job prints its result to its log");
        assert!(text.contains("zerodrop.dev/restartedAt"), "the rollout trigger is shown");
        assert!(!out.exists(), "a dry run writes nothing");
    }

    #[test]
    fn the_dry_run_with_an_existing_context_keeps_the_cluster() {
        let a = args("--platform kind --quick --stages naive --dry-run --context kind-lab --keep");
        let plan = plan(&a, "r1").unwrap();
        let cmds: Vec<String> = plan.commands().iter().map(|c| c.display()).collect();
        assert!(cmds.iter().all(|c| !c.starts_with("kind create") && !c.starts_with("kind delete")), "{cmds:#?}");
        assert!(cmds.contains(&"kind load docker-image --name lab zerodrop-load:r1".to_string()));
        assert!(plan.render().contains("--keep: nothing is deleted"));
    }

    /// Any cluster: --context that is not kind, with --registry. Builds, one `docker
    /// push` per image, the prefixed images in every applied object, no kind command;
    /// at the end only the namespace goes.
    #[test]
    fn the_dry_run_against_another_cluster_pushes_to_the_registry() {
        let a = args("--quick --stages naive,surge-jitter --dry-run --context prod --registry registry.local:5000/lab");
        assert_eq!(a.platform.platform, PlatformKind::Auto, "auto plans the kind platform for a dry run");
        let plan = plan(&a, "r2").unwrap();
        let text = plan.render();
        let cmds: Vec<String> = plan.commands().iter().map(|c| c.display()).collect();
        assert!(cmds.iter().all(|c| !c.starts_with("kind ")), "no kind command: {cmds:#?}");
        assert!(!text.contains("kind-cluster.yaml"), "no kind config is written");
        let root = zerodrop_platform::workspace::root();
        let tags = [
            "zerodrop-api:shell-r2",
            "zerodrop-api:init-r2",
            "zerodrop-worker:shell-r2",
            "zerodrop-worker:init-r2",
            "zerodrop-load:r2",
        ];
        let mut want = Vec::new();
        for tag in tags {
            let target = tag.strip_prefix("zerodrop-").unwrap().replace(':', "-").replace("-r2", "");
            want.push(format!(
                "(cd {} && docker build -f services/Dockerfile --target {target} -t registry.local:5000/lab/{tag} .)",
                root.display()
            ));
        }
        want.extend(tags.iter().map(|t| format!("docker push registry.local:5000/lab/{t}")));
        // Issue #8, defect 5: RabbitMQ and PostgreSQL are mirrored under the prefix too,
        // and HAProxy (the routing tier of canary and blue-green).
        for public in ["rabbitmq:3.13-alpine", "postgres:16-alpine", "haproxy:2.6"] {
            want.push(format!("docker pull {public}"));
            want.push(format!("docker tag {public} registry.local:5000/lab/{public}"));
            want.push(format!("docker push registry.local:5000/lab/{public}"));
        }
        assert_eq!(cmds, want, "builds, pushes, the mirrored public images, and nothing else");

        // Every pod image of every applied object comes from the registry, the
        // mirrored rabbitmq and postgres images included.
        let mut images = Vec::new();
        for s in &plan.steps {
            if let Step::Apply { yaml, .. } = s {
                for line in yaml.lines().filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("image: ")) {
                    images.push(line.to_string());
                }
            }
        }
        let ours: Vec<&String> = images.iter().filter(|i| i.contains("zerodrop-")).collect();
        assert_eq!(ours.len(), 2 * 2 + 2 + 1, "{images:#?}");
        assert!(ours.iter().all(|i| i.starts_with("registry.local:5000/lab/zerodrop-")), "{images:#?}");
        assert_eq!(images.len() - ours.len(), 2, "rabbitmq and postgres: {images:#?}");
        assert!(images.iter().all(|i| i.starts_with("registry.local:5000/lab/")), "{images:#?}");
        assert!(text.contains("image: registry.local:5000/lab/rabbitmq:3.13-alpine"), "{text}");
        assert!(text.contains("image: registry.local:5000/lab/postgres:16-alpine"), "{text}");
        assert!(
            text.contains("image: registry.local:5000/lab/zerodrop-api:shell-r2"),
            "naive runs the shell-form image"
        );
        assert!(text.contains("image: registry.local:5000/lab/zerodrop-load:r2"), "the load Job pulls too");
        assert!(text.contains("`kind` is not needed"), "{text}");
        assert!(text.contains("context prod is in the kubeconfig"));
        assert!(
            text.contains("delete namespace zerodrop-r2 and wait until it is gone (the cluster of context prod stays)"),
            "{text}"
        );
    }

    #[test]
    fn another_cluster_without_a_registry_is_one_clear_error() {
        for line in ["--platform kind --dry-run --context prod", "--dry-run --context gke_me_europe-west1_lab"] {
            let err = plan(&args(line), "r3").unwrap_err().to_string();
            assert!(err.contains("is not a kind cluster's context"), "{err}");
            assert!(err.contains("a non-kind cluster cannot see local images; pass --registry <prefix> that the cluster can pull from"), "{err}");
        }
        // A registry with kind: still a kind cluster (created here), the images pushed.
        let plan = plan(&args("--platform kind --dry-run --stages naive --registry ghcr.io/me"), "r4").unwrap();
        let cmds: Vec<String> = plan.commands().iter().map(|c| c.display()).collect();
        assert!(cmds[0].starts_with("kind create cluster --name zerodrop"));
        assert!(cmds.contains(&"docker push ghcr.io/me/zerodrop-load:r4".to_string()));
        assert!(cmds.iter().all(|c| !c.starts_with("kind load")), "{cmds:#?}");
    }

    #[test]
    fn platform_flags_parse() {
        assert_eq!(args("").platform.platform, PlatformKind::Auto);
        assert_eq!(args("--platform local").platform.platform, PlatformKind::Local);
        assert!(Cli::try_parse_from(["experiment", "--platform", "docker"]).is_err());
    }
}
