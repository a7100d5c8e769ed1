//! charts/<stage>.svg: a hand-written timeline of one stage's load run. Three panels
//! share the x axis (seconds since the load started): requests per second (ok line,
//! errors stacked by class), p99 latency (log scale), ready api endpoints.

use super::model::{PodEventKind, StageRun};
use super::summary::StageSummary;
use std::fmt::Write as _;
use zerodrop_load::Class;

const W: f64 = 900.0;
const H: f64 = 520.0;
const X0: f64 = 64.0;
const X1: f64 = 880.0;
/// (top, bottom) of each panel.
const REQ: (f64, f64) = (58.0, 284.0);
const LAT: (f64, f64) = (298.0, 376.0);
const EPS: (f64, f64) = (390.0, 446.0);

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

struct Frame {
    t_max: f64,
}

impl Frame {
    fn x(&self, t_s: f64) -> f64 {
        X0 + (t_s.clamp(0.0, self.t_max) / self.t_max) * (X1 - X0)
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
    let f = Frame { t_max };
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{X0}" y="22" font-size="15" font-weight="bold">{} — {:.2}% failed during the roll, p99 {:.0} ms</text>"#,
        esc(&s.name),
        s.error_rate_pct(),
        s.roll.latency_ms.p99
    );
    windows(&mut o, run, &f);
    requests_panel(&mut o, s, &f);
    latency_panel(&mut o, s, &f);
    endpoints_panel(&mut o, run, &f);
    x_axis(&mut o, &f);
    markers(&mut o, run, &f);
    legend(&mut o, s);
    o.push_str("</svg>\n");
    o
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

fn panel_frame(o: &mut String, panel: (f64, f64), label: &str) {
    let _ = writeln!(
        o,
        r##"<rect x="{X0}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        panel.0,
        X1 - X0,
        panel.1 - panel.0
    );
    let mid = (panel.0 + panel.1) / 2.0;
    let _ = writeln!(
        o,
        r#"<text x="14" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 14 {mid:.1})">{}</text>"#,
        esc(label)
    );
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
    for d in 0..=decades as i32 {
        let v = 10f64.powi(d);
        y_tick(o, y(v), &num(v));
    }
    panel_frame(o, LAT, "p99 ms (log)");
    let pts: Vec<String> = s
        .timeline
        .iter()
        .filter(|x| x.sent > 0)
        .map(|x| format!("{:.1},{:.1}", f.x(f64::from(x.t) + 0.5), y(x.p99_ms)))
        .collect();
    let _ =
        writeln!(o, r#"<polyline points="{}" fill="none" stroke="{P99_COLOUR}" stroke-width="1.5"/>"#, pts.join(" "));
}

fn endpoints_panel(o: &mut String, run: &StageRun, f: &Frame) {
    let peak = run.endpoints.iter().map(|e| e.ready).max().unwrap_or(0).max(run.desired_endpoints).max(1);
    let max = f64::from(peak);
    y_tick(o, lin(EPS, max, 0.0), "0");
    y_tick(o, lin(EPS, max, max), &peak.to_string());
    panel_frame(o, EPS, "ready api");
    let dy = lin(EPS, max, f64::from(run.desired_endpoints));
    let _ = writeln!(
        o,
        r##"<line x1="{X0}" y1="{dy:.1}" x2="{X1}" y2="{dy:.1}" stroke="#555" stroke-dasharray="2,3"><title>desired {}</title></line>"##,
        run.desired_endpoints
    );
    let mut samples = run.endpoints.clone();
    samples.sort_by_key(|e| e.t_ms);
    let Some(first) = samples.iter().rev().find(|e| e.t_ms <= 0).or(samples.first()).copied() else {
        return;
    };
    let mut pts =
        vec![format!("{:.1},{:.1}", f.x(first.t_ms.max(0) as f64 / 1000.0), lin(EPS, max, f64::from(first.ready)))];
    let mut cur = first.ready;
    for e in samples.iter().filter(|e| e.t_ms > first.t_ms.max(0)) {
        let x = f.x(e.t_ms as f64 / 1000.0);
        pts.push(format!("{x:.1},{:.1}", lin(EPS, max, f64::from(cur))));
        pts.push(format!("{x:.1},{:.1}", lin(EPS, max, f64::from(e.ready))));
        cur = e.ready;
    }
    pts.push(format!("{X1:.1},{:.1}", lin(EPS, max, f64::from(cur))));
    let _ = writeln!(o, r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="2"/>"##, pts.join(" "));
}

fn x_axis(o: &mut String, f: &Frame) {
    let (_, step) = nice(f.t_max * 5.0 / 10.0);
    let mut t = 0.0;
    while t <= f.t_max + 1e-9 {
        let x = f.x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#999"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            EPS.1,
            EPS.1 + 4.0,
            EPS.1 + 16.0,
            num(t)
        );
        t += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">seconds since the load started</text>"#,
        (X0 + X1) / 2.0,
        EPS.1 + 32.0
    );
}

fn marker_style(kind: PodEventKind) -> Option<(&'static str, &'static str)> {
    match kind {
        PodEventKind::Sigterm => Some(("#d62728", "sigterm")),
        PodEventKind::Sigkill => Some(("#000000", "SIGKILL")),
        PodEventKind::Exited => Some(("#7f7f7f", "exit")),
        PodEventKind::Ready => Some(("#2ca02c", "ready")),
        _ => None,
    }
}

fn markers(o: &mut String, run: &StageRun, f: &Frame) {
    let mut ms: Vec<(f64, &str, String)> = run
        .events
        .iter()
        .filter(|e| e.t_ms >= 0 && (e.t_ms as f64 / 1000.0) <= f.t_max)
        .filter_map(|e| marker_style(e.kind).map(|(c, l)| (f.x(e.t_ms as f64 / 1000.0), c, format!("{l} {}", e.pod))))
        .collect();
    ms.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (x, colour, label) in &ms {
        let _ = writeln!(
            o,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{colour}" stroke-dasharray="4,3" stroke-width="1"><title>{}</title></line>"#,
            REQ.0,
            EPS.1,
            esc(label)
        );
    }
    // One label per cluster of markers closer than 11 px.
    let mut i = 0;
    while i < ms.len() {
        let mut j = i + 1;
        while j < ms.len() && ms[j].0 - ms[i].0 < 11.0 {
            j += 1;
        }
        let text: Vec<&str> = ms[i..j].iter().map(|m| m.2.as_str()).collect();
        let text = super::evidence::truncate(&text.join(", "), 44);
        let (x, y) = (ms[i].0 + 3.5, REQ.0 + 4.0);
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{y}" font-size="9" fill="{}" text-anchor="end" transform="rotate(-90 {x:.1} {y})">{}</text>"#,
            ms[i].1,
            esc(&text)
        );
        i = j;
    }
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
    let mut x = X0;
    for (shape, label, colour) in &items {
        legend_item(o, &mut x, 42.0, shape, label, colour);
    }
    let mut x = X0;
    for (shape, label, colour) in [
        ("shade", "steady window", "#1f77b4"),
        ("shade", "roll window", "#ff7f0e"),
        ("dash", "sigterm", "#d62728"),
        ("dash", "SIGKILL", "#000000"),
        ("dash", "exit", "#7f7f7f"),
        ("dash", "ready", "#2ca02c"),
        ("dot", "desired endpoints", "#555"),
    ] {
        legend_item(o, &mut x, 508.0, shape, label, colour);
    }
}

fn legend_item(o: &mut String, x: &mut f64, y: f64, shape: &str, label: &str, colour: &str) {
    let sym = match shape {
        "box" => format!(r#"<rect x="{:.1}" y="{}" width="10" height="10" fill="{colour}"/>"#, *x, y - 9.0),
        "shade" => format!(
            r#"<rect x="{:.1}" y="{}" width="14" height="10" fill="{colour}" fill-opacity="0.25"/>"#,
            *x,
            y - 9.0
        ),
        "dash" => format!(
            r#"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="{colour}" stroke-dasharray="3,2"/>"#,
            *x + 5.0,
            y - 10.0,
            y + 1.0
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
    *x += 26.0 + 6.5 * label.chars().count() as f64;
}
