//! A run's id and its report folder: named before anything starts, created once the
//! platform's own checks have passed.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use zerodrop_platform::local::lab;
use zerodrop_platform::workspace;

/// A run's id and its own report folder, `<out>/<run-id>/`.
pub struct RunDir {
    pub id: String,
    pub dir: PathBuf,
}

impl RunDir {
    /// A new run id and where its folder goes under `out` (relative to the workspace
    /// root unless absolute); nothing is created yet.
    pub fn new(out: &Path) -> RunDir {
        let id = workspace::run_id();
        let dir = lab::out_dir(out, &id);
        RunDir { id, dir }
    }

    /// The run `id`'s folder under `out` (tests fix the id a plan names).
    #[cfg(test)]
    pub fn with_id(out: &Path, id: &str) -> RunDir {
        RunDir { id: id.to_string(), dir: lab::out_dir(out, id) }
    }

    /// Creates the folder.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))
    }

    /// The command line as the report quotes it.
    pub fn command() -> String {
        format!("cargo xtask {}", std::env::args().skip(1).collect::<Vec<_>>().join(" "))
    }
}
