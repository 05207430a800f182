//! Counters and gauges, exported as Prometheus text (`/metrics`) and JSON (`/stats.json`).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::swarm::{CoreCounters, CoreStats};

type Labels = [(&'static str, &'static str); 1];

/// Why a queued or about-to-be-queued message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// A relayed offer found the recipient's queue full.
    OfferQueueFull,
    /// A queued offer was evicted to make room for a reply.
    OfferEvicted,
    /// A reply (announce reply, answer, scrape, error) found the queue full of replies.
    ReplyQueueFull,
    /// The recipient's connection had already closed.
    RecipientGone,
}

impl Drop {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::OfferQueueFull => "offer_queue_full",
            Drop::OfferEvicted => "offer_evicted",
            Drop::ReplyQueueFull => "reply_queue_full",
            Drop::RecipientGone => "recipient_gone",
        }
    }

    /// Every reason, for reports.
    pub const ALL: [Drop; 4] = [
        Drop::OfferQueueFull,
        Drop::OfferEvicted,
        Drop::ReplyQueueFull,
        Drop::RecipientGone,
    ];
}

/// All metrics of one tracker.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    drops: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    closed: Family<Labels, Counter>,
    core_counters: Family<Labels, Counter>,
    connections: Gauge<i64, AtomicI64>,
    swarms: Gauge<i64, AtomicI64>,
    peers: Gauge<i64, AtomicI64>,
    seeders: Gauge<i64, AtomicI64>,
    leechers: Gauge<i64, AtomicI64>,
    pending_offers: Gauge<i64, AtomicI64>,
    rss_bytes: Gauge<i64, AtomicI64>,
    /// The per-message counters, resolved once (a family lookup hashes and locks; these are
    /// counted for every message).
    hot: HotCounters,
}

const REQUEST_KINDS: [&str; 4] = ["announce", "answer", "scrape", "invalid"];
const RESPONSE_KINDS: [&str; 5] = ["announce", "offer", "answer", "scrape", "error"];

#[derive(Debug)]
struct HotCounters {
    requests: [Counter; 4],
    responses: [Counter; 5],
    drops: [Counter; 4],
}

impl HotCounters {
    fn new(
        requests: &Family<Labels, Counter>,
        responses: &Family<Labels, Counter>,
        drops: &Family<Labels, Counter>,
    ) -> Self {
        HotCounters {
            requests: REQUEST_KINDS.map(|k| requests.get_or_create(&[("kind", k)]).clone()),
            responses: RESPONSE_KINDS.map(|k| responses.get_or_create(&[("kind", k)]).clone()),
            drops: Drop::ALL.map(|d| drops.get_or_create(&[("reason", d.as_str())]).clone()),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `ghostmesh_tracker` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ghostmesh_tracker");
        let m = Metrics {
            requests: Family::default(),
            responses: Family::default(),
            drops: Family::default(),
            rejected: Family::default(),
            closed: Family::default(),
            core_counters: Family::default(),
            connections: Gauge::default(),
            swarms: Gauge::default(),
            peers: Gauge::default(),
            seeders: Gauge::default(),
            leechers: Gauge::default(),
            pending_offers: Gauge::default(),
            rss_bytes: Gauge::default(),
            registry: Registry::default(),
            hot: HotCounters {
                requests: Default::default(),
                responses: Default::default(),
                drops: Default::default(),
            },
        };
        let m = Metrics {
            hot: HotCounters::new(&m.requests, &m.responses, &m.drops),
            ..m
        };
        registry.register(
            "requests",
            "Client messages by kind (announce, answer, scrape, invalid)",
            m.requests.clone(),
        );
        registry.register(
            "responses",
            "Messages sent by kind (announce, offer, answer, scrape, error)",
            m.responses.clone(),
        );
        registry.register(
            "dropped_messages",
            "Messages not delivered, by reason",
            m.drops.clone(),
        );
        registry.register(
            "rejected_connections",
            "Connections refused, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "closed_connections",
            "WebSocket connections closed, by reason",
            m.closed.clone(),
        );
        registry.register("swarm_events", "Swarm core events (offers relayed, surplus offers, answers relayed or refused, peers expired, announces refused)", m.core_counters.clone());
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register("swarms", "Swarms with at least one peer", m.swarms.clone());
        registry.register("peers", "Peers in all swarms", m.peers.clone());
        registry.register("seeders", "Seeders in all swarms", m.seeders.clone());
        registry.register("leechers", "Leechers in all swarms", m.leechers.clone());
        registry.register(
            "pending_offers",
            "Relayed offers awaiting an answer",
            m.pending_offers.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident set size of the process",
            m.rss_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a client message.
    pub fn request(&self, kind: &'static str) {
        match REQUEST_KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.hot.requests[i].inc(),
            None => self.requests.get_or_create(&[("kind", kind)]).inc(),
        };
    }

    /// Counts a message sent.
    pub fn response(&self, kind: &'static str) {
        match RESPONSE_KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.hot.responses[i].inc(),
            None => self.responses.get_or_create(&[("kind", kind)]).inc(),
        };
    }

    /// Counts an undelivered message.
    pub fn dropped(&self, why: Drop) {
        self.hot.drops[why as usize].inc();
    }

    /// Undelivered messages for one reason so far.
    pub fn drops(&self, why: Drop) -> u64 {
        self.drops.get_or_create(&[("reason", why.as_str())]).get()
    }

    /// Counts a refused connection.
    pub fn rejected(&self, why: &'static str) {
        self.rejected.get_or_create(&[("reason", why)]).inc();
    }

    /// Refused connections for one reason so far.
    pub fn rejections(&self, why: &'static str) -> u64 {
        self.rejected.get_or_create(&[("reason", why)]).get()
    }

    /// Counts a closed connection.
    pub fn closed(&self, why: &'static str) {
        self.closed.get_or_create(&[("reason", why)]).inc();
    }

    /// Closed connections for one reason so far.
    pub fn closes(&self, why: &'static str) -> u64 {
        self.closed.get_or_create(&[("reason", why)]).get()
    }

    /// Requests of one kind so far.
    pub fn requests(&self, kind: &'static str) -> u64 {
        self.requests.get_or_create(&[("kind", kind)]).get()
    }

    /// Responses of one kind so far.
    pub fn responses(&self, kind: &'static str) -> u64 {
        self.responses.get_or_create(&[("kind", kind)]).get()
    }

    /// Sets the open-connection gauge.
    pub fn set_connections(&self, n: usize) {
        self.connections.set(n as i64);
    }

    /// Copies the core's state into the gauges and counters (at scrape time).
    pub fn observe_core(&self, st: &CoreStats, c: &CoreCounters, rss: Option<u64>) {
        self.swarms.set(st.swarms as i64);
        self.peers.set(st.peers as i64);
        self.seeders.set(st.seeders as i64);
        self.leechers.set(st.leechers as i64);
        self.pending_offers.set(st.pending_offers as i64);
        if let Some(rss) = rss {
            self.rss_bytes.set(rss as i64);
        }
        for (name, v) in core_counter_pairs(c) {
            let ctr = self.core_counters.get_or_create(&[("event", name)]);
            // The core's counters are monotonic; add what is new since the last scrape.
            ctr.inc_by(v.saturating_sub(ctr.get()));
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }
}

/// The core's counters with their metric names.
pub fn core_counter_pairs(c: &CoreCounters) -> [(&'static str, u64); 6] {
    [
        ("offers_relayed", c.offers_relayed),
        ("offers_surplus", c.offers_surplus),
        ("answers_relayed", c.answers_relayed),
        ("answers_refused", c.answers_refused),
        ("peers_expired", c.peers_expired),
        ("announces_refused", c.announces_refused),
    ]
}

/// Resident set size from /proc/self/statm (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
