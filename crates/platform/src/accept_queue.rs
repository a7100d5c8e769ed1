//! The kernel's own view of the accept queue: for a listening socket, /proc/net/tcp
//! shows the connections waiting to be accepted (rx_queue; the bound itself, the
//! backlog, is only in inet_diag, as `ss -lt` shows); /proc/net/netstat counts the SYNs dropped because it was
//! full (ListenOverflows, ListenDrops). Both are per network namespace, so the runner
//! reads the lab's.

use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One listening socket, as read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    pub addr: SocketAddrV4,
    pub queued: u32,
}

/// One sampling tick over every api listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueTick {
    pub unix_ms: i64,
    /// Connections waiting to be accepted, summed over the listeners.
    pub total: u32,
    /// The longest single queue.
    pub max: u32,
}

/// Reads the listening sockets on one port.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    port: u16,
}

impl Reader {
    pub fn new(port: u16) -> Self {
        Reader { port }
    }

    pub fn read(&self) -> Vec<ListenQueue> {
        std::fs::read_to_string("/proc/net/tcp").map(|t| parse_tcp(&t, self.port)).unwrap_or_default()
    }

    /// Samples every `every` until `stop`; the ticks are in the returned cell.
    pub fn sample(self, every: Duration, stop: CancellationToken) -> Arc<Mutex<Vec<QueueTick>>> {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let out = ticks.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = iv.tick() => {}
                }
                let qs = self.read();
                let tick = QueueTick {
                    unix_ms: crate::now_ms(),
                    total: qs.iter().map(|q| q.queued).sum(),
                    max: qs.iter().map(|q| q.queued).max().unwrap_or(0),
                };
                if let Ok(mut t) = out.lock() {
                    t.push(tick);
                }
            }
        });
        ticks
    }
}

/// LISTEN rows (state 0A) on `port`: `sl local rem st tx_queue:rx_queue ...`, the
/// address in the kernel's byte order as hex; for a listener rx_queue is the number
/// of connections waiting in the accept queue.
pub fn parse_tcp(table: &str, port: u16) -> Vec<ListenQueue> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            let (local, state, queues) = (f.get(1)?, f.get(3)?, f.get(4)?);
            if *state != "0A" {
                return None;
            }
            let (ip, p) = local.split_once(':')?;
            let p = u16::from_str_radix(p, 16).ok()?;
            if p != port {
                return None;
            }
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
            let (_, rx) = queues.split_once(':')?;
            Some(ListenQueue { addr: SocketAddrV4::new(ip, p), queued: u32::from_str_radix(rx, 16).ok()? })
        })
        .collect()
}

/// (ListenOverflows, ListenDrops) of this network namespace.
pub fn listen_drops() -> (u64, u64) {
    std::fs::read_to_string("/proc/net/netstat").map(|t| parse_netstat(&t)).unwrap_or((0, 0))
}

/// The TcpExt header line names the columns of the value line after it.
pub fn parse_netstat(text: &str) -> (u64, u64) {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else { return (0, 0) };
    let get = |key: &str| {
        names.split_whitespace().position(|n| n == key).and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
    };
    (get("ListenOverflows").unwrap_or(0), get("ListenDrops").unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_rows_on_the_port_give_the_accept_queue() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 01014D7F:1F90 00000000:0000 0A 00000080:00000011 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 01014D7F:1F90 0100607F:0050 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:2382 00000000:0000 0A 00000400:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        let q = parse_tcp(table, 8080);
        assert_eq!(q, vec![ListenQueue { addr: "127.77.1.1:8080".parse().unwrap(), queued: 17 }]);
    }

    #[test]
    fn netstat_columns_are_found_by_name() {
        let t = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 14\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_netstat(t), (12, 14));
        assert_eq!(parse_netstat("garbage"), (0, 0));
    }

    #[tokio::test]
    async fn a_real_listener_with_unaccepted_connections_shows_its_queue() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let q = Reader::new(port).read();
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].queued, 3);
    }
}
