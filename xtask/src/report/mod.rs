//! Turns an experiment's measurements into reports/<run-id>/: report.md, report.json,
//! one SVG timeline per stage.

pub mod model;

use std::path::Path;

/// Writes report.md, report.json and charts/<stage>.svg into `dir`.
pub fn write(report: &model::Report, dir: &Path) -> anyhow::Result<()> {
    let _ = (report, dir);
    todo!("report rendering")
}
