//! A private RabbitMQ node: its own node name, ports, config, data, logs and Erlang cookie,
//! all under the temp dir, so it never meets the system broker (`rabbit@localhost`).
//!
//! It also gets its own Erlang port mapper. Left to itself, a node (and the one-off
//! `erl -sname epmd-starter-N` that RabbitMQ's `rabbit_nodes_common:ensure_epmd/0`
//! spawns) runs `epmd -daemon` when none answers on `ERL_EPMD_PORT` (default 4369): that
//! daemon outlives the broker, and inside a lab it kept the lab's network namespace alive
//! forever. So we start `epmd -port <free port>` in the foreground as a supervised child
//! before the broker, point the node at it (`ERL_EPMD_PORT`), and forbid every Erlang VM of
//! the node from starting one (`ERL_ZFLAGS=-start_epmd false`, which `erl` reads from the
//! environment, so the epmd-starter inherits it). The broker is stopped first, then its epmd.
//! A private port also keeps us off a system-wide epmd on 4369 (the system broker's).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;

use super::net::{self, Endpoint};
use super::process::{self, ServerProc};
use super::watchdog::Watchdog;
use super::{secs, Started};

/// Where Debian/Ubuntu keep the real start scripts; `/usr/sbin/rabbitmq-server` is a wrapper
/// that `su`s to the `rabbitmq` user and runs the system node's environment.
pub(super) const DEBIAN_SCRIPT_DIR: &str = "/usr/lib/rabbitmq/bin";

const READY_BOUND: Duration = Duration::from_secs(60);

/// How long our epmd gets to accept connections before the broker is started.
const EPMD_READY_BOUND: Duration = Duration::from_secs(10);
/// How long our epmd gets to exit after SIGTERM (it has nothing to flush).
pub(super) const EPMD_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(super) struct RabbitBins {
    /// The real `rabbitmq-server` script (the one that sources `rabbitmq-env` beside it).
    pub script: PathBuf,
    /// Erlang's port mapper, run by us for the node (see the module docs).
    pub epmd: PathBuf,
    /// "rabbitmq-server 3.10.8" (or just "rabbitmq-server" when the version is not visible).
    pub version: String,
}

/// Finds the real `rabbitmq-server` script and `erl`. `path` is a PATH value; `script_dir`
/// is where a distribution keeps the real script behind a wrapper.
pub(super) fn locate(path: &OsStr, script_dir: &Path) -> Result<RabbitBins, String> {
    let missing = || {
        "RabbitMQ not found (no rabbitmq-server on PATH): install it \
         (Debian/Ubuntu: `sudo apt-get install rabbitmq-server`) or point AMQP_URL at a running broker"
            .to_string()
    };
    let found = process::which("rabbitmq-server", path).ok_or_else(missing)?;
    // The real script is named rabbitmq-server (after resolving symlinks) and sources the
    // `rabbitmq-env` beside it. Debian's /usr/sbin/rabbitmq-server resolves to
    // `rabbitmq-script-wrapper`, which `su`s to the rabbitmq user; run as anything but the
    // real script it even re-executes itself forever. So: only ever run a resolved real script.
    let real = |p: &Path| {
        let c = p.canonicalize().ok()?;
        let ok = c.file_name()? == "rabbitmq-server" && c.parent()?.join("rabbitmq-env").is_file();
        ok.then_some(c)
    };
    let Some(script) = real(&found).or_else(|| real(&script_dir.join("rabbitmq-server"))) else {
        return Err(format!(
            "RabbitMQ's start script not found: {} is a wrapper and {}/rabbitmq-server does not exist; \
             reinstall it (Debian/Ubuntu: `sudo apt-get install --reinstall rabbitmq-server`) \
             or point AMQP_URL at a running broker",
            found.display(),
            script_dir.display()
        ));
    };
    let Some(erl) = process::which("erl", path) else {
        return Err(format!(
            "RabbitMQ found ({}) but Erlang's `erl` is not on PATH: install Erlang \
             (Debian/Ubuntu: `sudo apt-get install rabbitmq-server` pulls it in) or point AMQP_URL at a running broker",
            script.display()
        ));
    };
    // epmd ships with erl (erlang-base); Debian links both into /usr/bin, other layouts
    // may only have it beside the real `erl`.
    let beside_erl = || Some(erl.canonicalize().ok()?.parent()?.join("epmd")).filter(|p| process::is_executable(p));
    let Some(epmd) = process::which("epmd", path).or_else(beside_erl) else {
        return Err(format!(
            "Erlang's port mapper `epmd` is neither on PATH nor beside {}: reinstall Erlang \
             (Debian/Ubuntu: `sudo apt-get install --reinstall erlang-base`) or point AMQP_URL at a running broker",
            erl.display()
        ));
    };
    // ".../rabbitmq_server-3.10.8/sbin/rabbitmq-server" carries the version.
    let version = script
        .canonicalize()
        .ok()
        .and_then(|p| {
            p.ancestors()
                .filter_map(|a| a.file_name()?.to_str()?.strip_prefix("rabbitmq_server-").map(str::to_string))
                .next()
        })
        .map(|v| format!("rabbitmq-server {v}"))
        .unwrap_or_else(|| "rabbitmq-server".into());
    Ok(RabbitBins { script, epmd, version })
}

static NODE_SEQ: AtomicU32 = AtomicU32::new(0);

/// Everything needed to (re)launch one private node: the same node name, ports and
/// directories each time, so a restarted node finds its durable queues again.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    script: PathBuf,
    version: String,
    base: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    /// Where our own epmd listens (it outlives restarts of the node, as a system one would).
    epmd_port: u16,
}

/// Starts a node, and again with new ports (in a fresh directory) when one of the picked
/// ports was taken before the node bound it.
pub(super) async fn start(bins: &RabbitBins, tmp: &Path, watchdog: &Watchdog) -> Result<Started> {
    let mut attempt = 1;
    loop {
        match start_once(bins, tmp, attempt, watchdog).await {
            Err(e) if attempt < net::PORT_ATTEMPTS && net::port_taken(&format!("{e:#}")) => {
                eprintln!(
                    "[infra] RabbitMQ: a picked port was taken before the node bound it; \
                     starting again with new ports ({attempt}/{})",
                    net::PORT_ATTEMPTS
                );
                attempt += 1;
            }
            r => return r,
        }
    }
}

async fn start_once(bins: &RabbitBins, tmp: &Path, attempt: u32, watchdog: &Watchdog) -> Result<Started> {
    let t0 = Instant::now();
    let l = prepare(bins, tmp, attempt)?;
    eprintln!(
        "[infra] starting private RabbitMQ ({}, node {}) on 127.0.0.1:{}, its epmd on 127.0.0.1:{} ...",
        l.version, l.node, l.port, l.epmd_port
    );
    let mut epmd = start_epmd(&bins.epmd, &l, watchdog).await?;
    let proc = match launch(&l, watchdog).await {
        Ok(p) => p,
        Err(e) => {
            // Off the async threads: the stop polls and sleeps.
            let _ = tokio::task::spawn_blocking(move || epmd.finish_stop(EPMD_GRACE)).await;
            return Err(e);
        }
    };
    eprintln!("[infra] RabbitMQ ready in {}", secs(t0.elapsed()));
    Ok(Started {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", l.port),
        desc: format!("private ({}, 127.0.0.1:{})", l.version, l.port),
        proc,
        helper: Some(epmd),
        extra_dir: None,
        launch: super::Launch::Rabbit(l),
    })
}

/// The node's own epmd, in the foreground (no `-daemon`): our child, in its own process
/// group, tagged apart from the broker so that stopping the broker leaves it alone while a
/// restart brings the node back.
async fn start_epmd(epmd: &Path, l: &Launch, watchdog: &Watchdog) -> Result<ServerProc> {
    let log = l.base.join("epmd.log");
    let mut cmd = Command::new(epmd);
    // -address: loopback only, as the system's env file has it for the system node.
    cmd.args(["-port", &l.epmd_port.to_string(), "-address", "127.0.0.1"]).current_dir(&l.base);
    let tag = epmd_tag(&l.base);
    process::prepare(&mut cmd, &log, None, &tag)?;
    let mut proc = ServerProc::spawn("epmd", &mut cmd, libc::SIGTERM, vec![log], &tag)?;
    watchdog.watch_proc(proc.pgid(), libc::SIGTERM);
    let ep = Endpoint::Tcp { host: "127.0.0.1".into(), port: l.epmd_port };
    let deadline = Instant::now() + EPMD_READY_BOUND;
    loop {
        if let Some(status) = proc.exited() {
            // Most likely its port was taken between picking and binding it: epmd then finds
            // "an epmd" answering there and exits 0 without a word.
            bail!("{} ({status})\n{}", net::EPMD_EXITED_AT_START, proc.log_tails(30));
        }
        if net::accepts(&ep).await {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            let tails = proc.log_tails(30);
            // Off the async threads: the stop polls and sleeps.
            let _ = tokio::task::spawn_blocking(move || proc.finish_stop(EPMD_GRACE)).await;
            bail!("the private RabbitMQ's epmd did not listen on {ep} within {}\n{tails}", secs(EPMD_READY_BOUND));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tag of a node's epmd: distinct from the node's own (its base dir), but under it, so
/// that a search for everything under the run's directory finds both.
fn epmd_tag(base: &Path) -> String {
    base.join("epmd").to_string_lossy().into_owned()
}

/// Creates the node's directories, config and cookie, and picks its ports.
fn prepare(bins: &RabbitBins, tmp: &Path, attempt: u32) -> Result<Launch> {
    // A retry starts from a clean node directory: the failed one may hold half a mnesia.
    let base = if attempt == 1 { tmp.join("rabbitmq") } else { tmp.join(format!("rabbitmq-{attempt}")) };
    let dirs = ["mnesia", "log", "schema", "generated", "home", "conf.d"];
    for d in std::iter::once("").chain(dirs) {
        let p = base.join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    let ports = net::free_ports(3)?;
    let (port, dist_port, epmd_port) = (ports[0], ports[1], ports[2]);
    let seq = NODE_SEQ.fetch_add(1, Ordering::Relaxed);
    let node = if seq == 0 {
        format!("zerodrop-{}@localhost", std::process::id())
    } else {
        format!("zerodrop-{}-{seq}@localhost", std::process::id())
    };

    fs::write(
        base.join("rabbitmq.conf"),
        format!(
            "# written by zerodrop xtask (infra): a private, loopback-only node\n\
             listeners.tcp.local = 127.0.0.1:{port}\n\
             loopback_users = none\n"
        ),
    )?;
    fs::write(base.join("enabled_plugins"), "[].\n")?;
    // The scripts (and rabbit_env) source RABBITMQ_CONF_ENV_FILE, by default
    // /etc/rabbitmq/rabbitmq-env.conf, which may set NODENAME etc. for the system node.
    fs::write(base.join("rabbitmq-env.conf"), "")?;
    let cookie = base.join("home").join(".erlang.cookie");
    let cookie_value: String = {
        let mut rng = rand::thread_rng();
        (0..20).map(|_| rng.gen_range(b'A'..=b'Z') as char).collect()
    };
    fs::write(&cookie, cookie_value)?;
    fs::set_permissions(&cookie, fs::Permissions::from_mode(0o400))?;
    Ok(Launch { script: bins.script.clone(), version: bins.version.clone(), base, node, port, dist_port, epmd_port })
}

/// Starts the node described by `l` and waits until it answers AMQP.
pub(super) async fn launch(l: &Launch, watchdog: &Watchdog) -> Result<ServerProc> {
    let base = &l.base;
    let p = |s: &str| base.join(s);
    let stdout_log = p("stdout.log");
    let mut cmd = Command::new(&l.script);
    // Nothing from a RABBITMQ_* in our own environment may leak into this node.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RABBITMQ_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(base)
        .env("HOME", p("home"))
        .env("RABBITMQ_CONF_ENV_FILE", p("rabbitmq-env.conf"))
        .env("RABBITMQ_NODENAME", &l.node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", l.port.to_string())
        .env("RABBITMQ_DIST_PORT", l.dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", p("mnesia"))
        .env("RABBITMQ_LOG_BASE", p("log"))
        .env("RABBITMQ_SCHEMA_DIR", p("schema"))
        .env("RABBITMQ_GENERATED_CONFIG_DIR", p("generated"))
        .env("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf"))
        .env("RABBITMQ_CONFIG_FILES", p("conf.d").join("*.conf"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", p("advanced.config")) // never written
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins"))
        // The distribution listener on loopback only (as the system's env file does).
        .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
        // Our epmd, and no other: every `erl` of this node (the broker, the epmd-starter
        // that rabbit_nodes_common:ensure_epmd/0 and rabbit_epmd_monitor spawn) reads
        // ERL_ZFLAGS, so none of them can fall back to `epmd -daemon`; rabbitmq-env exports
        // ERL_EPMD_PORT as given. ERL_EPMD_ADDRESS stays loopback in case anything still does.
        .env("ERL_EPMD_PORT", l.epmd_port.to_string())
        .env("ERL_ZFLAGS", "-start_epmd false")
        .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    let tag = base.to_string_lossy().into_owned();
    process::prepare(&mut cmd, &stdout_log, None, &tag)?;
    // SIGTERM to the script: it traps it and stops the node gracefully (rabbitmqctl-less).
    let node_log = p("log").join(format!("{}.log", l.node));
    let mut proc = ServerProc::spawn("RabbitMQ", &mut cmd, libc::SIGTERM, vec![stdout_log, node_log], &tag)?;
    watchdog.watch_proc(proc.pgid(), libc::SIGTERM);

    let ep = Endpoint::Tcp { host: "127.0.0.1".into(), port: l.port };
    let deadline = Instant::now() + READY_BOUND;
    loop {
        if let Some(status) = proc.exited() {
            bail!("private RabbitMQ exited during startup ({status})\n{}", proc.log_tails(30));
        }
        if net::amqp_handshake(&ep).await.is_ok() {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            let tails = proc.log_tails(30);
            drop(proc); // stops it
            bail!("private RabbitMQ did not answer AMQP on {ep} within {}\n{tails}", secs(READY_BOUND));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
