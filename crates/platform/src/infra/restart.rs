//! Restarting a private server the way an operator would: the graceful stop signal
//! (RabbitMQ's SIGTERM, PostgreSQL's fast shutdown), wait for every process to exit, then
//! start it again on the same port and data directory with the code that started it first,
//! and wait until it is ready. Durable queues, persistent messages and committed rows survive;
//! every client connection is closed by the server, as in production.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::process::ServerProc;
use super::{secs, Backends, Launch, Origin, PG_GRACE, RABBIT_GRACE};

/// Which of the two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    RabbitMq,
    Postgres,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::RabbitMq => "rabbitmq",
            Service::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rabbitmq" => Ok(Service::RabbitMq),
            "postgres" | "postgresql" => Ok(Service::Postgres),
            other => Err(format!("unknown server {other:?} (expected rabbitmq or postgres)")),
        }
    }
}

/// How one restart went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarted {
    /// From the stop signal until every process of the old server had exited.
    pub stopped_in: Duration,
    /// From the stop signal until the new server was ready: what its clients went without.
    pub down: Duration,
}

/// A running private server and how to start it again.
pub(super) struct Server {
    pub proc: ServerProc,
    pub launch: Launch,
    /// Kept running across restarts (RabbitMQ's epmd, as a host's epmd outlives a broker
    /// restart); stopped after the server by `release()`.
    pub helper: Option<ServerProc>,
}

impl Backends {
    /// Stops the private `service` gracefully, waits for it to exit, starts it again on the
    /// same port and data, and waits until it is ready. Restarts of one server queue behind
    /// each other; the other server is not held up. Env-provided servers are refused.
    pub async fn restart(&self, service: Service) -> Result<Restarted> {
        let (slot, origin, grace) = match service {
            Service::RabbitMq => (&self.rabbit, self.amqp_origin, RABBIT_GRACE),
            Service::Postgres => (&self.postgres, self.db_origin, PG_GRACE),
        };
        if origin == Origin::Env {
            bail!("{service} comes from the environment; only private servers are ever restarted");
        }
        let watchdog = self.watchdog.as_ref().context("no watchdog: the private servers are being released")?;
        let mut guard = slot.lock().await;
        let Some(mut server) = guard.take() else {
            bail!("no private {service} is running (a previous restart failed, or it was released)");
        };
        let t0 = Instant::now();
        eprintln!("[infra] restarting private {service}: stopping ...");
        // The stop polls and sleeps; keep it off the async threads.
        let (server, stopped) = tokio::task::spawn_blocking(move || {
            let r = server.proc.finish_stop(grace);
            (server, r)
        })
        .await
        .context("the stop task panicked")?;
        // On failure the slot stays empty: later restarts say so, release() has nothing to
        // stop, so the helper is stopped here (off the async threads: the stop sleeps).
        let Server { launch, helper, .. } = server;
        if let Err(e) = stopped {
            let _ = tokio::task::spawn_blocking(move || drop(helper)).await;
            return Err(e.context(format!("stopping {service} for a restart")));
        }
        let stopped_in = t0.elapsed();
        eprintln!("[infra] {service} stopped in {}; starting it again ...", secs(stopped_in));
        let proc = match launch.run(watchdog).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || drop(helper)).await;
                return Err(e.context(format!("starting {service} again")));
            }
        };
        let down = t0.elapsed();
        *guard = Some(Server { proc, launch, helper });
        eprintln!("[infra] {service} ready again, down for {}", secs(down));
        Ok(Restarted { stopped_in, down })
    }
}
