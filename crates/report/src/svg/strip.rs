//! The zoomed part's pod strip: one row per pod with a moment in the zoomed stretch,
//! its name at the left, a bar of its state (starting, ready, cold, shutting down, not
//! listening while still routed) and a symbol per lifecycle moment (pod events and the
//! key lines of its own log). Symbols never overlap: one that would is moved right
//! just enough. Short labels go above or below the bar where they fit and are left
//! out where they do not; the legend under the strip names every symbol shown.

use super::{esc, text_width, Frame, X0, X1};
use crate::causes::pods::api_pods;
use crate::model::{PodEventKind, StageRun};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A row without labels below its bar, and one with.
const ROW: f64 = 21.0;
const ROW_TWO_LANES: f64 = 31.0;
/// Symbols are at least this far apart, centre to centre.
const SYM: f64 = 10.0;
const LABEL_SIZE: f64 = 9.0;
/// Space kept between two labels of one lane.
const LABEL_GAP: f64 = 6.0;
const MAX_ROWS: usize = 18;
const NAME_SIZE: f64 = 10.0;
/// Room for a pod's name left of the plot.
const NAME_WIDTH: f64 = X0 - 8.0 - 8.0;

/// A lifecycle moment shown in the strip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Mark {
    Created,
    Ready,
    Unready,
    Terminating,
    Sigterm,
    Handler,
    ReadinessOff,
    EndpointRemoved,
    ListenerClosed,
    Drained,
    Warm,
    Sigkill,
    Guardian,
    Exited,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Circle,
    Ring,
    Down,
    UpOpen,
    Diamond,
    DiamondOpen,
    Bar,
    Cross,
    Square,
    SquareOpen,
    Star,
}

impl Mark {
    const ALL: [Mark; 14] = [
        Mark::Created,
        Mark::Ready,
        Mark::Unready,
        Mark::Terminating,
        Mark::Sigterm,
        Mark::Handler,
        Mark::ReadinessOff,
        Mark::EndpointRemoved,
        Mark::ListenerClosed,
        Mark::Drained,
        Mark::Warm,
        Mark::Sigkill,
        Mark::Guardian,
        Mark::Exited,
    ];

    fn of_event(k: PodEventKind) -> Mark {
        match k {
            PodEventKind::Created => Mark::Created,
            PodEventKind::Ready => Mark::Ready,
            PodEventKind::Unready => Mark::Unready,
            PodEventKind::Terminating => Mark::Terminating,
            PodEventKind::EndpointRemoved => Mark::EndpointRemoved,
            PodEventKind::Sigterm => Mark::Sigterm,
            PodEventKind::Sigkill => Mark::Sigkill,
            PodEventKind::Exited => Mark::Exited,
        }
    }

    /// The key lifecycle log steps; the rest of a pod's log is in report.md.
    fn of_step(step: &str) -> Option<Mark> {
        Some(match step {
            "sigterm_received" => Mark::Handler,
            "readiness_failing" => Mark::ReadinessOff,
            "listener_closed" => Mark::ListenerClosed,
            "drain_complete" => Mark::Drained,
            "cache_warm" | "warmed" => Mark::Warm,
            "guardian_fired" => Mark::Guardian,
            _ => return None,
        })
    }

    /// The label beside the symbol.
    fn short(self) -> &'static str {
        match self {
            Mark::Created => "new",
            Mark::Ready => "ready",
            Mark::Unready => "unready",
            Mark::Terminating => "term",
            Mark::Sigterm => "SIGTERM",
            Mark::Handler => "handler",
            Mark::ReadinessOff => "not ready",
            Mark::EndpointRemoved => "unrouted",
            Mark::ListenerClosed => "closed",
            Mark::Drained => "drained",
            Mark::Warm => "warm",
            Mark::Sigkill => "SIGKILL",
            Mark::Guardian => "guardian",
            Mark::Exited => "exit",
        }
    }

    /// What the legend says after the label.
    fn meaning(self) -> &'static str {
        match self {
            Mark::Created => "pod created",
            Mark::Ready => "readiness probe passed",
            Mark::Unready => "readiness probe failed",
            Mark::Terminating => "deletion started (preStop runs)",
            Mark::Sigterm => "sent to the pod",
            Mark::Handler => "the app caught SIGTERM",
            Mark::ReadinessOff => "the app fails its readiness",
            Mark::EndpointRemoved => "the Service stops routing to it",
            Mark::ListenerClosed => "listener closed",
            Mark::Drained => "in-flight requests done",
            Mark::Warm => "cache filled, cold period over",
            Mark::Sigkill => "killed at the end of the grace period",
            Mark::Guardian => "the drain guardian forced an exit",
            Mark::Exited => "process ended",
        }
    }

    fn style(self) -> (Shape, &'static str) {
        match self {
            Mark::Created => (Shape::Ring, "#555555"),
            Mark::Ready => (Shape::Circle, "#2ca02c"),
            Mark::Unready => (Shape::Ring, "#2ca02c"),
            Mark::Terminating => (Shape::Down, "#ff7f0e"),
            Mark::Sigterm => (Shape::Diamond, "#d62728"),
            Mark::Handler => (Shape::DiamondOpen, "#d62728"),
            Mark::ReadinessOff => (Shape::SquareOpen, "#2ca02c"),
            Mark::EndpointRemoved => (Shape::Bar, "#7b4173"),
            Mark::ListenerClosed => (Shape::Square, "#1f77b4"),
            Mark::Drained => (Shape::UpOpen, "#1f77b4"),
            Mark::Warm => (Shape::Star, "#e6ab02"),
            Mark::Sigkill => (Shape::Cross, "#000000"),
            Mark::Guardian => (Shape::Cross, "#d62728"),
            Mark::Exited => (Shape::Square, "#333333"),
        }
    }
}

/// What a pod's bar shows over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Starting,
    Cold,
    Ready,
    ShuttingDown,
    /// Its listener was gone (closed, exited or killed) while the Service still
    /// routed new connections to it: every one of them refused.
    DeadRouted,
}

impl State {
    const ALL: [State; 5] = [State::Starting, State::Ready, State::Cold, State::ShuttingDown, State::DeadRouted];

    fn fill(self) -> &'static str {
        match self {
            State::Starting => "#d4d4d4",
            State::Cold => "#c2e3bd",
            State::Ready => "#74c476",
            State::ShuttingDown => "#fdbf6f",
            State::DeadRouted => "url(#dead-routed)",
        }
    }

    fn label(self) -> &'static str {
        match self {
            State::Starting => "not ready",
            State::Cold => "ready, cache still cold",
            State::Ready => "ready",
            State::ShuttingDown => "shutting down",
            State::DeadRouted => "not listening, still routed: refuses",
        }
    }
}

/// The red hatch of [`State::DeadRouted`].
pub(super) fn defs() -> &'static str {
    r##"<pattern id="dead-routed" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="4" height="4" fill="#f7c6c6"/><line x1="1" y1="0" x2="1" y2="4" stroke="#d62728" stroke-width="2"/></pattern>"##
}

/// One pod's row: its moments in the stretch, and its state intervals clipped to it
/// (times in seconds since the load started).
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub pod: String,
    pub app: String,
    /// In time order.
    pub marks: Vec<(f64, Mark, String)>,
    pub spans: Vec<(f64, f64, State)>,
}

/// Every pod with a moment in `[t0, t1]` (seconds): api pods first, then the rest,
/// each group in the order of its first moment.
pub(super) fn rows(run: &StageRun, t0: f64, t1: f64) -> Vec<Row> {
    let inside = |t_ms: i64| (t0..=t1).contains(&(t_ms as f64 / 1000.0));
    // Per pod: its app and its moments (ms, what, detail for the tooltip).
    type Moments<'a> = (&'a str, Vec<(i64, Mark, String)>);
    let mut marks: BTreeMap<&str, Moments> = BTreeMap::new();
    for e in run.events.iter().filter(|e| inside(e.t_ms)) {
        let detail = if e.detail.is_empty() { String::new() } else { format!(" ({})", e.detail) };
        marks.entry(&e.pod).or_insert((&e.app, Vec::new())).1.push((e.t_ms, Mark::of_event(e.kind), detail));
    }
    for l in run.logs.iter().filter(|l| inside(l.t_ms)) {
        if let Some(m) = Mark::of_step(&l.step) {
            marks.entry(&l.pod).or_insert((&l.app, Vec::new())).1.push((l.t_ms, m, format!(" ({})", l.step)));
        }
    }
    let api = api_pods(run);
    let mut rows: Vec<Row> = marks
        .into_iter()
        .map(|(pod, (app, mut ms))| {
            ms.sort_by_key(|(t, m, _)| (*t, *m));
            let mut spans = states(run, pod);
            if let Some(life) = api.get(pod) {
                if let (Some(stop), Some(removed)) = (life.stopped_listening, life.endpoint_removed) {
                    if removed > stop {
                        spans.push((stop, removed, State::DeadRouted));
                    }
                }
            }
            let clip = |t: i64| (t as f64 / 1000.0).clamp(t0, t1);
            Row {
                pod: pod.to_string(),
                app: app.to_string(),
                marks: ms.into_iter().map(|(t, m, d)| (t as f64 / 1000.0, m, d)).collect(),
                spans: spans.into_iter().map(|(a, b, s)| (clip(a), clip(b), s)).filter(|(a, b, _)| b > a).collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let first = |r: &Row| r.marks.first().map_or(f64::MAX, |m| m.0);
        (a.app != "api").cmp(&(b.app != "api")).then(first(a).total_cmp(&first(b))).then(a.pod.cmp(&b.pod))
    });
    rows
}

/// A pod's base states over time, in milliseconds (`i64::MIN` / `i64::MAX` for
/// "before / after anything recorded").
fn states(run: &StageRun, pod: &str) -> Vec<(i64, i64, State)> {
    #[derive(Clone, Copy, PartialEq)]
    enum To {
        Start,
        Ready,
        Unready,
        Shut,
        Gone,
    }
    let mut steps: Vec<(i64, To)> = run
        .events
        .iter()
        .filter(|e| e.pod == pod)
        .filter_map(|e| {
            let to = match e.kind {
                PodEventKind::Created => To::Start,
                PodEventKind::Ready => To::Ready,
                PodEventKind::Unready => To::Unready,
                PodEventKind::Terminating | PodEventKind::Sigterm => To::Shut,
                PodEventKind::Sigkill | PodEventKind::Exited => To::Gone,
                PodEventKind::EndpointRemoved => return None,
            };
            Some((e.t_ms, to))
        })
        .chain(run.logs.iter().filter(|l| l.pod == pod && l.step == "sigterm_received").map(|l| (l.t_ms, To::Shut)))
        .collect();
    steps.sort_by_key(|s| s.0);
    let warm = run
        .logs
        .iter()
        .filter(|l| l.pod == pod && matches!(l.step.as_str(), "cache_warm" | "warmed"))
        .map(|l| l.t_ms)
        .min();
    // A pod whose first recorded moment is its end was serving before it.
    let mut cur = match steps.first() {
        Some((_, To::Shut | To::Gone | To::Unready)) => Some((i64::MIN, State::Ready)),
        _ => None,
    };
    let mut out = Vec::new();
    for (t, to) in steps {
        let now = cur.map(|c| c.1);
        let next = match to {
            To::Gone => None,
            // Nothing but its end changes a shutdown.
            _ if now == Some(State::ShuttingDown) => continue,
            To::Shut => Some(State::ShuttingDown),
            To::Start | To::Unready => Some(State::Starting),
            To::Ready => Some(State::Ready),
        };
        if now == next {
            continue;
        }
        if let Some((since, s)) = cur {
            out.push((since, t, s));
        }
        cur = next.map(|s| (t, s));
    }
    if let Some((since, s)) = cur {
        out.push((since, i64::MAX, s));
    }
    // Ready before its cache was warm: cold.
    match warm {
        Some(w) => out
            .into_iter()
            .flat_map(|(a, b, s)| match s {
                State::Ready if a < w && w < b => vec![(a, w, State::Cold), (w, b, State::Ready)],
                State::Ready if b <= w => vec![(a, b, State::Cold)],
                _ => vec![(a, b, s)],
            })
            .collect(),
        None => out,
    }
}

/// Symbol centres: at their time, moved right where they would overlap the one
/// before.
pub(super) fn symbol_xs(xs: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::with_capacity(xs.len());
    for &x in xs {
        let x = out.last().map_or(x, |p| x.max(p + SYM));
        out.push(x);
    }
    out
}

/// A label placed in a lane (0 above the bar, 1 below), spanning `[x, x + width]`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Label {
    pub x: f64,
    pub width: f64,
    pub lane: u8,
    pub text: String,
}

/// Labels for groups of touching symbols (`(first centre, last centre, labels)`):
/// the group's labels joined, above the bar if there is room, else below, moved
/// right a little if that makes room (never past the group's own symbols by much),
/// else only its first label (with "+n"), else none. Never two overlapping in a lane.
pub(super) fn place_labels(groups: &[(f64, f64, Vec<&str>)]) -> Vec<Option<Label>> {
    let mut lanes: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    let mut out = Vec::new();
    for (first, last, texts) in groups {
        let mut candidates = vec![texts.join("+")];
        if texts.len() > 1 {
            candidates.push(format!("{}+{}", texts[0], texts.len() - 1));
        }
        let mut placed = None;
        'search: for text in candidates {
            let width = text_width(&text, LABEL_SIZE);
            let x = (first - 4.0).min(X1 - width).max(X0);
            for drift in [SYM * 1.2, (last - first) + SYM * 2.0] {
                for lane in 0..2u8 {
                    let taken = &lanes[lane as usize];
                    let Some(at) = free_from(taken, x, width) else { continue };
                    if at - x <= drift && at + width <= X1 + 1e-9 {
                        lanes[lane as usize].push((at, at + width));
                        placed = Some(Label { x: at, width, lane, text });
                        break 'search;
                    }
                }
            }
        }
        out.push(placed);
    }
    out
}

/// The first start at or after `x` where `width` fits between the `taken` intervals.
fn free_from(taken: &[(f64, f64)], x: f64, width: f64) -> Option<f64> {
    let mut at = x;
    for _ in 0..=taken.len() {
        match taken.iter().find(|(a, b)| at + width + LABEL_GAP > *a && at < b + LABEL_GAP) {
            Some((_, b)) => at = b + LABEL_GAP,
            None => return Some(at),
        }
    }
    None
}

/// `pod`, or its start and end around an ellipsis where it is wider than the margin
/// (a cluster's pod names differ at the end).
pub(super) fn short_name(pod: &str) -> String {
    if text_width(pod, NAME_SIZE) <= NAME_WIDTH {
        return pod.to_string();
    }
    let chars: Vec<char> = pod.chars().collect();
    let head: String = chars.iter().take(6).collect();
    let mut tail = chars.len();
    while tail > 6 {
        let candidate: String = chars[tail - 1..].iter().collect();
        if text_width(&format!("{head}…{candidate}"), NAME_SIZE) > NAME_WIDTH {
            break;
        }
        tail -= 1;
    }
    let rest: String = chars[tail..].iter().collect();
    format!("{head}…{rest}")
}

fn symbol(o: &mut String, shape: Shape, colour: &str, cx: f64, cy: f64, title: &str) {
    let (l, r, t, b) = (cx - 4.5, cx + 4.5, cy - 4.5, cy + 4.5);
    let halo = r#"stroke="white" stroke-width="0.8""#;
    let open = format!(r#"fill="white" stroke="{colour}" stroke-width="1.6""#);
    let body = match shape {
        Shape::Circle => format!(r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="4.2" fill="{colour}" {halo}>"#),
        Shape::Ring => format!(r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3.6" {open}>"#),
        Shape::Down => {
            format!(r#"<polygon points="{l:.1},{t:.1} {r:.1},{t:.1} {cx:.1},{b:.1}" fill="{colour}" {halo}>"#)
        }
        Shape::UpOpen => format!(r#"<polygon points="{l:.1},{b:.1} {r:.1},{b:.1} {cx:.1},{t:.1}" {open}>"#),
        Shape::Diamond => format!(
            r#"<polygon points="{cx:.1},{:.1} {:.1},{cy:.1} {cx:.1},{:.1} {:.1},{cy:.1}" fill="{colour}" {halo}>"#,
            cy - 5.5,
            cx + 4.5,
            cy + 5.5,
            cx - 4.5
        ),
        Shape::DiamondOpen => format!(
            r#"<polygon points="{cx:.1},{:.1} {:.1},{cy:.1} {cx:.1},{:.1} {:.1},{cy:.1}" {open}>"#,
            cy - 4.8,
            cx + 3.8,
            cy + 4.8,
            cx - 3.8
        ),
        Shape::Bar => {
            format!(r#"<rect x="{:.1}" y="{:.1}" width="3" height="13" fill="{colour}" {halo}>"#, cx - 1.5, cy - 6.5)
        }
        Shape::Cross => format!(
            r#"<path d="M{l:.1},{t:.1}L{r:.1},{b:.1}M{r:.1},{t:.1}L{l:.1},{b:.1}" stroke="{colour}" stroke-width="2.4">"#
        ),
        Shape::Square => {
            format!(r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{colour}" {halo}>"#, cx - 4.0, cy - 4.0)
        }
        Shape::SquareOpen => format!(r#"<rect x="{:.1}" y="{:.1}" width="7" height="7" {open}>"#, cx - 3.5, cy - 3.5),
        Shape::Star => {
            let pts: Vec<String> = (0..10)
                .map(|i| {
                    let a = std::f64::consts::PI * (f64::from(i) / 5.0 - 0.5);
                    let rad = if i % 2 == 0 { 5.5 } else { 2.4 };
                    format!("{:.1},{:.1}", cx + rad * a.cos(), cy + rad * a.sin())
                })
                .collect();
            format!(r##"<polygon points="{}" fill="{colour}" stroke="#8a6500" stroke-width="0.6">"##, pts.join(" "))
        }
    };
    let close = match shape {
        Shape::Circle | Shape::Ring => "</circle>",
        Shape::Bar | Shape::Square | Shape::SquareOpen => "</rect>",
        Shape::Cross => "</path>",
        _ => "</polygon>",
    };
    let _ = writeln!(o, "{body}<title>{}</title>{close}", esc(title));
}

/// Draws the rows from `top`; returns the strip's bottom.
pub(super) fn render(o: &mut String, rows: &[Row], f: &Frame, top: f64) -> f64 {
    let _ =
        writeln!(o, r##"<text x="20" y="{:.1}" font-size="10" font-weight="bold" fill="#444">pods</text>"##, top + 9.0);
    let mut y = top + 10.0;
    let mut last_app: Option<&str> = None;
    for (i, row) in rows.iter().take(MAX_ROWS).enumerate() {
        if last_app.is_some_and(|a| a != row.app) {
            let _ = writeln!(o, r##"<line x1="20" y1="{y:.1}" x2="{X1}" y2="{y:.1}" stroke="#999"/>"##);
        }
        last_app = Some(&row.app);
        let xs = symbol_xs(&row.marks.iter().map(|m| f.x(m.0)).collect::<Vec<_>>());
        // Symbols closer than a label's breathing room share one label.
        let mut groups: Vec<(f64, f64, Vec<&str>)> = Vec::new();
        for (x, m) in xs.iter().zip(&row.marks) {
            match groups.last_mut() {
                Some(g) if x - g.1 < SYM + 2.0 => {
                    g.1 = *x;
                    if !g.2.contains(&m.1.short()) {
                        g.2.push(m.1.short());
                    }
                }
                _ => groups.push((*x, *x, vec![m.1.short()])),
            }
        }
        let labels = place_labels(&groups);
        let two = labels.iter().flatten().any(|l| l.lane == 1);
        let h = if two { ROW_TWO_LANES } else { ROW };
        let bar_mid = y + 14.5;
        if i % 2 == 1 {
            let _ = writeln!(o, r##"<rect x="20" y="{y:.1}" width="{}" height="{h}" fill="#f6f6f6"/>"##, X1 - 20.0);
        }
        let name = short_name(&row.pod);
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="{NAME_SIZE}"><title>{} ({})</title>{}</text>"##,
            X0 - 8.0,
            bar_mid + 3.5,
            esc(&row.pod),
            esc(&row.app),
            esc(&name)
        );
        let _ = writeln!(
            o,
            r##"<line x1="{X0}" y1="{bar_mid:.1}" x2="{X1}" y2="{bar_mid:.1}" stroke="#bbb" stroke-width="0.6"/>"##
        );
        for (a, b, s) in &row.spans {
            let (xa, xb) = (f.x(*a), f.x(*b));
            let _ = writeln!(
                o,
                r#"<rect x="{xa:.1}" y="{:.1}" width="{:.1}" height="7" fill="{}"><title>{}: {} {a:.3}–{b:.3} s</title></rect>"#,
                bar_mid - 3.5,
                (xb - xa).max(1.0),
                s.fill(),
                esc(&row.pod),
                s.label()
            );
        }
        for (x, (t, m, detail)) in xs.iter().zip(&row.marks) {
            let (shape, colour) = m.style();
            symbol(o, shape, colour, *x, bar_mid, &format!("{} {} at {t:.3} s{detail}", row.pod, m.short()));
        }
        for l in labels.iter().flatten() {
            let ly = if l.lane == 0 { y + 7.5 } else { y + 28.0 };
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{ly:.1}" font-size="{LABEL_SIZE}" fill="#333">{}</text>"##,
                l.x,
                esc(&l.text)
            );
        }
        y += h;
    }
    if rows.len() > MAX_ROWS {
        let _ = writeln!(
            o,
            r##"<text x="{X0}" y="{:.1}" font-size="10" fill="#555">… and {} more pods with moments in this stretch</text>"##,
            y + 11.0,
            rows.len() - MAX_ROWS
        );
        y += 14.0;
    }
    if rows.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="{X0}" y="{:.1}" font-size="10" fill="#555">no pod event in this stretch</text>"##,
            y + 11.0
        );
        y += 14.0;
    }
    y + 2.0
}

/// The states and symbols present in `rows`, wrapped to the width; returns the bottom.
pub(super) fn legend(o: &mut String, rows: &[Row], top: f64) -> f64 {
    let shown = &rows[..rows.len().min(MAX_ROWS)];
    let (mut x, mut y) = (20.0, top);
    let room = |x: &mut f64, y: &mut f64, w: f64| {
        if *x + w > X1 + 10.0 {
            *x = 20.0;
            *y += 16.0;
        }
    };
    for s in State::ALL.iter().filter(|s| shown.iter().any(|r| r.spans.iter().any(|p| p.2 == **s))) {
        let w = 26.0 + text_width(s.label(), 10.0);
        room(&mut x, &mut y, w);
        let _ = writeln!(
            o,
            r#"<rect x="{x:.1}" y="{:.1}" width="18" height="7" fill="{}"/><text x="{:.1}" y="{y:.1}" font-size="10">{}</text>"#,
            y - 7.0,
            s.fill(),
            x + 22.0,
            esc(s.label())
        );
        x += w + 8.0;
    }
    for m in Mark::ALL.iter().filter(|m| shown.iter().any(|r| r.marks.iter().any(|k| k.1 == **m))) {
        let text = format!("{}: {}", m.short(), m.meaning());
        let w = 16.0 + text_width(&text, 10.0);
        room(&mut x, &mut y, w);
        let (shape, colour) = m.style();
        symbol(o, shape, colour, x + 5.0, y - 3.5, m.short());
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{y:.1}" font-size="10"><tspan font-weight="bold">{}</tspan>: {}</text>"#,
            x + 14.0,
            esc(m.short()),
            esc(m.meaning())
        );
        x += w + 10.0;
    }
    y
}
