//! `cargo xtask`: the zerodrop runner. See ARCHITECTURE.md for the map.

mod alongside;
mod cmd_blue_green;
mod cmd_canary;
mod cmd_client;
mod cmd_experiment;
mod cmd_kill_mid_job;
mod cmd_test;
mod cmd_tune;
mod cmd_up;
mod exit;
mod experiment;
mod harness;
mod long_lived;
mod progress;
mod progressive;
mod reconnect;
mod tune;

use clap::{Parser, Subcommand};
use zerodrop_stages::StageName;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "zerodrop: make a rolling deploy lose requests and jobs, then remove each loss with one named fix",
    long_about = None,
    after_help = exit::HELP,
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
    /// Measure the deregistration delay over 30+ pod terminations under load and
    /// recommend preStop, drain budget and grace (a stage override for `experiment
    /// --override`); `--compare` runs tuned / folklore 15 s / too short side by side.
    Tune(cmd_tune::Args),
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
    /// Rolling restart of the fleet started by `up`; streams each step and exits 4
    /// with the reason when the rollout fails or makes no progress in time.
    #[command(after_help = exit::HELP)]
    Rollout(cmd_up::RolloutArgs),
    /// Pods, readiness and Service endpoints of the fleet started by `up` (answers
    /// while a rollout runs).
    Status(cmd_up::StatusArgs),
    /// Pod logs of the fleet started by `up`.
    Logs(cmd_up::LogsArgs),
    /// Stop the fleet started by `up`.
    Down,
    /// Canary of v2 beside v1 behind HAProxy: sample-sized steps, gates, automatic rollback.
    Canary(cmd_canary::Args),
    /// Blue-green of v2 beside v1 behind HAProxy: smoke tests, atomic switch, bake, rollback.
    BlueGreen(cmd_blue_green::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::from(exit::COULD_NOT_RUN);
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Experiment(a) => cmd_experiment::run(a).await,
            Cmd::Test(a) => cmd_test::run(a).await,
            Cmd::Tune(a) => cmd_tune::run(a).await,
            Cmd::KillMidJob(a) => cmd_kill_mid_job::run(a).await,
            Cmd::Reconnect(a) => reconnect::run(a).await,
            Cmd::LongLived(a) => long_lived::run(a).await,
            Cmd::Up(a) => cmd_up::up(a).await,
            Cmd::Client(a) => cmd_client::run(a),
            Cmd::Rollout(a) => cmd_up::rollout(a).await,
            Cmd::Status(a) => cmd_up::status(a).await,
            Cmd::Logs(a) => cmd_up::logs(a).await,
            Cmd::Down => cmd_up::control("down").await,
            Cmd::Canary(a) => cmd_canary::run(a).await,
            Cmd::BlueGreen(a) => cmd_blue_green::run(a).await,
        }
    });
    exit::report(result)
}

/// Parses `naive,pid1` into stage names, with the valid names in the error.
pub fn parse_stages(s: &str) -> Result<Vec<StageName>, String> {
    s.split(',').map(|p| p.trim().parse()).collect()
}
