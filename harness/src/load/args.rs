//! The command line of `ghostmesh-harness bench tracker` (flattened into the harness CLI).

use std::path::PathBuf;
use std::time::Duration;

use super::{BenchConfig, LoadError, Mode};

/// `"10"` (seconds) or a duration with a unit (`"500ms"`, `"2s"`, `"1m"`).
fn duration(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=1e6).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        Ok(_) => Err(format!("{s:?} is out of range")),
        Err(_) => crate::units::parse_duration(s),
    }
}

/// Load a WebTorrent tracker the way aquatic_ws_load_test does (many connections, announces
/// with offers, skewed info_hash popularity, answers to relayed offers) and report
/// responses/s, announce latency, drops, and the tracker's RSS and CPU; or, with --idle,
/// the tracker's memory per idle connection. Loopback trackers only.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Targets: without --url an embedded tracker starts in this process (its RSS then includes the
load generator). With --url, the tracker's pid (for RSS and CPU) is found by its listening
port unless --tracker-pid is given, and its /stats.json is read at the URL's host and port
(ws://) or at --stats-url (wss://: point it at the tracker's metrics_listen).

Hard limits: 100000 connections, 600 s duration, 60 s warm-up, 300 s to connect.
Many connections need `ulimit -n` above the count; beyond 20000 connections they come from
127.0.0.1, 127.0.0.2, ... (one source address per 20000) to avoid port exhaustion.

Exit codes: 0 done; 2 bad options; 3 the run failed (no connection opened, tracker did not start).")]
pub struct TrackerArgs {
    /// Tracker URL (ws:// or wss://, loopback); default: an embedded tracker.
    #[arg(long)]
    pub url: Option<String>,
    /// Accept any TLS certificate (self-signed trackers).
    #[arg(long)]
    pub insecure: bool,
    /// Embedded tracker: serve wss:// with this PEM certificate.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Embedded tracker: the PEM key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Hold idle connections and report memory per connection instead of loading.
    #[arg(long)]
    pub idle: bool,
    /// WebSocket connections (at most 100000).
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// Measured time (load) or hold time with every connection open (idle); seconds or "10s".
    #[arg(long, default_value = "10", value_parser = duration)]
    pub duration: Duration,
    /// Time between the last connection opening and the start of measuring.
    #[arg(long, default_value = "2", value_parser = duration)]
    pub warmup: Duration,
    /// Time to open one connection.
    #[arg(long, default_value = "10", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Time to open all of them (the run goes on with those that opened).
    #[arg(long, default_value = "60", value_parser = duration)]
    pub connect_phase: Duration,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Offers per announce.
    #[arg(long, default_value_t = 10)]
    pub offers: usize,
    /// Distinct info_hashes.
    #[arg(long, default_value_t = 1000)]
    pub hashes: usize,
    /// Zipf exponent of info_hash popularity (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Swarms each connection's peer joins.
    #[arg(long, default_value_t = 4)]
    pub swarms_per_conn: usize,
    /// Share of memberships that are seeders.
    #[arg(long, default_value_t = 0.25)]
    pub seeders: f64,
    /// Share of relayed offers answered.
    #[arg(long, default_value_t = 1.0)]
    pub answer_ratio: f64,
    /// Every Nth request is a scrape of 5 info_hashes (0: no scrapes).
    #[arg(long, default_value_t = 0)]
    pub scrape_every: u64,
    /// Announces outstanding per connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Pause between one connection's announces (0: as soon as the reply arrives).
    #[arg(long, default_value = "0", value_parser = duration)]
    pub announce_interval: Duration,
    /// An announce without a reply after this long counts as dropped.
    #[arg(long, default_value = "2", value_parser = duration)]
    pub reply_timeout: Duration,
    /// SDP size per offer/answer in bytes (0: the ~750-byte realistic template).
    #[arg(long, default_value_t = 0)]
    pub sdp_bytes: usize,
    /// Seed of the info_hashes and the connections' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Source addresses 127.0.0.1..=127.0.0.N (0: one per 20000 connections).
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// The tracker's pid, for RSS and CPU (default: found by the URL's port).
    #[arg(long)]
    pub tracker_pid: Option<u32>,
    /// The tracker's /stats.json (http://, loopback).
    #[arg(long)]
    pub stats_url: Option<String>,
    /// Runtime worker threads of the load generator (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// WebSocket read buffer per client connection, bytes.
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Progress lines on stderr.
    #[arg(long)]
    pub progress: bool,
    /// Idle: print `ready N` on stdout once the connections are open (for scripts).
    #[arg(long)]
    pub ready_line: bool,
}

impl TrackerArgs {
    /// The bench configuration these options ask for.
    pub fn config(&self) -> BenchConfig {
        BenchConfig {
            url: self.url.clone(),
            insecure: self.insecure,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            mode: if self.idle { Mode::Idle } else { Mode::Load },
            connections: self.connections,
            duration: self.duration,
            warmup: self.warmup,
            connect_timeout: self.connect_timeout,
            connect_phase: self.connect_phase,
            connect_concurrency: self.connect_concurrency,
            offers: self.offers,
            hashes: self.hashes,
            zipf: self.zipf,
            swarms_per_conn: self.swarms_per_conn,
            seeder_ratio: self.seeders,
            answer_ratio: self.answer_ratio,
            scrape_every: self.scrape_every,
            in_flight: self.in_flight,
            announce_interval: self.announce_interval,
            reply_timeout: self.reply_timeout,
            sdp_bytes: self.sdp_bytes,
            seed: self.seed,
            sources: self.sources,
            tracker_pid: self.tracker_pid,
            stats_url: self.stats_url.clone(),
            threads: self.threads,
            read_buffer: self.read_buffer,
            progress: self.progress,
            ready_line: self.ready_line,
        }
    }
}

/// Runs `bench tracker`; returns the exit code (0 done, 2 bad options, 3 failed).
pub fn main(args: &TrackerArgs) -> i32 {
    use std::io::Write;
    match super::run(&args.config()) {
        Ok(r) => {
            let _ = std::io::stdout().write_all(r.text().as_bytes());
            if let Some(p) = &args.json {
                let text = serde_json::to_string_pretty(&r.json()).unwrap_or_default();
                if let Err(e) = std::fs::write(p, text + "\n") {
                    eprintln!("error: cannot write {}: {e}", p.display());
                    return 3;
                }
            }
            0
        }
        Err(LoadError::Invalid(e)) => {
            eprintln!("error: {e}");
            2
        }
        Err(LoadError::Runtime(e)) => {
            eprintln!("error: {e}");
            3
        }
    }
}
