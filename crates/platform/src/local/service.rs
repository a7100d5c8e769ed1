//! The Service: its endpoints are the ready, non-terminating api pods, as seen by a
//! kube-proxy that learns every change late, by a delay drawn from a
//! [`PropagationModel`] (per-node skew + per-sync jitter). What it has learned
//! it programs into the kernel (nftables DNAT on a virtual IP, see nft.rs): new
//! connections are spread over endpoints at connect time by the kernel; established
//! ones stay where they are (conntrack).

use super::nft;
use super::pod::Pod;
use super::propagation::PropagationModel;
use super::recorder::Recorder;
use anyhow::Result;
use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zerodrop_evidence::PodEventKind;

/// Where the Service's endpoint set goes.
pub enum Dataplane {
    /// nftables DNAT from `vip` in this process's network namespace (the lab node).
    Nft { vip: SocketAddrV4 },
    /// Keeps every rendered ruleset instead of applying it: controller logic under test
    /// must not touch the host's firewall.
    #[cfg(test)]
    Capture(Arc<Mutex<Vec<String>>>),
}

pub struct Service {
    /// What kube-proxy has programmed: the endpoints new connections can reach.
    routable: Mutex<Vec<(String, SocketAddr)>>,
    pods: Mutex<Vec<Arc<Pod>>>,
    propagation: PropagationModel,
    rec: Arc<Recorder>,
    dataplane: Dataplane,
    /// Serialises programming; `true` once closed, so that a sync still in flight when
    /// the fleet goes down cannot re-create rules after the teardown.
    closed: tokio::sync::Mutex<bool>,
}

impl Service {
    /// Programs an empty Service (so a missing `nft` or missing privileges fail here,
    /// before any pod starts) and starts the sync loop.
    pub async fn new(
        propagation: PropagationModel,
        rec: Arc<Recorder>,
        stop: CancellationToken,
        dataplane: Dataplane,
    ) -> Result<Arc<Service>> {
        let svc = Arc::new(Service {
            routable: Mutex::new(Vec::new()),
            pods: Mutex::new(Vec::new()),
            propagation,
            rec,
            dataplane,
            closed: tokio::sync::Mutex::new(false),
        });
        svc.program(&[]).await?;
        tokio::spawn(svc.clone().sync_loop(stop));
        Ok(svc)
    }

    /// The address clients connect to.
    pub fn vip(&self) -> SocketAddrV4 {
        match &self.dataplane {
            Dataplane::Nft { vip } => *vip,
            #[cfg(test)]
            Dataplane::Capture(_) => nft::VIP,
        }
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

    /// Removes the Service's rules for good: the VIP refuses from here on.
    pub async fn close(&self) -> Result<()> {
        let mut closed = self.closed.lock().await;
        *closed = true;
        self.apply(nft::render_teardown()).await
    }

    /// One sync: the whole endpoint set in one transaction. False once closed.
    async fn program(&self, endpoints: &[SocketAddr]) -> Result<bool> {
        let closed = self.closed.lock().await;
        if *closed {
            return Ok(false);
        }
        self.apply(nft::render(self.vip(), &nft::v4(endpoints))).await?;
        Ok(true)
    }

    async fn apply(&self, script: String) -> Result<()> {
        match &self.dataplane {
            Dataplane::Nft { .. } => nft::apply(&script).await,
            #[cfg(test)]
            Dataplane::Capture(c) => {
                if let Ok(mut c) = c.lock() {
                    c.push(script);
                }
                Ok(())
            }
        }
    }

    /// The endpoint-slice controller and kube-proxy in one loop: each change of a pod's
    /// eligibility reaches the kernel's rules one drawn propagation delay later.
    async fn sync_loop(self: Arc<Self>, stop: CancellationToken) {
        // pod -> (eligible as last seen, pending changes: (apply at, eligible)).
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut pending: Vec<(Instant, String, SocketAddr, bool)> = Vec::new();
        // The endpoint set decided so far, and the removals not yet in the kernel (a
        // failed sync is retried on the next tick).
        let mut desired: Vec<(String, SocketAddr)> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let mut dirty = false;
        let epoch = Instant::now();
        let mut delays = self.propagation.sampler();
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
                    // A pod's changes land in the order they happened, whatever
                    // delays were drawn for them.
                    let after = pending.iter().filter(|p| p.1 == pod.name).map(|p| p.0).max();
                    let at = sync_at(epoch, Instant::now() + delays.delay(&pod.name));
                    pending.push((after.map_or(at, |a| a.max(at)), pod.name.clone(), pod.addr, eligible));
                }
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(at, ..)| *at <= now);
            pending = later;
            // Everything due goes to the kernel in one transaction, so a replacement
            // seen in the same sync as its predecessor's removal never leaves a gap
            // that is our artefact.
            for (_, name, addr, eligible) in due {
                let present = desired.iter().any(|(n, _)| *n == name);
                if eligible && !present {
                    desired.push((name, addr));
                    dirty = true;
                } else if !eligible && present {
                    desired.retain(|(n, _)| *n != name);
                    removed.push(name);
                    dirty = true;
                }
            }
            if dirty {
                let addrs: Vec<SocketAddr> = desired.iter().map(|(_, a)| *a).collect();
                match self.program(&addrs).await {
                    Ok(false) => break,
                    Ok(true) => {
                        dirty = false;
                        if let Ok(mut r) = self.routable.lock() {
                            *r = desired.clone();
                        }
                        // Recorded once the kernel has the new rules: from now on no
                        // new connection reaches these pods.
                        for name in removed.drain(..) {
                            self.rec.event(
                                &name,
                                "api",
                                PodEventKind::EndpointRemoved,
                                "no longer routed for new connections",
                            );
                        }
                        self.rec.endpoints_now(addrs.len() as u32);
                    }
                    Err(e) => eprintln!("warning: programming the Service failed (retrying): {e:#}"),
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
/// so a replacement and its predecessor's removal are applied together (in one
/// transaction) even when this loop noticed them one tick apart.
fn sync_at(epoch: Instant, at: Instant) -> Instant {
    const SYNC: u128 = 100;
    let ms = at.duration_since(epoch).as_millis();
    epoch + Duration::from_millis((ms.div_ceil(SYNC) * SYNC) as u64)
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
    /// never programmed after its predecessor's removal: both land in one ruleset.
    #[tokio::test(start_paused = true)]
    async fn endpoints_follow_pods_one_propagation_delay_late() {
        let rec = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let scripts = Arc::new(Mutex::new(Vec::new()));
        let plane = Dataplane::Capture(scripts.clone());
        let svc =
            Service::new(PropagationModel::constant(Duration::from_millis(1000)), rec.clone(), stop.clone(), plane)
                .await
                .unwrap();
        let programmed = || scripts.lock().unwrap().clone();
        assert_eq!(programmed(), [nft::render(nft::VIP, &[])], "an empty Service is programmed at once");
        let old = Pod::fake("old", 1, true);
        svc.watch(old.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(routed(&svc).is_empty(), "added before the delay");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(routed(&svc), ["old"]);
        assert_eq!(programmed().len(), 2);

        let new = Pod::fake_at("new", 2, true, "127.77.1.2:8080");
        svc.watch(new.clone());
        old.terminating.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(routed(&svc), ["old"], "a terminating pod stays routed until the change propagates");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(routed(&svc), ["new"]);
        let all = programmed();
        assert_eq!(all.len(), 3, "the swap is one transaction: {all:#?}");
        assert!(all[2].contains("mod 1 map { 0 : 127.77.1.2 . 8080 }"), "{}", all[2]);
        assert!(rec.endpoint_samples().iter().all(|(_, n)| *n >= 1), "{:?}", rec.endpoint_samples());

        svc.close().await.unwrap();
        assert_eq!(programmed().last().unwrap(), &nft::render_teardown());
        new.terminating.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(programmed().len(), 4, "nothing is programmed after close");
        stop.cancel();
    }
}
