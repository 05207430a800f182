//! What a run observed (messages, links, bytes, peer joins), kept the same way by both
//! backends, and the evaluation of a scenario's assertions against it.

use std::time::Duration;

use serde::Serialize;

use crate::scenario::{AssertKind, BytesMetric, Measure, Scenario};
use crate::units::{format_duration, format_rate};

/// One application message, file or routed message sent by the harness.
#[derive(Debug, Clone, Default)]
pub struct MsgRecord {
    /// Index of the step that sent it.
    pub step: usize,
    pub from: usize,
    /// `None` when the sender had no link to a suitable peer.
    pub to: Option<usize>,
    pub bytes: usize,
    /// Offsets from the run's start, in nanoseconds.
    pub sent_at: u64,
    pub delivered_at: Option<u64>,
    pub acked_at: Option<u64>,
    /// Why the send failed, if it did.
    pub failure: Option<String>,
    /// Routed messages: relays the message went through (counted when delivered).
    pub hops: Option<u32>,
    /// Routed messages: bytes of the onion packet on each hop (0 = sender to first relay).
    pub hop_bytes: Vec<u64>,
    /// Files: whether the binary fast path carried (some of) the bytes.
    pub fast: Option<bool>,
    /// What was sent: 0 message, 1 file, 2 routed request, 3 onion message, 4 hidden-service
    /// request.
    pub kind: u8,
    /// Hidden-service requests: the delay the entry drew and held the answer for (when it
    /// said so: an entry that reached the master over layered routing hides it), in ns.
    pub padding_delay: Option<u64>,
}

/// [`MsgRecord::kind`] values.
pub mod kind {
    pub const MESSAGE: u8 = 0;
    pub const FILE: u8 = 1;
    pub const ROUTED: u8 = 2;
    pub const ONION: u8 = 3;
    pub const HIDDEN: u8 = 4;
}

/// One (re)join of a peer, for discovery.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub peer: usize,
    pub joined_at: u64,
    /// When the peer left or crashed.
    pub ended_at: Option<u64>,
    /// `reached[k-1]`: when the peer first had `k` links in this incarnation.
    pub reached: Vec<u64>,
    pub links: usize,
}

/// Everything a run records.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    pub messages: Vec<MsgRecord>,
    pub incarnations: Vec<Incarnation>,
    /// The peer's current incarnation index.
    pub current: Vec<Option<usize>>,
    /// Links needed for discovery bookkeeping (`max min_links` of the assertions).
    pub track_links: usize,
    pub link_bytes: u64,
    pub link_frames: u64,
    pub tracker_bytes: u64,
    pub tracker_frames: u64,
    pub links_formed: u64,
    pub links_closed: u64,
    pub tracker_warnings: u64,
    pub tracker_restarts: u64,
    /// Onion layers relays passed on.
    pub relay_forwarded: u64,
    /// Onion packets relays dropped (ttl spent, next hop not linked, ...).
    pub relay_dropped: u64,
    /// `tracker_peers` assertions: (assertion index, peers in the swarm at its `at`, or why
    /// the tracker could not be asked).
    pub tracker_samples: Vec<(usize, Result<u64, String>)>,
    /// `bytes` with `metric = "tracker"`: why the tracker's traffic was not measured, if it
    /// was not (live, `wss://` tracker URL).
    pub tracker_bytes_unmeasured: Option<String>,
    /// What the backend did not apply or measure as the scenario says (reports show them).
    pub warnings: Vec<String>,
}

impl Recorder {
    /// A recorder for `peers` peers of `sc`.
    pub fn new(sc: &Scenario) -> Self {
        let track_links = sc
            .asserts
            .iter()
            .filter_map(|a| match a.kind {
                AssertKind::Discovered { min_links, .. } => Some(min_links),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        Recorder {
            current: vec![None; sc.peer_count()],
            track_links,
            ..Recorder::default()
        }
    }

    /// Peer `p` (re)joined at `t`.
    pub fn joined(&mut self, p: usize, t: u64) {
        self.current[p] = Some(self.incarnations.len());
        self.incarnations.push(Incarnation {
            peer: p,
            joined_at: t,
            ended_at: None,
            reached: Vec::new(),
            links: 0,
        });
    }

    /// Peer `p` left or crashed at `t`.
    pub fn ended(&mut self, p: usize, t: u64) {
        if let Some(i) = self.current[p].take() {
            self.incarnations[i].ended_at = Some(t);
        }
    }

    /// Peer `p` has a new link at `t`.
    pub fn link_up(&mut self, p: usize, t: u64) {
        if let Some(i) = self.current[p] {
            let inc = &mut self.incarnations[i];
            inc.links += 1;
            if inc.reached.len() < self.track_links && inc.links > inc.reached.len() {
                inc.reached.push(t);
            }
        }
    }

    /// Peer `p` lost a link.
    pub fn link_down(&mut self, p: usize) {
        if let Some(i) = self.current[p] {
            let inc = &mut self.incarnations[i];
            inc.links = inc.links.saturating_sub(1);
        }
    }

    /// A message's id (its index), for the payload.
    pub fn sent(&mut self, rec: MsgRecord) -> usize {
        self.messages.push(rec);
        self.messages.len() - 1
    }
}

/// The outcome of one assertion.
#[derive(Debug, Clone, Serialize)]
pub struct AssertionResult {
    pub name: String,
    pub kind: String,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Headline numbers of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub peers: usize,
    pub joins: usize,
    pub messages_sent: usize,
    pub messages_delivered: usize,
    pub messages_failed: usize,
    pub delivery_ratio: f64,
    pub latency: Percentiles,
    pub payload_bytes_delivered: u64,
    pub link_bytes: u64,
    pub link_frames: u64,
    pub tracker_bytes: u64,
    pub tracker_frames: u64,
    pub links_formed: u64,
    pub links_closed: u64,
    pub tracker_warnings: u64,
    pub tracker_restarts: u64,
    pub files_sent: usize,
    pub files_complete: usize,
    /// Files whose bytes went (partly) over the binary fast path.
    pub files_fast: usize,
    pub routed_sent: usize,
    pub routed_delivered: usize,
    /// Routed requests whose response came back.
    pub routed_answered: usize,
    pub relay_forwarded: u64,
    pub relay_dropped: u64,
}

/// Series for the charts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Charts {
    /// (upper bound in ms, count).
    pub latency_histogram: Vec<(f64, u64)>,
    /// (time in s, cumulative sent, cumulative delivered).
    pub delivery_over_time: Vec<(f64, u64, u64)>,
    /// (time in s, delivered payload bytes per second in that bucket).
    pub throughput: Vec<(f64, f64)>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The `q`-th percentile (0..=100) of sorted values (nearest rank).
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn latencies<'a>(msgs: impl Iterator<Item = &'a MsgRecord>) -> Vec<u64> {
    let mut v: Vec<u64> = msgs
        .filter_map(|m| m.delivered_at.map(|d| d.saturating_sub(m.sent_at)))
        .collect();
    v.sort_unstable();
    v
}

fn measured(m: &MsgRecord, measure: Measure) -> Option<u64> {
    match measure {
        Measure::Delivery => m.delivered_at,
        // A round trip counts only if the receiver had the message whole.
        Measure::RoundTrip => m.delivered_at.and(m.acked_at),
    }
}

fn measured_latencies<'a>(msgs: impl Iterator<Item = &'a MsgRecord>, measure: Measure) -> Vec<u64> {
    let mut v: Vec<u64> = msgs
        .filter_map(|m| measured(m, measure).map(|d| d.saturating_sub(m.sent_at)))
        .collect();
    v.sort_unstable();
    v
}

fn bounds_text(min: Option<u64>, max: Option<u64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => "any".into(),
    }
}

impl Recorder {
    fn of_kind<'a>(&'a self, kinds: &'a [u8]) -> impl Iterator<Item = &'a MsgRecord> + 'a {
        self.messages
            .iter()
            .filter(move |m| kinds.contains(&m.kind))
    }

    /// Headline numbers.
    pub fn summary(&self, sc: &Scenario) -> Summary {
        let lat = latencies(self.messages.iter());
        let delivered = self
            .messages
            .iter()
            .filter(|m| m.delivered_at.is_some())
            .count();
        let sent = self.messages.len();
        Summary {
            peers: sc.peer_count(),
            joins: self.incarnations.len(),
            messages_sent: sent,
            messages_delivered: delivered,
            messages_failed: self.messages.iter().filter(|m| m.failure.is_some()).count(),
            delivery_ratio: if sent == 0 {
                1.0
            } else {
                delivered as f64 / sent as f64
            },
            latency: Percentiles {
                p50_ms: percentile(&lat, 50.0).map_or(0.0, ms),
                p95_ms: percentile(&lat, 95.0).map_or(0.0, ms),
                p99_ms: percentile(&lat, 99.0).map_or(0.0, ms),
                max_ms: lat.last().copied().map_or(0.0, ms),
            },
            payload_bytes_delivered: self
                .messages
                .iter()
                .filter(|m| m.delivered_at.is_some())
                .map(|m| m.bytes as u64)
                .sum(),
            link_bytes: self.link_bytes,
            link_frames: self.link_frames,
            tracker_bytes: self.tracker_bytes,
            tracker_frames: self.tracker_frames,
            links_formed: self.links_formed,
            links_closed: self.links_closed,
            tracker_warnings: self.tracker_warnings,
            tracker_restarts: self.tracker_restarts,
            files_sent: self.of_kind(&[kind::FILE]).count(),
            files_complete: self
                .of_kind(&[kind::FILE])
                .filter(|m| m.delivered_at.is_some())
                .count(),
            files_fast: self
                .of_kind(&[kind::FILE])
                .filter(|m| m.fast == Some(true))
                .count(),
            routed_sent: self.of_kind(&[kind::ROUTED, kind::ONION]).count(),
            routed_delivered: self
                .of_kind(&[kind::ROUTED, kind::ONION])
                .filter(|m| m.delivered_at.is_some())
                .count(),
            routed_answered: self
                .of_kind(&[kind::ROUTED])
                .filter(|m| m.acked_at.is_some())
                .count(),
            relay_forwarded: self.relay_forwarded,
            relay_dropped: self.relay_dropped,
        }
    }

    /// Chart series over a run of `end` nanoseconds.
    pub fn charts(&self, end: u64) -> Charts {
        let lat = latencies(self.messages.iter());
        let mut latency_histogram = Vec::new();
        if let Some(&max) = lat.last() {
            let buckets = 20u64;
            let width = (max / buckets).max(1);
            for b in 0..buckets {
                let hi = if b + 1 == buckets {
                    u64::MAX
                } else {
                    (b + 1) * width
                };
                let lo = b * width;
                let n = lat.iter().filter(|&&x| x >= lo && x < hi).count() as u64;
                latency_histogram.push((ms((b + 1) * width), n));
            }
        }
        let buckets = 50u64;
        let width = (end / buckets).max(1);
        let mut delivery_over_time = Vec::new();
        let mut throughput = Vec::new();
        for b in 1..=buckets {
            let t = b * width;
            let sent = self.messages.iter().filter(|m| m.sent_at <= t).count() as u64;
            let delivered = self
                .messages
                .iter()
                .filter(|m| m.delivered_at.is_some_and(|d| d <= t))
                .count() as u64;
            delivery_over_time.push((t as f64 / 1e9, sent, delivered));
            let bytes: u64 = self
                .messages
                .iter()
                .filter(|m| m.delivered_at.is_some_and(|d| d > t - width && d <= t))
                .map(|m| m.bytes as u64)
                .sum();
            throughput.push((t as f64 / 1e9, bytes as f64 / (width as f64 / 1e9)));
        }
        Charts {
            latency_histogram,
            delivery_over_time,
            throughput,
        }
    }

    /// Evaluates every assertion of `sc` on a run that ended at `end` (ns offset).
    pub fn evaluate(&self, sc: &Scenario, end: u64) -> Vec<AssertionResult> {
        let step_idx = |name: &Option<String>| -> Option<usize> {
            name.as_ref()
                .and_then(|n| sc.steps.iter().position(|s| &s.name == n))
        };
        let of_step = |idx: Option<usize>| {
            self.messages
                .iter()
                .filter(move |m| idx.is_none_or(|i| m.step == i))
        };
        sc.asserts
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let (kind, passed, expected, actual) = match &a.kind {
                    AssertKind::DeliveryRatio {
                        step,
                        min,
                        max,
                        within,
                        measure,
                    } => {
                        let within_ns = within.as_nanos() as u64;
                        let msgs: Vec<&MsgRecord> = of_step(step_idx(step)).collect();
                        let ok = msgs
                            .iter()
                            .filter(|m| {
                                measured(m, *measure)
                                    .is_some_and(|d| d.saturating_sub(m.sent_at) <= within_ns)
                            })
                            .count();
                        let ratio = if msgs.is_empty() {
                            0.0
                        } else {
                            ok as f64 / msgs.len() as f64
                        };
                        (
                            "delivery_ratio",
                            !msgs.is_empty() && ratio >= *min && max.is_none_or(|m| ratio <= m),
                            format!(
                                "{} {} within {}",
                                match max {
                                    Some(m) if *min > 0.0 => {
                                        format!("{:.2}%..={:.2}%", min * 100.0, m * 100.0)
                                    }
                                    Some(m) => format!("<= {:.2}%", m * 100.0),
                                    None => format!(">= {:.2}%", min * 100.0),
                                },
                                match measure {
                                    Measure::Delivery => "delivered",
                                    Measure::RoundTrip => "answered (round trip)",
                                },
                                format_duration(*within)
                            ),
                            format!("{:.2}% ({ok} of {} messages)", ratio * 100.0, msgs.len()),
                        )
                    }
                    AssertKind::Latency {
                        step,
                        percentile: q,
                        max,
                        measure,
                    } => {
                        let lat = measured_latencies(of_step(step_idx(step)), *measure);
                        let p = percentile(&lat, *q);
                        (
                            "latency",
                            p.is_some_and(|p| p <= max.as_nanos() as u64),
                            format!("p{q} <= {}", format_duration(*max)),
                            match p {
                                Some(p) => format!(
                                    "p{q} = {:.3} ms over {} delivered messages",
                                    ms(p),
                                    lat.len()
                                ),
                                None => "no message was delivered".into(),
                            },
                        )
                    }
                    AssertKind::Bytes { metric, min, max } => {
                        let (name, v) = match metric {
                            BytesMetric::Link => ("link", self.link_bytes),
                            BytesMetric::Tracker => ("tracker", self.tracker_bytes),
                        };
                        let mut exp = format!("{name} bytes");
                        if let Some(m) = min {
                            exp.push_str(&format!(" >= {m}"));
                        }
                        if let Some(m) = max {
                            exp.push_str(&format!(" <= {m}"));
                        }
                        match (&self.tracker_bytes_unmeasured, metric) {
                            // Never pass on a counter nobody kept.
                            (Some(why), BytesMetric::Tracker) => {
                                ("bytes", false, exp, format!("not measurable: {why}"))
                            }
                            _ => {
                                let ok = min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m);
                                ("bytes", ok, exp, format!("{v} {name} bytes"))
                            }
                        }
                    }
                    AssertKind::TrackerPeers { at, min, max } => {
                        let exp = format!(
                            "{} peers in the swarm at {}",
                            bounds_text(*min, *max),
                            format_duration(*at)
                        );
                        let sample = self
                            .tracker_samples
                            .iter()
                            .find(|(k, _)| *k == index)
                            .map(|(_, r)| r.clone());
                        match sample {
                            Some(Ok(n)) => (
                                "tracker_peers",
                                min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
                                exp,
                                format!("{n} peers"),
                            ),
                            Some(Err(why)) => (
                                "tracker_peers",
                                false,
                                exp,
                                format!("not measurable: {why}"),
                            ),
                            None => (
                                "tracker_peers",
                                false,
                                exp,
                                "not counted: the run ended first".into(),
                            ),
                        }
                    }
                    AssertKind::Discovered {
                        min,
                        within,
                        min_links,
                    } => {
                        let within_ns = within.as_nanos() as u64;
                        let mut eligible = 0usize;
                        let mut ok = 0usize;
                        for inc in &self.incarnations {
                            let deadline = inc.joined_at.saturating_add(within_ns).min(end);
                            if inc.ended_at.is_some_and(|e| e <= deadline) {
                                continue; // left before it had to be discovered
                            }
                            eligible += 1;
                            if inc
                                .reached
                                .get(min_links - 1)
                                .is_some_and(|&t| t <= deadline)
                            {
                                ok += 1;
                            }
                        }
                        let ratio = if eligible == 0 {
                            0.0
                        } else {
                            ok as f64 / eligible as f64
                        };
                        (
                            "discovered",
                            eligible > 0 && ratio >= *min,
                            format!(
                                ">= {:.2}% of joins reach {min_links} link(s) within {}",
                                min * 100.0,
                                format_duration(*within)
                            ),
                            format!("{:.2}% ({ok} of {eligible} joins)", ratio * 100.0),
                        )
                    }
                    AssertKind::DelayPadding { step, min, max } => {
                        let msgs: Vec<&MsgRecord> = of_step(step_idx(step)).collect();
                        let rtts: Vec<u64> = msgs
                            .iter()
                            .filter_map(|m| m.acked_at.map(|a| a.saturating_sub(m.sent_at)))
                            .collect();
                        let lo_ns = min.map(|d| d.as_nanos() as u64);
                        let hi_ns = max.map(|d| d.as_nanos() as u64);
                        let inside = rtts
                            .iter()
                            .filter(|&&r| lo_ns.is_none_or(|a| r >= a) && hi_ns.is_none_or(|b| r <= b))
                            .count();
                        let ok = !msgs.is_empty() && rtts.len() == msgs.len() && inside == rtts.len();
                        let ms = |ns: u64| format!("{:.0} ms", ns as f64 / 1e6);
                        let held: Vec<u64> = msgs.iter().filter_map(|m| m.padding_delay).collect();
                        let told = if held.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; the entry held {} of them {}..={}",
                                held.iter().filter(|&&d| d > 0).count(),
                                ms(held.iter().copied().min().unwrap_or(0)),
                                ms(held.iter().copied().max().unwrap_or(0))
                            )
                        };
                        (
                            "delay_padding",
                            ok,
                            format!(
                                "every request answered, each round trip {}",
                                match (min, max) {
                                    (Some(a), Some(b)) => format!("{}..={}", format_duration(*a), format_duration(*b)),
                                    (Some(a), None) => format!(">= {}", format_duration(*a)),
                                    (None, Some(b)) => format!("<= {}", format_duration(*b)),
                                    (None, None) => "any".into(),
                                }
                            ),
                            match (rtts.iter().min(), rtts.iter().max()) {
                                (Some(&l), Some(&h)) => format!(
                                    "{} of {} answered, {inside} inside; round trips {}..={}{told}",
                                    rtts.len(),
                                    msgs.len(),
                                    ms(l),
                                    ms(h)
                                ),
                                _ => format!("none of {} requests was answered", msgs.len()),
                            },
                        )
                    }
                    AssertKind::Hops { step, min, max } => {
                        let hops: Vec<u64> = of_step(step_idx(step))
                            .filter(|m| m.delivered_at.is_some())
                            .filter_map(|m| m.hops.map(u64::from))
                            .collect();
                        let ok = !hops.is_empty()
                            && hops
                                .iter()
                                .all(|&h| min.is_none_or(|a| h >= a) && max.is_none_or(|b| h <= b));
                        let (lo, hi) = (hops.iter().min(), hops.iter().max());
                        (
                            "hops",
                            ok,
                            format!(
                                "every delivered message through {} relays",
                                bounds_text(*min, *max)
                            ),
                            match (lo, hi) {
                                (Some(l), Some(h)) => format!(
                                    "{l}..={h} relays over {} delivered messages",
                                    hops.len()
                                ),
                                _ => "no routed message was delivered".into(),
                            },
                        )
                    }
                    AssertKind::HopBytes {
                        step,
                        hop,
                        min,
                        max,
                    } => {
                        let sizes: Vec<u64> = of_step(step_idx(step))
                            .flat_map(|m| {
                                m.hop_bytes
                                    .iter()
                                    .enumerate()
                                    .filter(|(i, _)| hop.is_none_or(|h| h == *i))
                                    .map(|(_, &b)| b)
                            })
                            .collect();
                        let ok = !sizes.is_empty()
                            && sizes
                                .iter()
                                .all(|&b| min.is_none_or(|a| b >= a) && max.is_none_or(|c| b <= c));
                        let which = hop.map_or("every hop".to_owned(), |h| format!("hop {h}"));
                        (
                            "hop_bytes",
                            ok,
                            format!(
                                "onion packets on {which}: {} bytes",
                                bounds_text(*min, *max)
                            ),
                            match (sizes.iter().min(), sizes.iter().max()) {
                                (Some(l), Some(h)) => {
                                    format!("{l}..={h} bytes over {} packets", sizes.len())
                                }
                                _ => "no packet crossed that hop".into(),
                            },
                        )
                    }
                    AssertKind::Throughput { step, min } => {
                        let msgs: Vec<&MsgRecord> = of_step(step_idx(step)).collect();
                        let first = msgs.iter().map(|m| m.sent_at).min();
                        let last = msgs.iter().filter_map(|m| m.delivered_at).max();
                        let bytes: u64 = msgs
                            .iter()
                            .filter(|m| m.delivered_at.is_some())
                            .map(|m| m.bytes as u64)
                            .sum();
                        let rate = match (first, last) {
                            (Some(f), Some(l)) if l > f => bytes as f64 / ((l - f) as f64 / 1e9),
                            _ => 0.0,
                        };
                        (
                            "throughput",
                            rate >= *min,
                            format!(">= {}", format_rate(*min)),
                            format!("{} ({bytes} payload bytes)", format_rate(rate)),
                        )
                    }
                };
                AssertionResult {
                    name: a.name.clone(),
                    kind: kind.into(),
                    passed,
                    expected,
                    actual,
                }
            })
            .collect()
    }
}

/// Whether step `i` of `sc` sends messages (for step filters).
pub fn is_send_step(sc: &Scenario, i: usize) -> bool {
    sc.steps[i].action.sends()
}

/// Nanoseconds of a duration, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
