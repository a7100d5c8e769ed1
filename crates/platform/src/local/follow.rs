//! `logs -f`: follows pod log files as they grow, like `tail -f`, picking up the log
//! of every pod a rollout creates. Only whole lines are printed.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a pass over the log directory found: new whole lines per pod, in order.
pub struct Tail {
    dir: PathBuf,
    pod: Option<String>,
    offsets: BTreeMap<PathBuf, u64>,
}

impl Tail {
    pub fn new(dir: &Path, pod: Option<String>) -> Tail {
        Tail { dir: dir.to_path_buf(), pod, offsets: BTreeMap::new() }
    }

    /// New whole lines since the last call, as (pod, line).
    pub fn poll(&mut self) -> Result<Vec<(String, String)>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .filter(|p| self.pod.as_deref().is_none_or(|want| p.file_stem().is_some_and(|s| s == want)))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for path in files {
            let pod = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let from = self.offsets.get(&path).copied().unwrap_or(0);
            let mut f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            f.seek(SeekFrom::Start(from))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            // A line still being written waits for its newline.
            let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { continue };
            for l in String::from_utf8_lossy(&buf[..end]).lines() {
                out.push((pod.clone(), l.to_string()));
            }
            self.offsets.insert(path, from + end as u64 + 1);
        }
        Ok(out)
    }
}

/// Prints new lines every 200 ms until Ctrl-C or until `done()` says the fleet is gone.
pub async fn follow(dir: &Path, pod: Option<String>, done: impl Fn() -> bool) -> Result<()> {
    if let Some(p) = &pod {
        if !dir.join(format!("{p}.log")).exists() {
            bail!("no log for pod {p} in {} (see `cargo xtask status`)", dir.display());
        }
    }
    let prefix = pod.is_none();
    let mut tail = Tail::new(dir, pod);
    loop {
        for (pod, line) in tail.poll()? {
            if prefix {
                println!("[{pod}] {line}");
            } else {
                println!("{line}");
            }
        }
        if done() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn new_whole_lines_of_every_pod_including_new_ones() {
        let dir = std::env::temp_dir().join(format!("zd-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = std::fs::File::create(dir.join("api-r1-1.log")).unwrap();
        write!(a, "one\ntw").unwrap();
        let mut t = Tail::new(&dir, None);
        assert_eq!(t.poll().unwrap(), vec![("api-r1-1".to_string(), "one".to_string())]);
        writeln!(a, "o").unwrap();
        std::fs::write(dir.join("api-r2-4.log"), "hello\n").unwrap();
        let got = t.poll().unwrap();
        assert_eq!(got, vec![("api-r1-1".into(), "two".into()), ("api-r2-4".into(), "hello".into())]);
        assert!(t.poll().unwrap().is_empty());
        let mut only = Tail::new(&dir, Some("api-r2-4".into()));
        assert_eq!(only.poll().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
