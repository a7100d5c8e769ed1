//! Real processes, no mocks. The environment is never read or written here: tests call
//! `acquire_with` with explicit values.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::net::{self, Endpoint};
use super::process::{self, live_group_members, TempDir};
use super::{postgres, rabbitmq, Backends, Origin};

/// A per-test work directory (tests run in parallel).
fn workdir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join("zerodrop-infra-tests").join(test);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn port_of(ep: &Endpoint) -> u16 {
    match ep {
        Endpoint::Tcp { port, .. } => *port,
        Endpoint::Unix { port, .. } => *port,
    }
}

/// The raw AMQP 0-9-1 header exchange: the server must answer with a method frame.
fn raw_amqp_exchange(port: u16) -> std::io::Result<u8> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"AMQP\x00\x00\x09\x01")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(b[0])
}

fn tcp_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok()
}

/// `psql <url> -Atc 'select 1'` when psql is installed, else a PostgreSQL protocol startup.
async fn query_one(database_url: &str) -> bool {
    if let Some(psql) = process::which("psql", &std::env::var_os("PATH").unwrap_or_default()) {
        let out = tokio::process::Command::new(psql).args([database_url, "-Atc", "select 1"]).output().await.unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1"
    } else {
        let ep = net::postgres_endpoint(database_url).unwrap();
        net::postgres_ready(&ep, "postgres", "postgres").await.unwrap_or(false)
    }
}

/// Processes whose command line mentions `needle` (our temp dir paths are unique).
fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmd).contains(&needle).then_some(pid)
        })
        .collect()
}

/// Live processes (RabbitMQ's epmd included) tagged with a path under `dir`.
pub(super) fn tagged_under(dir: &Path) -> Vec<(i32, String)> {
    let needle = format!("{}={}", process::TAG_VAR, dir.display()).into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            env.windows(needle.len()).any(|w| w == needle.as_slice()).then_some(())?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let comm = stat[stat.find('(')? + 1..stat.rfind(')')?].to_string();
            let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?.to_string();
            (state != "Z").then_some((pid, comm))
        })
        .collect()
}

fn assert_all_gone(amqp_port: u16, pg_port: u16, dirs: &[PathBuf], pgids: &[i32]) {
    assert!(!tcp_open(amqp_port), "AMQP port {amqp_port} still open");
    assert!(!tcp_open(pg_port), "PostgreSQL port {pg_port} still open");
    for d in dirs {
        assert!(!d.exists(), "{} still exists", d.display());
        assert!(processes_mentioning(d).is_empty(), "processes still mention {}", d.display());
        assert!(tagged_under(d).is_empty(), "processes still tagged: {:?}", tagged_under(d));
    }
    for &g in pgids {
        assert!(live_group_members(g).is_empty(), "process group {g} still has {:?}", live_group_members(g));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_servers_start_answer_and_are_gone_after_release() {
    let wd = workdir("lifecycle");
    let t = Instant::now();
    let b = Backends::acquire_with(&wd, None, None).await.expect("acquire private backends");
    eprintln!("acquired in {:.1} s: {}", t.elapsed().as_secs_f64(), b.describe());

    assert_eq!((b.amqp_origin, b.db_origin), (Origin::Private, Origin::Private));
    let amqp_port = port_of(&net::amqp_endpoint(&b.amqp_url).unwrap().0);
    let pg_port = port_of(&net::postgres_endpoint(&b.database_url).unwrap());
    assert_eq!(b.amqp_url, format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"));
    assert_eq!(b.database_url, format!("postgres://postgres@127.0.0.1:{pg_port}/postgres"));
    assert_ne!(amqp_port, 5672, "must not be the system broker");
    assert_ne!(pg_port, 5432, "must not be the system server");
    let d = b.describe();
    assert!(d.starts_with("RabbitMQ: private (rabbitmq-server"), "{d}");
    assert!(d.contains(&format!("127.0.0.1:{amqp_port})")), "{d}");
    assert!(d.contains("; PostgreSQL: private (PostgreSQL "), "{d}");
    assert!(d.contains(&format!("127.0.0.1:{pg_port})")), "{d}");

    assert_eq!(raw_amqp_exchange(amqp_port).unwrap(), 1, "Connection.Start is a method frame");
    assert!(tcp_open(pg_port));
    assert!(query_one(&b.database_url).await, "select 1 on the private PostgreSQL");

    // The same servers handed in "from the environment": checked, described, never touched.
    let env = Backends::acquire_with(&wd, Some(b.amqp_url.clone()), Some(b.database_url.clone()))
        .await
        .expect("acquire env backends");
    assert_eq!((env.amqp_origin, env.db_origin), (Origin::Env, Origin::Env));
    assert_eq!(env.amqp_url, b.amqp_url);
    assert_eq!(env.database_url, b.database_url);
    assert_eq!(
        env.describe(),
        format!("RabbitMQ: $AMQP_URL (127.0.0.1:{amqp_port}); PostgreSQL: $DATABASE_URL (127.0.0.1:{pg_port})")
    );
    assert!(env.private_dirs().is_empty() && env.private_pgids().is_empty());
    env.release().await.expect("release env backends");
    assert_eq!(raw_amqp_exchange(amqp_port).unwrap(), 1, "env release must not stop the broker");
    assert!(query_one(&b.database_url).await, "env release must not stop PostgreSQL");

    let dirs = b.private_dirs();
    let pgids = b.private_pgids();
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].starts_with(wd.canonicalize().unwrap()));
    assert_eq!(pgids.len(), 2);
    let t = Instant::now();
    b.release().await.expect("release");
    eprintln!("released in {:.1} s", t.elapsed().as_secs_f64());
    assert_all_gone(amqp_port, pg_port, &dirs, &pgids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_release_stops_private_servers() {
    let wd = workdir("drop");
    let b = Backends::acquire_with(&wd, None, None).await.expect("acquire private backends");
    let amqp_port = port_of(&net::amqp_endpoint(&b.amqp_url).unwrap().0);
    let pg_port = port_of(&net::postgres_endpoint(&b.database_url).unwrap());
    assert!(tcp_open(amqp_port) && tcp_open(pg_port));
    let dirs = b.private_dirs();
    let pgids = b.private_pgids();
    tokio::task::spawn_blocking(move || drop(b)).await.unwrap();
    assert_all_gone(amqp_port, pg_port, &dirs, &pgids);
}

const CHILD_ENV: &str = "ZERODROP_INFRA_TEST_CHILD";

/// Helper of `watchdog_cleans_up_after_the_runner_is_interrupted`, which runs it as a child
/// process (with CHILD_ENV set); on its own it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run as a child process by watchdog_cleans_up_after_the_runner_is_interrupted"]
async fn child_acquires_then_waits_to_be_killed() {
    let Some(wd) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let b = Backends::acquire_with(Path::new(&wd), None, None).await.expect("acquire in the child");
    let pgids: Vec<String> = b.private_pgids().iter().map(|g| g.to_string()).collect();
    println!("READY {} {} {} {}", b.amqp_url, b.database_url, b.private_dirs()[0].display(), pgids.join(","));
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Ctrl-C with no handler (or SIGKILL): the runner dies without release() or Drop; the
/// watchdog sees its pipe close and stops the servers and removes the directory by itself.
#[test]
fn watchdog_cleans_up_after_the_runner_is_interrupted() {
    use std::io::BufRead;
    let wd = workdir("interrupted");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "infra::tests::child_acquires_then_waits_to_be_killed", "--nocapture"])
        .env(CHILD_ENV, &wd)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("READY ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let ready = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.kill();
            panic!("the child never got ready: {e}");
        }
    };
    let f: Vec<&str> = ready.split(' ').collect();
    let amqp_port = port_of(&net::amqp_endpoint(f[0]).unwrap().0);
    let pg_port = port_of(&net::postgres_endpoint(f[1]).unwrap());
    let dirs = vec![PathBuf::from(f[2])];
    let pgids: Vec<i32> = f[3].split(',').map(|g| g.parse().unwrap()).collect();
    assert!(tcp_open(amqp_port) && tcp_open(pg_port) && dirs[0].exists());

    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must die of SIGINT: {status}");

    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let gone = !tcp_open(amqp_port) && !tcp_open(pg_port) && !dirs[0].exists();
        if gone && pgids.iter().all(|&g| live_group_members(g).is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("cleaned up {:.1} s after the runner died", t.elapsed().as_secs_f64());
    assert_all_gone(amqp_port, pg_port, &dirs, &pgids);
}

#[tokio::test]
async fn unreachable_env_urls_name_the_variable_and_address() {
    let wd = workdir("unreachable");
    let ports = net::free_ports(2).unwrap();
    let amqp = format!("amqp://guest:s3cret@127.0.0.1:{}/%2f", ports[0]);
    let err = Backends::acquire_with(&wd, Some(amqp), None).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("AMQP_URL"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", ports[0])), "{msg}");
    assert!(!msg.contains("s3cret"), "credentials leaked: {msg}");

    let db = format!("postgres://app:s3cret@127.0.0.1:{}/app", ports[1]);
    let err = Backends::acquire_with(&wd, None, Some(db)).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("DATABASE_URL"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", ports[1])), "{msg}");
    assert!(!msg.contains("s3cret"), "credentials leaked: {msg}");

    // A listener that is not a broker: reachable by TCP but fails the AMQP check.
    let not_amqp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = not_amqp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = not_amqp.accept() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let err = Backends::acquire_with(&wd, Some(format!("amqp://127.0.0.1:{port}")), None).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("AMQP_URL") && msg.contains(&format!("127.0.0.1:{port}")), "{msg}");

    // Nothing was started or created.
    assert_eq!(std::fs::read_dir(&wd).unwrap().count(), 0, "no temp dir may be left in {}", wd.display());
}

#[test]
fn missing_binaries_give_one_clear_message() {
    let empty = TempDir::create_under(&workdir("missing")).unwrap();
    let path = empty.path().as_os_str();
    let nowhere = Path::new("/nonexistent/zerodrop");

    let err = rabbitmq::locate(path, nowhere).unwrap_err();
    assert!(err.starts_with("RabbitMQ not found"), "{err}");
    assert!(err.contains("`sudo apt-get install rabbitmq-server`"), "{err}");
    assert!(err.contains("AMQP_URL"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");

    let err = postgres::locate(path, nowhere).unwrap_err();
    assert!(err.starts_with("PostgreSQL not found"), "{err}");
    assert!(err.contains("`sudo apt-get install postgresql`"), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn postgres_is_found_in_the_versioned_directory_when_not_on_path() {
    let root = Path::new(postgres::DEBIAN_VERSIONED_ROOT);
    if !root.exists() {
        eprintln!("skipped: no {}", root.display());
        return;
    }
    let empty = TempDir::create_under(&workdir("versioned")).unwrap();
    let bins = postgres::locate(empty.path().as_os_str(), root).expect("found under /usr/lib/postgresql");
    assert!(bins.initdb.starts_with(root) && bins.postgres.starts_with(root), "{bins:?}");
}

#[test]
fn urls_are_split_without_credentials() {
    let ep = |s: &str| net::amqp_endpoint(s).unwrap().0.to_string();
    assert_eq!(ep("amqp://guest:guest@127.0.0.1:40123/%2f"), "127.0.0.1:40123");
    assert_eq!(ep("amqp://u:p@w@rabbit.local/vhost"), "rabbit.local:5672");
    assert_eq!(ep("amqp://"), "localhost:5672");
    assert_eq!(ep("amqp://[::1]:5673"), "[::1]:5673");
    assert!(net::amqp_endpoint("amqps://h").unwrap().1);
    assert_eq!(net::amqp_endpoint("amqps://h").unwrap().0.to_string(), "h:5671");
    assert!(net::amqp_endpoint("http://h").is_err());

    let pg = |s: &str| net::postgres_endpoint(s).unwrap().to_string();
    assert_eq!(pg("postgres://postgres@127.0.0.1:40124/postgres"), "127.0.0.1:40124");
    assert_eq!(pg("postgresql://a:b@db/x?sslmode=disable"), "db:5432");
    assert_eq!(pg("postgres://a@%2Fvar%2Frun%2Fpostgresql:5433/x"), "/var/run/postgresql/.s.PGSQL.5433");
    assert_eq!(pg("postgres:///x?host=/tmp&port=6000"), "/tmp/.s.PGSQL.6000");
    assert_eq!(pg("postgres://h1:1,h2:2/x"), "h1:1");
    assert!(net::postgres_endpoint("postgres:///x").is_err());
    assert!(net::postgres_endpoint("mysql://h/x").is_err());
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A server that dies while starting is reported with the tail of its log (real processes:
/// stand-in scripts that fail the way a broken installation would).
#[tokio::test]
async fn startup_failures_show_the_log_tail() {
    let scripts = TempDir::create_under(&workdir("startup-failure")).unwrap();
    let watchdog = super::watchdog::Watchdog::spawn().unwrap();

    // The real epmd: it is started before the broker and must be stopped when the broker
    // fails to start.
    let epmd = process::which("epmd", &std::env::var_os("PATH").unwrap_or_default()).expect("epmd on PATH");
    let bins = rabbitmq::RabbitBins {
        script: write_script(scripts.path(), "rabbitmq-server", "echo 'BOOT FAILED: eaddrinuse (stand-in)'; exit 3"),
        epmd,
        version: "rabbitmq-server stand-in".into(),
    };
    let tmp = TempDir::create_under(&workdir("startup-failure")).unwrap();
    let err = match rabbitmq::start(&bins, tmp.path(), &watchdog).await {
        Ok(_) => panic!("the stand-in must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("private RabbitMQ exited during startup"), "{err}");
    assert!(err.contains("BOOT FAILED: eaddrinuse (stand-in)"), "{err}");
    assert!(tagged_under(tmp.path()).is_empty(), "left after a failed start: {:?}", tagged_under(tmp.path()));

    let bins = postgres::PgBins {
        initdb: write_script(scripts.path(), "initdb", "echo 'initdb: error: stand-in failure' >&2; exit 1"),
        postgres: write_script(scripts.path(), "postgres", "exit 1"),
        pg_isready: None,
    };
    let tmp2 = TempDir::create_under(&workdir("startup-failure")).unwrap();
    let err = match postgres::start(&bins, tmp2.path(), &watchdog).await {
        Ok(_) => panic!("the stand-in must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("initdb failed"), "{err}");
    assert!(err.contains("initdb: error: stand-in failure"), "{err}");
    watchdog.dismiss();
}

/// As root, PostgreSQL runs as an unprivileged user, who may not be able to reach a work
/// dir under a private (0700) directory: its data then goes to a fresh dir in the system
/// temp dir, which is removed with the rest.
#[tokio::test]
async fn postgres_data_moves_out_of_a_work_dir_its_user_cannot_reach() {
    use std::os::unix::fs::PermissionsExt;
    let Some(user) = process::euid_is_root()
        .then(|| process::lookup_user("postgres").or_else(|| process::lookup_user("nobody")))
        .flatten()
    else {
        eprintln!("skipped: only meaningful as root");
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Ok(bins) = postgres::locate(&path, Path::new(postgres::DEBIAN_VERSIONED_ROOT)) else {
        eprintln!("skipped: no PostgreSQL");
        return;
    };
    let private = workdir("private-parent").join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tmp = TempDir::create_under(&private).unwrap();
    assert!(!process::reachable_by(tmp.path(), &user));
    assert!(process::reachable_by(&std::env::temp_dir(), &user));

    let watchdog = super::watchdog::Watchdog::spawn().unwrap();
    let started = postgres::start(&bins, tmp.path(), &watchdog).await.expect("start");
    let extra = started.extra_dir.as_ref().expect("data moved").path().to_path_buf();
    assert!(extra.starts_with(std::env::temp_dir()) && extra.join("data/PG_VERSION").exists());
    assert!(query_one(&started.url).await);
    let mut proc = started.proc;
    proc.begin_stop();
    tokio::task::spawn_blocking(move || proc.finish_stop(Duration::from_secs(15))).await.unwrap().unwrap();
    started.extra_dir.unwrap().remove().unwrap();
    tmp.remove().unwrap();
    watchdog.dismiss();
    assert!(!extra.exists());
}

/// The failures a port race produces, as the servers print them (the RabbitMQ lines are
/// from a CI run where a concurrent test's PostgreSQL took the node's distribution port),
/// are told apart from other start failures, so only they are retried with new ports.
#[test]
fn a_taken_port_is_recognised_in_each_servers_words() {
    let rabbit = "private RabbitMQ exited during startup (exit status: 0)\n\
        2026-12-06 04:11:07.976411+00:00 [error] <0.130.0>   {failed_to_start_child,prelaunch,\n\
        2026-12-06 04:11:07.976411+00:00 [error] <0.130.0>   {dist_port_already_used,46555,not_erlang,";
    let amqp = "[error] <0.230.0> Failed to start Ranch listener {acceptor,{127,0,0,1},5672} ... eaddrinuse";
    let pg = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
        FATAL:  could not create any TCP/IP sockets";
    let epmd = format!("{} (exit status: 0)\n", net::EPMD_EXITED_AT_START);
    for taken in [rabbit, amqp, pg, &epmd] {
        assert!(net::port_taken(taken), "{taken}");
    }
    let other = "private PostgreSQL exited during startup (exit status: 1)\n\
        FATAL:  data directory \"/x\" has invalid permissions";
    assert!(!net::port_taken(other));
    assert!(!net::port_taken("private RabbitMQ did not answer AMQP on 127.0.0.1:5 within 60 s"));
}

/// epmd really does exit at once, and quietly, on a port someone else holds: the case that
/// `port_taken` must recognise by our own message rather than by anything epmd says.
#[test]
fn epmd_on_a_taken_port_exits_at_once() {
    let bins = rabbitmq::locate(&std::env::var_os("PATH").unwrap_or_default(), Path::new(rabbitmq::DEBIAN_SCRIPT_DIR))
        .expect("RabbitMQ (and its epmd) installed");
    let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let mut child = std::process::Command::new(&bins.epmd)
        .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
        panic!("epmd kept running on a taken port: port_taken's epmd case needs another look");
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    drop(held);
}
