//! The canary report's *By client* section: both analyses of every step side by side
//! (`clients.rs` computes them), the clients on each side, and the time to detect.

use super::clients::{ClientSide, Judge, HEADER, MIN_REQUESTS};
use super::gates::fmt_p;
use super::model::CanaryReport;
use std::fmt::Write;

fn heaviest(s: &ClientSide) -> String {
    let rows: Vec<String> = s.heaviest.iter().map(|r| format!("c{} {}/{}", r.client, r.errors, r.requests)).collect();
    if rows.is_empty() {
        "–".into()
    } else {
        rows.join(", ")
    }
}

/// The report's section: both analyses of every step side by side, and the time to
/// detect.
pub fn markdown(o: &mut String, r: &CanaryReport) {
    let Some(c) = &r.settings.clients else { return };
    let _ = writeln!(
        o,
        "## By client
"
    );
    let _ = writeln!(
        o,
        "{} clients name themselves in `{HEADER}`, Zipf-like with s = {} (c0 the heaviest). The split is **{}**. \
         v1 carries `{}`; v2 carries `{}`. The error gate judged **by {}**; the other analysis is shown beside it. \
         By request: failures over requests of each side (HAProxy's counters). By client: the mean of the clients' \
         error rates (the apps' per-client counters; clients with at least {MIN_REQUESTS} requests on the side), \
         compared by a Welch z-test whose spread comes from the clients.\n",
        c.count,
        c.zipf_s,
        if c.sticky { "sticky (HAProxy hashes the client header)" } else { "random per request" },
        c.known_bug.as_deref().unwrap_or("none"),
        c.v2_regression(&r.settings.regression),
        match c.judge {
            Judge::Request => "request",
            Judge::Client => "client",
        },
    );
    let _ = writeln!(
        o,
        "| weight | v2 share of requests | by request: v1 | v2 | z | p | by client: v1 clients, mean | v2 clients, mean | z | p | v2's heaviest clients (failed/requests) | decision |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &r.steps {
        let Some(b) = &s.by_client else { continue };
        let all = s.stable.requests + s.canary.requests;
        // At 100% v1's side is its traffic over the earlier steps (the baseline), so a
        // share would compare different windows.
        let share = if s.weight_pct >= 100.0 {
            "all (v1: earlier steps)".to_string()
        } else if all == 0 {
            "–".to_string()
        } else {
            format!("{:.1}%", s.canary.requests as f64 * 100.0 / all as f64)
        };
        let _ = writeln!(
            o,
            "| {}% | {} | {}/{} | {}/{} | {:.2} | {} | {}, {:.2}% | {}, {:.2}% | {:.2} | {} | {} | **{}** |",
            s.weight_pct,
            share,
            s.stable.errors,
            s.stable.requests,
            s.canary.errors,
            s.canary.requests,
            s.z.z,
            fmt_p(s.z.p),
            b.stable.clients,
            b.stable.mean_rate * 100.0,
            b.canary.clients,
            b.canary.mean_rate * 100.0,
            b.z.z,
            fmt_p(b.z.p),
            heaviest(&b.canary),
            s.decision.as_str()
        );
    }
    let first = r.steps.first().map(|s| s.start_s).unwrap_or(0.0);
    match (&r.rollback, r.steps.last()) {
        (Some(rb), Some(last)) => {
            let _ = writeln!(
                o,
                "\n**Rolled back {:.1} s** after the first step began, at the {}% step (for a bad v2, the time to \
                 detect).\n",
                rb.breach_s - first,
                last.weight_pct
            );
        }
        _ => {
            let _ = writeln!(o, "\n**Not rolled back:** every step passed and v2 was promoted.\n");
        }
    }
}
