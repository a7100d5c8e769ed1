//! A capability: a rolling deploy whose new pods get a changed environment, as
//! `kubectl set env deployment/worker K=V` rolls a new template. `cargo xtask migrate`
//! deploys each new worker version this way, under load, between schema steps. Local:
//! the fleet's own rollout with the env in the new revision's template; kind: the
//! same strategic-merge patch `cargo xtask rollout --set-env` uses (`kind/reconfigure.rs`).

use crate::local::platform::LocalPlatform;
use crate::local::pod::App;
use crate::Platform;
use anyhow::Result;
use std::time::Duration;

#[allow(async_fn_in_trait)]
pub trait RolloutWithEnv: Platform {
    /// Rolls both deployments, or `only` one, to a template with `env` set (kept by
    /// every later revision); returns when the rollout is complete, like
    /// [`Platform::rollout`] (old pods may still be terminating: `wait_terminations`).
    async fn rollout_with_env(&mut self, env: &[(String, String)], only: Option<App>) -> Result<Duration>;
}

impl RolloutWithEnv for LocalPlatform {
    async fn rollout_with_env(&mut self, env: &[(String, String)], only: Option<App>) -> Result<Duration> {
        tracing::info!(?env, only = only.map(App::name), "rolling deploy with a changed environment");
        self.fleet()?.rollout_with(env.to_vec(), only).await
    }
}
