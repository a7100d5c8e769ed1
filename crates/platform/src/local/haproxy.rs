//! The routing tier of the progressive-delivery commands: Debian's HAProxy, started
//! inside the lab's network namespace, splitting `stable` (v1) from `canary` (v2) per
//! request, driven through its runtime API on a unix socket (`router::runtime_api`).

use crate::router::runtime_api::{RuntimeApi, Transport};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// One server line of a backend.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
}

/// The two backends and where the frontend listens.
#[derive(Debug, Clone)]
pub struct Layout {
    pub bind: SocketAddr,
    pub stable: Vec<Server>,
    pub canary: Vec<Server>,
    /// Rules that send a request to the canary whatever the weight.
    pub routing: zerodrop_manifests::Routing,
}

/// The configuration HAProxy runs with: the same text the kind path renders
/// (`zerodrop_manifests::haproxy_config`).
pub fn render_config(l: &Layout, map: &Path, socket: &Path) -> String {
    let conv = |v: &[Server]| {
        v.iter()
            .map(|s| zerodrop_manifests::Backend { name: s.name.clone(), addr: s.addr.to_string() })
            .collect::<Vec<_>>()
    };
    zerodrop_manifests::haproxy_config(
        &l.bind.to_string(),
        &conv(&l.stable),
        &conv(&l.canary),
        &map.display().to_string(),
        &socket.display().to_string(),
        &l.routing,
    )
}

/// The runtime API's unix socket in the run's folder.
pub struct UnixSocket(pub PathBuf);

impl Transport for UnixSocket {
    async fn command(&self, cmd: &str) -> Result<String> {
        let mut s = tokio::net::UnixStream::connect(&self.0)
            .await
            .with_context(|| format!("connecting to {}", self.0.display()))?;
        s.write_all(format!("{cmd}\n").as_bytes()).await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .context("haproxy's runtime API did not answer within 5 s")??;
        Ok(out)
    }
}

pub struct Haproxy {
    child: Child,
    pub api: RuntimeApi<UnixSocket>,
    pub bind: SocketAddr,
}

impl Haproxy {
    /// Writes the config into `dir` and starts HAProxy in the foreground of this
    /// process tree; returns when its runtime API answers.
    pub async fn start(layout: &Layout, dir: &Path) -> Result<Haproxy> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cfg, map, socket) = (dir.join("haproxy.cfg"), dir.join("canary.map"), dir.join("haproxy.sock"));
        std::fs::write(&map, "weight 0\n").context("writing the canary map")?;
        std::fs::write(&cfg, render_config(layout, &map, &socket)).context("writing haproxy.cfg")?;
        let log = std::fs::File::create(dir.join("haproxy.log")).context("creating haproxy.log")?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    anyhow::anyhow!("`haproxy` not found: install it (Debian: apt-get install haproxy)")
                }
                _ => anyhow::Error::new(e).context("starting haproxy"),
            })?;
        let api = RuntimeApi { transport: UnixSocket(socket), map: map.display().to_string() };
        let mut h = Haproxy { child, api, bind: layout.bind };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if h.api.command("show info").await.is_ok() {
                tracing::info!(step = "haproxy_up", bind = %h.bind, "routing tier up");
                return Ok(h);
            }
            if let Ok(Some(status)) = h.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                bail!("haproxy exited at start ({status}):\n{log}");
            }
            if Instant::now() > deadline {
                bail!("haproxy's runtime API did not answer within 10 s (see {})", dir.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let s = |n: &str, a: &str| Server { name: n.into(), addr: a.parse().unwrap() };
        Layout {
            bind: "127.96.1.1:8000".parse().unwrap(),
            stable: vec![s("v1-1", "127.78.1.1:8080")],
            canary: vec![s("v2-1", "127.78.2.1:8080")],
            routing: Default::default(),
        }
    }

    #[test]
    fn the_config_splits_by_permille_with_a_header_override() {
        let c = render_config(&layout(), Path::new("/r/canary.map"), Path::new("/r/h.sock"));
        assert!(c.contains("rand(1000)") && c.contains("map_str_int(/r/canary.map,0)"), "{c}");
        assert!(c.contains("use_backend canary if { req.hdr(x-canary) -m str always }"), "{c}");
        assert!(c.contains("use_backend stable if { req.hdr(x-canary) -m str never }"), "{c}");
        assert!(c.contains("server v2-1 127.78.2.1:8080 check"), "{c}");
        assert!(c.contains("stats socket /r/h.sock mode 600 level admin"), "{c}");
    }
}
