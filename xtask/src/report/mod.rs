//! Turns an experiment's measurements into reports/<run-id>/: report.md, report.json,
//! one SVG timeline per stage.

mod checks;
mod evidence;
mod json;
mod markdown;
pub mod model;
mod prose;
mod summary;
mod svg;
#[cfg(test)]
mod tests;

use anyhow::Context as _;
use std::path::Path;

/// Writes report.md, report.json and charts/<stage>.svg into `dir`.
pub fn write(report: &model::Report, dir: &Path) -> anyhow::Result<()> {
    let charts = dir.join("charts");
    std::fs::create_dir_all(&charts).with_context(|| format!("creating {}", charts.display()))?;
    let summaries: Vec<summary::StageSummary> = report.stages.iter().map(summary::StageSummary::of).collect();

    let json = json::render(report, &summaries)?;
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;

    for (run, s) in report.stages.iter().zip(&summaries) {
        let path = charts.join(format!("{}.svg", s.name));
        std::fs::write(&path, svg::render(run, s)).with_context(|| format!("writing {}", path.display()))?;
    }

    let path = dir.join("report.md");
    std::fs::write(&path, markdown::render(report, &summaries))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
