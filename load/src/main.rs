//! `zerodrop-load`: run a load profile or the keep-alive clients, serve a trivial
//! target, benchmark the generator itself, or sample a port's accept queue.

mod cli {
    pub mod bench;
    pub mod keepalive;
    pub mod long_lived;
    pub mod queues;
    pub mod run;
    pub mod shared;
    pub mod wrk;
}

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;

#[derive(Parser)]
#[command(name = "zerodrop-load", version, about = "Open-loop HTTP load generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send a constant request rate to a target and classify every outcome.
    Run(cli::run::Args),
    /// Answer 200 "ok" to any request, to benchmark the generator on its own.
    Target {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
    },
    /// Measure the highest rate the generator holds against the built-in target.
    Bench(cli::bench::Args),
    /// Run the keep-alive client profile (the thundering reconnect's load) against a
    /// Service address.
    Keepalive(cli::keepalive::Args),
    /// Print the accept queue of a listening port once per period (the api pods'
    /// sidecar on a cluster).
    Queues(cli::queues::Args),
    /// SSE and long-operation clients until told (POST /no-new, /stop on the control
    /// listener); prints their counts as `run --out -` prints its result.
    LongLived(cli::long_lived::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(args) => cli::run::main(args).await,
        Cmd::Target { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
            eprintln!("serving 200 ok on http://{}", listener.local_addr()?);
            zerodrop_load::target::serve(listener).await.context("accept")
        }
        Cmd::Bench(args) => cli::bench::main(args).await,
        Cmd::Keepalive(args) => cli::keepalive::main(args).await,
        Cmd::Queues(args) => cli::queues::main(args).await,
        Cmd::LongLived(args) => cli::long_lived::main(args).await,
    }
}
