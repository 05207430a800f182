//! Hidden services, compatible with GhostMesh (wire reference 4.7-4.8) and safer.
//!
//! Three roles, decided as GhostMesh decides them: a peer that registered a handler with
//! [`MeshHandle::handle_hidden_service`] is the **master** of that service; any other peer
//! that receives a request is an **entry** and forwards it, unchanged and unreadable (the
//! body is encrypted for the master), along a routed request to the master; a **client**
//! calls [`MeshHandle::request_hidden_service`] through one of its entry peers.
//!
//! The body is GhostMesh's hybrid envelope (AES-256-GCM, the key wrapped with RSA-OAEP
//! SHA-256; see [`crypto`]), the response is encrypted for the client's key (a temporary
//! 2048-bit pair per request unless one is configured), `fixed_packet_bytes` pads with
//! GhostMesh's exact rule, and an entry whose real route is shorter than the client's
//! `requestedHops` holds the response for a random `response_delay_ms` (delay padding).
//!
//! Beyond GhostMesh:
//! - **Key binding** (Rust clients, on by default): the client's AES key carries a tag over its
//!   public key and the request ids, which only the master can see; a master refuses a request
//!   whose `clientPublicKey` or ids were swapped. JavaScript peers are unaffected.
//! - **Replay cache** at the master (bounded; full means refuse, never evict a live entry).
//! - **No hop-count leak** when the entry reaches the master over layered (encrypted) routing:
//!   the response then tells only the simulated hop count, not the real one or the delay.
//! - **Errors reach the client**: an entry or master that cannot serve answers with an
//!   encrypted `hidden-service-error` (GhostMesh's entry stays silent and its client waits
//!   forever); every client request and `is_server` probe has a timeout.
//! - **Bounds**: requested hops capped (GhostMesh's are unbounded: a CPU and memory DoS at the
//!   entry), packet size, requests in flight, handler concurrency; every refusal counted in
//!   [`HiddenStats`].
//! - **Server reveal** answers only a challenge that is exactly `{"nonce": ...}`, so it is no
//!   longer a decryption oracle for captured request bodies.
//!
//! ```no_run
//! # async fn demo(master: ghostmesh::Mesh, client: ghostmesh::Mesh) -> Result<(), ghostmesh::MeshError> {
//! use ghostmesh::hidden::HiddenRequestOptions;
//! use ghostmesh::wire::Payload;
//! master.handle_hidden_service("echo", |payload: Payload, ctx| async move {
//!     let text = match payload {
//!         Payload::Text(t) => t,
//!         Payload::Json(v) => v.to_string(),
//!     };
//!     Ok(serde_json::json!({"echo": text, "request": ctx.request_id}).into())
//! });
//! let reply = client
//!     .request_hidden_service("echo", "hello".into(), HiddenRequestOptions::default())
//!     .await?;
//! println!("{:?} after {} simulated hops", reply.payload, reply.simulated_hops);
//! # Ok(()) }
//! ```
//!
//! [`MeshHandle::handle_hidden_service`]: crate::mesh::MeshHandle::handle_hidden_service
//! [`MeshHandle::request_hidden_service`]: crate::mesh::MeshHandle::request_hidden_service

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::mesh::PeerId;
use crate::relay::RouteOptions;
use crate::wire::Payload;

mod client;
pub mod crypto;
pub mod packet;
pub(crate) mod service;
pub mod state;

pub use self::crypto::{CryptoError, KeyPair, PublicKey};

/// GhostMesh's `hiddenService.role`; only server reveal reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenRole {
    /// Calls services.
    Client,
    /// Forwards requests to masters.
    Entry,
    /// Serves a service (and answers server-reveal challenges when `reveal_server` is on).
    Master,
}

/// Hidden-service settings (GhostMesh's `hiddenService` and `identity` options).
#[derive(Debug, Clone)]
pub struct HiddenServiceConfig {
    /// Client: entry peers to choose from (one linked at random).
    pub entry_peers: Vec<PeerId>,
    /// Entry: service name to master peer id.
    pub services: BTreeMap<String, PeerId>,
    /// Entry: the master of services not in `services`.
    pub master_peer_id: Option<PeerId>,
    /// Client: the default service name.
    pub service_name: Option<String>,
    /// Client: the master's public key (required to call a service or probe `is_server`).
    pub master_public_key: Option<PublicKey>,
    /// Master: the service key pair (required to serve). Client: a fixed key pair for
    /// responses instead of a temporary one per request.
    pub identity: Option<KeyPair>,
    /// GhostMesh's `role` (server reveal answers only as `Master`).
    pub role: Option<HiddenRole>,
    /// Entry: explicit relays toward the master (default: `requestedHops - 1` random ones).
    pub through: Vec<PeerId>,
    /// Client: hops to ask for. Default 3 (GhostMesh's `minHops`).
    pub min_hops: u64,
    /// Entry: delay range in ms when the real route is shorter than asked. Default
    /// `(1000, 5000)`.
    pub response_delay_ms: (u64, u64),
    /// Pad packets to this many UTF-16 units (GhostMesh's `fixedPacketBytes`); a peer with it
    /// set also refuses packets padded to another size. Default none.
    pub fixed_packet_bytes: Option<usize>,
    /// Master: answer server-reveal challenges. Default off.
    pub reveal_server: bool,
    /// Client: bind the client key to each request (only Rust masters check it; invisible to
    /// GhostMesh). Default on.
    pub bind_client_key: bool,
    /// Master: refuse requests without a binding (only Rust clients make them). Default off.
    pub require_bound_requests: bool,
    /// Entry: most hops a client may ask for (GhostMesh has no cap). Default 8.
    pub max_requested_hops: u64,
    /// Largest hidden-service packet accepted, in UTF-16 units of its JSON. Default 256 KiB.
    pub max_packet_bytes: usize,
    /// Requests handled at once by this peer (entry forwards plus master handlers); more are
    /// refused. Default 256.
    pub max_in_flight: usize,
    /// Master: how long served bodies are remembered against replays. Default 10 min.
    pub replay_window: Duration,
    /// Master: most bodies remembered; when full, new requests are refused. Default 65,536.
    pub max_replay_entries: usize,
}

impl Default for HiddenServiceConfig {
    fn default() -> Self {
        HiddenServiceConfig {
            entry_peers: Vec::new(),
            services: BTreeMap::new(),
            master_peer_id: None,
            service_name: None,
            master_public_key: None,
            identity: None,
            role: None,
            through: Vec::new(),
            min_hops: 3,
            response_delay_ms: (1000, 5000),
            fixed_packet_bytes: None,
            reveal_server: false,
            bind_client_key: true,
            require_bound_requests: false,
            max_requested_hops: 8,
            max_packet_bytes: 256 * 1024,
            max_in_flight: 256,
            replay_window: Duration::from_secs(600),
            max_replay_entries: 65_536,
        }
    }
}

/// Per-request options of [`request_hidden_service`](crate::mesh::MeshHandle::request_hidden_service).
#[derive(Debug, Clone, Default)]
pub struct HiddenRequestOptions {
    /// This entry instead of a random configured one.
    pub entry: Option<PeerId>,
    /// This master key instead of the configured one.
    pub master_public_key: Option<PublicKey>,
    /// Hops to ask for instead of `min_hops`.
    pub min_hops: Option<u64>,
    /// How long to wait. Default: the request timeout plus the largest response delay.
    pub timeout: Option<Duration>,
    /// Reach the entry through relays (GhostMesh's `onion` option) instead of directly.
    pub route: Option<RouteOptions>,
}

/// A service's answer, as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenReply {
    /// The decrypted payload.
    pub payload: Payload,
    /// The entry used.
    pub entry: PeerId,
    /// `realHops` as the entry told it (absent when it hid it).
    pub real_hops: Option<u64>,
    /// `simulatedHops` as the entry told it.
    pub simulated_hops: u64,
    /// `delayedMs` as the entry told it (absent when it hid it).
    pub delayed_ms: Option<u64>,
    /// The padded size of the response packet (UTF-16 units of its JSON).
    pub packet_len: usize,
}

/// What a master's handler learns about a request.
#[derive(Debug, Clone)]
pub struct HiddenContext {
    /// The request id.
    pub request_id: String,
    /// The service name.
    pub service: String,
    /// The request nonce.
    pub nonce: String,
    /// The peer it came from: the entry's routed origin, or the neighbour for a direct one.
    pub peer: PeerId,
    /// The client's public key.
    pub client_public_key: PublicKey,
    /// The client bound its key to this request (a Rust client); a JavaScript client's is not.
    pub bound: bool,
}

/// Why a hidden-service call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HiddenError {
    /// No configured entry peer is linked.
    NoEntry,
    /// No master public key configured or given.
    NoMasterKey,
    /// Keys or envelopes.
    Crypto(CryptoError),
    /// The entry or master answered with an error (`code`: `duplicate-request`,
    /// `unknown-service`, `master-unreachable`, `replay`, `decrypt-failed`, `key-swap`, ...).
    Remote {
        /// Machine-readable code.
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The response is not a valid answer to our request.
    BadResponse(String),
}

impl fmt::Display for HiddenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HiddenError::NoEntry => f.write_str("no configured entry peer is linked"),
            HiddenError::NoMasterKey => {
                f.write_str("no master public key (hidden_service.master_public_key)")
            }
            HiddenError::Crypto(e) => write!(f, "{e}"),
            HiddenError::Remote { code, message } => {
                write!(f, "hidden service error {code}: {message}")
            }
            HiddenError::BadResponse(e) => write!(f, "bad hidden-service response: {e}"),
        }
    }
}

/// Counters of this peer's hidden-service roles; `dropped` counts refusals by reason
/// (`malformed`, `too_large`, `bad_padding`, `unknown_service`, `duplicate`, `busy`,
/// `hops_capped`, `decrypt_failed`, `key_swap`, `unbound`, `replay`, `replay_cache_full`,
/// `no_identity`, `master_unreachable`, `bad_master_response`, `handler_error`, `queue_full`,
/// `reveal_refused`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HiddenStats {
    /// Requests a master served.
    pub served: u64,
    /// Requests an entry forwarded and answered.
    pub forwarded: u64,
    /// Responses an entry held back for delay padding.
    pub delayed: u64,
    /// Server-reveal challenges answered `ok`.
    pub revealed: u64,
    /// Refusals and drops by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl HiddenStats {
    pub(crate) fn count(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Drops for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }
}

/// A master's handler.
pub type HiddenHandler = Arc<
    dyn Fn(Payload, HiddenContext) -> Pin<Box<dyn Future<Output = Result<Payload, String>> + Send>>
        + Send
        + Sync,
>;

pub(crate) use self::service::{HiddenMsg, Shared};
