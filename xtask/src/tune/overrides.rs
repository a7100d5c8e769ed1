//! A stage override: the timings `cargo xtask tune` recommends, as a file that
//! `cargo xtask experiment --override <file>` (and the comparison) apply on top of
//! the stages.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use zerodrop_stages::{SigtermResponse, Stage};

/// Every field is optional; what is absent keeps the stage's own value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOverride {
    /// `lifecycle.preStop` sleep, for api and worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop_ms: Option<u64>,
    /// The apps' own wait after readiness fails, before the listener closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistration_wait_ms: Option<u64>,
    /// The api's drain budget (the worker keeps its own: it is sized by its jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_drain_budget_ms: Option<u64>,
    /// `terminationGracePeriodSeconds`, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// Where the values came from (free text, kept in the report).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl StageOverride {
    pub fn read(path: &Path) -> Result<StageOverride> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a stage override (JSON with pre_stop_ms, deregistration_wait_ms, api_drain_budget_ms, grace_ms, note)",
                path.display()
            )
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Applies to stages whose apps handle SIGTERM gracefully (readiness-prestop on):
    /// the earlier stages have no preStop lever to size. Errors when the result does
    /// not fit its grace period.
    pub fn apply(&self, stage: &mut Stage) -> Result<bool, String> {
        if stage.api.on_sigterm != SigtermResponse::Graceful {
            return Ok(false);
        }
        let ms = Duration::from_millis;
        if let Some(v) = self.pre_stop_ms {
            stage.pod.pre_stop = ms(v);
        }
        if let Some(v) = self.deregistration_wait_ms {
            stage.api.deregistration_wait = ms(v);
            stage.worker.deregistration_wait = ms(v);
        }
        if let Some(v) = self.api_drain_budget_ms.filter(|_| stage.api.drain) {
            stage.api.drain_budget = ms(v);
        }
        if let Some(v) = self.grace_ms {
            stage.pod.grace = ms(v);
        }
        stage.validate()?;
        Ok(true)
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        let f = |n: &str, v: Option<u64>| v.map(|v| format!("{n} {v} ms"));
        let parts: Vec<String> = [
            f("preStop", self.pre_stop_ms),
            f("deregistration wait", self.deregistration_wait_ms),
            f("api drain budget", self.api_drain_budget_ms),
            f("grace", self.grace_ms),
        ]
        .into_iter()
        .flatten()
        .collect();
        parts.join(", ")
    }
}

/// Applies `o` to every stage it concerns; the error names the file and the stage.
pub fn apply_all(o: &StageOverride, origin: &Path, stages: &mut [Stage]) -> Result<()> {
    for s in stages.iter_mut() {
        let name = s.name;
        if o.apply(s).map_err(|e| anyhow::anyhow!("{}: {e}", origin.display()))? {
            eprintln!("[override] {name}: {}", o.describe());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_stages::StageName;

    #[test]
    fn applies_to_graceful_stages_only_and_round_trips() {
        let o = StageOverride {
            pre_stop_ms: Some(4500),
            deregistration_wait_ms: Some(0),
            api_drain_budget_ms: Some(2000),
            grace_ms: Some(12_000),
            note: "test".into(),
        };
        let back: StageOverride = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
        let mut naive = Stage::get(StageName::Naive);
        assert_eq!(o.apply(&mut naive), Ok(false));
        assert_eq!(naive, Stage::get(StageName::Naive), "no preStop lever before readiness-prestop");
        let mut last = Stage::get(StageName::SurgeJitter);
        assert_eq!(o.apply(&mut last), Ok(true));
        assert_eq!(last.pod.pre_stop, Duration::from_millis(4500));
        assert_eq!(last.api.drain_budget, Duration::from_millis(2000));
        assert_eq!(last.worker.drain_budget, Stage::get(StageName::SurgeJitter).worker.drain_budget);
        assert_eq!(last.api.deregistration_wait, Duration::ZERO);
        let mut rp = Stage::get(StageName::ReadinessPrestop);
        o.apply(&mut rp).unwrap();
        assert!(!rp.api.drain && rp.api.drain_budget.is_zero(), "no drain budget where there is no drain");
    }

    #[test]
    fn a_grace_too_short_and_an_unknown_field_are_errors() {
        let o = StageOverride { pre_stop_ms: Some(15_000), grace_ms: Some(10_000), ..Default::default() };
        let err = o.apply(&mut Stage::get(StageName::SurgeJitter)).unwrap_err();
        assert!(err.contains("grace period"), "{err}");
        let dir = std::env::temp_dir().join(format!("zd-override-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("o.json");
        std::fs::write(&f, r#"{"prestop": 3}"#).unwrap();
        let err = format!("{:#}", StageOverride::read(&f).unwrap_err());
        assert!(err.contains("not a stage override") && err.contains("unknown field"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
