//! Restarts of private servers, through the fault-control socket, with real processes; and
//! the request/answer lines of that socket.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::fault_ctl::{answer, parse_request, FaultControl};
use super::{Backends, Restarted, Service};

async fn ask(socket: &std::path::Path, line: &str) -> String {
    let mut conn = UnixStream::connect(socket).await.unwrap();
    conn.write_all(line.as_bytes()).await.unwrap();
    let mut out = String::new();
    BufReader::new(conn).read_line(&mut out).await.unwrap();
    out.trim_end().to_string()
}

fn down_ms(answer: &str) -> u64 {
    answer.split_whitespace().find_map(|w| w.strip_prefix("down_ms=")?.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_port_queues_and_rows_and_are_refused_for_env_servers() {
    let wd = std::env::temp_dir().join("zerodrop-infra-tests").join("restart");
    let b = Arc::new(Backends::acquire_with(&wd, None, None).await.expect("acquire private backends"));
    let pids_before = b.private_pgids();
    let ctl_dir = wd.join(format!("ctl-{}", std::process::id()));
    let ctl = FaultControl::serve(b.clone(), &ctl_dir).expect("serve fault control");
    let mode =
        |p: &std::path::Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
    assert_eq!(mode(ctl.path()) & 0o777, 0o600);
    assert_eq!(mode(&ctl_dir) & 0o777, 0o700);

    // A persistent message on a durable queue, a committed row.
    let queue = "zd-restart-test";
    let conn = Connection::connect(&b.amqp_url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), durable, FieldTable::default()).await.unwrap();
    let props = BasicProperties::default().with_delivery_mode(2);
    let confirm =
        ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), b"kept", props).await.unwrap();
    assert!(confirm.await.unwrap().is_ack());
    let db = zerodrop_ledger::connect(&b.database_url).await.unwrap();
    db.batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row')").await.unwrap();

    // Both at once: each is served on its own.
    let (a_rabbit, a_pg) = tokio::join!(ask(ctl.path(), "restart rabbitmq\n"), ask(ctl.path(), "restart postgres\n"));
    assert!(a_rabbit.starts_with("ok rabbitmq down_ms="), "{a_rabbit}");
    assert!(a_pg.starts_with("ok postgres down_ms="), "{a_pg}");
    assert!(down_ms(&a_rabbit) > 0 && down_ms(&a_pg) > 0);
    let pids_after = b.private_pgids();
    assert_eq!(pids_after.len(), 2);
    assert!(pids_after.iter().all(|p| !pids_before.contains(p)), "{pids_before:?} -> {pids_after:?}: not restarted");
    // The old sessions were closed by the servers.
    assert!(db.is_closed() || db.simple_query("SELECT 1").await.is_err());
    assert!(!conn.status().connected() || ch.basic_get(queue.into(), BasicGetOptions::default()).await.is_err());

    // Same URLs, same data.
    let conn = Connection::connect(&b.amqp_url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let msg = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap();
    assert_eq!(msg.map(|m| m.delivery.data), Some(b"kept".to_vec()), "the persistent message did not survive");
    let db = zerodrop_ledger::connect(&b.database_url).await.unwrap();
    let row: String = db.query_one("SELECT v FROM kept", &[]).await.unwrap().get(0);
    assert_eq!(row, "row");

    assert!(ask(ctl.path(), "restart mysql\n").await.starts_with("error unknown server"));
    assert!(ask(ctl.path(), "reboot\n").await.starts_with("error bad request"));
    let _ = conn.close(200, "bye".into()).await;
    ctl.shutdown().await;
    assert!(!ctl_dir.exists(), "the socket directory is removed");
    let b = Arc::try_unwrap(b).expect("the control let go of the backends");

    // The same servers handed in from the environment may not be restarted.
    let env = Backends::acquire_with(&wd, Some(b.amqp_url.clone()), Some(b.database_url.clone())).await.unwrap();
    let err = env.restart(Service::Postgres).await.unwrap_err();
    assert!(format!("{err:#}").contains("comes from the environment"), "{err:#}");
    env.release().await.unwrap();
    b.release().await.expect("release");
}

#[test]
fn requests_parse() {
    assert_eq!(parse_request("restart rabbitmq\n"), Ok(Service::RabbitMq));
    assert_eq!(parse_request("  restart   postgres "), Ok(Service::Postgres));
    assert_eq!(parse_request("restart postgresql"), Ok(Service::Postgres));
    assert!(parse_request("restart").unwrap_err().contains("restart what"));
    assert!(parse_request("restart rabbitmq now").unwrap_err().contains("bad request"));
    assert!(parse_request("restart redis").unwrap_err().contains("unknown server"));
    assert!(parse_request("").unwrap_err().contains("bad request"));
}

#[test]
fn answers_are_one_line() {
    let r = Restarted { stopped_in: Duration::from_millis(2034), down: Duration::from_millis(6210) };
    assert_eq!(answer(Service::RabbitMq, &Ok(r)), "ok rabbitmq down_ms=6210 stopped_ms=2034");
    let e = anyhow::anyhow!("did not start\n--- last 2 lines:\n    a\n    b");
    assert_eq!(answer(Service::Postgres, &Err(e)), "error did not start --- last 2 lines: a b");
}
