//! The Service: its endpoints are the ready, non-terminating api pods, as seen by a
//! kube-proxy that learns every change `propagation_delay` late. New connections are
//! spread over endpoints at connect time; established ones stay where they are.

use super::pod::Pod;
use super::recorder::Recorder;
use crate::report::model::PodEventKind;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct Service {
    /// What kube-proxy has programmed: the endpoints new connections can reach.
    routable: Mutex<Vec<(String, SocketAddr)>>,
    pods: Mutex<Vec<Arc<Pod>>>,
    propagation_delay: Duration,
    rec: Arc<Recorder>,
}

impl Service {
    pub fn new(propagation_delay: Duration, rec: Arc<Recorder>, stop: CancellationToken) -> Arc<Service> {
        let svc = Arc::new(Service {
            routable: Mutex::new(Vec::new()),
            pods: Mutex::new(Vec::new()),
            propagation_delay,
            rec,
        });
        tokio::spawn(svc.clone().sync_loop(stop));
        svc
    }

    /// Selects a new api pod (the label selector matched it).
    pub fn watch(&self, pod: Arc<Pod>) {
        if let Ok(mut p) = self.pods.lock() {
            p.push(pod);
        }
    }

    pub fn ready_endpoints(&self) -> u32 {
        self.routable.lock().map(|r| r.len() as u32).unwrap_or(0)
    }

    pub fn endpoints(&self) -> Vec<(String, SocketAddr)> {
        self.routable.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The endpoint-slice controller and kube-proxy in one loop: each change of a pod's
    /// eligibility reaches the routing table `propagation_delay` later.
    async fn sync_loop(self: Arc<Self>, stop: CancellationToken) {
        // pod -> (eligible as last seen, pending changes: (apply at, eligible)).
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut pending: Vec<(Instant, String, SocketAddr, bool)> = Vec::new();
        let epoch = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !stop.is_cancelled() {
            tick.tick().await;
            let pods = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
            for pod in &pods {
                let eligible = pod.ready.load(Ordering::SeqCst)
                    && !pod.terminating.load(Ordering::SeqCst)
                    && !pod.exited.load(Ordering::SeqCst);
                let prev = seen.insert(pod.name.clone(), eligible).unwrap_or(false);
                if prev != eligible {
                    pending.push((
                        sync_at(epoch, Instant::now() + self.propagation_delay),
                        pod.name.clone(),
                        pod.addr,
                        eligible,
                    ));
                }
            }
            let now = Instant::now();
            let (mut due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(at, ..)| *at <= now);
            pending = later;
            // A replacement seen in the same tick as its predecessor's removal is
            // programmed first, so the table never shows a gap that is our artefact.
            due.sort_by_key(|(_, _, _, eligible)| !*eligible);
            for (_, name, addr, eligible) in due {
                let changed = {
                    let Ok(mut r) = self.routable.lock() else { continue };
                    let present = r.iter().any(|(n, _)| *n == name);
                    if eligible && !present {
                        r.push((name.clone(), addr));
                        true
                    } else if !eligible && present {
                        r.retain(|(n, _)| *n != name);
                        true
                    } else {
                        false
                    }
                };
                if changed {
                    if !eligible {
                        self.rec.event(
                            &name,
                            "api",
                            PodEventKind::EndpointRemoved,
                            "no longer routed for new connections",
                        );
                    }
                    self.rec.endpoints_now(self.ready_endpoints());
                }
            }
            // Forget pods that are gone for good.
            if let Ok(mut p) = self.pods.lock() {
                p.retain(|pod| !pod.exited.load(Ordering::SeqCst) || seen.get(&pod.name).copied().unwrap_or(false));
            }
        }
    }
}

/// kube-proxy programs its rules in periodic syncs, not per event: changes seen close
/// together land in the same sync. Rounding up to a 100 ms grid does the same here,
/// so a replacement and its predecessor's removal are applied together (additions
/// first) even when this loop noticed them one tick apart.
fn sync_at(epoch: Instant, at: Instant) -> Instant {
    const SYNC: u128 = 100;
    let ms = at.duration_since(epoch).as_millis();
    epoch + Duration::from_millis((ms.div_ceil(SYNC) * SYNC) as u64)
}

impl zerodrop_load::Resolver for Service {
    fn pick(&self) -> Option<SocketAddr> {
        let r = self.routable.lock().ok()?;
        if r.is_empty() {
            return None;
        }
        Some(r[rand::thread_rng().gen_range(0..r.len())].1)
    }
}

/// A stable address for humans and external tools (curl, wrk), in the manner of
/// kube-proxy's old userspace mode: accept, pick an endpoint, splice bytes. When the
/// chosen endpoint refuses, the client's connection is reset (the closest a proxy can
/// get to passing on a refusal). The experiment's own load does not go through here:
/// it connects to the picked endpoint directly, so it sees the kernel's real errors.
pub async fn stable_address(listener: TcpListener, svc: Arc<Service>, stop: CancellationToken) {
    loop {
        let (client, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let svc = svc.clone();
        tokio::spawn(async move {
            use zerodrop_load::Resolver;
            let backend = match svc.pick() {
                Some(addr) => TcpStream::connect(addr).await.ok(),
                None => None,
            };
            match backend {
                Some(mut b) => {
                    let mut c = client;
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                }
                None => {
                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    drop(client);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(svc: &Service) -> Vec<String> {
        let mut v: Vec<_> = svc.endpoints().into_iter().map(|(n, _)| n).collect();
        v.sort();
        v
    }

    /// kube-proxy learns every change late, in both directions, and a replacement is
    /// never programmed after its predecessor's removal.
    #[tokio::test(start_paused = true)]
    async fn endpoints_follow_pods_one_propagation_delay_late() {
        let rec = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let svc = Service::new(Duration::from_millis(1000), rec.clone(), stop.clone());
        let old = Pod::fake("old", 1, true);
        svc.watch(old.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(routed(&svc).is_empty(), "added before the delay");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(routed(&svc), ["old"]);

        let new = Pod::fake("new", 2, true);
        svc.watch(new.clone());
        old.terminating.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(routed(&svc), ["old"], "a terminating pod stays routed until the change propagates");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(routed(&svc), ["new"]);
        assert!(rec.endpoint_samples().iter().all(|(_, n)| *n >= 1), "{:?}", rec.endpoint_samples());
        stop.cancel();
    }
}
