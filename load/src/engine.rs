pub(crate) mod classify;
mod pool;
mod request;
mod schedule;

use crate::{Class, Kind, Profile, Record, Resolver, RunResult};
use pool::Pool;
use request::Spec;
use schedule::{Plan, Planned};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

/// A send that starts later than this after its intended start is counted as late.
const LATE: Duration = Duration::from_millis(1);
/// Grace past the last request's own deadline for its outcome to arrive.
const SLACK: Duration = Duration::from_millis(500);
const MAX_NAP: Duration = Duration::from_millis(50);

/// Running counters a progress display can read while a run is going.
#[derive(Debug, Default)]
pub struct Live {
    sent: AtomicU64,
    /// Indexed by `Class as usize` (declaration order, the order of [`Class::ALL`]).
    by_class: [AtomicU64; Class::ALL.len()],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSnapshot {
    pub sent: u64,
    pub ok: u64,
    /// Failure class key -> count.
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl LiveSnapshot {
    /// The per-second progress line `zerodrop-load run` prints on stderr, `t` seconds
    /// in: `   3s  sent 600  ok 597  errors refused=3` (`errors 0` when there are none).
    pub fn progress_line(&self, t: u64) -> String {
        let errors = if self.errors.is_empty() {
            "0".to_string()
        } else {
            self.errors.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
        };
        format!("{t:>4}s  sent {}  ok {}  errors {errors}", self.sent, self.ok)
    }

    /// A [`LiveSnapshot::progress_line`] read back: (seconds, counts); `None` for any
    /// other line.
    pub fn parse_progress_line(line: &str) -> Option<(u64, LiveSnapshot)> {
        let mut w = line.split_whitespace();
        let t = w.next()?.strip_suffix('s')?.parse().ok()?;
        let mut num = |key: &str| if w.next()? == key { w.next()?.parse::<u64>().ok() } else { None };
        let (sent, ok) = (num("sent")?, num("ok")?);
        if w.next()? != "errors" {
            return None;
        }
        let mut errors = BTreeMap::new();
        for e in w {
            if e == "0" {
                continue;
            }
            let (k, n) = e.split_once('=')?;
            errors.insert(k.to_string(), n.parse().ok()?);
        }
        Some((t, LiveSnapshot { sent, ok, errors }))
    }
}

impl Live {
    pub fn new() -> Self {
        Live::default()
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        let count = |c: Class| self.by_class[c as usize].load(Ordering::Relaxed);
        let errors: BTreeMap<String, u64> = Class::FAILURES
            .iter()
            .chain(std::iter::once(&Class::Http4xx))
            .map(|&c| (c.key().to_string(), count(c)))
            .filter(|&(_, n)| n > 0)
            .collect();
        LiveSnapshot { sent: self.sent.load(Ordering::Relaxed), ok: count(Class::Ok), errors }
    }

    /// Shows the counts of another process's run (read off its progress lines):
    /// afterwards [`Live::snapshot`] returns `s`.
    pub fn show(&self, s: &LiveSnapshot) {
        self.sent.store(s.sent, Ordering::Relaxed);
        for c in Class::ALL {
            let n = if c == Class::Ok { s.ok } else { s.errors.get(c.key()).copied().unwrap_or(0) };
            self.by_class[c as usize].store(n, Ordering::Relaxed);
        }
    }

    fn record(&self, class: Class) {
        self.by_class[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// For other drivers of the same counters (the keep-alive clients).
    pub(crate) fn count_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self, class: Class) {
        self.record(class);
    }
}

struct Ctx {
    pool: Pool,
    spec: Spec,
    job_prefix: String,
    request_timeout: Duration,
    start: Instant,
    live: Arc<Live>,
}

struct Outcome {
    record: Record,
    seq: u64,
    accepted_job: Option<String>,
    pod: Option<String>,
    /// The shadow's answer to this request's copy, and the pod that gave it.
    copy: Option<(Record, Option<String>)>,
    /// The copy's job id, when the shadow answered it 202.
    copy_accepted_job: Option<String>,
}

/// Runs `profile` against the endpoints `resolver` hands out. Job ids are
/// `{job_prefix}-{sequence}`. Stops by itself after `profile.duration` plus the
/// request timeout.
pub async fn run(profile: &Profile, resolver: Arc<dyn Resolver>, job_prefix: &str, live: Arc<Live>) -> RunResult {
    let started_unix_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
    let start = Instant::now();
    // Every request gives up at intended start + request timeout, so by then all are done.
    let stop = start + profile.duration + profile.request_timeout + SLACK;
    let ctx = Arc::new(Ctx {
        pool: Pool::new(resolver, profile.max_connections, profile.connect_timeout),
        spec: Spec {
            fast_ms: profile.fast_ms,
            slow_ms: profile.slow_ms,
            mark: profile.mark.clone(),
            clients: profile.clients.clone(),
            mirror: profile.mirror.clone(),
        },
        job_prefix: job_prefix.to_string(),
        request_timeout: profile.request_timeout,
        start,
        live,
    });
    let plan = Plan::new(profile);
    let mut outcomes: Vec<Option<Outcome>> = (0..plan.total()).map(|_| None).collect();
    let scheduled = Arc::new(AtomicU64::new(0));
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let sink = Sink { tx, scheduled: scheduled.clone(), cancel: cancel.clone() };
    let (sched_ctx, handle) = (ctx.clone(), Handle::current());
    // Not awaited: it ends by itself, or at `cancel`, within one nap.
    let _scheduler = tokio::task::spawn_blocking(move || schedule(plan, stop, sched_ctx, sink, handle));

    // Ends when the scheduler and every request have dropped their sender.
    while let Ok(Some(o)) = timeout_at(stop, rx.recv()).await {
        if let Some(slot) = outcomes.get_mut(o.seq as usize) {
            *slot = Some(o);
        }
    }
    cancel.store(true, Ordering::Relaxed);

    let scheduled = scheduled.load(Ordering::SeqCst) as usize;
    let mut records = Vec::with_capacity(scheduled);
    let mut accepted_jobs = Vec::new();
    let mut rebuilt = Plan::new(profile);
    let mut pods = PodNames::default();
    let mut mirrored = Vec::new();
    let mut mirrored_accepted_jobs = Vec::new();
    for slot in outcomes.into_iter().take(scheduled) {
        let planned = rebuilt.next();
        match slot {
            Some(o) => {
                let mut record = o.record;
                record.pod = o.pod.as_deref().and_then(|name| pods.index(name));
                records.push(record);
                accepted_jobs.extend(o.accepted_job);
                if let Some((mut copy, pod)) = o.copy {
                    copy.pod = pod.as_deref().and_then(|name| pods.index(name));
                    mirrored.push(crate::Mirrored { seq: o.seq, record: copy });
                }
                mirrored_accepted_jobs.extend(o.copy_accepted_job);
            }
            // Only a starved runtime gets here: the request never reported back.
            None => {
                if let Some(p) = planned {
                    ctx.live.record(Class::Timeout);
                    records.push(record(start, &p, stop, Class::Timeout, false));
                }
            }
        }
    }
    let late_sends = records.iter().filter(|r| r.late).count() as u64;
    RunResult {
        started_unix_ms,
        profile: profile.clone(),
        records,
        accepted_jobs,
        late_sends,
        connections_opened: ctx.pool.connections_opened(),
        pods: pods.names,
        mirrored,
        mirrored_accepted_jobs,
    }
}

/// Interns pod names into [`RunResult::pods`], so a record carries a small index.
#[derive(Default)]
struct PodNames {
    names: Vec<String>,
}

impl PodNames {
    /// `None` past `u16::MAX` distinct names: the record then names no pod.
    fn index(&mut self, name: &str) -> Option<u16> {
        let i = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        };
        u16::try_from(i).ok()
    }
}

/// Open loop: each request is spawned at its intended start whatever the previous
/// ones are doing. A scheduler that falls behind sends immediately; the lateness shows
/// in the latency, which counts from the intended start.
///
/// This runs on a blocking thread and sleeps with the OS timer, not tokio's: tokio's
/// timer wheel has 1 ms ticks (deadlines round up to the next tick and the driver
/// parks in whole milliseconds), which made 75% of sends more than 1 ms late at
/// 200 rps. nanosleep overshoots by tens of microseconds.
fn schedule(plan: Plan, stop: Instant, ctx: Arc<Ctx>, out: Sink, handle: Handle) {
    let start = ctx.start.into_std();
    for p in plan {
        let intended = start + p.offset;
        loop {
            if out.cancel.load(Ordering::Relaxed) {
                return;
            }
            let now = std::time::Instant::now();
            if now >= intended {
                break;
            }
            // Short naps keep the thread responsive to `cancel` at low rates.
            std::thread::sleep((intended - now).min(MAX_NAP));
        }
        if Instant::now() >= stop {
            return;
        }
        out.scheduled.fetch_add(1, Ordering::SeqCst);
        ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        handle.spawn(one(ctx.clone(), p, out.tx.clone()));
    }
}

struct Sink {
    tx: mpsc::UnboundedSender<Outcome>,
    scheduled: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
}

async fn one(ctx: Arc<Ctx>, p: Planned, tx: mpsc::UnboundedSender<Outcome>) {
    let intended = ctx.start + p.offset;
    let late = Instant::now().saturating_duration_since(intended) > LATE;
    let job_id = (p.kind == Kind::Job).then(|| format!("{}-{}", ctx.job_prefix, p.seq));
    // The copy runs as a task of its own, so each answer is timed when it arrives: in
    // one task, two answers that land before it is polled would get one timestamp.
    let copy = p.mirrored.then(|| tokio::spawn(send(ctx.clone(), p, job_id.clone(), true)));
    let (answer, end) = send(ctx.clone(), p, job_id.clone(), false).await;
    let copy = match copy {
        Some(task) => task.await.ok(),
        None => None,
    };
    ctx.live.record(answer.class);
    let _ = tx.send(Outcome {
        record: record(ctx.start, &p, end, answer.class, late),
        seq: p.seq,
        accepted_job: if answer.accepted { job_id.clone() } else { None },
        pod: answer.pod,
        copy_accepted_job: copy.as_ref().filter(|(a, _)| a.accepted).and(job_id.clone()),
        copy: copy.map(|(a, at)| (record(ctx.start, &p, at, a.class, late), a.pod)),
    });
}

/// One send of `p` (the original, or with `copy` the shadow's copy), bounded by the
/// request's deadline; returns its answer and when it came.
async fn send(ctx: Arc<Ctx>, p: Planned, job_id: Option<String>, copy: bool) -> (request::Answer, Instant) {
    let work = request::execute(&ctx.pool, &ctx.spec, &p, job_id.as_deref(), copy);
    let deadline = ctx.start + p.offset + ctx.request_timeout;
    let answer = timeout_at(deadline, work).await.unwrap_or(request::Answer {
        class: Class::Timeout,
        accepted: false,
        pod: None,
    });
    (answer, Instant::now())
}

fn record(start: Instant, p: &Planned, end: Instant, class: Class, late: bool) -> Record {
    let intended = start + p.offset;
    Record {
        at_us: p.offset.as_micros() as u64,
        latency_us: end.saturating_duration_since(intended).as_micros() as u64,
        class,
        kind: p.kind,
        late,
        pod: None,
        marked: p.marked,
        client: p.client,
    }
}
