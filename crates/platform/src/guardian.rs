//! The platform-independent half of the guardian exercise: the long request's client
//! and the clean-up of the queues the exercise's api declared.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zerodrop_jobs::Topology;

/// What the client of the long request saw, as a class key.
pub async fn long_request(addr: SocketAddr, ms: u64) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else { return "refused".into() };
    let req = format!("GET /work?ms={ms} HTTP/1.1\r\nHost: api\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return "reset".into();
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(ms + 5000), s.read_to_end(&mut buf)).await;
    match read {
        Err(_) => "timeout".into(),
        Ok(Err(_)) => "reset".into(),
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 2") => "ok".into(),
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 ") && buf.len() >= 12 => {
            format!("http_{}", String::from_utf8_lossy(&buf[9..12]))
        }
        Ok(Ok(_)) => "reset".into(),
    }
}

/// The exercise's api declared its queues; they are ours to remove.
pub async fn delete_queues(amqp_url: &str, topology: &Topology) {
    if let Ok(conn) = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await {
        if let Ok(ch) = conn.create_channel().await {
            let _ = topology.delete(&ch).await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
}

/// The exercise's exit for the run summary: the code itself, never `Some(70)`; `None`
/// is no exit seen (local: not even after SIGKILL; kind: the pod vanished first).
/// Codes 129..=192 are 128 + N, what the local pods (local/pod.rs), zerodrop-init and
/// the container runtime report for a process killed by signal N (the kubelet's
/// SIGKILL after the grace period shows as 137).
pub fn describe_exit(code: Option<i32>) -> String {
    match code {
        None => "no exit observed".into(),
        Some(c) if (129..=128 + 64).contains(&c) => {
            let sig = c - 128;
            match signal_name(sig) {
                Some(name) => format!("no exit code: killed by {name} (signal {sig}, reported as {c})"),
                None => format!("no exit code: killed by signal {sig} (reported as {c})"),
            }
        }
        Some(c) => format!("exit code {c}"),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::describe_exit;

    #[test]
    fn the_summary_prints_the_exit_code_itself() {
        assert_eq!(describe_exit(Some(70)), "exit code 70");
        assert_eq!(describe_exit(Some(0)), "exit code 0");
        assert_eq!(describe_exit(Some(128)), "exit code 128");
        assert_eq!(describe_exit(Some(137)), "no exit code: killed by SIGKILL (signal 9, reported as 137)");
        assert_eq!(describe_exit(Some(143)), "no exit code: killed by SIGTERM (signal 15, reported as 143)");
        assert_eq!(describe_exit(Some(162)), "no exit code: killed by signal 34 (reported as 162)");
        assert_eq!(describe_exit(Some(200)), "exit code 200");
        assert_eq!(describe_exit(None), "no exit observed");
        assert!(!describe_exit(Some(70)).contains("Some"));
    }
}
