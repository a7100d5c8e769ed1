//! The programs a local run spawns by name, checked before anything is built or
//! started: a run that would otherwise fail on a missing `nft` only after the first
//! build (minutes) and the private servers' start fails at once, naming every missing
//! program and the package that brings it.

use anyhow::{bail, Result};
use std::path::Path;

/// A program the local platform runs, found on `PATH` as the spawn will look for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
    /// What the run needs it for.
    pub role: &'static str,
}

pub const UNSHARE: Tool = Tool { program: "unshare", package: "util-linux", role: "the lab's namespaces" };
pub const IP: Tool = Tool { program: "ip", package: "iproute2", role: "the lab's loopback" };
pub const NFT: Tool = Tool { program: "nft", package: "nftables", role: "the Service's DNAT to the api pods" };
pub const HAPROXY: Tool =
    Tool { program: "haproxy", package: "haproxy", role: "the routing tier in front of v1 and v2" };

/// What every local run needs, whatever its command.
pub const BASE: [Tool; 2] = [UNSHARE, IP];

/// The tools of `tools` that `found` does not find, in order, each once.
pub fn missing(tools: &[Tool], found: impl Fn(&str) -> bool) -> Vec<Tool> {
    let mut out: Vec<Tool> = Vec::new();
    for t in tools {
        if !found(t.program) && !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

/// One error naming every missing program, what it is for, and one install command.
pub fn message(missing: &[Tool]) -> String {
    let each: Vec<String> =
        missing.iter().map(|t| format!("`{}` ({}, for {})", t.program, t.package, t.role)).collect();
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    format!(
        "the local platform needs {} on PATH; install with `sudo apt-get install {}` (Debian/Ubuntu), \
         or run on a cluster with --platform kind",
        each.join(", "),
        packages.join(" ")
    )
}

/// Fails with [`message`] unless every tool of `tools` is on `PATH`.
pub fn check(tools: &[Tool]) -> Result<()> {
    let gone = missing(tools, on_path);
    if gone.is_empty() {
        Ok(())
    } else {
        bail!("{}", message(&gone))
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|dir| executable(&dir.join(program))))
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_tool_is_named_once_with_its_package() {
        let tools = [UNSHARE, IP, NFT, NFT, HAPROXY];
        let gone = missing(&tools, |p| p == "unshare" || p == "ip");
        assert_eq!(gone, [NFT, HAPROXY]);
        let m = message(&gone);
        assert!(m.contains("`nft` (nftables, for the Service's DNAT"), "{m}");
        assert!(m.contains("`sudo apt-get install nftables haproxy`"), "{m}");
        assert!(missing(&tools, |_| true).is_empty());
    }

    #[test]
    fn a_program_counts_only_as_an_executable_file_on_path() {
        assert!(on_path("sh"), "sh is on every PATH this runs on");
        assert!(!on_path("zerodrop-no-such-program"));
        let dir = std::env::temp_dir();
        assert!(!executable(&dir), "a directory is not a program");
    }
}
