//! The fault-control channel: `cargo xtask test` serves it on a Unix socket (0600 in a 0700
//! directory, peers with another uid refused) so that fault tests can restart the private
//! servers of a [`Backends`] pair reserved for them. One request line, one answer line:
//!
//! ```text
//! restart rabbitmq        ->  ok rabbitmq down_ms=6210 stopped_ms=2034
//! restart postgres        ->  ok postgres down_ms=812 stopped_ms=301
//! anything else           ->  error <why>
//! ```
//!
//! Requests are served concurrently; [`Backends::restart`] queues restarts of one server.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{Backends, Restarted, Service};

/// Longer request lines are refused rather than buffered.
const MAX_LINE: u64 = 256;
/// sun_path holds 108 bytes.
const MAX_SOCKET_PATH: usize = 100;

/// What a request line asks for.
pub(crate) fn parse_request(line: &str) -> Result<Service, String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("restart"), Some(server), None) => server.parse(),
        (Some("restart"), None, _) => Err("restart what? (rabbitmq or postgres)".into()),
        _ => Err(format!("bad request {:?} (expected `restart rabbitmq` or `restart postgres`)", line.trim())),
    }
}

/// The one-line answer (without its newline).
pub(crate) fn answer(service: Service, outcome: &Result<Restarted>) -> String {
    match outcome {
        Ok(r) => format!("ok {service} down_ms={} stopped_ms={}", r.down.as_millis(), r.stopped_in.as_millis()),
        Err(e) => error_line(&format!("{e:#}")),
    }
}

fn error_line(msg: &str) -> String {
    // One line whatever the error says (log tails have many).
    format!("error {}", msg.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The running server side of the channel.
pub struct FaultControl {
    path: PathBuf,
    dir: PathBuf,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl FaultControl {
    /// Binds `<dir>/fault.sock` (creating `dir` 0700) and serves restarts of `backends`.
    pub fn serve(backends: Arc<Backends>, dir: &Path) -> Result<FaultControl> {
        let path = dir.join("fault.sock");
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            bail!("the fault-control socket path {} is too long for a Unix socket", path.display());
        }
        crate::private_dir::ensure(dir, "fault socket")?;
        // A socket left by a run that was killed would make bind fail.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (0600)", path.display()))?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, backends, stop.clone()));
        Ok(FaultControl { path, dir: dir.to_path_buf(), stop, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving; a restart still in progress is abandoned (its new server is stopped).
    /// Afterwards no clone of the `Backends` is held here any more.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

async fn accept_loop(listener: UnixListener, backends: Arc<Backends>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    conns.spawn(handle(conn, backends.clone()));
                }
                Err(e) => eprintln!("[infra] fault control: accept failed: {e}"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn handle(conn: UnixStream, backends: Arc<Backends>) {
    let peer = conn.peer_cred().map(|c| c.uid());
    let (r, mut w) = conn.into_split();
    let line = match peer {
        Ok(uid) if uid == crate::private_dir::own_uid() => {
            let mut line = String::new();
            match BufReader::new(r.take(MAX_LINE)).read_line(&mut line).await {
                Ok(_) if line.ends_with('\n') => match parse_request(&line) {
                    Ok(service) => {
                        eprintln!("[infra] fault control: restart {service} requested");
                        answer(service, &backends.restart(service).await)
                    }
                    Err(msg) => error_line(&msg),
                },
                Ok(_) => error_line(&format!("the request must be one line of at most {MAX_LINE} bytes")),
                Err(e) => error_line(&format!("reading the request: {e}")),
            }
        }
        Ok(uid) => error_line(&format!("refused: uid {uid} does not own this test run")),
        Err(e) => error_line(&format!("reading the peer's credentials: {e}")),
    };
    if line.starts_with("error") {
        eprintln!("[infra] fault control: {line}");
    }
    // A client that went away does not undo the restart it asked for.
    let _ = w.write_all(format!("{line}\n").as_bytes()).await;
    let _ = w.shutdown().await;
}
