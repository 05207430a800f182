//! The scenario's network model on live links: every peer's connector (memory or WebRTC) is
//! wrapped so that each link between groups `a` and `b` behaves as `Scenario::path(a, b)`
//! says, as in the sim: the sender's upload `bandwidth` (one queue per peer, shared by its
//! links), the path's `latency`, a uniform `jitter` and a retransmission delay per `loss`
//! (max(3 × latency, 200 ms), up to 8 times), frames kept in order. `[[link]]` rules apply.
//! The wrapper also counts every frame and its bytes (the `link` byte metric).
//!
//! Which group is at the other end is learnt from the signals: a connector notes the group
//! of every offer and answer it makes (by the `type` and `sdp` of the signal), and the other
//! side looks it up when it answers or accepts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghostmesh::transport::connector::{
    Answer, AwaitingAnswer, AwaitingOpen, ConnectError, Connector, Offer,
};
use ghostmesh::transport::{BoxFuture, Frame, Link, LinkError};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::scenario::{NetModel, Scenario};

/// Frames queued on one link direction before `send` waits (a memory link's capacity).
const QUEUE_FRAMES: usize = 1024;
/// How far a sender may run ahead of its upload queue: a small send buffer. Without it the
/// timer's granularity (1 ms) would leave the queue idle between frames and lose bandwidth.
const SEND_BUFFER_AHEAD: Duration = Duration::from_millis(10);
/// Signals remembered at most (offers that are never answered are forgotten past this).
const MAX_SIGNALS: usize = 100_000;

/// Bytes and frames sent on every live link of a run.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) bytes: AtomicU64,
    pub(crate) frames: AtomicU64,
}

/// The network of a live run: the path model between every two groups, the signals seen,
/// the counters.
#[derive(Debug)]
pub(crate) struct Shaping {
    /// `paths[a][b]`: the model from a peer of group `a` to a peer of group `b`.
    paths: Vec<Vec<NetModel>>,
    /// `type|sdp` of a signal to the group of the peer that made it.
    signals: Mutex<HashMap<String, usize>>,
    pub(crate) counters: Arc<LinkCounters>,
    seed: u64,
    links: AtomicU64,
    /// Links whose other end's group was not learnt from the signals (shaped by our own
    /// group's access link alone; the report warns).
    pub(crate) unknown_remote: AtomicU64,
}

fn signal_key(json: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) => format!(
            "{}|{}",
            v.get("type").and_then(|t| t.as_str()).unwrap_or(""),
            v.get("sdp").and_then(|t| t.as_str()).unwrap_or(json)
        ),
        Err(_) => json.to_owned(),
    }
}

impl Shaping {
    pub(crate) fn new(sc: &Scenario) -> Arc<Self> {
        let n = sc.groups.len();
        Arc::new(Shaping {
            paths: (0..n)
                .map(|a| (0..n).map(|b| sc.path(a, b)).collect())
                .collect(),
            signals: Mutex::new(HashMap::new()),
            counters: Arc::new(LinkCounters::default()),
            seed: sc.seed,
            links: AtomicU64::new(0),
            unknown_remote: AtomicU64::new(0),
        })
    }

    /// Wraps `inner`, the connector of a peer of `group`.
    pub(crate) fn connector(
        self: &Arc<Self>,
        inner: Arc<dyn Connector>,
        group: usize,
    ) -> Arc<dyn Connector> {
        Arc::new(ShapingConnector {
            inner,
            net: self.clone(),
            group,
            upload: Arc::new(Mutex::new(Instant::now())),
        })
    }

    fn note(&self, json: &str, group: usize) {
        let mut m = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_SIGNALS {
            m.clear();
        }
        m.insert(signal_key(json), group);
    }

    fn take(&self, json: &str) -> Option<usize> {
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&signal_key(json))
    }

    fn wrap(
        &self,
        inner: Box<dyn Link>,
        me: usize,
        remote: Option<usize>,
        upload: Arc<Mutex<Instant>>,
    ) -> Box<dyn Link> {
        // A peer that is not the harness's (unknown signal): only our own access link.
        let model = match remote {
            Some(r) => self.paths[me][r],
            None => {
                self.unknown_remote.fetch_add(1, Ordering::Relaxed);
                self.paths[me][me]
            }
        };
        let n = self.links.fetch_add(1, Ordering::Relaxed);
        ShapedLink::boxed(
            inner,
            model,
            upload,
            self.counters.clone(),
            self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )
    }
}

#[derive(Debug)]
struct ShapingConnector {
    inner: Arc<dyn Connector>,
    net: Arc<Shaping>,
    group: usize,
    /// When this peer's upload is next free (shared by its links, as in the sim).
    upload: Arc<Mutex<Instant>>,
}

impl Connector for ShapingConnector {
    fn offer(&self, label: String) -> BoxFuture<'static, Result<Offer, ConnectError>> {
        let fut = self.inner.offer(label);
        let (net, group, upload) = (self.net.clone(), self.group, self.upload.clone());
        Box::pin(async move {
            let (json, pending) = fut.await?;
            net.note(&json, group);
            let pending: Box<dyn AwaitingAnswer> = Box::new(ShapedOffer {
                inner: pending,
                net,
                group,
                upload,
            });
            Ok((json, pending))
        })
    }

    fn answer(&self, offer: String) -> BoxFuture<'static, Result<Answer, ConnectError>> {
        let remote = self.net.take(&offer);
        let fut = self.inner.answer(offer);
        let (net, group, upload) = (self.net.clone(), self.group, self.upload.clone());
        Box::pin(async move {
            let (json, pending) = fut.await?;
            net.note(&json, group);
            let pending: Box<dyn AwaitingOpen> = Box::new(ShapedAnswer {
                inner: pending,
                net,
                group,
                remote,
                upload,
            });
            Ok((json, pending))
        })
    }
}

#[derive(Debug)]
struct ShapedOffer {
    inner: Box<dyn AwaitingAnswer>,
    net: Arc<Shaping>,
    group: usize,
    upload: Arc<Mutex<Instant>>,
}

impl AwaitingAnswer for ShapedOffer {
    fn accept(
        self: Box<Self>,
        answer: String,
    ) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>> {
        let remote = self.net.take(&answer);
        Box::pin(async move {
            let link = self.inner.accept(answer).await?;
            Ok(self.net.wrap(link, self.group, remote, self.upload))
        })
    }
}

#[derive(Debug)]
struct ShapedAnswer {
    inner: Box<dyn AwaitingOpen>,
    net: Arc<Shaping>,
    group: usize,
    remote: Option<usize>,
    upload: Arc<Mutex<Instant>>,
}

impl AwaitingOpen for ShapedAnswer {
    fn connected(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            let link = self.inner.connected().await?;
            Ok(self.net.wrap(link, self.group, self.remote, self.upload))
        })
    }
}

/// A link whose sends reach the other end when the model says: each frame gets its arrival
/// time when sent and waits in a queue, from which a task hands it to the real link on time.
#[derive(Debug)]
struct ShapedLink {
    inner: Arc<dyn Link>,
    label: String,
    model: NetModel,
    /// `None`: the model adds nothing, frames go straight to the real link.
    queue: Option<mpsc::Sender<(Instant, Frame)>>,
    /// Last arrival time (order is kept) and the jitter/loss RNG.
    state: Mutex<(Instant, StdRng)>,
    /// Held by a send from its arrival time until its frame is queued, so frames are queued
    /// in the order of their arrival times.
    sending: tokio::sync::Mutex<()>,
    upload: Arc<Mutex<Instant>>,
    counters: Arc<LinkCounters>,
}

impl ShapedLink {
    fn boxed(
        inner: Box<dyn Link>,
        model: NetModel,
        upload: Arc<Mutex<Instant>>,
        counters: Arc<LinkCounters>,
        seed: u64,
    ) -> Box<dyn Link> {
        let inner: Arc<dyn Link> = Arc::from(inner);
        let shaped = model.latency > Duration::ZERO
            || model.jitter > Duration::ZERO
            || model.bandwidth.is_some()
            || model.loss > 0.0;
        let queue = shaped.then(|| {
            let (tx, mut rx) = mpsc::channel::<(Instant, Frame)>(QUEUE_FRAMES);
            let link = inner.clone();
            tokio::spawn(async move {
                while let Some((at, frame)) = rx.recv().await {
                    tokio::time::sleep_until(at).await;
                    match link.send(frame).await {
                        Ok(()) | Err(LinkError::TooLarge { .. }) => {}
                        Err(_) => break, // closed: later sends fail
                    }
                }
            });
            tx
        });
        Box::new(ShapedLink {
            label: inner.label().to_owned(),
            inner,
            model,
            queue,
            state: Mutex::new((Instant::now(), StdRng::seed_from_u64(seed))),
            sending: tokio::sync::Mutex::new(()),
            upload,
            counters,
        })
    }

    /// When a frame of `len` bytes sent now has left the sender's upload queue, and when it
    /// arrives (the sim's `schedule_frame`).
    fn schedule(&self, len: usize) -> (Instant, Instant) {
        let now = Instant::now();
        let depart = match self.model.bandwidth {
            Some(bw) if bw > 0.0 => {
                let mut up = self.upload.lock().unwrap_or_else(|e| e.into_inner());
                let start = (*up).max(now);
                *up = start + Duration::from_secs_f64(len as f64 / bw);
                *up
            }
            _ => now,
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, rng) = &mut *st;
        let mut delay = self.model.latency;
        let jitter = u64::try_from(self.model.jitter.as_nanos()).unwrap_or(u64::MAX);
        if jitter > 0 {
            delay += Duration::from_nanos(rng.random_range(0..=jitter));
        }
        if self.model.loss > 0.0 {
            let rto = (self.model.latency * 3).max(Duration::from_millis(200));
            for _ in 0..8 {
                if !rng.random_bool(self.model.loss) {
                    break;
                }
                delay += rto;
            }
        }
        let arrive = (depart + delay).max(*last);
        *last = arrive;
        (depart, arrive)
    }
}

impl Link for ShapedLink {
    fn send(&self, frame: Frame) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(async move {
            let len = frame.len();
            let r = match &self.queue {
                None => self.inner.send(frame).await,
                Some(q) => {
                    let _order = self.sending.lock().await;
                    let (depart, at) = self.schedule(len);
                    // As a real send buffer: the sender may go on once its frame is (almost)
                    // on the wire, so a file sender paces itself by the upload bandwidth.
                    if let Some(wake) = depart.checked_sub(SEND_BUFFER_AHEAD) {
                        tokio::time::sleep_until(wake).await;
                    }
                    q.send((at, frame)).await.map_err(|_| LinkError::Closed)
                }
            };
            if r.is_ok() {
                self.counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                self.counters.frames.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    }

    fn recv(&self) -> BoxFuture<'_, Option<Frame>> {
        self.inner.recv()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }

    fn label(&self) -> &str {
        &self.label
    }
}
