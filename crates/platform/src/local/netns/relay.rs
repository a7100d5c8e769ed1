//! Env-provided servers (AMQP_URL, DATABASE_URL) sit in the host's network namespace,
//! which the lab cannot reach. The parent creates a listening socket *inside* the lab
//! (a socket stays in the namespace it was created in: one thread setns()es in, binds,
//! and setns()es back) and relays every connection it accepts to the real server from
//! the host side; the child sees the URL rewritten to the listener.

use crate::infra::{amqp_endpoint, postgres_endpoint, Endpoint};
use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub var: &'static str,
    /// The real server, as reached from the host namespace.
    pub host: String,
    pub port: u16,
    /// Where the lab reaches it.
    pub listen: SocketAddrV4,
    /// The URL the child sees.
    pub url: String,
}

/// Which URLs need a relay, and what they become. A fresh namespace has every port
/// free, so each relay listens on its server's own port (the next free one if two
/// servers share a port number). Unix-socket PostgreSQL URLs need nothing: a socket
/// path is reachable from any network namespace.
pub fn plan(amqp: Option<&str>, db: Option<&str>) -> Result<Vec<Relay>> {
    let mut out: Vec<Relay> = Vec::new();
    let mut add = |var: &'static str, url: &str, ep: Endpoint| -> Result<()> {
        let Endpoint::Tcp { host, port } = ep else { return Ok(()) };
        let mut listen_port = port;
        while out.iter().any(|r| r.listen.port() == listen_port) {
            listen_port = listen_port.checked_add(1).context("no free relay port")?;
        }
        let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listen_port);
        let url = rewrite_authority(url, &listen.to_string()).with_context(|| format!("{var}: {url:?}"))?;
        out.push(Relay { var, host, port, listen, url });
        Ok(())
    };
    if let Some(url) = amqp {
        add("AMQP_URL", url, amqp_endpoint(url).context("AMQP_URL")?.0)?;
    }
    if let Some(url) = db {
        add("DATABASE_URL", url, postgres_endpoint(url).context("DATABASE_URL")?)?;
    }
    Ok(out)
}

/// `url` with the host[:port] of its authority replaced by `hostport` (credentials,
/// path and query kept).
pub(crate) fn rewrite_authority(url: &str, hostport: &str) -> Result<String> {
    let (scheme, rest) = url.trim().split_once("://").context("not a URL (no scheme://)")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rfind('@').map(|i| &authority[..=i]).unwrap_or("");
    let old = &authority[userinfo.len()..];
    if old.is_empty() {
        bail!("the server is named in the query string; for the lab's relay write it as scheme://user@host:port/...");
    }
    if old.contains(',') {
        bail!("several hosts in one URL cannot be relayed into the lab; name one");
    }
    Ok(format!("{scheme}://{userinfo}{hostport}{tail}"))
}

/// Binds every relay's listener inside the namespace of `pid` and serves it from
/// this (host-side) process until it exits.
pub async fn start(pid: u32, relays: &[Relay]) -> Result<()> {
    if relays.is_empty() {
        return Ok(());
    }
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    wait_for_own_netns(&ns).await?;
    for r in relays {
        let (ns, listen) = (ns.clone(), r.listen);
        let std_listener = tokio::task::spawn_blocking(move || bind_in(ns, listen))
            .await
            .context("the relay bind thread panicked")??;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        eprintln!("[lab] relaying ${} into the lab: {} -> {}:{}", r.var, r.listen, r.host, r.port);
        let (host, port) = (r.host.clone(), r.port);
        tokio::spawn(async move {
            while let Ok((mut inside, _)) = listener.accept().await {
                let host = host.clone();
                tokio::spawn(async move {
                    match tokio::net::TcpStream::connect((host.as_str(), port)).await {
                        Ok(mut outside) => {
                            let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                        }
                        Err(e) => eprintln!("[lab] relay to {host}:{port}: {e}"),
                    }
                });
            }
        });
    }
    Ok(())
}

/// `unshare` creates the namespace after it starts: wait until `ns` differs from ours.
async fn wait_for_own_netns(ns: &std::path::Path) -> Result<()> {
    let own = std::fs::read_link("/proc/self/ns/net").context("reading our network namespace")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_link(ns) {
            Ok(l) if l != own => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e).with_context(|| format!("the lab process is gone ({})", ns.display())),
        }
        if Instant::now() > deadline {
            bail!("the lab process did not enter its own network namespace within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// On a thread of its own (setns changes only the calling thread's namespace):
/// enter `ns`, bind, come back.
fn bind_in(ns: PathBuf, addr: SocketAddrV4) -> Result<std::net::TcpListener> {
    std::thread::spawn(move || -> Result<std::net::TcpListener> {
        let own = std::fs::File::open("/proc/thread-self/ns/net").context("opening our network namespace")?;
        let lab = std::fs::File::open(&ns).with_context(|| format!("opening {}", ns.display()))?;
        crate::sys::enter_net_ns(&lab).context("setns into the lab's network namespace (needs root)")?;
        let bound = listen(addr).with_context(|| format!("binding {addr} inside the lab"));
        crate::sys::enter_net_ns(&own).context("setns back to the host namespace")?;
        bound
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the relay bind thread panicked"))?
}

/// IP_FREEBIND: the child may not have brought `lo` up yet when we bind.
fn listen(addr: SocketAddrV4) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_freebind(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_urls_are_rewritten_to_a_listener_in_the_lab() {
        let r =
            plan(Some("amqp://guest:p%40ss@localhost/%2f"), Some("postgres://me:pw@10.0.0.5:5432/db?sslmode=disable"))
                .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].host.as_str(), r[0].port, r[0].listen.port()), ("localhost", 5672, 5672));
        assert_eq!(r[0].url, "amqp://guest:p%40ss@127.0.0.1:5672/%2f");
        assert_eq!(r[1].url, "postgres://me:pw@127.0.0.1:5432/db?sslmode=disable");
    }

    #[test]
    fn unix_sockets_need_no_relay_and_shared_ports_get_the_next_one() {
        assert!(plan(None, Some("postgres:///postgres?host=/var/run/postgresql")).unwrap().is_empty());
        let r = plan(Some("amqp://127.0.0.1:7000"), Some("postgres://u@127.0.0.1:7000/db")).unwrap();
        assert_eq!(r[1].listen.port(), 7001);
        assert_eq!(r[1].url, "postgres://u@127.0.0.1:7001/db");
        let err = plan(None, Some("postgres:///db?host=db.example&port=5432")).unwrap_err();
        assert!(format!("{err:#}").contains("named in the query string"), "{err:#}");
    }

    /// The relay for real (root): a server in this namespace, a listener made inside a
    /// fresh one by setns, and a client in there that gets the server's bytes.
    #[tokio::test]
    async fn a_relay_reaches_the_host_from_inside_a_fresh_namespace() {
        assert!(
            crate::local::netns::is_root(),
            "this test needs root: it creates a network namespace and setns()es into it"
        );
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = server.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = c.write_all(b"hello from the host").await;
            }
        });
        // The client inside the lab: bash's /dev/tcp, so no helper binary is needed.
        let lab = tokio::process::Command::new("unshare")
            .args(["--net", "--", "bash", "-c"])
            .arg("ip link set lo up; sleep 0.5; exec 3<>/dev/tcp/127.0.0.1/5672 && head -c 19 <&3")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("unshare --net");
        let relays = plan(Some(&format!("amqp://127.0.0.1:{port}")), None).unwrap();
        let relays: Vec<Relay> =
            relays.into_iter().map(|r| Relay { listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5672), ..r }).collect();
        start(lab.id().unwrap(), &relays).await.expect("binding inside the lab");
        let out = tokio::time::timeout(Duration::from_secs(10), lab.wait_with_output()).await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the host", "{out:?}");
    }
}
