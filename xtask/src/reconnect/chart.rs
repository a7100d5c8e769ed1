//! charts/reconnect.svg: the two variants side by side on the same scales. Per 100 ms
//! bucket from 2 s before the rollout trigger: reconnects (bars), failed requests
//! (red bars in front), and the total accept queue of the api pods (line, right axis).

use super::analysis::Bucket;
use std::fmt::Write as _;
use zerodrop_report::svg::esc;

const PANEL_W: f64 = 430.0;
const GAP: f64 = 40.0;
const LEFT: f64 = 50.0;
const TOP: f64 = 60.0;
const PLOT_H: f64 = 300.0;
const H: f64 = 430.0;

pub fn render(title: &str, variants: &[(&str, &[Bucket])]) -> String {
    let w = LEFT + variants.len() as f64 * (PANEL_W + GAP) + 20.0;
    let y_max =
        variants.iter().flat_map(|(_, b)| b.iter().map(|x| x.reconnects.max(x.failed))).max().unwrap_or(1).max(1);
    let q_max = variants.iter().flat_map(|(_, b)| b.iter().map(|x| x.accept_queue)).max().unwrap_or(1).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{H}" viewBox="0 0 {w} {H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{}</text>
<text x="{LEFT}" y="40" fill="#444">per 100 ms: reconnects (blue), failed requests (red); line: accept queue, all api pods (right axis, max {q_max})</text>
"##,
        esc(title)
    );
    for (i, (name, b)) in variants.iter().enumerate() {
        let x0 = LEFT + i as f64 * (PANEL_W + GAP);
        panel(&mut s, x0, name, b, y_max, q_max);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, x0: f64, name: &str, b: &[Bucket], y_max: u32, q_max: u32) {
    let bottom = TOP + PLOT_H;
    let n = b.len().max(1) as f64;
    let bw = PANEL_W / n;
    let y = |v: u32| bottom - PLOT_H * f64::from(v) / f64::from(y_max);
    let yq = |v: u32| bottom - PLOT_H * f64::from(v) / f64::from(q_max);
    let _ = writeln!(s, r##"<text x="{x0}" y="{}" font-size="13" font-weight="bold">{}</text>"##, TOP - 6.0, esc(name));
    let _ =
        writeln!(s, r##"<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PLOT_H}" fill="none" stroke="#999"/>"##);
    for (k, x) in b.iter().enumerate() {
        let bx = x0 + k as f64 * bw;
        if x.reconnects > 0 {
            let top = y(x.reconnects);
            let _ = writeln!(
                s,
                r##"<rect x="{bx:.1}" y="{top:.1}" width="{bw:.2}" height="{:.1}" fill="#1f77b4"/>"##,
                bottom - top
            );
        }
        if x.failed > 0 {
            let top = y(x.failed);
            let _ = writeln!(
                s,
                r##"<rect x="{bx:.1}" y="{top:.1}" width="{bw:.2}" height="{:.1}" fill="#d62728"/>"##,
                bottom - top
            );
        }
    }
    let pts: Vec<String> = b
        .iter()
        .enumerate()
        .map(|(k, x)| format!("{:.1},{:.1}", x0 + (k as f64 + 0.5) * bw, yq(x.accept_queue)))
        .collect();
    let _ = writeln!(s, r##"<polyline points="{}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>"##, pts.join(" "));
    // Axes: the left counts are the same in both panels.
    for frac in [0.0, 0.5, 1.0] {
        let v = (f64::from(y_max) * frac).round() as u32;
        let _ = writeln!(s, r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##, x0 - 4.0, y(v) + 4.0);
    }
    let first = b.first().map(|x| x.t_ms).unwrap_or(0);
    let last = b.last().map(|x| x.t_ms + 100).unwrap_or(0);
    let span = (last - first).max(1) as f64;
    let mut t = (first / 5000) * 5000;
    while t <= last {
        if t >= first {
            let x = x0 + PANEL_W * (t - first) as f64 / span;
            let _ =
                writeln!(s, r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#999"/>"##, bottom + 4.0);
            let _ =
                writeln!(s, r##"<text x="{x:.1}" y="{}" text-anchor="middle">{}s</text>"##, bottom + 16.0, t / 1000);
            if t == 0 {
                let _ = writeln!(
                    s,
                    r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#555" stroke-dasharray="3,3"/><text x="{:.1}" y="{}" fill="#555">rollout</text>"##,
                    x + 3.0,
                    TOP + 12.0
                );
            }
        }
        t += 5000;
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#444">seconds since the rollout trigger</text>"##,
        x0 + PANEL_W / 2.0,
        bottom + 32.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_panels_share_one_scale_and_the_svg_is_well_formed() {
        let spike = [Bucket { t_ms: 0, reconnects: 400, failed: 50, accept_queue: 128, ..Bucket::default() }];
        let flat = [Bucket { t_ms: 0, reconnects: 20, ..Bucket::default() }];
        let svg = render("t & t", &[("at-once", &spike), ("jittered", &flat)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &amp; t"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // 20 of 400 on the shared scale: 15 px of the 300 px plot.
        assert!(svg.contains(r##"height="15.0" fill="#1f77b4""##), "{svg}");
    }
}
