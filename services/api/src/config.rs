use crate::breaker::BreakerConfig;
use crate::fault::Faults;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use zerodrop_stages::AppBehaviour;

/// Everything the api reads from its environment, with the defaults in one place.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub amqp_url: String,
    pub queue: String,
    /// Requests served at once by this instance; beyond it, 503 + Retry-After.
    pub capacity: usize,
    /// Cost of filling one slot of the cold cache.
    pub warm_fill: Duration,
    /// Upper bound for `GET /work?ms=`.
    pub max_work_ms: u64,
    /// Where shadow copies of jobs go (`ZD_SHADOW_QUEUE`): a queue whose worker writes a
    /// ledger of its own. Unset, a copied job is refused ([`crate::shadow`]).
    pub shadow_queue: Option<String>,
    /// How long `/work` and `/jobs` may take before they are answered 503.
    pub request_timeout: Duration,
    /// How long a request body may stop arriving before it is answered 408.
    pub body_read_timeout: Duration,
    pub behaviour: AppBehaviour,
    /// Request-level fault injection (`ZD_FAULTS`, off unless the lab switches it on).
    pub faults: Faults,
    /// The breaker in front of the broker publish (`ZD_BREAKER`, off by default).
    pub breaker: BreakerConfig,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let max_work_ms: u64 =
            var("ZD_MAX_WORK_MS", "60000")?.parse().context("ZD_MAX_WORK_MS must be milliseconds")?;
        Ok(Config {
            listen: var("ZD_LISTEN", "127.0.0.1:8080")?.parse().context("ZD_LISTEN must be an ip:port")?,
            amqp_url: var("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")?,
            queue: var("ZD_QUEUE", "zerodrop.jobs")?,
            shadow_queue: Some(var("ZD_SHADOW_QUEUE", "")?.trim().to_string()).filter(|q| !q.is_empty()),
            capacity: var("ZD_CAPACITY", "16")?.parse().context("ZD_CAPACITY must be a positive integer")?,
            warm_fill: Duration::from_millis(
                var("ZD_WARM_FILL_MS", "40")?.parse().context("ZD_WARM_FILL_MS must be milliseconds")?,
            ),
            max_work_ms,
            request_timeout: request_timeout(max_work_ms)?,
            body_read_timeout: positive_ms("ZD_BODY_READ_TIMEOUT_MS", BODY_READ_TIMEOUT_MS)?,
            behaviour: AppBehaviour::from_env()?,
            faults: Faults::from_env()?,
            breaker: breaker()?,
        })
    }
}

/// Above the longest `/work` allowed by default, so a legal request is only cut when
/// it also queued behind the cold cache or a regression for more than this headroom.
const REQUEST_TIMEOUT_HEADROOM_MS: u64 = 5_000;

/// The same as the header-read timeout (`ZD_HEADER_READ_TIMEOUT_MS`): a client that
/// pauses this long inside its request is treated alike in the head and in the body.
const BODY_READ_TIMEOUT_MS: u64 = 5_000;

fn request_timeout(max_work_ms: u64) -> Result<Duration> {
    positive_ms("ZD_REQUEST_TIMEOUT_MS", max_work_ms.saturating_add(REQUEST_TIMEOUT_HEADROOM_MS))
}

/// `ZD_BREAKER` (`on`/`off`), `ZD_BREAKER_FAILURES`, `ZD_BREAKER_OPEN_MS`, `ZD_BREAKER_SLOW_MS`.
fn breaker() -> Result<BreakerConfig> {
    let d = BreakerConfig::default();
    let enabled = match var("ZD_BREAKER", "off")?.trim() {
        "on" => true,
        "off" => false,
        other => anyhow::bail!("ZD_BREAKER must be `on` or `off`, got `{other}`"),
    };
    let failures: u32 = var("ZD_BREAKER_FAILURES", &d.failures.to_string())?
        .parse()
        .context("ZD_BREAKER_FAILURES must be a positive integer")?;
    anyhow::ensure!(failures > 0, "ZD_BREAKER_FAILURES must be above 0");
    Ok(BreakerConfig {
        enabled,
        failures,
        open_for: positive_ms("ZD_BREAKER_OPEN_MS", d.open_for.as_millis() as u64)?,
        slow: positive_ms("ZD_BREAKER_SLOW_MS", d.slow.as_millis() as u64)?,
    })
}

fn positive_ms(name: &str, default: u64) -> Result<Duration> {
    let ms: u64 = var(name, &default.to_string())?.parse().with_context(|| format!("{name} must be milliseconds"))?;
    anyhow::ensure!(ms > 0, "{name} must be above 0");
    Ok(Duration::from_millis(ms))
}

fn var(name: &str, default: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => Ok(default.to_string()),
        Err(e) => Err(e).with_context(|| format!("reading {name}")),
    }
}
