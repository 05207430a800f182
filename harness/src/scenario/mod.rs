//! Scenario files: the TOML schema ([`raw`]), validation with file/line/key errors
//! ([`validate`]), and the resolved, typed [`Scenario`] both backends run.
//!
//! The reference of every key is `harness/README.md`.

pub mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::{DEFAULT_SEED, parse_str, parse_str_for};

/// Which backend runs a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Deterministic discrete-event simulation on a virtual clock.
    Sim,
    /// The real tracker server and real peers on real time.
    Live,
}

impl Backend {
    /// `"sim"` or `"live"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sim => "sim",
            Backend::Live => "live",
        }
    }
}

/// Where the tracker comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerKind {
    /// In-process: the tracker core (sim) or the tracker server on 127.0.0.1 (live).
    Embedded,
    /// An external tracker (live only).
    Url(String),
    /// The tracker's Docker image through testcontainers (live only; image
    /// `ghostmesh-tracker:latest`, or `$GHOSTMESH_TRACKER_IMAGE`).
    Container,
}

/// Tracker settings.
#[derive(Debug, Clone)]
pub struct TrackerSpec {
    pub kind: TrackerKind,
    /// `interval` the tracker tells clients (the client clamps it to at least 5 s).
    pub announce_interval: Duration,
    /// Sim: one-way latency between any peer and the tracker (added to the peer group's).
    pub latency: Duration,
    pub max_offers: usize,
    pub max_peers_per_swarm: usize,
    pub offer_timeout: Duration,
}

/// Which link implementation a group uses in the live backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Simulation only.
    Sim,
    /// In-process memory links.
    Memory,
    /// Real WebRTC data channels on 127.0.0.1.
    Webrtc,
}

impl Transport {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sim => "sim",
            Transport::Memory => "memory",
            Transport::Webrtc => "webrtc",
        }
    }
}

/// Latency, jitter, bandwidth and loss of a peer's access link (or of a `[[link]]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetModel {
    /// One-way latency.
    pub latency: Duration,
    /// Uniform extra delay in `0..=jitter` per frame (order is kept: links are reliable and
    /// ordered).
    pub jitter: Duration,
    /// Upload bytes per second (`None`: unlimited).
    pub bandwidth: Option<f64>,
    /// Probability that a frame is lost and retransmitted (costs a retransmission delay).
    pub loss: f64,
}

impl Default for NetModel {
    fn default() -> Self {
        NetModel {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            bandwidth: None,
            loss: 0.0,
        }
    }
}

/// A group of identical peers.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub count: usize,
    pub transport: Transport,
    pub offers_per_announce: usize,
    pub request_timeout: Duration,
    pub max_chunk_units: usize,
    pub net: NetModel,
    /// Index of this group's first peer in the scenario's peer numbering.
    pub first_peer: usize,
}

/// A network model between two groups.
#[derive(Debug, Clone)]
pub struct LinkRule {
    pub a: usize,
    pub b: usize,
    pub net: NetModel,
}

/// Peers chosen by a selector: `"all"`, `"group"`, `"group[3]"`, `"group[0..5]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The text as written.
    pub text: String,
    /// Global peer indices, ascending.
    pub peers: Vec<usize>,
}

/// Message content kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// ASCII text.
    Text,
    /// A JSON object.
    Json,
    /// Text full of emoji and other non-BMP characters (exercises UTF-16 chunking).
    Emoji,
}

/// Who a `send` goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A random peer the sender has a link to.
    Neighbour,
    /// A random peer of the selection that the sender has a link to.
    Among(Selection),
}

/// What a timeline step does.
#[derive(Debug, Clone)]
pub enum Action {
    Join {
        peers: Selection,
        spread: Duration,
    },
    Leave {
        peers: Selection,
        spread: Duration,
    },
    Crash {
        peers: Selection,
        spread: Duration,
    },
    Rejoin {
        peers: Selection,
        spread: Duration,
    },
    Send {
        from: Selection,
        to: Target,
        count: u32,
        interval: Duration,
        size: usize,
        content: Content,
    },
    Broadcast {
        from: Selection,
        count: u32,
        interval: Duration,
        size: usize,
        content: Content,
    },
    /// Groups on different sides cannot reach each other; unlisted groups reach everyone.
    Partition {
        sides: Vec<Vec<usize>>,
    },
    Heal,
    TrackerRestart {
        down_for: Duration,
    },
    /// Every peer of `from` sends `count` files of `size` bytes to a linked peer of `to`.
    SendFile {
        from: Selection,
        to: Target,
        count: u32,
        interval: Duration,
        size: u64,
        chunk_size: u64,
        format: FileFormat,
    },
    /// Routed request/response (`onion = false`: `relay_send`) or one-way onion message
    /// (`onion = true`: `onion_send`) through `route` relays to a peer of `to`.
    Routed {
        onion: bool,
        from: Selection,
        to: Selection,
        route: RouteSpec,
        count: u32,
        interval: Duration,
        size: usize,
        content: Content,
        /// `onion_send` only: build the layers as a JavaScript GhostMesh sender does (outermost
        /// ttl 2), instead of the Rust mesh's ttls.
        ghostmesh_ttl: bool,
    },
    /// Every peer of `from` calls hidden service `service` through the entry peer `entry`,
    /// whose master is `master`, asking for `min_hops` hops; the entry holds answers of short
    /// routes for a delay in `response_delay`.
    HiddenRequest {
        from: Selection,
        entry: usize,
        master: usize,
        service: String,
        min_hops: u64,
        count: u32,
        interval: Duration,
        size: usize,
        content: Content,
        response_delay: (Duration, Duration),
        fixed_packet_bytes: Option<usize>,
    },
}

/// How a `send_file` offers its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Offer the binary fast path (a Rust receiver accepts it; chunks before the accept
    /// arrives go in GhostMesh's format).
    Fast,
    /// GhostMesh's JSON packets throughout.
    Compat,
}

/// The relays of a routed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSpec {
    /// These peers, in order.
    Through(Vec<usize>),
    /// This many random relays among the sender's linked peers.
    Hops(usize),
}

impl Action {
    /// The action's name in files.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Join { .. } => "join",
            Action::Leave { .. } => "leave",
            Action::Crash { .. } => "crash",
            Action::Rejoin { .. } => "rejoin",
            Action::Send { .. } => "send",
            Action::Broadcast { .. } => "broadcast",
            Action::Partition { .. } => "partition",
            Action::Heal => "heal",
            Action::TrackerRestart { .. } => "tracker_restart",
            Action::SendFile { .. } => "send_file",
            Action::Routed { onion: false, .. } => "relay_send",
            Action::Routed { onion: true, .. } => "onion_send",
            Action::HiddenRequest { .. } => "hidden_service_request",
        }
    }

    /// Whether the step sends something the assertions can count (messages, files, routed
    /// messages).
    pub fn sends(&self) -> bool {
        matches!(
            self,
            Action::Send { .. }
                | Action::Broadcast { .. }
                | Action::SendFile { .. }
                | Action::Routed { .. }
                | Action::HiddenRequest { .. }
        )
    }
}

/// One timeline entry.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    /// The step's name (`name = ...`, or `"<action>#<index>"`); assertions filter on it.
    pub name: String,
    pub action: Action,
}

/// What an assertion checks.
#[derive(Debug, Clone)]
pub enum AssertKind {
    /// Messages (of `step`, or all) delivered within `within` of being sent, at least `min`.
    DeliveryRatio {
        step: Option<String>,
        min: f64,
        /// At most this ratio (to show that something is dropped).
        max: Option<f64>,
        within: Duration,
        measure: Measure,
    },
    /// The `percentile` of one-way delivery latency (or round trip) is at most `max`.
    Latency {
        step: Option<String>,
        percentile: f64,
        max: Duration,
        measure: Measure,
    },
    /// Every delivered routed message of `step` went through `min..=max` relays.
    Hops {
        step: Option<String>,
        min: Option<u64>,
        max: Option<u64>,
    },
    /// The routed packets of `step` on hop `hop` (or every hop) were `min..=max` bytes.
    HopBytes {
        step: Option<String>,
        hop: Option<usize>,
        min: Option<u64>,
        max: Option<u64>,
    },
    /// Bytes carried (`metric`: `link` frames or `tracker` frames) within bounds.
    Bytes {
        metric: BytesMetric,
        min: Option<u64>,
        max: Option<u64>,
    },
    /// At least `min` (ratio) of peer joins reached `min_links` links within `within`.
    Discovered {
        min: f64,
        within: Duration,
        min_links: usize,
    },
    /// Delivered payload bytes per second over the step's active window, at least `min`.
    Throughput { step: Option<String>, min: f64 },
    /// Every hidden-service request of `step` was answered, each round trip within
    /// `min..=max` (the entry's delay padding shows as a floor; its absence as a ceiling).
    DelayPadding {
        step: Option<String>,
        min: Option<Duration>,
        max: Option<Duration>,
    },
    /// The tracker had `min..=max` peers in the scenario's swarm at `at` (counted by the
    /// tracker itself: the sim's tracker core, or the live tracker's `/stats.json`).
    TrackerPeers {
        at: Duration,
        min: Option<u64>,
        max: Option<u64>,
    },
}

/// What a `delivery_ratio` or `latency` assertion measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Sent until complete and intact at the receiver.
    Delivery,
    /// Sent until the response (or the fast-path completion ack) is back at the sender.
    RoundTrip,
}

/// Which byte counter a `bytes` assertion reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BytesMetric {
    Link,
    Tracker,
}

/// One assertion.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub name: String,
    pub kind: AssertKind,
}

/// A validated scenario, every default filled in.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: PathBuf,
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub backend: Backend,
    pub identifier: String,
    /// The run ends at this (virtual or real) time after start.
    pub duration: Duration,
    /// How long a peer takes to notice that a link's other end crashed or was cut off.
    pub link_failure_detect: Duration,
    pub tracker: TrackerSpec,
    pub groups: Vec<Group>,
    pub links: Vec<LinkRule>,
    pub steps: Vec<Step>,
    pub asserts: Vec<Assertion>,
    /// The file as parsed (for saving the resolved scenario).
    pub raw: raw::RawScenario,
}

impl Scenario {
    /// Total peers over all groups.
    pub fn peer_count(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// The group of global peer index `p`.
    pub fn group_of(&self, p: usize) -> usize {
        self.groups
            .iter()
            .position(|g| p >= g.first_peer && p < g.first_peer + g.count)
            .unwrap_or(0)
    }

    /// A readable name of peer `p` (`"group[3]"`).
    pub fn peer_name(&self, p: usize) -> String {
        let g = &self.groups[self.group_of(p)];
        format!("{}[{}]", g.name, p - g.first_peer)
    }

    /// The network model between groups `a` and `b`: a `[[link]]` rule if one matches, else
    /// the two access links in series (latencies and jitters add, losses combine, the
    /// sender's bandwidth applies).
    pub fn path(&self, from_group: usize, to_group: usize) -> NetModel {
        if let Some(rule) = self.links.iter().find(|r| {
            (r.a == from_group && r.b == to_group) || (r.a == to_group && r.b == from_group)
        }) {
            return rule.net;
        }
        let (a, b) = (&self.groups[from_group].net, &self.groups[to_group].net);
        NetModel {
            latency: a.latency + b.latency,
            jitter: a.jitter + b.jitter,
            bandwidth: a.bandwidth,
            loss: 1.0 - (1.0 - a.loss) * (1.0 - b.loss),
        }
    }

    /// The resolved scenario as TOML: the file's keys plus the seed and backend used.
    pub fn resolved_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.seed = Some(self.seed);
        raw.backend = Some(self.backend.as_str().into());
        let body = toml::to_string(&raw).unwrap_or_else(|e| format!("# not serialisable: {e}\n"));
        format!(
            "# Resolved from {} (seed {}, backend {}).\n{body}",
            self.file.display(),
            self.seed,
            self.backend.as_str()
        )
    }
}

/// Why a scenario file is unusable. Its `Display` is `file:line:col: key `k`: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The key at fault (dotted path, e.g. `step[2].peers`), if known.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// Reads and validates a scenario file.
pub fn load(path: &Path, backend: Option<Backend>) -> Result<Scenario, Vec<ScenarioError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ScenarioError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the scenario file: {e}"),
        }]
    })?;
    parse_str_for(path, &text, backend)
}
