//! The deterministic backend: the tracker core ([`TrackerCore`]), one tracker client
//! ([`TrackerClient`]) and one message core ([`Node`]) per peer, run on a virtual clock over a
//! simulated network, with every random choice drawn from one RNG seeded by the scenario.
//!
//! Time is a `u64` of nanoseconds since the start; the cores get `base + offset` as their
//! `Instant`, and only offsets enter the trace. Events run in (time, insertion) order, so the
//! same seed gives the same sequence of events; the trace hash (FNV-1a over every event) is
//! what `--check-determinism` compares.
//!
//! Network model: a peer reaches the tracker over a reliable socket with the tracker's latency
//! plus its group's; a link between two peers forms one round trip after the answer to an
//! offer arrives, and carries frames reliably and in order, each delayed by the path's latency,
//! a uniform jitter, its serialisation time at the sender's upload bandwidth, and a
//! retransmission delay per loss. Crashed or cut-off links are noticed after
//! `link_failure_detect`.

mod files;
mod fnv;
mod hidden;
mod routed;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use ghostmesh::node::{Event, Node, NodeConfig, RequestId};
use ghostmesh::signal::{Id20, Identity, Output, SignalConfig, TrackerClient};
use ghostmesh::wire::Payload;
use ghostmesh_tracker::swarm::{ConnId, CoreConfig, Outgoing, TrackerCore};
use ghostmesh_tracker::wire::{OutMessage, decode_request};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::payload;
use crate::record::{MsgRecord, Recorder, nanos};
use crate::scenario::{Action, Scenario, Target};

pub use fnv::Fnv64;

/// Events processed at most in one run (a guard against a runaway scenario).
pub const MAX_EVENTS: u64 = 200_000_000;
/// Wall-clock time one sim run may take at most.
pub const MAX_WALL: Duration = Duration::from_secs(600);

/// What a sim run produced.
#[derive(Debug)]
pub struct SimOutcome {
    pub rec: Recorder,
    /// FNV-1a 64 of the event trace.
    pub trace_hash: u64,
    pub events: u64,
    /// Virtual end of the run (ns).
    pub end_ns: u64,
}

#[derive(Debug, Clone, Copy)]
enum PeerOp {
    Join,
    Leave,
    Crash,
}

#[derive(Debug)]
enum Ev {
    StepFire(usize),
    PeerOp(u32, PeerOp),
    SendTick(usize),
    TrackerUp,
    TrackerSweep(u32),
    ConnectAttempt(u32, u32),
    TrackerOpen(u32, u32, u64),
    ConnectFailed(u32, u32),
    ToTracker(u64, String),
    TrackerClosedConn(u64),
    FromTracker(u32, u64, String),
    TrackerLost(u32, u64),
    LinkUp(u32, u32, u32, u32),
    LinkFrame(u32, u32, u64, String),
    LinkDown(u32, u32, u64),
    Timer(u32, u64),
    /// A binary (fast-path file) frame from a peer to a peer over link generation `u64`.
    LinkBinary(u32, u32, u64, Vec<u8>),
    /// The sender of file `usize` may send its next piece.
    FileTick(usize),
    /// Count the tracker's swarm for `tracker_peers` assertion `usize`.
    TrackerSample(usize),
    /// A hidden-service entry's held answer is due.
    HiddenReply(u64),
}

#[derive(Debug)]
struct Queued {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

#[derive(Debug)]
struct SimPeer {
    group: usize,
    identity: Identity,
    up: bool,
    inc: u32,
    client: Option<TrackerClient>,
    node: Option<Node<u32>>,
    conn: Option<u64>,
    links: BTreeMap<u32, u64>,
    pending_links: BTreeSet<u32>,
    my_offers: BTreeSet<Id20>,
    requests: HashMap<RequestId, usize>,
    timer_gen: u64,
    timer_at: Option<u64>,
    upload_free: u64,
}

/// A simulation of one scenario. See the module docs.
#[derive(Debug)]
pub struct Sim<'a> {
    sc: &'a Scenario,
    rng: StdRng,
    base: Instant,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    peers: Vec<SimPeer>,
    by_id: HashMap<Id20, u32>,
    tracker: Option<TrackerCore>,
    epoch: u32,
    next_conn: u64,
    conn_owner: BTreeMap<u64, u32>,
    next_gen: u64,
    last_arrival: HashMap<(u32, u32), u64>,
    /// Side per group while partitioned.
    sides: Option<Vec<Option<usize>>>,
    send_round: Vec<u32>,
    rec: Recorder,
    trace: Fnv64,
    events: u64,
    out: Vec<Outgoing>,
    /// Peer index by peer id hex (routes name peers by id).
    by_hex: HashMap<String, u32>,
    files: Vec<files::SimFile>,
    file_ids: HashMap<String, usize>,
    circuits: HashMap<String, routed::Circuit>,
    route_requests: HashMap<String, usize>,
    /// Hidden-service forwards awaiting the master, by the entry's routed request id.
    hidden_entry: HashMap<String, hidden::AtEntry>,
    /// Answers entries hold for their delay.
    held: HashMap<u64, hidden::Held>,
    next_held: u64,
}

fn core_config(sc: &Scenario) -> CoreConfig {
    CoreConfig {
        announce_interval: sc.tracker.announce_interval,
        offer_timeout: sc.tracker.offer_timeout,
        max_offers: sc.tracker.max_offers,
        max_peers_per_swarm: sc.tracker.max_peers_per_swarm,
        ..CoreConfig::default()
    }
}

impl<'a> Sim<'a> {
    /// A simulation of `sc` seeded with `sc.seed`.
    pub fn new(sc: &'a Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(sc.seed);
        let mut peers = Vec::with_capacity(sc.peer_count());
        let mut by_id = HashMap::new();
        for (gi, g) in sc.groups.iter().enumerate() {
            for _ in 0..g.count {
                let identity = Identity::new(&sc.identifier, &mut rng);
                by_id.insert(identity.peer_id, peers.len() as u32);
                peers.push(SimPeer {
                    group: gi,
                    identity,
                    up: false,
                    inc: 0,
                    client: None,
                    node: None,
                    conn: None,
                    links: BTreeMap::new(),
                    pending_links: BTreeSet::new(),
                    my_offers: BTreeSet::new(),
                    requests: HashMap::new(),
                    timer_gen: 0,
                    timer_at: None,
                    upload_free: 0,
                });
            }
        }
        let mut sim = Sim {
            sc,
            rng,
            base: Instant::now(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            peers,
            by_id,
            tracker: Some(TrackerCore::new(core_config(sc))),
            epoch: 0,
            next_conn: 1,
            conn_owner: BTreeMap::new(),
            next_gen: 1,
            last_arrival: HashMap::new(),
            sides: None,
            send_round: vec![0; sc.steps.len()],
            rec: Recorder::new(sc),
            trace: Fnv64::new(),
            events: 0,
            out: Vec::new(),
            by_hex: HashMap::new(),
            files: Vec::new(),
            file_ids: HashMap::new(),
            circuits: HashMap::new(),
            route_requests: HashMap::new(),
            hidden_entry: HashMap::new(),
            held: HashMap::new(),
            next_held: 0,
        };
        for (i, p) in sim.peers.iter().enumerate() {
            sim.by_hex.insert(p.identity.peer_id.to_hex(), i as u32);
        }
        sim.at(0, Ev::TrackerSweep(0));
        for (i, s) in sc.steps.iter().enumerate() {
            sim.at(nanos(s.at), Ev::StepFire(i));
        }
        for (i, a) in sc.asserts.iter().enumerate() {
            if let crate::scenario::AssertKind::TrackerPeers { at, .. } = a.kind {
                sim.at(nanos(at), Ev::TrackerSample(i));
            }
        }
        sim
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            t: t.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    fn offset(&self, i: Instant) -> u64 {
        nanos(i.saturating_duration_since(self.base))
    }

    fn tracker_delay(&self, p: u32) -> u64 {
        let g = &self.sc.groups[self.peers[p as usize].group];
        nanos(self.sc.tracker.latency + g.net.latency)
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        let Some(sides) = &self.sides else {
            return false;
        };
        let (ga, gb) = (self.peers[a as usize].group, self.peers[b as usize].group);
        matches!((sides[ga], sides[gb]), (Some(x), Some(y)) if x != y)
    }

    fn path_latency(&self, a: u32, b: u32) -> u64 {
        let net = self
            .sc
            .path(self.peers[a as usize].group, self.peers[b as usize].group);
        nanos(net.latency)
    }

    /// Runs to the scenario's end. `progress` gets the fraction of virtual time done.
    pub fn run(mut self, progress: &mut dyn FnMut(f64)) -> Result<SimOutcome, String> {
        let end = nanos(self.sc.duration);
        let wall = Instant::now();
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.t > end {
                break;
            }
            self.now = q.t;
            self.events += 1;
            if self.events % (1 << 14) == 0 {
                progress(self.now as f64 / end.max(1) as f64);
                if wall.elapsed() > MAX_WALL {
                    return Err(format!(
                        "the simulation took longer than {} s of wall time (at {:.3} s of {:.3} s virtual)",
                        MAX_WALL.as_secs(),
                        self.now as f64 / 1e9,
                        end as f64 / 1e9
                    ));
                }
            }
            if self.events > MAX_EVENTS {
                return Err(format!(
                    "more than {MAX_EVENTS} events: the scenario runs away"
                ));
            }
            self.trace_event(&q);
            self.process(q.ev);
        }
        progress(1.0);
        Ok(SimOutcome {
            rec: self.rec,
            trace_hash: self.trace.finish(),
            events: self.events,
            end_ns: end,
        })
    }

    fn trace_event(&mut self, q: &Queued) {
        let tr = &mut self.trace;
        tr.u64(q.t);
        match &q.ev {
            Ev::StepFire(i) => tr.tag(1).u64(*i as u64),
            Ev::PeerOp(p, op) => tr.tag(2).u64(u64::from(*p)).u64(*op as u64),
            Ev::SendTick(i) => tr.tag(3).u64(*i as u64),
            Ev::TrackerUp => tr.tag(4),
            Ev::TrackerSweep(e) => tr.tag(5).u64(u64::from(*e)),
            Ev::ConnectAttempt(p, i) => tr.tag(6).u64(u64::from(*p)).u64(u64::from(*i)),
            Ev::TrackerOpen(p, i, c) => tr.tag(7).u64(u64::from(*p)).u64(u64::from(*i)).u64(*c),
            Ev::ConnectFailed(p, i) => tr.tag(8).u64(u64::from(*p)).u64(u64::from(*i)),
            Ev::ToTracker(c, s) => tr.tag(9).u64(*c).bytes(s.as_bytes()),
            Ev::TrackerClosedConn(c) => tr.tag(10).u64(*c),
            Ev::FromTracker(p, c, s) => tr.tag(11).u64(u64::from(*p)).u64(*c).bytes(s.as_bytes()),
            Ev::TrackerLost(p, c) => tr.tag(12).u64(u64::from(*p)).u64(*c),
            Ev::LinkUp(a, ia, b, ib) => tr
                .tag(13)
                .u64(u64::from(*a))
                .u64(u64::from(*ia))
                .u64(u64::from(*b))
                .u64(u64::from(*ib)),
            Ev::LinkFrame(a, b, g, s) => tr
                .tag(14)
                .u64(u64::from(*a))
                .u64(u64::from(*b))
                .u64(*g)
                .bytes(s.as_bytes()),
            Ev::LinkDown(a, b, g) => tr.tag(15).u64(u64::from(*a)).u64(u64::from(*b)).u64(*g),
            Ev::Timer(p, g) => tr.tag(16).u64(u64::from(*p)).u64(*g),
            Ev::LinkBinary(a, b, g, d) => tr
                .tag(17)
                .u64(u64::from(*a))
                .u64(u64::from(*b))
                .u64(*g)
                .bytes(d),
            Ev::FileTick(f) => tr.tag(18).u64(*f as u64),
            Ev::TrackerSample(a) => tr.tag(19).u64(*a as u64),
            Ev::HiddenReply(k) => tr.tag(20).u64(*k),
        };
    }

    fn process(&mut self, ev: Ev) {
        match ev {
            Ev::StepFire(i) => self.fire_step(i),
            Ev::PeerOp(p, op) => match op {
                PeerOp::Join => self.join(p),
                PeerOp::Leave => self.stop_peer(p, false),
                PeerOp::Crash => self.stop_peer(p, true),
            },
            Ev::SendTick(i) => self.send_tick(i),
            Ev::TrackerSample(a) => {
                // One swarm per run: the tracker's peers are the scenario's (none while down).
                let n = self.tracker.as_ref().map_or(0, |c| c.stats().peers);
                self.rec.tracker_samples.push((a, Ok(n as u64)));
            }
            Ev::TrackerUp => {
                self.tracker = Some(TrackerCore::new(core_config(self.sc)));
                self.at(self.now, Ev::TrackerSweep(self.epoch));
            }
            Ev::TrackerSweep(e) => {
                if e == self.epoch {
                    let now = self.instant();
                    if let Some(core) = self.tracker.as_mut() {
                        core.sweep(now);
                        self.at(self.now + 30_000_000_000, Ev::TrackerSweep(e));
                    }
                }
            }
            Ev::ConnectAttempt(p, inc) => {
                if !self.live(p, inc) {
                    return;
                }
                let rtt = 2 * self.tracker_delay(p);
                if self.tracker.is_some() {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    self.conn_owner.insert(conn, p);
                    self.at(self.now + rtt, Ev::TrackerOpen(p, inc, conn));
                } else {
                    self.at(self.now + rtt, Ev::ConnectFailed(p, inc));
                }
            }
            Ev::TrackerOpen(p, inc, conn) => {
                if !self.live(p, inc) {
                    self.at(
                        self.now + self.tracker_delay(p),
                        Ev::TrackerClosedConn(conn),
                    );
                    return;
                }
                let now = self.instant();
                if self.conn_owner.get(&conn) == Some(&p) {
                    self.peers[p as usize].conn = Some(conn);
                    if let Some(c) = self.peers[p as usize].client.as_mut() {
                        c.connected(now);
                    }
                } else if let Some(c) = self.peers[p as usize].client.as_mut() {
                    c.disconnected(now, &mut self.rng);
                }
                self.pump(p);
            }
            Ev::ConnectFailed(p, inc) => {
                if self.live(p, inc) {
                    let now = self.instant();
                    if let Some(c) = self.peers[p as usize].client.as_mut() {
                        c.disconnected(now, &mut self.rng);
                    }
                    self.pump(p);
                }
            }
            Ev::ToTracker(conn, text) => self.tracker_input(conn, &text),
            Ev::TrackerClosedConn(conn) => {
                if self.conn_owner.remove(&conn).is_some()
                    && let Some(core) = self.tracker.as_mut()
                {
                    core.connection_closed(ConnId(conn));
                }
            }
            Ev::FromTracker(p, conn, text) => {
                if self.peers[p as usize].conn == Some(conn) {
                    let now = self.instant();
                    if let Some(c) = self.peers[p as usize].client.as_mut() {
                        c.frame(now, &text);
                    }
                    self.pump(p);
                }
            }
            Ev::TrackerLost(p, conn) => {
                if self.peers[p as usize].conn == Some(conn) {
                    self.peers[p as usize].conn = None;
                    let now = self.instant();
                    if let Some(c) = self.peers[p as usize].client.as_mut() {
                        c.disconnected(now, &mut self.rng);
                    }
                    self.pump(p);
                }
            }
            Ev::LinkUp(a, ia, b, ib) => self.link_up(a, ia, b, ib),
            Ev::LinkFrame(from, to, lgen, text) => {
                let ok =
                    self.peers[to as usize].links.get(&from) == Some(&lgen) && !self.cut(from, to);
                if ok {
                    let now = self.instant();
                    if let Some(n) = self.peers[to as usize].node.as_mut() {
                        n.frame(now, &from, &text);
                    }
                    self.pump(to);
                }
            }
            Ev::LinkBinary(from, to, lgen, data) => {
                let ok =
                    self.peers[to as usize].links.get(&from) == Some(&lgen) && !self.cut(from, to);
                if ok {
                    self.on_fast_frame(to, &data);
                    self.pump(to);
                }
            }
            Ev::FileTick(f) => self.file_tick(f),
            Ev::HiddenReply(k) => self.hidden_reply(k),
            Ev::LinkDown(p, q, lgen) => {
                let peer = &mut self.peers[p as usize];
                if peer.links.get(&q) == Some(&lgen) {
                    self.files_link_down(p, q);
                    let peer = &mut self.peers[p as usize];
                    peer.links.remove(&q);
                    if let Some(n) = peer.node.as_mut() {
                        n.link_down(&q);
                    }
                    self.rec.link_down(p as usize);
                    self.rec.links_closed += 1;
                    self.pump(p);
                }
            }
            Ev::Timer(p, lgen) => {
                let peer = &mut self.peers[p as usize];
                if peer.timer_gen != lgen || !peer.up {
                    return;
                }
                peer.timer_at = None;
                let now = self.base + Duration::from_nanos(self.now);
                if let Some(c) = peer.client.as_mut() {
                    c.tick(now);
                }
                if let Some(n) = peer.node.as_mut() {
                    n.tick(now);
                }
                self.pump(p);
            }
        }
    }

    fn live(&self, p: u32, inc: u32) -> bool {
        let peer = &self.peers[p as usize];
        peer.up && peer.inc == inc
    }

    fn fire_step(&mut self, i: usize) {
        let step = &self.sc.steps[i];
        let spread_each = |spread: Duration, n: usize| -> u64 {
            if n <= 1 {
                0
            } else {
                nanos(spread) / (n as u64 - 1).max(1)
            }
        };
        match &step.action {
            Action::Join { peers, spread } | Action::Rejoin { peers, spread } => {
                let d = spread_each(*spread, peers.peers.len());
                for (k, &p) in peers.peers.iter().enumerate() {
                    self.at(self.now + d * k as u64, Ev::PeerOp(p as u32, PeerOp::Join));
                }
            }
            Action::Leave { peers, spread } => {
                let d = spread_each(*spread, peers.peers.len());
                for (k, &p) in peers.peers.iter().enumerate() {
                    self.at(self.now + d * k as u64, Ev::PeerOp(p as u32, PeerOp::Leave));
                }
            }
            Action::Crash { peers, spread } => {
                let d = spread_each(*spread, peers.peers.len());
                for (k, &p) in peers.peers.iter().enumerate() {
                    self.at(self.now + d * k as u64, Ev::PeerOp(p as u32, PeerOp::Crash));
                }
            }
            Action::Send { .. }
            | Action::Broadcast { .. }
            | Action::SendFile { .. }
            | Action::Routed { .. }
            | Action::HiddenRequest { .. } => self.send_tick(i),
            Action::Partition { sides } => {
                let mut v = vec![None; self.sc.groups.len()];
                for (s, groups) in sides.iter().enumerate() {
                    for &g in groups {
                        v[g] = Some(s);
                    }
                }
                self.sides = Some(v);
                let detect = self.now + nanos(self.sc.link_failure_detect);
                let mut downs = Vec::new();
                for (p, peer) in self.peers.iter().enumerate() {
                    for (&q, &lgen) in &peer.links {
                        if self.cut(p as u32, q) {
                            downs.push((p as u32, q, lgen));
                        }
                    }
                }
                for (p, q, lgen) in downs {
                    self.at(detect, Ev::LinkDown(p, q, lgen));
                }
            }
            Action::Heal => self.sides = None,
            Action::TrackerRestart { down_for } => {
                self.tracker = None;
                self.epoch += 1;
                self.rec.tracker_restarts += 1;
                let owners: Vec<(u64, u32)> =
                    std::mem::take(&mut self.conn_owner).into_iter().collect();
                for (conn, p) in owners {
                    let d = self.tracker_delay(p);
                    self.at(self.now + d, Ev::TrackerLost(p, conn));
                }
                self.at(self.now + nanos(*down_for), Ev::TrackerUp);
            }
        }
    }

    fn join(&mut self, p: u32) {
        let sc = self.sc;
        let peer = &mut self.peers[p as usize];
        if peer.up {
            return;
        }
        let g = &sc.groups[peer.group];
        peer.up = true;
        peer.inc += 1;
        peer.client = Some(TrackerClient::new(
            peer.identity,
            SignalConfig {
                offers_per_announce: g.offers_per_announce,
                offer_timeout: sc.tracker.offer_timeout,
                ..SignalConfig::default()
            },
        ));
        peer.node = Some(Node::new(NodeConfig {
            request_timeout: g.request_timeout,
            max_chunk_units: g.max_chunk_units,
            ..NodeConfig::default()
        }));
        self.rec.joined(p as usize, self.now);
        self.pump(p);
    }

    fn stop_peer(&mut self, p: u32, crash: bool) {
        if !self.peers[p as usize].up {
            return;
        }
        let now = self.instant();
        if !crash {
            if let Some(c) = self.peers[p as usize].client.as_mut() {
                c.stop(now);
            }
            self.pump(p);
        }
        let detect = if crash {
            nanos(self.sc.link_failure_detect)
        } else {
            0
        };
        let links: Vec<(u32, u64)> = std::mem::take(&mut self.peers[p as usize].links)
            .into_iter()
            .collect();
        for (q, lgen) in links {
            let d = if crash {
                detect
            } else {
                self.path_latency(p, q)
            };
            self.at(self.now + d, Ev::LinkDown(q, p, lgen));
        }
        let td = self.tracker_delay(p);
        let peer = &mut self.peers[p as usize];
        peer.up = false;
        peer.inc += 1;
        peer.client = None;
        peer.node = None;
        peer.pending_links.clear();
        peer.my_offers.clear();
        peer.requests.clear();
        peer.timer_gen += 1;
        peer.timer_at = None;
        if let Some(conn) = peer.conn.take() {
            self.at(self.now + td, Ev::TrackerClosedConn(conn));
        }
        self.rec.ended(p as usize, self.now);
    }

    fn tracker_input(&mut self, conn: u64, text: &str) {
        if !self.conn_owner.contains_key(&conn) {
            return;
        }
        let now = self.instant();
        let Some(core) = self.tracker.as_mut() else {
            return;
        };
        self.rec.tracker_bytes += text.len() as u64;
        self.rec.tracker_frames += 1;
        let mut out = std::mem::take(&mut self.out);
        match decode_request(text.as_bytes()) {
            Ok(req) => core.handle(ConnId(conn), req, now, &mut self.rng, &mut out),
            Err(e) => out.push(Outgoing {
                to: ConnId(conn),
                msg: OutMessage::from_decode_error(e),
            }),
        }
        for o in out.drain(..) {
            let Some(&owner) = self.conn_owner.get(&o.to.0) else {
                continue;
            };
            let text = o.msg.encode();
            self.rec.tracker_bytes += text.len() as u64;
            self.rec.tracker_frames += 1;
            let d = self.tracker_delay(owner);
            self.at(self.now + d, Ev::FromTracker(owner, o.to.0, text));
        }
        self.out = out;
    }

    fn link_up(&mut self, a: u32, ia: u32, b: u32, ib: u32) {
        if self.peers[a as usize].inc == ia {
            self.peers[a as usize].pending_links.remove(&b);
        }
        if self.peers[b as usize].inc == ib {
            self.peers[b as usize].pending_links.remove(&a);
        }
        if !self.live(a, ia)
            || !self.live(b, ib)
            || self.peers[a as usize].links.contains_key(&b)
            || self.cut(a, b)
        {
            return;
        }
        let lgen = self.next_gen;
        self.next_gen += 1;
        for (x, y) in [(a, b), (b, a)] {
            let peer = &mut self.peers[x as usize];
            peer.links.insert(y, lgen);
            if let Some(n) = peer.node.as_mut() {
                n.link_up(y);
            }
            self.rec.link_up(x as usize, self.now);
        }
        self.rec.links_formed += 1;
    }

    /// Drains peer `p`'s cores (tracker client outputs, node frames and events) and
    /// re-arms its timer.
    fn pump(&mut self, p: u32) {
        for _ in 0..1_000_000 {
            if !self.peers[p as usize].up {
                return;
            }
            let mut busy = false;
            if let Some(o) = self.peers[p as usize]
                .client
                .as_mut()
                .and_then(TrackerClient::poll_output)
            {
                busy = true;
                self.client_output(p, o);
            }
            if let Some((to, frame)) = self.peers[p as usize]
                .node
                .as_mut()
                .and_then(Node::poll_transmit)
            {
                busy = true;
                self.transmit(p, to, frame);
            }
            if let Some(ev) = self.peers[p as usize]
                .node
                .as_mut()
                .and_then(Node::poll_event)
            {
                busy = true;
                self.node_event(p, ev);
            }
            if !busy {
                break;
            }
        }
        self.rearm(p);
    }

    fn rearm(&mut self, p: u32) {
        let peer = &self.peers[p as usize];
        let next = [
            peer.client.as_ref().and_then(TrackerClient::poll_timeout),
            peer.node.as_ref().and_then(Node::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return;
        };
        // A deadline already due fires one microsecond on, so a core that keeps a past deadline
        // cannot spin at one instant.
        let t = self.offset(next).max(self.now + 1_000);
        let peer = &mut self.peers[p as usize];
        if peer.timer_at.is_some_and(|x| x <= t) {
            return;
        }
        peer.timer_gen += 1;
        peer.timer_at = Some(t);
        let lgen = peer.timer_gen;
        self.at(t, Ev::Timer(p, lgen));
    }

    fn client_output(&mut self, p: u32, o: Output) {
        let now = self.instant();
        match o {
            Output::Connect(d) => {
                let inc = self.peers[p as usize].inc;
                self.at(self.now + nanos(d), Ev::ConnectAttempt(p, inc));
            }
            Output::Send(text) => {
                if let Some(conn) = self.peers[p as usize].conn {
                    let d = self.tracker_delay(p);
                    self.at(self.now + d, Ev::ToTracker(conn, text));
                }
            }
            Output::NeedOffers(n) => {
                let mut offers = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = Id20::random(&mut self.rng);
                    offers.push((
                        id,
                        format!(r#"{{"type":"offer","sdp":"sim:{}"}}"#, id.to_hex()),
                    ));
                }
                let peer = &mut self.peers[p as usize];
                peer.my_offers.extend(offers.iter().map(|(id, _)| *id));
                if let Some(c) = peer.client.as_mut() {
                    c.offers_ready(now, offers);
                }
            }
            Output::Offer {
                from_peer,
                offer_id,
                ..
            } => {
                let Some(&q) = self.by_id.get(&from_peer) else {
                    return;
                };
                let peer = &mut self.peers[p as usize];
                if q == p || peer.links.contains_key(&q) || peer.pending_links.contains(&q) {
                    return; // already connected: let the offer expire
                }
                let answer = format!(r#"{{"type":"answer","sdp":"sim:{}"}}"#, offer_id.to_hex());
                if let Some(c) = peer.client.as_mut() {
                    c.answer_ready(now, from_peer, offer_id, &answer);
                }
            }
            Output::Answer {
                from_peer,
                offer_id,
                ..
            } => {
                if !self.peers[p as usize].my_offers.remove(&offer_id) {
                    return;
                }
                let Some(&q) = self.by_id.get(&from_peer) else {
                    return;
                };
                let (pp, qq) = (&self.peers[p as usize], &self.peers[q as usize]);
                if q == p || !qq.up || pp.links.contains_key(&q) || pp.pending_links.contains(&q) {
                    return;
                }
                let (ip, iq) = (pp.inc, qq.inc);
                self.peers[p as usize].pending_links.insert(q);
                self.peers[q as usize].pending_links.insert(p);
                let rtt = 2 * self.path_latency(p, q);
                self.at(self.now + rtt, Ev::LinkUp(p, ip, q, iq));
            }
            Output::ExpireOffer(id) => {
                self.peers[p as usize].my_offers.remove(&id);
            }
            Output::TrackerUpdate { .. } => {}
            Output::Warning(_) => self.rec.tracker_warnings += 1,
        }
    }

    fn transmit(&mut self, p: u32, to: u32, frame: String) {
        if let Some((lgen, arrive)) = self.schedule_frame(p, to, frame.len()) {
            self.at(arrive, Ev::LinkFrame(p, to, lgen, frame));
        }
    }

    /// Sends a binary frame on the link `p` -> `to` (fast-path file chunks bypass the node,
    /// as in the mesh).
    fn transmit_binary(&mut self, p: u32, to: u32, frame: Vec<u8>) {
        if let Some((lgen, arrive)) = self.schedule_frame(p, to, frame.len()) {
            self.at(arrive, Ev::LinkBinary(p, to, lgen, frame));
        }
    }

    /// Counts a frame of `size` bytes on the link `p` -> `to` and returns the link generation
    /// and its arrival time (bandwidth, latency, jitter, loss; in order per direction).
    fn schedule_frame(&mut self, p: u32, to: u32, size: usize) -> Option<(u64, u64)> {
        let &lgen = self.peers[p as usize].links.get(&to)?;
        self.rec.link_bytes += size as u64;
        self.rec.link_frames += 1;
        let net = self
            .sc
            .path(self.peers[p as usize].group, self.peers[to as usize].group);
        let depart = match net.bandwidth {
            Some(bw) => {
                let peer = &mut self.peers[p as usize];
                let start = peer.upload_free.max(self.now);
                peer.upload_free = start + (size as f64 / bw * 1e9) as u64;
                peer.upload_free
            }
            None => self.now,
        };
        let lat = nanos(net.latency);
        let mut delay = lat;
        let jitter = nanos(net.jitter);
        if jitter > 0 {
            delay += self.rng.random_range(0..=jitter);
        }
        if net.loss > 0.0 {
            let rto = (3 * lat).max(200_000_000);
            for _ in 0..8 {
                if !self.rng.random_bool(net.loss) {
                    break;
                }
                delay += rto;
            }
        }
        let last = self.last_arrival.entry((p, to)).or_insert(0);
        let arrive = (depart + delay).max(*last);
        *last = arrive;
        Some((lgen, arrive))
    }

    fn node_event(&mut self, p: u32, ev: Event<u32>) {
        let now = self.instant();
        match ev {
            Event::Message {
                handle,
                payload,
                peer,
            } => {
                if let Payload::Json(v) = &payload {
                    if ghostmesh::file::packet::is_file_packet(v) {
                        self.on_file_packet(p, peer, v);
                        return;
                    }
                    if ghostmesh::relay::packet::is_onion(v) {
                        self.on_onion_packet(p, peer, v);
                        return;
                    }
                    if ghostmesh::hidden::packet::kind(v)
                        == Some(ghostmesh::hidden::packet::REQUEST)
                    {
                        self.on_hidden_request(p, peer, handle, v);
                        return;
                    }
                }
                if let Some(id) = payload::id_of(&payload)
                    && let Some(m) = self.rec.messages.get_mut(id)
                    && m.delivered_at.is_none()
                    && m.to == Some(p as usize)
                {
                    let step = &self.sc.steps[m.step];
                    let (size, content) = match &step.action {
                        Action::Send { size, content, .. }
                        | Action::Broadcast { size, content, .. } => (*size, *content),
                        _ => (0, crate::scenario::Content::Text),
                    };
                    if payload::intact(&payload, id, size, content) {
                        m.delivered_at = Some(self.now);
                    } else {
                        m.failure = Some("payload arrived altered".into());
                    }
                }
                if let Some(n) = self.peers[p as usize].node.as_mut() {
                    let _ = n.respond(now, &handle, Payload::Text("ack".into()));
                }
            }
            Event::Response { request, .. } => {
                if let Some(id) = self.peers[p as usize].requests.remove(&request)
                    && let Some(m) = self.rec.messages.get_mut(id)
                {
                    m.acked_at = Some(self.now);
                }
            }
            Event::Timeout { request, .. } | Event::PeerFailed { request, .. } => {
                let timeout = matches!(ev, Event::Timeout { .. });
                if let Some(id) = self.peers[p as usize].requests.remove(&request)
                    && let Some(m) = self.rec.messages.get_mut(id)
                    && m.delivered_at.is_none()
                {
                    m.failure = Some(
                        if timeout {
                            "request timed out"
                        } else {
                            "link closed"
                        }
                        .into(),
                    );
                }
            }
            _ => {}
        }
    }

    fn send_tick(&mut self, i: usize) {
        let sc = self.sc;
        let step = &sc.steps[i];
        if let Action::SendFile {
            count, interval, ..
        }
        | Action::Routed {
            count, interval, ..
        }
        | Action::HiddenRequest {
            count, interval, ..
        } = &step.action
        {
            match step.action {
                Action::SendFile { .. } => self.file_round(i),
                Action::HiddenRequest { .. } => self.hidden_round(i),
                _ => self.routed_round(i),
            }
            self.send_round[i] += 1;
            if self.send_round[i] < *count {
                self.at(self.now + nanos(*interval), Ev::SendTick(i));
            }
            return;
        }
        let (from, count, interval, size, content) = match &step.action {
            Action::Send {
                from,
                count,
                interval,
                size,
                content,
                ..
            }
            | Action::Broadcast {
                from,
                count,
                interval,
                size,
                content,
            } => (from, *count, *interval, *size, *content),
            _ => return,
        };
        for &p in &from.peers {
            let p = p as u32;
            if !self.peers[p as usize].up {
                continue;
            }
            let targets: Vec<u32> = match &step.action {
                Action::Broadcast { .. } => self.peers[p as usize].links.keys().copied().collect(),
                Action::Send { to, .. } => {
                    let linked: Vec<u32> = match to {
                        Target::Neighbour => self.peers[p as usize].links.keys().copied().collect(),
                        Target::Among(sel) => self.peers[p as usize]
                            .links
                            .keys()
                            .copied()
                            .filter(|q| sel.peers.binary_search(&(*q as usize)).is_ok())
                            .collect(),
                    };
                    if linked.is_empty() {
                        vec![]
                    } else {
                        vec![linked[self.rng.random_range(0..linked.len())]]
                    }
                }
                _ => vec![],
            };
            if targets.is_empty() {
                self.rec.sent(MsgRecord {
                    step: i,
                    from: p as usize,
                    to: None,
                    bytes: size,
                    sent_at: self.now,
                    delivered_at: None,
                    acked_at: None,
                    failure: Some("no link to a target peer".into()),
                    ..MsgRecord::default()
                });
                continue;
            }
            for q in targets {
                let id = self.rec.sent(MsgRecord {
                    step: i,
                    from: p as usize,
                    to: Some(q as usize),
                    bytes: size,
                    sent_at: self.now,
                    delivered_at: None,
                    acked_at: None,
                    failure: None,
                    ..MsgRecord::default()
                });
                let now = self.instant();
                let body = payload::make(id, size, content);
                let peer = &mut self.peers[p as usize];
                if let Some(n) = peer.node.as_mut() {
                    match n.send(now, &q, body, &mut self.rng) {
                        Ok(r) => {
                            peer.requests.insert(r, id);
                        }
                        Err(e) => {
                            self.rec.messages[id].failure = Some(format!("send refused: {e:?}"))
                        }
                    }
                }
            }
            self.pump(p);
        }
        self.send_round[i] += 1;
        if self.send_round[i] < count {
            self.at(self.now + nanos(interval), Ev::SendTick(i));
        }
    }
}

/// Runs `sc` in the simulator.
pub fn run(sc: &Scenario, progress: &mut dyn FnMut(f64)) -> Result<SimOutcome, String> {
    Sim::new(sc).run(progress)
}
