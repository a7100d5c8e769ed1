//! Runs the real api binary against the real RabbitMQ on this machine.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("zerodrop.test.{name}.{}.{nanos}", std::process::id())
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct Api {
    pub addr: SocketAddr,
    pub queue: String,
    child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Api {
    /// Starts the api with `env` on a free port and waits until /readyz answers 200.
    pub fn start(queue: &str, env: &[(&str, String)]) -> Api {
        let addr = free_addr();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zerodrop-api"));
        cmd.env("ZD_LISTEN", addr.to_string())
            .env("AMQP_URL", amqp_url())
            .env("ZD_QUEUE", queue)
            .env("ZD_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn zerodrop-api");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let api = Api { addr, queue: queue.to_string(), child, lines };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = api.try_request("GET", "/readyz", &[], b"") {
                return api;
            }
            assert!(
                Instant::now() < deadline,
                "api did not become ready in 30 s (is RabbitMQ running at {}? start it with `rabbitmq-server -detached`); log: {:?}",
                amqp_url(),
                api.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A GET on a fresh connection to `addr`, from any thread.
    pub fn request_to(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp).to_string();
        let status = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no response: {text:?}")))?;
        Ok((status, text))
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        self.try_request(method, path, headers, body).expect("request failed")
    }

    /// One request on a fresh connection; returns status and body.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        self.exchange(method, path, headers, body).map(|(status, _, body)| (status, body))
    }

    /// One request on a fresh connection; returns status, response head and body.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, String, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        // A test's own Host header replaces the default one.
        let host = if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) { "" } else { "Host: test\r\n" };
        let mut req =
            format!("{method} {path} HTTP/1.1\r\n{host}Connection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp).to_string();
        let status = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
        Ok((status, head.to_string(), body.to_string()))
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        self.wait_status(limit).and_then(|st| st.code())
    }

    /// The exit status, or `None` if the process is still running after `limit`.
    pub fn wait_status(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Give the reader thread a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first logged line whose `step` is `step`, parsed; panics (a test helper) if
    /// none was logged yet.
    pub fn step_line(&self, step: &str) -> serde_json::Value {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["step"] == step)
            .unwrap_or_else(|| panic!("no {step} line logged"))
    }

    /// The `step` values logged so far, in order, with `resource` appended for dispose.
    pub fn steps(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                let f = v.get("fields")?;
                let step = f.get("step")?.as_str()?.to_string();
                Some(match f.get("resource").and_then(|r| r.as_str()) {
                    Some(r) => format!("{step} {r}"),
                    None => step,
                })
            })
            .collect()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let topology = zerodrop_jobs::Topology::new(&self.queue);
        let _ = with_channel(|ch| async move { topology.delete(&ch).await });
    }
}

/// Asserts `expected` appears in `steps` in this order (other steps may interleave).
pub fn assert_in_order(steps: &[String], expected: &[&str]) {
    let mut it = steps.iter();
    for want in expected {
        assert!(it.any(|s| s == want), "step `{want}` missing or out of order in {steps:#?}");
    }
}

pub fn stage_env(b: zerodrop_stages::AppBehaviour) -> Vec<(&'static str, String)> {
    b.to_env()
}

/// Runs `f` with a fresh AMQP channel on a throwaway runtime.
pub fn with_channel<F, Fut, T>(f: F) -> Result<T, lapin::Error>
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, lapin::Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let out = f(ch).await;
        let _ = conn.close(200, "test done".into()).await;
        out
    })
}

/// Messages ready in the work queue.
pub fn queue_depth(queue: &str) -> u32 {
    let topology = zerodrop_jobs::Topology::new(queue);
    with_channel(|ch| async move { topology.depths(&ch).await }).expect("queue depth").0
}
