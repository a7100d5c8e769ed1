//! What the runner's exit code means. Scripts and CI branch on these, so each failure
//! class has its own code and an error type that carries it up to `main`.

use std::process::ExitCode;

/// The command did what was asked.
pub const OK: u8 = 0;
/// The run could not be carried out (a missing prerequisite, a server that would not
/// start, an I/O error ...). Also any error without a more specific class.
pub const COULD_NOT_RUN: u8 = 1;
/// Bad command-line usage (clap exits with it itself; listed for completeness).
#[allow(dead_code)]
pub const USAGE: u8 = 2;
/// The run completed and its report was written, but an asserted property of the
/// results does not hold (`--assert-staircase`).
pub const CHECK_FAILED: u8 = 3;
/// A rollout failed: a pod of the new revision exited, or the rollout made no progress
/// within its deadline.
pub const ROLLOUT_FAILED: u8 = 4;
/// A stage of the experiment failed: the stages that ran were written as a partial
/// report marked incomplete.
pub const INCOMPLETE: u8 = 5;

/// For `--help`: every code above, one line each.
pub const HELP: &str = "\
Exit codes:
  0  ok
  1  the run could not be carried out (the error says why)
  2  usage error
  3  a check on the results failed (--assert-staircase); the report was written
  4  a rollout failed or timed out (the reason is printed)
  5  a stage failed; the stages that ran were written as a partial report";

/// An asserted property of a completed run does not hold.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// A rollout failed or made no progress in time (raised by the platform).
pub use zerodrop_platform::RolloutFailed;

/// A stage failed; what ran before it is in the partial report.
#[derive(Debug, thiserror::Error)]
#[error("stage {stage} failed: {reason}; partial report of the stages that ran: {report}")]
pub struct Incomplete {
    pub stage: String,
    pub reason: String,
    pub report: String,
}

/// Maps a command's outcome to the process exit code, printing the error.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else { return ExitCode::from(OK) };
    let (label, code) = classify(&e);
    eprintln!("{label}: {e:#}");
    ExitCode::from(code)
}

fn classify(e: &anyhow::Error) -> (&'static str, u8) {
    // Searched along the whole chain: a context added on the way up must not hide
    // the class of the failure underneath.
    for cause in e.chain() {
        if cause.is::<CheckFailed>() {
            return ("check failed", CHECK_FAILED);
        }
        if cause.is::<RolloutFailed>() {
            return ("error", ROLLOUT_FAILED);
        }
        if cause.is::<Incomplete>() {
            return ("error", INCOMPLETE);
        }
    }
    ("error", COULD_NOT_RUN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_class_survives_added_context() {
        let e = Err::<(), _>(RolloutFailed("pod api-r2-4 exited".into())).context("rollout").unwrap_err();
        assert_eq!(classify(&e).1, ROLLOUT_FAILED);
        let e = Err::<(), _>(CheckFailed("x".into())).context("experiment").unwrap_err();
        assert_eq!(classify(&e).1, CHECK_FAILED);
        let e = anyhow::Error::new(Incomplete { stage: "pid1".into(), reason: "r".into(), report: "p".into() });
        assert_eq!(classify(&e).1, INCOMPLETE);
        assert_eq!(classify(&anyhow::anyhow!("no rabbitmq-server")).1, COULD_NOT_RUN);
    }

    #[test]
    fn help_lists_every_code() {
        for code in [OK, COULD_NOT_RUN, USAGE, CHECK_FAILED, ROLLOUT_FAILED, INCOMPLETE] {
            assert!(HELP.contains(&format!("\n  {code}  ")), "exit code {code} missing from --help");
        }
    }
}
