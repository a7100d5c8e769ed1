use crate::http::Server;
use crate::{Lifecycle, Phase, Telemetry};
use futures::future::BoxFuture;
use std::future::Future;
use std::time::{Duration, Instant};

type Step = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// Resources in the order they were acquired; disposed in reverse, so nothing is
/// closed while something that depends on it is still running.
#[derive(Default)]
pub struct Teardown {
    steps: Vec<(&'static str, Step)>,
}

impl Teardown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `resource` right after acquiring it; `close` runs at teardown.
    pub fn acquired<F, Fut>(&mut self, resource: &'static str, close: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.steps.push((resource, Box::new(move || Box::pin(close()))));
    }

    pub fn names_in_disposal_order(&self) -> Vec<&'static str> {
        self.steps.iter().rev().map(|(n, _)| *n).collect()
    }
}

/// Work other than HTTP that must finish during the drain (a consumer's in-flight
/// jobs). Started when draining starts, bounded by the same budget.
pub struct Drain {
    name: &'static str,
    run: Step,
}

impl Drain {
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Drain { name, run: Box::new(move || Box::pin(run())) }
    }
}

impl Lifecycle {
    /// Waits for the shutdown signal, runs the stage's sequence and returns the exit
    /// code. Only returns under [`zerodrop_stages::SigtermResponse::Graceful`]; in the
    /// other modes the process ends from the signal handler or the kernel.
    pub async fn run_shutdown(
        &self,
        mut server: Server,
        drains: Vec<Drain>,
        teardown: Teardown,
        telemetry: Telemetry,
    ) -> i32 {
        self.shutdown_token().cancelled().await;
        let b = *self.behaviour();
        let stats = server.stats().clone();

        if b.readiness_gate {
            self.set_phase(Phase::Deregistering);
            tracing::info!(
                step = "readiness_failing",
                "readiness now fails; still serving while the endpoint is removed"
            );
        }
        if !b.deregistration_wait.is_zero() {
            tokio::time::sleep(b.deregistration_wait).await;
            tracing::info!(
                step = "deregistration_wait_over",
                waited_ms = b.deregistration_wait.as_millis() as u64,
                "deregistration wait over"
            );
        }
        server.stop_accepting().await;
        // The pod-side deregistration delay: how long after termination began the
        // Service still sent this pod new connections.
        let after = self.termination_start().map(|t| stats.accepts.since(t));
        tracing::info!(
            step = "listener_closed",
            connections = stats.open(),
            in_flight = stats.in_flight(),
            accepted_after_term = after.map(|a| a.accepted),
            last_accept_after_term_ms = after.and_then(|a| a.last_ms),
            "listener closed"
        );

        if !b.drain {
            tracing::info!(
                step = "exit_without_drain",
                connections = stats.open(),
                in_flight = stats.in_flight(),
                code = 0,
                "exiting without draining"
            );
            telemetry.flush(self.flush_budget());
            return 0;
        }

        self.set_phase(Phase::Draining);
        let started = Instant::now();
        tracing::info!(
            step = "drain_started",
            connections = stats.open(),
            in_flight = stats.in_flight(),
            keepalive_close = ?b.keepalive_close,
            budget_ms = b.drain_budget.as_millis() as u64,
            "draining"
        );
        server.start_drain(b.keepalive_close, b.drain_budget);
        let names: Vec<_> = drains.iter().map(|d| d.name).collect();
        let work = futures::future::join_all(drains.into_iter().map(|d| (d.run)()));
        let all = async {
            tokio::join!(server.wait_closed(), work);
        };
        // The guardian is the one thing that enforces the budget: it force-exits if
        // draining and teardown together overrun. Without a guardian, the budget is
        // enforced here instead, and the process goes on to teardown.
        let finished = if b.guardian {
            all.await;
            true
        } else {
            tokio::time::timeout(b.drain_budget, all).await.is_ok()
        };
        if finished {
            tracing::info!(
                step = "drain_complete",
                elapsed_ms = started.elapsed().as_millis() as u64,
                connections_left = stats.open(),
                drained = ?names,
                clean = true,
                "drain complete"
            );
        } else {
            tracing::warn!(
                step = "drain_budget_exceeded",
                elapsed_ms = started.elapsed().as_millis() as u64,
                connections_left = stats.open(),
                in_flight = stats.in_flight(),
                "drain budget exceeded; tearing down anyway"
            );
        }

        if b.ordered_teardown {
            self.set_phase(Phase::Disposing);
            tracing::info!(step = "dispose", resource = "http_server", "closing http_server");
            drop(server);
            for (resource, close) in teardown.steps.into_iter().rev() {
                tracing::info!(step = "dispose", resource, "closing {resource}");
                // A hung close must not hold the process: the guardian bounds the
                // whole sequence, this bounds each step so the log says which one hung.
                if tokio::time::timeout(Duration::from_secs(2), close()).await.is_err() {
                    tracing::warn!(step = "dispose_timeout", resource, "closing {resource} timed out");
                }
            }
        }
        telemetry.flush(self.flush_budget());
        tracing::info!(step = "exit", code = 0, "exit");
        0
    }
}
