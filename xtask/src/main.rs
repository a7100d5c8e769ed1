//! `cargo xtask`: the zerodrop runner. See ARCHITECTURE.md for the map.

mod alongside;
mod cmd_client;
mod cmd_experiment;
mod cmd_kill_mid_job;
mod cmd_test;
mod cmd_up;
mod evidence;
mod experiment;
mod guardian;
mod infra;
mod kind;
mod local;
mod long_lived;
mod platform;
mod profile;
mod progress;
mod reconnect;
mod report;
mod workspace;

use clap::{Parser, Subcommand};
use zerodrop_stages::StageName;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "zerodrop: make a rolling deploy lose requests and jobs, then remove each loss with one named fix",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every stage under identical load across a rolling deploy and write the
    /// before/after report to reports/<run-id>/.
    Experiment(cmd_experiment::Args),
    /// Run the test suite against real RabbitMQ and PostgreSQL (private servers
    /// unless AMQP_URL / DATABASE_URL are set).
    Test(cmd_test::Args),
    /// SIGKILL a worker mid-job and count, in the ledger, how often the job was
    /// applied after redelivery, with and without the idempotent consumer.
    KillMidJob(cmd_kill_mid_job::Args),
    /// The thundering reconnect: 2,000+ keep-alive clients across a rolling deploy,
    /// keep-alive closed at once vs jittered, side by side (local platform).
    Reconnect(reconnect::Args),
    /// Long-lived connections: SSE streams resumed with Last-Event-ID and long
    /// operations refused at admission, across pods draining for 600 s (local).
    LongLived(long_lived::Args),
    /// Start a local fleet of one stage and keep it up (foreground), in a lab network
    /// namespace with the Service as kernel DNAT on 127.96.0.1:80.
    Up(cmd_up::UpArgs),
    /// Run a command (curl, wrk, hey ...) inside the running lab's network namespace,
    /// where the Service's address answers: `cargo xtask client -- curl -sS
    /// http://127.96.0.1/work?ms=5`.
    Client(cmd_client::Args),
    /// Rolling restart of the fleet started by `up`.
    Rollout,
    /// Pods, readiness and Service endpoints of the fleet started by `up`.
    Status,
    /// Pod logs of the fleet started by `up`.
    Logs(cmd_up::LogsArgs),
    /// Stop the fleet started by `up`.
    Down,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Experiment(a) => cmd_experiment::run(a).await,
            Cmd::Test(a) => cmd_test::run(a).await,
            Cmd::KillMidJob(a) => cmd_kill_mid_job::run(a).await,
            Cmd::Reconnect(a) => reconnect::run(a).await,
            Cmd::LongLived(a) => long_lived::run(a).await,
            Cmd::Up(a) => cmd_up::up(a).await,
            Cmd::Client(a) => cmd_client::run(a),
            Cmd::Rollout => cmd_up::control("rollout").await,
            Cmd::Status => cmd_up::control("status").await,
            Cmd::Logs(a) => cmd_up::logs(a),
            Cmd::Down => cmd_up::control("down").await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<CheckFailed>() => {
            eprintln!("check failed: {e:#}");
            std::process::ExitCode::from(EXIT_CHECK_FAILED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Exit code when the run completed but a check on its results failed (1 means the
/// run itself could not be carried out).
pub const EXIT_CHECK_FAILED: u8 = 3;

/// The run completed and its report was written, but an asserted property of the
/// results does not hold.
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

/// Parses `naive,pid1` into stage names, with the valid names in the error.
pub fn parse_stages(s: &str) -> Result<Vec<StageName>, String> {
    s.split(',').map(|p| p.trim().parse()).collect()
}
