//! The deploy burst, zoomed: from a little before the first pod of the deploy was
//! told to go (or created, for a surge) to a little after its last pod event or the
//! last failure the deploy caused, bounded to the roll window. Every request in it,
//! in 40–100 buckets, stacked by cause; the ready endpoints; one row per pod.

use super::{endpoints_panel, esc, lin, nice, num, panel_frame, strip, x_axis, y_tick, Frame, X0};
use crate::causes::Cause;
use crate::model::{PodEventKind, StageRun};
use crate::summary::StageSummary;
use std::fmt::Write as _;
use zerodrop_load::Class;

/// Bucket sizes to choose from, in milliseconds.
const BUCKETS_MS: [u64; 13] = [10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 30_000];
/// At most this many bars (the chosen size is the smallest that keeps under it, so
/// there are at least 40 whenever the burst spans more than 0.4 s).
const MAX_BARS: u64 = 100;
/// A failure the deploy caused this soon after the burst's end still belongs to it.
const CHAIN_US: u64 = 3_000_000;
/// Requests a bucket holds on average, at least (fewer bars at a low rate).
const MIN_PER_BUCKET: u64 = 4;
const BARS_H: f64 = 190.0;
const EPS_H: f64 = 40.0;
/// Faint: answered, in time.
const OK_FILL: &str = "#d3ead0";

/// The zoomed stretch of the run and its bucket size, in microseconds since the load
/// started; `from_us` and `to_us` are multiples of `bucket_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Zoom {
    pub from_us: u64,
    pub to_us: u64,
    pub bucket_us: u64,
}

/// A cause only the deploy produces: what the burst is made of. An overloaded warm
/// fleet, the host's own tail and the unexplained can happen any time.
fn deploy_caused(c: Cause) -> bool {
    !matches!(c, Cause::ShedFullWarm | Cause::SlowWarmPod | Cause::Unexplained)
}

impl Zoom {
    pub fn of(run: &StageRun, s: &StageSummary) -> Zoom {
        let (r0, r1) = (run.roll.from_us, run.roll.to_us.max(run.roll.from_us + 1_000_000));
        let in_roll = |t: u64| (r0..=r1).contains(&t);
        let us = |t_ms: i64| t_ms.max(0) as u64 * 1000;
        let events: Vec<_> = run.events.iter().filter(|e| e.t_ms >= 0 && in_roll(us(e.t_ms))).collect();
        let ours: Vec<_> = events.iter().filter(|e| e.app == "api" || e.app == "worker").copied().collect();
        let events = if ours.is_empty() { events } else { ours };
        let first = events
            .iter()
            .filter(|e| matches!(e.kind, PodEventKind::Terminating | PodEventKind::Sigterm | PodEventKind::Created))
            .map(|e| us(e.t_ms))
            .min();
        let last = events.iter().map(|e| us(e.t_ms)).max();
        // Without a pod event nothing tells the deploy's failures from others: all but
        // an overload's and the host's tail.
        let burst = |c: Cause| {
            deploy_caused(c) || (events.is_empty() && !matches!(c, Cause::ShedFullWarm | Cause::SlowWarmPod))
        };
        let mut caused: Vec<u64> = s
            .causes
            .requests
            .iter()
            .filter(|e| burst(e.cause))
            .filter_map(|e| run.load.records.get(e.record))
            .map(|r| r.at_us)
            .filter(|t| in_roll(*t))
            .collect();
        caused.sort_unstable();
        let (mut from, mut to) = match (first, last) {
            (Some(a), Some(b)) => (a, b),
            _ => match (caused.first(), caused.last()) {
                (Some(a), Some(b)) => (*a, *b),
                _ => (r0, r1),
            },
        };
        // The failures that follow (or lead) the pod events without a long pause.
        let after: Vec<u64> = caused.iter().copied().filter(|t| *t > to).collect();
        for t in after {
            if t - to > CHAIN_US {
                break;
            }
            to = t;
        }
        let before: Vec<u64> = caused.iter().rev().copied().filter(|t| *t < from).collect();
        for t in before {
            if from - t > CHAIN_US {
                break;
            }
            from = t;
        }
        let pad = ((to - from) / 10).clamp(300_000, 2_000_000);
        let (mut from, mut to) = (from.saturating_sub(pad).max(r0), (to + pad).min(r1));
        to = to.max(from);
        // At least a second, where the roll window allows.
        if to - from < 1_000_000 {
            let short = 1_000_000 - (to - from);
            from = from.saturating_sub(short / 2).max(r0);
            to = (from + 1_000_000).min(r1);
        }
        let span = to - from;
        // Enough requests in a bucket for its stack to mean something at a low rate.
        let sent = run.load.records.iter().filter(|r| (from..to).contains(&r.at_us)).count() as u64;
        let min_us = (MIN_PER_BUCKET * span).checked_div(sent).unwrap_or(0);
        let bucket_us = BUCKETS_MS
            .iter()
            .map(|ms| ms * 1000)
            .find(|b| span.div_ceil(*b) <= MAX_BARS && *b >= min_us)
            .unwrap_or(30_000_000);
        Zoom { from_us: from / bucket_us * bucket_us, to_us: to.div_ceil(bucket_us) * bucket_us, bucket_us }
    }

    pub fn start_s(&self) -> f64 {
        self.from_us as f64 / 1e6
    }

    pub fn end_s(&self) -> f64 {
        self.to_us as f64 / 1e6
    }

    pub fn bars(&self) -> usize {
        ((self.to_us - self.from_us) / self.bucket_us) as usize
    }

    fn bucket_label(&self) -> String {
        let ms = self.bucket_us / 1000;
        if ms >= 1000 && ms.is_multiple_of(1000) {
            format!("{} s", ms / 1000)
        } else {
            format!("{ms} ms")
        }
    }
}

/// One bucket's requests: answered in time, and per cause (indexed as `Cause::ALL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Bucket {
    pub ok: u64,
    pub causes: [u64; Cause::ALL.len()],
}

impl Bucket {
    fn total(&self) -> u64 {
        self.ok + self.causes.iter().sum::<u64>()
    }
}

fn index(c: Cause) -> usize {
    Cause::ALL.iter().position(|x| *x == c).unwrap_or(Cause::ALL.len() - 1)
}

/// Every request that started in the zoomed stretch, by its start.
pub(super) fn buckets(run: &StageRun, s: &StageSummary, z: &Zoom) -> Vec<Bucket> {
    let mut out = vec![Bucket::default(); z.bars()];
    for (i, r) in run.load.records.iter().enumerate() {
        if r.at_us < z.from_us || r.at_us >= z.to_us {
            continue;
        }
        let b = &mut out[((r.at_us - z.from_us) / z.bucket_us) as usize];
        match s.causes.of_record(i) {
            Some(c) => b.causes[index(c)] += 1,
            None if r.class == Class::Ok => b.ok += 1,
            None => b.causes[index(Cause::Unexplained)] += 1,
        }
    }
    out
}

/// One colour per cause (by key, so a cause added later still gets one of the spare
/// colours): reds for refusals, black and oranges for cuts, purple, blue, pink and
/// brown for the 503s, cyan and olive (hatched) for the slow, yellow for the
/// unexplained.
const CAUSE_COLOURS: [(&str, &str); 14] = [
    ("refused_stopped_listener", "#d62728"),
    ("refused_no_endpoint", "#7a0c0c"),
    ("cut_by_sigkill", "#1a1a1a"),
    ("keepalive_close_race", "#a65a00"),
    ("cut_by_shutdown", "#ff7f0e"),
    ("shed_draining_pod", "#9467bd"),
    ("shed_cold_pod", "#1f77b4"),
    ("shed_fleet_short", "#e377c2"),
    ("shed_full_warm", "#8c564b"),
    ("slow_cold_pod", "#17becf"),
    ("slow_warm_pod", "#9a9b1a"),
    ("job_lost", "#7f7f7f"),
    ("job_applied_twice", "#393b79"),
    ("unexplained", "#ffd400"),
];
const SPARE_COLOURS: [&str; 4] = ["#637939", "#843c39", "#3182bd", "#bd9e39"];

pub(super) fn cause_colour(c: Cause) -> &'static str {
    CAUSE_COLOURS.iter().find(|(k, _)| *k == c.key()).map(|(_, v)| *v).unwrap_or_else(|| {
        let spare = Cause::ALL.iter().filter(|x| !CAUSE_COLOURS.iter().any(|(k, _)| *k == x.key()));
        let i = spare.take_while(|x| **x != c).count();
        SPARE_COLOURS[i % SPARE_COLOURS.len()]
    })
}

/// Solid for a failure, hatched for a slow success.
fn cause_fill(c: Cause) -> String {
    if c.is_failure() {
        cause_colour(c).to_string()
    } else {
        format!("url(#slow-{})", c.key())
    }
}

/// The hatch patterns of the slow causes.
pub(super) fn defs() -> String {
    let mut o = String::new();
    for c in Cause::ALL.iter().filter(|c| !c.is_failure()) {
        let _ = write!(
            o,
            r#"<pattern id="slow-{}" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="5" height="5" fill="white"/><line x1="1.5" y1="0" x2="1.5" y2="5" stroke="{}" stroke-width="2.6"/></pattern>"#,
            c.key(),
            cause_colour(*c)
        );
    }
    o
}

/// Draws the zoomed part from `top`; returns its bottom.
pub(super) fn render(o: &mut String, run: &StageRun, s: &StageSummary, z: &Zoom, top: f64) -> f64 {
    let f = Frame { t0: z.start_s(), t1: z.end_s() };
    let bs = buckets(run, s, z);
    let _ = writeln!(
        o,
        r#"<text x="20" y="{:.1}" font-size="13" font-weight="bold">The deploy, zoomed in: {:.1}–{:.1} s, every request by what happened to it ({} bars)</text>"#,
        top + 6.0,
        z.start_s(),
        z.end_s(),
        esc(&z.bucket_label())
    );
    let y = cause_legend(o, &bs, top + 26.0);
    let bars = (y + 4.0, y + 4.0 + BARS_H);
    let eps = (bars.1 + 8.0, bars.1 + 8.0 + EPS_H);
    let rows = strip::rows(run, f.t0, f.t1);
    let mut strip_svg = String::new();
    let strip_bottom = strip::render(&mut strip_svg, &rows, &f, eps.1 + 8.0);
    x_axis(o, &f, strip_bottom, Some((bars.0, strip_bottom)));
    bars_panel(o, &bs, z, &f, bars);
    endpoints_panel(o, run, &f, eps);
    o.push_str(&strip_svg);
    strip::legend(o, &rows, strip_bottom + 44.0)
}

/// One line per cause present (failures first, then the slow), then ok; returns
/// where the plot may start.
fn cause_legend(o: &mut String, bs: &[Bucket], top: f64) -> f64 {
    let total = |i: usize| bs.iter().map(|b| b.causes[i]).sum::<u64>();
    let mut present: Vec<(Cause, u64)> =
        Cause::ALL.iter().enumerate().map(|(i, c)| (*c, total(i))).filter(|(_, n)| *n > 0).collect();
    present.sort_by_key(|(c, _)| !c.is_failure());
    let ok: u64 = bs.iter().map(|b| b.ok).sum();
    let mut y = top;
    let mut line = |o: &mut String, fill: &str, n: u64, label: &str, key: &str| {
        let _ = writeln!(
            o,
            r##"<rect x="{X0}" y="{:.1}" width="12" height="10" fill="{fill}" stroke="#666" stroke-width="0.5"/><text x="{:.1}" y="{y:.1}" text-anchor="end" font-weight="bold">{n}</text><text x="{:.1}" y="{y:.1}">{}<tspan dx="6" fill="#888" font-size="9">{}</tspan></text>"##,
            y - 9.0,
            X0 + 62.0,
            X0 + 68.0,
            esc(label),
            esc(key)
        );
        y += 14.0;
    };
    if present.is_empty() {
        line(o, "white", 0, "no request failed or was slow here", "");
    }
    for (c, n) in &present {
        let label = match (c.is_failure(), c.label()) {
            (false, l) if l.starts_with("slow") => l.to_string(),
            (false, l) => format!("slow: {l}"),
            (true, l) => format!("failed: {l}"),
        };
        line(o, &cause_fill(*c), *n, &label, c.key());
    }
    line(o, OK_FILL, ok, "ok: answered in time", "");
    y - 6.0
}

fn bars_panel(o: &mut String, bs: &[Bucket], z: &Zoom, f: &Frame, panel: (f64, f64)) {
    let per_s = 1e6 / z.bucket_us as f64;
    let peak = bs.iter().map(|b| b.total() as f64 * per_s).fold(0.0, f64::max);
    let (max, step) = nice(peak);
    let mut v = 0.0;
    while v <= max + 1e-9 {
        y_tick(o, lin(panel, max, v), &num(v));
        v += step;
    }
    panel_frame(o, panel, &format!("requests / s\n({} bars)", z.bucket_label()));
    // Failures at the bottom (in `Cause::ALL` order), the slow above them, ok on top.
    let mut order: Vec<usize> = (0..Cause::ALL.len()).collect();
    order.sort_by_key(|i| !Cause::ALL[*i].is_failure());
    for (k, b) in bs.iter().enumerate() {
        if b.total() == 0 {
            continue;
        }
        let t = z.start_s() + k as f64 * z.bucket_us as f64 / 1e6;
        let (x, x_end) = (f.x(t), f.x(t + z.bucket_us as f64 / 1e6));
        let gap = if x_end - x > 5.0 { 1.0 } else { 0.0 };
        let w = (x_end - x - gap).max(0.6);
        let mut title = format!("{t:.2} s: {} ok", b.ok);
        let mut rects = String::new();
        let mut base = 0.0;
        for i in &order {
            let n = b.causes[*i];
            if n > 0 {
                let _ = write!(title, ", {n} {}", Cause::ALL[*i].key());
            }
        }
        for (n, fill) in
            order.iter().map(|i| (b.causes[*i], cause_fill(Cause::ALL[*i]))).chain([(b.ok, OK_FILL.to_string())])
        {
            if n == 0 {
                continue;
            }
            let v = n as f64 * per_s;
            let (top, bottom) = (lin(panel, max, base + v), lin(panel, max, base));
            let _ = write!(
                rects,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{:.1}" fill="{fill}"/>"#,
                (bottom - top).max(0.5)
            );
            base += v;
        }
        let _ = writeln!(o, "<g><title>{}</title>{rects}</g>", esc(&title));
    }
}
