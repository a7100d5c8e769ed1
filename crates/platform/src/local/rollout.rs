//! The Deployment controller's verdict on a rollout under way, as `kubectl rollout
//! status` gives it: still progressing (with one line per change of counts), complete,
//! or failed with the reason. Failed means a pod of the new revision exited on its own
//! (this platform restarts nothing, so it would never become ready), or the counts did
//! not move for the progress deadline (a readiness that never passes).

use super::deployment::Deployment;
use super::pod::Pod;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The rollout's state as far as progress goes: per deployment, new pods, new ready
/// pods, old pods left. Any change counts as progress.
type Counts = Vec<(u32, u32, u32)>;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Progressing,
    Complete,
    Failed(String),
}

pub struct Watch {
    deadline: Duration,
    last_progress: Instant,
    last: Option<Counts>,
}

fn counts(d: &Deployment) -> (u32, u32, u32) {
    let live = d.live_pods();
    let (mut new, mut new_ready, mut old) = (0, 0, 0);
    for p in live {
        if p.revision == d.revision {
            new += 1;
            new_ready += p.ready.load(Ordering::SeqCst) as u32;
        } else {
            old += 1;
        }
    }
    (new, new_ready, old)
}

/// A new-revision pod that exited without being told to terminate.
fn crashed(d: &Deployment) -> Option<&Pod> {
    d.pods
        .iter()
        .find(|p| p.revision == d.revision && p.exited.load(Ordering::SeqCst) && !p.terminating.load(Ordering::SeqCst))
        .map(|p| p.as_ref())
}

impl Watch {
    pub fn new(deadline: Duration, now: Instant) -> Watch {
        Watch { deadline, last_progress: now, last: None }
    }

    /// Judges the rollout after one reconcile step. Returns the verdict and, when the
    /// counts changed, one progress line per deployment.
    pub fn check(&mut self, deps: &[(&str, &Deployment)], complete: bool, now: Instant) -> (Verdict, Vec<String>) {
        let now_counts: Counts = deps.iter().map(|(_, d)| counts(d)).collect();
        let mut lines = Vec::new();
        if self.last.as_ref() != Some(&now_counts) {
            self.last_progress = now;
            for ((app, d), (new, ready, old)) in deps.iter().zip(&now_counts) {
                lines.push(format!(
                    "{app}: {new} of {} new replicas created, {ready} ready; {old} old replicas left",
                    d.replicas
                ));
            }
            self.last = Some(now_counts);
        }
        for (app, d) in deps {
            if let Some(p) = crashed(d) {
                let how = match p.exit_code() {
                    Some(c) => format!("exit code {c}"),
                    None => "unknown status".into(),
                };
                let why = format!(
                    "{app}: pod {} of the new revision {} exited ({how}) before the rollout completed; the last lines of its log ({}):\n{}",
                    p.name,
                    d.revision,
                    p.log_path.display(),
                    super::pod::log_tail(&p.log_path, super::pod::LOG_TAIL_LINES)
                );
                return (Verdict::Failed(why), lines);
            }
        }
        if complete {
            return (Verdict::Complete, lines);
        }
        if now.duration_since(self.last_progress) > self.deadline {
            let waiting: Vec<String> = deps
                .iter()
                .flat_map(|(_, d)| {
                    d.live_pods().filter(|p| p.revision == d.revision && !p.ready.load(Ordering::SeqCst))
                })
                .map(|p| p.name.clone())
                .collect();
            let why = format!(
                "no progress for {} s (the progress deadline); new pods that never passed their readiness probe: {}",
                self.deadline.as_secs(),
                if waiting.is_empty() { "none".to_string() } else { waiting.join(", ") }
            );
            return (Verdict::Failed(why), lines);
        }
        (Verdict::Progressing, lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(pods: Vec<std::sync::Arc<Pod>>) -> Deployment {
        Deployment { replicas: 2, revision: 2, pods }
    }

    #[test]
    fn a_readiness_that_never_passes_fails_at_the_progress_deadline() {
        let t0 = Instant::now();
        let d =
            dep(vec![Pod::fake("api-r1-1", 1, true), Pod::fake("api-r1-2", 1, true), Pod::fake("api-r2-3", 2, false)]);
        let mut w = Watch::new(Duration::from_secs(10), t0);
        let (v, lines) = w.check(&[("api", &d)], false, t0);
        assert_eq!(v, Verdict::Progressing);
        assert_eq!(lines, vec!["api: 1 of 2 new replicas created, 0 ready; 2 old replicas left"]);
        // Nothing changes: no new line, and still within the deadline.
        let (v, lines) = w.check(&[("api", &d)], false, t0 + Duration::from_secs(9));
        assert_eq!((v, lines.len()), (Verdict::Progressing, 0));
        let (v, _) = w.check(&[("api", &d)], false, t0 + Duration::from_secs(11));
        let Verdict::Failed(why) = v else { panic!("expected a failure, got {v:?}") };
        assert!(why.contains("no progress for 10 s") && why.contains("api-r2-3"), "{why}");
    }

    #[test]
    fn progress_resets_the_deadline() {
        let t0 = Instant::now();
        let new = Pod::fake("api-r2-3", 2, false);
        let d = dep(vec![Pod::fake("api-r1-1", 1, true), Pod::fake("api-r1-2", 1, true), new.clone()]);
        let mut w = Watch::new(Duration::from_secs(10), t0);
        w.check(&[("api", &d)], false, t0);
        new.ready.store(true, Ordering::SeqCst);
        let (v, lines) = w.check(&[("api", &d)], false, t0 + Duration::from_secs(9));
        assert_eq!((v, lines.len()), (Verdict::Progressing, 1));
        let (v, _) = w.check(&[("api", &d)], false, t0 + Duration::from_secs(18));
        assert_eq!(v, Verdict::Progressing);
    }

    #[test]
    fn a_new_pod_that_exits_fails_the_rollout_at_once() {
        let t0 = Instant::now();
        let new = Pod::fake("worker-r2-3", 2, false);
        new.exited.store(true, Ordering::SeqCst);
        // An old pod that was terminated and exited is the rollout working, not failing.
        let old = Pod::fake("worker-r1-1", 1, false);
        old.terminating.store(true, Ordering::SeqCst);
        old.exited.store(true, Ordering::SeqCst);
        let d = dep(vec![old, Pod::fake("worker-r1-2", 1, true), new]);
        let mut w = Watch::new(Duration::from_secs(10), t0);
        let (v, _) = w.check(&[("worker", &d)], false, t0);
        let Verdict::Failed(why) = v else { panic!("expected a failure, got {v:?}") };
        assert!(why.contains("worker-r2-3") && why.contains("exited"), "{why}");
    }

    #[test]
    fn complete_when_the_controller_says_so() {
        let t0 = Instant::now();
        let d = dep(vec![Pod::fake("api-r2-3", 2, true), Pod::fake("api-r2-4", 2, true)]);
        let mut w = Watch::new(Duration::from_secs(10), t0);
        assert_eq!(w.check(&[("api", &d)], true, t0 + Duration::from_secs(60)).0, Verdict::Complete);
    }
}
