//! `zerodrop-load long-lived`: the long-lived run's clients ([`zerodrop_load::long_lived`])
//! as a process of their own, for a run inside a cluster. The runner cannot reach the
//! clients' tokens there, so the process listens on its pod's loopback for the two
//! decisions (`POST /no-new`, `POST /stop`, through a port-forward) and hands its
//! counts back through its log, as `run --out -` does.

use super::shared::{self, OutArgs, TargetArgs};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use zerodrop_load::long_lived::{self, Signals, Spec, Tallies};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: TargetArgs,
    /// SSE clients (`GET /stream`, resumed with Last-Event-ID).
    #[arg(long, default_value_t = 40)]
    streams: u32,
    /// Clients running long operations back to back (`POST /long-op?ms=`).
    #[arg(long, default_value_t = 32)]
    op_clients: u32,
    /// The operation lengths each op client cycles through, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = humantime::parse_duration, default_value = "90s,570s")]
    op_lengths: Vec<Duration>,
    /// After `POST /no-new`, how long operations in flight may take before they are
    /// abandoned (a `POST /stop` ends the wait sooner).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    finish_limit: Duration,
    /// Where the control requests are taken: the pod's loopback, reached by a
    /// port-forward only.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], long_lived::CONTROL_PORT)))]
    control: SocketAddr,
    #[command(flatten)]
    out: OutArgs,
}

/// What a control request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    NoNew,
    Stop,
}

/// The request's meaning, or the status refusing it.
fn control_of(method: &Method, path: &str) -> Result<Control, StatusCode> {
    let c = match path {
        long_lived::NO_NEW_PATH => Control::NoNew,
        long_lived::STOP_PATH => Control::Stop,
        _ => return Err(StatusCode::NOT_FOUND),
    };
    if method == Method::POST {
        Ok(c)
    } else {
        Err(StatusCode::METHOD_NOT_ALLOWED)
    }
}

fn answer(req: &Request<hyper::body::Incoming>, signals: &Signals) -> Response<Full<Bytes>> {
    let (status, text) = match control_of(req.method(), req.uri().path()) {
        Ok(Control::NoNew) => {
            signals.no_new.cancel();
            eprintln!("control: no new streams or operations");
            (StatusCode::OK, "ok no-new\n")
        }
        Ok(Control::Stop) => {
            signals.stop();
            eprintln!("control: stop; operations in flight are abandoned");
            (StatusCode::OK, "ok stop\n")
        }
        Err(s) => (s, "POST /no-new or POST /stop\n"),
    };
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    res
}

/// Serves control requests until the process ends; one connection at a time is plenty.
async fn serve_control(listener: TcpListener, signals: Signals) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or the like: pause rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let s = signals.clone();
        let service = service_fn(move |req| {
            let res = answer(&req, &s);
            async move { Ok::<_, Infallible>(res) }
        });
        // A runner that goes away mid-request changes nothing here.
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    }
}

pub async fn main(args: Args) -> anyhow::Result<()> {
    // Bound before the gate: a port already taken fails the run before any load.
    let control = TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding the control listener {}", args.control))?;
    let addr = args.target.reach(Duration::from_secs(1), Duration::from_secs(5)).await?;
    let spec = Spec { streams: args.streams, op_clients: args.op_clients, op_lengths: args.op_lengths.clone() };
    let running = long_lived::start(addr, &spec);
    let signals = running.signals();
    shared::load_begins(format_args!(
        "{} streams and {} operation clients (lengths {:?}) to {addr}; control on {}",
        spec.streams, spec.op_clients, spec.op_lengths, args.control
    ));
    let server = tokio::spawn(serve_control(control, signals.clone()));
    signals.no_new.cancelled().await;
    let tallies = running.finish(args.finish_limit).await;
    server.abort();
    print_summary(&tallies);
    args.out.write(&tallies)
}

fn print_summary(t: &Tallies) {
    let (s, o) = (&t.streams, &t.ops);
    eprintln!(
        "streams: {} events, {} gaps, {} duplicates, {} told to reconnect, {} cut, {} resumes ({} on another pod)",
        s.events, s.gaps, s.duplicates, s.told_to_reconnect, s.cut, s.resumes, s.resumed_on_another_pod
    );
    eprintln!(
        "operations: {} completed, {} cut, {} refused with 503 ({} retries admitted, {} refused again), {} abandoned",
        o.completed, o.cut, o.refused_503, o.retry_admitted, o.retry_refused_again, o.abandoned_at_end
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_post_to_a_control_path_is_a_control_request() {
        assert_eq!(control_of(&Method::POST, "/no-new"), Ok(Control::NoNew));
        assert_eq!(control_of(&Method::POST, "/stop"), Ok(Control::Stop));
        assert_eq!(control_of(&Method::GET, "/stop"), Err(StatusCode::METHOD_NOT_ALLOWED));
        assert_eq!(control_of(&Method::POST, "/no-new/"), Err(StatusCode::NOT_FOUND));
        assert_eq!(control_of(&Method::POST, "/"), Err(StatusCode::NOT_FOUND));
    }

    #[test]
    fn the_flags_parse_as_the_kind_runner_writes_them() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: Args,
        }
        let line = "x --target api.ns.svc.cluster.local:80 --allow-non-loopback --streams 3 --op-clients 2 \
                    --op-lengths 13500ms,85500ms --finish-limit 115500ms --out - --await-pods a,b --await-timeout 60000ms";
        let a = <Cli as clap::Parser>::try_parse_from(line.split_whitespace()).unwrap().a;
        assert_eq!(a.op_lengths, [Duration::from_millis(13_500), Duration::from_millis(85_500)]);
        assert_eq!(a.finish_limit, Duration::from_millis(115_500));
        assert_eq!(a.target.await_pods, ["a", "b"]);
        assert_eq!(a.out.out.as_deref(), Some(std::path::Path::new("-")));
        assert_eq!(a.control, SocketAddr::from(([127, 0, 0, 1], 7070)));
        assert_eq!((a.streams, a.op_clients), (3, 2));
    }
}
