//! The experiment's timings and load, defined once. The same profile is applied to
//! every stage of a run and written into the report.

use crate::local::propagation::PropagationModel;
use std::time::Duration;
use zerodrop_load::{Mix, Profile};

#[derive(Debug, Clone)]
pub struct ExperimentProfile {
    pub name: &'static str,
    pub warmup: Duration,
    pub steady: Duration,
    /// The deploy window: from the rollout trigger, the same length in every stage,
    /// long enough for the slowest stage's last old pod to exit.
    pub roll: Duration,
    pub cooldown: Duration,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    /// Request slots per api instance.
    pub api_capacity: u32,
    /// How late the Service learns that a pod stopped (or started) being routable:
    /// a distribution (per-node skew + per-sync jitter), not one constant.
    pub propagation: PropagationModel,
    /// In-transaction work per job in the worker.
    pub job_work: Duration,
    /// Jobs already queued when the load starts (published by the runner, with
    /// confirms): the backlog the workers still hold when the deploy comes.
    pub job_backlog: u32,
    pub load: Profile,
}

impl ExperimentProfile {
    pub fn quick() -> Self {
        // Roll: the slowest stage's last old pod exits ~14 s after the window opens
        // (naive: SIGKILL at the end of its grace; measured in a --quick run, see
        // reports/example); 18 s leaves what it cuts inside. Cool-down: the load goes
        // on 1 s past the window; requests still in flight then finish anyway (the
        // run waits out the request timeout), so a longer tail only costs time.
        let (warmup, steady, roll, cooldown) = (secs(4), secs(8), secs(18), secs(1));
        ExperimentProfile {
            name: "quick",
            warmup,
            steady,
            roll,
            cooldown,
            api_replicas: 3,
            worker_replicas: 3,
            // Headroom: ~7 requests in flight per pod in steady state, so a full
            // instance is rare enough for the steady window to stay clean.
            api_capacity: 24,
            // 1.0–2.0 s, 1.5 s on average (the constant it replaces).
            propagation: PropagationModel {
                base: Duration::from_millis(1000),
                nodes: 3,
                node_skew_max: Duration::from_millis(600),
                sync_jitter: Duration::from_millis(400),
                seed: 42,
            },
            job_work: Duration::from_millis(250),
            // 3 workers apply 12 jobs/s, 6/s arrive: this backlog lasts through the
            // deploy and holds more work per worker than its 5 s drain budget.
            job_backlog: 250,
            load: Profile {
                rate_per_sec: 200,
                duration: warmup + steady + roll + cooldown,
                seed: 42,
                // Enough slow requests in flight on every pod (~7) for a kill or an
                // early close to cut a countable number of them.
                mix: Mix { fast: 72, slow: 25, job: 3 },
                fast_ms: 5,
                slow_ms: 400,
                max_connections: 64,
                request_timeout: secs(5),
                connect_timeout: secs(1),
                mark: None,
                clients: None,
                mirror: None,
            },
        }
    }

    /// Longer windows and more traffic: closer to a real service, ~3x the run time.
    pub fn default_profile() -> Self {
        let (warmup, steady, roll, cooldown) = (secs(10), secs(30), secs(35), secs(10));
        let mut p = Self::quick();
        p.name = "default";
        p.warmup = warmup;
        p.steady = steady;
        p.roll = roll;
        p.cooldown = cooldown;
        p.propagation.base = Duration::from_millis(1500);
        p.load.rate_per_sec = 300;
        // 9 jobs/s against 12/s of workers: the backlog drains at 3/s, so it is
        // still there when the later deploy comes and gone soon after the load.
        p.load.mix = Mix { fast: 72, slow: 25, job: 3 };
        p.job_backlog = 300;
        p.api_capacity = 32;
        p.load.duration = warmup + steady + roll + cooldown;
        p
    }
}

impl ExperimentProfile {
    /// `cargo xtask tune`: the quick load on five api pods (five terminations per
    /// rolling deploy), with a deploy window long enough for the folklore 15 s
    /// preStop's last pod to exit, used unchanged for the measurement and for every
    /// setting of the comparison.
    pub fn tune() -> Self {
        let mut p = Self::quick();
        let (warmup, steady, roll, cooldown) = (secs(3), secs(3), secs(30), secs(2));
        p.name = "tune";
        p.warmup = warmup;
        p.steady = steady;
        p.roll = roll;
        p.cooldown = cooldown;
        p.api_replicas = 5;
        p.job_backlog = 100;
        p.load.duration = warmup + steady + roll + cooldown;
        p
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
