//! The load generator as a Job in the cluster, aimed at the api Service's ClusterIP
//! (through kube-proxy, as any client pod's traffic goes). Its `RunResult` comes back
//! through its log: `zerodrop-load run --out -` prints it as checksummed chunk lines
//! ([`zerodrop_load::wire`]), which survive the kubelet's line limit, other output in
//! between, and a log stream that was reopened or read twice.

//!
//! Before its load the generator waits for the data plane (`--await-pods`, see
//! [`zerodrop_load::gate`]): its first lines are the gate's, and only its
//! `load begins:` line (or a progress line) says requests flow.

use anyhow::{bail, Context, Result};
use std::time::Duration;
use zerodrop_load::keepalive::KeepAliveProfile;
use zerodrop_load::{LiveSnapshot, Profile};

pub use zerodrop_load::wire::{BEGIN, END};

/// How long the load pod waits for the Service to reach every awaited api pod; the
/// runner's wait for requests to flow grows by as much.
pub const GATE_TIMEOUT: Duration = Duration::from_secs(60);

/// `zerodrop-load` arguments for `profile` against `target` (`host:port`), first
/// awaiting `await_pods` through it (no gate when empty).
pub fn args(profile: &Profile, target: &str, job_prefix: &str, await_pods: &[String]) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let m = profile.mix;
    let mut own = vec![
        "--rate".to_string(),
        profile.rate_per_sec.to_string(),
        "--duration".into(),
        ms(profile.duration),
        "--seed".into(),
        profile.seed.to_string(),
        "--mix".into(),
        format!("{},{},{}", m.fast, m.slow, m.job),
        "--fast-ms".into(),
        profile.fast_ms.to_string(),
        "--slow-ms".into(),
        profile.slow_ms.to_string(),
        "--max-connections".into(),
        profile.max_connections.to_string(),
        "--timeout".into(),
        ms(profile.request_timeout),
        "--connect-timeout".into(),
        ms(profile.connect_timeout),
        "--job-prefix".into(),
        job_prefix.into(),
    ];
    if let Some(m) = &profile.mark {
        own.extend(["--mark-header".into(), format!("{}: {}", m.header, m.value)]);
        own.extend(["--mark-permille".into(), m.permille.to_string()]);
    }
    if let Some(c) = &profile.clients {
        own.extend(["--clients".into(), c.count.to_string(), "--zipf".into(), c.zipf_s.to_string()]);
        own.extend(["--client-header".into(), c.header.clone()]);
    }
    if let Some(m) = &profile.mirror {
        own.extend(["--mirror-header".into(), format!("{}: {}", m.header, m.value)]);
        own.extend(["--mirror-permille".into(), m.permille.to_string(), "--mirror-until".into(), ms(m.until)]);
    }
    subcommand("run", target, await_pods, own)
}

/// `zerodrop-load keepalive` arguments for `profile` against `target`, gated like [`args`].
pub fn keepalive_args(profile: &KeepAliveProfile, target: &str, await_pods: &[String]) -> Vec<String> {
    subcommand("keepalive", target, await_pods, profile.cli_args())
}

/// `<sub> --target <target> --allow-non-loopback <own...> --out -`, then the
/// data-plane gate's flags when there are pods to await: what every load subcommand
/// run as a Job shares.
pub(crate) fn subcommand(
    sub: &str,
    target: &str,
    await_pods: &[String],
    own: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let gate = match await_pods {
        [] => vec![],
        pods => vec![
            "--await-pods".into(),
            pods.join(","),
            "--await-timeout".into(),
            format!("{}ms", GATE_TIMEOUT.as_millis()),
        ],
    };
    [sub.to_string(), "--target".into(), target.into(), "--allow-non-loopback".into()]
        .into_iter()
        .chain(own)
        .chain(["--out".to_string(), "-".into()])
        .chain(gate)
        .collect()
}

/// A line of the load pod's log that says requests are flowing: the generator's
/// `load begins:` line, a per-second progress line, or its result. The data-plane
/// gate's lines before them, or an error ending the run early, do not.
pub fn load_began(line: &str) -> bool {
    line.starts_with(zerodrop_load::gate::LOAD_BEGINS)
        || line.starts_with(BEGIN)
        || LiveSnapshot::parse_progress_line(line).is_some()
}

/// The result in a load pod's log; when there is none, the error shows the log's
/// last lines (what the generator said instead).
pub fn extract_result<T: serde::de::DeserializeOwned>(log: &str) -> Result<T> {
    match zerodrop_load::wire::decode(log) {
        Ok(r) => Ok(r),
        Err(zerodrop_load::wire::WireError::NoHeader) => {
            let tail: Vec<&str> = log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("the load generator's log has no result (no `{BEGIN}` line); its last lines:\n{}", tail.join("\n"))
        }
        Err(e) => Err(e).context("reading the load generator's result from its log"),
    }
}

/// A Job name unique to this run and stage (DNS-1123, at most 63 characters).
pub fn job_name(run_id: &str, index: usize) -> String {
    job_name_nth(run_id, index, 0)
}

/// The name of the `nth` load Job (from 0) on one fleet: `migrate` runs one per step.
/// The first keeps [`job_name`]'s form; the sequence number is kept when the run id
/// is cut to fit 63 characters, so two Jobs of one fleet never share a name.
pub fn job_name_nth(run_id: &str, index: usize, nth: u32) -> String {
    let id: String = run_id.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let suffix = if nth == 0 { String::new() } else { format!("-{nth}") };
    let mut name = format!("load-{index}-{id}");
    name.truncate(63 - suffix.len());
    format!("{}{suffix}", name.trim_end_matches('-'))
}

/// The api Service of `stage_objects` as a pod in the cluster reaches it (`host:port`).
pub fn service_target(
    render: &zerodrop_manifests::RenderOptions,
    stage_objects: &[super::objects::Rendered],
) -> Result<String> {
    let port = super::objects::service_port(stage_objects, "api")?;
    Ok(format!("{}:{port}", render.service_host("api")))
}

/// A stage's load Job running `zerodrop-load <args>` (see [`args`]).
pub fn job_object(
    opts: &super::KindOptions,
    render: &zerodrop_manifests::RenderOptions,
    index: usize,
    args: Vec<String>,
) -> zerodrop_manifests::Object {
    job_object_nth(opts, render, index, 0, args)
}

/// The `nth` load Job on one fleet ([`job_name_nth`]).
pub fn job_object_nth(
    opts: &super::KindOptions,
    render: &zerodrop_manifests::RenderOptions,
    index: usize,
    nth: u32,
    args: Vec<String>,
) -> zerodrop_manifests::Object {
    let spec = zerodrop_manifests::LoadJobSpec { name: job_name_nth(&opts.run_id, index, nth), args };
    zerodrop_manifests::load_job(&spec, render)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_load::RunResult;

    #[test]
    fn args_parse_back_into_the_same_profile() {
        let p = crate::profile::ExperimentProfile::quick().load;
        let pods = ["api-7c9f6d5b8d-4xk2p".to_string(), "api-7c9f6d5b8d-9wq7m".into()];
        let a = args(&p, "api.zerodrop.svc.cluster.local:80", "run-naive", &pods);
        let find = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].clone()).unwrap();
        assert_eq!(a[0], "run");
        assert_eq!(find("--duration"), format!("{}ms", p.duration.as_millis()));
        assert_eq!(find("--mix"), format!("{},{},{}", p.mix.fast, p.mix.slow, p.mix.job));
        assert_eq!(find("--out"), "-");
        assert!(a.contains(&"--allow-non-loopback".to_string()));
        assert_eq!(humantime::parse_duration(&find("--timeout")).unwrap(), p.request_timeout);
        assert_eq!(find("--await-pods"), "api-7c9f6d5b8d-4xk2p,api-7c9f6d5b8d-9wq7m");
        assert_eq!(humantime::parse_duration(&find("--await-timeout")).unwrap(), GATE_TIMEOUT);
        let ungated = args(&p, "api.zerodrop.svc.cluster.local:80", "run-naive", &[]);
        assert!(!ungated.iter().any(|x| x.starts_with("--await")), "{ungated:?}");
        assert!(!a.iter().any(|x| x.starts_with("--mark")), "no marker unless the profile has one: {a:?}");
        let mark = zerodrop_load::Mark { permille: 50, header: "cookie".into(), value: "zd-tester=1".into() };
        let marked = args(&Profile { mark: Some(mark), ..p }, "haproxy.zerodrop.svc.cluster.local:80", "canary", &[]);
        let find = |flag: &str| marked.iter().position(|x| x == flag).map(|i| marked[i + 1].clone()).unwrap();
        let clients = zerodrop_load::Clients { count: 200, zipf_s: 1.1, header: "x-zd-client".into() };
        let c = args(&Profile { clients: Some(clients), ..Profile::default() }, "haproxy:80", "canary", &[]);
        let in_c = |flag: &str| c.iter().position(|x| x == flag).map(|i| c[i + 1].clone()).unwrap();
        assert_eq!(
            (in_c("--clients"), in_c("--zipf"), in_c("--client-header")),
            ("200".into(), "1.1".into(), "x-zd-client".into())
        );
        assert_eq!((find("--mark-header"), find("--mark-permille")), ("cookie: zd-tester=1".into(), "50".into()));
        assert!(!c.iter().any(|x| x.starts_with("--mirror")), "no copies unless the profile has a mirror: {c:?}");
        let mirror = zerodrop_load::Mirror {
            permille: 200,
            header: "x-canary".into(),
            value: "always".into(),
            until: Duration::from_secs(15),
        };
        let m = args(&Profile { mirror: Some(mirror), ..Profile::default() }, "haproxy:80", "canary", &[]);
        let in_m = |flag: &str| m.iter().position(|x| x == flag).map(|i| m[i + 1].clone()).unwrap();
        assert_eq!(
            (in_m("--mirror-header"), in_m("--mirror-permille"), in_m("--mirror-until")),
            ("x-canary: always".into(), "200".into(), "15000ms".into())
        );
    }

    /// What the generator prints with `--await-pods`: the gate's lines come before
    /// the load; only the `load begins:` line and what follows mean requests flow.
    const GATED: &str = "gate: awaiting 3 pods through 10.96.0.12:80 (GET /healthz on a new connection each): api-7c9f6d5b8d-4xk2p, api-7c9f6d5b8d-9wq7m, api-7c9f6d5b8d-hb2cn
gate: api-7c9f6d5b8d-9wq7m answered (1/3) after 1 probes, 2 ms
gate: api-7c9f6d5b8d-4xk2p answered (2/3) after 2 probes, 30 ms
gate: api-7c9f6d5b8d-hb2cn answered (3/3) after 41 probes, 1154 ms
gate: data plane carries 3/3 endpoints after 41 probes, 1154 ms
load begins: 200 rps for 37s to 10.96.0.12:80
   1s  sent 200  ok 200  errors 0
";

    #[test]
    fn only_the_load_s_own_lines_say_it_began() {
        let began: Vec<bool> = GATED.lines().map(load_began).collect();
        assert_eq!(began, [false, false, false, false, false, true, true]);
        assert!(
            load_began("   7s  sent 1400  ok 1391  errors refused=3 timeout=6"),
            "a stream reopened past the first line"
        );
        assert!(load_began(&format!("{BEGIN} 1 chunks, 2 bytes, fnv1a64 0 ---")));
        for line in [
            "Error: no load sent: the api Service's data plane does not reach every awaited pod",
            "",
            "Caused by:",
            "total 7400  failed 0 (0.00%)",
        ] {
            assert!(!load_began(line), "{line:?}");
        }
    }

    /// The keep-alive Job: its own subcommand and profile, the same target, gate and
    /// hand-back as the stage's load, and its result read back in its own type.
    #[test]
    fn the_keepalive_job_shares_the_gate_and_hands_back_its_result() {
        use zerodrop_load::keepalive::KeepAliveResult;
        let p = KeepAliveProfile {
            clients: 2400,
            period: Duration::from_secs(10),
            ramp: Duration::from_secs(8),
            duration: Duration::from_secs(62),
            work_ms: 5,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(50),
        };
        let a = keepalive_args(&p, "api.zerodrop.svc.cluster.local:80", &["api-a".into(), "api-b".into()]);
        let at = |k: &str| a.iter().position(|x| x == k).map(|i| a[i + 1].as_str());
        assert_eq!(a[0], "keepalive");
        assert_eq!(at("--target"), Some("api.zerodrop.svc.cluster.local:80"));
        assert_eq!((at("--clients"), at("--period"), at("--out")), (Some("2400"), Some("10000ms"), Some("-")));
        assert_eq!(at("--await-pods"), Some("api-a,api-b"));
        assert!(a.contains(&"--allow-non-loopback".to_string()));
        let r = KeepAliveResult {
            started_unix_ms: 1_795_438_951_000,
            profile: p,
            requests: vec![],
            connects: vec![],
            closes_us: vec![5, 7],
            peak_open: 2400,
        };
        let log = format!("{GATED}requests 0  ok 0\n{}", zerodrop_load::wire::encode(&r).unwrap());
        let back = extract_result::<KeepAliveResult>(&log).unwrap();
        assert_eq!((back.peak_open, back.closes_us), (2400, vec![5, 7]));
    }

    #[test]
    fn the_result_comes_back_from_the_log() {
        let r = RunResult {
            started_unix_ms: 1_795_438_951_000,
            profile: Profile::default(),
            records: vec![],
            accepted_jobs: vec!["a-1".into(), "a-7".into()],
            late_sends: 3,
            connections_opened: 64,
            pods: vec![],
            mirrored: vec![],
            // The copies v2 accepted travel too: the shadow's ledger is checked against them.
            mirrored_accepted_jobs: vec!["a-7".into()],
        };
        let wire = zerodrop_load::wire::encode(&r).unwrap();
        let log = format!("{GATED}total 7400  failed 0 (0.00%)\n{wire}");
        let back = extract_result::<RunResult>(&log).unwrap();
        assert_eq!(back.accepted_jobs, r.accepted_jobs);
        assert_eq!(back.mirrored_accepted_jobs, r.mirrored_accepted_jobs);
        assert_eq!(back.started_unix_ms, r.started_unix_ms);
        let failed_gate = "gate: awaiting 3 pods through 10.96.0.12:80 (GET /healthz on a new connection each): a, b, c
gate: a answered (1/3) after 1 probes, 2 ms
Error: no load sent: the api Service's data plane does not reach every awaited pod

Caused by:
    the data plane never reached 2 of 3 awaited pods (b, c) through the Service: the 60s deadline passed after 2300 probes (0 failed) in 60011 ms
";
        let err = extract_result::<RunResult>(failed_gate).unwrap_err().to_string();
        assert!(err.contains("never reached 2 of 3 awaited pods (b, c)"), "{err}");
        let err = extract_result::<RunResult>("200 rps for 37s\nerror: connection refused\n").unwrap_err().to_string();
        assert!(err.contains("error: connection refused"), "{err}");
        let cut: String = wire.lines().take(1).map(|l| format!("{l}\n")).collect();
        let err = format!("{:#}", extract_result::<RunResult>(&cut).unwrap_err());
        assert!(err.contains("chunks [1] of 1 are missing"), "{err}");
    }

    #[test]
    fn job_names_are_valid() {
        assert_eq!(job_name("20261123-130150", 2), "load-2-20261123-130150");
        assert!(job_name(&"X".repeat(80), 0).len() <= 63);
        assert_eq!(job_name_nth("20261123-130150", 2, 0), job_name("20261123-130150", 2));
        assert_eq!(job_name_nth("20261123-130150", 2, 3), "load-2-20261123-130150-3");
        let long = "X".repeat(80);
        let (a, b) = (job_name_nth(&long, 0, 1), job_name_nth(&long, 0, 12));
        assert!(a.len() <= 63 && b.len() <= 63 && a != b && a != job_name(&long, 0), "{a} {b}");
        assert!(b.ends_with("-12") && !b.contains("--"), "{b}");
    }
}
