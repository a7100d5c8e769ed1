//! The app half of a stage travels to the process as environment variables, one per
//! knob, so a rendered Kubernetes manifest reads like documentation.

use crate::behaviour::{AckMode, AppBehaviour, KeepAliveClose, SigtermResponse};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

fn bool_str(b: bool) -> String {
    b.to_string()
}

fn kebab<T: serde::Serialize>(v: &T) -> String {
    // The enums serialise as plain kebab-case strings.
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl AppBehaviour {
    /// The environment a process needs to behave as this stage says.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("ZD_ON_SIGTERM", kebab(&self.on_sigterm)),
            ("ZD_READINESS_GATE", bool_str(self.readiness_gate)),
            ("ZD_DEREGISTRATION_WAIT_MS", self.deregistration_wait.as_millis().to_string()),
            ("ZD_DRAIN", bool_str(self.drain)),
            ("ZD_DRAIN_BUDGET_MS", self.drain_budget.as_millis().to_string()),
            ("ZD_GUARDIAN", bool_str(self.guardian)),
            ("ZD_ORDERED_TEARDOWN", bool_str(self.ordered_teardown)),
            ("ZD_KEEPALIVE_CLOSE", kebab(&self.keepalive_close)),
            ("ZD_PUBLISHER_CONFIRMS", bool_str(self.publisher_confirms)),
            ("ZD_ACK", kebab(&self.ack)),
            ("ZD_PREFETCH", self.prefetch.to_string()),
            ("ZD_IDEMPOTENT", bool_str(self.idempotent)),
            ("ZD_WARM_BEFORE_READY", bool_str(self.warm_before_ready)),
            ("ZD_HEADER_READ_TIMEOUT_MS", self.header_read_timeout.as_millis().to_string()),
            ("ZD_MAX_CONNECTIONS", self.max_connections.to_string()),
            ("ZD_MAX_DELIVERIES", self.max_deliveries.to_string()),
        ];
        env.extend(self.connection_cost_env());
        env
    }

    /// The cold-connection knobs, only where they differ from the defaults, so the
    /// stages' rendered manifests stay as they were.
    fn connection_cost_env(&self) -> Vec<(&'static str, String)> {
        let d = AppBehaviour::naive();
        let mut env = Vec::new();
        if self.conn_setup != d.conn_setup {
            env.push(("ZD_CONN_SETUP_MS", self.conn_setup.as_millis().to_string()));
        }
        if self.conn_setup_concurrency != d.conn_setup_concurrency {
            env.push(("ZD_CONN_SETUP_CONCURRENCY", self.conn_setup_concurrency.to_string()));
        }
        if self.first_request_cost != d.first_request_cost {
            env.push(("ZD_FIRST_REQUEST_MS", self.first_request_cost.as_millis().to_string()));
        }
        if self.accept_backlog != d.accept_backlog {
            env.push(("ZD_ACCEPT_BACKLOG", self.accept_backlog.to_string()));
        }
        env
    }

    /// Reads the behaviour from the process environment; unset variables keep the
    /// naive default, so a bare `cargo run` gives the lossy app.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let mut b = AppBehaviour::naive();
        let r = Reader { get: &get };
        if let Some(v) = r.parse("ZD_ON_SIGTERM", |s| match s {
            "no-handler" => Some(SigtermResponse::NoHandler),
            "exit-now" => Some(SigtermResponse::ExitNow),
            "graceful" => Some(SigtermResponse::Graceful),
            _ => None,
        })? {
            b.on_sigterm = v;
        }
        if let Some(v) = r.boolean("ZD_READINESS_GATE")? {
            b.readiness_gate = v;
        }
        if let Some(v) = r.millis("ZD_DEREGISTRATION_WAIT_MS")? {
            b.deregistration_wait = v;
        }
        if let Some(v) = r.boolean("ZD_DRAIN")? {
            b.drain = v;
        }
        if let Some(v) = r.millis("ZD_DRAIN_BUDGET_MS")? {
            b.drain_budget = v;
        }
        if let Some(v) = r.boolean("ZD_GUARDIAN")? {
            b.guardian = v;
        }
        if let Some(v) = r.boolean("ZD_ORDERED_TEARDOWN")? {
            b.ordered_teardown = v;
        }
        if let Some(v) = r.parse("ZD_KEEPALIVE_CLOSE", |s| match s {
            "at-once" => Some(KeepAliveClose::AtOnce),
            "jittered" => Some(KeepAliveClose::Jittered),
            _ => None,
        })? {
            b.keepalive_close = v;
        }
        if let Some(v) = r.boolean("ZD_PUBLISHER_CONFIRMS")? {
            b.publisher_confirms = v;
        }
        if let Some(v) = r.parse("ZD_ACK", |s| match s {
            "auto" => Some(AckMode::Auto),
            "after-commit" => Some(AckMode::AfterCommit),
            _ => None,
        })? {
            b.ack = v;
        }
        if let Some(v) = r.parse("ZD_PREFETCH", |s| s.parse::<u16>().ok())? {
            b.prefetch = v;
        }
        if let Some(v) = r.boolean("ZD_IDEMPOTENT")? {
            b.idempotent = v;
        }
        if let Some(v) = r.boolean("ZD_WARM_BEFORE_READY")? {
            b.warm_before_ready = v;
        }
        if let Some(v) = r.millis("ZD_HEADER_READ_TIMEOUT_MS")? {
            b.header_read_timeout = v;
        }
        if let Some(v) = r.parse("ZD_MAX_CONNECTIONS", |s| s.parse::<u32>().ok().filter(|n| *n > 0))? {
            b.max_connections = v;
        }
        if let Some(v) = r.parse("ZD_MAX_DELIVERIES", |s| s.parse::<u32>().ok().filter(|n| *n > 0))? {
            b.max_deliveries = v;
        }
        if let Some(v) = r.millis("ZD_CONN_SETUP_MS")? {
            b.conn_setup = v;
        }
        if let Some(v) = r.parse("ZD_CONN_SETUP_CONCURRENCY", |s| s.parse::<u16>().ok().filter(|n| *n > 0))? {
            b.conn_setup_concurrency = v;
        }
        if let Some(v) = r.millis("ZD_FIRST_REQUEST_MS")? {
            b.first_request_cost = v;
        }
        if let Some(v) = r.parse("ZD_ACCEPT_BACKLOG", |s| s.parse::<u32>().ok().filter(|n| *n > 0))? {
            b.accept_backlog = v;
        }
        Ok(b)
    }
}

/// The pod's preStop duration as the app learns it (`ZD_PRESTOP_MS`, rendered from
/// `Stage.pod.pre_stop` on both platforms). The kubelet runs preStop to completion
/// before SIGTERM, so SIGTERM minus this is when termination began: the instant the
/// pod-side deregistration measurement counts from.
pub const PRESTOP_ENV: &str = "ZD_PRESTOP_MS";

impl crate::PodSpec {
    /// The pod-level facts an app needs to know about itself, as environment.
    pub fn to_app_env(&self) -> Vec<(&'static str, String)> {
        vec![(PRESTOP_ENV, self.pre_stop.as_millis().to_string())]
    }
}

/// Reads `ZD_PRESTOP_MS`; unset means no preStop (SIGTERM starts termination).
pub fn pre_stop_from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Duration, EnvError> {
    Ok(Reader { get: &get }.millis(PRESTOP_ENV)?.unwrap_or(Duration::ZERO))
}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    get: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn parse<T>(&self, name: &'static str, f: impl Fn(&str) -> Option<T>) -> Result<Option<T>, EnvError> {
        match (self.get)(name) {
            None => Ok(None),
            Some(value) => match f(value.trim()) {
                Some(v) => Ok(Some(v)),
                None => Err(EnvError::Invalid { name, value, reason: "unrecognised value".into() }),
            },
        }
    }
    fn boolean(&self, name: &'static str) -> Result<Option<bool>, EnvError> {
        self.parse(name, |s| match s {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        })
    }
    fn millis(&self, name: &'static str) -> Result<Option<Duration>, EnvError> {
        self.parse(name, |s| s.parse::<u64>().ok().map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Stage, StageName};
    use std::collections::HashMap;

    #[test]
    fn every_stage_round_trips_through_the_environment() {
        for s in Stage::all() {
            for app in [s.api, s.worker] {
                let env: HashMap<_, _> = app.to_env().into_iter().collect();
                let back = super::AppBehaviour::from_lookup(|k| env.get(k).cloned()).unwrap();
                assert_eq!(back, app, "stage {}", s.name);
            }
        }
    }

    #[test]
    fn pre_stop_round_trips_and_a_bad_value_names_the_variable() {
        for s in Stage::all() {
            let env: HashMap<_, _> = s.pod.to_app_env().into_iter().collect();
            assert_eq!(super::pre_stop_from_lookup(|k| env.get(k).cloned()).unwrap(), s.pod.pre_stop);
        }
        assert_eq!(super::pre_stop_from_lookup(|_| None).unwrap(), std::time::Duration::ZERO);
        let err = super::pre_stop_from_lookup(|_| Some("3s".into())).unwrap_err();
        assert!(err.to_string().contains("ZD_PRESTOP_MS"), "{err}");
    }

    #[test]
    fn connection_costs_round_trip_and_stay_out_of_the_stages_env() {
        let mut b = super::AppBehaviour::naive();
        assert!(b.to_env().iter().all(|(k, _)| !k.starts_with("ZD_CONN") && *k != "ZD_ACCEPT_BACKLOG"));
        b.conn_setup = std::time::Duration::from_millis(7);
        b.conn_setup_concurrency = 2;
        b.first_request_cost = std::time::Duration::from_millis(30);
        b.accept_backlog = 64;
        let env: HashMap<_, _> = b.to_env().into_iter().collect();
        assert_eq!(env["ZD_CONN_SETUP_MS"], "7");
        let back = super::AppBehaviour::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(back, b);
        let err = super::AppBehaviour::from_lookup(|k| (k == "ZD_ACCEPT_BACKLOG").then(|| "0".to_string()));
        assert!(err.unwrap_err().to_string().contains("ZD_ACCEPT_BACKLOG"));
    }

    #[test]
    fn bad_value_names_the_variable() {
        let err = super::AppBehaviour::from_lookup(|k| (k == "ZD_DRAIN").then(|| "yes".to_string())).unwrap_err();
        assert!(err.to_string().contains("ZD_DRAIN"), "{err}");
        let _ = StageName::Naive;
    }
}
