//! What a reconnect storm costs a pod: a bounded accept queue (the listen backlog),
//! and extra work on the first request of every new connection, paid holding a
//! capacity slot. The per-connection set-up itself is paid in the lifecycle's accept
//! loop (`AppBehaviour.conn_setup`). Every response names its pod, so a client that
//! only sees the Service's address can tell which pod served it.

use crate::state::AppState;
use axum::http::HeaderValue;
use axum::response::Response;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};
use zerodrop_lifecycle::http::ConnRequest;

/// The response header carrying the pod's name.
pub const POD_HEADER: &str = "x-zd-pod";

/// Listens on `addr` with an accept queue of at most `backlog` connections.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Charges the first request of a connection its cold cost; later ones are free.
pub async fn first_request(s: &AppState, conn: Option<ConnRequest>) {
    let cost = s.lc.behaviour().first_request_cost;
    if !cost.is_zero() && conn.is_some_and(|c| c.index == 0) {
        tokio::time::sleep(cost).await;
    }
}

/// The pod's name for [`POD_HEADER`]: `ZD_POD` (set by both platforms), else `api`.
pub fn pod_header_value() -> HeaderValue {
    std::env::var("ZD_POD").ok().and_then(|p| HeaderValue::from_str(&p).ok()).unwrap_or(HeaderValue::from_static("api"))
}

/// Adds [`POD_HEADER`] to a response.
pub fn tag(mut res: Response, pod: &HeaderValue) -> Response {
    res.headers_mut().insert(POD_HEADER, pod.clone());
    res
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_listen_backlog_is_the_one_asked_for() {
        let l = super::bind("127.0.0.1:0".parse().unwrap(), 7).unwrap();
        let port = l.local_addr().unwrap().port();
        // For a listening socket `ss` shows the backlog as Send-Q (from inet_diag).
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        let send_q = text.split_whitespace().nth(2).and_then(|v| v.parse::<u32>().ok());
        assert_eq!(send_q, Some(7), "{text}");
    }
}
