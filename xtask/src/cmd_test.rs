//! `cargo xtask test`: the whole test suite against real RabbitMQ and PostgreSQL.
//! Uses AMQP_URL / DATABASE_URL when set, else starts private servers for the run.

use crate::infra::Backends;
use crate::workspace;
use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (after `--`), e.g. `-- -p zerodrop-api`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_args: Vec<String>,
}

pub async fn run(a: Args) -> Result<()> {
    let work = workspace::target_dir().join("zerodrop-test");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let backends = Backends::acquire(&work).await?;
    eprintln!("[infra] {}", backends.describe());
    let mut cmd = tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace::root())
        .args(["test", "--workspace"])
        .args(&a.cargo_args)
        .env("AMQP_URL", &backends.amqp_url)
        .env("DATABASE_URL", &backends.database_url);
    eprintln!("[test] cargo test --workspace {}", a.cargo_args.join(" "));
    let status = cmd.status().await.context("running cargo test");
    backends.release().await?;
    let status = status?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}
