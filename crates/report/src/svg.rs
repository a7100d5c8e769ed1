//! charts/<stage>.svg: a hand-written timeline of one stage's load run, in two parts.
//!
//! The whole run (top): three panels share the x axis (seconds since the load
//! started): requests per second (ok line, errors stacked by class), p99 latency (log
//! scale), ready api endpoints. A box marks the deploy burst.
//!
//! The deploy burst, zoomed (below, `zoom.rs`): requests per bucket stacked by cause
//! (failed causes solid, slow ones hatched, ok faint), the ready endpoints as a step
//! line, and one row per pod (`strip.rs`) with its state and its lifecycle moments.

mod strip;
#[cfg(test)]
mod tests;
mod zoom;

use super::model::StageRun;
use super::summary::StageSummary;
use std::fmt::Write as _;
use zerodrop_load::Class;

const W: f64 = 900.0;
/// Left edge of every plot: room for the pod names of the strip.
const X0: f64 = 124.0;
const X1: f64 = 880.0;
/// (top, bottom) of each panel of the whole-run part.
const REQ: (f64, f64) = (62.0, 176.0);
const LAT: (f64, f64) = (186.0, 234.0);
const EPS: (f64, f64) = (248.0, 280.0);
/// Where the zoomed part starts.
const ZOOM_TOP: f64 = 342.0;

const OK_COLOUR: &str = "#2ca02c";
const P99_COLOUR: &str = "#1f77b4";

pub fn class_colour(c: Class) -> &'static str {
    match c {
        Class::Ok => OK_COLOUR,
        Class::Refused => "#d62728",
        Class::Reset => "#ff7f0e",
        Class::Timeout => "#8c564b",
        Class::Http502 => "#9467bd",
        Class::Http503 => "#e377c2",
        Class::Http504 => "#7f7f7f",
        Class::Http500 => "#bcbd22",
        Class::Http4xx => "#393b79",
        Class::Other => "#17becf",
    }
}

/// Escapes text for SVG/XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A round axis maximum and its tick step (1, 2 or 5 × 10^k, at most ~5 ticks).
fn nice(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 1.0);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let step = if max >= 1.0 { step.max(1.0) } else { step };
    ((max / step).ceil() * step, step)
}

/// A tick label: integers without decimals.
fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Maps seconds since the load started, `[t0, t1]`, onto `[X0, X1]`.
struct Frame {
    t0: f64,
    t1: f64,
}

impl Frame {
    fn x(&self, t_s: f64) -> f64 {
        X0 + ((t_s.clamp(self.t0, self.t1) - self.t0) / (self.t1 - self.t0)) * (X1 - X0)
    }
}

fn lin(panel: (f64, f64), max: f64, v: f64) -> f64 {
    panel.1 - (v.clamp(0.0, max) / max) * (panel.1 - panel.0)
}

pub fn render(run: &StageRun, s: &StageSummary) -> String {
    let tl = &s.timeline;
    let t_max = [
        tl.iter().map(|x| f64::from(x.t) + 1.0).fold(0.0, f64::max),
        run.roll.to_us as f64 / 1e6,
        run.steady.to_us as f64 / 1e6,
        run.load.profile.duration.as_secs_f64(),
    ]
    .into_iter()
    .fold(1.0, f64::max);
    let f = Frame { t0: 0.0, t1: t_max };
    let z = zoom::Zoom::of(run, s);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<text x="20" y="24" font-size="15" font-weight="bold">{} — {:.2}% failed during the roll, p99 {:.0} ms</text>"#,
        esc(&s.name),
        s.error_rate_pct(),
        s.roll.latency_ms.p99
    );
    windows(&mut o, run, &f);
    requests_panel(&mut o, s, &f);
    latency_panel(&mut o, s, &f);
    endpoints_panel(&mut o, run, &f, EPS);
    x_axis(&mut o, &f, EPS.1, None);
    zoom_box(&mut o, &f, &z);
    legend(&mut o, s);
    let bottom = zoom::render(&mut o, run, s, &z, ZOOM_TOP);
    let h = (bottom + 12.0).ceil();
    let mut svg = String::with_capacity(o.len() + 600);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, "<defs>{}{}</defs>", zoom::defs(), strip::defs());
    let _ = writeln!(svg, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    svg.push_str(&o);
    svg.push_str("</svg>\n");
    svg
}

fn windows(o: &mut String, run: &StageRun, f: &Frame) {
    for (w, colour, opacity) in [(run.steady, "#1f77b4", 0.08), (run.roll, "#ff7f0e", 0.14)] {
        let (a, b) = (f.x(w.from_us as f64 / 1e6), f.x(w.to_us as f64 / 1e6));
        if b > a {
            let _ = writeln!(
                o,
                r#"<rect x="{a:.1}" y="{}" width="{:.1}" height="{}" fill="{colour}" fill-opacity="{opacity}"/>"#,
                REQ.0,
                b - a,
                EPS.1 - REQ.0
            );
        }
    }
}

/// Outlines the zoomed stretch on the whole-run panels and joins it to the zoomed
/// part below.
fn zoom_box(o: &mut String, f: &Frame, z: &zoom::Zoom) {
    let (a, b) = (f.x(z.start_s()), f.x(z.end_s()));
    let b = b.max(a + 2.0);
    let _ = writeln!(
        o,
        r##"<rect x="{a:.1}" y="{}" width="{:.1}" height="{}" fill="#000" fill-opacity="0.04" stroke="#333" stroke-width="1.2"/>"##,
        REQ.0 - 3.0,
        b - a,
        EPS.1 - REQ.0 + 6.0
    );
    // Down from the box past the axis caption, then out to the zoomed part's edges.
    let (below, bend) = (EPS.1 + 3.0, EPS.1 + 34.0);
    for (from, to) in [(a, X0), (b, X1)] {
        let _ = writeln!(
            o,
            r##"<polyline points="{from:.1},{below:.1} {from:.1},{bend:.1} {to:.1},{:.1}" fill="none" stroke="#999" stroke-dasharray="3,3"/>"##,
            ZOOM_TOP - 6.0
        );
    }
}

fn panel_frame(o: &mut String, panel: (f64, f64), label: &str) {
    let _ = writeln!(
        o,
        r##"<rect x="{X0}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        panel.0,
        X1 - X0,
        panel.1 - panel.0
    );
    // Horizontal, left of the tick labels: one line per `\n`.
    let lines: Vec<&str> = label.split('\n').collect();
    let top = (panel.0 + panel.1) / 2.0 + 3.5 - 6.0 * (lines.len() - 1) as f64;
    for (i, l) in lines.iter().enumerate() {
        let _ = writeln!(
            o,
            r##"<text x="20" y="{:.1}" font-size="10" fill="#333">{}</text>"##,
            top + 12.0 * i as f64,
            esc(l)
        );
    }
}

fn y_tick(o: &mut String, y: f64, label: &str) {
    let _ = writeln!(
        o,
        r##"<line x1="{}" y1="{y:.1}" x2="{X1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
        X0,
        X0 - 4.0,
        y + 4.0,
        esc(label)
    );
}

fn requests_panel(o: &mut String, s: &StageSummary, f: &Frame) {
    let peak = s.timeline.iter().map(|x| x.ok.max(x.errors.values().sum()) as f64).fold(0.0, f64::max);
    let (max, step) = nice(peak);
    let mut v = 0.0;
    while v <= max + 1e-9 {
        y_tick(o, lin(REQ, max, v), &num(v));
        v += step;
    }
    panel_frame(o, REQ, "requests / s");
    let bar = (f.x(1.0) - f.x(0.0)) * 0.8;
    for sec in &s.timeline {
        let mut base = 0.0;
        for c in Class::FAILURES.iter().copied().chain([Class::Http4xx]) {
            let n = s_err(sec, c);
            if n == 0 {
                continue;
            }
            let (top, bottom) = (lin(REQ, max, base + n as f64), lin(REQ, max, base));
            let _ = writeln!(
                o,
                r#"<rect x="{:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}" fill="{}"><title>{}s {}: {n}</title></rect>"#,
                f.x(f64::from(sec.t) + 0.1),
                (bottom - top).max(0.5),
                class_colour(c),
                sec.t,
                c.key()
            );
            base += n as f64;
        }
    }
    let pts: Vec<String> = s
        .timeline
        .iter()
        .map(|x| format!("{:.1},{:.1}", f.x(f64::from(x.t) + 0.5), lin(REQ, max, x.ok as f64)))
        .collect();
    let _ = writeln!(o, r#"<polyline points="{}" fill="none" stroke="{OK_COLOUR}" stroke-width="2"/>"#, pts.join(" "));
}

fn s_err(sec: &zerodrop_load::Second, c: Class) -> u64 {
    sec.errors.get(c.key()).copied().unwrap_or(0)
}

fn latency_panel(o: &mut String, s: &StageSummary, f: &Frame) {
    let peak = s.timeline.iter().map(|x| x.p99_ms).fold(1.0, f64::max);
    let decades = peak.log10().ceil().max(1.0);
    let y = |v: f64| LAT.1 - (v.max(1.0).log10() / decades) * (LAT.1 - LAT.0);
    // Every decade when they fit, else every other one (the panel is short).
    let every = if decades > 3.0 { 2 } else { 1 };
    for d in (0..=decades as i32).filter(|d| d % every == 0 || *d == decades as i32) {
        let v = 10f64.powi(d);
        y_tick(o, y(v), &num(v));
    }
    panel_frame(o, LAT, "p99 ms\n(log scale)");
    let pts: Vec<String> = s
        .timeline
        .iter()
        .filter(|x| x.sent > 0)
        .map(|x| format!("{:.1},{:.1}", f.x(f64::from(x.t) + 0.5), y(x.p99_ms)))
        .collect();
    let _ =
        writeln!(o, r#"<polyline points="{}" fill="none" stroke="{P99_COLOUR}" stroke-width="1.5"/>"#, pts.join(" "));
}

/// Ready api endpoints as a step line over `f`'s span, with the desired count dotted.
fn endpoints_panel(o: &mut String, run: &StageRun, f: &Frame, panel: (f64, f64)) {
    let peak = run.endpoints.iter().map(|e| e.ready).max().unwrap_or(0).max(run.desired_endpoints).max(1);
    let max = f64::from(peak);
    y_tick(o, lin(panel, max, 0.0), "0");
    y_tick(o, lin(panel, max, max), &peak.to_string());
    panel_frame(o, panel, "ready api\nendpoints");
    let dy = lin(panel, max, f64::from(run.desired_endpoints));
    let _ = writeln!(
        o,
        r##"<line x1="{X0}" y1="{dy:.1}" x2="{X1}" y2="{dy:.1}" stroke="#555" stroke-dasharray="2,3"><title>desired {}</title></line>"##,
        run.desired_endpoints
    );
    let mut samples = run.endpoints.clone();
    samples.sort_by_key(|e| e.t_ms);
    let t0_ms = (f.t0 * 1000.0).floor() as i64;
    let Some(first) = samples.iter().rev().find(|e| e.t_ms <= t0_ms).or(samples.first()).copied() else {
        return;
    };
    let start = first.t_ms.max(t0_ms);
    let mut pts = vec![format!("{:.1},{:.1}", f.x(start as f64 / 1000.0), lin(panel, max, f64::from(first.ready)))];
    let mut cur = first.ready;
    for e in samples.iter().filter(|e| e.t_ms > start && e.t_ms as f64 / 1000.0 <= f.t1) {
        let x = f.x(e.t_ms as f64 / 1000.0);
        pts.push(format!("{x:.1},{:.1}", lin(panel, max, f64::from(cur))));
        pts.push(format!("{x:.1},{:.1}", lin(panel, max, f64::from(e.ready))));
        cur = e.ready;
    }
    pts.push(format!("{X1:.1},{:.1}", lin(panel, max, f64::from(cur))));
    let _ = writeln!(o, r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="2"/>"##, pts.join(" "));
}

/// Round ticks over `f`'s span, about ten of them.
fn ticks(f: &Frame) -> (Vec<f64>, usize) {
    let (_, step) = nice((f.t1 - f.t0) / 2.0);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let mut t = ((f.t0 / step - 1e-9).ceil() * step).max(f.t0);
    let mut out = Vec::new();
    while t <= f.t1 + 1e-9 {
        out.push(t + 0.0);
        t += step;
    }
    (out, decimals)
}

/// The time axis under `y`; with `grid`, light vertical lines over `(top, bottom)`.
fn x_axis(o: &mut String, f: &Frame, y: f64, grid: Option<(f64, f64)>) {
    let (ts, decimals) = ticks(f);
    for t in ts {
        let x = f.x(t);
        if let Some((top, bottom)) = grid {
            let _ = writeln!(o, r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ececec"/>"##);
        }
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{t:.decimals$}</text>"##,
            y + 4.0,
            y + 15.0,
        );
    }
    let _ = writeln!(
        o,
        r##"<text x="{X1}" y="{:.1}" text-anchor="end" fill="#555">seconds since the load started</text>"##,
        y + 28.0
    );
}

fn legend(o: &mut String, s: &StageSummary) {
    let mut items: Vec<(&str, String, &str)> = vec![("line", "ok".into(), OK_COLOUR)];
    for c in Class::FAILURES.iter().copied().chain([Class::Http4xx]) {
        if s.timeline.iter().any(|x| s_err(x, c) > 0) {
            items.push(("box", c.key().into(), class_colour(c)));
        }
    }
    if items.len() == 1 {
        items.push(("none", "no errors".into(), "#555"));
    }
    items.push(("line", "p99".into(), P99_COLOUR));
    items.push(("shade", "steady window".into(), "#1f77b4"));
    items.push(("shade", "roll window".into(), "#ff7f0e"));
    items.push(("frame", "zoomed below".into(), "#333"));
    let mut x = 20.0;
    for (shape, label, colour) in &items {
        legend_item(o, &mut x, 46.0, shape, label, colour);
    }
}

/// A legend entry at `x` (advanced past it): a symbol then its label.
fn legend_item(o: &mut String, x: &mut f64, y: f64, shape: &str, label: &str, colour: &str) {
    let sym = match shape {
        "box" => format!(r#"<rect x="{:.1}" y="{}" width="10" height="10" fill="{colour}"/>"#, *x, y - 9.0),
        "shade" => format!(
            r#"<rect x="{:.1}" y="{}" width="14" height="10" fill="{colour}" fill-opacity="0.25"/>"#,
            *x,
            y - 9.0
        ),
        "frame" => format!(
            r#"<rect x="{:.1}" y="{}" width="14" height="10" fill="none" stroke="{colour}" stroke-width="1.2"/>"#,
            *x,
            y - 9.0
        ),
        "dot" => format!(
            r#"<line x1="{:.1}" y1="{2}" x2="{:.1}" y2="{2}" stroke="{colour}" stroke-dasharray="2,3"/>"#,
            *x,
            *x + 14.0,
            y - 4.0
        ),
        "line" => format!(
            r#"<line x1="{:.1}" y1="{2}" x2="{:.1}" y2="{2}" stroke="{colour}" stroke-width="2"/>"#,
            *x,
            *x + 14.0,
            y - 4.0
        ),
        _ => String::new(),
    };
    o.push_str(&sym);
    let _ = writeln!(o, r#"<text x="{:.1}" y="{y}">{}</text>"#, *x + 18.0, esc(label));
    *x += 26.0 + text_width(label, 11.0);
}

/// A generous estimate of `s`'s rendered width in a sans-serif font of `size` px
/// (DejaVu Sans, the widest of the usual defaults; narrower fonts leave more room).
fn text_width(s: &str, size: f64) -> f64 {
    s.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '|' | '\'' | ' ' | '!' => 0.32,
            't' | 'f' | 'r' | '(' | ')' | '-' | 'I' => 0.42,
            'm' | 'w' | 'M' | 'W' | '%' | '…' | '—' => 0.95,
            'A'..='Z' => 0.74,
            _ => 0.63,
        })
        .sum::<f64>()
        * size
}
