//! `cargo xtask test`: the whole test suite against real RabbitMQ and PostgreSQL.
//! Uses AMQP_URL / DATABASE_URL when set, else starts private servers for the run.
//! Beside them it always starts a second private pair for the fault tests alone, and serves
//! restarts of that pair on a Unix socket (`ZD_FAULT_CTL`, see infra/fault_ctl.rs): a
//! restart breaks every connection to the server, so no other test may be using it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use zerodrop_platform::infra::{Backends, FaultControl};
use zerodrop_platform::workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (after `--`), e.g. `-- -p zerodrop-api`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_args: Vec<String>,
}

pub async fn run(a: Args) -> Result<()> {
    let work = workspace::target_dir().join("zerodrop-test");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Both pairs start at once: RabbitMQ's start dominates either way.
    let (backends, faults) = tokio::join!(Backends::acquire(&work), Backends::acquire_private(&work));
    let (backends, faults) = match (backends, faults) {
        (Ok(b), Ok(f)) => (b, f),
        (b, f) => {
            let mut errors = Vec::new();
            for r in [b, f] {
                match r {
                    Ok(ok) => ok.release().await?,
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            bail!("{}", errors.join("\n\n"));
        }
    };
    eprintln!("[infra] {}", backends.describe());
    eprintln!("[infra] fault tests (restartable): {}", faults.describe());
    let faults = Arc::new(faults);
    let ctl_dir = work.join(format!("fault-ctl-{}", std::process::id()));
    let ctl = match FaultControl::serve(faults.clone(), &ctl_dir) {
        Ok(ctl) => ctl,
        Err(e) => {
            release_faults(faults).await;
            backends.release().await?;
            return Err(e);
        }
    };

    let mut cmd = tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace::root())
        .args(["test", "--workspace"])
        .args(&a.cargo_args)
        .env("AMQP_URL", &backends.amqp_url)
        .env("DATABASE_URL", &backends.database_url)
        .env("ZD_FAULT_CTL", ctl.path())
        .env("ZD_FAULT_AMQP_URL", &faults.amqp_url)
        .env("ZD_FAULT_DATABASE_URL", &faults.database_url);
    eprintln!("[test] cargo test --workspace {}", a.cargo_args.join(" "));
    let status = cmd.status().await.context("running cargo test");
    ctl.shutdown().await;
    release_faults(faults).await;
    backends.release().await?;
    let status = status?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}

/// Releases the fault pair once the control channel has let go of it.
async fn release_faults(mut faults: Arc<Backends>) {
    for _ in 0..100 {
        match Arc::try_unwrap(faults) {
            Ok(b) => {
                if let Err(e) = b.release().await {
                    eprintln!("[infra] fault servers: {e:#}");
                }
                return;
            }
            Err(shared) => faults = shared,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still shared: the last holder's Drop stops the servers (and the watchdog backs it up).
    eprintln!("[infra] fault servers still in use; they stop when released");
}
