//! The chart on stage runs shaped like recorded ones (the default profile: 300 req/s,
//! 85 s of load, a 35 s deploy window, three api and three worker pods replaced one at
//! a time), checked by a strict XML well-formedness reader.

use super::strip::{place_labels, symbol_xs};
use super::zoom::{buckets, Zoom};
use crate::model::*;
use crate::summary::StageSummary;
use serde_json::json;
use zerodrop_load::{Class, Kind, Profile, Record, RunResult};
use zerodrop_stages::{Stage, StageName};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// No SIGTERM handler, no init: SIGTERM is ignored, SIGKILL 12 s later.
    Naive,
    /// A real init forwards SIGTERM; the app, without a handler, dies at once while
    /// the Service still routes to it for ~2 s.
    Pid1,
    /// preStop waits for the Service, the app drains, closes and exits in order; new
    /// pods warm before they report ready.
    Graceful,
}

const RATE: u64 = 300;
const SECONDS: u64 = 85;
/// The rollout trigger.
const T: i64 = 40_002;

struct Pod {
    name: String,
    created: i64,
    ready: i64,
    /// The Service starts routing to it (the endpoint change takes a while to apply).
    added: i64,
    warm: i64,
    removed: i64,
    /// Stopped accepting connections (exit, SIGKILL or listener close).
    stopped: i64,
    /// Its process ended: what is in flight is cut, unless it drained.
    ended: i64,
    sigterm: i64,
    drains: bool,
}

/// A stage run of `shape`, with the events, lifecycle lines, endpoint samples and
/// per-request records both platforms record.
fn rollout(shape: Shape) -> StageRun {
    let mut events = Vec::new();
    let mut logs = Vec::new();
    let ev = |t_ms, pod: &str, app: &str, kind, detail: &str| PodEvent {
        t_ms,
        pod: pod.into(),
        app: app.into(),
        kind,
        detail: detail.into(),
    };
    let line = |t_ms: i64, pod: &str, app: &str, step: &str| LogLine {
        t_ms,
        timestamp: format!("t+{t_ms}"),
        pod: pod.into(),
        app: app.into(),
        step: step.into(),
        fields: json!({}),
    };
    let mut api: Vec<Pod> = Vec::new();
    let never = i64::MAX;
    for (k, app) in [(1, "api"), (2, "api"), (3, "api"), (4, "worker"), (5, "worker"), (6, "worker")] {
        let name = format!("{app}-r1-{k}");
        events.push(ev(-2659 + k, &name, app, PodEventKind::Created, "127.77.2.2:8080"));
        events.push(ev(-2157 + k, &name, app, PodEventKind::Ready, "readiness probe passed"));
        if app == "api" {
            logs.push(line(-2000 + k, &name, app, "cache_warm"));
        }
    }
    for k in 0..3i64 {
        for (app, old, new, lag) in [("api", k + 1, 7 + 2 * k, 0), ("worker", k + 4, 8 + 2 * k, 12)] {
            let t = T + k * 520 + lag;
            let (old, new) = (format!("{app}-r1-{old}"), format!("{app}-r2-{new}"));
            let pre_stop = if shape == Shape::Graceful { 1500 } else { 0 };
            let sigterm = t + pre_stop;
            events.push(ev(t, &old, app, PodEventKind::Terminating, &format!("preStop {pre_stop} ms, grace 12000 ms")));
            events.push(ev(sigterm, &old, app, PodEventKind::Sigterm, "SIGTERM to PID 1"));
            let removed = t + if shape == Shape::Graceful { 1200 } else { 2050 + 40 * k };
            let (stopped, ended) = match shape {
                Shape::Naive => {
                    events.push(ev(sigterm + 12_000, &old, app, PodEventKind::Sigkill, "killed by signal 9"));
                    (sigterm + 12_000, sigterm + 12_001)
                }
                Shape::Pid1 => {
                    logs.push(line(sigterm + 2, &old, app, "signal_forwarded"));
                    logs.push(line(sigterm + 5, &old, app, "app_exited"));
                    (sigterm + 9, sigterm + 9)
                }
                Shape::Graceful => {
                    logs.push(line(sigterm + 1, &old, app, "sigterm_received"));
                    logs.push(line(sigterm + 2, &old, app, "readiness_failing"));
                    logs.push(line(sigterm + 600, &old, app, "listener_closed"));
                    logs.push(line(sigterm + 700, &old, app, "drain_complete"));
                    (sigterm + 600, sigterm + 750)
                }
            };
            events.push(ev(ended, &old, app, PodEventKind::Exited, "exit code 143"));
            if app == "api" {
                events.push(ev(removed, &old, app, PodEventKind::EndpointRemoved, "no longer routed"));
            }
            let created = t + 10;
            let ready = created + 500;
            events.push(ev(created, &new, app, PodEventKind::Created, "127.77.2.8:8080"));
            events.push(ev(ready, &new, app, PodEventKind::Ready, "readiness probe passed"));
            let warm = if shape == Shape::Graceful { ready - 50 } else { ready + 2500 };
            if app == "api" {
                logs.push(line(warm, &new, app, if shape == Shape::Graceful { "warmed" } else { "cache_warm" }));
                let i = api.len() as i64;
                api.push(Pod {
                    name: old,
                    created: -2659 + i,
                    ready: -2157 + i,
                    added: -2157 + i,
                    warm: -2000 + i,
                    removed,
                    stopped,
                    ended,
                    sigterm,
                    drains: shape == Shape::Graceful,
                });
                api.push(Pod {
                    name: new,
                    created,
                    ready,
                    added: ready + 2_000 + 40 * k,
                    warm,
                    removed: never,
                    stopped: never,
                    ended: never,
                    sigterm: never,
                    drains: true,
                });
            }
        }
    }
    let routed = |p: &Pod, t: i64| p.added <= t && t < p.removed;
    // Ready endpoints, one sample per change.
    let mut changes: Vec<i64> = api.iter().flat_map(|p| [p.added, p.removed]).filter(|t| *t != never).collect();
    changes.sort_unstable();
    let mut endpoints = vec![EndpointSample { t_ms: -38, ready: 3 }];
    for t in changes.into_iter().filter(|t| *t > 0) {
        let ready = api.iter().filter(|p| routed(p, t)).count() as u32;
        if endpoints.last().is_some_and(|e| e.ready != ready) {
            endpoints.push(EndpointSample { t_ms: t, ready });
        }
    }
    let mut records = Vec::new();
    for k in 0..RATE * SECONDS {
        let at_us = k * 1_000_000 / RATE;
        let t = (at_us / 1000) as i64;
        let jitter = (k * 7919 % 30) * 100;
        let (kind, base_us) = match k % 20 {
            0..=15 => (Kind::Fast, 4_000 + jitter),
            16..=18 => (Kind::Slow, 400_000 + jitter),
            _ => (Kind::Job, 15_000 + jitter),
        };
        // Every sixth request rides a kept-alive connection, which outlives the
        // endpoint's removal until the pod stops listening.
        let kept_alive = k % 6 == 0;
        let candidates: Vec<usize> = (0..api.len())
            .filter(|&i| routed(&api[i], t) || (kept_alive && api[i].ready <= t && t < api[i].stopped))
            .collect();
        let mut rec = Record::new(at_us, base_us, Class::Ok, kind);
        if candidates.is_empty() {
            rec.class = Class::Refused;
            rec.latency_us = 1_000;
        } else {
            let i = candidates[(k / 6) as usize % candidates.len()];
            let p = &api[i];
            let end = t + (base_us / 1000) as i64;
            if p.stopped <= t {
                rec.class = Class::Refused;
                rec.latency_us = 800;
            } else if !p.drains && p.ended > t && p.ended < end {
                rec.class = Class::Reset;
                rec.latency_us = (p.ended - t) as u64 * 1000;
            } else if p.drains && p.sigterm <= t && t < p.removed.max(p.stopped) {
                rec.class = Class::Http503;
                rec.latency_us = 2_000;
                rec.pod = Some(i as u16);
            } else if t < p.warm && p.created <= t {
                rec.pod = Some(i as u16);
                if k % 5 == 0 {
                    rec.class = Class::Http503;
                    rec.latency_us = 1_500;
                } else {
                    rec.latency_us = base_us * (3 + k % 3);
                }
            } else {
                rec.pod = Some(i as u16);
                if k % 997 == 0 {
                    rec.latency_us = base_us * 10;
                }
            }
        }
        records.push(rec);
    }
    let name = match shape {
        Shape::Naive => StageName::Naive,
        Shape::Pid1 => StageName::Pid1,
        Shape::Graceful => StageName::ReadinessPrestop,
    };
    events.sort_by_key(|e| e.t_ms);
    logs.sort_by_key(|l| l.t_ms);
    StageRun {
        stage: Stage::get(name),
        repeat: 0,
        load: RunResult {
            started_unix_ms: 1_796_077_827_053,
            profile: Profile {
                duration: std::time::Duration::from_secs(SECONDS),
                rate_per_sec: RATE as u32,
                ..Profile::default()
            },
            records,
            accepted_jobs: vec![],
            late_sends: 0,
            connections_opened: 107,
            pods: api.iter().map(|p| p.name.clone()).collect(),
            mirrored: vec![],
            mirrored_accepted_jobs: vec![],
        },
        steady: Window { from_us: 10_000_000, to_us: 39_002_000 },
        roll: Window { from_us: 39_002_000, to_us: 74_002_000 },
        rollout_seconds: 1.55,
        endpoints,
        desired_endpoints: 3,
        events,
        logs,
        jobs: Jobs { accepted: 977, applied_rows: 977, settled: true, ..Jobs::default() },
        pod_logs_dir: "logs/x".into(),
        third_party: None,
    }
}

/// A strict reader of the XML subset an SVG uses: one root element, balanced and
/// properly nested tags, quoted attributes without duplicates, only the predefined
/// and numeric entities, no stray `<` or `&`. Returns the number of elements.
fn well_formed(doc: &str) -> Result<usize, String> {
    fn entities(s: &str, at: usize) -> Result<(), String> {
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            let tail = &rest[i + 1..];
            let end = tail.find(';').ok_or(format!("unterminated entity at {at}"))?;
            let name = &tail[..end];
            let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                || name.strip_prefix("#x").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                || name.strip_prefix('#').is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(format!("bad entity &{name}; near {at}"));
            }
            rest = &tail[end + 1..];
        }
        Ok(())
    }
    let name_ok =
        |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut elements = 0;
    let mut i = 0;
    while i < doc.len() {
        let rest = &doc[i..];
        let Some(lt) = rest.find('<') else {
            if !rest.trim().is_empty() && stack.is_empty() {
                return Err("text after the root".into());
            }
            entities(rest, i)?;
            break;
        };
        let text = &rest[..lt];
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root at {i}"));
        }
        entities(text, i)?;
        if text.contains('>') {
            return Err(format!("stray > at {i}"));
        }
        i += lt;
        let rest = &doc[i..];
        if let Some(c) = rest.strip_prefix("<!--") {
            i += 4 + c.find("-->").ok_or("unterminated comment")? + 3;
            continue;
        }
        let gt = rest.find('>').ok_or(format!("unterminated tag at {i}"))?;
        let tag = &rest[1..gt];
        if tag.contains('<') {
            return Err(format!("< inside a tag at {i}"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> closes nothing at {i}"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}> at {i}"));
            }
        } else {
            let (body, empty) = match tag.strip_suffix('/') {
                Some(b) => (b, true),
                None => (tag, false),
            };
            let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
            let name = &body[..name_end];
            if !name_ok(name) {
                return Err(format!("bad element name {name:?} at {i}"));
            }
            if stack.is_empty() {
                roots += 1;
            }
            elements += 1;
            let mut attrs = body[name_end..].trim_start();
            let mut seen = Vec::new();
            while !attrs.is_empty() {
                let eq = attrs.find('=').ok_or(format!("attribute without a value in <{name}> at {i}"))?;
                let key = attrs[..eq].trim();
                if !name_ok(key) || seen.contains(&key) {
                    return Err(format!("bad or repeated attribute {key:?} in <{name}> at {i}"));
                }
                seen.push(key);
                let v = attrs[eq + 1..].trim_start();
                let q = v.chars().next().filter(|c| *c == '"' || *c == '\'').ok_or(format!("unquoted {key} at {i}"))?;
                let close = v[1..].find(q).ok_or(format!("unterminated {key} at {i}"))?;
                entities(&v[1..1 + close], i)?;
                let after = &v[close + 2..];
                if !after.is_empty() && !after.starts_with(char::is_whitespace) {
                    return Err(format!("no space after {key} in <{name}> at {i}"));
                }
                attrs = after.trim_start();
            }
            if !empty {
                stack.push(name);
            }
        }
        i += gt + 1;
    }
    match (stack.last(), roots) {
        (Some(open), _) => Err(format!("<{open}> never closed")),
        (None, 1) => Ok(elements),
        (None, n) => Err(format!("{n} root elements")),
    }
}

fn chart(run: &StageRun) -> String {
    super::render(run, &StageSummary::of(run))
}

#[test]
fn the_reader_rejects_what_a_parser_would() {
    assert_eq!(well_formed(r#"<svg a="1"><g><text>x &amp; y</text></g><rect/></svg>"#), Ok(4));
    for bad in [
        "<svg><g></svg>",
        "<svg></svg><svg></svg>",
        r#"<svg a=1></svg>"#,
        r#"<svg a="1" a="2"></svg>"#,
        "<svg>a & b</svg>",
        "<svg>a < b</svg>",
        "<svg><text>&nbsp;</text></svg>",
        r#"<svg a="x"b="y"></svg>"#,
        "<svg>",
    ] {
        assert!(well_formed(bad).is_err(), "{bad}");
    }
}

#[test]
fn every_chart_is_well_formed_and_bounded() {
    let mut runs: Vec<StageRun> = [Shape::Naive, Shape::Pid1, Shape::Graceful].into_iter().map(rollout).collect();
    // Hostile names, a run without any pod event, and an empty run.
    let mut evil = rollout(Shape::Pid1);
    for e in &mut evil.events {
        e.pod = format!("{}<&\"'>", e.pod);
    }
    for l in &mut evil.logs {
        l.pod = format!("{}<&\"'>", l.pod);
    }
    runs.push(evil);
    let mut quiet = rollout(Shape::Graceful);
    quiet.events.clear();
    quiet.logs.clear();
    runs.push(quiet);
    let mut empty = rollout(Shape::Graceful);
    empty.load.records.clear();
    empty.events.clear();
    empty.endpoints.clear();
    runs.push(empty);
    for run in &runs {
        let out = chart(run);
        let n = well_formed(&out).unwrap_or_else(|e| panic!("{}: {e}", run.stage.name.as_str()));
        // 25,500 requests, aggregated: no element per request.
        assert!(n < 2_500, "{n} elements");
        assert!(out.len() < 200_000, "{} bytes", out.len());
        assert!(!out.contains("NaN") && !out.contains("inf"), "{out}");
    }
    let out = chart(&runs[3]);
    assert!(out.contains("api-r1-1&lt;&amp;&quot;&apos;&gt;"), "pod names are escaped");
}

#[test]
fn the_zoom_fits_the_burst() {
    for (shape, last_event_s) in [(Shape::Pid1, 43.17), (Shape::Naive, 53.07), (Shape::Graceful, 43.24)] {
        let run = rollout(shape);
        let s = StageSummary::of(&run);
        let z = Zoom::of(&run, &s);
        assert!((40..=120).contains(&z.bars()), "{shape:?}: {z:?}");
        // A little before the first termination, a little after the last pod event.
        assert!(z.start_s() < 40.002 && z.start_s() > 38.9, "{shape:?}: {z:?}");
        assert!(z.end_s() > last_event_s && z.end_s() < last_event_s + 3.0, "{shape:?}: {z:?}");
        assert!(z.from_us >= run.roll.from_us - z.bucket_us && z.to_us <= run.roll.to_us + z.bucket_us);
        // Every request of the stretch is in one bucket, failures under their cause.
        let bs = buckets(&run, &s, &z);
        let inside = run.load.records.iter().filter(|r| (z.from_us..z.to_us).contains(&r.at_us)).count() as u64;
        let counted: u64 = bs.iter().map(|b| b.ok + b.causes.iter().sum::<u64>()).sum();
        assert_eq!(counted, inside);
    }
    // pid1's burst is ~3 s: fine buckets.
    let mut run = rollout(Shape::Pid1);
    assert!(Zoom::of(&run, &StageSummary::of(&run)).bucket_us <= 100_000);
    // At 10 requests a second, coarser ones: a bucket holds a few requests.
    run.load.records.retain(|r| r.at_us % 100_000 < 3_000);
    let z = Zoom::of(&run, &StageSummary::of(&run));
    assert!(z.bucket_us >= 400_000 && z.bars() >= 8, "{z:?}");
}

#[test]
fn failures_the_deploy_did_not_cause_do_not_stretch_the_zoom() {
    let mut run = rollout(Shape::Pid1);
    let before = Zoom::of(&run, &StageSummary::of(&run));
    // 503s from a warm, full fleet all through the roll window (an overload).
    for r in run.load.records.iter_mut().filter(|r| r.at_us > 45_000_000 && r.class == Class::Ok) {
        if r.at_us % 7 == 0 {
            r.class = Class::Http503;
        }
    }
    assert_eq!(Zoom::of(&run, &StageSummary::of(&run)), before);
    // Without any pod event the zoom is the failures the deploy caused, or the window.
    run.events.clear();
    run.logs.clear();
    let z = Zoom::of(&run, &StageSummary::of(&run));
    assert!(z.from_us >= run.roll.from_us - z.bucket_us && z.to_us <= run.roll.to_us + z.bucket_us, "{z:?}");
    assert!((40..=120).contains(&z.bars()), "{z:?}");
}

#[test]
fn legend_names_only_the_causes_present() {
    let out = chart(&rollout(Shape::Pid1));
    assert!(out.contains(">refused_stopped_listener</tspan>"), "pid1 refuses on a dead endpoint");
    assert!(out.contains("shed_cold_pod") && out.contains("slow_cold_pod"));
    assert!(out.contains("url(#slow-slow_cold_pod)"), "slow causes are hatched");
    assert!(!out.contains(">cut_by_sigkill</tspan>"), "no SIGKILL in pid1");
    let naive = chart(&rollout(Shape::Naive));
    assert!(naive.contains(">cut_by_sigkill</tspan>"), "the naive SIGKILL cuts requests");
    // The strip: one row per pod touched by the deploy, with its moments.
    for pod in ["api-r1-1", "api-r2-7", "worker-r1-4", "worker-r2-12"] {
        assert!(out.contains(&format!(">{pod}</text>")), "{pod}");
    }
    assert!(out.contains("url(#dead-routed)"), "pid1's pods are routed after they stop listening");
    assert!(!chart(&rollout(Shape::Graceful)).contains(r#"fill="url(#dead-routed)""#));
}

#[test]
fn labels_and_symbols_never_overlap() {
    // Three moments 1 px apart, then a crowd every 12 px, then one alone.
    let xs: Vec<f64> = [200.0, 201.0, 202.0].into_iter().chain((0..12).map(|i| 300.0 + 12.0 * f64::from(i))).collect();
    let sym = symbol_xs(&xs);
    for w in sym.windows(2) {
        assert!(w[1] - w[0] >= 10.0 - 1e-9, "{sym:?}");
    }
    assert_eq!(sym[0], 200.0);
    let names = ["term", "SIGTERM", "exit", "unrouted", "ready", "new", "warm", "SIGKILL"];
    let groups: Vec<(f64, f64, Vec<&str>)> = sym
        .iter()
        .enumerate()
        .map(|(i, x)| (*x, *x, vec![names[i % names.len()], names[(i + 3) % names.len()]]))
        .collect();
    let placed = place_labels(&groups);
    let labels: Vec<_> = placed.iter().flatten().collect();
    assert!(labels.len() >= 4, "{labels:?}");
    for (i, a) in labels.iter().enumerate() {
        assert!(a.x >= super::X0 && a.x + a.width <= super::X1 + 1e-9, "{a:?}");
        for b in &labels[i + 1..] {
            let apart = a.x + a.width <= b.x || b.x + b.width <= a.x;
            assert!(a.lane != b.lane || apart, "{a:?} overlaps {b:?}");
        }
    }
    // Near the right edge a label ends at the plot's edge.
    let edge = place_labels(&[(super::X1 - 2.0, super::X1 - 2.0, vec!["SIGKILL"])]);
    let l = edge[0].as_ref().unwrap();
    assert!(l.x + l.width <= super::X1 + 1e-9);
}

/// Writes the sample charts for eyeballing (`rsvg-convert -z 1.5 x.svg -o x.png`):
/// `ZERODROP_SVG_OUT=/tmp/chart cargo test -p xtask --bin xtask svg::tests::sample -- --ignored`.
#[test]
#[ignore]
fn sample() {
    let dir = std::env::var_os("ZERODROP_SVG_OUT")
        .map_or_else(|| std::env::temp_dir().join("zerodrop-svg-sample"), std::path::PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let mut runs: Vec<(String, StageRun)> = [Shape::Naive, Shape::Pid1, Shape::Graceful]
        .into_iter()
        .map(rollout)
        .map(|r| (r.stage.name.as_str().to_string(), r))
        .collect();
    let mut quiet = rollout(Shape::Pid1);
    quiet.events.clear();
    quiet.logs.clear();
    runs.push(("no-events".into(), quiet));
    let mut kind = rollout(Shape::Pid1);
    for e in &mut kind.events {
        e.pod = e.pod.replace("-r1-", "-7d9f8b6c5d-x2k4").replace("-r2-", "-5c4b7f9d8e-q8m1");
    }
    for l in &mut kind.logs {
        l.pod = l.pod.replace("-r1-", "-7d9f8b6c5d-x2k4").replace("-r2-", "-5c4b7f9d8e-q8m1");
    }
    runs.push(("long-names".into(), kind));
    let mut slow = rollout(Shape::Pid1);
    slow.load.records.retain(|r| r.at_us % 100_000 < 3_000);
    runs.push(("10-per-second".into(), slow));
    for (name, run) in runs {
        let path = dir.join(format!("{name}.svg"));
        std::fs::write(&path, chart(&run)).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

#[test]
fn long_pod_names_keep_their_distinguishing_end() {
    use super::strip::short_name;
    assert_eq!(short_name("api-r1-1"), "api-r1-1");
    let s = short_name("worker-6d5f8c7b9d-x2k4q");
    assert!(s.starts_with("worker…") || s.starts_with("worke"), "{s}");
    assert!(s.ends_with("-x2k4q") && s.contains('…'), "{s}");
    assert!(super::text_width(&s, 10.0) <= super::X0 - 16.0, "{s}");
}
