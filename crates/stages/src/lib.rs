//! The experiment's stages, defined once as data.
//!
//! A [`Stage`] says *what* a deployment looks like (entrypoint form, preStop, probes,
//! grace period, rollout strategy) and *how the apps behave* on shutdown
//! ([`AppBehaviour`]). Nothing here knows how a stage is executed: the local platform
//! interprets it with processes, the kind platform renders it into Kubernetes objects.
//! The apps receive their half through environment variables ([`AppBehaviour::to_env`]),
//! exactly as a container would.
//!
//! Stages are cumulative: each one is the previous stage plus one named lever.

mod behaviour;
mod env;

pub use behaviour::{AckMode, AppBehaviour, KeepAliveClose, SigtermResponse};
pub use env::{pre_stop_from_lookup, EnvError, PRESTOP_ENV};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the container starts the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entrypoint {
    /// `CMD app` in shell form: PID 1 is `/bin/sh`, the app is its child, and the shell
    /// neither forwards SIGTERM nor has a handler for it.
    Shell,
    /// `CMD ["zerodrop-init", "--", "app"]`: a real init is PID 1, forwards SIGTERM
    /// to the app and reaps orphans; the app is an ordinary process with the kernel's
    /// default signal dispositions (SIGTERM kills it unless it installs a handler).
    Init,
}

/// A readiness probe, as the kubelet runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    #[serde(with = "ms")]
    pub period: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    #[serde(with = "ms")]
    pub timeout: Duration,
}

/// The pod-level half of a stage: what the platform does to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub entrypoint: Entrypoint,
    /// `lifecycle.preStop: sleep`: runs before SIGTERM is sent.
    #[serde(with = "ms")]
    pub pre_stop: Duration,
    pub readiness: Probe,
    /// `terminationGracePeriodSeconds`, counted from the start of termination
    /// (preStop included), after which the platform sends SIGKILL.
    #[serde(with = "ms")]
    pub grace: Duration,
}

/// `spec.strategy.rollingUpdate` of a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strategy {
    pub max_surge: u32,
    pub max_unavailable: u32,
}

/// The six stages, in order. Each adds one lever to the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageName {
    Naive,
    Pid1,
    ReadinessPrestop,
    ReverseDrain,
    RequeueIdempotency,
    SurgeJitter,
}

impl StageName {
    pub const ALL: [StageName; 6] = [
        StageName::Naive,
        StageName::Pid1,
        StageName::ReadinessPrestop,
        StageName::ReverseDrain,
        StageName::RequeueIdempotency,
        StageName::SurgeJitter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Naive => "naive",
            StageName::Pid1 => "pid1",
            StageName::ReadinessPrestop => "readiness-prestop",
            StageName::ReverseDrain => "reverse-drain",
            StageName::RequeueIdempotency => "requeue-idempotency",
            StageName::SurgeJitter => "surge-jitter",
        }
    }

    pub fn parse(s: &str) -> Option<StageName> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StageName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StageName::parse(s).ok_or_else(|| {
            let names: Vec<_> = StageName::ALL.iter().map(|n| n.as_str()).collect();
            format!("unknown stage `{s}`; expected one of: {}", names.join(", "))
        })
    }
}

/// One stage of the experiment: everything a platform needs to deploy the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub name: StageName,
    /// The lever this stage adds, in a few words.
    pub lever: String,
    /// The failure mode the lever is meant to remove.
    pub targets: String,
    pub pod: PodSpec,
    pub strategy: Strategy,
    pub api: AppBehaviour,
    pub worker: AppBehaviour,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn millis(m: u64) -> Duration {
    Duration::from_millis(m)
}

impl Stage {
    /// All six stages, cumulative, in order.
    pub fn all() -> Vec<Stage> {
        StageName::ALL.into_iter().map(Stage::get).collect()
    }

    /// The stage called `name`, built by applying every lever up to and including it.
    pub fn get(name: StageName) -> Stage {
        let mut s = Stage::naive();
        for step in StageName::ALL {
            if step > name {
                break;
            }
            s.apply(step);
        }
        s
    }

    fn naive() -> Stage {
        Stage {
            name: StageName::Naive,
            lever: "none (the lossy baseline)".into(),
            targets: String::new(),
            pod: PodSpec {
                entrypoint: Entrypoint::Shell,
                pre_stop: Duration::ZERO,
                readiness: Probe {
                    period: millis(500),
                    failure_threshold: 1,
                    success_threshold: 1,
                    timeout: millis(400),
                },
                // Shorter than Kubernetes' 30 s default so a lab run stays short; long
                // enough for every drain budget below plus its guardian margin.
                grace: secs(12),
            },
            strategy: Strategy { max_surge: 0, max_unavailable: 1 },
            api: AppBehaviour::naive(),
            worker: AppBehaviour::naive(),
        }
    }

    /// Adds the lever named `step` to this stage.
    fn apply(&mut self, step: StageName) {
        self.name = step;
        match step {
            StageName::Naive => {}
            StageName::Pid1 => {
                // One knob only: the app still has no handler of its own, so SIGTERM
                // now kills it at once (the kernel's default action); handling it
                // gracefully is the next lever.
                self.lever = "a real init as PID 1 forwards SIGTERM to the app".into();
                self.targets = "pods SIGKILLed at the end of the grace period, and the requests those kills cut".into();
                self.pod.entrypoint = Entrypoint::Init;
            }
            StageName::ReadinessPrestop => {
                self.lever = "a SIGTERM handler: readiness fails, preStop + deregistration wait".into();
                self.targets = "connections refused while the endpoint is still routed".into();
                self.pod.pre_stop = secs(3);
                for app in [&mut self.api, &mut self.worker] {
                    app.on_sigterm = SigtermResponse::Graceful;
                    app.readiness_gate = true;
                    app.deregistration_wait = secs(1);
                }
            }
            StageName::ReverseDrain => {
                self.lever = "drain in-flight and keep-alive, reverse-order teardown, guardian".into();
                self.targets = "requests and publishes cut mid-flight; resources closed under live work".into();
                for app in [&mut self.api, &mut self.worker] {
                    app.drain = true;
                    app.drain_budget = secs(5);
                    app.guardian = true;
                    app.ordered_teardown = true;
                }
                self.api.publisher_confirms = true;
            }
            StageName::RequeueIdempotency => {
                self.lever = "manual ack after commit, cancel + requeue, idempotent consumer".into();
                self.targets = "jobs lost with an auto-acked prefetch; jobs applied twice on redelivery".into();
                self.worker.ack = AckMode::AfterCommit;
                self.worker.prefetch = 8;
                self.worker.idempotent = true;
            }
            StageName::SurgeJitter => {
                self.lever = "maxSurge 1 / maxUnavailable 0, jittered keep-alive close, warm before ready".into();
                self.targets = "capacity dip during the roll; synchronized reconnect storm on cold pods".into();
                self.strategy = Strategy { max_surge: 1, max_unavailable: 0 };
                for app in [&mut self.api, &mut self.worker] {
                    app.keepalive_close = KeepAliveClose::Jittered;
                    app.warm_before_ready = true;
                }
            }
        }
    }

    /// Checks that the timings fit together: the guardian must fire before the
    /// platform's SIGKILL, or the budget it enforces is fiction.
    pub fn validate(&self) -> Result<(), String> {
        for (who, app) in [("api", &self.api), ("worker", &self.worker)] {
            if app.on_sigterm == SigtermResponse::Graceful {
                let needed = self.pod.pre_stop + app.deregistration_wait + app.drain_budget + app.teardown_margin();
                if needed >= self.pod.grace {
                    return Err(format!(
                        "{}: {who} needs {:?} (preStop + deregistration + drain + teardown) but the grace period is {:?}",
                        self.name, needed, self.pod.grace
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Serialise durations as integer milliseconds, so JSON and env stay readable.
mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
pub(crate) use ms as ms_serde;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_cumulative_and_named_in_order() {
        let all = Stage::all();
        assert_eq!(all.len(), 6);
        for (s, n) in all.iter().zip(StageName::ALL) {
            assert_eq!(s.name, n);
            assert_eq!(StageName::parse(n.as_str()), Some(n));
        }
        // A lever, once pulled, stays pulled.
        let last = all.last().unwrap();
        assert_eq!(last.pod.entrypoint, Entrypoint::Init);
        let pid1 = Stage::get(StageName::Pid1);
        assert_eq!(pid1.api.on_sigterm, SigtermResponse::NoHandler, "pid1 turns one knob: the entrypoint");
        assert!(last.api.readiness_gate && last.api.drain && last.api.guardian);
        assert_eq!(last.worker.ack, AckMode::AfterCommit);
        assert!(last.worker.idempotent);
        assert_eq!(last.strategy, Strategy { max_surge: 1, max_unavailable: 0 });
    }

    #[test]
    fn naive_is_lossy_by_construction() {
        let s = Stage::get(StageName::Naive);
        assert_eq!(s.pod.entrypoint, Entrypoint::Shell);
        assert_eq!(s.api.on_sigterm, SigtermResponse::NoHandler);
        assert_eq!(s.worker.ack, AckMode::Auto);
        assert!(!s.api.publisher_confirms);
        assert_eq!(s.strategy, Strategy { max_surge: 0, max_unavailable: 1 });
    }

    #[test]
    fn every_stage_fits_its_grace_period() {
        for s in Stage::all() {
            s.validate().unwrap();
        }
        let mut broken = Stage::get(StageName::ReverseDrain);
        broken.pod.grace = secs(5);
        assert!(broken.validate().is_err());
    }

    #[test]
    fn unknown_stage_name_lists_the_valid_ones() {
        let err = "pid-1".parse::<StageName>().unwrap_err();
        assert!(err.contains("naive") && err.contains("surge-jitter"), "{err}");
    }

    #[test]
    fn stage_serialises_to_json() {
        let v = serde_json::to_value(Stage::get(StageName::SurgeJitter)).unwrap();
        assert_eq!(v["name"], "surge-jitter");
        assert_eq!(v["pod"]["grace"], 12000);
    }
}
