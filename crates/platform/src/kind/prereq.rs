//! What the kind platform needs before it touches anything, one clear message per
//! missing piece, and `--platform auto`'s choice.

use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const INSTALL_KIND: &str = "install kind with `go install sigs.k8s.io/kind@latest`, or put a release binary \
    (https://github.com/kubernetes-sigs/kind/releases) on PATH; see https://kind.sigs.k8s.io/docs/user/quick-start/#installation";
pub const INSTALL_DOCKER: &str = "install Docker Engine (https://docs.docker.com/engine/install/) and start it \
    (`sudo systemctl start docker`); your user must be allowed to use it (`docker info` must succeed)";

/// The oldest Kubernetes the manifests run on: the preStop hook's `sleep` action is
/// on by default from 1.30 (feature gate PodLifecycleSleepAction).
pub const MIN_KUBERNETES: (u32, u32) = (1, 30);

/// The API server's `/version` answer against [`MIN_KUBERNETES`]. `minor` may carry
/// a provider's suffix (`"30+"` on GKE and EKS).
pub fn check_server_version(v: &k8s_openapi::apimachinery::pkg::version::Info) -> Result<()> {
    let num = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    let (Some(major), Some(minor)) = (num(&v.major), num(&v.minor)) else {
        bail!(
            "the API server reports version {:?} (major {:?}, minor {:?}), which cannot be compared with 1.30",
            v.git_version,
            v.major,
            v.minor
        );
    };
    let (want_major, want_minor) = MIN_KUBERNETES;
    if (major, minor) < (want_major, want_minor) {
        bail!(
            "the cluster runs Kubernetes {} and the stages need {want_major}.{want_minor} or newer: their preStop \
             hooks use the `sleep` action (PodLifecycleSleepAction, on by default from 1.30), which older API \
             servers reject; use a newer kind node image (`kind create cluster --image kindest/node:v1.33.1`) or \
             cluster",
            v.git_version
        );
    }
    Ok(())
}

/// How the checks see the machine; [`System`] is the real one.
pub trait Probe {
    /// `program` on PATH, if there.
    fn which(&self, program: &str) -> Option<PathBuf>;
    /// `docker info`: `Err` carries what it printed when the daemon does not answer.
    fn docker_info(&self) -> Result<(), String>;
    /// `kind get clusters`.
    fn kind_clusters(&self) -> Result<Vec<String>, String>;
    /// Context names in the kubeconfig kube-rs reads (KUBECONFIG or ~/.kube/config).
    fn kube_contexts(&self) -> Result<Vec<String>, String>;
}

/// The machine, with the PATH it was given (the process's own by default).
pub struct System {
    pub path: OsString,
}

impl Default for System {
    fn default() -> Self {
        System { path: std::env::var_os("PATH").unwrap_or_default() }
    }
}

pub fn which_in(path: &std::ffi::OsStr, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

impl System {
    fn output(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let exe = self.which(program).ok_or_else(|| format!("`{program}` is not on PATH"))?;
        let out = std::process::Command::new(exe)
            .args(args)
            .env("PATH", &self.path)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("running {program}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string();
            Err(first)
        }
    }
}

impl Probe for System {
    fn which(&self, program: &str) -> Option<PathBuf> {
        which_in(&self.path, program)
    }

    fn docker_info(&self) -> Result<(), String> {
        self.output("docker", &["info", "--format", "{{.ServerVersion}}"]).map(|_| ())
    }

    fn kind_clusters(&self) -> Result<Vec<String>, String> {
        Ok(self
            .output("kind", &["get", "clusters"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    fn kube_contexts(&self) -> Result<Vec<String>, String> {
        let kc = kube::config::Kubeconfig::read().map_err(|e| e.to_string())?;
        Ok(kc.contexts.into_iter().map(|c| c.name).collect())
    }
}

/// Which platform `--platform auto` runs, and why (printed, and the report names the
/// platform that ran).
pub fn choose_auto(p: &dyn Probe) -> (crate::PlatformKind, String) {
    use crate::PlatformKind;
    if p.which("docker").is_none() {
        return (PlatformKind::Local, "auto: no `docker` on PATH, so the local platform".into());
    }
    if let Err(e) = p.docker_info() {
        return (PlatformKind::Local, format!("auto: `docker info` failed ({e}), so the local platform"));
    }
    if p.which("kind").is_none() {
        return (PlatformKind::Local, "auto: Docker answers but `kind` is not on PATH, so the local platform".into());
    }
    (PlatformKind::Kind, "auto: Docker answers and `kind` is on PATH, so the kind platform".into())
}

/// Everything a kind run needs, checked before anything is created.
pub fn check(p: &dyn Probe, opts: &super::KindOptions) -> Result<()> {
    opts.validate()?;
    if p.which("docker").is_none() {
        bail!("the kind platform needs Docker, and `docker` is not on PATH: {INSTALL_DOCKER}");
    }
    if opts.uses_kind_cli() && p.which("kind").is_none() {
        bail!("the kind platform needs `kind`, which is not on PATH: {INSTALL_KIND}");
    }
    if let Err(e) = p.docker_info() {
        bail!("no Docker daemon answers (`docker info`: {e}): {INSTALL_DOCKER}; or run with --platform local");
    }
    if !opts.root.join("services/Dockerfile").is_file() {
        bail!("{} is missing: the images are built from it", opts.root.join("services/Dockerfile").display());
    }
    if !opts.uses_kind_cli() {
        // --registry and an existing context: any cluster, reached through the kubeconfig.
        let ctx = opts.context_name();
        let contexts = p.kube_contexts().map_err(|e| anyhow::anyhow!("reading the kubeconfig: {e}"))?;
        if !contexts.iter().any(|c| c == &ctx) {
            bail!(
                "--context {ctx} is not in your kubeconfig (KUBECONFIG or ~/.kube/config; contexts: {})",
                if contexts.is_empty() { "none".to_string() } else { contexts.join(", ") }
            );
        }
        return Ok(());
    }
    let clusters = p.kind_clusters().map_err(|e| anyhow::anyhow!("`kind get clusters` failed: {e}"))?;
    match &opts.context {
        None => {
            if clusters.iter().any(|c| c == &opts.cluster) {
                bail!(
                    "a kind cluster named `{0}` already exists. Delete it (`kind delete cluster --name {0}`), or run the \
                     experiment in it with --context kind-{0} (it then stays up, and only namespace `{1}` is removed)",
                    opts.cluster,
                    opts.namespace
                );
            }
        }
        Some(ctx) => {
            // `validate` refused a non-kind context without --registry.
            let Some(name) = ctx.strip_prefix("kind-") else {
                bail!("--context {ctx} is not a kind cluster's context")
            };
            if !clusters.iter().any(|c| c == name) {
                let have = if clusters.is_empty() { "none".to_string() } else { clusters.join(", ") };
                bail!("--context {ctx}: there is no kind cluster `{name}` (`kind get clusters`: {have})");
            }
            let contexts = p.kube_contexts().map_err(|e| anyhow::anyhow!("reading the kubeconfig: {e}"))?;
            if !contexts.iter().any(|c| c == ctx) {
                bail!(
                    "--context {ctx} is not in your kubeconfig (contexts: {}); `kind export kubeconfig --name {name}` adds it",
                    if contexts.is_empty() { "none".to_string() } else { contexts.join(", ") }
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #8, item 8: the API server's `/version` answer, in its exact shape.
    fn version(major: &str, minor: &str, git: &str) -> serde_json::Value {
        serde_json::json!({
            "major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
            "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
            "gitVersion": git, "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828", "gitTreeState": "clean",
            "buildDate": "2025-05-21T08:05:44Z", "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64"
        })
    }

    #[test]
    fn the_server_must_be_kubernetes_1_30_or_newer() {
        let info = |j| serde_json::from_value(j).unwrap();
        check_server_version(&info(version("1", "33", "v1.33.1"))).unwrap();
        check_server_version(&info(version("1", "30+", "v1.30.4-gke.1348000"))).unwrap();
        let err = check_server_version(&info(version("1", "29", "v1.29.14"))).unwrap_err().to_string();
        assert!(
            err.contains("Kubernetes v1.29.14") && err.contains("1.30 or newer") && err.contains("`sleep`"),
            "{err}"
        );
        assert!(check_server_version(&info(version("", "", "v0.0.0-master+$Format:%H$"))).is_err());
    }

    #[tokio::test]
    async fn the_version_is_read_from_the_api_server() {
        let body = version("1", "29", "v1.29.14").to_string();
        let (client, requests) = crate::kind::fake_api::client(move |req| {
            if req == "GET /version" {
                crate::kind::fake_api::Reply::ok(body.clone())
            } else {
                crate::kind::fake_api::Reply::not_found()
            }
        });
        let err = format!("{:#}", crate::kind::server_version(&client, "kind-zerodrop").await.unwrap_err());
        assert!(err.contains("v1.29.14"), "{err}");
        assert_eq!(requests.lock().unwrap().as_slice(), ["GET /version"]);
    }
    use crate::PlatformKind;

    /// A directory holding fake `docker` / `kind` scripts: a PATH with exactly them.
    fn fake_path(tools: &[(&str, &str)]) -> (PathBuf, System) {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("zerodrop-prereq-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, script) in tools {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let sys = System { path: dir.clone().into_os_string() };
        (dir, sys)
    }

    fn opts() -> crate::kind::KindOptions {
        crate::kind::KindOptions::new(None, false, "t".into(), "t".into(), std::env::temp_dir())
    }

    #[test]
    fn a_path_without_kind_names_kind_and_how_to_install_it() {
        let (dir, sys) = fake_path(&[("docker", "exit 0")]);
        let err = check(&sys, &opts()).unwrap_err().to_string();
        assert!(err.contains("`kind`, which is not on PATH"), "{err}");
        assert!(err.contains("go install sigs.k8s.io/kind@latest"), "{err}");
        assert!(err.contains("https://kind.sigs.k8s.io/docs/user/quick-start/#installation"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn no_docker_daemon_is_its_own_message() {
        let (dir, sys) =
            fake_path(&[("docker", "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1"), ("kind", "exit 0")]);
        let err = check(&sys, &opts()).unwrap_err().to_string();
        assert!(
            err.starts_with("no Docker daemon answers (`docker info`: Cannot connect to the Docker daemon"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn auto_picks_local_when_docker_info_fails() {
        let (dir, sys) =
            fake_path(&[("docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1"), ("kind", "exit 0")]);
        let (kind, why) = choose_auto(&sys);
        assert_eq!(kind, PlatformKind::Local);
        assert!(why.contains("`docker info` failed (Cannot connect to the Docker daemon)"), "{why}");
        let _ = std::fs::remove_dir_all(dir);

        let (dir, sys) = fake_path(&[("docker", "exit 0"), ("kind", "exit 0")]);
        assert_eq!(choose_auto(&sys).0, PlatformKind::Kind);
        let _ = std::fs::remove_dir_all(dir);
        let (dir, sys) = fake_path(&[("docker", "exit 0")]);
        assert_eq!(choose_auto(&sys).0, PlatformKind::Local, "no kind on PATH");
        let _ = std::fs::remove_dir_all(dir);
    }

    struct Fake {
        clusters: Vec<String>,
        contexts: Vec<String>,
    }
    impl Probe for Fake {
        fn which(&self, p: &str) -> Option<PathBuf> {
            Some(PathBuf::from("/usr/bin").join(p))
        }
        fn docker_info(&self) -> Result<(), String> {
            Ok(())
        }
        fn kind_clusters(&self) -> Result<Vec<String>, String> {
            Ok(self.clusters.clone())
        }
        fn kube_contexts(&self) -> Result<Vec<String>, String> {
            Ok(self.contexts.clone())
        }
    }

    /// Options whose workspace root holds a services/Dockerfile.
    fn with_root(mut o: crate::kind::KindOptions) -> crate::kind::KindOptions {
        let root = std::env::temp_dir().join(format!("zerodrop-prereq-root-{}", std::process::id()));
        std::fs::create_dir_all(root.join("services")).unwrap();
        std::fs::write(root.join("services/Dockerfile"), "FROM scratch\n").unwrap();
        o.root = root;
        o
    }

    #[test]
    fn an_existing_cluster_and_a_wrong_context_are_refused_clearly() {
        let mut bare = opts();
        bare.root = std::env::temp_dir().join("zerodrop-prereq-no-such-root");
        let err = check(&Fake { clusters: vec![], contexts: vec![] }, &bare).unwrap_err().to_string();
        assert!(err.contains("services/Dockerfile is missing"), "{err}");
        let fake = Fake { clusters: vec!["zerodrop".into()], contexts: vec!["kind-zerodrop".into(), "prod".into()] };
        let err = check(&fake, &with_root(opts())).unwrap_err().to_string();
        assert!(err.starts_with("a kind cluster named `zerodrop` already exists"), "{err}");
        assert!(err.contains("--context kind-zerodrop"), "{err}");

        let o = with_root(crate::kind::KindOptions::new(
            Some("prod".into()),
            false,
            "t".into(),
            "t".into(),
            std::env::temp_dir(),
        ));
        let err = check(&fake, &o).unwrap_err().to_string();
        assert!(err.starts_with("--context prod is not a kind cluster's context"), "{err}");
        assert!(
            err.contains(
                "a non-kind cluster cannot see local images; pass --registry <prefix> that the cluster can pull from"
            ),
            "{err}"
        );

        let o = with_root(crate::kind::KindOptions::new(
            Some("kind-other".into()),
            false,
            "t".into(),
            "t".into(),
            std::env::temp_dir(),
        ));
        let err = check(&fake, &o).unwrap_err().to_string();
        assert!(err.contains("there is no kind cluster `other`"), "{err}");

        let o = with_root(crate::kind::KindOptions::new(
            Some("kind-zerodrop".into()),
            false,
            "t".into(),
            "t".into(),
            std::env::temp_dir(),
        ));
        assert!(check(&fake, &o).is_ok());
        let fake = Fake { clusters: vec!["zerodrop".into()], contexts: vec![] };
        let err = check(&fake, &o).unwrap_err().to_string();
        assert!(err.contains("is not in your kubeconfig"), "{err}");
    }

    #[test]
    fn another_cluster_with_a_registry_needs_docker_and_the_context_but_not_kind() {
        let o = |ctx: &str| {
            with_root(crate::kind::KindOptions::new(
                Some(ctx.into()),
                false,
                "t".into(),
                "t".into(),
                std::env::temp_dir(),
            ))
            .with_registry(Some("registry.local:5000/".into()))
        };
        assert_eq!(o("prod").registry.as_deref(), Some("registry.local:5000"));
        // Docker answers, no `kind` anywhere on PATH.
        let (dir, sys) = fake_path(&[("docker", "exit 0")]);
        let mut no_kind = o("prod");
        no_kind.context = Some("no-such-context-zerodrop".into());
        let err = check(&sys, &no_kind).unwrap_err().to_string();
        // Past Docker and without asking for `kind`: on to the kubeconfig (which may
        // not exist on this machine at all).
        assert!(err.contains("kubeconfig") && !err.contains("`kind`"), "{err}");
        let _ = std::fs::remove_dir_all(dir);

        let fake = Fake { clusters: vec![], contexts: vec!["prod".into()] };
        assert!(check(&fake, &o("prod")).is_ok());
        let err = check(&fake, &o("staging")).unwrap_err().to_string();
        assert!(err.contains("--context staging is not in your kubeconfig") && err.contains("contexts: prod"), "{err}");
        // A kind context with a registry: pushed, not loaded, so `kind` is not asked.
        assert!(check(&Fake { clusters: vec![], contexts: vec!["kind-lab".into()] }, &o("kind-lab")).is_ok());

        let (dir, sys) = fake_path(&[("docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1")]);
        let err = check(&sys, &o("prod")).unwrap_err().to_string();
        assert!(err.starts_with("no Docker daemon answers"), "{err}");
        let _ = std::fs::remove_dir_all(dir);

        let bad = o("prod").with_registry(Some("https://ghcr.io/me".into()));
        assert!(check(&fake, &bad).unwrap_err().to_string().contains("is not an image prefix"));
    }
}
