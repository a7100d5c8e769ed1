//! The thundering-reconnect run, defined once: the fleet, the cold-connection costs
//! every api pod pays, the keep-alive load, and the two variants run under it.

use serde::Serialize;
use std::time::Duration;
use zerodrop_load::keepalive::KeepAliveProfile;
use zerodrop_platform::StageEnv;
use zerodrop_stages::{KeepAliveClose, Stage, StageName};

#[derive(Debug, Clone, Serialize)]
pub struct ReconnectProfile {
    pub api_replicas: u32,
    pub worker_replicas: u32,
    /// Request slots per api pod; beyond them, 503 + Retry-After.
    pub api_capacity: u32,
    #[serde(with = "ms")]
    pub propagation_delay: Duration,
    /// From the end of the clients' ramp to the rollout trigger.
    #[serde(with = "ms")]
    pub steady: Duration,
    /// The deploy window, from the trigger; the same for both variants.
    #[serde(with = "ms")]
    pub roll: Duration,
    /// Per new connection, before it is served (`ZD_CONN_SETUP_MS`).
    #[serde(with = "ms")]
    pub conn_setup: Duration,
    /// Connections set up at once per pod (`ZD_CONN_SETUP_CONCURRENCY`).
    pub conn_setup_concurrency: u16,
    /// The first request of each connection (`ZD_FIRST_REQUEST_MS`).
    #[serde(with = "ms")]
    pub first_request_cost: Duration,
    /// The listen backlog (`ZD_ACCEPT_BACKLOG`).
    pub accept_backlog: u32,
    pub load: KeepAliveProfile,
}

impl ReconnectProfile {
    pub fn standard() -> Self {
        let (ramp, steady, roll, cooldown) = (secs(8), secs(6), secs(45), secs(3));
        ReconnectProfile {
            api_replicas: 3,
            worker_replicas: 1,
            api_capacity: 32,
            propagation_delay: Duration::from_millis(1500),
            steady,
            roll,
            conn_setup: Duration::from_millis(4),
            conn_setup_concurrency: 2,
            first_request_cost: Duration::from_millis(80),
            accept_backlog: 128,
            load: KeepAliveProfile {
                clients: 2400,
                period: secs(10),
                ramp,
                duration: ramp + steady + roll + cooldown,
                work_ms: 5,
                request_timeout: secs(5),
                connect_timeout: secs(1),
                retry_backoff: Duration::from_millis(50),
            },
        }
    }

    /// The stage both variants run: surge-jitter (maxSurge 1, warm before ready)
    /// with the cold-connection costs, closing keep-alive `close`.
    pub fn stage(&self, close: KeepAliveClose) -> Stage {
        let mut s = Stage::get(StageName::SurgeJitter);
        s.api.keepalive_close = close;
        s.api.conn_setup = self.conn_setup;
        s.api.conn_setup_concurrency = self.conn_setup_concurrency;
        s.api.first_request_cost = self.first_request_cost;
        s.api.accept_backlog = self.accept_backlog;
        s
    }
}

impl ReconnectProfile {
    /// The variant's fleet: the profile's sizes, its own queue and schema, and the
    /// api pods' listen queues watched.
    pub fn stage_env(&self, queue: &str, schema: &str, index: usize) -> StageEnv {
        StageEnv {
            queue: queue.to_string(),
            schema: schema.to_string(),
            api_replicas: self.api_replicas,
            worker_replicas: self.worker_replicas,
            api_capacity: self.api_capacity,
            job_work: Duration::from_millis(10),
            index: 100 + index,
            listen_queues: true,
            api_env: Vec::new(),
            worker_env: Vec::new(),
        }
    }
}

/// The `index`th variant `name`'s job queue and ledger schema.
pub fn names(run_id: &str, index: usize, name: &str) -> (String, String) {
    (format!("zerodrop.{run_id}.reconnect.{name}"), format!("zd_{}_rc{index}", run_id.replace('-', "").to_lowercase()))
}

/// The two variants, in the order they run.
pub const VARIANTS: [(&str, KeepAliveClose); 2] =
    [("at-once", KeepAliveClose::AtOnce), ("jittered", KeepAliveClose::Jittered)];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

mod ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_variants_differ_only_in_the_keepalive_close() {
        let p = ReconnectProfile::standard();
        let (a, b) = (p.stage(KeepAliveClose::AtOnce), p.stage(KeepAliveClose::Jittered));
        assert_eq!(a.pod, b.pod);
        assert_eq!(a.strategy, b.strategy);
        let mut a_api = a.api;
        a_api.keepalive_close = KeepAliveClose::Jittered;
        assert_eq!(a_api, b.api);
        assert!(a.validate().is_ok());
        assert!(p.load.clients >= 2000, "the issue asks for at least 2,000 clients");
    }
}
