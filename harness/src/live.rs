//! The live backend: the real tracker server (embedded on 127.0.0.1, or an external URL) and
//! real [`Mesh`] peers over real WebSockets, with memory links (one in-process
//! [`MemoryNetwork`]) or WebRTC data channels bound to 127.0.0.1, on real time.
//!
//! What differs from the sim backend: time is real, so results vary run to run (no trace
//! hash). The network model applies to every link, memory or WebRTC, per pair of groups as
//! in the sim ([`shape`]: latency, jitter, bandwidth, loss, `[[link]]` rules), and the link
//! byte metric counts every frame those links carry. Peers reach a `ws://` tracker through a
//! counting proxy ([`proxy`]), so tracker bytes are the payload of every tracker message both
//! ways, as in the sim; behind `wss://` they cannot be counted and a `bytes` assertion on them
//! fails as not measurable. `partition`/`heal` need memory transports. Settings the live
//! backend cannot honour (the tracker's `latency`, `link_failure_detect`, tracker settings
//! for an external tracker, restarting an external tracker) are named in the report's
//! warnings ([`warnings`]). A live run ends when every step has fired and every message is
//! settled, or at `duration`.

mod hidden;
pub(crate) mod proxy;
mod routes;
mod shape;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ghostmesh::mesh::{Mesh, MeshEvent, MeshHandle};
use ghostmesh::node::NodeConfig;
use ghostmesh::transport::connector::{MemoryNetwork, WebRtcConnector};
use ghostmesh::transport::memory::MemoryConfig;
use ghostmesh::transport::webrtc::WebRtcConfig;
use ghostmesh::wire::Payload;
use ghostmesh_tracker::{Config, Tracker};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::payload;
use crate::record::{MsgRecord, Recorder, nanos};
use crate::scenario::{
    Action, AssertKind, BytesMetric, Content, Scenario, Target, TrackerKind, Transport,
};
use proxy::TrackerProxy;
use shape::Shaping;

/// Whether the mesh has the memory connector the live backend needs for `transport = "memory"`.
pub const MEMORY_AVAILABLE: bool = true;

/// How long stopping one peer may take before it is dropped.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a restarted tracker may take to bind its old port again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a live run produced.
#[derive(Debug)]
pub struct LiveOutcome {
    pub rec: Recorder,
    /// Real time the run took (ns).
    pub end_ns: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    t0: Instant,
    rec: Recorder,
    /// Open links per peer (peer indices).
    links: Vec<BTreeSet<usize>>,
    /// Peer id (hex) to index, for every incarnation.
    index: HashMap<String, usize>,
    /// The scenario's seed (file contents).
    seed: u64,
}

impl Shared {
    pub(crate) fn now(&self) -> u64 {
        nanos(self.t0.elapsed())
    }
}

pub(crate) type SharedRef = Arc<Mutex<Shared>>;

pub(crate) fn lock(s: &SharedRef) -> MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
pub(crate) struct LivePeer {
    handle: MeshHandle,
    peer_id: String,
    /// `true`: leave cleanly; `false`: crash.
    stop: watch::Sender<Option<bool>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
enum Op {
    Join(usize),
    Leave(usize),
    Crash(usize),
    SendRound(usize),
    TrackerDown,
    TrackerUp,
    Partition(usize),
    Heal,
    /// Count the tracker's swarm for `tracker_peers` assertion `usize`.
    TrackerSample(usize),
}

fn explicit(sc: &Scenario, key: &str) -> bool {
    match key.split_once('.') {
        Some(("tracker", k)) => {
            matches!(&sc.raw.tracker, Some(toml::Value::Table(t)) if t.contains_key(k))
        }
        _ => key == "link_failure_detect" && sc.raw.link_failure_detect.is_some(),
    }
}

/// What the live backend will not do as `sc` says, known before it runs: each a sentence for
/// the report (also printed by `validate --backend live`).
pub fn warnings(sc: &Scenario) -> Vec<String> {
    let mut w = Vec::new();
    if explicit(sc, "tracker.latency") {
        w.push(format!(
            "tracker.latency ({}) is applied by the sim only: live peers reach the tracker over loopback",
            crate::units::format_duration(sc.tracker.latency)
        ));
    }
    if explicit(sc, "link_failure_detect") {
        w.push("link_failure_detect is applied by the sim only: live peers notice a dead link when its transport reports it".into());
    }
    let restarts = sc
        .steps
        .iter()
        .any(|s| matches!(s.action, Action::TrackerRestart { .. }));
    if let TrackerKind::Url(url) = &sc.tracker.kind {
        let set: Vec<&str> = [
            "announce_interval",
            "max_offers",
            "max_peers_per_swarm",
            "offer_timeout",
        ]
        .into_iter()
        .filter(|k| explicit(sc, &format!("tracker.{k}")))
        .collect();
        if !set.is_empty() {
            w.push(format!(
                "tracker.{} configure the harness's own tracker (embedded or container): the external tracker {url} uses its own settings",
                set.join(", tracker.")
            ));
        }
        let tls = proxy::split_ws_url(url).is_none();
        if restarts {
            w.push(if tls {
                format!("tracker_restart cannot restart the external tracker {url} and, over wss://, cannot cut its connections either: the step did nothing")
            } else {
                format!("tracker_restart cannot restart the external tracker {url}: the harness cut every peer's tracker connection and refused new ones for down_for instead (the tracker kept its swarms)")
            });
        }
        if tls
            && sc.asserts.iter().any(|a| {
                matches!(
                    a.kind,
                    AssertKind::Bytes {
                        metric: BytesMetric::Tracker,
                        ..
                    }
                )
            })
        {
            w.push(format!("tracker bytes cannot be measured behind wss:// ({url}): bytes assertions with metric = \"tracker\" fail"));
        }
    }
    w
}

/// Runs `sc` live on a private Tokio runtime.
pub fn run(sc: &Scenario, progress: &mut dyn FnMut(f64)) -> Result<LiveOutcome, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime: {e}"))?;
    rt.block_on(run_async(sc, progress))
}

/// The scenario's tracker settings for a container, as `GHOSTMESH_TRACKER_*` variables.
fn container_env(sc: &Scenario) -> Vec<(String, String)> {
    let c = tracker_config(sc, "0.0.0.0:8000".into());
    [
        (
            "ANNOUNCE_INTERVAL_SECS",
            c.announce_interval_secs.to_string(),
        ),
        ("OFFER_TIMEOUT_SECS", c.offer_timeout_secs.to_string()),
        ("MAX_OFFERS", c.max_offers.to_string()),
        ("MAX_PEERS_PER_SWARM", c.max_peers_per_swarm.to_string()),
        ("SHUTDOWN_GRACE_SECS", c.shutdown_grace_secs.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("GHOSTMESH_TRACKER_{k}"), v))
    .collect()
}

fn tracker_config(sc: &Scenario, listen: String) -> Config {
    Config {
        listen,
        announce_interval_secs: sc.tracker.announce_interval.as_secs().max(1),
        offer_timeout_secs: sc.tracker.offer_timeout.as_secs_f64(),
        max_offers: sc.tracker.max_offers,
        max_peers_per_swarm: sc.tracker.max_peers_per_swarm,
        shutdown_grace_secs: 1.0,
        ..Config::default()
    }
}

pub(crate) struct Live<'a> {
    sc: &'a Scenario,
    shared: SharedRef,
    peers: Vec<Option<LivePeer>>,
    incarnation: Vec<u64>,
    tracker: Option<Tracker>,
    tracker_addr: Option<String>,
    /// Whether the harness has the container (or an external tracker's connections) down,
    /// between `tracker_restart`'s two halves.
    tracker_down: bool,
    container: Option<crate::container::ContainerTracker>,
    /// The URL peers use (the proxy's, for a `ws://` tracker).
    url: String,
    /// `host:port` where the tracker answers `/stats.json` (`None` behind `wss://`).
    tracker_http: Option<String>,
    proxy: Option<TrackerProxy>,
    shaping: Arc<Shaping>,
    net: MemoryNetwork,
    rng: StdRng,
    sends: JoinSet<()>,
    /// Master and client key pairs, when the scenario calls hidden services.
    hidden_keys: Option<(ghostmesh::hidden::KeyPair, ghostmesh::hidden::KeyPair)>,
}

async fn run_async(sc: &Scenario, progress: &mut dyn FnMut(f64)) -> Result<LiveOutcome, String> {
    let mut container = None;
    let (tracker, url, tracker_addr) = match &sc.tracker.kind {
        TrackerKind::Embedded => {
            let t = Tracker::start(tracker_config(sc, "127.0.0.1:0".into()))
                .await
                .map_err(|e| format!("the embedded tracker did not start: {e}"))?;
            let url = t.ws_url();
            let addr = t.local_addr().to_string();
            (Some(t), url, Some(addr))
        }
        TrackerKind::Url(u) => (None, u.clone(), None),
        TrackerKind::Container => {
            let image = std::env::var("GHOSTMESH_TRACKER_IMAGE")
                .unwrap_or_else(|_| crate::container::DEFAULT_IMAGE.to_owned());
            let c = crate::container::ContainerTracker::start(&image, &container_env(sc)).await?;
            let url = c.ws_url();
            container = Some(c);
            (None, url, None)
        }
    };
    // The proxy peers go through, and where the tracker's `/stats.json` answers (a container
    // serves it on its metrics port; an embedded tracker on its one listener).
    let upstream = proxy::split_ws_url(&url);
    let stats_addr = match &container {
        Some(c) => Some(c.metrics_addr()),
        None => upstream.as_ref().map(|(addr, _)| addr.clone()),
    };
    let (proxy, peer_url) = match &upstream {
        Some((addr, path)) => {
            let p = TrackerProxy::start(addr.clone()).await?;
            let u = p.url(path);
            (Some(p), u)
        }
        None => (None, url.clone()),
    };
    // Every link is shaped by the wrapper; the memory network itself adds nothing.
    let shaping = Shaping::new(sc);
    let n = sc.peer_count();
    let mut rec = Recorder::new(sc);
    rec.warnings = warnings(sc);
    if proxy.is_none() {
        rec.tracker_bytes_unmeasured = Some(format!(
            "the tracker {url} is reached over TLS, which the harness cannot count"
        ));
    }
    let shared = Arc::new(Mutex::new(Shared {
        t0: Instant::now(),
        rec,
        links: vec![BTreeSet::new(); n],
        index: HashMap::new(),
        seed: sc.seed,
    }));
    let mut live = Live {
        sc,
        shared: shared.clone(),
        peers: (0..n).map(|_| None).collect(),
        incarnation: vec![0; n],
        tracker,
        tracker_addr,
        tracker_down: false,
        container,
        url: peer_url,
        tracker_http: stats_addr,
        proxy,
        shaping,
        net: MemoryNetwork::new(MemoryConfig::default()),
        rng: StdRng::seed_from_u64(sc.seed),
        sends: JoinSet::new(),
        hidden_keys: hidden::keys(sc).await?,
    };

    // The timeline, as (offset, order, op).
    let mut ops: Vec<(Duration, usize, Op)> = Vec::new();
    for (i, s) in sc.steps.iter().enumerate() {
        let spread_ops = |peers: &[usize],
                          spread: Duration,
                          mk: &dyn Fn(usize) -> Op,
                          ops: &mut Vec<(Duration, usize, Op)>| {
            let d = if peers.len() > 1 {
                spread / (peers.len() as u32 - 1)
            } else {
                Duration::ZERO
            };
            for (k, &p) in peers.iter().enumerate() {
                ops.push((s.at + d * k as u32, i, mk(p)));
            }
        };
        match &s.action {
            Action::Join { peers, spread } | Action::Rejoin { peers, spread } => {
                spread_ops(&peers.peers, *spread, &Op::Join, &mut ops)
            }
            Action::Leave { peers, spread } => {
                spread_ops(&peers.peers, *spread, &Op::Leave, &mut ops)
            }
            Action::Crash { peers, spread } => {
                spread_ops(&peers.peers, *spread, &Op::Crash, &mut ops)
            }
            Action::Send {
                count, interval, ..
            }
            | Action::Broadcast {
                count, interval, ..
            }
            | Action::SendFile {
                count, interval, ..
            }
            | Action::Routed {
                count, interval, ..
            }
            | Action::HiddenRequest {
                count, interval, ..
            } => {
                for k in 0..*count {
                    ops.push((s.at + *interval * k, i, Op::SendRound(i)));
                }
            }
            Action::TrackerRestart { down_for } => {
                ops.push((s.at, i, Op::TrackerDown));
                ops.push((s.at + *down_for, i, Op::TrackerUp));
            }
            Action::Partition { .. } => ops.push((s.at, i, Op::Partition(i))),
            Action::Heal => ops.push((s.at, i, Op::Heal)),
        }
    }
    for (k, a) in sc.asserts.iter().enumerate() {
        if let AssertKind::TrackerPeers { at, .. } = a.kind {
            // After any step at the same instant.
            ops.push((at, usize::MAX, Op::TrackerSample(k)));
        }
    }
    ops.sort_by_key(|(t, i, _)| (*t, *i));
    let t0 = lock(&shared).t0;
    let end = t0 + sc.duration;
    let total = ops.len().max(1);
    let mut result = Ok(());
    for (k, (at, _, op)) in ops.into_iter().enumerate() {
        tokio::time::sleep_until((t0 + at).into()).await;
        if let Err(e) = live.apply(op).await {
            result = Err(e);
            break;
        }
        progress(k as f64 / total as f64 * 0.8);
    }
    // Let the last messages settle (each send task is bounded by its request timeout).
    while Instant::now() < end && !live.sends.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, live.sends.join_next())
            .await
            .is_err()
        {
            break;
        }
    }
    // Discovery deadlines may reach past the last step.
    let wait_discovery = sc
        .asserts
        .iter()
        .filter_map(|a| match a.kind {
            crate::scenario::AssertKind::Discovered { within, .. } => Some(within),
            _ => None,
        })
        .max();
    if let Some(w) = wait_discovery {
        let last_join = lock(&shared)
            .rec
            .incarnations
            .iter()
            .map(|i| i.joined_at)
            .max()
            .unwrap_or(0);
        let until = (t0 + Duration::from_nanos(last_join) + w).min(end);
        while Instant::now() < until {
            let all = {
                let s = lock(&shared);
                s.rec
                    .incarnations
                    .iter()
                    .all(|i| i.ended_at.is_some() || i.reached.len() >= s.rec.track_links)
            };
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    progress(0.9);
    live.sends.abort_all();
    // What the relays saw.
    for p in live.peers.iter().flatten() {
        if let Ok(Ok(st)) =
            tokio::time::timeout(Duration::from_secs(2), p.handle.relay_stats()).await
        {
            let mut s = lock(&shared);
            s.rec.relay_forwarded += st.forwarded;
            s.rec.relay_dropped += st.dropped_ttl
                + st.dropped_unknown_next
                + st.dropped_loop
                + st.dropped_too_large
                + st.dropped_malformed
                + st.dropped_hops;
        }
    }
    let end_ns = lock(&shared).now();
    {
        let mut s = lock(&shared);
        s.rec.link_bytes = live
            .shaping
            .counters
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        s.rec.link_frames = live
            .shaping
            .counters
            .frames
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = &live.proxy {
            s.rec.tracker_bytes = p.counters.bytes.load(std::sync::atomic::Ordering::Relaxed);
            s.rec.tracker_frames = p.counters.frames.load(std::sync::atomic::Ordering::Relaxed);
        }
        let unknown = live
            .shaping
            .unknown_remote
            .load(std::sync::atomic::Ordering::Relaxed);
        if unknown > 0 {
            s.rec.warnings.push(format!(
                "{unknown} link(s) to a peer whose group the harness could not tell were shaped by the local group's access link only"
            ));
        }
    }
    for p in 0..n {
        live.stop_peer(p, true).await;
    }
    if let Some(t) = live.tracker.take() {
        t.shutdown().await;
    }
    progress(1.0);
    result?;
    let rec = std::mem::take(&mut lock(&shared).rec);
    Ok(LiveOutcome { rec, end_ns })
}

impl Live<'_> {
    async fn apply(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Join(p) => self.start_peer(p).await,
            Op::Leave(p) => {
                self.stop_peer(p, true).await;
                Ok(())
            }
            Op::Crash(p) => {
                self.stop_peer(p, false).await;
                Ok(())
            }
            Op::SendRound(i) => {
                self.send_round(i);
                Ok(())
            }
            Op::TrackerDown => {
                if let Some(t) = self.tracker.take() {
                    t.shutdown().await;
                    lock(&self.shared).rec.tracker_restarts += 1;
                } else if let Some(c) = &self.container {
                    c.stop().await?;
                    self.tracker_down = true;
                    lock(&self.shared).rec.tracker_restarts += 1;
                } else if let Some(p) = &self.proxy {
                    // An external tracker: take it away from the peers (see `warnings`).
                    p.cut(true);
                    self.tracker_down = true;
                }
                Ok(())
            }
            Op::TrackerUp if self.container.is_some() => {
                self.tracker_down = false;
                match &self.container {
                    Some(c) => c.start_again().await,
                    None => Ok(()),
                }
            }
            Op::TrackerUp => {
                let Some(addr) = self.tracker_addr.clone() else {
                    if let Some(p) = &self.proxy {
                        p.cut(false);
                    }
                    self.tracker_down = false;
                    return Ok(());
                };
                let deadline = Instant::now() + REBIND_TIMEOUT;
                loop {
                    match Tracker::start(tracker_config(self.sc, addr.clone())).await {
                        Ok(t) => {
                            self.tracker = Some(t);
                            return Ok(());
                        }
                        Err(e) if Instant::now() >= deadline => {
                            return Err(format!(
                                "the restarted tracker could not bind {addr}: {e}"
                            ));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            Op::Partition(i) => {
                if let Action::Partition { sides } = &self.sc.steps[i].action {
                    let names: Vec<Vec<String>> = sides
                        .iter()
                        .map(|groups| {
                            groups
                                .iter()
                                .flat_map(|&g| {
                                    let gr = &self.sc.groups[g];
                                    (gr.first_peer..gr.first_peer + gr.count)
                                        .map(|p| self.sc.peer_name(p))
                                })
                                .collect()
                        })
                        .collect();
                    for a in 0..names.len() {
                        for b in a + 1..names.len() {
                            self.net.partition(&names[a], &names[b]);
                        }
                    }
                }
                Ok(())
            }
            Op::Heal => {
                self.net.heal();
                Ok(())
            }
            Op::TrackerSample(k) => {
                let r = self.tracker_peers().await;
                lock(&self.shared).rec.tracker_samples.push((k, r));
                Ok(())
            }
        }
    }

    /// Peers in the scenario's swarm, as the tracker itself counts them (`/stats.json`).
    async fn tracker_peers(&self) -> Result<u64, String> {
        let embedded_down = self.tracker_addr.is_some() && self.tracker.is_none();
        if embedded_down || (self.container.is_some() && self.tracker_down) {
            return Ok(0); // down: it knows no swarm
        }
        let Some(host) = &self.tracker_http else {
            return Err(
                "the tracker is reached over wss:// (TLS): its /stats.json is not read".into(),
            );
        };
        let (status, body) = proxy::http_get(host, "/stats.json").await?;
        if status != 200 {
            return Err(format!(
                "GET http://{host}/stats.json answered {status} (a tracker with a metrics_listen serves it only there)"
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET http://{host}/stats.json: not JSON ({e})"))?;
        let top = v
            .get("top_swarms")
            .and_then(|t| t.as_array())
            .ok_or_else(|| format!("GET http://{host}/stats.json: no top_swarms"))?;
        let want = info_hash_hex(&self.sc.identifier);
        match top
            .iter()
            .find(|s| s.get("info_hash").and_then(|h| h.as_str()) == Some(&want))
        {
            Some(s) => {
                let n = |k: &str| s.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                Ok(n("complete") + n("incomplete"))
            }
            // The list holds the 10 largest swarms: a shorter list without ours means none.
            None if top.len() < 10 => Ok(0),
            None => Err("the swarm is not among the 10 largest the tracker lists".into()),
        }
    }

    async fn start_peer(&mut self, p: usize) -> Result<(), String> {
        if self.peers[p].is_some() {
            return Ok(());
        }
        let sc = self.sc;
        let g = &sc.groups[sc.group_of(p)];
        self.incarnation[p] += 1;
        let seed = sc
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add((p as u64) << 16)
            .wrapping_add(self.incarnation[p]);
        let mut b = Mesh::builder(vec![self.url.clone()], &sc.identifier)
            .offers_per_announce(g.offers_per_announce)
            .node_config(NodeConfig {
                request_timeout: g.request_timeout,
                max_chunk_units: g.max_chunk_units,
                ..NodeConfig::default()
            })
            .hidden_service(hidden::config(sc, p, &self.hidden_keys))
            .seed(seed);
        let group = sc.group_of(p);
        let inner: Arc<dyn ghostmesh::transport::connector::Connector> = match g.transport {
            Transport::Memory => self.net.connector(&sc.peer_name(p)),
            _ => Arc::new(WebRtcConnector::new(WebRtcConfig::bound_to("127.0.0.1:0"))),
        };
        b = b.connector(self.shaping.connector(inner, group));
        let mut mesh = b
            .start()
            .await
            .map_err(|e| format!("peer {} did not start: {e}", sc.peer_name(p)))?;
        let peer_id = mesh.peer_id().to_owned();
        let handle = mesh.handle();
        hidden::serve(sc, p, &handle, &self.shared);
        {
            let mut s = lock(&self.shared);
            s.index.insert(peer_id.clone(), p);
            let now = s.now();
            s.rec.joined(p, now);
            s.links[p].clear();
        }
        let (stop_tx, mut stop_rx) = watch::channel(None::<bool>);
        let shared = self.shared.clone();
        let steps: Vec<(usize, Content)> = sc
            .steps
            .iter()
            .map(|s| match &s.action {
                Action::Send { size, content, .. }
                | Action::Broadcast { size, content, .. }
                | Action::Routed { size, content, .. } => (*size, *content),
                _ => (0, Content::Text),
            })
            .collect();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = stop_rx.changed() => {
                        let clean = changed.is_err() || stop_rx.borrow().unwrap_or(true);
                        if clean {
                            let _ = tokio::time::timeout(STOP_TIMEOUT, mesh.stop()).await;
                        }
                        drop(mesh);
                        return;
                    }
                    ev = mesh.next_event() => {
                        let Some(ev) = ev else { return };
                        on_event(&shared, p, &steps, &mesh, ev).await;
                    }
                }
            }
        });
        self.peers[p] = Some(LivePeer {
            handle,
            peer_id,
            stop: stop_tx,
            task,
        });
        Ok(())
    }

    async fn stop_peer(&mut self, p: usize, clean: bool) {
        let Some(peer) = self.peers[p].take() else {
            return;
        };
        {
            let mut s = lock(&self.shared);
            let now = s.now();
            s.rec.ended(p, now);
            let gone: Vec<usize> = std::mem::take(&mut s.links[p]).into_iter().collect();
            for q in gone {
                if s.links[q].remove(&p) {
                    s.rec.link_down(q);
                }
            }
            s.index.remove(&peer.peer_id);
        }
        if !clean {
            // A crash, as the network sees it: every link drops at once.
            self.net.disconnect_all(&self.sc.peer_name(p));
        }
        let _ = peer.stop.send(Some(clean));
        let abort = peer.task.abort_handle();
        if tokio::time::timeout(STOP_TIMEOUT + Duration::from_secs(1), peer.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    fn send_round(&mut self, i: usize) {
        let sc = self.sc;
        let step = &sc.steps[i];
        match &step.action {
            Action::SendFile { .. } => return self.file_round(i),
            Action::Routed { .. } => return self.routed_round(i),
            Action::HiddenRequest { .. } => return self.hidden_round(i),
            _ => {}
        }
        let (from, size, content) = match &step.action {
            Action::Send {
                from,
                size,
                content,
                ..
            }
            | Action::Broadcast {
                from,
                size,
                content,
                ..
            } => (from, *size, *content),
            _ => return,
        };
        for &p in &from.peers {
            let Some(peer) = &self.peers[p] else { continue };
            let mut s = lock(&self.shared);
            let linked: Vec<usize> = s.links[p]
                .iter()
                .copied()
                .filter(|q| self.peers[*q].is_some())
                .collect();
            let targets: Vec<usize> = match &step.action {
                Action::Broadcast { .. } => linked,
                Action::Send { to, .. } => {
                    let pool: Vec<usize> = match to {
                        Target::Neighbour => linked,
                        Target::Among(sel) => linked
                            .into_iter()
                            .filter(|q| sel.peers.binary_search(q).is_ok())
                            .collect(),
                    };
                    if pool.is_empty() {
                        vec![]
                    } else {
                        vec![pool[self.rng.random_range(0..pool.len())]]
                    }
                }
                _ => vec![],
            };
            let now = s.now();
            if targets.is_empty() {
                s.rec.sent(MsgRecord {
                    step: i,
                    from: p,
                    to: None,
                    bytes: size,
                    sent_at: now,
                    delivered_at: None,
                    acked_at: None,
                    failure: Some("no link to a target peer".into()),
                    ..MsgRecord::default()
                });
                continue;
            }
            for q in targets {
                let Some(target) = &self.peers[q] else {
                    continue;
                };
                let id = s.rec.sent(MsgRecord {
                    step: i,
                    from: p,
                    to: Some(q),
                    bytes: size,
                    sent_at: now,
                    delivered_at: None,
                    acked_at: None,
                    failure: None,
                    ..MsgRecord::default()
                });
                let handle = peer.handle.clone();
                let to = target.peer_id.clone();
                let shared = self.shared.clone();
                let timeout = sc.groups[sc.group_of(p)].request_timeout + Duration::from_secs(1);
                self.sends.spawn(async move {
                    let body = payload::make(id, size, content);
                    let r = tokio::time::timeout(timeout, handle.send(&to, body)).await;
                    let mut s = lock(&shared);
                    let now = s.now();
                    if let Some(m) = s.rec.messages.get_mut(id) {
                        match r {
                            Ok(Ok(_)) => m.acked_at = Some(now),
                            Ok(Err(e)) if m.delivered_at.is_none() => {
                                m.failure = Some(e.to_string())
                            }
                            Err(_) if m.delivered_at.is_none() => {
                                m.failure = Some("request timed out".into())
                            }
                            _ => {}
                        }
                    }
                });
            }
        }
    }
}

async fn on_event(
    shared: &SharedRef,
    p: usize,
    steps: &[(usize, Content)],
    mesh: &Mesh,
    ev: MeshEvent,
) {
    match ev {
        MeshEvent::PeerConnected(id) => {
            let mut s = lock(shared);
            if let Some(&q) = s.index.get(&id) {
                let now = s.now();
                if s.links[p].insert(q) {
                    s.rec.link_up(p, now);
                    if !s.links[q].contains(&p) {
                        s.rec.links_formed += 1;
                    }
                }
            }
        }
        MeshEvent::PeerClosed(id) => {
            let mut s = lock(shared);
            if let Some(&q) = s.index.get(&id)
                && s.links[p].remove(&q)
            {
                s.rec.link_down(p);
                s.rec.links_closed += 1;
            }
        }
        MeshEvent::Message {
            payload, handle, ..
        } => {
            if let Some(id) = payload::id_of(&payload) {
                let mut s = lock(shared);
                let now = s.now();
                if let Some(m) = s.rec.messages.get_mut(id)
                    && m.to == Some(p)
                    && m.delivered_at.is_none()
                {
                    let (size, content) = steps.get(m.step).copied().unwrap_or((0, Content::Text));
                    if payload::intact(&payload, id, size, content) {
                        m.delivered_at = Some(now);
                        m.failure = None;
                    } else {
                        m.failure = Some("payload arrived altered".into());
                    }
                }
            }
            let _ = mesh.respond(handle, Payload::Text("ack".into())).await;
        }
        MeshEvent::TrackerWarning { .. } => lock(shared).rec.tracker_warnings += 1,
        MeshEvent::File(session) => {
            let shared = shared.clone();
            tokio::spawn(routes::receive_file(shared, p, session));
        }
        MeshEvent::Onion(msg) => routes::on_onion(shared, p, steps, mesh, msg).await,
        _ => {}
    }
}

/// `info_hash` of the swarm `identifier` names, as the tracker's stats print it.
fn info_hash_hex(identifier: &str) -> String {
    ghostmesh::signal::Identity::new(identifier, &mut StdRng::seed_from_u64(0))
        .info_hash
        .to_hex()
}
