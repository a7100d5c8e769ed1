//! The running labs, as `cargo xtask client` finds them: each runner inside a lab
//! writes target/zerodrop-lab/<run>.json with its PID, whose /proc/<pid>/ns/net is the
//! lab, and removes it on exit. A file whose process is gone is stale and ignored.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lab {
    pub run: String,
    pub pid: u32,
    /// The Service's address inside the lab.
    pub vip: String,
    /// The lab is owned by a user namespace (not created by root): joining it takes
    /// `--user` too.
    pub user_ns: bool,
    pub started_unix_ms: i64,
}

pub fn dir() -> PathBuf {
    crate::workspace::target_dir().join("zerodrop-lab")
}

/// The state file of the lab this process runs; removed on drop.
pub struct StateFile {
    pub lab: Lab,
    path: PathBuf,
}

impl StateFile {
    pub fn write(lab: Lab) -> Result<StateFile> {
        let d = dir();
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        let path = d.join(format!("{}.json", lab.run));
        std::fs::write(&path, serde_json::to_string_pretty(&lab)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(StateFile { lab, path })
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Labs whose process still runs in a network namespace other than ours.
pub fn running(dir: &Path) -> Vec<Lab> {
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_str::<Lab>(&std::fs::read_to_string(e.path()).ok()?).ok())
        .filter(|l| {
            let ns = std::fs::read_link(format!("/proc/{}/ns/net", l.pid)).ok();
            ns.is_some() && ns != own
        })
        .collect()
}

/// `--run <id>` if given, else the newest running lab.
pub fn choose(mut labs: Vec<Lab>, run: Option<&str>) -> Result<Lab> {
    if labs.is_empty() {
        bail!(
            "no lab is running (nothing alive in {}): start `cargo xtask experiment --platform local` \
             or `cargo xtask up` first, with the same CARGO_TARGET_DIR",
            dir().display()
        );
    }
    labs.sort_by_key(|l| l.started_unix_ms);
    match run {
        None => Ok(labs.pop().context("checked non-empty")?),
        Some(id) => {
            let ids: Vec<String> = labs.iter().map(|l| l.run.clone()).collect();
            labs.into_iter()
                .find(|l| l.run == id)
                .with_context(|| format!("no running lab {id:?}; running: {}", ids.join(", ")))
        }
    }
}

/// `nsenter` arguments that run a command in `lab`'s network namespace. Root enters
/// the namespace directly; anyone else enters the lab's user namespace first (which
/// they own), keeping their uid.
pub fn nsenter_args(lab: &Lab, root: bool) -> Vec<String> {
    let mut a = vec![format!("--target={}", lab.pid)];
    if lab.user_ns && !root {
        a.extend(["--user".to_string(), "--preserve-credentials".to_string()]);
    }
    a.extend(["--net".to_string(), "--".to_string()]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(run: &str, t: i64, user_ns: bool) -> Lab {
        Lab { run: run.into(), pid: 42, vip: "127.96.0.1:80".into(), user_ns, started_unix_ms: t }
    }

    #[test]
    fn the_newest_lab_unless_one_is_named() {
        let labs = vec![lab("b", 2, false), lab("c", 3, false), lab("a", 1, false)];
        assert_eq!(choose(labs.clone(), None).unwrap().run, "c");
        assert_eq!(choose(labs.clone(), Some("a")).unwrap().run, "a");
        let err = choose(labs, Some("zz")).unwrap_err().to_string();
        assert!(err.contains("no running lab \"zz\"; running: a, b, c"), "{err}");
        let err = choose(Vec::new(), None).unwrap_err().to_string();
        assert!(err.starts_with("no lab is running"), "{err}");
    }

    #[test]
    fn only_a_user_namespace_lab_joined_by_a_non_root_user_needs_user() {
        assert_eq!(nsenter_args(&lab("r", 1, false), true), ["--target=42", "--net", "--"]);
        assert_eq!(nsenter_args(&lab("r", 1, true), true), ["--target=42", "--net", "--"]);
        assert_eq!(
            nsenter_args(&lab("r", 1, true), false),
            ["--target=42", "--user", "--preserve-credentials", "--net", "--"]
        );
    }

    #[test]
    fn a_dead_or_foreign_lab_is_not_running() {
        let d = std::env::temp_dir().join(format!("zerodrop-lab-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // Our own process shares our namespace; PID 0 never has a /proc entry.
        for (name, pid) in [("self", std::process::id()), ("dead", 0)] {
            let l = Lab { pid, ..lab(name, 1, false) };
            std::fs::write(d.join(format!("{name}.json")), serde_json::to_string(&l).unwrap()).unwrap();
        }
        assert!(running(&d).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
