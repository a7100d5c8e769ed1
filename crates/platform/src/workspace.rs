//! Where things are on disk, and building the service binaries the pods run.

use anyhow::{Context, Result};
use std::path::PathBuf;

pub fn root() -> PathBuf {
    // This crate lives at crates/platform under the workspace root.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().and_then(|p| p.parent()).map(|p| p.to_path_buf()).unwrap_or_else(|| PathBuf::from("."))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Builds the api and the worker (same profile as everything else) and returns the
/// directory holding their binaries. Not `--quiet`: on a fresh clone this compiles for
/// minutes, and cargo's Compiling lines / progress bar show it working; once built,
/// cargo prints one `Finished` line.
pub fn build_services() -> Result<PathBuf> {
    let sh = xshell::Shell::new()?;
    sh.change_dir(root());
    eprintln!("[build] api, worker and init: the binaries the pods run (minutes on a fresh clone, then seconds)");
    xshell::cmd!(sh, "cargo build -p zerodrop-api -p zerodrop-worker -p zerodrop-init")
        .run()
        .context("building the services failed (see the compiler output above)")?;
    Ok(target_dir().join("debug"))
}

pub fn run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    now.format(&fmt).unwrap_or_else(|_| "run".into())
}
