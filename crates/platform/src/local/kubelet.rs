//! Pod termination as the kubelet does it: mark terminating (the endpoint removal
//! starts in parallel), run preStop, send SIGTERM to PID 1, wait out the rest of the
//! grace period, SIGKILL.

use super::pod::Pod;
use super::recorder::Recorder;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use zerodrop_evidence::PodEventKind;
use zerodrop_stages::PodSpec;

/// The caller has already set `pod.terminating` (synchronously, so the controller's
/// next plan no longer counts the pod).
pub async fn terminate(pod: Arc<Pod>, spec: PodSpec, rec: Arc<Recorder>) {
    let app = pod.app.name();
    let started = Instant::now();
    rec.event(
        &pod.name,
        app,
        PodEventKind::Terminating,
        format!("preStop {} ms, grace {} ms", spec.pre_stop.as_millis(), spec.grace.as_millis()),
    );
    if !spec.pre_stop.is_zero() {
        // preStop counts against the grace period.
        pod.wait_exit(spec.pre_stop.min(spec.grace)).await;
    }
    if !pod.exited.load(Ordering::SeqCst) {
        pod.signal(libc::SIGTERM);
        rec.event(&pod.name, app, PodEventKind::Sigterm, "SIGTERM to PID 1");
    }
    let left = spec.grace.saturating_sub(started.elapsed());
    if !pod.wait_exit(left).await {
        pod.signal(libc::SIGKILL);
        rec.event(&pod.name, app, PodEventKind::Sigkill, "grace period over: SIGKILL");
        pod.wait_exit(std::time::Duration::from_secs(10)).await;
    }
}
