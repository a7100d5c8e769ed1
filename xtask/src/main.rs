//! `cargo xtask`: the zerodrop runner. See ARCHITECTURE.md for the map.

mod alongside;
mod backing;
mod chaos;
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
mod migrate;
mod platform_args;
mod progress;
mod progressive;
mod reconnect;
mod run_dir;
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
    /// before/after report to reports/<run-id>/. Platforms: local, kind.
    Experiment(cmd_experiment::Args),
    /// Measure the deregistration delay over 30+ pod terminations under load and
    /// recommend preStop, drain budget and grace (a stage override for `experiment
    /// --override`); `--compare` runs tuned / folklore 15 s / too short side by side.
    /// Platforms: local, kind.
    Tune(cmd_tune::Args),
    /// Run the test suite against real RabbitMQ and PostgreSQL (private servers
    /// unless AMQP_URL / DATABASE_URL are set). Runs on this machine (the local
    /// platform's lab for the fleet tests).
    Test(cmd_test::Args),
    /// SIGKILL a worker mid-job and count, in the ledger, how often the job was
    /// applied after redelivery, with and without the idempotent consumer. Platforms:
    /// local only (it kills a worker process between its commit and its ack).
    KillMidJob(cmd_kill_mid_job::Args),
    /// The thundering reconnect: 2,000+ keep-alive clients across a rolling deploy,
    /// keep-alive closed at once vs jittered, side by side. Platforms: local, kind (the
    /// clients as a Job, each api pod's accept queue read by its own sidecar).
    Reconnect(reconnect::Args),
    /// Long-lived connections: SSE streams resumed with Last-Event-ID and long
    /// operations refused at admission, across pods draining for 600 s. The clients
    /// run in the runner (local) or as a Job in the cluster (kind).
    /// Platforms: local, kind.
    LongLived(long_lived::Args),
    /// Chaos: the same fault on the api pods' broker path (+800 ms each way) under the
    /// same load, without and with the publish circuit breaker; the report shows each
    /// phase's error rate and p50/p99, the breaker's transitions, the time to open and
    /// to recover, and that no job was lost or applied twice. Platforms: local, kind (the
    /// fault is carried by a relay: in the runner locally, a broker-relay Deployment set
    /// through a port-forward on a cluster).
    Chaos(chaos::Args),
    /// A ledger schema change under load: `amount` renamed to `amount_cents` by
    /// expand-and-contract (sqlx migrations and worker deploys with a new
    /// ZD_LEDGER_WRITES, one step at a time) and by the destructive one-step rename,
    /// counting database errors, lost, duplicated and wrong jobs per step; `--assert`
    /// exits 3 unless expand-and-contract broke nothing and the destructive rename did.
    /// Platforms: local, kind.
    #[command(after_help = exit::HELP)]
    Migrate(migrate::Args),
    /// Start a fleet of one stage and keep it up. local: in the foreground, in a lab
    /// network namespace with the Service as kernel DNAT on 127.96.0.1:80. kind: applied
    /// in a namespace that outlives the command (the cluster is the control plane);
    /// reach it with `kubectl port-forward svc/api`. Platforms: local, kind.
    Up(cmd_up::UpArgs),
    /// Run a command (curl, wrk, hey ...) inside the running lab's network namespace,
    /// where the Service's address answers: `cargo xtask client -- curl -sS
    /// http://127.96.0.1/work?ms=5`. Platforms: local only.
    Client(cmd_client::Args),
    /// Rolling restart of the fleet started by `up`; streams each step and exits 4
    /// with the reason when the rollout fails or makes no progress in time (on kind: the
    /// restart patch on deployments api and worker, naming the failed pod and its
    /// log's last lines). Platforms: local, kind.
    #[command(after_help = exit::HELP)]
    Rollout(cmd_up::RolloutArgs),
    /// Pods, readiness and Service endpoints of the fleet started by `up` (answers
    /// while a rollout runs; on kind, the pods and the api Service's EndpointSlices).
    /// Platforms: local, kind.
    Status(cmd_up::StatusArgs),
    /// Pod logs of the fleet started by `up` (on kind, from the API; -f needs a POD).
    /// Platforms: local, kind.
    Logs(cmd_up::LogsArgs),
    /// Stop the fleet started by `up` (on kind, delete its namespace). Platforms: local,
    /// kind.
    Down,
    /// Canary of v2 beside v1 behind HAProxy: sample-sized steps, gates, automatic
    /// rollback. Platforms: local, kind.
    Canary(cmd_canary::Args),
    /// Blue-green of v2 beside v1 behind HAProxy: smoke tests, atomic switch, bake,
    /// rollback. Platforms: local, kind.
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
            Cmd::Chaos(a) => chaos::run(a).await,
            Cmd::Migrate(a) => migrate::run(a).await,
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

#[cfg(test)]
mod help_tests {
    use super::*;
    use clap::CommandFactory;

    /// A user on a cluster learns from `--help`, before anything starts, whether a
    /// command runs there.
    #[test]
    fn every_command_names_the_platforms_it_runs_on() {
        for sub in Cli::command().get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            let name = sub.get_name().to_string();
            assert!(
                help.contains("Platforms: local, kind") || help.contains("Platforms: local only") || name == "test",
                "`cargo xtask {name} --help` does not name its platforms:\n{help}"
            );
        }
    }
}
