//! Turns an experiment's measurements into reports/<run-id>/: report.md, report.json,
//! one SVG timeline per stage, and beside each run's pod logs `outcomes.csv`: every
//! failed or slow request with its cause.

mod cause_table;
pub mod causes;
mod checks;
mod escape;
mod evidence;
pub mod folder;
mod json;
pub mod levers;
mod markdown;
pub mod model;
mod prose;
pub mod stats;
pub mod summary;
pub mod svg;
#[cfg(test)]
mod tests;

use std::path::Path;

/// Every run of one stage (one per repeat) with its summary, and the verdict on its
/// lever against the stage before it in this report.
pub struct StageGroup<'a> {
    pub runs: Vec<(&'a model::StageRun, &'a summary::StageSummary)>,
    pub effect: Option<levers::LeverEffect>,
}

impl StageGroup<'_> {
    pub fn first(&self) -> (&model::StageRun, &summary::StageSummary) {
        self.runs[0]
    }
}

/// Groups the runs by stage, in the order the stages first ran.
pub fn analyse<'a>(report: &'a model::Report, summaries: &'a [summary::StageSummary]) -> Vec<StageGroup<'a>> {
    let mut groups: Vec<StageGroup<'a>> = Vec::new();
    for (run, s) in report.stages.iter().zip(summaries) {
        match groups.iter_mut().find(|g| g.runs[0].0.stage.name == run.stage.name) {
            Some(g) => g.runs.push((run, s)),
            None => groups.push(StageGroup { runs: vec![(run, s)], effect: None }),
        }
    }
    for i in 1..groups.len() {
        let e = levers::effect(&groups[i - 1].runs, &groups[i].runs);
        groups[i].effect = e;
    }
    groups
}

/// The derived numbers of one run (for the runner's console summary).
pub fn summary_of(run: &model::StageRun) -> summary::StageSummary {
    summary::StageSummary::of(run)
}

/// Writes report.md, report.json and charts/<stage>.svg into `dir`.
pub fn write(report: &model::Report, dir: &Path) -> anyhow::Result<()> {
    let folder = folder::Folder::create(dir)?;
    let summaries: Vec<summary::StageSummary> = report.stages.iter().map(summary::StageSummary::of).collect();
    let groups = analyse(report, &summaries);

    folder.json(&json::render(report, &groups)?)?;
    for g in &groups {
        let (run, s) = g.first();
        folder.chart(&s.name, svg::render(run, s))?;
    }
    for (run, s) in report.stages.iter().zip(&summaries) {
        folder.file(&format!("{}/outcomes.csv", run.pod_logs_dir), causes::csv(run, &s.causes))?;
    }
    folder.markdown(markdown::render(report, &groups))
}
