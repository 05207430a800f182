//! The tracker's sans-IO core: swarms, peers, offer/answer routing, expiry and limits.
//!
//! [`TrackerCore`] owns no socket, clock or RNG. The caller hands it decoded requests with the
//! connection they came from, the current instant and an RNG, and gets back the messages to send
//! and to which connection. The same core runs under the tokio server, inside the harness's
//! simulator and in property tests.
//!
//! ```
//! use std::time::Instant;
//! use ghostmesh_tracker::swarm::{ConnId, CoreConfig, TrackerCore};
//! use ghostmesh_tracker::wire::{decode_request, OutMessage};
//! use rand::SeedableRng;
//!
//! let mut core = TrackerCore::new(CoreConfig::default());
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let frame = br#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb"}"#;
//! let req = decode_request(frame).unwrap();
//! let mut out = Vec::new();
//! core.handle(ConnId(1), req, Instant::now(), &mut rng, &mut out);
//! assert!(matches!(out[0].msg, OutMessage::AnnounceReply { incomplete: 1, .. }));
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use rand::Rng;

use crate::access::AccessList;
use crate::wire::{
    Announce, Answer, Event, InfoHash, OfferId, OutMessage, PeerId, ReplyAction, Request, Scrape,
    ScrapeCounts,
};

/// A connection, as numbered by the IO shell. Never reused while the core lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The core's limits and timings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// `interval` sent in announce replies.
    pub announce_interval: Duration,
    /// A peer that has not announced for this long is removed.
    pub peer_timeout: Duration,
    /// How long an answer to a relayed offer is accepted.
    pub offer_timeout: Duration,
    /// Offers relayed per announce at most; surplus offers are dropped.
    pub max_offers: usize,
    /// Peers in one swarm at most.
    pub max_peers_per_swarm: usize,
    /// Swarms in total at most.
    pub max_swarms: usize,
    /// Memberships (info_hash, peer_id pairs) one connection may hold.
    pub max_swarms_per_connection: usize,
    /// Whether a scrape without `info_hash` lists every swarm.
    pub allow_full_scrape: bool,
    /// info_hashes in one scrape request at most.
    pub max_scrape_hashes: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            announce_interval: Duration::from_secs(120),
            peer_timeout: Duration::from_secs(240),
            offer_timeout: Duration::from_secs(50),
            max_offers: 10,
            max_peers_per_swarm: 5000,
            max_swarms: 100_000,
            max_swarms_per_connection: 100,
            allow_full_scrape: true,
            max_scrape_hashes: 256,
        }
    }
}

/// A message for one connection.
#[derive(Debug)]
pub struct Outgoing {
    /// Recipient.
    pub to: ConnId,
    /// Message.
    pub msg: OutMessage,
}

/// Counters the core keeps; the shell exports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Offers relayed to a peer.
    pub offers_relayed: u64,
    /// Offers dropped because the swarm had fewer other peers than offers, or above `max_offers`.
    pub offers_surplus: u64,
    /// Answers relayed to their offerer.
    pub answers_relayed: u64,
    /// Answers refused (unknown, expired, or from the wrong connection or peer).
    pub answers_refused: u64,
    /// Peers removed by the silence sweep.
    pub peers_expired: u64,
    /// Announces refused by a limit or the access list.
    pub announces_refused: u64,
}

/// Swarm and peer counts at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Swarms (never empty: empty swarms are freed).
    pub swarms: usize,
    /// Peers over all swarms.
    pub peers: usize,
    /// Seeders over all swarms.
    pub seeders: usize,
    /// Leechers over all swarms.
    pub leechers: usize,
    /// Connections holding at least one membership.
    pub connections_with_peers: usize,
    /// Offers awaiting an answer.
    pub pending_offers: usize,
}

#[derive(Debug)]
struct PendingOffer {
    offer_id: OfferId,
    to_conn: ConnId,
    to_peer: PeerId,
    expires: Instant,
}

#[derive(Debug)]
struct Peer {
    conn: ConnId,
    seeder: bool,
    last_seen: Instant,
    /// Offers this peer made that were relayed and not yet answered (bounded).
    pending: Vec<PendingOffer>,
}

#[derive(Debug, Default)]
struct Swarm {
    peers: IndexMap<PeerId, Peer>,
    seeders: usize,
    downloaded: u64,
}

impl Swarm {
    fn counts(&self) -> ScrapeCounts {
        ScrapeCounts {
            complete: self.seeders as u64,
            incomplete: (self.peers.len() - self.seeders) as u64,
            downloaded: self.downloaded,
        }
    }

    fn remove(&mut self, peer_id: &PeerId) -> Option<Peer> {
        let p = self.peers.swap_remove(peer_id)?;
        if p.seeder {
            self.seeders -= 1;
        }
        Some(p)
    }
}

/// The tracker state machine. See the module docs.
#[derive(Debug)]
pub struct TrackerCore {
    cfg: CoreConfig,
    access: AccessList,
    swarms: HashMap<InfoHash, Swarm>,
    /// Memberships per connection, so a closed socket leaves every swarm at once.
    conns: HashMap<ConnId, Vec<(InfoHash, PeerId)>>,
    counters: CoreCounters,
}

impl TrackerCore {
    /// A core with no swarms and an open access list.
    pub fn new(cfg: CoreConfig) -> Self {
        TrackerCore {
            cfg,
            access: AccessList::default(),
            swarms: HashMap::new(),
            conns: HashMap::new(),
            counters: CoreCounters::default(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Replaces the access list and removes swarms it no longer allows. Returns how many
    /// swarms were removed.
    pub fn set_access_list(&mut self, access: AccessList) -> usize {
        self.access = access;
        let denied: Vec<InfoHash> = self
            .swarms
            .keys()
            .filter(|h| !self.access.allows(h))
            .copied()
            .collect();
        for h in &denied {
            self.remove_swarm(h);
        }
        denied.len()
    }

    /// Handles one decoded request from `conn`, appending what to send to `out`.
    pub fn handle<R: Rng + ?Sized>(
        &mut self,
        conn: ConnId,
        req: Request,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<Outgoing>,
    ) {
        match req {
            Request::Announce(a) => self.announce(conn, a, now, rng, out),
            Request::Answer(a) => self.answer(conn, a, now, out),
            Request::Scrape(s) => self.scrape(conn, s, out),
        }
    }

    fn refuse(
        &mut self,
        conn: ConnId,
        info_hash: InfoHash,
        reason: String,
        out: &mut Vec<Outgoing>,
    ) {
        self.counters.announces_refused += 1;
        out.push(Outgoing {
            to: conn,
            msg: OutMessage::Error {
                action: ReplyAction::Announce,
                info_hash: Some(info_hash),
                reason,
            },
        });
    }

    fn reply(&self, conn: ConnId, info_hash: InfoHash, out: &mut Vec<Outgoing>) {
        let c = self
            .swarms
            .get(&info_hash)
            .map(Swarm::counts)
            .unwrap_or_default();
        out.push(Outgoing {
            to: conn,
            msg: OutMessage::AnnounceReply {
                info_hash,
                complete: c.complete,
                incomplete: c.incomplete,
                interval: self.cfg.announce_interval.as_secs(),
            },
        });
    }

    fn announce<R: Rng + ?Sized>(
        &mut self,
        conn: ConnId,
        a: Announce,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<Outgoing>,
    ) {
        let Announce {
            info_hash,
            peer_id,
            event,
            left,
            offers,
        } = a;
        if !self.access.allows(&info_hash) {
            return self.refuse(
                conn,
                info_hash,
                "info_hash not allowed by this tracker".into(),
                out,
            );
        }
        if event == Event::Stopped {
            // Only the connection that holds the membership may end it.
            let owned = self
                .swarms
                .get(&info_hash)
                .and_then(|s| s.peers.get(&peer_id))
                .is_some_and(|p| p.conn == conn);
            if owned {
                self.leave(info_hash, peer_id);
            }
            return self.reply(conn, info_hash, out);
        }

        let seeder_now = event == Event::Completed || left == Some(0.0);
        let existing = self
            .swarms
            .get(&info_hash)
            .and_then(|s| s.peers.get(&peer_id))
            .map(|p| p.conn);
        match existing {
            Some(old_conn) => {
                if old_conn != conn {
                    // The peer reconnected on a new socket (the old one may linger half-open):
                    // move the membership, as the reference server does.
                    if self.conn_is_full(conn) {
                        return self.refuse_conn_full(conn, info_hash, out);
                    }
                    self.unlink(old_conn, info_hash, peer_id);
                    self.conns
                        .entry(conn)
                        .or_default()
                        .push((info_hash, peer_id));
                }
                let Some(swarm) = self.swarms.get_mut(&info_hash) else {
                    return;
                };
                let Some(peer) = swarm.peers.get_mut(&peer_id) else {
                    return;
                };
                peer.conn = conn;
                peer.last_seen = now;
                // An update without `left` keeps the state the peer had.
                let seeder = if left.is_some() || event == Event::Completed {
                    seeder_now
                } else {
                    peer.seeder
                };
                if seeder != peer.seeder {
                    peer.seeder = seeder;
                    if seeder {
                        swarm.seeders += 1;
                    } else {
                        swarm.seeders -= 1;
                    }
                }
                if event == Event::Completed {
                    swarm.downloaded += 1;
                }
            }
            None => {
                if self.conn_is_full(conn) {
                    return self.refuse_conn_full(conn, info_hash, out);
                }
                let swarm_exists = self.swarms.contains_key(&info_hash);
                if !swarm_exists && self.swarms.len() >= self.cfg.max_swarms {
                    return self.refuse(
                        conn,
                        info_hash,
                        "tracker is full: too many swarms".into(),
                        out,
                    );
                }
                let swarm = self.swarms.entry(info_hash).or_default();
                if swarm.peers.len() >= self.cfg.max_peers_per_swarm {
                    let max = self.cfg.max_peers_per_swarm;
                    return self.refuse(
                        conn,
                        info_hash,
                        format!("swarm is full ({max} peers)"),
                        out,
                    );
                }
                swarm.peers.insert(
                    peer_id,
                    Peer {
                        conn,
                        seeder: seeder_now,
                        last_seen: now,
                        pending: Vec::new(),
                    },
                );
                if seeder_now {
                    swarm.seeders += 1;
                }
                if event == Event::Completed {
                    swarm.downloaded += 1;
                }
                self.conns
                    .entry(conn)
                    .or_default()
                    .push((info_hash, peer_id));
            }
        }

        self.reply(conn, info_hash, out);
        if !offers.is_empty() {
            self.relay_offers(info_hash, peer_id, offers, now, rng, out);
        }
    }

    fn conn_is_full(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|m| m.len() >= self.cfg.max_swarms_per_connection)
    }

    fn refuse_conn_full(&mut self, conn: ConnId, info_hash: InfoHash, out: &mut Vec<Outgoing>) {
        let max = self.cfg.max_swarms_per_connection;
        self.refuse(
            conn,
            info_hash,
            format!("too many swarms on this connection (max {max})"),
            out,
        );
    }

    fn relay_offers<R: Rng + ?Sized>(
        &mut self,
        info_hash: InfoHash,
        offerer: PeerId,
        offers: Vec<crate::wire::OfferIn>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(swarm) = self.swarms.get_mut(&info_hash) else {
            return;
        };
        let Some(self_index) = swarm.peers.get_index_of(&offerer) else {
            return;
        };
        let others = swarm.peers.len() - 1;
        let n = offers.len().min(self.cfg.max_offers).min(others);
        self.counters.offers_surplus += (offers.len() - n) as u64;
        if n == 0 {
            return;
        }
        // Sample one extra index so that skipping the offerer still leaves n distinct others.
        let picks =
            rand::seq::index::sample(rng, swarm.peers.len(), (n + 1).min(swarm.peers.len()));
        let targets: Vec<(PeerId, ConnId)> = picks
            .into_iter()
            .filter(|&i| i != self_index)
            .take(n)
            .filter_map(|i| swarm.peers.get_index(i).map(|(id, p)| (*id, p.conn)))
            .collect();
        let expires = now + self.cfg.offer_timeout;
        let cap = self.cfg.max_offers.max(1) * 4;
        let Some(offerer_peer) = swarm.peers.get_mut(&offerer) else {
            return;
        };
        offerer_peer.pending.retain(|p| p.expires > now);
        for ((to_peer, to_conn), offer) in targets.into_iter().zip(offers) {
            if offerer_peer.pending.len() >= cap {
                offerer_peer.pending.remove(0);
            }
            offerer_peer.pending.push(PendingOffer {
                offer_id: offer.offer_id,
                to_conn,
                to_peer,
                expires,
            });
            self.counters.offers_relayed += 1;
            out.push(Outgoing {
                to: to_conn,
                msg: OutMessage::Offer {
                    info_hash,
                    peer_id: offerer,
                    offer_id: offer.offer_id,
                    offer: offer.offer,
                },
            });
        }
    }

    fn answer(&mut self, conn: ConnId, a: Answer, now: Instant, out: &mut Vec<Outgoing>) {
        let Answer {
            info_hash,
            peer_id,
            to_peer_id,
            offer_id,
            answer,
        } = a;
        let target = self.swarms.get_mut(&info_hash).and_then(|swarm| {
            // Answering counts as a sign of life for the answerer.
            if let Some(me) = swarm.peers.get_mut(&peer_id).filter(|p| p.conn == conn) {
                me.last_seen = now;
            }
            let offerer = swarm.peers.get_mut(&to_peer_id)?;
            let pos = offerer.pending.iter().position(|p| {
                p.offer_id == offer_id
                    && p.to_conn == conn
                    && p.to_peer == peer_id
                    && p.expires > now
            })?;
            offerer.pending.swap_remove(pos);
            Some(offerer.conn)
        });
        match target {
            Some(to) => {
                self.counters.answers_relayed += 1;
                out.push(Outgoing {
                    to,
                    msg: OutMessage::Answer {
                        info_hash,
                        peer_id,
                        offer_id,
                        answer,
                    },
                });
            }
            None => {
                self.counters.answers_refused += 1;
                out.push(Outgoing {
                    to: conn,
                    msg: OutMessage::Error {
                        action: ReplyAction::Announce,
                        info_hash: Some(info_hash),
                        reason: "answer refused: no matching offer was sent to this connection \
                                 (unknown, expired or already answered, or the offerer left)"
                            .into(),
                    },
                });
            }
        }
    }

    fn scrape(&mut self, conn: ConnId, s: Scrape, out: &mut Vec<Outgoing>) {
        let files: Vec<(InfoHash, ScrapeCounts)> = match s.info_hashes {
            None if !self.cfg.allow_full_scrape => {
                return out.push(Outgoing {
                    to: conn,
                    msg: OutMessage::Error {
                        action: ReplyAction::Scrape,
                        info_hash: None,
                        reason: "full scrape is disabled on this tracker: send info_hash".into(),
                    },
                });
            }
            // A full scrape is bounded like a list: past max_scrape_hashes swarms the client is
            // told to scrape by info_hash instead of getting an unbounded reply.
            None if self.swarms.len() > self.cfg.max_scrape_hashes => {
                let (n, max) = (self.swarms.len(), self.cfg.max_scrape_hashes);
                return out.push(Outgoing {
                    to: conn,
                    msg: OutMessage::Error {
                        action: ReplyAction::Scrape,
                        info_hash: None,
                        reason: format!(
                            "full scrape refused: {n} swarms, more than max_scrape_hashes ({max}); send info_hash"
                        ),
                    },
                });
            }
            None => self.swarms.iter().map(|(h, s)| (*h, s.counts())).collect(),
            Some(list) if list.len() > self.cfg.max_scrape_hashes => {
                let max = self.cfg.max_scrape_hashes;
                return out.push(Outgoing {
                    to: conn,
                    msg: OutMessage::Error {
                        action: ReplyAction::Scrape,
                        info_hash: None,
                        reason: format!("too many info_hashes in one scrape (max {max})"),
                    },
                });
            }
            Some(list) => list
                .into_iter()
                .map(|h| {
                    (
                        h,
                        self.swarms.get(&h).map(Swarm::counts).unwrap_or_default(),
                    )
                })
                .collect(),
        };
        out.push(Outgoing {
            to: conn,
            msg: OutMessage::Scrape {
                files,
                min_request_interval: self.cfg.announce_interval.as_secs(),
            },
        });
    }

    /// The connection closed: every peer it announced leaves at once.
    pub fn connection_closed(&mut self, conn: ConnId) {
        let Some(memberships) = self.conns.remove(&conn) else {
            return;
        };
        for (info_hash, peer_id) in memberships {
            let Some(swarm) = self.swarms.get_mut(&info_hash) else {
                continue;
            };
            if swarm.peers.get(&peer_id).is_some_and(|p| p.conn == conn) {
                swarm.remove(&peer_id);
                if swarm.peers.is_empty() {
                    self.swarms.remove(&info_hash);
                }
            }
        }
    }

    /// Removes peers silent for longer than the peer timeout and expired offers. Returns how
    /// many peers were removed.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let timeout = self.cfg.peer_timeout;
        let mut expired = Vec::new();
        self.swarms.retain(|info_hash, swarm| {
            swarm.peers.retain(|peer_id, p| {
                let alive = now.saturating_duration_since(p.last_seen) < timeout;
                if alive {
                    p.pending.retain(|o| o.expires > now);
                } else {
                    expired.push((p.conn, *info_hash, *peer_id));
                }
                alive
            });
            swarm.seeders = swarm.peers.values().filter(|p| p.seeder).count();
            !swarm.peers.is_empty()
        });
        for (conn, info_hash, peer_id) in &expired {
            self.unlink(*conn, *info_hash, *peer_id);
        }
        self.counters.peers_expired += expired.len() as u64;
        expired.len()
    }

    fn leave(&mut self, info_hash: InfoHash, peer_id: PeerId) {
        let Some(swarm) = self.swarms.get_mut(&info_hash) else {
            return;
        };
        let Some(peer) = swarm.remove(&peer_id) else {
            return;
        };
        if swarm.peers.is_empty() {
            self.swarms.remove(&info_hash);
        }
        self.unlink(peer.conn, info_hash, peer_id);
    }

    fn remove_swarm(&mut self, info_hash: &InfoHash) {
        if let Some(swarm) = self.swarms.remove(info_hash) {
            for (peer_id, p) in swarm.peers {
                self.unlink(p.conn, *info_hash, peer_id);
            }
        }
    }

    /// Drops the connection's record of a membership.
    fn unlink(&mut self, conn: ConnId, info_hash: InfoHash, peer_id: PeerId) {
        if let Some(m) = self.conns.get_mut(&conn) {
            if let Some(pos) = m.iter().position(|&(h, p)| h == info_hash && p == peer_id) {
                m.swap_remove(pos);
            }
            if m.is_empty() {
                self.conns.remove(&conn);
            }
        }
    }

    /// Counts at this instant. Walks every swarm: meant for stats pages, not hot paths.
    pub fn stats(&self) -> CoreStats {
        let mut st = CoreStats {
            swarms: self.swarms.len(),
            connections_with_peers: self.conns.len(),
            ..CoreStats::default()
        };
        for s in self.swarms.values() {
            st.peers += s.peers.len();
            st.seeders += s.seeders;
            st.pending_offers += s.peers.values().map(|p| p.pending.len()).sum::<usize>();
        }
        st.leechers = st.peers - st.seeders;
        st
    }

    /// Counters since start.
    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    /// Peers of the largest swarms, for the stats page: (info_hash, counts), most peers first.
    pub fn top_swarms(&self, n: usize) -> Vec<(InfoHash, ScrapeCounts)> {
        let mut v: Vec<_> = self.swarms.iter().map(|(h, s)| (*h, s.counts())).collect();
        v.sort_by(|a, b| {
            (b.1.complete + b.1.incomplete)
                .cmp(&(a.1.complete + a.1.incomplete))
                .then(a.0.cmp(&b.0))
        });
        v.truncate(n);
        v
    }

    /// Checks the core's internal invariants; used by tests. Returns a description of the first
    /// broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut memberships = 0usize;
        for (h, s) in &self.swarms {
            if s.peers.is_empty() {
                return Err(format!("empty swarm {h} kept"));
            }
            let seeders = s.peers.values().filter(|p| p.seeder).count();
            if seeders != s.seeders {
                return Err(format!(
                    "swarm {h}: seeders counted {} but {seeders} present",
                    s.seeders
                ));
            }
            for (pid, p) in &s.peers {
                memberships += 1;
                let listed = self
                    .conns
                    .get(&p.conn)
                    .is_some_and(|m| m.contains(&(*h, *pid)));
                if !listed {
                    return Err(format!(
                        "peer {pid} in {h} not listed on its connection {:?}",
                        p.conn
                    ));
                }
                if p.pending.len() > self.cfg.max_offers.max(1) * 4 {
                    return Err(format!(
                        "peer {pid} holds {} pending offers",
                        p.pending.len()
                    ));
                }
            }
            if s.peers.len() > self.cfg.max_peers_per_swarm {
                return Err(format!("swarm {h} over its peer limit"));
            }
        }
        let listed: usize = self.conns.values().map(Vec::len).sum();
        if listed != memberships {
            return Err(format!(
                "{listed} memberships listed on connections, {memberships} in swarms"
            ));
        }
        for (c, m) in &self.conns {
            if m.len() > self.cfg.max_swarms_per_connection {
                return Err(format!("connection {c:?} over its swarm limit"));
            }
        }
        Ok(())
    }

    /// Whether `conn` currently holds `peer_id` in `info_hash` (for tests and the simulator).
    pub fn is_member(&self, conn: ConnId, info_hash: &InfoHash, peer_id: &PeerId) -> bool {
        self.swarms
            .get(info_hash)
            .and_then(|s| s.peers.get(peer_id))
            .is_some_and(|p| p.conn == conn)
    }
}
