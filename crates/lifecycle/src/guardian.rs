//! The guardian is an OS thread, not a task: a wedged runtime (a blocked worker
//! thread, a graceful shutdown waiting on an idle keep-alive connection forever) must
//! not be able to stop it from firing.

use crate::EXIT_GUARDIAN;
use std::time::Duration;

pub(crate) fn arm(deadline: Duration) {
    tracing::info!(step = "guardian_armed", deadline_ms = deadline.as_millis() as u64, "guardian armed");
    let spawned = std::thread::Builder::new().name("guardian".into()).spawn(move || {
        std::thread::sleep(deadline);
        tracing::error!(
            step = "guardian_fired",
            code = EXIT_GUARDIAN,
            deadline_ms = deadline.as_millis() as u64,
            "shutdown overran its budget; forcing exit"
        );
        std::process::exit(EXIT_GUARDIAN);
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the guardian thread");
    }
}
