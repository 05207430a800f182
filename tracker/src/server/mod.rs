//! The IO shell: listeners, TLS, HTTP routes, WebSocket connections, timers and signals around
//! the sans-IO [`TrackerCore`](crate::swarm::TrackerCore).
//!
//! Embedding (tests, the harness) starts a tracker on port 0 and reads its address back:
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use ghostmesh_tracker::{Config, Tracker};
//! let cfg = Config { listen: "127.0.0.1:0".into(), ..Config::default() };
//! let tracker = Tracker::start(cfg).await?;
//! println!("clients connect to {}", tracker.ws_url());
//! tracker.shutdown().await;
//! # Ok(()) }
//! ```

mod conn;
mod http;
mod lean_io;
pub mod queue;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{AccessList, AccessMode};
use crate::config::{Config, secs};
use crate::metrics::{Drop, Metrics, resident_memory_bytes};
use crate::swarm::{ConnId, CoreStats, Outgoing, TrackerCore};
use crate::tls::ReloadableTls;
use crate::wire::{DecodeError, OutMessage, Request};

pub(crate) use conn::ConnHandle;

/// The core and its RNG, behind one lock. Decoding and encoding happen outside it.
#[derive(Debug)]
struct CoreState {
    core: TrackerCore,
    rng: StdRng,
}

/// State shared by every task of one tracker.
#[derive(Debug)]
pub(crate) struct Shared {
    cfg: Config,
    core: Mutex<CoreState>,
    conns: DashMap<ConnId, Arc<ConnHandle>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    ws_count: AtomicUsize,
    sockets: AtomicUsize,
    next_conn: AtomicU64,
    metrics: Metrics,
    tls: Option<ReloadableTls>,
    access_stamp: Mutex<Option<std::time::SystemTime>>,
    trusted: Vec<ipnet::IpNet>,
    started: Instant,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn lock_core(&self) -> std::sync::MutexGuard<'_, CoreState> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one client frame through the core and delivers what it produces.
    /// One client frame: `Ok` a text frame (UTF-8 already checked), `Err` a binary one.
    fn handle_frame(&self, conn: ConnId, frame: Result<&str, &[u8]>) {
        let mut out = Vec::new();
        let decoded = match frame {
            Ok(text) => crate::wire::decode_request_str(text),
            Err(bytes) => crate::wire::decode_request(bytes),
        };
        match decoded {
            Ok(req) => {
                self.metrics.request(match &req {
                    Request::Announce(_) => "announce",
                    Request::Answer(_) => "answer",
                    Request::Scrape(_) => "scrape",
                });
                let mut st = self.lock_core();
                let CoreState { core, rng } = &mut *st;
                core.handle(conn, req, Instant::now(), rng, &mut out);
            }
            Err(e) => {
                self.metrics.request("invalid");
                tracing::debug!(conn = conn.0, reason = %e.reason, "invalid request");
                out.push(Outgoing {
                    to: conn,
                    msg: OutMessage::from_decode_error(e),
                });
            }
        }
        self.deliver(out);
    }

    /// Sends an error reply to one connection.
    fn reply_error(&self, conn: ConnId, e: DecodeError) {
        self.deliver(vec![Outgoing {
            to: conn,
            msg: OutMessage::from_decode_error(e),
        }]);
    }

    fn deliver(&self, out: Vec<Outgoing>) {
        let mut evicted = Vec::new();
        for o in out {
            let Some(handle) = self.conns.get(&o.to).map(|h| h.clone()) else {
                self.metrics.dropped(Drop::RecipientGone);
                continue;
            };
            let is_offer = o.msg.is_offer();
            // An offer that cannot be queued is dropped before it is encoded: under load most
            // offer drops are to a full queue, and encoding them was wasted work.
            if is_offer && let Some(why) = handle.offer_refusal(o.msg.min_encoded_len()) {
                self.metrics.dropped(why);
                continue;
            }
            let mut kind = o.msg.kind();
            let mut text = o.msg.encode();
            if !is_offer && text.len() > self.cfg.out_queue_bytes {
                // A reply that could never fit the queue becomes a short error the client can
                // act on, instead of silence.
                let reason = format!(
                    "reply of {} bytes exceeds this tracker's out_queue_bytes ({})",
                    text.len(),
                    self.cfg.out_queue_bytes
                );
                text = o.msg.into_error(reason).encode();
                kind = "error";
            }
            match handle.push(text, is_offer, &mut evicted) {
                Ok(()) => self.metrics.response(kind),
                Err(why) => self.metrics.dropped(why),
            }
            for why in evicted.drain(..) {
                self.metrics.dropped(why);
            }
        }
    }

    fn conn_closed(&self, conn: ConnId) {
        self.conns.remove(&conn);
        self.lock_core().core.connection_closed(conn);
    }

    fn core_stats(&self) -> (CoreStats, crate::swarm::CoreCounters) {
        let st = self.lock_core();
        (st.core.stats(), st.core.counters())
    }

    fn observe(&self) {
        let (st, c) = self.core_stats();
        self.metrics
            .set_connections(self.ws_count.load(Ordering::Relaxed));
        self.metrics.observe_core(&st, &c, resident_memory_bytes());
    }

    /// Loads the access list file and installs it; `only_if_changed` skips unchanged files.
    fn reload_access(&self, only_if_changed: bool) -> Result<Option<usize>, String> {
        if self.cfg.access_list_mode == AccessMode::Off {
            return Ok(None);
        }
        let path = std::path::Path::new(&self.cfg.access_list_path);
        let stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        {
            let mut last = self.access_stamp.lock().unwrap_or_else(|e| e.into_inner());
            if only_if_changed && *last == stamp {
                return Ok(None);
            }
            *last = stamp;
        }
        let list = AccessList::load(self.cfg.access_list_mode, path)?;
        let n = list.len();
        let removed = self.lock_core().core.set_access_list(list);
        if removed > 0 {
            tracing::info!(removed, "swarms removed by the new access list");
        }
        Ok(Some(n))
    }

    fn reload_all(&self, only_if_changed: bool) -> ReloadReport {
        let tls = self.tls.as_ref().map(|t| t.reload(only_if_changed));
        let access = self.reload_access(only_if_changed);
        match &tls {
            Some(Ok(true)) => tracing::info!("TLS certificate reloaded"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in force")
            }
            _ => {}
        }
        match &access {
            Ok(Some(n)) => tracing::info!(hashes = n, "access list reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "access list reload failed; the previous list stays in force")
            }
            _ => {}
        }
        ReloadReport { tls, access }
    }
}

/// What a reload did.
#[derive(Debug)]
pub struct ReloadReport {
    /// TLS: `None` without TLS; `Ok(true)` when a new certificate is in force.
    pub tls: Option<Result<bool, String>>,
    /// Access list: `Ok(Some(n))` when a list of n hashes is in force.
    pub access: Result<Option<usize>, String>,
}

/// Live numbers of a running tracker.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Swarm core counts.
    pub core: CoreStats,
    /// Swarm core counters.
    pub counters: crate::swarm::CoreCounters,
    /// Drops by reason.
    pub drops: Vec<(&'static str, u64)>,
}

/// A running tracker. Dropping it does not stop it: call [`Tracker::shutdown`].
#[derive(Debug)]
pub struct Tracker {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Tracker {
    /// Binds the listeners and starts serving. Fails on a bad config, an address in use or
    /// unusable TLS files.
    pub async fn start(cfg: Config) -> Result<Tracker, String> {
        Self::start_with_rng(cfg, StdRng::from_rng(&mut rand::rng())).await
    }

    /// Like [`Tracker::start`] with a given RNG (for reproducible peer choice in tests).
    pub async fn start_with_rng(cfg: Config, rng: StdRng) -> Result<Tracker, String> {
        cfg.validate()?;
        let listen = cfg.listen_addr()?;
        let metrics_listen = cfg.metrics_addr()?;
        let tls = match cfg.tls_files() {
            Some((c, k)) => Some(ReloadableTls::new(c, k)?),
            None => None,
        };
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let metrics_listener = match metrics_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("cannot listen on {a}: {e}"))?,
            ),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
            None => None,
        };
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            core: Mutex::new(CoreState {
                core: TrackerCore::new(cfg.core()),
                rng,
            }),
            conns: DashMap::new(),
            per_ip: Mutex::new(HashMap::new()),
            ws_count: AtomicUsize::new(0),
            sockets: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            metrics: Metrics::new(),
            tls,
            access_stamp: Mutex::new(None),
            trusted: cfg.trusted_proxy_nets()?,
            started: Instant::now(),
            shutdown,
            cfg,
        });
        shared.reload_access(false)?;
        let mut tasks = vec![tokio::spawn(http::accept_loop(
            shared.clone(),
            listener,
            metrics_addr.is_none(),
            true,
        ))];
        if let Some(l) = metrics_listener {
            tasks.push(tokio::spawn(http::accept_loop(
                shared.clone(),
                l,
                true,
                false,
            )));
        }
        tasks.push(tokio::spawn(sweeper(shared.clone())));
        if shared.cfg.reload_interval_secs > 0.0 {
            tasks.push(tokio::spawn(file_watcher(shared.clone())));
        }
        tracing::info!(
            addr = %local_addr,
            tls = shared.tls.is_some(),
            metrics = %metrics_addr.map_or("same listener".to_string(), |a| a.to_string()),
            "tracker listening"
        );
        Ok(Tracker {
            shared,
            local_addr,
            metrics_addr,
            tasks,
        })
    }

    /// The address WebSocket clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The separate stats/metrics address, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `ws://` or `wss://` URL of the tracker (127.0.0.1 when bound to 0.0.0.0, [::1] for [::]).
    pub fn ws_url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}", display_addr(self.local_addr))
    }

    /// `http://` base URL of /stats.json and /metrics.
    pub fn http_url(&self) -> String {
        match self.metrics_addr {
            Some(a) => format!("http://{}", display_addr(a)),
            None => {
                let scheme = if self.shared.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", display_addr(self.local_addr))
            }
        }
    }

    /// Re-reads the TLS files and the access list now (what SIGHUP does).
    pub fn reload(&self) -> ReloadReport {
        self.shared.reload_all(false)
    }

    /// Live numbers.
    pub fn snapshot(&self) -> Snapshot {
        let (core, counters) = self.shared.core_stats();
        Snapshot {
            connections: self.shared.ws_count.load(Ordering::Relaxed),
            core,
            counters,
            drops: Drop::ALL
                .iter()
                .map(|d| (d.as_str(), self.shared.metrics.drops(*d)))
                .collect(),
        }
    }

    /// The metrics registry (for tests and embedding).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops accepting, sends every connection a close frame (1001, going away) and waits up to
    /// `shutdown_grace_secs` for them to finish.
    pub async fn shutdown(self) {
        let grace = secs(self.shared.cfg.shutdown_grace_secs);
        let _ = self.shared.shutdown.send(true);
        // Every connection closes with 1001 after what is queued for it (one that registers as
        // this runs sees the flag instead).
        let open: Vec<Arc<ConnHandle>> = self
            .shared
            .conns
            .iter()
            .map(|e| e.value().clone())
            .collect();
        for h in open {
            h.shutdown();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.ws_count.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.shared.ws_count.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                connections = left,
                "grace period over; dropping remaining connections"
            );
        }
        for t in self.tasks {
            t.abort();
        }
        tracing::info!("tracker stopped");
    }
}

fn display_addr(a: SocketAddr) -> String {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => format!("127.0.0.1:{}", a.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[::1]:{}", a.port()),
        _ => a.to_string(),
    }
}

async fn sweeper(shared: Arc<Shared>) {
    let every = secs(shared.cfg.sweep_interval_secs);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let removed = shared.lock_core().core.sweep(Instant::now());
        if removed > 0 {
            tracing::debug!(removed, "silent peers expired");
        }
    }
}

async fn file_watcher(shared: Arc<Shared>) {
    let every = secs(shared.cfg.reload_interval_secs);
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        shared.reload_all(true);
    }
}
