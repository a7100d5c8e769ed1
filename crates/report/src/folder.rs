//! The one writer of a command's report folder, `reports/<run-id>/`: `report.json`,
//! `report.md`, `charts/<name>.svg`, and any other file beside them. Every command
//! (experiment, tune, reconnect, long-lived, canary, blue-green) writes through it,
//! so every folder has the same shape and every failed write names its file.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct Folder {
    dir: PathBuf,
}

impl Folder {
    /// The folder at `dir`, created with its `charts/`.
    pub fn create(dir: &Path) -> Result<Folder> {
        let charts = dir.join("charts");
        std::fs::create_dir_all(&charts).with_context(|| format!("creating {}", charts.display()))?;
        Ok(Folder { dir: dir.to_path_buf() })
    }

    /// `report.json`: the machine-readable report, pretty-printed, ending in a newline.
    pub fn json<T: Serialize + ?Sized>(&self, report: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(report).context("serialising report.json")?;
        self.file("report.json", text + "\n")
    }

    /// `report.md`: the report a person reads.
    pub fn markdown(&self, text: impl AsRef<[u8]>) -> Result<()> {
        self.file("report.md", text)
    }

    /// `charts/<name>.svg`.
    pub fn chart(&self, name: &str, svg: impl AsRef<[u8]>) -> Result<()> {
        self.file(&format!("charts/{name}.svg"), svg)
    }

    /// Any other file, at `relative` inside the folder (its directory created).
    pub fn file(&self, relative: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::Folder;

    #[test]
    fn writes_the_usual_shape_and_names_a_file_it_cannot_write() {
        let dir = std::env::temp_dir().join(format!("zd-folder-{}", std::process::id()));
        let f = Folder::create(&dir).unwrap();
        f.json(&serde_json::json!({"a": 1})).unwrap();
        f.markdown("# r\n").unwrap();
        f.chart("timeline", "<svg/>").unwrap();
        f.file("logs/api/outcomes.csv", "x\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("report.json")).unwrap(), "{\n  \"a\": 1\n}\n");
        assert_eq!(std::fs::read_to_string(dir.join("charts/timeline.svg")).unwrap(), "<svg/>");
        assert!(dir.join("logs/api/outcomes.csv").exists() && dir.join("report.md").exists());
        // A directory where the file should be: the error names the path.
        std::fs::create_dir_all(dir.join("report.md.d/report.md")).unwrap();
        let e = Folder::create(&dir.join("report.md.d")).unwrap().markdown("x").unwrap_err();
        assert!(format!("{e:#}").contains("report.md.d/report.md"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
