//! The routing tier of the progressive-delivery commands: Debian's HAProxy, started
//! inside the lab's network namespace, splitting `stable` (v1) from `canary` (v2) per
//! request. The split is a share in permille kept in a map file, which the runtime API
//! (`set map`) changes atomically: no reload, no connection dropped.

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
    )
}

/// A backend's counters from `show stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStat {
    pub requests: u64,
    pub http_5xx: u64,
    pub http_4xx: u64,
}

/// Parses `show stat`'s CSV: the BACKEND rows of `stable` and `canary`.
pub fn parse_stat(csv: &str) -> Result<(BackendStat, BackendStat)> {
    let mut lines = csv.lines();
    let header = lines.next().context("empty `show stat` answer")?.trim_start_matches("# ");
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name).with_context(|| format!("`show stat` has no {name}"));
    let (px, sv, req, h5, h4) = (col("pxname")?, col("svname")?, col("req_tot")?, col("hrsp_5xx")?, col("hrsp_4xx")?);
    let (mut stable, mut canary) = (None, None);
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < cols.len() || f[sv] != "BACKEND" {
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        let s = BackendStat { requests: n(req), http_5xx: n(h5), http_4xx: n(h4) };
        match f[px] {
            "stable" => stable = Some(s),
            "canary" => canary = Some(s),
            _ => {}
        }
    }
    Ok((stable.context("no stable backend in `show stat`")?, canary.context("no canary backend in `show stat`")?))
}

/// Every server row of `show stat` is UP.
pub fn servers_up(csv: &str) -> bool {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return false };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let (Some(sv), Some(st)) = (cols.iter().position(|c| *c == "svname"), cols.iter().position(|c| *c == "status"))
    else {
        return false;
    };
    let servers: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > st && !["FRONTEND", "BACKEND"].contains(&f[sv]))
        .collect();
    !servers.is_empty() && servers.iter().all(|f| f[st] == "UP")
}

pub struct Haproxy {
    child: Child,
    socket: PathBuf,
    map: PathBuf,
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
        let mut h = Haproxy { child, socket, map, bind: layout.bind };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if h.command("show info").await.is_ok() {
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

    /// One runtime API command; its answer.
    pub async fn command(&self, cmd: &str) -> Result<String> {
        let mut s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        s.write_all(format!("{cmd}\n").as_bytes()).await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .context("haproxy's runtime API did not answer within 5 s")??;
        Ok(out)
    }

    /// Sets the canary's share in permille; returns once HAProxy reports the new value.
    pub async fn set_permille(&self, permille: u32) -> Result<()> {
        let answer = self.command(&format!("set map {} weight {}", self.map.display(), permille.min(1000))).await?;
        if !answer.trim().is_empty() {
            bail!("haproxy refused the weight change: {}", answer.trim());
        }
        let shown = self.command(&format!("show map {}", self.map.display())).await?;
        if !shown.lines().any(|l| l.trim_end().ends_with(&format!("weight {}", permille.min(1000)))) {
            bail!("haproxy's map does not show weight {permille}: {shown}");
        }
        Ok(())
    }

    pub async fn stats(&self) -> Result<(BackendStat, BackendStat)> {
        parse_stat(&self.command("show stat").await?)
    }

    /// Puts one server into drain: no new requests, the ones under way finish.
    pub async fn drain(&self, backend: &str, server: &str) -> Result<()> {
        let a = self.command(&format!("set server {backend}/{server} state drain")).await?;
        if !a.trim().is_empty() {
            bail!("haproxy: drain {backend}/{server}: {}", a.trim());
        }
        Ok(())
    }

    /// Waits until HAProxy's health checks see every server UP.
    pub async fn wait_all_up(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let csv = self.command("show stat").await?;
            if servers_up(&csv) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("haproxy's health checks did not see every server UP within {limit:?}:\n{csv}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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

    #[test]
    fn show_stat_backends_are_read_by_column_name() {
        let csv = "# pxname,svname,req_tot,hrsp_4xx,hrsp_5xx,\n\
                   fe,FRONTEND,100,0,3,\n\
                   stable,v1-1,90,0,0,\n\
                   stable,BACKEND,90,1,0,\n\
                   canary,BACKEND,10,0,3,\n";
        let (s, c) = parse_stat(csv).unwrap();
        assert_eq!(s, BackendStat { requests: 90, http_5xx: 0, http_4xx: 1 });
        assert_eq!(c, BackendStat { requests: 10, http_5xx: 3, http_4xx: 0 });
        assert!(parse_stat("# pxname,svname\n").is_err());
    }
}
