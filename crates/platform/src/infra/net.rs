//! Free ports, URL endpoints, and the two protocol probes (AMQP header, PostgreSQL startup).

use std::fmt;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `n` distinct free loopback ports: bind 127.0.0.1:0 (all at once, so they differ), read, close.
pub(super) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to find a free port")?;
    listeners.iter().map(|l| Ok(l.local_addr().context("reading a bound port")?.port())).collect()
}

/// How many times a private server is started with freshly picked ports when the first
/// pick was taken by someone else before the server bound it.
pub(super) const PORT_ATTEMPTS: u32 = 3;

/// Whether a failed start's message (with its log tail) says a port it was given was
/// already taken. [`free_ports`] can only pick ports that are free at the time: another
/// process (a concurrent test, a second run) may bind one before our server does.
/// RabbitMQ says `dist_port_already_used` or `eaddrinuse`, PostgreSQL the OS's "Address
/// already in use"; epmd exits at once without a word ([`EPMD_EXITED_AT_START`]).
pub(super) fn port_taken(failure: &str) -> bool {
    let f = failure.to_ascii_lowercase();
    ["already_used", "eaddrinuse", "address already in use", EPMD_EXITED_AT_START].iter().any(|k| f.contains(k))
}

/// How a failed start of the node's epmd is reported (lower case: [`port_taken`] matches it).
pub(super) const EPMD_EXITED_AT_START: &str = "the private rabbitmq's epmd exited at start";

/// Where a URL points, without its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Tcp {
        host: String,
        port: u16,
    },
    /// A PostgreSQL Unix-socket directory and port (socket `<dir>/.s.PGSQL.<port>`).
    Unix {
        dir: PathBuf,
        port: u16,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix { dir, port } => write!(f, "{}/.s.PGSQL.{port}", dir.display()),
        }
    }
}

struct UrlParts {
    scheme: String,
    host: String,
    port: Option<u16>,
    query: Vec<(String, String)>,
}

/// A minimal `scheme://[userinfo@]host[:port][/path][?query]` splitter.
fn split_url(url: &str) -> Result<UrlParts> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| anyhow!("not a URL (no scheme://)"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let authority = before_query.split('/').next().unwrap_or("");
    // Userinfo ends at the last '@' of the authority (passwords should be %-encoded, but be lenient).
    let hostport = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    // Several hosts (libpq "h1:p1,h2:p2"): the first one is checked.
    let hostport = hostport.split(',').next().unwrap_or("");
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let (h, after) = stripped.split_once(']').ok_or_else(|| anyhow!("unterminated [IPv6] host"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| anyhow!("invalid port {p:?}"))?),
    };
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(UrlParts { scheme: scheme.to_ascii_lowercase(), host: percent_decode(&host), port, query })
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The broker endpoint of an AMQP URL, and whether it is TLS (`amqps`).
pub(crate) fn amqp_endpoint(url: &str) -> Result<(Endpoint, bool)> {
    let u = split_url(url)?;
    let tls = match u.scheme.as_str() {
        "amqp" => false,
        "amqps" => true,
        s => bail!("unsupported scheme {s:?} (expected amqp:// or amqps://)"),
    };
    let host = if u.host.is_empty() { "localhost".to_string() } else { u.host };
    let port = u.port.unwrap_or(if tls { 5671 } else { 5672 });
    Ok((Endpoint::Tcp { host, port }, tls))
}

/// The server endpoint of a PostgreSQL URL (TCP, or a Unix-socket directory).
pub(crate) fn postgres_endpoint(url: &str) -> Result<Endpoint> {
    let u = split_url(url)?;
    if u.scheme != "postgres" && u.scheme != "postgresql" {
        bail!("unsupported scheme {:?} (expected postgres:// or postgresql://)", u.scheme);
    }
    let q = |k: &str| u.query.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let host = match q("host").or(q("hostaddr")) {
        Some(h) if u.host.is_empty() => h.split(',').next().unwrap_or("").to_string(),
        _ => u.host.clone(),
    };
    let port = match (u.port, q("port")) {
        (Some(p), _) => p,
        (None, Some(p)) => p.parse().map_err(|_| anyhow!("invalid port {p:?}"))?,
        (None, None) => 5432,
    };
    if host.is_empty() {
        bail!("no host in the URL (give one, e.g. postgres://user@127.0.0.1:5432/db)");
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix { dir: PathBuf::from(host), port });
    }
    Ok(Endpoint::Tcp { host, port })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(ep: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    let fut = async {
        Ok::<Box<dyn Io>, std::io::Error>(match ep {
            Endpoint::Tcp { host, port } => Box::new(TcpStream::connect((host.as_str(), *port)).await?),
            Endpoint::Unix { dir, port } => Box::new(UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?),
        })
    };
    match timeout(CONNECT_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// True if `ep` accepts a TCP (or Unix) connection right now.
pub(super) async fn accepts(ep: &Endpoint) -> bool {
    connect(ep).await.is_ok()
}

/// Sends the AMQP 0-9-1 protocol header and expects a Connection.Start method frame.
pub(super) async fn amqp_handshake(ep: &Endpoint) -> Result<()> {
    let mut s = connect(ep).await.map_err(|e| anyhow!("{ep} is not reachable: {e}"))?;
    let probe = async {
        s.write_all(b"AMQP\x00\x00\x09\x01").await?;
        // frame type (1 = method), channel (2), size (4), class id (2), method id (2)
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf[..1]).await?;
        if buf[0] == b'A' {
            let mut rest = [0u8; 7];
            s.read_exact(&mut rest).await?;
            return Ok::<_, std::io::Error>(Err(format!(
                "the server answered with a different protocol header {:?}",
                String::from_utf8_lossy(&[&buf[..1], &rest[..]].concat())
            )));
        }
        s.read_exact(&mut buf[1..]).await?;
        let class = u16::from_be_bytes([buf[7], buf[8]]);
        let method = u16::from_be_bytes([buf[9], buf[10]]);
        if buf[0] == 1 && class == 10 && method == 10 {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("unexpected answer {buf:02x?} (not an AMQP Connection.Start)")))
        }
    };
    match timeout(PROBE_TIMEOUT, probe).await {
        Err(_) => bail!("{ep} accepted the connection but did not answer the AMQP header"),
        Ok(Err(e)) => bail!("AMQP header exchange with {ep} failed: {e}"),
        Ok(Ok(Err(msg))) => bail!("{ep}: {msg}"),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

/// PostgreSQL's SSLRequest: any server answers 'S' or 'N' without credentials.
pub(super) async fn postgres_ssl_probe(ep: &Endpoint) -> Result<()> {
    let mut s = connect(ep).await.map_err(|e| anyhow!("{ep} is not reachable: {e}"))?;
    let probe = async {
        s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        Ok::<u8, std::io::Error>(b[0])
    };
    match timeout(PROBE_TIMEOUT, probe).await {
        Err(_) => bail!("{ep} accepted the connection but did not answer like PostgreSQL"),
        Ok(Err(e)) => bail!("PostgreSQL probe of {ep} failed: {e}"),
        Ok(Ok(b'S' | b'N')) => Ok(()),
        Ok(Ok(b)) => bail!("{ep} answered {b:#04x} to an SSLRequest: not a PostgreSQL server"),
    }
}

/// A full startup as `user` to `database`: Ok(true) when the server authenticates us
/// (trust) and is ready for queries; Ok(false) while it refuses (e.g. "starting up").
pub(super) async fn postgres_ready(ep: &Endpoint, user: &str, database: &str) -> Result<bool> {
    let mut s = connect(ep).await.map_err(|e| anyhow!("{ep} is not reachable: {e}"))?;
    let probe = async {
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes()); // protocol 3.0
        for (k, v) in [("user", user), ("database", database)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        s.write_all(&msg).await?;
        // Read messages until ReadyForQuery ('Z') or an error ('E').
        loop {
            let mut hdr = [0u8; 5];
            s.read_exact(&mut hdr).await?;
            let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
            let mut payload = vec![0u8; len.saturating_sub(4)];
            s.read_exact(&mut payload).await?;
            match hdr[0] {
                b'Z' => {
                    let _ = s.write_all(&[b'X', 0, 0, 0, 4]).await; // Terminate
                    return Ok::<bool, std::io::Error>(true);
                }
                b'E' => return Ok(false),
                b'R' if payload.len() >= 4 && payload[..4] != [0, 0, 0, 0] => {
                    // A password is required: reachable, but not the trust setup we made.
                    return Ok(false);
                }
                _ => {} // AuthenticationOk, ParameterStatus, BackendKeyData, NoticeResponse
            }
        }
    };
    match timeout(PROBE_TIMEOUT, probe).await {
        Err(_) => Ok(false),
        Ok(Err(_)) => Ok(false),
        Ok(Ok(ready)) => Ok(ready),
    }
}

/// Checks an env-provided AMQP URL: reachable, and (unless TLS) speaking AMQP.
pub(super) async fn check_amqp_url(url: &str) -> Result<Endpoint> {
    let (ep, tls) = amqp_endpoint(url)?;
    if tls {
        if !accepts(&ep).await {
            bail!("{ep} is not reachable (TCP connect failed)");
        }
    } else {
        amqp_handshake(&ep).await?;
    }
    Ok(ep)
}

/// Checks an env-provided PostgreSQL URL: reachable and speaking the PostgreSQL protocol.
pub(super) async fn check_postgres_url(url: &str) -> Result<Endpoint> {
    let ep = postgres_endpoint(url)?;
    postgres_ssl_probe(&ep).await?;
    Ok(ep)
}
