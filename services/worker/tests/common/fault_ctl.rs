//! The test side of `cargo xtask test`'s fault-control channel (crates/platform/src/infra/fault_ctl.rs):
//! a private RabbitMQ + PostgreSQL pair that only the fault tests use, and a Unix socket on
//! which one line (`restart rabbitmq` / `restart postgres`) really restarts one of them.

use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub const CTL_VAR: &str = "ZD_FAULT_CTL";
pub const AMQP_VAR: &str = "ZD_FAULT_AMQP_URL";
pub const DB_VAR: &str = "ZD_FAULT_DATABASE_URL";

/// The restartable servers and the way to restart them.
pub struct FaultCtl {
    socket: PathBuf,
    pub amqp_url: String,
    pub database_url: String,
}

/// Reads the three variables `cargo xtask test` exports; fails the test with what to do when
/// they are missing, since these tests mean nothing without servers they may restart.
pub fn from_env() -> FaultCtl {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var(CTL_VAR), var(AMQP_VAR), var(DB_VAR)) {
        (Some(socket), Some(amqp_url), Some(database_url)) => {
            FaultCtl { socket: PathBuf::from(socket), amqp_url, database_url }
        }
        _ => panic!(
            "\n\n*** {CTL_VAR}, {AMQP_VAR} and {DB_VAR} are not all set. These tests restart real \
             RabbitMQ and PostgreSQL servers, which only `cargo xtask test` provides (a private pair \
             reserved for them). Run them with\n    cargo xtask test -- -p zerodrop-worker --test faults_restart\n\n"
        ),
    }
}

impl FaultCtl {
    /// Restarts `server` ("rabbitmq" or "postgres") and returns how long it was down;
    /// panics with the runner's answer when the restart failed.
    pub async fn restart(&self, server: &str) -> Duration {
        let answer = self.request(&format!("restart {server}")).await;
        match parse_answer(&answer) {
            Ok(down) => down,
            Err(e) => panic!("restart {server} failed: {e}"),
        }
    }

    async fn request(&self, line: &str) -> String {
        let mut conn = UnixStream::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to {CTL_VAR}={}: {e}", self.socket.display()));
        conn.write_all(format!("{line}\n").as_bytes()).await.expect("send the fault request");
        let mut answer = String::new();
        // A RabbitMQ restart takes seconds; the runner bounds it, this only guards a hang.
        let mut reader = BufReader::new(conn);
        let read = reader.read_line(&mut answer);
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("no answer from the fault control within 120 s")
            .expect("read the fault answer");
        answer.trim_end().to_string()
    }
}

/// `ok <server> down_ms=<n> stopped_ms=<n>` → the down time; `error <why>` → the reason.
pub fn parse_answer(line: &str) -> Result<Duration, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("ok") => words
            .find_map(|w| w.strip_prefix("down_ms="))
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis)
            .ok_or_else(|| format!("an ok answer without down_ms: {line:?}")),
        Some("error") => Err(line["error".len()..].trim().to_string()),
        _ => Err(format!("unexpected answer {line:?}")),
    }
}
