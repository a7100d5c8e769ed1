//! The one way a command runs on a platform: choose it, enter its session (the lab's
//! network namespace and private servers, or a cluster and its namespace), run the
//! command's work with Ctrl-C handled, and tear the session down in every case.
//!
//! A command hands its work over as a [`Work`] for each platform type it supports. What
//! the work needs of a platform is a bound on that type (`P: Platform + KeepAliveLoad`);
//! a command whose bounds a platform does not meet cannot be handed to it, so a
//! capability missing on one platform is a compile error here, not a runtime surprise.

use crate::platform_args::{Choice, PlatformArgs};
pub use crate::run_dir::RunDir;
use anyhow::Result;
use std::net::SocketAddrV4;
use std::time::Duration;
use zerodrop_platform::kind::{self, KindOptions, KindPlatform};
use zerodrop_platform::local::lab::{self, Lab};
use zerodrop_platform::local::platform::LocalPlatform;
use zerodrop_platform::local::prereq;
use zerodrop_platform::local::propagation::PropagationModel;
use zerodrop_platform::Platform;

/// What a command does once its platform is up.
#[allow(async_fn_in_trait)]
pub trait Work<P> {
    type Output;
    async fn run(self, platform: P) -> Result<Self::Output>;
}

/// Outside the lab: builds the services, re-runs this command inside a new lab network
/// namespace and exits with its code. Inside: returns. Call it before anything that
/// must happen once (the run id, the report folder). `needs_linux` is the command's
/// refusal elsewhere.
pub async fn enter_local(needs_linux: &str) -> Result<()> {
    lab::ensure_inside(needs_linux).await
}

/// How a command wants its lab session.
pub struct LocalSession {
    /// The address clients aim at: the Service's VIP, or the routing tier.
    pub addr: SocketAddrV4,
    pub propagation: PropagationModel,
    /// Print the `[platform] local: ...` line before the servers start (the experiment's
    /// output, which CI and the docs quote).
    pub announce: bool,
    /// The programs the command needs beyond every run's ([`prereq::BASE`]), checked
    /// before anything is built.
    pub tools: &'static [prereq::Tool],
}

impl LocalSession {
    /// The Service's VIP with `propagation`.
    pub fn service(propagation: PropagationModel) -> LocalSession {
        LocalSession { addr: zerodrop_platform::local::nft::VIP, propagation, announce: false, tools: &[prereq::NFT] }
    }

    /// The routing tier's address (`canary`, `blue-green`): clients go through HAProxy,
    /// not the Service, so no propagation delay applies.
    pub fn routing_tier() -> LocalSession {
        LocalSession {
            addr: zerodrop_platform::local::two_versions::ROUTER,
            propagation: PropagationModel::constant(Duration::ZERO),
            announce: false,
            tools: &[prereq::HAPROXY],
        }
    }
}

/// Runs `work` on the local platform inside the lab (see [`enter_local`]), releasing
/// the lab's pods and private servers however the work ends.
pub async fn on_local<W: Work<LocalPlatform>>(run: &RunDir, session: LocalSession, work: W) -> Result<W::Output> {
    let lab = if session.announce {
        Lab::join_announced(&run.id, session.addr, &run.dir).await?
    } else {
        Lab::join(&run.id, session.addr, &run.dir).await?
    };
    let platform = lab.platform(session.propagation);
    let result = lab::until_interrupted(
        work.run(platform),
        format!("pods stopped, private servers released, partial logs kept in {}", run.dir.display()),
    )
    .await;
    lab.release().await;
    result
}

/// Checks the cluster's prerequisites before anything starts (the report folder is
/// not created when they fail).
pub fn check_kind(opts: &KindOptions) -> Result<()> {
    kind::prereq::check(&kind::prereq::System::default(), opts)
}

/// Runs `work` on the kind platform: the cluster set up (or reached), the run's
/// namespace, and the teardown `--keep` allows, however the work ends.
pub async fn on_kind<W: Work<KindPlatform>>(
    run: &RunDir,
    opts: KindOptions,
    roll_timeout: Duration,
    work: W,
) -> Result<W::Output> {
    let mut session = kind::Session::new(opts);
    let result = lab::until_interrupted(
        async {
            session.setup().await?;
            let platform = KindPlatform::connect(session.opts.clone(), roll_timeout).await?;
            eprintln!("[platform] {}", platform.describe());
            work.run(platform).await
        },
        format!("partial logs kept in {}", run.dir.display()),
    )
    .await;
    session.teardown().await;
    result
}

/// `--dry-run`: prints the kind platform's plan for `cargo xtask <command>` under a
/// heading that says `what` it is and that nothing was executed. Every command's dry
/// run ends here, so they all read alike.
pub fn print_plan(command: &str, what: &str, plan: &kind::plan::Plan) {
    println!("# cargo xtask {command} --platform kind: {what} (dry run; nothing below was executed)");
    print!("{}", plan.render());
}

/// Runs `work` where `choice` says: the local lab (entered first: outside it, this
/// re-runs the command inside and exits) or the kind cluster (its prerequisites checked
/// first). `run`'s folder is created once the platform's own checks have passed; then
/// `started` prints the command's first line.
#[allow(clippy::too_many_arguments)]
pub async fn on_chosen<W, O>(
    choice: Choice,
    platform: &PlatformArgs,
    run: &RunDir,
    local: LocalSession,
    needs_linux: &str,
    roll_timeout: Duration,
    started: impl FnOnce(&RunDir),
    work: W,
) -> Result<O>
where
    W: Work<LocalPlatform, Output = O> + Work<KindPlatform, Output = O>,
{
    match choice {
        Choice::Local => {
            if cfg!(target_os = "linux") {
                prereq::check(&[&prereq::BASE[..], local.tools].concat())?;
            }
            enter_local(needs_linux).await?;
            run.create()?;
            started(run);
            on_local(run, local, work).await
        }
        Choice::Kind | Choice::KindPlan => {
            let opts = platform.kind_options(run);
            check_kind(&opts)?;
            run.create()?;
            started(run);
            on_kind(run, opts, roll_timeout, work).await
        }
    }
}
