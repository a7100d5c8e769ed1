//! A `zerodrop-load` Job beside the stage's fleet, however it is used (the stage's
//! open-loop load, the keep-alive clients): applied once the data-plane gate knows
//! which api pods to await, followed through the pod watch (its log, its progress
//! lines, its exit), and its result read back from its log.

use super::objects::Rendered;
use super::{confirm_started, load_job, KindPlatform};
use crate::now_ms;
use anyhow::{bail, Context, Result};
use kube::api::LogParams;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use zerodrop_load::Live;

impl KindPlatform {
    /// Applies a `zerodrop-load` Job whose arguments `args` builds from the api
    /// Service's `host:port` and the api pods its data-plane gate awaits; returns once
    /// requests flow, with a task resolving to the result the generator printed
    /// (waiting at most `run_limit` for it to exit).
    pub(crate) async fn start_load_job<T>(
        &mut self,
        args: impl FnOnce(&str, &[String]) -> Vec<String>,
        live: Arc<Live>,
        run_limit: Duration,
    ) -> Result<JoinHandle<Result<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        // The generator runs in the cluster: its per-second progress lines, read off
        // its pod's log, feed `live`. It first waits until a probe through the Service
        // has reached every api pod the EndpointSlices call ready: the control plane's
        // list is ahead of the node's kube-proxy rules, and load started in between is
        // refused, times out, and pins the keep-alive pool to the pods programmed then.
        let (shared, job) = {
            let f = self.fleet()?;
            let awaited = f.shared.with(|s| s.awaited_pods.clone());
            let ready = f.shared.ready_endpoints.load(Ordering::Relaxed) as usize;
            if awaited.len() < ready {
                eprintln!(
                    "warning: {} of {ready} ready api endpoints have no Pod targetRef to await by name; the load's \
                     data-plane gate checks only {}",
                    ready - awaited.len(),
                    awaited.len()
                );
            }
            if awaited.is_empty() {
                eprintln!("warning: no api pod to await; the load starts without the data-plane gate");
            } else {
                eprintln!(
                    "[kind] the load starts once the api Service reaches {}/{ready} pods: {}",
                    awaited.len(),
                    awaited.join(", ")
                );
            }
            let target = load_job::service_target(&f.render, &f.objects)?;
            // A fleet may carry several loads one after the other (`migrate`: one per
            // step); each is its own Job, so no pod of an earlier one is taken for it.
            let nth = f.shared.with(|s| s.load_jobs);
            let job = load_job::job_object_nth(&self.opts, &f.render, f.env.index, nth, args(&target, &awaited));
            (f.shared.clone(), Rendered::from_object(&job))
        };
        let earlier = shared.with(|s| s.begin_load(job.name.clone(), live)).map_err(anyhow::Error::msg)?;
        if let Some(f) = self.fleet.as_mut() {
            f.load_job = Some(job.name.clone());
        }
        if let Some(e) = earlier {
            // Finished and read back; deleting it now leaves the teardown one Job to delete.
            super::apply::delete_fleet(
                &self.client,
                &self.opts.namespace,
                &[],
                std::slice::from_ref(&e),
                Duration::from_secs(60),
            )
            .await
            .with_context(|| format!("deleting the earlier load Job {e}"))?;
        }
        super::apply::apply(&self.client, &self.opts.namespace, &job).await?;
        let limit = Duration::from_secs(120) + load_job::GATE_TIMEOUT;
        if !Self::wait_or(&shared, limit, |s| s.load.started || s.load.exit.is_some()).await {
            let why = shared.with(|s| match (&s.load.waiting, &s.load.pod) {
                (Some(w), _) => w.clone(),
                (None, Some(pod)) => format!("{pod} runs but its load has not begun (see its log for the gate)"),
                (None, None) => "no pod yet".into(),
            });
            bail!("the load Job {} did not start within {limit:?}: {why}", job.name);
        }
        let pods = self.pods();
        confirm_started(&pods, &shared, &job.name).await?;
        let n = shared.ready_endpoints.load(Ordering::Relaxed);
        shared.with(|s| s.samples.push((now_ms(), n)));
        Ok(tokio::spawn(async move {
            if !Self::wait_or(&shared, run_limit, |s| s.load.exit.is_some()).await {
                bail!("the load generator did not finish within {run_limit:?}");
            }
            let (task, path, pod, exit) = shared
                .with(|s| (s.load.log_task.take(), s.load.log_path.clone(), s.load.pod.clone(), s.load.exit.clone()));
            if let Some(t) = task {
                let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
            }
            let streamed = path.as_deref().map(std::fs::read_to_string).transpose().ok().flatten().unwrap_or_default();
            match load_job::extract_result(&streamed) {
                Ok(r) => Ok(r),
                Err(first) => {
                    // The stream may have broken off; the pod keeps its whole log.
                    let pod = pod.context("the load pod has no name")?;
                    let full = pods
                        .logs(&pod, &LogParams::default())
                        .await
                        .with_context(|| format!("reading the log of {pod}"))?;
                    load_job::extract_result(&full).map_err(|_| first).with_context(|| {
                        format!(
                            "the load generator ({pod}, {}) returned no result",
                            exit.map(|e| e.describe()).unwrap_or_default()
                        )
                    })
                }
            }
        }))
    }
}
