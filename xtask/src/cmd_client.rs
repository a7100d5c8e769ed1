//! `cargo xtask client -- <command...>`: runs a third-party client inside the running
//! lab's network namespace, where the Service's virtual IP is programmed, so curl, wrk
//! or hey see the kernel's own DNAT and its errors, exactly like the runner's load.

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use zerodrop_platform::local::netns::{self, lab};

#[derive(clap::Args)]
pub struct Args {
    /// The lab to enter (the run id `experiment` prints, or `up`); default: the newest.
    #[arg(long)]
    run: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let lab = lab::choose(lab::running(&lab::dir()), a.run.as_deref())?;
    eprintln!("[client] lab {} (pid {}), Service {}", lab.run, lab.pid, lab.vip);
    let err =
        std::process::Command::new("nsenter").args(lab::nsenter_args(&lab, netns::is_root())).args(&a.command).exec();
    // exec only returns on failure.
    Err(err).context("running nsenter (util-linux) to enter the lab")
}
