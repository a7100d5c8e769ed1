//! The control socket between `cargo xtask up` (the fleet's control plane) and the
//! commands that steer it (`status`, `rollout`, `down`). A Unix socket in a directory
//! only its owner can enter (0700, socket 0600), and a peer with another uid is refused
//! (SO_PEERCRED) even if the permissions were loosened by hand.
//!
//! Protocol: one JSON [`Request`] line; then reply lines, each `out <text>` (print it)
//! until one final `ok <text>`, `failed <text>` (the rollout failed: exit 4) or
//! `error <text>` (the command could not be carried out: exit 1).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Rollout {
        /// Fail when the rollout's counts do not move for this long.
        progress_deadline_s: u64,
        /// Added to the pods' environment from the new revision on.
        set_env: Vec<(String, String)>,
        /// Roll out only this deployment (`api` or `worker`); both when absent.
        #[serde(default)]
        only: Option<String>,
    },
    Down,
}

pub use crate::private_dir::own_uid;

/// Creates `dir` (0700, owned by us; anything else is refused) and binds
/// `dir/control.sock` (0600) in it.
pub fn bind(dir: &Path) -> Result<(UnixListener, PathBuf)> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::private_dir::ensure(dir, "control socket")?;
    let path = dir.join("control.sock");
    // A socket file left by an `up` that was killed would make bind fail.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (0600)", path.display()))?;
    Ok((listener, path))
}

/// Whether a peer with `peer_uid` may steer a fleet owned by `owner`.
pub fn allowed(peer_uid: u32, owner: u32) -> bool {
    peer_uid == owner
}

/// Reads the peer's request, after checking who the peer is.
pub async fn accept_request(conn: UnixStream) -> Result<(Request, Reply)> {
    let cred = conn.peer_cred().context("reading the peer's credentials (SO_PEERCRED)")?;
    let (r, w) = conn.into_split();
    let mut reply = Reply { w, gone: false };
    if !allowed(cred.uid(), own_uid()) {
        reply.error(&format!("refused: uid {} does not own this fleet", cred.uid())).await;
        bail!("refused a control connection from uid {} (pid {:?})", cred.uid(), cred.pid());
    }
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await.context("reading the control request")?;
    match serde_json::from_str(line.trim()) {
        Ok(req) => Ok((req, reply)),
        Err(e) => {
            reply.error(&format!("bad request {:?}: {e}", line.trim())).await;
            bail!("bad control request {:?}: {e}", line.trim())
        }
    }
}

/// The server's side of one connection. A client that went away does not stop the
/// work it asked for (a rollout runs to its end, as on a real cluster).
pub struct Reply {
    w: OwnedWriteHalf,
    gone: bool,
}

impl Reply {
    async fn send(&mut self, tag: &str, text: &str) {
        if self.gone {
            return;
        }
        // The final tag ends the answer, so it goes on one line: a multi-line `ok`
        // sends its first lines as `out`; a reason is joined into one line.
        let lines: Vec<&str> = text.lines().collect();
        let buf = match (tag, lines.split_last()) {
            ("out", _) | (_, None) => lines.iter().map(|l| format!("{tag} {l}\n")).collect::<String>(),
            ("ok", Some((last, first))) => {
                first.iter().map(|l| format!("out {l}\n")).collect::<String>() + &format!("ok {last}\n")
            }
            (_, Some(_)) => format!("{tag} {}\n", lines.join(" | ")),
        };
        let buf = if buf.is_empty() { format!("{tag} \n") } else { buf };
        self.gone = self.w.write_all(buf.as_bytes()).await.is_err();
    }

    pub async fn out(&mut self, text: &str) {
        self.send("out", text).await
    }
    pub async fn ok(&mut self, text: &str) {
        self.send("ok", text).await
    }
    pub async fn failed(&mut self, text: &str) {
        self.send("failed", text).await
    }
    pub async fn error(&mut self, text: &str) {
        self.send("error", text).await
    }
}

/// Sends `req` over `socket`, prints the output as it streams in, and turns the final
/// line into the command's result.
pub async fn request(socket: &Path, req: &Request) -> Result<()> {
    request_to(socket, req, |l| println!("{l}")).await
}

/// [`request`], handing each printed line to `print`.
pub async fn request_to(socket: &Path, req: &Request, mut print: impl FnMut(&str)) -> Result<()> {
    let s = UnixStream::connect(socket).await.with_context(|| {
        format!("the fleet's control socket {} does not answer; is `cargo xtask up` still running?", socket.display())
    })?;
    let (r, mut w) = s.into_split();
    w.write_all(format!("{}\n", serde_json::to_string(req)?).as_bytes()).await?;
    let mut lines = BufReader::new(r).lines();
    let mut failure: Option<String> = None;
    let mut error: Option<String> = None;
    while let Some(line) = lines.next_line().await.context("reading the control plane's answer")? {
        let (tag, text) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match tag {
            "out" | "ok" => print(text),
            "failed" => failure.get_or_insert_with(String::new).push_str(text),
            "error" => error.get_or_insert_with(String::new).push_str(text),
            _ => bail!("unexpected answer from the control plane: {line:?}"),
        }
        if tag == "ok" {
            return Ok(());
        }
    }
    if let Some(why) = failure {
        return Err(crate::RolloutFailed(why).into());
    }
    match error {
        Some(e) => bail!("{e}"),
        None => bail!("the control plane closed the connection without a result (did `up` stop?)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("zd-control-{}-{name}", std::process::id()))
    }

    #[test]
    fn only_the_owner_is_allowed() {
        assert!(allowed(1000, 1000));
        assert!(!allowed(1001, 1000));
        assert!(!allowed(0, 1000), "not even root steers another user's fleet");
    }

    #[tokio::test]
    async fn the_socket_and_its_directory_are_private() {
        let dir = tmp("perm");
        std::fs::create_dir_all(&dir).unwrap();
        // Loose permissions left behind are tightened, not trusted.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_l, path) = bind(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A failed rollout reaches the client as `RolloutFailed`, which `main` turns
    /// into exit code 4; the streamed lines before it are printed.
    #[tokio::test]
    async fn a_failed_answer_is_a_rollout_failure_and_a_lost_server_an_error() {
        let dir = tmp("proto");
        let (l, path) = bind(&dir).unwrap();
        let server = tokio::spawn(async move {
            for outcome in ["failed", "vanish", "ok"] {
                let (conn, _) = l.accept().await.unwrap();
                let (req, mut reply) = accept_request(conn).await.unwrap();
                assert!(matches!(req, Request::Rollout { progress_deadline_s: 5, .. }));
                reply.out("api: 1 of 3 new replicas created, 0 ready; 3 old replicas left").await;
                match outcome {
                    "failed" => reply.failed("no progress for 5 s").await,
                    "ok" => reply.ok("stage naive\nPOD ...\nservice endpoints: []").await,
                    _ => {}
                }
            }
        });
        let req = Request::Rollout { progress_deadline_s: 5, set_env: vec![("A".into(), "b c".into())], only: None };
        let e = request(&path, &req).await.unwrap_err();
        assert!(e.is::<crate::RolloutFailed>(), "{e:#}");
        let e = request(&path, &req).await.unwrap_err();
        assert!(!e.is::<crate::RolloutFailed>() && format!("{e}").contains("without a result"), "{e:#}");
        let mut printed = Vec::new();
        request_to(&path, &req, |l| printed.push(l.to_string())).await.unwrap();
        assert_eq!(printed.len(), 4, "every line of a multi-line answer is printed: {printed:?}");
        assert_eq!(printed[3], "service endpoints: []");
        server.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
