//! charts/dereg.svg of `cargo xtask tune`: every terminated pod's deregistration
//! delay as a dot (pod side and the platform's table), with the p99, the tuned and
//! the too-short preStop marked.

use super::report::TuneReport;
use std::fmt::Write as _;

pub fn svg(r: &TuneReport) -> String {
    let m = &r.measured;
    let rec = &r.recommendation;
    let (w, x0, x1) = (900.0, 60.0, 860.0);
    let pod: Vec<f64> = m.terminations.iter().filter_map(|t| t.last_accept_ms.map(|v| v as f64)).collect();
    let plat: Vec<f64> = m.terminations.iter().filter_map(|t| t.platform_ms.map(|v| v as f64)).collect();
    let top = pod.iter().chain(&plat).copied().fold(rec.pre_stop_ms as f64, f64::max) * 1.1;
    let x = |v: f64| x0 + (x1 - x0) * (v / top).min(1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="260" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="260" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="20" font-size="14">{}: deregistration delay per terminated api pod (ms after termination began)</text>"#,
        r.run_id.replace(['<', '>', '&'], "")
    );
    for (i, (label, vals, colour)) in [("pod side", &pod, "#1f77b4"), ("platform", &plat, "#7f7f7f")].iter().enumerate()
    {
        let y = 70.0 + 50.0 * i as f64;
        let _ = writeln!(s, r#"<text x="4" y="{}">{label}</text>"#, y + 4.0);
        for (j, v) in vals.iter().enumerate() {
            let dy = ((j * 7) % 21) as f64 - 10.0;
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}" fill-opacity="0.7"/>"#,
                x(*v),
                y + dy
            );
        }
    }
    let mut marks = vec![
        ("too short", rec.too_short_pre_stop_ms as f64, "#d62728"),
        ("tuned preStop", rec.pre_stop_ms as f64, "#2ca02c"),
    ];
    if let Some(d) = m.dereg_ms {
        marks.push(("p99", d.p99, "#1f77b4"));
    }
    for (i, (label, v, colour)) in marks.iter().enumerate() {
        let xv = x(*v);
        let _ = writeln!(
            s,
            r#"<line x1="{xv:.1}" y1="40" x2="{xv:.1}" y2="200" stroke="{colour}" stroke-dasharray="4 3"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" fill="{colour}">{label} {v:.0}</text>"#,
            xv + 3.0,
            50.0 + 12.0 * i as f64
        );
    }
    let _ = writeln!(s, r#"<line x1="{x0}" y1="210" x2="{x1}" y2="210" stroke="black"/>"#);
    for k in 0..=5 {
        let v = top * k as f64 / 5.0;
        let _ = writeln!(s, r#"<text x="{:.1}" y="226" text-anchor="middle">{v:.0}</text>"#, x(v));
    }
    let _ =
        writeln!(s, r#"<text x="{x1}" y="250" text-anchor="end">folklore preStop: 15000 ms (off this scale)</text>"#);
    s += "</svg>\n";
    s
}
