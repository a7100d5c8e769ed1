//! `zerodrop-load`: run a load profile, serve a trivial target, or benchmark the
//! generator itself.

mod cli {
    pub mod bench;
    pub mod run;
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
    }
}
