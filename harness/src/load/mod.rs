//! `ghostmesh-harness bench tracker`: a load generator for WebTorrent WebSocket trackers on
//! aquatic_ws_load_test's method, and an idle-connection memory probe.
//!
//! Load: many WebSocket connections; each is one peer in a few swarms chosen by Zipf
//! popularity over a fixed set of info_hashes; it keeps `in_flight` announces with `offers`
//! realistic SDP-sized offers outstanding, answers every offer relayed to it, and optionally
//! scrapes. Reported: messages received per second by kind (aquatic's "responses"), requests
//! per second, announce latency (p50/p90/p99), drops seen by the clients and counted by the
//! tracker (`/stats.json`, or the embedded tracker's metrics), the tracker's RSS and CPU time.
//!
//! Idle: opens N connections, holds them, reports the tracker's RSS growth per connection.
//!
//! Every loop is bounded by count and time; only loopback addresses are accepted.
//!
//! ```no_run
//! let cfg = ghostmesh_harness::load::BenchConfig { connections: 50, ..Default::default() };
//! let report = ghostmesh_harness::load::run(&cfg).unwrap();
//! println!("{}", report.text());
//! ```

pub mod args;
mod conn;
mod msg;
pub mod procfs;
pub mod stats;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ghostmesh_tracker::wire::Id20;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use self::conn::{Dial, Popularity};
use self::procfs::{ProcSample, ServerCounters};
use self::stats::{CounterSnapshot, Counters, Histogram};

/// Hard upper bounds, whatever the command line says.
pub mod limits {
    use std::time::Duration;
    /// Connections.
    pub const MAX_CONNECTIONS: usize = 100_000;
    /// Measured duration (load) or hold time (idle).
    pub const MAX_DURATION: Duration = Duration::from_secs(600);
    /// Warm-up.
    pub const MAX_WARMUP: Duration = Duration::from_secs(60);
    /// Time allowed to open every connection.
    pub const MAX_CONNECT_PHASE: Duration = Duration::from_secs(300);
    /// Offers per announce.
    pub const MAX_OFFERS: usize = 100;
    /// Distinct info_hashes.
    pub const MAX_HASHES: usize = 1_000_000;
    /// Swarms per connection.
    pub const MAX_SWARMS_PER_CONN: usize = 1000;
    /// Announces outstanding per connection.
    pub const MAX_IN_FLIGHT: usize = 64;
    /// SDP text size.
    pub const MAX_SDP_BYTES: usize = 16 * 1024;
    /// Source addresses (127.0.0.1 ..= 127.0.0.N).
    pub const MAX_SOURCES: usize = 250;
    /// Connections per source address before another is added (ephemeral ports are ~28k).
    pub const CONNS_PER_SOURCE: usize = 20_000;
}

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Announce/answer load.
    Load,
    /// Hold idle connections; report memory per connection.
    Idle,
}

/// Everything a bench run needs. `Default` is a small embedded load run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `ws://` or `wss://` URL of the tracker (loopback only); `None` starts one in-process.
    pub url: Option<String>,
    /// Accept any TLS certificate (self-signed trackers).
    pub insecure: bool,
    /// Embedded tracker only: serve `wss://` with these PEM files.
    pub tls_cert: Option<PathBuf>,
    /// Embedded tracker only: the key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Load or idle.
    pub mode: Mode,
    /// WebSocket connections.
    pub connections: usize,
    /// Measured time (load) or hold time after every connection is open (idle).
    pub duration: Duration,
    /// Load only: time between the last connection opening and the start of measuring.
    pub warmup: Duration,
    /// Time to open one connection (TCP, TLS, WebSocket).
    pub connect_timeout: Duration,
    /// Time to open all of them; the run goes on with those that opened.
    pub connect_phase: Duration,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Offers per announce.
    pub offers: usize,
    /// Distinct info_hashes.
    pub hashes: usize,
    /// Zipf exponent of info_hash popularity (0 = uniform).
    pub zipf: f64,
    /// Swarms each connection's peer joins (distinct, by popularity).
    pub swarms_per_conn: usize,
    /// Share of memberships that are seeders (`left` 0).
    pub seeder_ratio: f64,
    /// Share of relayed offers answered.
    pub answer_ratio: f64,
    /// Every Nth request is a scrape of 5 info_hashes (0: none).
    pub scrape_every: u64,
    /// Announces outstanding per connection (closed loop).
    pub in_flight: usize,
    /// Pause between announces of one connection (0: next as soon as the window allows).
    pub announce_interval: Duration,
    /// An announce without a reply after this long counts as dropped.
    pub reply_timeout: Duration,
    /// SDP text size per offer/answer (the realistic template is ~750 bytes; larger pads).
    pub sdp_bytes: usize,
    /// Seed of the info_hashes and each connection's choices.
    pub seed: u64,
    /// Source addresses (0: one per 20,000 connections).
    pub sources: usize,
    /// The tracker's pid for RSS and CPU (default: whoever listens on the URL's port).
    pub tracker_pid: Option<u32>,
    /// `http://` URL of the tracker's `/stats.json` (default: the URL's host and port, for ws://).
    pub stats_url: Option<String>,
    /// Runtime worker threads (0: one per core).
    pub threads: usize,
    /// tungstenite read buffer per client connection.
    pub read_buffer: usize,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Idle only: print `ready N` on stdout once every connection is open (for scripts).
    pub ready_line: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            url: None,
            insecure: false,
            tls_cert: None,
            tls_key: None,
            mode: Mode::Load,
            connections: 200,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            connect_phase: Duration::from_secs(60),
            connect_concurrency: 256,
            offers: 10,
            hashes: 1000,
            zipf: 1.0,
            swarms_per_conn: 4,
            seeder_ratio: 0.25,
            answer_ratio: 1.0,
            scrape_every: 0,
            in_flight: 1,
            announce_interval: Duration::ZERO,
            reply_timeout: Duration::from_secs(2),
            sdp_bytes: 0,
            seed: 1,
            sources: 0,
            tracker_pid: None,
            stats_url: None,
            threads: 0,
            read_buffer: 4096,
            progress: false,
            ready_line: false,
        }
    }
}

/// Why a bench could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// Bad parameters (exit 2).
    Invalid(String),
    /// It could not be carried out (exit 3).
    Runtime(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Invalid(e) | LoadError::Runtime(e) => f.write_str(e),
        }
    }
}

/// A parsed `ws://` / `wss://` / `http://` URL with a loopback host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackUrl {
    /// `ws`, `wss` or `http`.
    pub scheme: String,
    /// The socket address.
    pub addr: SocketAddr,
    /// The host as written (for the Host header).
    pub host: String,
    /// The path, `/` when absent.
    pub path: String,
}

/// Parses a URL whose host is a loopback address (127.0.0.0/8, ::1 or `localhost`).
pub fn parse_loopback_url(url: &str, schemes: &[&str]) -> Result<LoopbackUrl, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url}: expected scheme://host:port"))?;
    if !schemes.contains(&scheme) {
        return Err(format!(
            "{url}: the scheme must be one of {}",
            schemes.join(", ")
        ));
    }
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = match scheme {
        "wss" | "https" => 443,
        _ => 80,
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed [ in the host"))?;
        (h, p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
        None => default_port,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("{url}: the host must be an IP address or localhost"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url}: only loopback trackers (127.0.0.0/8, ::1) are allowed"
        ));
    }
    Ok(LoopbackUrl {
        scheme: scheme.to_string(),
        addr: SocketAddr::new(ip, port),
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

impl BenchConfig {
    /// Checks every bound; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        let l = |ok: bool, msg: String| if ok { Ok(()) } else { Err(msg) };
        l(
            (1..=limits::MAX_CONNECTIONS).contains(&self.connections),
            format!("--connections must be 1..={}", limits::MAX_CONNECTIONS),
        )?;
        l(
            self.duration > Duration::ZERO && self.duration <= limits::MAX_DURATION,
            format!("--duration must be > 0 and <= {:?}", limits::MAX_DURATION),
        )?;
        l(
            self.warmup <= limits::MAX_WARMUP,
            format!("--warmup must be <= {:?}", limits::MAX_WARMUP),
        )?;
        l(
            self.connect_phase > Duration::ZERO && self.connect_phase <= limits::MAX_CONNECT_PHASE,
            format!(
                "--connect-phase must be > 0 and <= {:?}",
                limits::MAX_CONNECT_PHASE
            ),
        )?;
        l(
            self.connect_timeout > Duration::ZERO
                && self.connect_timeout <= limits::MAX_CONNECT_PHASE,
            "--connect-timeout must be > 0 and <= 300 s".into(),
        )?;
        l(
            (1..=10_000).contains(&self.connect_concurrency),
            "--connect-concurrency must be 1..=10000".into(),
        )?;
        l(
            self.offers <= limits::MAX_OFFERS,
            format!("--offers must be <= {}", limits::MAX_OFFERS),
        )?;
        l(
            (1..=limits::MAX_HASHES).contains(&self.hashes),
            format!("--hashes must be 1..={}", limits::MAX_HASHES),
        )?;
        l(
            self.zipf.is_finite() && (0.0..=10.0).contains(&self.zipf),
            "--zipf must be 0..=10".into(),
        )?;
        l(
            (1..=limits::MAX_SWARMS_PER_CONN).contains(&self.swarms_per_conn),
            format!(
                "--swarms-per-conn must be 1..={}",
                limits::MAX_SWARMS_PER_CONN
            ),
        )?;
        l(
            (0.0..=1.0).contains(&self.seeder_ratio),
            "--seeders must be 0..=1".into(),
        )?;
        l(
            (0.0..=1.0).contains(&self.answer_ratio),
            "--answer-ratio must be 0..=1".into(),
        )?;
        l(
            (1..=limits::MAX_IN_FLIGHT).contains(&self.in_flight),
            format!("--in-flight must be 1..={}", limits::MAX_IN_FLIGHT),
        )?;
        l(
            self.reply_timeout > Duration::ZERO && self.reply_timeout <= Duration::from_secs(60),
            "--reply-timeout must be > 0 and <= 60 s".into(),
        )?;
        l(
            self.announce_interval <= Duration::from_secs(600),
            "--announce-interval must be <= 600 s".into(),
        )?;
        l(
            self.sdp_bytes <= limits::MAX_SDP_BYTES,
            format!("--sdp-bytes must be <= {}", limits::MAX_SDP_BYTES),
        )?;
        l(
            self.sources <= limits::MAX_SOURCES,
            format!("--sources must be <= {}", limits::MAX_SOURCES),
        )?;
        l(self.threads <= 256, "--threads must be <= 256".into())?;
        l(
            (256..=1 << 20).contains(&self.read_buffer),
            "--read-buffer must be 256..=1048576".into(),
        )?;
        if let Some(u) = &self.url {
            parse_loopback_url(u, &["ws", "wss"])?;
            if self.tls_cert.is_some() || self.tls_key.is_some() {
                return Err("--tls-cert/--tls-key start an embedded wss:// tracker; with --url, configure the tracker itself".into());
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if let Some(s) = &self.stats_url {
            parse_loopback_url(s, &["http"])?;
        }
        Ok(())
    }
}

/// State shared by every connection task of one run.
#[derive(Debug)]
pub(crate) struct Shared {
    cfg: BenchConfig,
    dial: Dial,
    hashes: Vec<Id20>,
    popularity: Popularity,
    counters: Counters,
    latency: Histogram,
    measuring: AtomicBool,
    connect_limit: tokio::sync::Semaphore,
    connected: AtomicUsize,
    failed: AtomicUsize,
    open_now: AtomicUsize,
    first_connect_error: Mutex<Option<String>>,
    error_reasons: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn connect_failed(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_connect_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(e);
        }
    }

    /// Counts an error reply by reason (at most 20 distinct reasons kept).
    fn note_error(&self, reason: &str) {
        let mut m = self.error_reasons.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(reason) {
            *n += 1;
        } else if m.len() < 20 {
            m.insert(reason.to_string(), 1);
        }
    }
}

/// Where the tracker's numbers come from.
enum ServerView {
    Embedded(ghostmesh_tracker::Tracker),
    Stats(SocketAddr, String, String),
    None(String),
}

impl ServerView {
    async fn counters(&self) -> Result<ServerCounters, String> {
        match self {
            ServerView::Embedded(t) => {
                let m = t.metrics();
                let pick = |f: &dyn Fn(&'static str) -> u64, names: &[&'static str]| {
                    names.iter().map(|n| (n.to_string(), f(n))).collect()
                };
                Ok(ServerCounters {
                    requests: pick(
                        &|k| m.requests(k),
                        &["announce", "answer", "scrape", "invalid"],
                    ),
                    responses: pick(
                        &|k| m.responses(k),
                        &["announce", "offer", "answer", "scrape", "error"],
                    ),
                    drops: ghostmesh_tracker::metrics::Drop::ALL
                        .iter()
                        .map(|d| (d.as_str().to_string(), m.drops(*d)))
                        .collect(),
                    connections: t.snapshot().connections as u64,
                    rss_bytes: ghostmesh_tracker::metrics::resident_memory_bytes(),
                })
            }
            ServerView::Stats(addr, host, path) => {
                let body = procfs::http_get(*addr, host, path).await?;
                ServerCounters::from_stats_json(&body)
            }
            ServerView::None(why) => Err(why.clone()),
        }
    }
}

/// The tracker's side of a run.
#[derive(Debug, Clone, Default)]
pub struct ServerSide {
    /// Its counters over the measured window, when readable.
    pub counters: Option<ServerCounters>,
    /// Why they are not.
    pub counters_unavailable: Option<String>,
    /// Whose memory: "pid N" or "this process (embedded tracker + load generator)".
    pub process: Option<String>,
    /// RSS before any connection opened.
    pub rss_before: Option<u64>,
    /// RSS when every connection was open (idle) or at the start of measuring (load).
    pub rss_start: Option<u64>,
    /// Highest RSS sampled during the window.
    pub rss_peak: Option<u64>,
    /// RSS at the end of the window.
    pub rss_end: Option<u64>,
    /// CPU seconds the process used over the window.
    pub cpu_secs: Option<f64>,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The configuration (after defaults).
    pub mode: Mode,
    /// Target description.
    pub target: String,
    /// Whether the tracker ran in this process.
    pub embedded: bool,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened.
    pub opened: usize,
    /// Connections that failed to open.
    pub failed: usize,
    /// First connection error.
    pub first_connect_error: Option<String>,
    /// Connections still open at the end.
    pub open_at_end: usize,
    /// Source addresses used.
    pub sources: usize,
    /// Offers per announce, info_hashes, Zipf exponent, swarms per connection.
    pub offers: usize,
    /// Distinct info_hashes.
    pub hashes: usize,
    /// Zipf exponent.
    pub zipf: f64,
    /// Share of swarm picks that go to the most popular info_hash.
    pub top_share: f64,
    /// Swarms per connection.
    pub swarms_per_conn: usize,
    /// Bytes of one announce frame.
    pub announce_bytes: usize,
    /// Time to open every connection.
    pub connect_secs: f64,
    /// Length of the measured window.
    pub window_secs: f64,
    /// Client counters over the window.
    pub client: CounterSnapshot,
    /// Client counters over the whole run (connect phase and warm-up included).
    pub client_total: CounterSnapshot,
    /// Announce latency, µs: p50, p90, p99, max; and the number of samples.
    pub latency_us: Option<[u64; 4]>,
    /// Latency samples.
    pub latency_samples: u64,
    /// Error replies by reason (whole run).
    pub error_reasons: BTreeMap<String, u64>,
    /// The tracker's side.
    pub server: ServerSide,
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

impl BenchReport {
    fn rate(&self, n: u64) -> f64 {
        if self.window_secs > 0.0 {
            n as f64 / self.window_secs
        } else {
            0.0
        }
    }

    /// Messages received per second (aquatic_ws_load_test's "responses per second").
    pub fn responses_per_sec(&self) -> f64 {
        self.rate(self.client.responses())
    }

    /// Idle mode: RSS growth per open connection, bytes.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        if self.mode != Mode::Idle {
            return None;
        }
        let s = &self.server;
        let (before, after) = (s.rss_before?, s.rss_start?);
        (self.opened > 0).then(|| (after as f64 - before as f64) / self.opened as f64)
    }

    /// A terminal report.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let c = &self.client;
        let _ = writeln!(
            o,
            "bench tracker ({}): {}, {} connections ({} opened in {:.1} s, {} failed, {} open at the end; {} source address{})",
            match self.mode {
                Mode::Load => "load",
                Mode::Idle => "idle",
            },
            self.target,
            self.connections,
            self.opened,
            self.connect_secs,
            self.failed,
            self.open_at_end,
            self.sources,
            if self.sources == 1 { "" } else { "es" }
        );
        if let Some(e) = &self.first_connect_error {
            let _ = writeln!(o, "  first connection error: {e}");
        }
        if self.mode == Mode::Load {
            let _ = writeln!(
                o,
                "  load: {} offers per announce ({} bytes), {} info_hashes (Zipf s={}, top hash {:.1} % of picks), {} swarms per connection; measured {:.1} s",
                self.offers,
                self.announce_bytes,
                self.hashes,
                self.zipf,
                self.top_share * 100.0,
                self.swarms_per_conn,
                self.window_secs
            );
            let _ = writeln!(
                o,
                "  responses/s     {:>10.0}  (announce {:.0}, offer {:.0}, answer {:.0}, scrape {:.0}, error {:.0})",
                self.responses_per_sec(),
                self.rate(c.announce_replies),
                self.rate(c.offers_in),
                self.rate(c.answers_in),
                self.rate(c.scrape_replies),
                self.rate(c.errors_in)
            );
            let _ = writeln!(
                o,
                "  requests/s      {:>10.0}  (announce {:.0}, answer {:.0}, scrape {:.0})",
                self.rate(c.requests()),
                self.rate(c.announces_sent),
                self.rate(c.answers_sent),
                self.rate(c.scrapes_sent)
            );
            match self.latency_us {
                Some([p50, p90, p99, max]) => {
                    let _ = writeln!(
                        o,
                        "  announce latency  p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} replies)",
                        p50 as f64 / 1e3,
                        p90 as f64 / 1e3,
                        p99 as f64 / 1e3,
                        max as f64 / 1e3,
                        self.latency_samples
                    );
                }
                None => {
                    let _ = writeln!(o, "  announce latency  no replies in the window");
                }
            }
            let _ = writeln!(
                o,
                "  client-side drops  announces without reply {} ({} timed out after the reply timeout, {} skipped by a later reply), disconnects {}, unparsable {}",
                c.announce_timeouts + c.announce_replies_skipped,
                c.announce_timeouts,
                c.announce_replies_skipped,
                c.disconnects,
                c.unparsable
            );
            if !self.error_reasons.is_empty() {
                let _ = writeln!(o, "  error replies (whole run): {:?}", self.error_reasons);
            }
        }
        let s = &self.server;
        match (&s.counters, &s.counters_unavailable) {
            (Some(sc), _) if self.mode == Mode::Load => {
                let _ = writeln!(
                    o,
                    "  tracker counters  responses/s {:.0} ({}), requests/s {:.0}, drops {} ({})",
                    self.rate(ServerCounters::total(&sc.responses)),
                    sc.responses
                        .iter()
                        .map(|(k, v)| format!("{k} {:.0}", self.rate(*v)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.rate(ServerCounters::total(&sc.requests)),
                    ServerCounters::total(&sc.drops),
                    sc.drops
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(o, "  tracker counters  unavailable: {why}");
            }
            _ => {}
        }
        if let Some(p) = &s.process {
            let f = |v: Option<u64>| v.map_or("-".to_string(), mb);
            let _ = writeln!(
                o,
                "  tracker memory  {p}: RSS {} before connecting, {} with every connection open, peak {}, {} at the end",
                f(s.rss_before),
                f(s.rss_start),
                f(s.rss_peak),
                f(s.rss_end)
            );
            if let Some(cpu) = s.cpu_secs {
                let per = if cpu > 0.0 {
                    format!(
                        ", {:.0} responses per CPU-second",
                        c.responses() as f64 / cpu
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "  tracker CPU     {cpu:.2} s over the window ({:.0} % of one core){}",
                    if self.window_secs > 0.0 {
                        cpu / self.window_secs * 100.0
                    } else {
                        0.0
                    },
                    if self.mode == Mode::Load {
                        per
                    } else {
                        String::new()
                    }
                );
            }
        }
        if let Some(b) = self.bytes_per_connection() {
            let _ = writeln!(
                o,
                "  memory per idle connection: {:.0} bytes ({:.2} KB)",
                b,
                b / 1000.0
            );
        }
        o
    }

    /// The report as JSON (for scripts and BENCHMARKS.md tables).
    pub fn json(&self) -> serde_json::Value {
        let c = &self.client;
        let s = &self.server;
        serde_json::json!({
            "mode": match self.mode { Mode::Load => "load", Mode::Idle => "idle" },
            "target": self.target,
            "embedded": self.embedded,
            "connections": self.connections,
            "opened": self.opened,
            "failed": self.failed,
            "first_connect_error": self.first_connect_error,
            "open_at_end": self.open_at_end,
            "sources": self.sources,
            "offers": self.offers,
            "hashes": self.hashes,
            "zipf": self.zipf,
            "swarms_per_conn": self.swarms_per_conn,
            "announce_bytes": self.announce_bytes,
            "connect_secs": self.connect_secs,
            "window_secs": self.window_secs,
            "responses_per_sec": self.responses_per_sec(),
            "responses": {
                "announce": c.announce_replies, "offer": c.offers_in, "answer": c.answers_in,
                "scrape": c.scrape_replies, "error": c.errors_in,
            },
            "requests": { "announce": c.announces_sent, "answer": c.answers_sent, "scrape": c.scrapes_sent },
            "client_drops": {
                "announce_timeouts": c.announce_timeouts,
                "announce_replies_skipped": c.announce_replies_skipped,
                "disconnects": c.disconnects,
                "unparsable": c.unparsable,
            },
            "whole_run": {
                "responses": self.client_total.responses(),
                "offers_in": self.client_total.offers_in,
                "answers_in": self.client_total.answers_in,
                "answers_sent": self.client_total.answers_sent,
                "announce_replies": self.client_total.announce_replies,
                "errors_in": self.client_total.errors_in,
                "disconnects": self.client_total.disconnects,
            },
            "latency_ms": self.latency_us.map(|[p50, p90, p99, max]| serde_json::json!({
                "p50": p50 as f64 / 1e3, "p90": p90 as f64 / 1e3, "p99": p99 as f64 / 1e3, "max": max as f64 / 1e3,
                "samples": self.latency_samples,
            })),
            "error_reasons": self.error_reasons,
            "server": {
                "counters": s.counters.as_ref().map(|sc| serde_json::json!({
                    "requests": sc.requests, "responses": sc.responses, "drops": sc.drops,
                    "connections": sc.connections,
                })),
                "counters_unavailable": s.counters_unavailable,
                "process": s.process,
                "rss_before": s.rss_before,
                "rss_start": s.rss_start,
                "rss_peak": s.rss_peak,
                "rss_end": s.rss_end,
                "cpu_secs": s.cpu_secs,
            },
            "bytes_per_connection": self.bytes_per_connection(),
        })
    }
}

/// Runs a bench on its own runtime. Blocks until done (bounded by the configured times).
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, LoadError> {
    cfg.validate().map_err(LoadError::Invalid)?;
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        cfg.threads
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| LoadError::Runtime(format!("runtime: {e}")))?;
    let r = rt.block_on(run_async(cfg.clone()));
    rt.shutdown_timeout(Duration::from_secs(2));
    r
}

fn progress(cfg: &BenchConfig, msg: &str) {
    if cfg.progress {
        eprintln!("bench tracker: {msg}");
    }
}

async fn run_async(cfg: BenchConfig) -> Result<BenchReport, LoadError> {
    let rt = |e: String| LoadError::Runtime(e);
    // The target.
    let (view, url, pid, embedded) = match &cfg.url {
        None => {
            let n = cfg.connections;
            let tcfg = ghostmesh_tracker::Config {
                listen: "127.0.0.1:0".into(),
                max_connections: n + 64,
                max_connections_per_ip: n + 64,
                max_peers_per_swarm: n.max(5000),
                max_swarms: cfg.hashes.max(100_000),
                max_swarms_per_connection: cfg.swarms_per_conn.max(100),
                tls_cert: cfg
                    .tls_cert
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                tls_key: cfg
                    .tls_key
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                shutdown_grace_secs: 2.0,
                ..ghostmesh_tracker::Config::default()
            };
            let t = ghostmesh_tracker::Tracker::start(tcfg)
                .await
                .map_err(|e| rt(format!("embedded tracker: {e}")))?;
            let url = t.ws_url();
            (ServerView::Embedded(t), url, Some(std::process::id()), true)
        }
        Some(u) => {
            let parsed = parse_loopback_url(u, &["ws", "wss"]).map_err(LoadError::Invalid)?;
            let view = match &cfg.stats_url {
                Some(s) => {
                    let su = parse_loopback_url(s, &["http"]).map_err(LoadError::Invalid)?;
                    ServerView::Stats(su.addr, su.host, su.path)
                }
                None if parsed.scheme == "ws" => {
                    ServerView::Stats(parsed.addr, parsed.host.clone(), "/stats.json".into())
                }
                None => ServerView::None(
                    "wss:// target: pass --stats-url http://127.0.0.1:PORT/stats.json (the tracker's metrics_listen)".into(),
                ),
            };
            let pid = cfg
                .tracker_pid
                .or_else(|| procfs::pid_listening_on(parsed.addr.port()));
            (view, u.clone(), pid, false)
        }
    };
    let parsed = parse_loopback_url(&url, &["ws", "wss"]).map_err(LoadError::Invalid)?;
    let tls = match (parsed.scheme.as_str(), cfg.insecure || embedded) {
        ("wss", true) => conn::Tls::Insecure(conn::insecure_tls().map_err(rt)?),
        ("wss", false) => conn::Tls::Verify,
        _ => conn::Tls::Off,
    };
    let n_sources = match (parsed.addr.ip(), cfg.sources) {
        (IpAddr::V6(_), _) => 1,
        (_, 0) => cfg.connections.div_ceil(limits::CONNS_PER_SOURCE).max(1),
        (_, s) => s,
    };
    let sources = if n_sources <= 1 {
        Vec::new()
    } else {
        (1..=n_sources as u8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect()
    };
    let mut hash_rng = SmallRng::seed_from_u64(cfg.seed);
    let hashes: Vec<Id20> = (0..cfg.hashes)
        .map(|_| Id20::random(&mut hash_rng))
        .collect();
    let popularity = Popularity::zipf(cfg.hashes, cfg.zipf);
    let announce_bytes = {
        let mut r = SmallRng::seed_from_u64(0);
        let sdp = msg::Sdp::new(&mut r, cfg.sdp_bytes);
        msg::announce(&mut r, &hashes[0], &hashes[0], 0, true, cfg.offers, &sdp).len()
    };
    let shared = Arc::new(Shared {
        dial: Dial {
            url: url.clone(),
            addr: parsed.addr,
            tls,
            sources: sources.clone(),
            read_buffer: cfg.read_buffer,
        },
        hashes,
        popularity,
        counters: Counters::default(),
        latency: Histogram::default(),
        measuring: AtomicBool::new(false),
        connect_limit: tokio::sync::Semaphore::new(cfg.connect_concurrency),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        open_now: AtomicUsize::new(0),
        first_connect_error: Mutex::new(None),
        error_reasons: Mutex::new(BTreeMap::new()),
        cfg: cfg.clone(),
    });
    let process = pid.map(|p| {
        if embedded {
            format!("this process, pid {p} (embedded tracker + load generator)")
        } else {
            format!("tracker pid {p}")
        }
    });
    let sample = || pid.and_then(procfs::sample);
    let mut server = ServerSide {
        process,
        ..ServerSide::default()
    };
    server.rss_before = sample().map(|s| s.rss);

    // Connect, bounded by the connect phase.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t_connect = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..cfg.connections {
        tasks.spawn(conn::run(i, shared.clone(), stop_rx.clone()));
    }
    let phase_end = t_connect + cfg.connect_phase;
    let mut last_note = Instant::now();
    loop {
        let done = shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= cfg.connections || Instant::now() >= phase_end {
            break;
        }
        if last_note.elapsed() >= Duration::from_secs(2) {
            last_note = Instant::now();
            progress(
                &cfg,
                &format!(
                    "{} of {} connections open, {} failed",
                    shared.connected.load(Ordering::Relaxed),
                    cfg.connections,
                    shared.failed.load(Ordering::Relaxed)
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let opened = shared.connected.load(Ordering::Relaxed);
    progress(
        &cfg,
        &format!(
            "{opened} of {} connections open in {connect_secs:.1} s",
            cfg.connections
        ),
    );
    if opened == 0 {
        let _ = stop_tx.send(true);
        let why = shared
            .first_connect_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "no connection opened within the connect phase".into());
        finish(tasks, view).await;
        return Err(rt(format!("no connection opened: {why}")));
    }

    let window_secs;
    let mut client = CounterSnapshot::default();
    match cfg.mode {
        Mode::Idle => {
            // Let the tracker finish its per-connection setup, then read its memory.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s0 = sample();
            server.rss_start = s0.map(|s| s.rss);
            if let Ok(c) = view.counters().await {
                server.counters = Some(c);
            }
            if cfg.ready_line {
                use std::io::Write;
                let mut out = std::io::stdout();
                let _ = writeln!(out, "ready {}", shared.open_now.load(Ordering::Relaxed));
                let _ = out.flush();
            }
            let t0 = Instant::now();
            let peak = hold(&cfg, cfg.duration, &sample).await;
            window_secs = t0.elapsed().as_secs_f64();
            let s1 = sample();
            server.rss_peak = peak.max(server.rss_start);
            server.rss_end = s1.map(|s| s.rss);
            server.cpu_secs = cpu_between(s0, s1);
        }
        Mode::Load => {
            tokio::time::sleep(cfg.warmup).await;
            let c0 = shared.counters.snapshot();
            let sc0 = view.counters().await;
            let s0 = sample();
            shared.measuring.store(true, Ordering::Relaxed);
            let t0 = Instant::now();
            let peak = hold(&cfg, cfg.duration, &sample).await;
            shared.measuring.store(false, Ordering::Relaxed);
            window_secs = t0.elapsed().as_secs_f64();
            let s1 = sample();
            let c1 = shared.counters.snapshot();
            let sc1 = view.counters().await;
            client = c1.since(&c0);
            match (sc0, sc1) {
                (Ok(a), Ok(b)) => server.counters = Some(b.since(&a)),
                (Err(e), _) | (_, Err(e)) => server.counters_unavailable = Some(e),
            }
            server.rss_start = s0.map(|s| s.rss);
            server.rss_peak = peak.max(server.rss_start);
            server.rss_end = s1.map(|s| s.rss);
            server.cpu_secs = cpu_between(s0, s1);
        }
    }
    let client_total = shared.counters.snapshot();
    let open_at_end = shared.open_now.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    finish(tasks, view).await;

    let lat = &shared.latency;
    let latency_us = match (
        lat.quantile(0.5),
        lat.quantile(0.9),
        lat.quantile(0.99),
        lat.max(),
    ) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
        _ => None,
    };
    let first_connect_error = shared
        .first_connect_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let error_reasons = shared
        .error_reasons
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(BenchReport {
        mode: cfg.mode,
        target: if embedded {
            format!("embedded tracker at {url}")
        } else {
            url.clone()
        },
        embedded,
        connections: cfg.connections,
        opened,
        failed: shared.failed.load(Ordering::Relaxed),
        first_connect_error,
        open_at_end,
        sources: n_sources,
        offers: cfg.offers,
        hashes: cfg.hashes,
        zipf: cfg.zipf,
        top_share: shared.popularity.top_share(),
        swarms_per_conn: cfg.swarms_per_conn,
        announce_bytes,
        connect_secs,
        window_secs,
        client,
        client_total,
        latency_us,
        latency_samples: lat.count(),
        error_reasons,
        server,
    })
}

fn cpu_between(a: Option<ProcSample>, b: Option<ProcSample>) -> Option<f64> {
    let (a, b) = (a?, b?);
    Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / procfs::TICKS_PER_SEC)
}

/// Sleeps `d`, sampling RSS every 250 ms; returns the peak seen.
async fn hold(
    cfg: &BenchConfig,
    d: Duration,
    sample: &dyn Fn() -> Option<ProcSample>,
) -> Option<u64> {
    let end = Instant::now() + d;
    let mut peak: Option<u64> = None;
    let mut last_note = Instant::now();
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        if let Some(s) = sample() {
            peak = Some(peak.map_or(s.rss, |p| p.max(s.rss)));
        }
        if last_note.elapsed() >= Duration::from_secs(5) {
            last_note = Instant::now();
            progress(cfg, &format!("{:.0} s left", left.as_secs_f64()));
        }
    }
    peak
}

/// Stops every connection task (bounded: 5 s, then aborted) and the embedded tracker.
async fn finish(mut tasks: tokio::task::JoinSet<()>, view: ServerView) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
    if let ServerView::Embedded(t) = view {
        t.shutdown().await;
    }
}
