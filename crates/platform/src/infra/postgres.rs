//! A private PostgreSQL: `initdb` into the temp dir, then `postgres` on a free loopback port.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::net::{self, Endpoint};
use super::process::{self, RunAs, ServerProc, TempDir};
use super::watchdog::Watchdog;
use super::{secs, Started};

/// Where Debian/Ubuntu install the server binaries, one directory per major version.
pub(super) const DEBIAN_VERSIONED_ROOT: &str = "/usr/lib/postgresql";

const READY_BOUND: Duration = Duration::from_secs(30);
const INITDB_BOUND: Duration = Duration::from_secs(120);
/// sun_path is 108 bytes; leave room for "/.s.PGSQL.65535" and the lock file suffix.
const MAX_SOCKET_DIR_LEN: usize = 80;

#[derive(Debug, Clone)]
pub(super) struct PgBins {
    pub initdb: PathBuf,
    pub postgres: PathBuf,
    pub pg_isready: Option<PathBuf>,
}

/// Finds `initdb` + `postgres`: on `path` first, then in `<versioned_root>/<ver>/bin`
/// (highest version). The error is the one-paragraph message shown to the user.
pub(super) fn locate(path: &OsStr, versioned_root: &Path) -> Result<PgBins, String> {
    let on_path = process::which("initdb", path).and_then(|initdb| {
        // Prefer the postgres next to the (resolved) initdb: same version for sure.
        let dir = initdb.canonicalize().ok()?.parent()?.to_path_buf();
        let postgres = Some(dir.join("postgres"))
            .filter(|p| process::is_executable(p))
            .or_else(|| process::which("postgres", path))?;
        Some((initdb, postgres))
    });
    let found = on_path.or_else(|| {
        let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versioned_root)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let key = name.split('.').map(|p| p.parse::<u32>().ok()).collect::<Option<Vec<_>>>()?;
                Some((key, e.path().join("bin")))
            })
            .filter(|(_, bin)| {
                process::is_executable(&bin.join("initdb")) && process::is_executable(&bin.join("postgres"))
            })
            .collect();
        versions.sort();
        let (_, bin) = versions.pop()?;
        Some((bin.join("initdb"), bin.join("postgres")))
    });
    let Some((initdb, postgres)) = found else {
        return Err(format!(
            "PostgreSQL not found (no initdb/postgres on PATH or in {}/*/bin): install it \
             (Debian/Ubuntu: `sudo apt-get install postgresql`) or point DATABASE_URL at a running server",
            versioned_root.display()
        ));
    };
    let pg_isready = postgres
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("pg_isready")))
        .filter(|p| process::is_executable(p))
        .or_else(|| process::which("pg_isready", path));
    Ok(PgBins { initdb, postgres, pg_isready })
}

/// "PostgreSQL 15.8" from `postgres --version` ("postgres (PostgreSQL) 15.8 (Debian ...)").
fn version(bins: &PgBins) -> String {
    let out = Command::new(&bins.postgres).arg("--version").output().ok();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    match text.split_once("(PostgreSQL)") {
        Some((_, rest)) => match rest.split_whitespace().next() {
            Some(v) => format!("PostgreSQL {v}"),
            None => "PostgreSQL".into(),
        },
        None => "PostgreSQL".into(),
    }
}

/// PostgreSQL refuses to run as root: pick the account to run it as, if any.
fn run_as() -> Result<Option<RunAs>> {
    if !process::euid_is_root() {
        return Ok(None);
    }
    match process::lookup_user("postgres").or_else(|| process::lookup_user("nobody")) {
        Some(u) => Ok(Some(u)),
        None => bail!(
            "PostgreSQL refuses to run as root, and neither a `postgres` nor a `nobody` user exists \
             to run it as; run as a normal user or point DATABASE_URL at a running server"
        ),
    }
}

pub(super) async fn start(bins: &PgBins, tmp: &Path, watchdog: &Watchdog) -> Result<Started> {
    let t0 = Instant::now();
    let version = version(bins);
    let user = run_as()?;

    // The data directory must be reachable by the server's user; the work dir may not be
    // (e.g. under a 0700 home). Then fall back to a fresh dir under the system temp dir.
    let mut extra_dir = None;
    let mut base = tmp.join("postgres");
    fs::create_dir(&base).with_context(|| format!("creating {}", base.display()))?;
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755))?;
    if let Some(u) = &user {
        if !process::reachable_by(&base, u) {
            let alt = TempDir::create_under(&std::env::temp_dir())?;
            eprintln!(
                "[infra] {} is not reachable by user {}; PostgreSQL data goes to {}",
                tmp.display(),
                u.name,
                alt.path().display()
            );
            base = alt.path().to_path_buf();
            watchdog.watch_dir(&base);
            extra_dir = Some(alt);
        }
    }
    let data = base.join("data");
    fs::create_dir(&data).with_context(|| format!("creating {}", data.display()))?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700))?;
    if let Some(u) = &user {
        process::chown(&data, u)?;
    }

    let port = net::free_ports(1)?[0];
    let who = user.as_ref().map(|u| format!(", as user {}", u.name)).unwrap_or_default();
    eprintln!("[infra] starting private PostgreSQL ({version}) on 127.0.0.1:{port}{who} ...");

    // initdb
    let initdb_log = base.join("initdb.log");
    let mut cmd = Command::new(&bins.initdb);
    cmd.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-locale"])
        .current_dir("/")
        .env("LC_ALL", "C")
        .env_remove("PGDATA");
    let tag = base.to_string_lossy().into_owned();
    process::prepare(&mut cmd, &initdb_log, user.as_ref(), &tag)?;
    process::run_bounded(cmd, "initdb", &initdb_log, INITDB_BOUND).await?;

    let mut l = Launch { bins: bins.clone(), data, port, user, tag, log: base.join("postgres.log") };
    // The data directory does not depend on the port: a taken port only needs a new pick.
    let mut attempt = 1;
    let proc = loop {
        match launch(&l, watchdog).await {
            Err(e) if attempt < net::PORT_ATTEMPTS && net::port_taken(&format!("{e:#}")) => {
                l.port = net::free_ports(1)?[0];
                eprintln!(
                    "[infra] PostgreSQL: port taken before it bound it; starting again on 127.0.0.1:{} ({attempt}/{})",
                    l.port,
                    net::PORT_ATTEMPTS
                );
                attempt += 1;
            }
            r => break r?,
        }
    };
    let port = l.port;
    eprintln!("[infra] PostgreSQL ready in {}", secs(t0.elapsed()));
    Ok(Started {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        desc: format!("private ({version}, 127.0.0.1:{port})"),
        proc,
        helper: None,
        extra_dir,
        launch: super::Launch::Postgres(l),
    })
}

/// Everything needed to (re)launch the server on the same data directory and port, so a
/// restarted server has every committed row.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    bins: PgBins,
    data: PathBuf,
    port: u16,
    user: Option<RunAs>,
    tag: String,
    log: PathBuf,
}

/// Starts `postgres` on an initialised data directory and waits until it takes queries.
pub(super) async fn launch(l: &Launch, watchdog: &Watchdog) -> Result<ServerProc> {
    let socket_dir = if l.data.as_os_str().len() <= MAX_SOCKET_DIR_LEN { l.data.as_os_str() } else { OsStr::new("") };
    let mut cmd = Command::new(&l.bins.postgres);
    cmd.arg("-D")
        .arg(&l.data)
        .arg("-p")
        .arg(l.port.to_string())
        .arg("-k")
        .arg(socket_dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"])
        .current_dir("/")
        .env("LC_ALL", "C")
        .env_remove("PGDATA");
    process::prepare(&mut cmd, &l.log, l.user.as_ref(), &l.tag)?;
    // SIGINT = "fast" shutdown: disconnect clients, checkpoint, exit (SIGTERM would wait
    // for every client to disconnect).
    let mut proc = ServerProc::spawn("PostgreSQL", &mut cmd, libc::SIGINT, vec![l.log.clone()], &l.tag)?;
    watchdog.watch_proc(proc.pgid(), libc::SIGINT);

    let ep = Endpoint::Tcp { host: "127.0.0.1".into(), port: l.port };
    let deadline = Instant::now() + READY_BOUND;
    loop {
        if let Some(status) = proc.exited() {
            bail!("private PostgreSQL exited during startup ({status})\n{}", proc.log_tails(30));
        }
        if net::postgres_ready(&ep, "postgres", "postgres").await.unwrap_or(false) && pg_isready(&l.bins, l.port).await
        {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            let tails = proc.log_tails(30);
            drop(proc); // stops it
            bail!("private PostgreSQL did not accept connections on {ep} within {}\n{tails}", secs(READY_BOUND));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `pg_isready` as a second opinion, when installed (true when it is not).
async fn pg_isready(bins: &PgBins, port: u16) -> bool {
    let Some(exe) = &bins.pg_isready else {
        return true;
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-t", "3"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    matches!(cmd.status().await, Ok(s) if s.success())
}
