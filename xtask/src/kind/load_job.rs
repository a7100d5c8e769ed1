//! The load generator as a Job in the cluster, aimed at the api Service's ClusterIP
//! (through kube-proxy, as any client pod's traffic goes). Its `RunResult` comes back
//! through its log: `zerodrop-load run --out -` prints it as checksummed chunk lines
//! ([`zerodrop_load::wire`]), which survive the kubelet's line limit, other output in
//! between, and a log stream that was reopened or read twice.

use anyhow::{bail, Context, Result};
use zerodrop_load::{Profile, RunResult};

pub use zerodrop_load::wire::{BEGIN, END};

/// `zerodrop-load` arguments for `profile` against `target` (`host:port`).
pub fn args(profile: &Profile, target: &str, job_prefix: &str) -> Vec<String> {
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    let m = profile.mix;
    [
        "run".to_string(),
        "--target".into(),
        target.into(),
        "--allow-non-loopback".into(),
        "--rate".into(),
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
        "--out".into(),
        "-".into(),
    ]
    .to_vec()
}

/// The result in a load pod's log; when there is none, the error shows the log's
/// last lines (what the generator said instead).
pub fn extract_result(log: &str) -> Result<RunResult> {
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
    let id: String = run_id.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut name = format!("load-{index}-{id}");
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// The stage's load Job: `profile` against the api Service of `stage_objects`.
pub fn job_object(
    opts: &super::KindOptions,
    render: &zerodrop_manifests::RenderOptions,
    stage_objects: &[super::objects::Rendered],
    profile: &Profile,
    job_prefix: &str,
    index: usize,
) -> Result<zerodrop_manifests::Object> {
    let port = super::objects::service_port(stage_objects, "api")?;
    let target = format!("{}:{port}", render.service_host("api"));
    let spec = zerodrop_manifests::LoadJobSpec {
        name: job_name(&opts.run_id, index),
        args: args(profile, &target, job_prefix),
    };
    Ok(zerodrop_manifests::load_job(&spec, render))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_back_into_the_same_profile() {
        let p = crate::profile::ExperimentProfile::quick().load;
        let a = args(&p, "api.zerodrop.svc.cluster.local:80", "run-naive");
        let find = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].clone()).unwrap();
        assert_eq!(a[0], "run");
        assert_eq!(find("--duration"), format!("{}ms", p.duration.as_millis()));
        assert_eq!(find("--mix"), format!("{},{},{}", p.mix.fast, p.mix.slow, p.mix.job));
        assert_eq!(find("--out"), "-");
        assert!(a.contains(&"--allow-non-loopback".to_string()));
        assert_eq!(humantime::parse_duration(&find("--timeout")).unwrap(), p.request_timeout);
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
        };
        let wire = zerodrop_load::wire::encode(&r).unwrap();
        let log = format!(
            "200 rps for 37s to 10.96.0.12:80\n   1s  sent 200  ok 200  errors 0\ntotal 7400  failed 0 (0.00%)\n{wire}"
        );
        let back = extract_result(&log).unwrap();
        assert_eq!(back.accepted_jobs, r.accepted_jobs);
        assert_eq!(back.started_unix_ms, r.started_unix_ms);
        let err = extract_result("200 rps for 37s\nerror: connection refused\n").unwrap_err().to_string();
        assert!(err.contains("error: connection refused"), "{err}");
        let cut: String = wire.lines().take(1).map(|l| format!("{l}\n")).collect();
        let err = format!("{:#}", extract_result(&cut).unwrap_err());
        assert!(err.contains("chunks [1] of 1 are missing"), "{err}");
    }

    #[test]
    fn job_names_are_valid() {
        assert_eq!(job_name("20261123-130150", 2), "load-2-20261123-130150");
        assert!(job_name(&"X".repeat(80), 0).len() <= 63);
    }
}
