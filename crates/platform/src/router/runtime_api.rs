//! HAProxy's runtime API, as the routing tier of both platforms speaks it: the split
//! is a share in permille kept in a map file, which `set map` changes atomically (no
//! reload, no connection dropped); `show stat` gives the counters; `set server ...
//! state drain` takes a server out. How a command reaches the API (a unix socket in
//! the lab, a port-forward on kind) is the [`Transport`]'s business.

use super::BackendStat;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// Sends one runtime-API command and returns HAProxy's whole answer.
#[allow(async_fn_in_trait)]
pub trait Transport {
    async fn command(&self, cmd: &str) -> Result<String>;
}

/// The runtime API of one HAProxy whose split lives in `map` (a path inside HAProxy's
/// own filesystem).
pub struct RuntimeApi<T> {
    pub transport: T,
    pub map: String,
}

impl<T: Transport> RuntimeApi<T> {
    pub async fn command(&self, cmd: &str) -> Result<String> {
        self.transport.command(cmd).await
    }

    /// Sets the canary's share in permille; returns once HAProxy reports the new value.
    pub async fn set_permille(&self, permille: u32) -> Result<()> {
        let permille = permille.min(1000);
        let answer = self.command(&set_weight(&self.map, permille)).await?;
        if !answer.trim().is_empty() {
            bail!("haproxy refused the weight change: {}", answer.trim());
        }
        let shown = self.command(&format!("show map {}", self.map)).await?;
        if !map_shows(&shown, permille) {
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
}

/// The command that sets the canary's share.
pub fn set_weight(map: &str, permille: u32) -> String {
    format!("set map {map} weight {}", permille.min(1000))
}

/// `show map`'s answer holds `weight <permille>` (each line is `<id> <key> <value>`).
pub fn map_shows(answer: &str, permille: u32) -> bool {
    answer.lines().any(|l| l.trim_end().ends_with(&format!("weight {permille}")))
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

/// Every server row of the `stable` and `canary` backends in `show stat` is UP (the
/// stripping hop's inner server has no health check, and is not an api pod).
pub fn servers_up(csv: &str) -> bool {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return false };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
        return false;
    };
    let servers: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > st.max(px) && ["stable", "canary"].contains(&f[px]))
        .filter(|f| !["FRONTEND", "BACKEND"].contains(&f[sv]))
        .collect();
    !servers.is_empty() && servers.iter().all(|f| f[st] == "UP")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(parse_stat("").is_err());
    }

    #[test]
    fn servers_are_up_only_when_every_server_row_says_so() {
        let csv = |a: &str, b: &str| {
            format!("# pxname,svname,status\nfe,FRONTEND,OPEN\nstable,v1-1,{a}\ncanary,v2-1,{b}\nstable,BACKEND,UP\n")
        };
        assert!(servers_up(&csv("UP", "UP")));
        assert!(!servers_up(&csv("UP", "DOWN")));
        assert!(!servers_up("# pxname,svname,status\nfe,FRONTEND,OPEN\n"));
        let hop = "# pxname,svname,status\nedge,FRONTEND,OPEN\nhop,router,no check\nstable,v1-1,UP\ncanary,v2-1,UP\n";
        assert!(servers_up(hop), "the stripping hop's unchecked server is not an api pod");
        assert!(!servers_up(""));
    }

    #[test]
    fn the_weight_command_and_its_echo_agree() {
        assert_eq!(set_weight("/m/canary.map", 2000), "set map /m/canary.map weight 1000");
        assert!(map_shows("0x55d0c1a0 weight 50\n", 50));
        assert!(!map_shows("0x55d0c1a0 weight 500\n", 50));
    }
}
