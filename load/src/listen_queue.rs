//! The kernel's own view of the accept queue: for a listening socket, /proc/net/tcp
//! shows the connections waiting to be accepted (rx_queue; the bound itself, the
//! backlog, is only in inet_diag, as `ss -lt` shows); /proc/net/netstat counts the
//! SYNs dropped because it was full (ListenOverflows, ListenDrops). Both are per
//! network namespace: the local runner reads the lab's, and on a cluster
//! `zerodrop-load queues` reads its pod's (a sidecar shares the api container's
//! network namespace) and prints [`Sample`] lines that the runner reads off its log.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};

/// One listening socket, as read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    pub addr: SocketAddrV4,
    pub queued: u32,
}

/// One sampling tick over every api listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTick {
    pub unix_ms: i64,
    /// Connections waiting to be accepted, summed over the listeners.
    pub total: u32,
    /// The longest single queue.
    pub max: u32,
}

/// The listening sockets on `port` in this process's network namespace.
pub fn read(port: u16) -> Vec<ListenQueue> {
    std::fs::read_to_string("/proc/net/tcp").map(|t| parse_tcp(&t, port)).unwrap_or_default()
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

/// One reading of a pod's network namespace, as a log line:
/// `zdq <unix_ms> <queued> <longest queue> <ListenOverflows> <ListenDrops>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub unix_ms: i64,
    pub queued: u32,
    pub max: u32,
    /// The namespace's counters since it was made (with the pod).
    pub overflows: u64,
    pub drops: u64,
}

const SAMPLE_TAG: &str = "zdq";

impl Sample {
    /// Reads `port`'s listeners and the drop counters now.
    pub fn take(port: u16, unix_ms: i64) -> Sample {
        let qs = read(port);
        let (overflows, drops) = listen_drops();
        Sample {
            unix_ms,
            queued: qs.iter().map(|q| q.queued).sum(),
            max: qs.iter().map(|q| q.queued).max().unwrap_or(0),
            overflows,
            drops,
        }
    }

    pub fn line(&self) -> String {
        format!("{SAMPLE_TAG} {} {} {} {} {}", self.unix_ms, self.queued, self.max, self.overflows, self.drops)
    }

    /// The sample on a log line; `None` for any other line.
    pub fn parse(line: &str) -> Option<Sample> {
        let mut f = line.split_whitespace();
        if f.next()? != SAMPLE_TAG {
            return None;
        }
        let mut n = || f.next()?.parse::<u64>().ok();
        let s = Sample {
            unix_ms: i64::try_from(n()?).ok()?,
            queued: u32::try_from(n()?).ok()?,
            max: u32::try_from(n()?).ok()?,
            overflows: n()?,
            drops: n()?,
        };
        f.next().is_none().then_some(s)
    }
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

    #[test]
    fn a_real_listener_with_unaccepted_connections_shows_its_queue() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let q = read(port);
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].queued, 3);
    }

    #[test]
    fn samples_survive_the_log_and_nothing_else_parses_as_one() {
        let s = Sample { unix_ms: 1_795_438_951_050, queued: 17, max: 17, overflows: 3, drops: 4 };
        assert_eq!(Sample::parse(&s.line()), Some(s));
        for other in ["", "zdq", "zdq 1 2 3 4", "zdq 1 2 3 4 5 6", "zdq -1 2 3 4 5", "queues: port 8080 every 50ms"] {
            assert_eq!(Sample::parse(other), None, "{other:?}");
        }
    }
}
