//! The backing services for a run: a RabbitMQ broker and a PostgreSQL server.
//!
//! Each one comes either from the environment (`AMQP_URL`, `DATABASE_URL`), in which case it
//! is only checked for reachability and never touched again, or is started privately from the
//! binaries installed on this machine, on free loopback ports, with all of its state in a
//! fresh temporary directory under the run's work directory. Private servers are stopped and
//! their directory removed by [`Backends::release`] (or, best effort, when [`Backends`] is
//! dropped without being released, e.g. on an error path).
//!
//! The module never touches data it did not create: it only ever creates its own temporary
//! directory and its own server processes.

mod fault_ctl;
mod net;
mod postgres;
mod process;
mod rabbitmq;
mod restart;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_epmd;
#[cfg(test)]
mod tests_restart;
mod watchdog;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use fault_ctl::FaultControl;
pub(crate) use net::{amqp_endpoint, postgres_endpoint, Endpoint};
use process::{ServerProc, TempDir};
use restart::Server;
pub(crate) use restart::{Restarted, Service};
use watchdog::Watchdog;

/// Where a backing service comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Provided by the caller through `AMQP_URL` / `DATABASE_URL`; never started or stopped here.
    Env,
    /// Started by this module for this run; stopped and deleted by [`Backends::release`].
    Private,
}

/// The broker and database a run talks to.
pub struct Backends {
    pub amqp_url: String,
    pub database_url: String,
    pub amqp_origin: Origin,
    pub db_origin: Origin,
    amqp_desc: String,
    db_desc: String,
    // Stop order: servers first, then their directories. Each server sits behind its own
    // lock so that restarts of one are serialised (restart.rs) without blocking the other.
    rabbit: tokio::sync::Mutex<Option<Server>>,
    postgres: tokio::sync::Mutex<Option<Server>>,
    dirs: Vec<TempDir>,
    /// Cleans up if this process dies without `release()` or `Drop` (see watchdog.rs).
    watchdog: Option<Watchdog>,
}

const AMQP_VAR: &str = "AMQP_URL";
const DB_VAR: &str = "DATABASE_URL";

/// How long a private server gets to shut down gracefully in `release()` before SIGKILL.
const RABBIT_GRACE: Duration = Duration::from_secs(30);
const PG_GRACE: Duration = Duration::from_secs(15);
/// The same, when `Backends` is dropped without `release()` (we may be unwinding or exiting).
const DROP_GRACE: Duration = Duration::from_secs(5);

impl Backends {
    /// `AMQP_URL` / `DATABASE_URL` when set (checked reachable, with a clear error if not);
    /// otherwise private instances started from the binaries on PATH, on free loopback
    /// ports, in a fresh temp dir under `workdir`.
    pub async fn acquire(workdir: &Path) -> Result<Backends> {
        Self::acquire_with(workdir, env_url(AMQP_VAR)?, env_url(DB_VAR)?).await
    }

    /// A private pair whatever the environment says: the servers that
    /// [`Backends::restart`] may take down, which nothing else may be using.
    pub async fn acquire_private(workdir: &Path) -> Result<Backends> {
        Self::acquire_with(workdir, None, None).await
    }

    /// [`Backends::acquire`] with the two variables passed in (tests must not touch the
    /// process-global environment).
    pub(crate) async fn acquire_with(
        workdir: &Path,
        amqp_env: Option<String>,
        db_env: Option<String>,
    ) -> Result<Backends> {
        let amqp_env = amqp_env.filter(|v| !v.trim().is_empty());
        let db_env = db_env.filter(|v| !v.trim().is_empty());

        // 1. Environment-provided servers: check them before starting anything.
        let mut amqp_desc = String::new();
        if let Some(url) = &amqp_env {
            let ep = net::check_amqp_url(url).await.with_context(|| format!("{AMQP_VAR} is set but unusable"))?;
            amqp_desc = format!("${AMQP_VAR} ({ep})");
            eprintln!("[infra] RabbitMQ: using {amqp_desc}");
        }
        let mut db_desc = String::new();
        if let Some(url) = &db_env {
            let ep = net::check_postgres_url(url).await.with_context(|| format!("{DB_VAR} is set but unusable"))?;
            db_desc = format!("${DB_VAR} ({ep})");
            eprintln!("[infra] PostgreSQL: using {db_desc}");
        }

        // 2. Locate what must be started privately; report everything missing at once.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let rabbit_bins = amqp_env.is_none().then(|| rabbitmq::locate(&path, Path::new(rabbitmq::DEBIAN_SCRIPT_DIR)));
        let pg_bins = db_env.is_none().then(|| postgres::locate(&path, Path::new(postgres::DEBIAN_VERSIONED_ROOT)));
        let missing: Vec<String> = [
            rabbit_bins.as_ref().and_then(|r| r.as_ref().err().cloned()),
            pg_bins.as_ref().and_then(|r| r.as_ref().err().cloned()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !missing.is_empty() {
            bail!("{}", missing.join("\n"));
        }
        let rabbit_bins = rabbit_bins.map(|r| r.expect("checked above"));
        let pg_bins = pg_bins.map(|r| r.expect("checked above"));

        let mut backends = Backends {
            amqp_url: amqp_env.clone().unwrap_or_default(),
            database_url: db_env.clone().unwrap_or_default(),
            amqp_origin: if amqp_env.is_some() { Origin::Env } else { Origin::Private },
            db_origin: if db_env.is_some() { Origin::Env } else { Origin::Private },
            amqp_desc,
            db_desc,
            rabbit: Default::default(),
            postgres: Default::default(),
            dirs: Vec::new(),
            watchdog: None,
        };
        if rabbit_bins.is_none() && pg_bins.is_none() {
            return Ok(backends);
        }

        // 3. Start the private ones, concurrently, in a fresh directory.
        let tmp = TempDir::create_under(workdir)?;
        let tmp_path = tmp.path().to_path_buf();
        backends.dirs.push(tmp);
        let wd = Watchdog::spawn()?;
        wd.watch_dir(&tmp_path);
        let wd = &*backends.watchdog.insert(wd);
        let rabbit_fut = async {
            match &rabbit_bins {
                Some(bins) => Some(rabbitmq::start(bins, &tmp_path, wd).await),
                None => None,
            }
        };
        let pg_fut = async {
            match &pg_bins {
                Some(bins) => Some(postgres::start(bins, &tmp_path, wd).await),
                None => None,
            }
        };
        let (rabbit, pg) = tokio::join!(rabbit_fut, pg_fut);

        // Keep whatever started so that an error below still stops it (via Drop).
        let mut errors = Vec::new();
        match rabbit {
            Some(Ok(started)) => {
                backends.amqp_url = started.url;
                backends.amqp_desc = started.desc;
                *backends.rabbit.get_mut() =
                    Some(Server { proc: started.proc, launch: started.launch, helper: started.helper });
            }
            Some(Err(e)) => errors.push(format!("{e:#}")),
            None => {}
        }
        match pg {
            Some(Ok(started)) => {
                backends.database_url = started.url;
                backends.db_desc = started.desc;
                *backends.postgres.get_mut() =
                    Some(Server { proc: started.proc, launch: started.launch, helper: started.helper });
                backends.dirs.extend(started.extra_dir);
            }
            Some(Err(e)) => errors.push(format!("{e:#}")),
            None => {}
        }
        if !errors.is_empty() {
            let msg = errors.join("\n\n");
            // Stop what did start, off the async threads.
            tokio::task::spawn_blocking(move || backends.shutdown_blocking(DROP_GRACE, DROP_GRACE)).await.ok();
            bail!("{msg}");
        }
        Ok(backends)
    }

    /// Stops private instances (gracefully, then SIGKILL after a bound) and removes their
    /// temp dir. Env-provided servers are never touched.
    pub async fn release(mut self) -> Result<()> {
        if self.nothing_private() {
            return Ok(());
        }
        let started = Instant::now();
        eprintln!("[infra] stopping private servers ...");
        let result = tokio::task::spawn_blocking(move || self.shutdown_blocking(RABBIT_GRACE, PG_GRACE))
            .await
            .context("the infra shutdown task panicked")?;
        if result.is_ok() {
            eprintln!("[infra] private servers stopped in {:.1} s", started.elapsed().as_secs_f64());
        }
        result
    }

    /// One line for the progress output and the report.
    pub fn describe(&self) -> String {
        format!("RabbitMQ: {}; PostgreSQL: {}", self.amqp_desc, self.db_desc)
    }

    /// Signals every private server, then waits for each (bounded), then stops their
    /// helpers (RabbitMQ's epmd), then removes the directories. Idempotent: everything is
    /// `take()`n.
    fn shutdown_blocking(&mut self, rabbit_grace: Duration, pg_grace: Duration) -> Result<()> {
        let mut procs: Vec<(ServerProc, Duration)> = Vec::new();
        let mut helpers: Vec<ServerProc> = Vec::new();
        for (slot, grace) in [(&mut self.rabbit, rabbit_grace), (&mut self.postgres, pg_grace)] {
            if let Some(s) = slot.get_mut().take() {
                procs.push((s.proc, grace));
                helpers.extend(s.helper);
            }
        }
        for (p, _) in &mut procs {
            p.begin_stop();
        }
        let mut errors = Vec::new();
        for (mut p, grace) in procs {
            if let Err(e) = p.finish_stop(grace) {
                errors.push(format!("{e:#}"));
            }
        }
        // Only once the servers are gone: a broker still running would find its epmd
        // missing, and the node deregisters from it as it stops.
        for h in &mut helpers {
            h.begin_stop();
        }
        for mut h in helpers {
            if let Err(e) = h.finish_stop(rabbitmq::EPMD_GRACE) {
                errors.push(format!("{e:#}"));
            }
        }
        for dir in self.dirs.drain(..) {
            if let Err(e) = dir.remove() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(w) = self.watchdog.take() {
            w.dismiss();
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("[infra] cleanup incomplete:\n{}", errors.join("\n"))
        }
    }

    fn nothing_private(&mut self) -> bool {
        self.rabbit.get_mut().is_none()
            && self.postgres.get_mut().is_none()
            && self.dirs.is_empty()
            && self.watchdog.is_none()
    }

    #[cfg(test)]
    fn private_dirs(&self) -> Vec<std::path::PathBuf> {
        self.dirs.iter().map(|d| d.path().to_path_buf()).collect()
    }

    /// The process groups of the servers' helpers (RabbitMQ's epmd).
    #[cfg(test)]
    fn helper_pgids(&self) -> Vec<i32> {
        [&self.rabbit, &self.postgres]
            .iter()
            .filter_map(|slot| slot.try_lock().ok()?.as_ref()?.helper.as_ref().map(|h| h.pgid()))
            .collect()
    }

    #[cfg(test)]
    fn private_pgids(&self) -> Vec<i32> {
        [&self.rabbit, &self.postgres]
            .iter()
            .filter_map(|slot| slot.try_lock().ok()?.as_ref().map(|s| s.proc.pgid()))
            .collect()
    }
}

impl Drop for Backends {
    /// Best effort: stop private servers if `release()` was not called (error, Ctrl-C).
    fn drop(&mut self) {
        if self.nothing_private() {
            return;
        }
        eprintln!("[infra] backends dropped without release(): stopping private servers");
        if let Err(e) = self.shutdown_blocking(DROP_GRACE, DROP_GRACE) {
            eprintln!("{e:#}");
        }
    }
}

impl fmt::Debug for Backends {
    // Hand-written so that credentials in env-provided URLs never end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backends")
            .field("amqp", &self.amqp_desc)
            .field("db", &self.db_desc)
            .field("amqp_origin", &self.amqp_origin)
            .field("db_origin", &self.db_origin)
            .finish_non_exhaustive()
    }
}

/// What a private start produces.
struct Started {
    url: String,
    desc: String,
    proc: ServerProc,
    /// A process the server needs beside it, started before it and stopped after it, that
    /// stays up across restarts of the server: RabbitMQ's own epmd.
    helper: Option<ServerProc>,
    /// A second directory, when the first one was not usable by the server's user.
    extra_dir: Option<TempDir>,
    /// How to start it again (restart.rs).
    launch: Launch,
}

/// How a private server was started, to start it again the same way (restart.rs).
/// Here, beside both servers' modules, because each of them builds one and restart.rs
/// runs one.
#[derive(Debug, Clone)]
enum Launch {
    Rabbit(rabbitmq::Launch),
    Postgres(postgres::Launch),
}

impl Launch {
    async fn run(&self, watchdog: &watchdog::Watchdog) -> Result<process::ServerProc> {
        match self {
            Launch::Rabbit(l) => rabbitmq::launch(l, watchdog).await,
            Launch::Postgres(l) => postgres::launch(l, watchdog).await,
        }
    }
}

fn env_url(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is set but is not valid UTF-8"),
    }
}

/// The last `n` lines of a log file, indented, for error messages.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            if lines.is_empty() {
                format!("--- {} (empty)", path.display())
            } else {
                let mut out = format!("--- last {} lines of {}:", lines.len() - start, path.display());
                for l in &lines[start..] {
                    out.push_str("\n    ");
                    out.push_str(l);
                }
                out
            }
        }
        Err(e) => format!("--- {}: {e}", path.display()),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Compile-time check: the runner may move these futures and `Backends` across threads.
#[allow(dead_code)]
fn _assert_send(workdir: &Path, b: Backends) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&Backends::acquire(workdir));
    is_send(&b);
    is_send(&b.release());
}
