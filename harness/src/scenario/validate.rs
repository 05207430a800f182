//! From file text to a [`Scenario`]: parse, check every key, fill defaults. Every error names
//! the file, line, column and key, and says what is expected.

use std::path::Path;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::raw::{RawAssert, RawNet, RawScenario, RawStep, RawTracker};
use super::{
    Action, AssertKind, Assertion, Backend, BytesMetric, Content, FileFormat, Group, LinkRule,
    Measure, NetModel, RouteSpec, Scenario, ScenarioError, Selection, Step, Target, TrackerKind,
    TrackerSpec, Transport,
};
use crate::units::{parse_duration, parse_rate, parse_size};

/// The seed when the file names none.
pub const DEFAULT_SEED: u64 = 1;
/// Peers per scenario at most (the sim bench goes further through the API).
const MAX_PEERS: usize = 100_000;
/// Largest message a step may send.
const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest file a `send_file` step may send.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Most relays on a route (the mesh's default `RelayConfig::max_hops`).
const MAX_HOPS: u64 = 8;

#[derive(Debug, Clone)]
enum Seg {
    Key(&'static str),
    Idx(usize),
    /// A key named in the file (e.g. an unknown one).
    Name(String),
}

use Seg::{Idx, Key, Name};

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    root: Option<DeValue<'a>>,
    errors: Vec<ScenarioError>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Name(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Idx(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

impl Ctx<'_> {
    /// The byte offset of the deepest part of `path` present in the file.
    fn offset(&self, path: &[Seg]) -> usize {
        let Some(mut v) = self.root.as_ref() else {
            return 0;
        };
        let mut best = 0;
        for seg in path {
            let next = match seg {
                Key(k) => v.get(*k),
                Idx(i) => v.get(*i),
                Name(k) => v.get(k.as_str()),
            };
            match next {
                Some(n) => {
                    best = n.span().start;
                    v = n.get_ref();
                }
                None => break,
            }
        }
        best
    }

    fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        let (line, column) = line_col(self.text, self.offset(path));
        self.errors.push(ScenarioError {
            file: self.file.to_owned(),
            line,
            column,
            key: path_text(path),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &[Seg], v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.err(path, e);
                default
            }),
        }
    }

    fn rate(&mut self, path: &[Seg], v: &Option<String>) -> Option<f64> {
        v.as_ref().and_then(|s| match parse_rate(s) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(path, e);
                None
            }
        })
    }

    fn size_value(&mut self, path: &[Seg], v: &toml::Value) -> Option<u64> {
        match v {
            toml::Value::Integer(n) if *n >= 0 => Some(*n as u64),
            toml::Value::String(s) => match parse_size(s) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.err(path, e);
                    None
                }
            },
            other => {
                self.err(
                    path,
                    format!(
                        "expected a size (bytes like 1000, or \"64KiB\"), found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn float_value(&mut self, path: &[Seg], v: &toml::Value, what: &str) -> Option<f64> {
        match v {
            toml::Value::Float(f) => Some(*f),
            toml::Value::Integer(n) => Some(*n as f64),
            other => {
                self.err(path, format!("expected {what}, found {}", other.type_str()));
                None
            }
        }
    }

    fn net(&mut self, base: &[Seg], raw: &RawNet) -> NetModel {
        let d = NetModel::default();
        let p = |k| [base, &[Key(k)]].concat();
        let latency = self.duration(&p("latency"), &raw.latency, d.latency);
        let jitter = self.duration(&p("jitter"), &raw.jitter, d.jitter);
        let bandwidth = self.rate(&p("bandwidth"), &raw.bandwidth);
        let loss = raw.loss.unwrap_or(0.0);
        if !(0.0..0.9).contains(&loss) {
            self.err(
                &p("loss"),
                "expected a probability from 0.0 up to (not including) 0.9",
            );
        }
        NetModel {
            latency,
            jitter,
            bandwidth,
            loss: loss.clamp(0.0, 0.89),
        }
    }
}

fn syntax_error(file: &Path, text: &str, e: &toml::de::Error) -> ScenarioError {
    let offset = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, offset);
    // The key is what stands left of `=` on the offending line, if anything.
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .unwrap_or_default();
    let mut message = e
        .message()
        .trim()
        .replace("expected u64", "expected a whole number (0 or more)")
        .replace("expected f64", "expected a number")
        .replace("expected a string", "expected a string (durations, sizes and rates are strings like \"250ms\", \"64KiB\", \"10Mbps\")");
    if message.starts_with("unknown field") {
        message.push_str(" (see harness/README.md for every key)");
    }
    ScenarioError {
        file: file.to_owned(),
        line,
        column,
        key,
        message,
    }
}

/// Parses and validates scenario text; `path` is used in messages. `backend` overrides the
/// file's `backend` key (live-only and sim-only features are checked against the one used).
pub fn parse_str(path: &Path, text: &str) -> Result<Scenario, Vec<ScenarioError>> {
    parse_str_for(path, text, None)
}

/// [`parse_str`] with a backend override (the command line's `--backend`).
pub fn parse_str_for(
    path: &Path,
    text: &str,
    backend: Option<Backend>,
) -> Result<Scenario, Vec<ScenarioError>> {
    let root = match DeTable::parse(text) {
        Ok(t) => DeValue::Table(t.into_inner()),
        Err(e) => return Err(vec![syntax_error(path, text, &e)]),
    };
    let raw: RawScenario = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => return Err(vec![syntax_error(path, text, &e)]),
    };
    let mut cx = Ctx {
        file: path,
        text,
        root: Some(root),
        errors: Vec::new(),
    };
    let sc = resolve(&mut cx, raw, backend);
    if cx.errors.is_empty() {
        Ok(sc)
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        Err(cx.errors)
    }
}

fn resolve(cx: &mut Ctx<'_>, raw: RawScenario, backend_override: Option<Backend>) -> Scenario {
    let name = raw.name.clone().unwrap_or_else(|| {
        cx.file
            .file_stem()
            .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned())
    });
    let backend = match (backend_override, raw.backend.as_deref()) {
        (Some(b), _) => b,
        (None, None | Some("sim")) => Backend::Sim,
        (None, Some("live")) => Backend::Live,
        (None, Some(other)) => {
            cx.err(
                &[Key("backend")],
                format!("unknown backend {other:?}: expected \"sim\" or \"live\""),
            );
            Backend::Sim
        }
    };
    let tracker = resolve_tracker(cx, raw.tracker.as_ref(), backend);
    let link_failure_detect = cx.duration(
        &[Key("link_failure_detect")],
        &raw.link_failure_detect,
        Duration::from_secs(2),
    );

    // Groups.
    let mut groups: Vec<Group> = Vec::new();
    if raw.group.is_empty() {
        cx.err(
            &[],
            "no peer groups: add at least one [[group]] with `name` and `count`",
        );
    }
    let mut first_peer = 0usize;
    for (i, g) in raw.group.iter().enumerate() {
        let at = |k| [Key("group"), Idx(i), Key(k)];
        let name = match &g.name {
            Some(n) if valid_name(n) => n.clone(),
            Some(n) => {
                cx.err(
                    &at("name"),
                    format!("group name {n:?} must be letters, digits, `-` or `_`"),
                );
                format!("group{i}")
            }
            None => {
                cx.err(
                    &[Key("group"), Idx(i)],
                    "missing key `name`: every group needs a name",
                );
                format!("group{i}")
            }
        };
        if groups.iter().any(|x| x.name == name) {
            cx.err(&at("name"), format!("group name {name:?} is used twice"));
        }
        let count = match g.count {
            Some(c) if (1..=MAX_PEERS as u64).contains(&c) => c as usize,
            Some(_) => {
                cx.err(
                    &at("count"),
                    format!("expected a peer count from 1 to {MAX_PEERS}"),
                );
                1
            }
            None => {
                cx.err(
                    &[Key("group"), Idx(i)],
                    "missing key `count`: how many peers the group has",
                );
                1
            }
        };
        let transport = match g.transport.as_deref() {
            None | Some("sim") => Transport::Sim,
            Some("memory") => Transport::Memory,
            Some("webrtc") => Transport::Webrtc,
            Some(other) => {
                cx.err(
                    &at("transport"),
                    format!(
                        "unknown transport {other:?}: expected \"sim\", \"memory\" or \"webrtc\""
                    ),
                );
                Transport::Sim
            }
        };
        if backend == Backend::Live {
            match transport {
                Transport::Sim => cx.err(
                    &at("transport"),
                    "transport \"sim\" runs only in the sim backend: use \"webrtc\" (or \"memory\") for --backend live",
                ),
                Transport::Memory if !crate::live::MEMORY_AVAILABLE => cx.err(
                    &at("transport"),
                    "transport \"memory\" is not available in the live backend yet (needs the mesh memory connector): use \"webrtc\"",
                ),
                _ => {}
            }
        }
        let offers_per_announce = match g.offers_per_announce {
            None => 5,
            Some(n) if (1..=50).contains(&n) => n as usize,
            Some(_) => {
                cx.err(
                    &at("offers_per_announce"),
                    "expected 1 to 50 offers per announce",
                );
                5
            }
        };
        let request_timeout = cx.duration(
            &at("request_timeout"),
            &g.request_timeout,
            Duration::from_secs(30),
        );
        let max_chunk_units = match g.max_chunk_units {
            None => ghostmesh::wire::MAX_CHUNK_UNITS,
            Some(n) if (16..=1 << 20).contains(&n) => n as usize,
            Some(_) => {
                cx.err(
                    &at("max_chunk_units"),
                    "expected 16 to 1048576 UTF-16 units per chunk",
                );
                ghostmesh::wire::MAX_CHUNK_UNITS
            }
        };
        let net = match &g.network {
            Some(n) => cx.net(&[Key("group"), Idx(i), Key("network")], n),
            None => NetModel::default(),
        };
        groups.push(Group {
            name,
            count,
            transport,
            offers_per_announce,
            request_timeout,
            max_chunk_units,
            net,
            first_peer,
        });
        first_peer += count;
    }
    if first_peer > MAX_PEERS {
        cx.err(
            &[Key("group")],
            format!("{first_peer} peers in total: at most {MAX_PEERS}"),
        );
    }

    // Links.
    let mut links = Vec::new();
    for (i, l) in raw.link.iter().enumerate() {
        let base = [Key("link"), Idx(i)];
        let Some(between) = &l.between else {
            cx.err(
                &base,
                "missing key `between`: two group names, e.g. between = [\"a\", \"b\"]",
            );
            continue;
        };
        let idx: Vec<Option<usize>> = between
            .iter()
            .map(|n| groups.iter().position(|g| &g.name == n))
            .collect();
        if between.len() != 2 || idx.iter().any(Option::is_none) {
            let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            cx.err(
                &[Key("link"), Idx(i), Key("between")],
                format!("expected two group names out of {known:?}"),
            );
            continue;
        }
        let net = cx.net(
            &base,
            &RawNet {
                latency: l.latency.clone(),
                jitter: l.jitter.clone(),
                bandwidth: l.bandwidth.clone(),
                loss: l.loss,
            },
        );
        links.push(LinkRule {
            a: idx[0].unwrap_or(0),
            b: idx[1].unwrap_or(0),
            net,
        });
    }

    // Steps.
    let mut steps = Vec::new();
    for (i, s) in raw.step.iter().enumerate() {
        if let Some(step) = resolve_step(cx, i, s, &groups, backend) {
            steps.push(step);
        }
    }
    for (i, s) in steps.iter().enumerate() {
        if steps[..i].iter().any(|o| o.name == s.name) {
            cx.err(
                &[Key("step"), Idx(i), Key("name")],
                format!("step name {:?} is used twice", s.name),
            );
        }
    }
    steps.sort_by_key(|s| s.at);
    let last = steps
        .iter()
        .map(|s| s.at + step_span(s))
        .max()
        .unwrap_or_default();
    let duration = cx.duration(
        &[Key("duration")],
        &raw.duration,
        last + Duration::from_secs(30),
    );
    if duration < last {
        cx.err(
            &[Key("duration")],
            format!(
                "the run ends before its last step (at {:?}): make `duration` longer",
                last
            ),
        );
    }
    if duration > Duration::from_secs(24 * 3600) {
        cx.err(&[Key("duration")], "expected at most 24h");
    }

    // Assertions.
    let mut asserts = Vec::new();
    for (i, a) in raw.assert.iter().enumerate() {
        if let Some(x) = resolve_assert(cx, i, a, &steps, duration) {
            asserts.push(x);
        }
    }
    for (i, a) in asserts.iter().enumerate() {
        if asserts[..i].iter().any(|o: &Assertion| o.name == a.name) {
            cx.err(
                &[Key("assert"), Idx(i), Key("name")],
                format!("assertion name {:?} is used twice", a.name),
            );
        }
    }

    Scenario {
        file: cx.file.to_owned(),
        description: raw.description.clone().unwrap_or_default(),
        seed: raw.seed.unwrap_or(DEFAULT_SEED),
        backend,
        identifier: raw
            .identifier
            .clone()
            .unwrap_or_else(|| format!("ghostmesh-harness-{name}")),
        name,
        duration,
        link_failure_detect,
        tracker,
        groups,
        links,
        steps,
        asserts,
        raw,
    }
}

/// How long after `at` a step keeps acting (spread, repeated sends, tracker downtime).
fn step_span(s: &Step) -> Duration {
    match &s.action {
        Action::Join { spread, .. }
        | Action::Leave { spread, .. }
        | Action::Crash { spread, .. }
        | Action::Rejoin { spread, .. } => *spread,
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
        } => interval.saturating_mul(count.saturating_sub(1)),
        Action::TrackerRestart { down_for } => *down_for,
        Action::Partition { .. } | Action::Heal => Duration::ZERO,
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The keys of a `[tracker]` table.
const TRACKER_KEYS: &[&str] = &[
    "kind",
    "url",
    "announce_interval",
    "latency",
    "max_offers",
    "max_peers_per_swarm",
    "offer_timeout",
];

fn resolve_tracker(cx: &mut Ctx<'_>, v: Option<&toml::Value>, backend: Backend) -> TrackerSpec {
    let mut spec = TrackerSpec {
        kind: TrackerKind::Embedded,
        announce_interval: Duration::from_secs(120),
        latency: Duration::from_millis(10),
        max_offers: 10,
        max_peers_per_swarm: 5000,
        offer_timeout: Duration::from_secs(50),
    };
    let raw: RawTracker = match v {
        None => RawTracker::default(),
        Some(toml::Value::String(s)) => RawTracker {
            kind: if s.starts_with("ws://") || s.starts_with("wss://") {
                None
            } else {
                Some(s.clone())
            },
            url: (s.starts_with("ws://") || s.starts_with("wss://")).then(|| s.clone()),
            ..RawTracker::default()
        },
        Some(toml::Value::Table(t)) => {
            // Unknown keys are named where they stand (`tracker.<key>`, at their own line);
            // the known ones are still checked.
            let mut known = t.clone();
            for key in t.keys().filter(|k| !TRACKER_KEYS.contains(&k.as_str())) {
                cx.err(
                    &[Key("tracker"), Name(key.clone())],
                    format!(
                        "unknown key `{key}` in [tracker] (expected one of: {}; see harness/README.md)",
                        TRACKER_KEYS.join(", ")
                    ),
                );
                known.remove(key);
            }
            // A value of the wrong type is named at its own key.
            let mut bad = false;
            for (key, v) in &known {
                let one = toml::Table::from_iter([(key.clone(), v.clone())]);
                if let Err(e) = RawTracker::deserialize_from(toml::Value::Table(one)) {
                    cx.err(
                        &[Key("tracker"), Name(key.clone())],
                        e.message().trim().to_owned(),
                    );
                    bad = true;
                }
            }
            if bad {
                return spec;
            }
            match RawTracker::deserialize_from(toml::Value::Table(known)) {
                Ok(r) => r,
                Err(e) => {
                    cx.err(&[Key("tracker")], e.message().trim().to_owned());
                    return spec;
                }
            }
        }
        Some(other) => {
            cx.err(&[Key("tracker")], format!("expected \"embedded\", \"container\", a ws:// URL or a [tracker] table, found {}", other.type_str()));
            return spec;
        }
    };
    let at = |k| [Key("tracker"), Key(k)];
    spec.kind = match (raw.kind.as_deref(), &raw.url) {
        (None | Some("url"), Some(url)) => {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                cx.err(
                    &at("url"),
                    format!("{url:?} is not a WebSocket URL: expected ws://host:port or wss://..."),
                );
            }
            if backend == Backend::Sim {
                cx.err(&at("url"), "an external tracker URL needs --backend live (the sim backend runs the tracker core in-process: use kind = \"embedded\")");
            }
            TrackerKind::Url(url.clone())
        }
        (None | Some("embedded"), None) => TrackerKind::Embedded,
        (Some("container"), url) => {
            if url.is_some() {
                cx.err(&at("url"), "`url` does not apply to a container tracker (its URL is ws://127.0.0.1:<published port>)");
            }
            if backend == Backend::Sim {
                cx.err(&[Key("tracker")], "a container tracker needs --backend live (the sim backend runs the tracker core in-process: use kind = \"embedded\")");
            }
            TrackerKind::Container
        }
        (Some("url"), None) => {
            cx.err(
                &[Key("tracker")],
                "kind = \"url\" needs `url = \"ws://...\"`",
            );
            TrackerKind::Embedded
        }
        (Some("embedded"), Some(_)) => {
            cx.err(
                &at("url"),
                "`url` does not apply to an embedded tracker: remove it or use kind = \"url\"",
            );
            TrackerKind::Embedded
        }
        (Some(other), _) => {
            cx.err(&at("kind"), format!("unknown tracker kind {other:?}: expected \"embedded\", \"url\" or \"container\""));
            TrackerKind::Embedded
        }
    };
    spec.announce_interval = cx.duration(
        &at("announce_interval"),
        &raw.announce_interval,
        spec.announce_interval,
    );
    if spec.announce_interval < Duration::from_secs(5) {
        cx.err(
            &at("announce_interval"),
            "expected at least 5s (clients clamp shorter intervals)",
        );
    }
    spec.latency = cx.duration(&at("latency"), &raw.latency, spec.latency);
    spec.offer_timeout = cx.duration(&at("offer_timeout"), &raw.offer_timeout, spec.offer_timeout);
    if let Some(n) = raw.max_offers {
        if (1..=100).contains(&n) {
            spec.max_offers = n as usize;
        } else {
            cx.err(&at("max_offers"), "expected 1 to 100");
        }
    }
    if let Some(n) = raw.max_peers_per_swarm {
        if (1..=1_000_000).contains(&n) {
            spec.max_peers_per_swarm = n as usize;
        } else {
            cx.err(&at("max_peers_per_swarm"), "expected 1 to 1000000");
        }
    }
    spec
}

trait FromValue: Sized {
    fn deserialize_from(v: toml::Value) -> Result<Self, toml::de::Error>;
}

impl FromValue for RawTracker {
    fn deserialize_from(v: toml::Value) -> Result<Self, toml::de::Error> {
        serde::Deserialize::deserialize(v)
    }
}

fn selection(cx: &mut Ctx<'_>, path: &[Seg], text: &str, groups: &[Group]) -> Option<Selection> {
    let t = text.trim();
    let mut peers = Vec::new();
    for part in t.split(',').map(str::trim) {
        if part == "all" {
            peers.extend(0..groups.iter().map(|g| g.count).sum::<usize>());
            continue;
        }
        let (gname, range) = match part.split_once('[') {
            Some((g, rest)) => (g, Some(rest.strip_suffix(']').unwrap_or("?"))),
            None => (part, None),
        };
        let Some(g) = groups.iter().find(|g| g.name == gname) else {
            let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            cx.err(path, format!("{part:?} names no group: expected \"all\", a group out of {known:?}, \"group[3]\" or \"group[0..5]\""));
            return None;
        };
        let (lo, hi) = match range {
            None => (0, g.count),
            Some(r) => {
                let parsed = match r.split_once("..") {
                    Some((a, b)) => a.parse::<usize>().ok().zip(b.parse::<usize>().ok()),
                    None => r.parse::<usize>().ok().map(|i| (i, i + 1)),
                };
                match parsed {
                    Some((a, b)) if a < b && b <= g.count => (a, b),
                    _ => {
                        cx.err(path, format!("{part:?}: expected group[i] or group[a..b] (end exclusive) within the group's {} peers", g.count));
                        return None;
                    }
                }
            }
        };
        peers.extend((lo..hi).map(|i| g.first_peer + i));
    }
    peers.sort_unstable();
    peers.dedup();
    Some(Selection {
        text: t.to_owned(),
        peers,
    })
}

const ACTIONS: &str = "join, leave, crash, rejoin, send, broadcast, send_file, relay_send, onion_send, hidden_service_request, partition, heal or tracker_restart";

fn resolve_step(
    cx: &mut Ctx<'_>,
    i: usize,
    s: &RawStep,
    groups: &[Group],
    backend: Backend,
) -> Option<Step> {
    let base = [Key("step"), Idx(i)];
    let at = |k| [Key("step"), Idx(i), Key(k)];
    let Some(action) = s.action.as_deref() else {
        cx.err(&base, format!("missing key `action`: {ACTIONS}"));
        return None;
    };
    let allowed: &[&str] = match action {
        "join" | "leave" | "crash" | "rejoin" => &["peers", "spread"],
        "send" => &["from", "to", "count", "interval", "size", "content"],
        "broadcast" => &["from", "count", "interval", "size", "content"],
        "partition" => &["sides"],
        "heal" => &[],
        "tracker_restart" => &["down_for"],
        "send_file" => &[
            "from",
            "to",
            "count",
            "interval",
            "size",
            "chunk_size",
            "format",
        ],
        "relay_send" => &[
            "from", "to", "through", "hops", "count", "interval", "size", "content",
        ],
        "onion_send" => &[
            "from", "to", "through", "hops", "count", "interval", "size", "content", "ttl",
        ],
        "hidden_service_request" => &[
            "from",
            "entry",
            "master",
            "service",
            "min_hops",
            "response_delay",
            "fixed_packet_bytes",
            "count",
            "interval",
            "size",
            "content",
        ],
        other => {
            cx.err(
                &at("action"),
                format!("unknown action {other:?}: expected {ACTIONS}"),
            );
            return None;
        }
    };
    let present: [(&'static str, bool); 21] = [
        ("peers", s.peers.is_some()),
        ("spread", s.spread.is_some()),
        ("from", s.from.is_some()),
        ("to", s.to.is_some()),
        ("count", s.count.is_some()),
        ("interval", s.interval.is_some()),
        ("size", s.size.is_some()),
        ("content", s.content.is_some()),
        ("sides", s.sides.is_some()),
        ("down_for", s.down_for.is_some()),
        ("hops", s.hops.is_some()),
        ("through", s.through.is_some()),
        ("chunk_size", s.chunk_size.is_some()),
        ("format", s.format.is_some()),
        ("ttl", s.ttl.is_some()),
        ("service", s.service.is_some()),
        ("entry", s.entry.is_some()),
        ("master", s.master.is_some()),
        ("min_hops", s.min_hops.is_some()),
        ("response_delay", s.response_delay.is_some()),
        ("fixed_packet_bytes", s.fixed_packet_bytes.is_some()),
    ];
    for (k, is) in present {
        if is && !allowed.contains(&k) {
            cx.err(&at(k), format!("key `{k}` does not apply to action {action:?} (it takes: at, action, name{}{})", if allowed.is_empty() { "" } else { ", " }, allowed.join(", ")));
        }
    }
    let Some(at_text) = &s.at else {
        cx.err(
            &base,
            "missing key `at`: when the step starts, e.g. at = \"5s\"",
        );
        return None;
    };
    let when = cx.duration(&at("at"), &Some(at_text.clone()), Duration::ZERO);
    let name = s.name.clone().unwrap_or_else(|| format!("{action}#{i}"));
    let need_sel = |cx: &mut Ctx<'_>, key: &'static str, v: &Option<String>| -> Option<Selection> {
        match v {
            Some(t) => selection(cx, &[Key("step"), Idx(i), Key(key)], t, groups),
            None => {
                cx.err(
                    &[Key("step"), Idx(i)],
                    format!(
                        "missing key `{key}`: which peers, e.g. {key} = \"all\" or \"group[0..5]\""
                    ),
                );
                None
            }
        }
    };
    let spread = cx.duration(&at("spread"), &s.spread, Duration::ZERO);
    let count = match s.count {
        None => 1,
        Some(n) if (1..=1_000_000).contains(&n) => n as u32,
        Some(_) => {
            cx.err(&at("count"), "expected 1 to 1000000 messages per sender");
            1
        }
    };
    let interval = cx.duration(&at("interval"), &s.interval, Duration::from_millis(100));
    let size = match &s.size {
        _ if action == "send_file" => 0,
        None => 64,
        Some(v) => match cx.size_value(&at("size"), v) {
            Some(n) if (16..=MAX_MESSAGE_BYTES).contains(&n) => n as usize,
            Some(_) => {
                cx.err(
                    &at("size"),
                    format!("expected 16 bytes to {} MiB", MAX_MESSAGE_BYTES >> 20),
                );
                64
            }
            None => 64,
        },
    };
    let content = match s.content.as_deref() {
        None | Some("text") => Content::Text,
        Some("json") => Content::Json,
        Some("emoji") => Content::Emoji,
        Some(other) => {
            cx.err(
                &at("content"),
                format!("unknown content {other:?}: expected \"text\", \"json\" or \"emoji\""),
            );
            Content::Text
        }
    };
    let action = match action {
        "join" => Action::Join {
            peers: need_sel(cx, "peers", &s.peers)?,
            spread,
        },
        "leave" => Action::Leave {
            peers: need_sel(cx, "peers", &s.peers)?,
            spread,
        },
        "crash" => Action::Crash {
            peers: need_sel(cx, "peers", &s.peers)?,
            spread,
        },
        "rejoin" => Action::Rejoin {
            peers: need_sel(cx, "peers", &s.peers)?,
            spread,
        },
        "send" => {
            let from = need_sel(cx, "from", &s.from)?;
            let to = match s.to.as_deref() {
                None | Some("neighbour") | Some("neighbor") => Target::Neighbour,
                Some(t) => Target::Among(selection(cx, &at("to"), t, groups)?),
            };
            Action::Send {
                from,
                to,
                count,
                interval,
                size,
                content,
            }
        }
        "broadcast" => Action::Broadcast {
            from: need_sel(cx, "from", &s.from)?,
            count,
            interval,
            size,
            content,
        },
        "partition" => {
            let Some(sides) = &s.sides else {
                cx.err(&base, "missing key `sides`: groups that cannot reach each other, e.g. sides = [[\"a\"], [\"b\"]]");
                return None;
            };
            let mut out: Vec<Vec<usize>> = Vec::new();
            let mut seen = Vec::new();
            for side in sides {
                let mut v = Vec::new();
                for g in side {
                    match groups.iter().position(|x| &x.name == g) {
                        Some(idx) if !seen.contains(&idx) => {
                            seen.push(idx);
                            v.push(idx);
                        }
                        Some(_) => cx.err(&at("sides"), format!("group {g:?} is on two sides")),
                        None => cx.err(&at("sides"), format!("{g:?} names no group")),
                    }
                }
                out.push(v);
            }
            if backend == Backend::Live
                && out
                    .iter()
                    .flatten()
                    .any(|&g| groups[g].transport != Transport::Memory)
            {
                cx.err(&at("sides"), "in the live backend a partition can only cut memory links: give every group on a side transport = \"memory\", or use the sim backend");
            }
            if out.len() < 2 {
                cx.err(
                    &at("sides"),
                    "expected at least two sides, e.g. [[\"a\"], [\"b\"]]",
                );
            }
            Action::Partition { sides: out }
        }
        "send_file" => {
            let from = need_sel(cx, "from", &s.from)?;
            let to = match s.to.as_deref() {
                None | Some("neighbour") | Some("neighbor") => Target::Neighbour,
                Some(t) => Target::Among(selection(cx, &at("to"), t, groups)?),
            };
            let size = match &s.size {
                None => {
                    cx.err(
                        &base,
                        "missing key `size`: the file size, e.g. size = \"2MiB\" (0 is allowed)",
                    );
                    0
                }
                Some(v) => match cx.size_value(&at("size"), v) {
                    Some(n) if n <= MAX_FILE_BYTES => n,
                    Some(_) => {
                        cx.err(
                            &at("size"),
                            format!("expected a file size up to {} MiB", MAX_FILE_BYTES >> 20),
                        );
                        0
                    }
                    None => 0,
                },
            };
            let chunk_size = match &s.chunk_size {
                None => ghostmesh::file::DEFAULT_CHUNK_SIZE,
                Some(v) => match cx.size_value(&at("chunk_size"), v) {
                    Some(n) if (ghostmesh::file::MIN_CHUNK_SIZE..=1 << 20).contains(&n) => n,
                    Some(_) => {
                        cx.err(&at("chunk_size"), "expected a chunk size from 1KiB to 1MiB (GhostMesh's smallest is 1 KiB)");
                        ghostmesh::file::DEFAULT_CHUNK_SIZE
                    }
                    None => ghostmesh::file::DEFAULT_CHUNK_SIZE,
                },
            };
            let format = match s.format.as_deref() {
                None | Some("fast") => FileFormat::Fast,
                Some("compat") => FileFormat::Compat,
                Some(other) => {
                    cx.err(&at("format"), format!("unknown format {other:?}: expected \"fast\" (binary fast path between Rust peers) or \"compat\" (GhostMesh's JSON packets)"));
                    FileFormat::Fast
                }
            };
            Action::SendFile {
                from,
                to,
                count,
                interval,
                size,
                chunk_size,
                format,
            }
        }
        "hidden_service_request" => {
            let from = need_sel(cx, "from", &s.from)?;
            let one = |cx: &mut Ctx<'_>, key: &'static str, v: &Option<String>| -> Option<usize> {
                let sel = need_sel(cx, key, v)?;
                if sel.peers.len() != 1 {
                    cx.err(
                        &at(key),
                        format!(
                            "{key} names one peer, e.g. {key} = \"{key}[0]\"; this is {} peers",
                            sel.peers.len()
                        ),
                    );
                    return None;
                }
                Some(sel.peers[0])
            };
            let entry = one(cx, "entry", &s.entry)?;
            let master = one(cx, "master", &s.master)?;
            if entry == master {
                cx.err(
                    &at("master"),
                    "the entry and the master must be different peers",
                );
            }
            if from.peers.iter().all(|p| *p == entry || *p == master) {
                cx.err(
                    &at("from"),
                    "no client: every peer of `from` is the entry or the master",
                );
            }
            let min_hops = s.min_hops.unwrap_or(3);
            if !(1..=8).contains(&min_hops) {
                cx.err(
                    &at("min_hops"),
                    "expected 1 to 8 hops (the entry caps what clients ask for at 8)",
                );
            }
            let response_delay = match &s.response_delay {
                None => (Duration::from_secs(1), Duration::from_secs(5)),
                Some(v) if v.len() == 2 => {
                    let lo =
                        cx.duration(&at("response_delay"), &Some(v[0].clone()), Duration::ZERO);
                    let hi =
                        cx.duration(&at("response_delay"), &Some(v[1].clone()), Duration::ZERO);
                    if lo > hi {
                        cx.err(
                            &at("response_delay"),
                            "expected [min, max] with min <= max, e.g. [\"1s\", \"5s\"]",
                        );
                    }
                    (lo, hi)
                }
                Some(_) => {
                    cx.err(&at("response_delay"), "expected [min, max], e.g. response_delay = [\"1s\", \"5s\"] (GhostMesh's default)");
                    (Duration::from_secs(1), Duration::from_secs(5))
                }
            };
            let fixed_packet_bytes = match s.fixed_packet_bytes {
                None => None,
                Some(n) if (256..=1 << 20).contains(&n) => Some(n as usize),
                Some(_) => {
                    cx.err(
                        &at("fixed_packet_bytes"),
                        "expected 256 to 1048576 characters, e.g. 4096",
                    );
                    None
                }
            };
            Action::HiddenRequest {
                from,
                entry,
                master,
                service: s.service.clone().unwrap_or_else(|| "echo".into()),
                min_hops,
                count,
                interval,
                size,
                content,
                response_delay,
                fixed_packet_bytes,
            }
        }
        "relay_send" | "onion_send" => {
            let from = need_sel(cx, "from", &s.from)?;
            let to = need_sel(cx, "to", &s.to)?;
            let total: usize = groups.iter().map(|g| g.count).sum();
            let route = match (&s.through, s.hops) {
                (Some(_), Some(_)) => {
                    cx.err(&at("hops"), "give either `through` (these relays) or `hops` (that many random relays), not both");
                    RouteSpec::Hops(2)
                }
                (Some(list), None) => {
                    let mut relays = Vec::new();
                    if list.is_empty() || list.len() as u64 > MAX_HOPS {
                        cx.err(&at("through"), format!("expected 1 to {MAX_HOPS} relays, e.g. through = [\"relays[0]\", \"relays[1]\"]"));
                    }
                    for t in list {
                        let Some(sel) = selection(cx, &at("through"), t, groups) else {
                            continue;
                        };
                        if sel.peers.len() != 1 {
                            cx.err(&at("through"), format!("{t:?} is {} peers: each relay of `through` names one peer, e.g. \"relays[0]\"", sel.peers.len()));
                            continue;
                        }
                        let r = sel.peers[0];
                        if relays.contains(&r) {
                            cx.err(&at("through"), format!("{t:?} is on the route twice"));
                        } else if from.peers.contains(&r) || to.peers.contains(&r) {
                            cx.err(&at("through"), format!("relay {t:?} is also a sender (`from`) or a target (`to`): a route cannot pass through its own ends"));
                        }
                        relays.push(r);
                    }
                    RouteSpec::Through(relays)
                }
                (None, hops) => {
                    let hops = hops.unwrap_or(2);
                    if !(1..=MAX_HOPS).contains(&hops) {
                        cx.err(&at("hops"), format!("expected 1 to {MAX_HOPS} relays"));
                    } else if hops as usize + 2 > total {
                        cx.err(&at("hops"), format!("{hops} relays need {} peers (sender, relays, target), the scenario has {total}", hops + 2));
                    }
                    RouteSpec::Hops(hops as usize)
                }
            };
            let ghostmesh_ttl = match s.ttl.as_deref() {
                None | Some("mesh") => false,
                Some("ghostmesh") => true,
                Some(other) => {
                    cx.err(&at("ttl"), format!("unknown ttl {other:?}: expected \"mesh\" (ttls that survive any route) or \"ghostmesh\" (a JavaScript GhostMesh sender's: outermost layer 2)"));
                    false
                }
            };
            if from.peers.len() == 1 && to.peers == from.peers {
                cx.err(&at("to"), "the only target is the sender itself");
            }
            Action::Routed {
                onion: action == "onion_send",
                from,
                to,
                route,
                count,
                interval,
                size,
                content,
                ghostmesh_ttl,
            }
        }
        "heal" => Action::Heal,
        _ => {
            let down_for = cx.duration(&at("down_for"), &s.down_for, Duration::from_secs(1));
            Action::TrackerRestart { down_for }
        }
    };
    Some(Step {
        at: when,
        name,
        action,
    })
}

const ASSERT_KINDS: &str = "delivery_ratio, latency, bytes, discovered, throughput, hops, hop_bytes, tracker_peers or delay_padding";

fn resolve_assert(
    cx: &mut Ctx<'_>,
    i: usize,
    a: &RawAssert,
    steps: &[Step],
    duration: Duration,
) -> Option<Assertion> {
    let base = [Key("assert"), Idx(i)];
    let at = |k| [Key("assert"), Idx(i), Key(k)];
    let Some(kind) = a.kind.as_deref() else {
        cx.err(&base, format!("missing key `kind`: {ASSERT_KINDS}"));
        return None;
    };
    let allowed: &[&str] = match kind {
        "delivery_ratio" => &["step", "min", "max", "within", "measure"],
        "latency" => &["step", "percentile", "max", "measure"],
        "bytes" => &["metric", "min", "max"],
        "discovered" => &["min", "within", "min_links"],
        "throughput" => &["step", "min"],
        "hops" => &["step", "min", "max"],
        "hop_bytes" => &["step", "hop", "min", "max"],
        "tracker_peers" => &["at", "min", "max"],
        "delay_padding" => &["step", "min", "max"],
        other => {
            cx.err(
                &at("kind"),
                format!("unknown assertion kind {other:?}: expected {ASSERT_KINDS}"),
            );
            return None;
        }
    };
    let present: [(&'static str, bool); 10] = [
        ("step", a.step.is_some()),
        ("min", a.min.is_some()),
        ("max", a.max.is_some()),
        ("within", a.within.is_some()),
        ("percentile", a.percentile.is_some()),
        ("metric", a.metric.is_some()),
        ("min_links", a.min_links.is_some()),
        ("measure", a.measure.is_some()),
        ("hop", a.hop.is_some()),
        ("at", a.at.is_some()),
    ];
    for (k, is) in present {
        if is && !allowed.contains(&k) {
            cx.err(&at(k), format!("key `{k}` does not apply to assertion kind {kind:?} (it takes: name, kind, {})", allowed.join(", ")));
        }
    }
    let routed_only = matches!(kind, "hops" | "hop_bytes");
    if let Some(st) = &a.step {
        match steps.iter().find(|s| &s.name == st) {
            Some(s) if routed_only && !matches!(s.action, Action::Routed { .. }) => cx.err(
                &at("step"),
                format!("step {st:?} routes nothing: name a relay_send or onion_send step"),
            ),
            Some(s) if s.action.sends() => {}
            Some(_) => cx.err(
                &at("step"),
                format!("step {st:?} sends no messages: name a send, broadcast, send_file, relay_send or onion_send step"),
            ),
            None => {
                let known: Vec<&str> = steps
                    .iter()
                    .filter(|s| s.action.sends())
                    .map(|s| s.name.as_str())
                    .collect();
                cx.err(
                    &at("step"),
                    format!("no step is named {st:?}: expected one of {known:?}"),
                );
            }
        }
    }
    let ratio = |cx: &mut Ctx<'_>, v: &Option<toml::Value>| -> f64 {
        match v {
            None => 1.0,
            Some(v) => match cx.float_value(&at("min"), v, "a ratio from 0.0 to 1.0") {
                Some(f) if (0.0..=1.0).contains(&f) => f,
                Some(_) => {
                    cx.err(&at("min"), "expected a ratio from 0.0 to 1.0");
                    1.0
                }
                None => 1.0,
            },
        }
    };
    let measure = match a.measure.as_deref() {
        None | Some("delivery") => Measure::Delivery,
        Some("round_trip") => Measure::RoundTrip,
        Some(other) => {
            cx.err(&at("measure"), format!("unknown measure {other:?}: expected \"delivery\" (until the receiver has it) or \"round_trip\" (until the response is back)"));
            Measure::Delivery
        }
    };
    let count_bound =
        |cx: &mut Ctx<'_>, key: &'static str, v: &Option<toml::Value>, what: &str| -> Option<u64> {
            match v {
                None => None,
                Some(toml::Value::Integer(n)) if *n >= 0 => Some(*n as u64),
                Some(other) => {
                    cx.err(
                        &at(key),
                        format!(
                            "expected a whole number of {what}, found {}",
                            other.type_str()
                        ),
                    );
                    None
                }
            }
        };
    let k = match kind {
        "delivery_ratio" => AssertKind::DeliveryRatio {
            step: a.step.clone(),
            min: if a.min.is_none() && a.max.is_some() {
                0.0
            } else {
                ratio(cx, &a.min)
            },
            max: a.max.as_ref().and_then(|v| {
                match cx.float_value(&at("max"), v, "a ratio from 0.0 to 1.0") {
                    Some(f) if (0.0..=1.0).contains(&f) => Some(f),
                    Some(_) => {
                        cx.err(&at("max"), "expected a ratio from 0.0 to 1.0");
                        None
                    }
                    None => None,
                }
            }),
            within: cx.duration(&at("within"), &a.within, Duration::from_secs(10)),
            measure,
        },
        "delay_padding" => {
            let dur = |cx: &mut Ctx<'_>,
                       key: &'static str,
                       v: &Option<toml::Value>|
             -> Option<Duration> {
                match v {
                    None => None,
                    Some(toml::Value::String(t)) => {
                        Some(cx.duration(&at(key), &Some(t.clone()), Duration::ZERO))
                    }
                    Some(other) => {
                        cx.err(
                            &at(key),
                            format!(
                                "expected a duration like \"1s\", found {}",
                                other.type_str()
                            ),
                        );
                        None
                    }
                }
            };
            let (min, max) = (dur(cx, "min", &a.min), dur(cx, "max", &a.max));
            if min.is_none() && max.is_none() {
                cx.err(&base, "a delay_padding assertion needs `min`, `max` or both (bounds on each round trip)");
            }
            if let Some(st) = &a.step
                && let Some(s) = steps.iter().find(|s| &s.name == st)
                && !matches!(s.action, Action::HiddenRequest { .. })
            {
                cx.err(&at("step"), format!("step {st:?} makes no hidden-service requests: name a hidden_service_request step"));
            }
            AssertKind::DelayPadding {
                step: a.step.clone(),
                min,
                max,
            }
        }
        "hops" => {
            let min = count_bound(cx, "min", &a.min, "relays");
            let max = count_bound(cx, "max", &a.max, "relays");
            if min.is_none() && max.is_none() {
                cx.err(
                    &base,
                    "a hops assertion needs `min`, `max` or both (relays per delivered message)",
                );
            }
            AssertKind::Hops {
                step: a.step.clone(),
                min,
                max,
            }
        }
        "tracker_peers" => {
            let min = count_bound(cx, "min", &a.min, "peers");
            let max = count_bound(cx, "max", &a.max, "peers");
            if a.min.is_none() && a.max.is_none() {
                cx.err(
                    &base,
                    "a tracker_peers assertion needs `min`, `max` or both (peers in the swarm)",
                );
            }
            let when = match &a.at {
                Some(t) => cx.duration(&at("at"), &Some(t.clone()), Duration::ZERO),
                None => {
                    cx.err(
                        &base,
                        "missing key `at`: when the tracker's swarm is counted, e.g. at = \"15s\"",
                    );
                    Duration::ZERO
                }
            };
            if when > duration {
                cx.err(
                    &at("at"),
                    "the run ends before `at`: make `duration` longer or `at` earlier",
                );
            }
            AssertKind::TrackerPeers { at: when, min, max }
        }
        "hop_bytes" => {
            let min = a.min.as_ref().and_then(|v| cx.size_value(&at("min"), v));
            let max = a.max.as_ref().and_then(|v| cx.size_value(&at("max"), v));
            if a.min.is_none() && a.max.is_none() {
                cx.err(&base, "a hop_bytes assertion needs `min`, `max` or both");
            }
            let hop = match a.hop {
                None => None,
                Some(h) if h <= MAX_HOPS => Some(h as usize),
                Some(_) => {
                    cx.err(
                        &at("hop"),
                        format!("expected a hop from 0 (sender to first relay) to {MAX_HOPS}"),
                    );
                    None
                }
            };
            AssertKind::HopBytes {
                step: a.step.clone(),
                hop,
                min,
                max,
            }
        }
        "latency" => {
            let percentile = a.percentile.unwrap_or(95.0);
            if !(percentile > 0.0 && percentile <= 100.0) {
                cx.err(
                    &at("percentile"),
                    "expected a percentile above 0 and at most 100, e.g. 95",
                );
            }
            let max = match &a.max {
                Some(toml::Value::String(s)) => {
                    cx.duration(&at("max"), &Some(s.clone()), Duration::ZERO)
                }
                Some(other) => {
                    cx.err(
                        &at("max"),
                        format!(
                            "expected a duration like \"200ms\", found {}",
                            other.type_str()
                        ),
                    );
                    Duration::ZERO
                }
                None => {
                    cx.err(
                        &base,
                        "missing key `max`: the latency bound, e.g. max = \"200ms\"",
                    );
                    Duration::ZERO
                }
            };
            AssertKind::Latency {
                step: a.step.clone(),
                percentile,
                max,
                measure,
            }
        }
        "bytes" => {
            let metric = match a.metric.as_deref() {
                None | Some("link") => BytesMetric::Link,
                Some("tracker") => BytesMetric::Tracker,
                Some(other) => {
                    cx.err(
                        &at("metric"),
                        format!("unknown metric {other:?}: expected \"link\" or \"tracker\""),
                    );
                    BytesMetric::Link
                }
            };
            let min = a.min.as_ref().and_then(|v| cx.size_value(&at("min"), v));
            let max = a.max.as_ref().and_then(|v| cx.size_value(&at("max"), v));
            if a.min.is_none() && a.max.is_none() {
                cx.err(&base, "a bytes assertion needs `min`, `max` or both");
            }
            AssertKind::Bytes { metric, min, max }
        }
        "discovered" => {
            let min_links = match a.min_links {
                None => 1,
                Some(n) if (1..=1000).contains(&n) => n as usize,
                Some(_) => {
                    cx.err(&at("min_links"), "expected 1 to 1000");
                    1
                }
            };
            AssertKind::Discovered {
                min: ratio(cx, &a.min),
                within: cx.duration(&at("within"), &a.within, Duration::from_secs(30)),
                min_links,
            }
        }
        _ => {
            let min = match &a.min {
                Some(toml::Value::String(s)) => {
                    cx.rate(&at("min"), &Some(s.clone())).unwrap_or(0.0)
                }
                Some(other) => {
                    cx.err(
                        &at("min"),
                        format!("expected a rate like \"1MB/s\", found {}", other.type_str()),
                    );
                    0.0
                }
                None => {
                    cx.err(
                        &base,
                        "missing key `min`: the least throughput, e.g. min = \"1MB/s\"",
                    );
                    0.0
                }
            };
            AssertKind::Throughput {
                step: a.step.clone(),
                min,
            }
        }
    };
    let name = a.name.clone().unwrap_or_else(|| match &a.step {
        Some(s) => format!("{kind}#{i}({s})"),
        None => format!("{kind}#{i}"),
    });
    Some(Assertion { name, kind: k })
}
