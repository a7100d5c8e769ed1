//! The worker's configuration: every environment variable it reads, with its default,
//! in one place. A bad value is a startup error that names the variable.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;
use zerodrop_stages::AppBehaviour;

/// Defaults for every variable, in one place.
pub mod defaults {
    pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    pub const DATABASE_URL: &str = zerodrop_ledger::DEFAULT_DATABASE_URL;
    pub const QUEUE: &str = "zerodrop.jobs";
    pub const DB_SCHEMA: &str = "zerodrop";
    pub const LISTEN: &str = "127.0.0.1:9090";
    pub const JOB_WORK_MS: u64 = 0;
    pub const POST_COMMIT_MS: u64 = 0;
    /// One job at a time needs one connection; the rest absorb a slow recycle.
    pub const DB_POOL_SIZE: usize = 4;
}

/// Longest queue name: AMQP allows 255 bytes and the dead-letter queue adds `.dlq`.
const MAX_QUEUE_LEN: usize = 250;
const MAX_POD_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `AMQP_URL`
    pub amqp_url: String,
    /// `DATABASE_URL`
    pub database_url: String,
    /// `ZD_QUEUE`: the work queue; its dead-letter queue is `<queue>.dlq`.
    pub queue: String,
    /// `ZD_DB_SCHEMA`: the ledger's schema, `[a-z0-9_]{1,48}`.
    pub db_schema: String,
    /// `ZD_LISTEN`: the admin HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub listen: SocketAddr,
    /// `ZD_POD`: recorded as `applied_by` on every ledger row.
    pub pod: String,
    /// `ZD_JOB_WORK_MS`: simulated processing inside the database transaction.
    pub job_work: Duration,
    /// `ZD_POST_COMMIT_MS`: work after the commit and before the ack (a receipt).
    pub post_commit: Duration,
    /// Connections in the database pool (not configurable from the environment).
    pub db_pool_size: usize,
    /// `ZD_LEDGER_WRITES`: `old` (amount), `both` or `new` (amount_cents): which
    /// amount columns this worker version writes during the rename (`cargo xtask migrate`).
    pub ledger_writes: zerodrop_ledger::Writes,
    /// The stage's `ZD_*` shutdown and delivery knobs.
    pub behaviour: AppBehaviour,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Unset or blank variables take their default.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let invalid =
            |name: &'static str, value: &str, reason: String| ConfigError { name, value: value.to_string(), reason };

        let amqp_url = var("AMQP_URL").unwrap_or_else(|| defaults::AMQP_URL.to_string());
        if let Err(e) = lapin::uri::AMQPUri::from_str(&amqp_url) {
            return Err(invalid("AMQP_URL", &amqp_url, e));
        }

        let database_url = var("DATABASE_URL").unwrap_or_else(|| defaults::DATABASE_URL.to_string());
        if let Err(e) = database_url.parse::<tokio_postgres::Config>() {
            return Err(invalid("DATABASE_URL", &database_url, e.to_string()));
        }

        let queue = var("ZD_QUEUE").unwrap_or_else(|| defaults::QUEUE.to_string());
        if queue.len() > MAX_QUEUE_LEN || queue.starts_with("amq.") {
            return Err(invalid(
                "ZD_QUEUE",
                &queue,
                format!("expected at most {MAX_QUEUE_LEN} bytes, not starting with `amq.`"),
            ));
        }

        let db_schema = var("ZD_DB_SCHEMA").unwrap_or_else(|| defaults::DB_SCHEMA.to_string());
        if let Err(e) = zerodrop_ledger::validate_schema(&db_schema) {
            return Err(invalid("ZD_DB_SCHEMA", &db_schema, e.to_string()));
        }

        let listen_raw = var("ZD_LISTEN").unwrap_or_else(|| defaults::LISTEN.to_string());
        let listen = listen_raw
            .trim()
            .parse::<SocketAddr>()
            .map_err(|e| invalid("ZD_LISTEN", &listen_raw, format!("expected ip:port ({e})")))?;

        let pod = var("ZD_POD").unwrap_or_else(default_pod);
        if pod.len() > MAX_POD_LEN {
            return Err(invalid("ZD_POD", &pod, format!("expected at most {MAX_POD_LEN} bytes")));
        }

        let millis = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match var(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| invalid(name, &v, "expected a whole number of milliseconds".into())),
            }
        };
        let job_work = millis("ZD_JOB_WORK_MS", defaults::JOB_WORK_MS)?;
        let post_commit = millis("ZD_POST_COMMIT_MS", defaults::POST_COMMIT_MS)?;

        let ledger_writes = match var("ZD_LEDGER_WRITES") {
            None => zerodrop_ledger::Writes::default(),
            Some(v) => v.parse().map_err(|reason| invalid("ZD_LEDGER_WRITES", &v, reason))?,
        };

        let behaviour = AppBehaviour::from_lookup(&get).map_err(|e| match e {
            zerodrop_stages::EnvError::Invalid { name, value, reason } => ConfigError { name, value, reason },
        })?;

        Ok(Config {
            amqp_url,
            database_url,
            queue,
            db_schema,
            listen,
            pod,
            job_work,
            post_commit,
            db_pool_size: defaults::DB_POOL_SIZE,
            ledger_writes,
            behaviour,
        })
    }

    /// The URL without its password, for logs.
    pub fn amqp_url_redacted(&self) -> String {
        zerodrop_jobs::broker::redact_url(&self.amqp_url)
    }

    pub fn database_url_redacted(&self) -> String {
        zerodrop_jobs::broker::redact_url(&self.database_url)
    }
}

/// `hostname/pid`: unique per process on one machine, and readable in a pod (whose
/// hostname is the pod name).
fn default_pod() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zerodrop_stages::{AckMode, Stage, StageName};

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_unset_or_blank() {
        let c = cfg(&[("ZD_QUEUE", " ")]).unwrap();
        assert_eq!(c.amqp_url, defaults::AMQP_URL);
        assert_eq!(c.database_url, defaults::DATABASE_URL);
        assert_eq!(c.queue, "zerodrop.jobs");
        assert_eq!(c.db_schema, "zerodrop");
        assert_eq!(c.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.job_work, Duration::ZERO);
        assert_eq!(c.post_commit, Duration::ZERO);
        assert!(c.pod.ends_with(&format!("/{}", std::process::id())), "{}", c.pod);
        assert_eq!(c.behaviour, AppBehaviour::naive());
        assert_eq!(c.ledger_writes, zerodrop_ledger::Writes::Old);
    }

    #[test]
    fn values_are_read() {
        let stage = Stage::get(StageName::RequeueIdempotency).worker;
        let mut vars: Vec<(&str, String)> = stage.to_env();
        vars.extend([
            ("ZD_QUEUE", "q1".to_string()),
            ("ZD_DB_SCHEMA", "s_1".to_string()),
            ("ZD_LISTEN", "127.0.0.1:0".to_string()),
            ("ZD_POD", "worker-a".to_string()),
            ("ZD_JOB_WORK_MS", "250".to_string()),
            ("ZD_POST_COMMIT_MS", "7".to_string()),
            ("ZD_LEDGER_WRITES", "both".to_string()),
        ]);
        let map: HashMap<&str, String> = vars.into_iter().collect();
        let c = Config::from_lookup(|k| map.get(k).cloned()).unwrap();
        assert_eq!((c.queue.as_str(), c.db_schema.as_str(), c.pod.as_str()), ("q1", "s_1", "worker-a"));
        assert_eq!(c.job_work, Duration::from_millis(250));
        assert_eq!(c.post_commit, Duration::from_millis(7));
        assert_eq!(c.ledger_writes, zerodrop_ledger::Writes::Both);
        assert_eq!(c.behaviour, stage);
        assert_eq!(c.behaviour.ack, AckMode::AfterCommit);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("ZD_JOB_WORK_MS", "fast"),
            ("ZD_POST_COMMIT_MS", "-1"),
            ("ZD_LISTEN", "localhost"),
            ("ZD_DB_SCHEMA", "a;drop"),
            ("AMQP_URL", "http://nope"),
            ("DATABASE_URL", "postgres://u@h:port/db"),
            ("ZD_PREFETCH", "many"),
            ("ZD_ACK", "sometimes"),
            ("ZD_LEDGER_WRITES", "amount_cents"),
        ] {
            let err = cfg(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
