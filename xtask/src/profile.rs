//! The experiment's timings and load, defined once. The same profile is applied to
//! every stage of a run and written into the report.

use std::time::Duration;
use zerodrop_load::{Mix, Profile};

#[derive(Debug, Clone)]
pub struct ExperimentProfile {
    pub name: &'static str,
    pub warmup: Duration,
    pub steady: Duration,
    /// Time allowed for the rolling deploy, from trigger to the last old pod's exit.
    pub roll: Duration,
    pub cooldown: Duration,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    /// Request slots per api instance.
    pub api_capacity: u32,
    /// How late the Service learns that a pod stopped (or started) being routable.
    pub propagation_delay: Duration,
    /// In-transaction work per job in the worker.
    pub job_work: Duration,
    pub load: Profile,
}

impl ExperimentProfile {
    pub fn quick() -> Self {
        let (warmup, steady, roll, cooldown) = (secs(4), secs(8), secs(22), secs(3));
        ExperimentProfile {
            name: "quick",
            warmup,
            steady,
            roll,
            cooldown,
            api_replicas: 3,
            worker_replicas: 3,
            api_capacity: 16,
            propagation_delay: Duration::from_millis(1500),
            job_work: Duration::from_millis(250),
            load: Profile {
                rate_per_sec: 200,
                duration: warmup + steady + roll + cooldown,
                seed: 42,
                mix: Mix { fast: 80, slow: 15, job: 5 },
                fast_ms: 5,
                slow_ms: 250,
                max_connections: 64,
                request_timeout: secs(5),
                connect_timeout: secs(1),
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
        p.propagation_delay = Duration::from_secs(2);
        p.load.rate_per_sec = 300;
        // Keep the workers' utilisation where the quick profile has it (~80 %): an
        // overloaded queue would be scored as shutdown loss.
        p.load.mix = Mix { fast: 82, slow: 15, job: 3 };
        p.api_capacity = 20;
        p.load.duration = warmup + steady + roll + cooldown;
        p
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
