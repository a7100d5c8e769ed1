use crate::{guardian, Lifecycle, EXIT_SECOND_SIGNAL};
use tokio::signal::unix::{signal, SignalKind};
use zerodrop_stages::SigtermResponse;

impl Lifecycle {
    /// Installs the SIGTERM (and SIGINT) handling the stage asks for. Must be called
    /// from inside the tokio runtime.
    ///
    /// With [`SigtermResponse::NoHandler`] nothing is installed, on purpose: as PID 1 of a
    /// PID namespace the kernel then discards SIGTERM, and that is the failure the
    /// first stage demonstrates.
    pub fn install_signal_handlers(&self) -> std::io::Result<()> {
        let response = self.behaviour().on_sigterm;
        if response == SigtermResponse::NoHandler {
            tracing::info!(step = "no_signal_handler", "no SIGTERM handler installed");
            return Ok(());
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let lc = self.clone();
        tokio::spawn(async move {
            let first = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            lc.record_sigterm();
            tracing::info!(
                step = "sigterm_received",
                signal = first,
                phase = lc.phase().as_str(),
                "shutdown signal received"
            );
            if response == SigtermResponse::ExitNow {
                tracing::info!(step = "exit_now", code = 0, "exiting at once, as a default framework would");
                std::process::exit(0);
            }
            let b = *lc.behaviour();
            if b.guardian {
                guardian::arm(b.guardian_deadline());
            }
            lc.shutdown_token().cancel();
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!(
                step = "second_sigterm",
                code = EXIT_SECOND_SIGNAL,
                "second signal during shutdown; exiting now"
            );
            std::process::exit(EXIT_SECOND_SIGNAL);
        });
        Ok(())
    }
}
