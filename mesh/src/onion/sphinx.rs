//! Sphinx-style layered packets (issue 5, layered mode), sans-IO: bytes in, bytes out; the
//! caller passes the RNG and the clock.
//!
//! A sender picks a route `[relay, ..., destination]` of peers whose static X25519 onion keys it
//! knows ([`NodeKeys::public`]) and calls [`create`]. Each peer on the way calls [`process`]
//! with its own keys and replay cache: a relay learns only the next hop and how long to hold
//! the packet ([`Processed::Forward`]); the destination gets the payload
//! ([`Processed::Deliver`]), and, if the sender attached one, a [`ReplyBlock`] to answer
//! through without learning who the sender is ([`use_reply_block`]). The reply travels the
//! return route the sender chose and arrives at the sender as [`Processed::Reply`]; the sender
//! reads it with the [`ReplyKeys`] it kept ([`open_reply`]).
//!
//! ```
//! use ghostmesh::onion::sphinx::{self, Hop, NodeKeys, Processed, ReplayCache, SphinxParams};
//! use rand::SeedableRng;
//! use std::time::{Duration, Instant};
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let params = SphinxParams::default();
//! let (relay, dest) = (NodeKeys::generate(&mut rng), NodeKeys::generate(&mut rng));
//! let route = [
//!     Hop { id: "11".repeat(20), public: relay.public() },
//!     Hop { id: "22".repeat(20), public: dest.public() },
//! ];
//! let (first, packet) = sphinx::create(&mut rng, &params, &route, b"hello", None).unwrap();
//! assert_eq!((first.as_str(), packet.len()), (route[0].id.as_str(), sphinx::packet_len(&params)));
//!
//! let mut cache = ReplayCache::new(1024, Duration::from_secs(3600));
//! let now = Instant::now();
//! let Ok(Processed::Forward { next, packet, .. }) = sphinx::process(&params, &relay, &packet, &mut cache, now)
//! else { panic!() };
//! assert_eq!(next, route[1].id);
//! let mut cache = ReplayCache::new(1024, Duration::from_secs(3600));
//! let Ok(Processed::Deliver { payload, reply }) = sphinx::process(&params, &dest, &packet, &mut cache, now)
//! else { panic!() };
//! assert_eq!((payload.as_slice(), reply.is_none()), (&b"hello"[..], true));
//! ```
//!
//! # Packet layout (every field fixed; defaults `max_hops = 8`, `payload_bytes = 4096`)
//!
//! | field | bytes | |
//! |---|---|---|
//! | version | 1 | `1`; other values are dropped ([`SphinxError::BadVersion`]) |
//! | alpha | 32 | the X25519 group element, blinded at every hop |
//! | beta | `max_hops` x 57 = 456 | encrypted routing information |
//! | gamma | 16 | HMAC-SHA256(mac key, version \|\| beta), truncated |
//! | body | 12 + 5 + 557 + `payload_bytes` + 16 = 4686 | layered payload |
//!
//! [`packet_len`] = 505 + 4686 = **5191 bytes** with the defaults, at every hop. The mesh uses
//! `max_hops = 9` and three payload sizes
//! ([`PACKET_CLASSES`](crate::relay::layered::PACKET_CLASSES)): 5,305, 33,977 and 246,969
//! bytes; a reply block serves every payload size of one `max_hops`.
//!
//! One hop's routing information (57 bytes, decrypted): `kind` (1: relay, 2: deliver,
//! 3: reply; bit 0x80 = a payload digest follows) \|\| id (20: next hop, or a reply-block id
//! for kind 3) \|\| delay (4, microseconds, big-endian) \|\| payload digest (16) \|\| next MAC
//! (16). The body, at the destination (or after [`open_reply`]), is `nonce (12) ||
//! AES-256-GCM(flags (1) || length (4) || reply block (557, zeros if none) || payload
//! (payload_bytes, zero padded)) || tag (16)`; every hop adds (removes) one AES-256-CTR layer.
//!
//! # Cryptography
//!
//! * Key agreement as Sphinx: the sender draws `x`; `alpha_0 = X25519(x, 9)`; hop `i` computes
//!   `s_i = X25519(sk_i, alpha_i)` and forwards `alpha_{i+1} = X25519(b_i, alpha_i)`; the sender
//!   computes the same `s_i` as `X25519(b_{i-1}, ... X25519(b_0, X25519(x, pk_i)))`.
//! * `HKDF-SHA256(salt = label, ikm = s_i, info = label || alpha_i)` gives six separate
//!   keys: header stream, header MAC, payload layer, blinding scalar `b_i`, end-to-end AEAD key,
//!   replay tag.
//! * The MAC is checked first (constant time), before anything is decrypted or remembered.
//! * Fixed length: hop `i` decrypts `beta || 0^57` with its stream, takes the first 57 bytes
//!   and forwards the rest; the sender precomputes the Sphinx filler so that the MACs of later
//!   hops still verify, and fills unused routing bytes with random bytes, so neither the
//!   length nor the routing bytes tell a hop its position or the route length.
//!
//! # Tampering
//!
//! * Header (version, alpha, beta, gamma): the next hop drops it: `BadVersion`, `BadMac` (or
//!   `BadKey` for an alpha that is a low-order point).
//! * Payload of a forward packet: the sender knows the body every hop will receive, so it puts
//!   a 16-byte digest of it in that hop's (MAC-protected) routing information; the next hop
//!   drops a modified body with [`SphinxError::PayloadTampered`]. This defeats the tagging
//!   attack of malleable stream-cipher payloads at the first honest hop, instead of at the
//!   destination. Cost: the digest flag tells a relay whether it carries a forward packet or a
//!   reply, which plain Sphinx hides (see below).
//! * Payload of a reply: the reply block is made before the payload exists, so return relays
//!   cannot check it; the replier seals the payload with AES-256-GCM under the block's key and
//!   [`open_reply`] at the sender drops a modified reply with `PayloadTampered`.
//!
//! # Replay
//!
//! Every hop derives a 16-byte replay tag from its shared secret. A packet whose tag is in the
//! [`ReplayCache`] is dropped ([`SphinxError::Replay`]); a packet is remembered only once it
//! has passed every check. The cache is bounded and, when full, refuses new packets
//! ([`SphinxError::ReplayCacheFull`]) rather than forget a tag a replay could then reuse. A
//! cache belongs to one onion key: [`crate::onion::keyring::KeyRing`] rotates keys and drops
//! a key's cache with the key, after which a replay of an old packet fails the MAC.
//!
//! # Loops and bounds
//!
//! [`create`] and [`create_reply_block`] refuse routes longer than `max_hops`, empty routes,
//! malformed ids or keys, and routes that name a peer twice ([`SphinxError::RouteLoop`]).
//! A relay cannot see the route, so the shell also drops a `Forward` whose `next` is itself or
//! a peer it cannot reach, with its own counters. Every error has a stable
//! [`SphinxError::reason`] for counters.

use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;

use super::crypto::{self, AEAD_TAG_LEN, HopKeys, KEY_LEN, NONCE_LEN, TAG_LEN};
pub use super::replay::ReplayCache;

/// The packet format version (first byte of every packet).
pub const VERSION: u8 = 1;
/// The largest `max_hops` accepted in [`SphinxParams`].
pub const MAX_HOPS_LIMIT: usize = 32;
/// The largest `payload_bytes` accepted in [`SphinxParams`].
pub const MAX_PAYLOAD_LIMIT: usize = 1 << 20;
/// The longest per-hop delay a sender draws: delays follow an exponential distribution
/// truncated here, so relays can refuse longer holds (a relay that held packets for the
/// 71 minutes the 4-byte field allows could be made to hoard them).
pub const MAX_HOP_DELAY: Duration = Duration::from_secs(60);
/// Bytes of routing information per hop.
pub const HOP_INFO_LEN: usize = 1 + ID_LEN + 4 + TAG_LEN + TAG_LEN;

const ID_LEN: usize = 20;
const KIND_RELAY: u8 = 1;
const KIND_DELIVER: u8 = 2;
const KIND_REPLY: u8 = 3;
const FLAG_DIGEST: u8 = 0x80;
const INNER_HAS_REPLY: u8 = 1;

/// The geometry every peer of a network must share: it fixes [`packet_len`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SphinxParams {
    /// The longest route (relays and destination), 1 to [`MAX_HOPS_LIMIT`]. Default 8.
    pub max_hops: usize,
    /// Payload capacity in bytes (a reply block travels beside it, not in it), 1 to
    /// [`MAX_PAYLOAD_LIMIT`]. Default 4096.
    pub payload_bytes: usize,
}

impl Default for SphinxParams {
    fn default() -> Self {
        SphinxParams {
            max_hops: 8,
            payload_bytes: 4096,
        }
    }
}

impl SphinxParams {
    fn check(&self) -> Result<(), SphinxError> {
        if (1..=MAX_HOPS_LIMIT).contains(&self.max_hops)
            && (1..=MAX_PAYLOAD_LIMIT).contains(&self.payload_bytes)
        {
            Ok(())
        } else {
            Err(SphinxError::BadParams)
        }
    }
}

/// Header bytes: version, alpha, routing information, MAC.
pub const fn header_len(params: &SphinxParams) -> usize {
    1 + KEY_LEN + params.max_hops * HOP_INFO_LEN + TAG_LEN
}

/// Bytes of a serialised [`ReplyBlock`]: first hop id, header, key.
pub const fn reply_block_len(params: &SphinxParams) -> usize {
    ID_LEN + header_len(params) + KEY_LEN
}

const fn inner_len(params: &SphinxParams) -> usize {
    1 + 4 + reply_block_len(params) + params.payload_bytes
}

/// Body bytes: nonce, sealed inner payload, AEAD tag.
pub const fn body_len(params: &SphinxParams) -> usize {
    NONCE_LEN + inner_len(params) + AEAD_TAG_LEN
}

/// The one length of every packet, forward or reply, at every hop (bytes on the wire per hop).
pub const fn packet_len(params: &SphinxParams) -> usize {
    header_len(params) + body_len(params)
}

/// Why a packet was refused or dropped. Each variant is a distinct, countable reason
/// ([`SphinxError::reason`]); nothing here panics on network bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SphinxError {
    /// Params out of range (`max_hops` 1..=32, `payload_bytes` 1..=1 MiB).
    BadParams,
    /// The packet (or reply body, or serialised reply block) has the wrong length.
    BadLength {
        /// The only accepted length.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// Unknown format version.
    BadVersion(u8),
    /// `alpha` is not a usable X25519 point (low order).
    BadKey,
    /// The header MAC does not verify: the header was modified, or the packet is not for us.
    BadMac,
    /// This hop has already processed this packet.
    Replay,
    /// The replay cache is full: the packet cannot be remembered, so it is not processed
    /// (a flood must not push older tags out of the cache).
    ReplayCacheFull,
    /// The routing information decrypted to something undecodable (only a sender bug or a
    /// forged MAC can cause it).
    BadRouting,
    /// The payload was modified on the way (digest or AEAD check failed).
    PayloadTampered,
    /// The decrypted payload is malformed (length field, reply block).
    BadPayload,
    /// The route is longer than `max_hops`.
    TooManyHops {
        /// Hops in the route.
        hops: usize,
        /// The limit.
        max: usize,
    },
    /// The route is empty.
    EmptyRoute,
    /// A hop id is not 40 lowercase hex characters.
    BadHopId(String),
    /// A hop's public key is not a usable X25519 key.
    BadHopKey(String),
    /// The route names this peer more than once (a loop).
    RouteLoop(String),
    /// The payload does not fit.
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Capacity (`payload_bytes`).
        max: usize,
    },
    /// The crypto library failed (should not happen).
    Crypto,
}

impl SphinxError {
    /// A stable, short name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SphinxError::BadParams => "bad_params",
            SphinxError::BadLength { .. } => "bad_length",
            SphinxError::BadVersion(_) => "bad_version",
            SphinxError::BadKey => "bad_key",
            SphinxError::BadMac => "bad_mac",
            SphinxError::Replay => "replay",
            SphinxError::ReplayCacheFull => "replay_cache_full",
            SphinxError::BadRouting => "bad_routing",
            SphinxError::PayloadTampered => "payload_tampered",
            SphinxError::BadPayload => "bad_payload",
            SphinxError::TooManyHops { .. } => "too_many_hops",
            SphinxError::EmptyRoute => "empty_route",
            SphinxError::BadHopId(_) => "bad_hop_id",
            SphinxError::BadHopKey(_) => "bad_hop_key",
            SphinxError::RouteLoop(_) => "route_loop",
            SphinxError::PayloadTooLarge { .. } => "payload_too_large",
            SphinxError::Crypto => "crypto",
        }
    }
}

impl fmt::Display for SphinxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SphinxError::BadParams => write!(f, "sphinx parameters out of range"),
            SphinxError::BadLength { expected, got } => {
                write!(f, "bad packet length {got} (expected {expected})")
            }
            SphinxError::BadVersion(v) => write!(f, "unknown packet version {v}"),
            SphinxError::BadKey => write!(f, "packet group element is not a usable X25519 point"),
            SphinxError::BadMac => write!(f, "header MAC does not verify (tampered or not ours)"),
            SphinxError::Replay => write!(f, "replayed packet"),
            SphinxError::ReplayCacheFull => write!(f, "replay cache full"),
            SphinxError::BadRouting => write!(f, "undecodable routing information"),
            SphinxError::PayloadTampered => write!(f, "payload modified in transit"),
            SphinxError::BadPayload => write!(f, "malformed payload"),
            SphinxError::TooManyHops { hops, max } => {
                write!(f, "route has {hops} hops, more than the maximum {max}")
            }
            SphinxError::EmptyRoute => write!(f, "empty route"),
            SphinxError::BadHopId(id) => write!(f, "bad hop id {id:?} (want 40 lowercase hex)"),
            SphinxError::BadHopKey(id) => write!(f, "unusable onion public key for hop {id}"),
            SphinxError::RouteLoop(id) => write!(f, "route visits {id} more than once"),
            SphinxError::PayloadTooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds capacity {max}")
            }
            SphinxError::Crypto => write!(f, "internal crypto failure"),
        }
    }
}

impl std::error::Error for SphinxError {}

/// A peer's static onion key pair (X25519).
#[derive(Clone)]
pub struct NodeKeys {
    secret: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeys")
            .field("public", &hex(&self.public))
            .finish_non_exhaustive()
    }
}

impl NodeKeys {
    /// A new key pair whose secret bytes come from `rng` (seeded RNG: same keys).
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let mut secret = [0u8; KEY_LEN];
            rng.fill_bytes(&mut secret);
            if let Some(keys) = Self::from_secret(secret) {
                return keys;
            }
        }
    }

    /// The key pair of a stored secret; `None` only if the crypto library rejects it.
    pub fn from_secret(secret: [u8; KEY_LEN]) -> Option<Self> {
        let public = crypto::x25519_base(&secret)?;
        Some(NodeKeys { secret, public })
    }

    /// The public key others put in [`Hop::public`].
    pub fn public(&self) -> [u8; KEY_LEN] {
        self.public
    }

    /// The secret bytes, to store the key pair.
    pub fn secret(&self) -> [u8; KEY_LEN] {
        self.secret
    }
}

/// One peer of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Peer id: 40 lowercase hex characters.
    pub id: String,
    /// Its onion public key ([`NodeKeys::public`]).
    pub public: [u8; KEY_LEN],
}

/// What [`process`] tells the caller to do with a packet that passed every check.
#[derive(Debug)]
pub enum Processed {
    /// Relay `packet` (same length as the one received) to `next` after `delay`.
    Forward {
        /// Next peer id (40 lowercase hex); the shell drops it if that is itself or unreachable.
        next: String,
        /// The packet for `next`.
        packet: Vec<u8>,
        /// How long to hold it first (sender's choice, exponential; zero without delays).
        delay: Duration,
    },
    /// This peer is the destination of a forward packet.
    Deliver {
        /// The sender's payload.
        payload: Vec<u8>,
        /// A block to answer through, if the sender attached one ([`use_reply_block`]).
        reply: Option<ReplyBlock>,
    },
    /// A reply through one of this peer's reply blocks arrived; read it with the
    /// [`ReplyKeys`] whose [`ReplyKeys::id`] is `id` ([`open_reply`]).
    Reply {
        /// The reply block's id.
        id: [u8; TAG_LEN],
        /// The still-encrypted body, for [`open_reply`].
        body: Vec<u8>,
    },
}

/// A single-use reply block (SURB): a prepared header for the route back to its maker, the
/// first hop of that route and a key to seal the reply with. Whoever holds it can send one
/// reply without learning the route or its end.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplyBlock {
    first_hop: [u8; ID_LEN],
    header: Vec<u8>,
    key: [u8; KEY_LEN],
}

impl fmt::Debug for ReplyBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyBlock")
            .field("first_hop", &hex(&self.first_hop))
            .finish_non_exhaustive()
    }
}

impl ReplyBlock {
    /// The peer to send the reply packet to.
    pub fn first_hop(&self) -> String {
        hex(&self.first_hop)
    }

    /// Serialised form ([`reply_block_len`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ID_LEN + self.header.len() + KEY_LEN);
        out.extend_from_slice(&self.first_hop);
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.key);
        out
    }

    /// Parses [`ReplyBlock::to_bytes`].
    pub fn from_bytes(params: &SphinxParams, bytes: &[u8]) -> Result<Self, SphinxError> {
        params.check()?;
        let expected = reply_block_len(params);
        if bytes.len() != expected {
            return Err(SphinxError::BadLength {
                expected,
                got: bytes.len(),
            });
        }
        let (first, rest) = bytes.split_at(ID_LEN);
        let (header, key) = rest.split_at(header_len(params));
        if header[0] != VERSION {
            return Err(SphinxError::BadVersion(header[0]));
        }
        Ok(ReplyBlock {
            first_hop: first.try_into().map_err(|_| SphinxError::BadPayload)?,
            header: header.to_vec(),
            key: key.try_into().map_err(|_| SphinxError::BadPayload)?,
        })
    }
}

/// What the maker of a [`ReplyBlock`] keeps to read the reply: the block's id, its sealing key
/// and the payload-layer keys of every hop of the return route.
#[derive(Clone)]
pub struct ReplyKeys {
    id: [u8; TAG_LEN],
    key: [u8; KEY_LEN],
    layers: Vec<[u8; KEY_LEN]>,
}

impl fmt::Debug for ReplyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyKeys")
            .field("id", &hex(&self.id))
            .finish_non_exhaustive()
    }
}

impl ReplyKeys {
    /// Matches [`Processed::Reply::id`].
    pub fn id(&self) -> [u8; TAG_LEN] {
        self.id
    }
}

// ---------------------------------------------------------------------------------------------
// Creating packets

/// Builds a packet carrying `payload` along `route` (relays..., destination last). With
/// `delays = Some(mean)`, every relay holds the packet for an exponential delay of that mean,
/// drawn here from `rng`. Returns the first hop's id and the packet ([`packet_len`] bytes).
pub fn create<R: Rng + ?Sized>(
    rng: &mut R,
    params: &SphinxParams,
    route: &[Hop],
    payload: &[u8],
    delays: Option<Duration>,
) -> Result<(String, Vec<u8>), SphinxError> {
    create_inner(rng, params, route, payload, delays, None)
}

/// [`create`], with a reply block (from [`create_reply_block`]) sealed inside the payload
/// layer for the destination to answer through.
pub fn create_with_reply<R: Rng + ?Sized>(
    rng: &mut R,
    params: &SphinxParams,
    route: &[Hop],
    payload: &[u8],
    delays: Option<Duration>,
    reply: &ReplyBlock,
) -> Result<(String, Vec<u8>), SphinxError> {
    create_inner(rng, params, route, payload, delays, Some(reply))
}

/// Makes a reply block for `route_back` (relays..., this sender last) and the keys to read
/// the reply with. Put the block in a packet with [`create_with_reply`]; keep the keys.
pub fn create_reply_block<R: Rng + ?Sized>(
    rng: &mut R,
    params: &SphinxParams,
    route_back: &[Hop],
    delays: Option<Duration>,
) -> Result<(ReplyBlock, ReplyKeys), SphinxError> {
    params.check()?;
    let (ids, publics) = check_route(params, route_back)?;
    let (alpha0, keys) = derive_path(rng, route_back, &publics)?;
    let mut id = [0u8; TAG_LEN];
    rng.fill_bytes(&mut id);
    let n = ids.len();
    let specs: Vec<HopSpec> = (0..n)
        .map(|i| {
            if i + 1 < n {
                HopSpec {
                    kind: KIND_RELAY,
                    id: ids[i + 1],
                    delay_us: sample_delay_us(rng, delays),
                    digest: None,
                }
            } else {
                let mut rid = [0u8; ID_LEN];
                rid[..TAG_LEN].copy_from_slice(&id);
                HopSpec {
                    kind: KIND_REPLY,
                    id: rid,
                    delay_us: 0,
                    digest: None,
                }
            }
        })
        .collect();
    let header = build_header(rng, params, &alpha0, &keys, &specs)?;
    let mut key = [0u8; KEY_LEN];
    rng.fill_bytes(&mut key);
    let block = ReplyBlock {
        first_hop: ids[0],
        header,
        key,
    };
    let reply_keys = ReplyKeys {
        id,
        key,
        // every hop's layer, the maker's own included: process() removed it at the maker
        layers: keys.iter().map(|k| k.payload).collect(),
    };
    Ok((block, reply_keys))
}

/// The replier's side: a packet carrying `payload` through `block`. Returns the first hop's
/// id and the packet. The replier learns neither the route nor who receives it.
pub fn use_reply_block<R: Rng + ?Sized>(
    rng: &mut R,
    params: &SphinxParams,
    block: &ReplyBlock,
    payload: &[u8],
) -> Result<(String, Vec<u8>), SphinxError> {
    params.check()?;
    if block.header.len() != header_len(params) {
        return Err(SphinxError::BadLength {
            expected: header_len(params),
            got: block.header.len(),
        });
    }
    let body = seal_body(rng, params, &block.key, payload, None)?;
    let mut packet = Vec::with_capacity(packet_len(params));
    packet.extend_from_slice(&block.header);
    packet.extend_from_slice(&body);
    Ok((hex(&block.first_hop), packet))
}

/// The sender's side: reads a reply's `body` ([`Processed::Reply`]) with the keys of the
/// block it went through. A reply modified on the way gives `PayloadTampered`.
pub fn open_reply(
    params: &SphinxParams,
    keys: &ReplyKeys,
    body: &[u8],
) -> Result<Vec<u8>, SphinxError> {
    params.check()?;
    if body.len() != body_len(params) {
        return Err(SphinxError::BadLength {
            expected: body_len(params),
            got: body.len(),
        });
    }
    let mut body = body.to_vec();
    for layer in &keys.layers {
        crypto::xor_stream(layer, &mut body).ok_or(SphinxError::Crypto)?;
    }
    let (payload, _) = open_body(params, &keys.key, &mut body)?;
    Ok(payload)
}

struct HopSpec {
    kind: u8,
    id: [u8; ID_LEN],
    delay_us: u32,
    digest: Option<[u8; TAG_LEN]>,
}

fn create_inner<R: Rng + ?Sized>(
    rng: &mut R,
    params: &SphinxParams,
    route: &[Hop],
    payload: &[u8],
    delays: Option<Duration>,
    reply: Option<&ReplyBlock>,
) -> Result<(String, Vec<u8>), SphinxError> {
    params.check()?;
    let (ids, publics) = check_route(params, route)?;
    if let Some(block) = reply
        && block.header.len() != header_len(params)
    {
        return Err(SphinxError::BadLength {
            expected: header_len(params),
            got: block.header.len(),
        });
    }
    let (alpha0, keys) = derive_path(rng, route, &publics)?;
    let n = ids.len();
    // The body each hop receives, from the destination outwards.
    let mut bodies = vec![Vec::new(); n];
    let mut body = seal_body(rng, params, &keys[n - 1].e2e, payload, reply)?;
    for i in (0..n).rev() {
        crypto::xor_stream(&keys[i].payload, &mut body).ok_or(SphinxError::Crypto)?;
        bodies[i] = body.clone();
    }
    let mut specs = Vec::with_capacity(n);
    for (i, received) in bodies.iter().enumerate() {
        let digest = Some(crypto::digest16(received));
        specs.push(if i + 1 < n {
            HopSpec {
                kind: KIND_RELAY,
                id: ids[i + 1],
                delay_us: sample_delay_us(rng, delays),
                digest,
            }
        } else {
            HopSpec {
                kind: KIND_DELIVER,
                id: [0; ID_LEN],
                delay_us: 0,
                digest,
            }
        });
    }
    let header = build_header(rng, params, &alpha0, &keys, &specs)?;
    let mut packet = header;
    packet.extend_from_slice(&bodies[0]);
    debug_assert_eq!(packet.len(), packet_len(params));
    Ok((hex(&ids[0]), packet))
}

/// Validates a route: length, ids, keys, no peer twice.
#[allow(clippy::type_complexity)]
fn check_route(
    params: &SphinxParams,
    route: &[Hop],
) -> Result<(Vec<[u8; ID_LEN]>, Vec<[u8; KEY_LEN]>), SphinxError> {
    if route.is_empty() {
        return Err(SphinxError::EmptyRoute);
    }
    if route.len() > params.max_hops {
        return Err(SphinxError::TooManyHops {
            hops: route.len(),
            max: params.max_hops,
        });
    }
    let mut ids = Vec::with_capacity(route.len());
    for hop in route {
        let id = parse_id(&hop.id).ok_or_else(|| SphinxError::BadHopId(hop.id.clone()))?;
        if ids.contains(&id) {
            return Err(SphinxError::RouteLoop(hop.id.clone()));
        }
        ids.push(id);
    }
    Ok((ids, route.iter().map(|h| h.public).collect()))
}

/// Draws the packet's ephemeral key and computes every hop's keys as that hop will.
fn derive_path<R: Rng + ?Sized>(
    rng: &mut R,
    route: &[Hop],
    publics: &[[u8; KEY_LEN]],
) -> Result<([u8; KEY_LEN], Vec<HopKeys>), SphinxError> {
    // A scalar whose public point is unusable is astronomically unlikely; retry rather than fail.
    let (x, alpha0) = loop {
        let mut x = [0u8; KEY_LEN];
        rng.fill_bytes(&mut x);
        if let Some(a) = crypto::x25519_base(&x) {
            break (x, a);
        }
    };
    let mut keys: Vec<HopKeys> = Vec::with_capacity(publics.len());
    let mut alpha = alpha0;
    for (i, public) in publics.iter().enumerate() {
        let bad = || SphinxError::BadHopKey(route[i].id.clone());
        let mut s = crypto::x25519(&x, public).ok_or_else(bad)?;
        for k in &keys {
            s = crypto::x25519(&k.blind, &s).ok_or_else(bad)?;
        }
        let hk = crypto::hop_keys(&alpha, &s).ok_or(SphinxError::Crypto)?;
        alpha = crypto::x25519(&hk.blind, &alpha).ok_or(SphinxError::Crypto)?;
        keys.push(hk);
    }
    Ok((alpha0, keys))
}

/// The header: version || alpha_0 || beta_0 || gamma_0, with the Sphinx filler.
fn build_header<R: Rng + ?Sized>(
    rng: &mut R,
    params: &SphinxParams,
    alpha0: &[u8; KEY_LEN],
    keys: &[HopKeys],
    specs: &[HopSpec],
) -> Result<Vec<u8>, SphinxError> {
    const H: usize = HOP_INFO_LEN;
    let n = specs.len();
    let l = params.max_hops * H;
    let mut streams = Vec::with_capacity(n);
    for k in keys {
        let mut s = vec![0u8; l + H];
        crypto::xor_stream(&k.header, &mut s).ok_or(SphinxError::Crypto)?;
        streams.push(s);
    }
    // filler: what hops 0..n-2 append to beta (their zero padding, decrypted), as hop n-1 sees it.
    let mut filler: Vec<u8> = Vec::with_capacity((n - 1) * H);
    for stream in &streams[..n - 1] {
        filler.extend_from_slice(&[0u8; H]);
        let start = l + H - filler.len();
        xor_into(&mut filler, &stream[start..]);
    }
    // Last hop: its info, random fill (hides the route length), then the filler.
    let mut beta = vec![0u8; l];
    let mut last_mac = [0u8; TAG_LEN];
    rng.fill_bytes(&mut last_mac);
    let last = &specs[n - 1];
    beta[..H].copy_from_slice(&encode_info(last, &last_mac));
    let open = l - (n - 1) * H;
    rng.fill_bytes(&mut beta[H..open]);
    xor_into(&mut beta[..open], &streams[n - 1][..open]);
    beta[open..].copy_from_slice(&filler);
    let mut gamma = crypto::mac16(&keys[n - 1].mac, &[&[VERSION], &beta]);
    for i in (0..n - 1).rev() {
        let mut next = vec![0u8; l];
        next[..H].copy_from_slice(&encode_info(&specs[i], &gamma));
        next[H..].copy_from_slice(&beta[..l - H]);
        xor_into(&mut next, &streams[i][..l]);
        beta = next;
        gamma = crypto::mac16(&keys[i].mac, &[&[VERSION], &beta]);
    }
    let mut header = Vec::with_capacity(header_len(params));
    header.push(VERSION);
    header.extend_from_slice(alpha0);
    header.extend_from_slice(&beta);
    header.extend_from_slice(&gamma);
    Ok(header)
}

fn encode_info(spec: &HopSpec, next_mac: &[u8; TAG_LEN]) -> [u8; HOP_INFO_LEN] {
    let mut out = [0u8; HOP_INFO_LEN];
    out[0] = spec.kind
        | if spec.digest.is_some() {
            FLAG_DIGEST
        } else {
            0
        };
    out[1..1 + ID_LEN].copy_from_slice(&spec.id);
    out[21..25].copy_from_slice(&spec.delay_us.to_be_bytes());
    if let Some(d) = &spec.digest {
        out[25..41].copy_from_slice(d);
    }
    out[41..57].copy_from_slice(next_mac);
    out
}

/// nonce || AES-256-GCM(key, flags || len || reply block || payload) || tag.
fn seal_body<R: Rng + ?Sized>(
    rng: &mut R,
    params: &SphinxParams,
    key: &[u8; KEY_LEN],
    payload: &[u8],
    reply: Option<&ReplyBlock>,
) -> Result<Vec<u8>, SphinxError> {
    if payload.len() > params.payload_bytes {
        return Err(SphinxError::PayloadTooLarge {
            len: payload.len(),
            max: params.payload_bytes,
        });
    }
    let rb = reply_block_len(params);
    let mut inner = vec![0u8; inner_len(params)];
    if let Some(block) = reply {
        inner[0] = INNER_HAS_REPLY;
        inner[5..5 + rb].copy_from_slice(&block.to_bytes());
    }
    let len = u32::try_from(payload.len()).map_err(|_| SphinxError::BadParams)?;
    inner[1..5].copy_from_slice(&len.to_be_bytes());
    inner[5 + rb..5 + rb + payload.len()].copy_from_slice(payload);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let tag = crypto::seal(key, nonce, &mut inner).ok_or(SphinxError::Crypto)?;
    let mut body = Vec::with_capacity(body_len(params));
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&inner);
    body.extend_from_slice(&tag);
    Ok(body)
}

/// Opens [`seal_body`]'s output (in place); errors are `PayloadTampered` or `BadPayload`.
fn open_body(
    params: &SphinxParams,
    key: &[u8; KEY_LEN],
    body: &mut [u8],
) -> Result<(Vec<u8>, Option<ReplyBlock>), SphinxError> {
    if body.len() != body_len(params) {
        return Err(SphinxError::BadLength {
            expected: body_len(params),
            got: body.len(),
        });
    }
    let (nonce, sealed) = body.split_at_mut(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| SphinxError::BadPayload)?;
    let n = crypto::open(key, nonce, sealed).ok_or(SphinxError::PayloadTampered)?;
    let inner = sealed.get(..n).ok_or(SphinxError::BadPayload)?;
    if inner.len() != inner_len(params) {
        return Err(SphinxError::BadPayload);
    }
    let rb = reply_block_len(params);
    let len_bytes: [u8; 4] = inner[1..5]
        .try_into()
        .map_err(|_| SphinxError::BadPayload)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > params.payload_bytes {
        return Err(SphinxError::BadPayload);
    }
    let reply = match inner[0] {
        0 => None,
        INNER_HAS_REPLY => Some(
            ReplyBlock::from_bytes(params, &inner[5..5 + rb])
                .map_err(|_| SphinxError::BadPayload)?,
        ),
        _ => return Err(SphinxError::BadPayload),
    };
    Ok((inner[5 + rb..5 + rb + len].to_vec(), reply))
}

// ---------------------------------------------------------------------------------------------
// Processing packets

/// One hop's work on a received packet: checks length, version and MAC (in that order, the MAC
/// before anything is decrypted), then the replay cache, the routing information and, for
/// forward packets, the payload digest; removes one layer and says what to do next. The
/// packet's replay tag is remembered only if every check passed. Never panics on any input.
pub fn process(
    params: &SphinxParams,
    keys: &NodeKeys,
    packet: &[u8],
    replay: &mut ReplayCache,
    now: Instant,
) -> Result<Processed, SphinxError> {
    const H: usize = HOP_INFO_LEN;
    params.check()?;
    let expected = packet_len(params);
    if packet.len() != expected {
        return Err(SphinxError::BadLength {
            expected,
            got: packet.len(),
        });
    }
    if packet[0] != VERSION {
        return Err(SphinxError::BadVersion(packet[0]));
    }
    let l = params.max_hops * H;
    let hl = header_len(params);
    let alpha: [u8; KEY_LEN] = packet[1..1 + KEY_LEN]
        .try_into()
        .map_err(|_| SphinxError::BadKey)?;
    let beta = &packet[1 + KEY_LEN..1 + KEY_LEN + l];
    let gamma = &packet[1 + KEY_LEN + l..hl];
    let body = &packet[hl..];

    let shared = crypto::x25519(&keys.secret, &alpha).ok_or(SphinxError::BadKey)?;
    let hk = crypto::hop_keys(&alpha, &shared).ok_or(SphinxError::Crypto)?;
    if !crypto::ct_eq(&crypto::mac16(&hk.mac, &[&[VERSION], beta]), gamma) {
        return Err(SphinxError::BadMac);
    }
    if replay.contains(&hk.replay, now) {
        return Err(SphinxError::Replay);
    }
    if replay.is_full(now) {
        return Err(SphinxError::ReplayCacheFull);
    }

    let mut routing = vec![0u8; l + H];
    routing[..l].copy_from_slice(beta);
    crypto::xor_stream(&hk.header, &mut routing).ok_or(SphinxError::Crypto)?;
    let info = &routing[..H];
    let flags = info[0];
    let kind = flags & !FLAG_DIGEST;
    if flags & FLAG_DIGEST != 0 && !crypto::ct_eq(&crypto::digest16(body), &info[25..41]) {
        return Err(SphinxError::PayloadTampered);
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&info[1..1 + ID_LEN]);
    let delay_us = u32::from_be_bytes(
        info[21..25]
            .try_into()
            .map_err(|_| SphinxError::BadRouting)?,
    );
    let mut next_mac = [0u8; TAG_LEN];
    next_mac.copy_from_slice(&info[41..57]);

    let mut body = body.to_vec();
    crypto::xor_stream(&hk.payload, &mut body).ok_or(SphinxError::Crypto)?;

    let out = match kind {
        KIND_RELAY => {
            let next_alpha = crypto::x25519(&hk.blind, &alpha).ok_or(SphinxError::BadKey)?;
            let mut packet = Vec::with_capacity(expected);
            packet.push(VERSION);
            packet.extend_from_slice(&next_alpha);
            packet.extend_from_slice(&routing[H..]);
            packet.extend_from_slice(&next_mac);
            packet.extend_from_slice(&body);
            Processed::Forward {
                next: hex(&id),
                packet,
                delay: Duration::from_micros(u64::from(delay_us)),
            }
        }
        KIND_DELIVER => {
            let (payload, reply) = open_body(params, &hk.e2e, &mut body)?;
            Processed::Deliver { payload, reply }
        }
        KIND_REPLY => {
            let mut rid = [0u8; TAG_LEN];
            rid.copy_from_slice(&id[..TAG_LEN]);
            Processed::Reply { id: rid, body }
        }
        _ => return Err(SphinxError::BadRouting),
    };
    if !replay.insert(hk.replay, now) {
        return Err(SphinxError::ReplayCacheFull);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// An exponential delay in microseconds with mean `mean`, truncated to [`MAX_HOP_DELAY`]
/// (inverse transform of the truncated distribution on 53 random bits, one draw); 0 without
/// delays.
fn sample_delay_us<R: Rng + ?Sized>(rng: &mut R, mean: Option<Duration>) -> u32 {
    let Some(mean) = mean else { return 0 };
    let (m, cap) = (mean.as_secs_f64(), MAX_HOP_DELAY.as_secs_f64());
    // u in (0, 1]; q = 1 - (1 - u) * p is uniform on (e^(-cap/m), 1], so -m ln q lies in
    // [0, cap). p = P(untruncated delay < cap) (1 for tiny means: plain exponential).
    let u = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let p = if m > 0.0 { -(-cap / m).exp_m1() } else { 1.0 };
    let us = -(-(1.0 - u) * p).ln_1p() * m * 1e6;
    us.clamp(0.0, cap * 1e6) as u32
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

fn parse_id(id: &str) -> Option<[u8; ID_LEN]> {
    let b = id.as_bytes();
    if b.len() != 2 * ID_LEN {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; ID_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
#[path = "sphinx_tests.rs"]
mod tests;
