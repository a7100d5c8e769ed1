//! Shared helpers for the worker's integration tests: a fixture owning a unique queue
//! pair and ledger schema on the real broker and database, and a handle on a running
//! worker process whose JSON log lines are collected.

#![allow(dead_code)]

pub mod api;
pub mod fault_ctl;
pub mod load;
pub mod outage;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zerodrop_jobs::Topology;
use zerodrop_ledger as ledger;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_AMQP_URL.to_string())
}

/// `<prefix>_<pid>_<nanos>`: unique across concurrent tests and test processes.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() % 1_000_000_000_000).unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect_amqp(url: &str) -> Connection {
    match tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, ConnectionProperties::default())).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "RabbitMQ is unreachable at {url}: {e}\n\
             start it with `rabbitmq-server -detached` (check: `rabbitmqctl status`), or run the suite with `cargo xtask test`, which starts private servers"
        ),
        Err(_) => panic!("RabbitMQ at {url} did not answer within 10 s; start it with `rabbitmq-server -detached`"),
    }
}

async fn connect_pg(url: &str) -> tokio_postgres::Client {
    match tokio::time::timeout(Duration::from_secs(10), ledger::connect(url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "PostgreSQL is unreachable at {url}: {e}\n\
             start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` (check: `pg_isready -h 127.0.0.1`), or run the suite with `cargo xtask test`, which starts private servers"
        ),
        Err(_) => panic!("PostgreSQL at {url} did not answer within 10 s; check `pg_isready -h 127.0.0.1`"),
    }
}

/// A queue pair and a ledger schema of its own, removed by [`Fixture::cleanup`] (or,
/// if the test panicked first, by `Drop`).
pub struct Fixture {
    pub topology: Topology,
    pub schema: String,
    pub channel: Channel,
    pub db: tokio_postgres::Client,
    /// The broker and database this fixture (and the workers it spawns) use.
    pub amqp_url: String,
    pub database_url: String,
    conn: Connection,
    cleaned: bool,
}

impl Fixture {
    pub async fn new(tag: &str) -> Fixture {
        Fixture::on(tag, &amqp_url(), &ledger::database_url()).await
    }

    /// A fixture on the given servers (e.g. the restartable pair of the fault tests).
    pub async fn on(tag: &str, amqp_url: &str, database_url: &str) -> Fixture {
        let name = unique(&format!("zdt_{tag}"));
        let conn = connect_amqp(amqp_url).await;
        let db = connect_pg(database_url).await;
        let channel = conn.create_channel().await.expect("open a channel");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        let topology = Topology::new(format!("{name}.jobs").replace('_', "-"));
        topology.declare(&channel).await.expect("declare the queues");
        ledger::create_schema(&db, &name).await.expect("create the ledger schema");
        let (amqp_url, database_url) = (amqp_url.to_string(), database_url.to_string());
        Fixture { topology, schema: name, channel, db, amqp_url, database_url, conn, cleaned: false }
    }

    /// A fresh database session, for after the server was restarted under the old one.
    pub async fn reconnect_db(&mut self) {
        self.db = connect_pg(&self.database_url).await;
    }

    /// A fresh broker session, for after the broker was restarted under the old one.
    pub async fn reconnect_amqp(&mut self) {
        self.conn = connect_amqp(&self.amqp_url).await;
        self.channel = self.conn.create_channel().await.expect("open a channel");
        self.channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    }

    pub fn job_id(&self, tag: &str) -> String {
        unique(tag).replace('_', "-")
    }

    /// Publishes a persistent message and waits for the broker's confirm.
    pub async fn publish(&self, payload: &[u8]) {
        let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.topology.queue.as_str().into(),
                BasicPublishOptions::default(),
                payload,
                props,
            )
            .await
            .expect("publish");
        let confirmation = confirm.await.expect("publisher confirm");
        assert!(confirmation.is_ack(), "the broker did not confirm the publish: {confirmation:?}");
    }

    pub async fn publish_job(&self, id: &str, amount: i64) {
        self.publish(format!(r#"{{"id":"{id}","amount":{amount}}}"#).as_bytes()).await;
    }

    /// Ready messages in (work queue, dead-letter queue).
    pub async fn depths(&self) -> (u32, u32) {
        self.topology.depths(&self.channel).await.expect("queue depths")
    }

    /// Takes every ready message off `queue` (acking it) and returns the payloads.
    pub async fn take_all(&self, queue: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) =
            self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            out.push(m.delivery.data);
        }
        out
    }

    pub async fn count_rows(&self, job_id: &str) -> i64 {
        ledger::count_rows(&self.db, &self.schema, job_id).await.expect("count ledger rows")
    }

    pub async fn total_rows(&self) -> i64 {
        ledger::total_rows(&self.db, &self.schema).await.expect("count ledger rows")
    }

    /// The rows' `applied_by`, in order, for `job_id`.
    pub async fn applied_by(&self, job_id: &str) -> Vec<String> {
        let sql = format!("SELECT applied_by FROM \"{}\".ledger WHERE job_id = $1 ORDER BY seq", self.schema);
        let rows = self.db.query(&sql, &[&job_id]).await.expect("query applied_by");
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    }

    /// Starts the real worker binary on this fixture's queue and schema, with JSON
    /// logs and an ephemeral admin port; `env` comes last and wins.
    pub fn spawn_worker(&self, env: &[(&str, String)]) -> WorkerProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zerodrop-worker"));
        cmd.env("AMQP_URL", &self.amqp_url)
            .env("DATABASE_URL", &self.database_url)
            .env("ZD_QUEUE", &self.topology.queue)
            .env("ZD_DB_SCHEMA", &self.schema)
            .env("ZD_LISTEN", "127.0.0.1:0")
            .env("ZD_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        WorkerProc::spawn(cmd)
    }

    pub async fn cleanup(mut self) {
        self.cleaned = true;
        let _ = self.topology.delete(&self.channel).await;
        let _ = ledger::drop_schema(&self.db, &self.schema).await;
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The test failed before cleaning up: do it on a thread of its own, since the
        // test's runtime may be gone or busy unwinding.
        let topology = self.topology.clone();
        let schema = self.schema.clone();
        let (amqp_url, database_url) = (self.amqp_url.clone(), self.database_url.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let work = async {
                    if let Ok(conn) = Connection::connect(&amqp_url, ConnectionProperties::default()).await {
                        if let Ok(ch) = conn.create_channel().await {
                            let _ = topology.delete(&ch).await;
                        }
                        let _ = conn.close(200, "bye".into()).await;
                    }
                    if let Ok(db) = ledger::connect(&database_url).await {
                        let _ = ledger::drop_schema(&db, &schema).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// A running worker process. Killed (SIGKILL) on drop if still running.
pub struct WorkerProc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl WorkerProc {
    fn spawn(mut cmd: Command) -> WorkerProc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the worker binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stdout.take().map(|out| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            })
        });
        WorkerProc { child, lines, reader, status: None }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    pub fn sigkill(&self) {
        self.signal(libc::SIGKILL);
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for the process to exit; `None` on timeout. Also waits for its stdout to
    /// be fully read, so [`WorkerProc::lines`] is complete afterwards.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status {
                return Some(s);
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                if let Some(r) = self.reader.take() {
                    let _ = tokio::task::spawn_blocking(move || r.join()).await;
                }
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every stdout line, for failure messages.
    pub fn dump(&self) -> String {
        self.lines().join("\n")
    }

    /// Every stdout line that parses as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// `(step, fields)` of every line carrying a `step`, in order.
    pub fn steps(&self) -> Vec<(String, Value)> {
        self.json_lines()
            .into_iter()
            .filter_map(|v| {
                let fields = v.get("fields")?.clone();
                let step = fields.get("step")?.as_str()?.to_string();
                Some((step, fields))
            })
            .collect()
    }

    pub fn has_step(&self, step: &str) -> bool {
        self.steps().iter().any(|(s, _)| s == step)
    }

    /// The admin address the worker logged.
    pub fn admin_addr(&self) -> Option<String> {
        self.json_lines().iter().find_map(|v| v.get("fields")?.get("admin_addr")?.as_str().map(str::to_string))
    }

    /// Waits for `step="ready"`; panics with the logs if the worker exits or stalls.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has_step("ready") {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                panic!("the worker exited ({s}) before becoming ready:\n{}", self.dump());
            }
            if Instant::now() >= deadline {
                panic!("the worker was not ready within {timeout:?}:\n{}", self.dump());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// GET `path` on the admin port: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        self.get_accepting(path, None).await.map(|(status, _, body)| (status, body))
    }

    /// GET `path` on the admin port, with `accept` as the `Accept` header if given:
    /// (status, response head, body).
    pub async fn get_accepting(&self, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
        let addr = self.admin_addr()?;
        let path = path.to_string();
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        tokio::task::spawn_blocking(move || http_get(&addr, &path, &accept)).await.ok()?
    }

    /// A value of `/metrics`, by series (e.g. `zerodrop_worker_jobs_total{outcome="applied"}`).
    pub async fn metric(&self, series: &str) -> Option<u64> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            return None;
        }
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if self.status.is_none() {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// `extra`: further header lines, each ending in CRLF.
fn http_get(addr: &str, path: &str, extra: &str) -> Option<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    Some((status, head.to_string(), body.to_string()))
}

/// The stage's worker environment as owned pairs, ready to extend.
pub fn stage_env(stage: zerodrop_stages::StageName) -> Vec<(&'static str, String)> {
    zerodrop_stages::Stage::get(stage).worker.to_env()
}

/// The stage's *api* environment as owned pairs. Not the worker's: the two behaviours
/// differ (publisher confirms are an api lever only), and an api started with the
/// worker's gets `ZD_PUBLISHER_CONFIRMS=false`, answering 202 as soon as the publish
/// is written to the socket, so a job in flight when the broker goes is lost.
pub fn api_stage_env(stage: zerodrop_stages::StageName) -> Vec<(&'static str, String)> {
    zerodrop_stages::Stage::get(stage).api.to_env()
}
