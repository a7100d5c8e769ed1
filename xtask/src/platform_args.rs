//! The flags that choose where a command runs, the same on every command that runs on
//! both platforms, and the one rule that turns them into a platform.

use crate::run_dir::RunDir;
use anyhow::{bail, Result};
use zerodrop_platform::kind::{self, KindOptions};
use zerodrop_platform::PlatformKind;

#[derive(clap::Args, Clone, Debug)]
pub struct PlatformArgs {
    /// Where the fleet runs: `kind` (a real Kubernetes cluster in Docker), `local`
    /// (processes on this machine), `auto` (kind when `docker info` answers and `kind`
    /// is on PATH, else local). The report names the platform that ran.
    #[arg(long, value_enum, default_value_t = PlatformKind::Auto)]
    pub platform: PlatformKind,
    /// kind: use this existing cluster's kube context instead of creating a kind
    /// cluster; at the end only the namespace is removed. A kind context (kind-<name>)
    /// gets the images with `kind load`; any other cluster needs --registry.
    #[arg(long)]
    pub context: Option<String>,
    /// kind: push the images to this registry prefix (`ghcr.io/you`,
    /// `registry.local:5000`) with `docker push`, and have the pods pull them from
    /// there, instead of `kind load docker-image`. Required for a --context that is
    /// not kind; `kind` itself is then not needed.
    #[arg(long, value_name = "PREFIX")]
    pub registry: Option<String>,
    /// kind: leave the cluster (with --context: the namespace) up at the end.
    #[arg(long)]
    pub keep: bool,
    /// kind: print the plan (every command and every object it would apply) and
    /// exit, without touching Docker or a cluster.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where a command runs, once its flags are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Local,
    Kind,
    /// `--dry-run`: the kind platform's plan, printed; nothing is started.
    KindPlan,
}

impl PlatformArgs {
    /// The one rule: a dry run or a context that is not kind's means the kind platform
    /// without probing Docker; `auto` asks the machine; kind-only flags on a local run
    /// are an error rather than silently ignored.
    pub fn choose(&self) -> Result<Choice> {
        let kind_only = self.context.is_some() || self.keep || self.registry.is_some();
        // A context that is not kind's can only mean a cluster, whether `kind` is on PATH or not.
        let other_cluster = self.context.as_deref().is_some_and(|c| !c.starts_with("kind-"));
        let platform = match self.platform {
            // The plan is the kind platform's; probing Docker would already touch it.
            PlatformKind::Auto if self.dry_run || other_cluster => PlatformKind::Kind,
            p => resolve(p),
        };
        Ok(match platform {
            PlatformKind::Kind if self.dry_run => Choice::KindPlan,
            PlatformKind::Kind => Choice::Kind,
            _ if self.dry_run => {
                bail!("--dry-run prints the kind platform's plan; use it with --platform kind (or auto)")
            }
            _ if kind_only => {
                bail!("--context, --registry and --keep apply to the kind platform, and the local one was chosen")
            }
            _ => Choice::Local,
        })
    }

    /// The kind platform's options for `run` (its id names the namespace and the
    /// images' tag; its folder keeps the pods' logs).
    pub fn kind_options(&self, run: &RunDir) -> KindOptions {
        KindOptions::new(self.context.clone(), self.keep, run.id.clone(), run.id.to_lowercase(), run.dir.clone())
            .with_registry(self.registry.clone())
    }
}

/// `auto` made concrete: kind when its prerequisites answer, else local; says why.
pub fn resolve(platform: PlatformKind) -> PlatformKind {
    match platform {
        PlatformKind::Auto => {
            let (p, why) = kind::prereq::choose_auto(&kind::prereq::System::default());
            eprintln!("[platform] {why}");
            p
        }
        p => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        p: PlatformArgs,
    }

    fn choose(args: &[&str]) -> Result<Choice> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        cli.p.choose()
    }

    #[test]
    fn the_flags_pick_a_platform_without_probing_when_they_can() {
        assert_eq!(choose(&["--platform", "local"]).unwrap(), Choice::Local);
        assert_eq!(choose(&["--platform", "kind"]).unwrap(), Choice::Kind);
        assert_eq!(choose(&["--dry-run"]).unwrap(), Choice::KindPlan);
        assert_eq!(choose(&["--context", "prod-eu"]).unwrap(), Choice::Kind);
        assert_eq!(choose(&["--platform", "kind", "--dry-run"]).unwrap(), Choice::KindPlan);
        let e = choose(&["--platform", "local", "--dry-run"]).unwrap_err().to_string();
        assert!(e.contains("--platform kind"), "{e}");
        let e = choose(&["--platform", "local", "--keep"]).unwrap_err().to_string();
        assert!(e.contains("apply to the kind platform"), "{e}");
    }
}
