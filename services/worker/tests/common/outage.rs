//! A TCP relay in front of the real RabbitMQ or PostgreSQL that can take the server
//! away: `outage(d)` cuts every relayed connection at once and turns new ones away for
//! `d`, which is what a server restart looks like from its clients (connections die,
//! reconnects fail until it is back). The servers themselves keep their state, as a
//! restarted RabbitMQ keeps its durable queues and PostgreSQL its committed rows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub enum Upstream {
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Default)]
struct State {
    down_until: Option<Instant>,
    live: Vec<AbortHandle>,
    cuts: usize,
}

pub struct Relay {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: AbortHandle,
}

impl Relay {
    pub async fn start(upstream: Upstream) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let down = st.lock().unwrap().down_until.is_some_and(|t| Instant::now() < t);
                if down {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(relay(client, upstream));
                let mut s = st.lock().unwrap();
                s.live.retain(|h| !h.is_finished());
                s.live.push(task.abort_handle());
            }
        })
        .abort_handle();
        Relay { addr, state, accept }
    }

    /// Cuts every connection now and refuses new ones for `d`.
    pub fn outage(&self, d: Duration) {
        let mut s = self.state.lock().unwrap();
        s.down_until = Some(Instant::now() + d);
        s.cuts += s.live.iter().filter(|h| !h.is_finished()).count();
        for h in s.live.drain(..) {
            h.abort();
        }
    }

    /// Connections cut by outages so far.
    pub fn cuts(&self) -> usize {
        self.state.lock().unwrap().cuts
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.state.lock().unwrap().live.drain(..) {
            h.abort();
        }
    }
}

async fn relay(mut client: TcpStream, upstream: Upstream) {
    let _ = client.set_nodelay(true);
    match upstream {
        Upstream::Tcp(a) => {
            if let Ok(mut up) = TcpStream::connect(a).await {
                let _ = up.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            }
        }
        Upstream::Unix(p) => {
            if let Ok(mut up) = UnixStream::connect(p).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            }
        }
    }
}

fn amqp_hostport(url: &str) -> String {
    let uri: lapin::uri::AMQPUri = url.parse().expect("AMQP_URL parses");
    let hostport = format!("{}:{}", uri.authority.host, uri.authority.port);
    assert!(url.contains(&hostport), "cannot relay {url}: write it as amqp://user:pass@host:port/vhost");
    hostport
}

/// Where a relay for the broker at `url` connects.
pub fn amqp_upstream(url: &str) -> Upstream {
    Upstream::Tcp(amqp_hostport(url))
}

/// `url` with its `host:port` replaced by the relay's.
pub fn amqp_via(url: &str, relay: SocketAddr) -> String {
    url.replacen(&amqp_hostport(url), &relay.to_string(), 1)
}

/// Where a relay for the database at `url` connects.
pub fn postgres_upstream(url: &str) -> Upstream {
    let cfg: tokio_postgres::Config = url.parse().expect("DATABASE_URL parses");
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(dir)) => Upstream::Unix(dir.join(format!(".s.PGSQL.{port}"))),
        Some(tokio_postgres::config::Host::Tcp(h)) => Upstream::Tcp(format!("{h}:{port}")),
        None => Upstream::Tcp(format!("127.0.0.1:{port}")),
    }
}

/// A URL reaching the same database through the relay.
pub fn postgres_via(url: &str, relay: SocketAddr) -> String {
    let cfg: tokio_postgres::Config = url.parse().expect("DATABASE_URL parses");
    let user = cfg.get_user().unwrap_or("postgres");
    let db = cfg.get_dbname().unwrap_or(user);
    let auth = match cfg.get_password() {
        Some(pw) => format!("{user}:{}", String::from_utf8_lossy(pw)),
        None => user.to_string(),
    };
    format!("postgres://{auth}@{relay}/{db}")
}
