//! The chaos run, defined once: the fleet, the load, the fault on the broker path,
//! the three equal phases around it, and the breaker the second variant switches on.

use serde::Serialize;
use std::time::Duration;
use zerodrop_load::{Mix, Profile};
use zerodrop_platform::{NetFault, StageEnv};
use zerodrop_stages::{Stage, StageName};

/// The two variants, in the order they run: same fault, same load, same seed.
pub const VARIANTS: [(&str, bool); 2] = [("no-breaker", false), ("breaker", true)];

#[derive(Debug, Clone, Serialize)]
pub struct ChaosProfile {
    pub api_replicas: u32,
    pub worker_replicas: u32,
    /// Request slots per api pod, shared by `/work` and `/jobs`: what a pile-up of slow
    /// publishes starves.
    pub api_capacity: u32,
    /// Load before the first measured phase (connections opened, pods warm).
    pub warmup_ms: u64,
    /// Each of the three phases (before, during and after the fault): equal windows.
    pub phase_ms: u64,
    pub fault: NetFault,
    /// The breaker's settings (`ZD_BREAKER_*`) in the variant that has it.
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
    pub breaker_slow_ms: u64,
    pub load: Profile,
}

impl ChaosProfile {
    /// `quick`: 10 s phases for CI; otherwise 20 s.
    pub fn new(quick: bool) -> ChaosProfile {
        let phase_ms = if quick { 10_000 } else { 20_000 };
        let warmup_ms = 5_000;
        ChaosProfile {
            api_replicas: 3,
            worker_replicas: 2,
            api_capacity: 16,
            warmup_ms,
            phase_ms,
            // Publish + confirm: about 1.6 s a job, while a healthy one takes ~2 ms.
            fault: NetFault::Delay { each_way: Duration::from_millis(800) },
            breaker_failures: 5,
            breaker_open_ms: 2_000,
            breaker_slow_ms: 500,
            load: Profile {
                rate_per_sec: 150,
                // The load ends 1 s after the last phase, so every phase is full.
                duration: Duration::from_millis(warmup_ms + 3 * phase_ms + 1_000),
                mix: Mix { fast: 60, slow: 10, job: 30 },
                ..Profile::default()
            },
        }
    }

    /// Every variant runs the final stage: all five levers, so that whatever fails
    /// here is the fault's doing and not a lifecycle gap.
    pub fn stage(&self) -> Stage {
        Stage::get(StageName::SurgeJitter)
    }

    pub fn stage_env(&self, queue: &str, schema: &str, index: usize, breaker: bool) -> StageEnv {
        let on = |b: bool| if b { "on" } else { "off" }.to_string();
        StageEnv {
            queue: queue.to_string(),
            schema: schema.to_string(),
            api_replicas: self.api_replicas,
            worker_replicas: self.worker_replicas,
            api_capacity: self.api_capacity,
            job_work: Duration::from_millis(5),
            index: 160 + index,
            listen_queues: false,
            api_env: vec![
                ("ZD_FAULTS".into(), on(true)),
                ("ZD_BREAKER".into(), on(breaker)),
                ("ZD_BREAKER_FAILURES".into(), self.breaker_failures.to_string()),
                ("ZD_BREAKER_OPEN_MS".into(), self.breaker_open_ms.to_string()),
                ("ZD_BREAKER_SLOW_MS".into(), self.breaker_slow_ms.to_string()),
            ],
            worker_env: Vec::new(),
        }
    }
}

/// The `index`th variant's job queue and ledger schema.
pub fn names(run_id: &str, index: usize, name: &str) -> (String, String) {
    let queue = zerodrop_jobs::Topology::new(format!("zerodrop.{run_id}.chaos.{name}")).queue;
    let schema = format!("zd_{}_chaos{index}", run_id.replace('-', "").to_lowercase());
    (queue, schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_covers_warmup_and_three_equal_phases() {
        for quick in [true, false] {
            let p = ChaosProfile::new(quick);
            assert_eq!(p.load.duration.as_millis() as u64, p.warmup_ms + 3 * p.phase_ms + 1_000);
        }
    }

    #[test]
    fn only_the_breaker_differs_between_the_variants() {
        let p = ChaosProfile::new(true);
        let (a, b) = (p.stage_env("q", "s", 0, false), p.stage_env("q", "s", 0, true));
        let diff: Vec<_> = a.api_env.iter().zip(&b.api_env).filter(|(x, y)| x != y).collect();
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].0 .0, "ZD_BREAKER");
        assert!(a.api_env.contains(&("ZD_FAULTS".into(), "on".into())));
    }
}
