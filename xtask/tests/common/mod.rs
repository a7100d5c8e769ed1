//! What the tests that drive a real `cargo xtask up` share: the binary, a command with
//! a private target dir, and the check that the service binaries are built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// `xtask` with a private target dir, which keeps the fleet's state file and control
/// socket away from a fleet someone else has up; no AMQP_URL/DATABASE_URL, so the lab
/// starts its own servers.
pub fn xtask(target: &Path) -> Command {
    let mut c = Command::new(XTASK);
    c.env("CARGO_TARGET_DIR", target).env_remove("AMQP_URL").env_remove("DATABASE_URL");
    c
}

#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn run(target: &Path, args: &[&str]) -> Output {
    xtask(target).args(args).stdin(Stdio::null()).output().expect("running xtask")
}

/// The directory of the service binaries `up --bin-dir` needs, built next to xtask.
pub fn service_bin_dir() -> PathBuf {
    let bin_dir = PathBuf::from(XTASK).parent().expect("the binary's directory").to_path_buf();
    for b in ["zerodrop-api", "zerodrop-worker", "zerodrop-init"] {
        assert!(
            bin_dir.join(b).exists(),
            "{b} is not built in {}; run this through `cargo xtask test` (cargo test --workspace builds it)",
            bin_dir.display()
        );
    }
    bin_dir
}
