//! A private RabbitMQ node: its own node name, ports, config, data, logs and Erlang cookie,
//! all under the temp dir, so it never meets the system broker (`rabbit@localhost`).

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

#[derive(Debug, Clone)]
pub(super) struct RabbitBins {
    /// The real `rabbitmq-server` script (the one that sources `rabbitmq-env` beside it).
    pub script: PathBuf,
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
    if process::which("erl", path).is_none() {
        return Err(format!(
            "RabbitMQ found ({}) but Erlang's `erl` is not on PATH: install Erlang \
             (Debian/Ubuntu: `sudo apt-get install rabbitmq-server` pulls it in) or point AMQP_URL at a running broker",
            script.display()
        ));
    }
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
    Ok(RabbitBins { script, version })
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
}

pub(super) async fn start(bins: &RabbitBins, tmp: &Path, watchdog: &Watchdog) -> Result<Started> {
    let t0 = Instant::now();
    let l = prepare(bins, tmp)?;
    eprintln!("[infra] starting private RabbitMQ ({}, node {}) on 127.0.0.1:{} ...", l.version, l.node, l.port);
    let proc = launch(&l, watchdog).await?;
    eprintln!("[infra] RabbitMQ ready in {}", secs(t0.elapsed()));
    Ok(Started {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", l.port),
        desc: format!("private ({}, 127.0.0.1:{})", l.version, l.port),
        proc,
        extra_dir: None,
        launch: super::Launch::Rabbit(l),
    })
}

/// Creates the node's directories, config and cookie, and picks its ports.
fn prepare(bins: &RabbitBins, tmp: &Path) -> Result<Launch> {
    let base = tmp.join("rabbitmq");
    let dirs = ["mnesia", "log", "schema", "generated", "home", "conf.d"];
    for d in std::iter::once("").chain(dirs) {
        let p = base.join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    let ports = net::free_ports(2)?;
    let (port, dist_port) = (ports[0], ports[1]);
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
    Ok(Launch { script: bins.script.clone(), version: bins.version.clone(), base, node, port, dist_port })
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
        // The distribution listener on loopback only (as the system's env file does), and an
        // epmd we might have to start ourselves on loopback only too.
        .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
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
