//! The real api binary, for tests that follow a job from `POST /jobs` to the ledger.
//! It is built next to the worker by `cargo test --workspace`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ApiProc {
    pub addr: String,
    child: Child,
    /// Its stdout (JSON log lines), collected as they come.
    lines: Arc<Mutex<Vec<String>>>,
}

fn binary() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_zerodrop-worker")).with_file_name("zerodrop-api");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p zerodrop-api` (cargo test --workspace does)",
        p.display()
    );
    p
}

/// One request on a fresh connection; the status code and the whole answer.
pub fn request(addr: &str, head: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let req = format!("{head}\r\nhost: t\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12)?.parse().ok()?;
    Some((code, out))
}

/// `POST /jobs`; the status code, or `None` when no answer came.
pub fn post_job(addr: &str, id: &str, amount: i64) -> Option<u16> {
    let body = format!(r#"{{"id":"{id}","amount":{amount}}}"#);
    request(addr, "POST /jobs HTTP/1.1\r\ncontent-type: application/json", &body).map(|(c, _)| c)
}

impl ApiProc {
    /// Starts the api on a free port and waits (up to 20 s) until `/readyz` is 200.
    pub fn start(amqp_url: &str, queue: &str, env: &[(&'static str, String)]) -> ApiProc {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary());
        cmd.env("ZD_LISTEN", &addr)
            .env("AMQP_URL", amqp_url)
            .env("ZD_QUEUE", queue)
            .env("RUST_LOG", "info")
            .env("ZD_LOG_FORMAT", "json")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn zerodrop-api");
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let lines = lines.clone();
            // Ends at EOF, when the api exits.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let api = ApiProc { addr, child, lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.get("/readyz").map(|(c, _)| c) != Some(200) {
            assert!(Instant::now() < deadline, "the api did not become ready in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        api
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        request(&self.addr, &format!("GET {path} HTTP/1.1"), "")
    }

    pub fn post_job(&self, id: &str, amount: i64) -> Option<u16> {
        post_job(&self.addr, id, amount)
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether a log line carries `"step":"<step>"` in its fields.
    pub fn has_step(&self, step: &str) -> bool {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v.get("fields").and_then(|f| f.get("step")).and_then(|s| s.as_str()) == Some(step))
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ApiProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
