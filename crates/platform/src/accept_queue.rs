//! The api pods' accept queues over a run, as either platform observes them: the
//! local runner samples the lab's network namespace itself ([`Reader`]); on a
//! cluster each api pod's sidecar prints [`Sample`] lines and [`merge`] puts the
//! pods' series together. Either way the run gets a [`Watch`] and, at its end, the
//! same [`ListenQueues`].

use anyhow::Result;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
pub use zerodrop_load::listen_queue::{listen_drops, parse_netstat, parse_tcp, ListenQueue, QueueTick, Sample};

/// What the api pods' listen queues showed over a watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenQueues {
    pub ticks: Vec<QueueTick>,
    /// SYNs dropped because an accept queue was full (ListenOverflows), and all
    /// dropped SYNs (ListenDrops), over the watch.
    pub overflows: u64,
    pub drops: u64,
    /// How the platform read them, in words (for the report).
    pub source: String,
}

type Finish = Pin<Box<dyn Future<Output = Result<ListenQueues>> + Send>>;

/// A watch of the api pods' listen queues under way.
pub struct Watch {
    stop: CancellationToken,
    finish: Finish,
}

impl Watch {
    /// `finish` runs once the watch is stopped and hands over what it saw.
    pub fn new(stop: CancellationToken, finish: impl Future<Output = Result<ListenQueues>> + Send + 'static) -> Watch {
        Watch { stop, finish: Box::pin(finish) }
    }

    /// Stops sampling and hands over the ticks and the drop counts.
    pub async fn finish(self) -> Result<ListenQueues> {
        self.stop.cancel();
        self.finish.await
    }
}

/// Reads the listening sockets on one port, in the runner's own network namespace.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    port: u16,
}

impl Reader {
    pub fn new(port: u16) -> Self {
        Reader { port }
    }

    pub fn read(&self) -> Vec<ListenQueue> {
        zerodrop_load::listen_queue::read(self.port)
    }

    /// Samples every `every` until the watch is finished; the drop counters are read
    /// at its start and its end.
    pub fn watch(self, every: Duration) -> Watch {
        let stop = CancellationToken::new();
        let ticks = self.sample(every, stop.clone());
        let before = listen_drops();
        Watch::new(stop, async move {
            let after = listen_drops();
            let ticks = ticks.lock().map(|t| t.clone()).unwrap_or_default();
            Ok(ListenQueues {
                ticks,
                overflows: after.0.saturating_sub(before.0),
                drops: after.1.saturating_sub(before.1),
                source: format!(
                    "rx_queue of each api pod's listening socket in /proc/net/tcp, sampled every {} ms in the \
                     lab's network namespace; dropped SYNs are the namespace's TcpExt counters over the run",
                    every.as_millis()
                ),
            })
        })
    }

    fn sample(self, every: Duration, stop: CancellationToken) -> Arc<Mutex<Vec<QueueTick>>> {
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

/// The api pods' sample series (one per pod, each in its own order) as one series of
/// ticks `every` apart over `[from_ms, to_ms]`: each tick sums every pod's latest
/// sample no older than `every * 2` (a pod that stopped printing, gone or stalled,
/// counts no longer). The drop counters are per pod network namespace, made with the
/// pod: what a pod dropped over the watch is its last count less its count before
/// `from_ms` (0 for a pod that started later).
pub fn merge(pods: &[Vec<Sample>], from_ms: i64, to_ms: i64, every: Duration) -> ListenQueues {
    let step = (every.as_millis() as i64).max(1);
    let mut out = ListenQueues::default();
    let mut cells: BTreeMap<i64, BTreeMap<usize, Sample>> = BTreeMap::new();
    for (i, series) in pods.iter().enumerate() {
        let before = series.iter().filter(|s| s.unix_ms < from_ms).max_by_key(|s| s.unix_ms);
        let within: Vec<&Sample> = series.iter().filter(|s| (from_ms..=to_ms).contains(&s.unix_ms)).collect();
        if let Some(last) = within.iter().max_by_key(|s| s.unix_ms) {
            let (o0, d0) = before.map(|b| (b.overflows, b.drops)).unwrap_or((0, 0));
            out.overflows += last.overflows.saturating_sub(o0);
            out.drops += last.drops.saturating_sub(d0);
        }
        for s in within {
            let cell = cells.entry((s.unix_ms - from_ms) / step).or_default();
            match cell.get(&i) {
                Some(have) if have.unix_ms > s.unix_ms => {}
                _ => {
                    cell.insert(i, *s);
                }
            }
        }
    }
    let last_cell = (to_ms - from_ms).max(0) / step;
    let mut latest: BTreeMap<usize, Sample> = BTreeMap::new();
    for k in 0..=last_cell {
        if let Some(cell) = cells.get(&k) {
            latest.extend(cell.iter().map(|(i, s)| (*i, *s)));
        }
        let at = from_ms + k * step;
        latest.retain(|_, s| at + step - s.unix_ms <= 2 * step);
        if latest.is_empty() && !cells.contains_key(&k) {
            continue;
        }
        out.ticks.push(QueueTick {
            unix_ms: at,
            total: latest.values().map(|s| s.queued).sum(),
            max: latest.values().map(|s| s.max).max().unwrap_or(0),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(unix_ms: i64, queued: u32, overflows: u64) -> Sample {
        Sample { unix_ms, queued, max: queued, overflows, drops: overflows }
    }

    #[test]
    fn pods_sum_into_ticks_and_count_their_own_drops() {
        // Pod 0 runs throughout; pod 1 starts mid-watch (its namespace counts from 0);
        // pod 0's samples arrive out of order (two log streams, no promised order).
        let old = vec![s(950, 9, 5), s(1_060, 4, 5), s(1_010, 2, 5), s(1_110, 0, 7)];
        let new = vec![s(1_070, 30, 0), s(1_120, 12, 1)];
        let m = merge(&[old, new], 1_000, 1_149, Duration::from_millis(50));
        let totals: Vec<(i64, u32, u32)> = m.ticks.iter().map(|t| (t.unix_ms, t.total, t.max)).collect();
        assert_eq!(totals, [(1_000, 2, 2), (1_050, 34, 30), (1_100, 12, 12)]);
        assert_eq!((m.overflows, m.drops), (2 + 1, 2 + 1));
    }

    #[test]
    fn a_pod_that_stopped_printing_counts_no_longer() {
        let gone = vec![s(1_000, 50, 0)];
        let m = merge(&[gone], 1_000, 1_299, Duration::from_millis(50));
        let totals: Vec<u32> = m.ticks.iter().map(|t| t.total).collect();
        assert_eq!(totals, [50, 50], "kept for two periods, then dropped: {m:?}");
        assert_eq!(merge(&[], 0, 1_000, Duration::from_millis(50)), ListenQueues::default());
    }

    #[tokio::test]
    async fn a_real_listener_with_unaccepted_connections_shows_in_the_watch() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let watch = Reader::new(port).watch(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let seen = watch.finish().await.unwrap();
        assert!(seen.ticks.iter().any(|t| t.total == 3 && t.max == 3), "{seen:?}");
    }
}
