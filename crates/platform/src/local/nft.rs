//! The Service's data plane: nftables DNAT in the lab's network namespace, in the
//! manner of kube-proxy's nftables mode. A connection to the virtual IP is rewritten
//! by the kernel, when it is opened, to one programmed endpoint chosen at random;
//! conntrack keeps established connections on their endpoint across re-programs, and
//! an endpoint that no longer listens answers the SYN with a reset, which the client
//! sees as ECONNREFUSED, exactly as behind a real ClusterIP.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// The Service's virtual IP and port. 127.0.0.0/8 is routed on `lo` already, so no
/// route is needed for the VIP, and DNAT in the `output` hook sees every local client.
pub const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 96, 0, 1), 80);

/// The table everything lives in; replacing it whole keeps each sync one transaction.
pub const TABLE: &str = "zerodrop";

/// The ruleset for `endpoints` as one `nft -f -` transaction. The table is created
/// (so that deleting it cannot fail), deleted and defined again in the same
/// transaction, so the kernel switches from the old endpoint set to the new one
/// atomically: no connection ever sees a half-programmed table. With no endpoints the
/// VIP has no rule: a SYN to it reaches `lo`, where nothing listens on it, and is
/// answered with a reset (ECONNREFUSED), as kube-proxy's reject rule would.
pub fn render(vip: SocketAddrV4, endpoints: &[SocketAddrV4]) -> String {
    let mut s = format!("add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    s += "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n";
    if !endpoints.is_empty() {
        let map: Vec<String> =
            endpoints.iter().enumerate().map(|(i, ep)| format!("{i} : {} . {}", ep.ip(), ep.port())).collect();
        let _ = writeln!(
            s,
            "\t\tip daddr {} tcp dport {} dnat ip to numgen random mod {} map {{ {} }}",
            vip.ip(),
            vip.port(),
            endpoints.len(),
            map.join(", ")
        );
    }
    s += "\t}\n}\n";
    s
}

/// Removes the table (and with it the VIP's rule): what is left after a fleet is down.
pub fn render_teardown() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// The IPv4 endpoints among `addrs` (pods listen on 127.77.x.y, always IPv4).
pub fn v4(addrs: &[SocketAddr]) -> Vec<SocketAddrV4> {
    addrs
        .iter()
        .filter_map(|a| match a {
            SocketAddr::V4(v) => Some(*v),
            SocketAddr::V6(_) => None,
        })
        .collect()
}

/// Feeds `script` to `nft -f -`: one atomic transaction in this process's namespace.
pub async fn apply(script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("`nft` not found: install nftables (Debian: apt-get install nftables)")
            }
            _ => anyhow::Error::new(e).context("starting `nft -f -`"),
        })?;
    let mut stdin = child.stdin.take().context("nft's stdin")?;
    stdin.write_all(script.as_bytes()).await.context("writing the ruleset to nft")?;
    drop(stdin);
    let out = child.wait_with_output().await.context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft rejected the Service ruleset ({}): {}\nthe ruleset was:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, 77, 250, last), 8080)
    }

    #[test]
    fn two_endpoints_become_one_random_map_in_one_transaction() {
        let s = render(VIP, &[ep(1), ep(2)]);
        assert_eq!(
            s,
            "add table ip zerodrop\ndelete table ip zerodrop\ntable ip zerodrop {\n\
             \tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\
             \t\tip daddr 127.96.0.1 tcp dport 80 dnat ip to numgen random mod 2 map \
             { 0 : 127.77.250.1 . 8080, 1 : 127.77.250.2 . 8080 }\n\t}\n}\n"
        );
    }

    #[test]
    fn one_endpoint_still_uses_the_map_and_each_keeps_its_own_port() {
        let other = SocketAddrV4::new(Ipv4Addr::new(127, 77, 3, 9), 9000);
        let s = render(VIP, &[ep(7), other]);
        assert!(s.contains("mod 2 map { 0 : 127.77.250.7 . 8080, 1 : 127.77.3.9 . 9000 }"), "{s}");
        let s = render(VIP, &[ep(7)]);
        assert!(s.contains("numgen random mod 1 map { 0 : 127.77.250.7 . 8080 }"), "{s}");
    }

    #[test]
    fn no_endpoints_means_no_rule_for_the_vip() {
        let s = render(VIP, &[]);
        assert!(s.contains("type nat hook output"), "the chain exists: {s}");
        assert!(!s.contains("dnat"), "nothing to DNAT to, so the SYN meets lo and is refused: {s}");
        assert!(!render_teardown().contains("chain"));
    }

    #[test]
    fn ipv6_addresses_are_not_endpoints() {
        let addrs: Vec<SocketAddr> = vec!["[::1]:8080".parse().unwrap(), SocketAddr::V4(ep(3))];
        assert_eq!(v4(&addrs), vec![ep(3)]);
    }
}
