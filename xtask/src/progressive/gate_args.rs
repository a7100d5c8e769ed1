//! The statistical options `canary` and `blue-green` share: how the sample is sized
//! (baseline and detectable error rates, α, power) and the gates a step or a bake is
//! judged by. One definition, so both commands take the same flags with the same
//! defaults and the same validation.

use super::gates::GateConfig;
use super::stats::Detect;
use anyhow::{bail, Result};

#[derive(clap::Args, Clone, Debug)]
pub struct GateArgs {
    /// The baseline error rate the sample is sized for, in percent.
    #[arg(long, default_value_t = 0.1)]
    pub baseline: f64,
    /// The canary error rate that must be detected, in percent (default 1; quick 2).
    #[arg(long)]
    pub detect: Option<f64>,
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.8)]
    pub power: f64,
    /// The new version's p95 may exceed the baseline's by this many percent ...
    #[arg(long, default_value_t = 50.0)]
    pub p95_tolerance: f64,
    /// ... or by this many ms, whichever is larger.
    #[arg(long, default_value_t = 10.0)]
    pub p95_floor_ms: f64,
    /// A step is judged only with at least this many requests to the new version.
    #[arg(long, default_value_t = 200)]
    pub min_requests: u64,
}

impl GateArgs {
    /// The sample-size question these flags ask, checked.
    pub fn detect(&self, quick: bool) -> Result<Detect> {
        let detect = Detect {
            baseline: self.baseline / 100.0,
            detectable: self.detect.unwrap_or(if quick { 2.0 } else { 1.0 }) / 100.0,
            alpha: self.alpha,
            power: self.power,
        };
        if !(detect.detectable > detect.baseline && detect.detectable < 1.0 && detect.baseline >= 0.0) {
            bail!("--detect must be above --baseline and below 100 (percent)");
        }
        if !(0.0 < self.alpha && self.alpha < 0.5 && 0.5 <= self.power && self.power < 1.0) {
            bail!("--alpha must be in (0, 0.5) and --power in [0.5, 1)");
        }
        Ok(detect)
    }

    pub fn gates(&self) -> GateConfig {
        GateConfig {
            alpha: self.alpha,
            p95_tolerance_pct: self.p95_tolerance,
            p95_floor_ms: self.p95_floor_ms,
            min_requests: self.min_requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gates: GateArgs,
    }

    #[test]
    fn defaults_and_validation() {
        let g = Cli::parse_from(["x"]).gates;
        let d = g.detect(true).unwrap();
        assert_eq!((d.baseline, d.detectable), (0.001, 0.02));
        assert_eq!(g.detect(false).unwrap().detectable, 0.01);
        assert_eq!(g.gates().min_requests, 200);
        let bad = Cli::parse_from(["x", "--detect", "0.05"]).gates;
        assert!(bad.detect(true).unwrap_err().to_string().contains("--detect"));
        let bad = Cli::parse_from(["x", "--power", "0.2"]).gates;
        assert!(bad.detect(true).unwrap_err().to_string().contains("--power"));
    }
}
