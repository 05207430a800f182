//! WebTorrent tracker messages on the wire.
//!
//! Ids (`info_hash`, `peer_id`, `offer_id`, `to_peer_id`) are "binary strings": 20 JSON characters,
//! one per byte, code points 0-255 (JavaScript's latin1 `hex2bin`). They are decoded strictly
//! (anything else is an error) and re-encoded exactly as `JSON.stringify` writes them, so our
//! frames match the reference server's byte for byte where the fields match.
//!
//! Requests are parsed in two steps: first into borrowed raw fields, then field by field, so an
//! error can name the field and still carry `action` and `info_hash` when those were readable.
//! `offer` and `answer` objects are opaque (Trystero encrypts its SDP): they are relayed as the
//! exact bytes the client sent.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A 20-byte identifier carried as a 20-character binary string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id20(pub [u8; 20]);

/// The swarm key: SHA-1 of the torrent info or, for P2PT/GhostMesh, of the identifier.
pub type InfoHash = Id20;
/// A peer's id inside one swarm.
pub type PeerId = Id20;
/// The id a client gives each of its offers.
pub type OfferId = Id20;

impl Id20 {
    /// Decodes a binary string: exactly 20 characters, each U+0000..=U+00FF.
    pub fn from_binary_str(s: &str) -> Result<Self, IdError> {
        let mut out = [0u8; 20];
        let mut n = 0usize;
        for ch in s.chars() {
            let cp = ch as u32;
            if cp > 0xFF {
                return Err(IdError::CodePoint(cp));
            }
            if n == 20 {
                return Err(IdError::Length(s.chars().count()));
            }
            out[n] = cp as u8;
            n += 1;
        }
        if n != 20 {
            return Err(IdError::Length(n));
        }
        Ok(Id20(out))
    }

    /// 20 random bytes from the caller's RNG (peer ids, offer ids).
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 20];
        rng.fill_bytes(&mut b);
        Id20(b)
    }

    /// The JSON string literal, escaped exactly as `JSON.stringify` escapes it.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(24);
        self.push_json(&mut s);
        s
    }

    /// Appends [`Id20::to_json`] to `s`.
    pub fn push_json(&self, s: &mut String) {
        push_id(s, self);
    }

    /// The binary-string form (one char per byte).
    pub fn to_binary_string(&self) -> String {
        self.0.iter().map(|&b| b as char).collect()
    }

    /// Parses 40 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Id20(out))
    }

    /// Lower-case hex, for logs and stats.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(40);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for Id20 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id20({})", self.to_hex())
    }
}

impl fmt::Display for Id20 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a binary string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// Not 20 characters.
    Length(usize),
    /// A character above U+00FF.
    CodePoint(u32),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Length(n) => write!(f, "expected 20 characters, got {n}"),
            IdError::CodePoint(cp) => {
                write!(
                    f,
                    "character U+{cp:04X} is above U+00FF (ids are one byte per character)"
                )
            }
        }
    }
}

impl Serialize for Id20 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_binary_string())
    }
}

impl<'de> Deserialize<'de> for Id20 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id20;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 20-character binary string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id20, E> {
                Id20::from_binary_str(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// What an announce says about the peer's state (`event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `started`
    Started,
    /// `stopped`: leave the swarm.
    Stopped,
    /// `completed`: the peer became a seeder.
    Completed,
    /// absent, `null`, `""`, `"update"` or `"empty"`: a periodic update.
    Update,
    /// `paused` (BEP 21 partial seed): treated as an update.
    Paused,
}

/// A relayed offer as received: its id and the opaque offer object.
#[derive(Debug)]
pub struct OfferIn {
    /// The offerer's id for this offer; echoed in the answer.
    pub offer_id: OfferId,
    /// The `offer` object exactly as sent.
    pub offer: Box<RawValue>,
}

/// An announce (`action: "announce"` without `answer`).
#[derive(Debug)]
pub struct Announce {
    /// Swarm.
    pub info_hash: InfoHash,
    /// Announcing peer.
    pub peer_id: PeerId,
    /// Event, see [`Event`].
    pub event: Event,
    /// Bytes left; `None` when missing, null, negative or not a number (unknown: a leecher).
    pub left: Option<f64>,
    /// Offers to relay (empty when `offers` is absent or null).
    pub offers: Vec<OfferIn>,
}

/// An answer to a relayed offer (`action: "announce"` with `answer`).
#[derive(Debug)]
pub struct Answer {
    /// Swarm.
    pub info_hash: InfoHash,
    /// The answering peer.
    pub peer_id: PeerId,
    /// The offerer, who gets the answer.
    pub to_peer_id: PeerId,
    /// The offer being answered.
    pub offer_id: OfferId,
    /// The `answer` object exactly as sent.
    pub answer: Box<RawValue>,
}

/// A scrape request.
#[derive(Debug)]
pub struct Scrape {
    /// `None` asks for every swarm (a full scrape).
    pub info_hashes: Option<Vec<InfoHash>>,
}

/// A decoded client message.
#[derive(Debug)]
pub enum Request {
    /// Announce (join, update, complete, stop; may carry offers).
    Announce(Announce),
    /// Answer to an offer.
    Answer(Answer),
    /// Scrape.
    Scrape(Scrape),
}

/// The `action` an error reply must carry so clients route it instead of tearing the socket down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyAction {
    /// `"announce"`
    Announce,
    /// `"scrape"`
    Scrape,
    /// Echo of an unknown action string.
    Other(String),
}

impl ReplyAction {
    fn as_str(&self) -> &str {
        match self {
            ReplyAction::Announce => "announce",
            ReplyAction::Scrape => "scrape",
            ReplyAction::Other(s) => s,
        }
    }
}

/// A request that could not be decoded, with whatever context could be read for the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// Action for the error reply (`announce` when unreadable: the reference client ignores
    /// announce replies without a known `info_hash`, but tears the socket down on a reply
    /// without `action`).
    pub action: ReplyAction,
    /// `info_hash` when it could be decoded.
    pub info_hash: Option<InfoHash>,
    /// Human-readable reason, sent as `failure reason`.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DecodeError {}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default)]
    action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    info_hash: Option<&'a RawValue>,
    #[serde(borrow, default)]
    peer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    left: Option<&'a RawValue>,
    #[serde(borrow, default)]
    offers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    answer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to_peer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    offer_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawOffer<'a> {
    #[serde(borrow, default)]
    offer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    offer: Option<&'a RawValue>,
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

/// Decodes one client frame's payload (a binary frame, or bytes of unknown encoding).
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => decode_request_str(text),
        Err(e) => Err(DecodeError {
            action: ReplyAction::Announce,
            info_hash: None,
            reason: format!("request is not valid JSON: not UTF-8 ({e})"),
        }),
    }
}

/// Decodes one client text frame. The text is already known to be UTF-8 (the WebSocket layer
/// checked it), so the parser does not check it again for every raw field.
pub fn decode_request_str(text: &str) -> Result<Request, DecodeError> {
    let unreadable = |reason: String| DecodeError {
        action: ReplyAction::Announce,
        info_hash: None,
        reason,
    };
    // serde would read a JSON array as a struct, field by field: only objects are requests.
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| b != b'{')
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        return Err(unreadable("invalid request: expected a JSON object".into()));
    }
    let raw: RawRequest<'_> = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) if e.is_data() => {
            // Valid JSON, wrong shape (not an object, or a duplicate key).
            return Err(unreadable(format!("invalid request: {e}")));
        }
        Err(e) => return Err(unreadable(format!("request is not valid JSON: {e}"))),
    };

    let action: String = match raw.action {
        None => return Err(unreadable("missing `action`".into())),
        Some(a) => serde_json::from_str(a.get())
            .map_err(|_| unreadable(format!("invalid `action`: {}", a.get())))?,
    };
    let reply_action = match action.as_str() {
        "announce" => ReplyAction::Announce,
        "scrape" => ReplyAction::Scrape,
        _ => {
            return Err(DecodeError {
                action: ReplyAction::Other(action.clone()),
                info_hash: None,
                reason: format!("invalid action in WS request: {action}"),
            });
        }
    };

    if reply_action == ReplyAction::Scrape {
        return decode_scrape(raw.info_hash);
    }

    let err = |info_hash: Option<InfoHash>, reason: String| DecodeError {
        action: ReplyAction::Announce,
        info_hash,
        reason,
    };
    let info_hash = id_field("info_hash", raw.info_hash).map_err(|r| err(None, r))?;
    let ih = Some(info_hash);
    let peer_id = id_field("peer_id", raw.peer_id).map_err(|r| err(ih, r))?;

    if !is_null(raw.answer) {
        let answer = object_field("answer", raw.answer).map_err(|r| err(ih, r))?;
        let to_peer_id = id_field("to_peer_id", raw.to_peer_id)
            .map_err(|r| err(ih, format!("{r} (required with `answer`)")))?;
        let offer_id = id_field("offer_id", raw.offer_id)
            .map_err(|r| err(ih, format!("{r} (required with `answer`)")))?;
        return Ok(Request::Answer(Answer {
            info_hash,
            peer_id,
            to_peer_id,
            offer_id,
            answer,
        }));
    }

    let event = decode_event(raw.event).map_err(|r| err(ih, r))?;
    let left = decode_left(raw.left).map_err(|r| err(ih, r))?;
    let offers = decode_offers(raw.offers).map_err(|r| err(ih, r))?;
    Ok(Request::Announce(Announce {
        info_hash,
        peer_id,
        event,
        left,
        offers,
    }))
}

fn id_field(name: &str, raw: Option<&RawValue>) -> Result<Id20, String> {
    let raw = raw.ok_or_else(|| format!("invalid {name}: missing"))?;
    let text = raw.get();
    // Fast path, no allocation: a well-formed id read straight from the literal. Anything else
    // (wrong length, a character above U+00FF, not a string) takes the general path below,
    // which also words the error.
    if let Some(id) = id_from_literal(text) {
        return Ok(id);
    }
    let s: String =
        serde_json::from_str(text).map_err(|_| format!("invalid {name}: not a string"))?;
    Id20::from_binary_str(&s).map_err(|e| format!("invalid {name}: {e}"))
}

/// Decodes a JSON string literal (valid JSON, as serde checked it) holding exactly 20
/// characters U+0000..=U+00FF, or `None` for anything else.
fn id_from_literal(text: &str) -> Option<Id20> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?.as_bytes();
    let mut out = [0u8; 20];
    let mut n = 0usize;
    let mut i = 0usize;
    while i < inner.len() {
        let b = match inner[i] {
            b'\\' => {
                let esc = *inner.get(i + 1)?;
                i += 2;
                match esc {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        let hex = std::str::from_utf8(inner.get(i..i + 4)?).ok()?;
                        i += 4;
                        u8::try_from(u16::from_str_radix(hex, 16).ok()?).ok()?
                    }
                    _ => return None,
                }
            }
            b if b < 0x80 => {
                i += 1;
                b
            }
            // U+0080..=U+00FF: two bytes, lead 0xC2 or 0xC3.
            lead @ (0xC2 | 0xC3) => {
                let cont = *inner.get(i + 1)?;
                i += 2;
                ((lead & 0x1F) << 6) | (cont & 0x3F)
            }
            _ => return None,
        };
        *out.get_mut(n)? = b;
        n += 1;
    }
    (n == 20).then_some(Id20(out))
}

fn object_field(name: &str, raw: Option<&RawValue>) -> Result<Box<RawValue>, String> {
    let raw = raw.ok_or_else(|| format!("invalid {name}: missing"))?;
    if !raw.get().starts_with('{') {
        return Err(format!("invalid {name}: must be a JSON object"));
    }
    Ok(raw.to_owned())
}

fn decode_event(raw: Option<&RawValue>) -> Result<Event, String> {
    if is_null(raw) {
        return Ok(Event::Update);
    }
    let raw = raw.map(RawValue::get).unwrap_or("null");
    let s: String = serde_json::from_str(raw).map_err(|_| format!("invalid event: {raw}"))?;
    Ok(match s.as_str() {
        "started" => Event::Started,
        "stopped" => Event::Stopped,
        "completed" => Event::Completed,
        "" | "update" | "empty" => Event::Update,
        "paused" => Event::Paused,
        _ => return Err(format!("invalid event: {s:?}")),
    })
}

/// `left` as clients really send it: a number (maybe negative or a float), null, missing, or
/// a numeric string. Negative means unknown (the Go client), like missing.
fn decode_left(raw: Option<&RawValue>) -> Result<Option<f64>, String> {
    if is_null(raw) {
        return Ok(None);
    }
    let raw = raw.map(RawValue::get).unwrap_or("null");
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|_| format!("invalid left: {raw}"))?;
    let n = match &v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
        Some(_) => Ok(None),
        None => Err(format!("invalid left: {raw} (expected a number)")),
    }
}

fn decode_offers(raw: Option<&RawValue>) -> Result<Vec<OfferIn>, String> {
    if is_null(raw) {
        return Ok(Vec::new());
    }
    let raw = raw.map(RawValue::get).unwrap_or("null");
    let list: Vec<RawOffer<'_>> = serde_json::from_str(raw)
        .map_err(|_| "invalid offers: expected an array of {offer_id, offer}".to_string())?;
    list.into_iter()
        .enumerate()
        .map(|(i, o)| {
            Ok(OfferIn {
                offer_id: id_field("offer_id", o.offer_id)
                    .map_err(|e| format!("offers[{i}]: {e}"))?,
                offer: object_field("offer", o.offer).map_err(|e| format!("offers[{i}]: {e}"))?,
            })
        })
        .collect()
}

fn decode_scrape(raw: Option<&RawValue>) -> Result<Request, DecodeError> {
    let err = |reason: String| DecodeError {
        action: ReplyAction::Scrape,
        info_hash: None,
        reason,
    };
    if is_null(raw) {
        return Ok(Request::Scrape(Scrape { info_hashes: None }));
    }
    let text = raw.map(RawValue::get).unwrap_or("null");
    let hashes = if text.starts_with('[') {
        let list: Vec<std::borrow::Cow<'_, str>> = serde_json::from_str(text).map_err(|_| {
            err("invalid info_hash: expected a string or an array of strings".into())
        })?;
        list.iter()
            .map(|s| Id20::from_binary_str(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("invalid info_hash: {e}")))?
    } else {
        vec![id_field("info_hash", raw).map_err(err)?]
    };
    Ok(Request::Scrape(Scrape {
        info_hashes: Some(hashes),
    }))
}

/// Counts for one swarm in a scrape reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ScrapeCounts {
    /// Seeders.
    pub complete: u64,
    /// Leechers.
    pub incomplete: u64,
    /// `completed` events seen while the swarm existed.
    pub downloaded: u64,
}

/// A message from the tracker to a client.
#[derive(Debug)]
pub enum OutMessage {
    /// Reply to an announce.
    AnnounceReply {
        /// Swarm.
        info_hash: InfoHash,
        /// Seeders.
        complete: u64,
        /// Leechers.
        incomplete: u64,
        /// Seconds until the next announce.
        interval: u64,
    },
    /// An offer relayed from `peer_id`.
    Offer {
        /// Swarm.
        info_hash: InfoHash,
        /// The offerer.
        peer_id: PeerId,
        /// The offerer's offer id.
        offer_id: OfferId,
        /// Opaque offer object.
        offer: Box<RawValue>,
    },
    /// An answer relayed from `peer_id`.
    Answer {
        /// Swarm.
        info_hash: InfoHash,
        /// The answerer.
        peer_id: PeerId,
        /// The offer answered.
        offer_id: OfferId,
        /// Opaque answer object.
        answer: Box<RawValue>,
    },
    /// Reply to a scrape.
    Scrape {
        /// One entry per requested (or every) swarm.
        files: Vec<(InfoHash, ScrapeCounts)>,
        /// `flags.min_request_interval`, seconds.
        min_request_interval: u64,
    },
    /// An error reply; the socket stays open.
    Error {
        /// `action` the client routes the reply by.
        action: ReplyAction,
        /// `info_hash` when known.
        info_hash: Option<InfoHash>,
        /// `failure reason`.
        reason: String,
    },
}

impl OutMessage {
    /// Whether the message is a relayed offer (the first thing dropped under pressure).
    pub fn is_offer(&self) -> bool {
        matches!(self, OutMessage::Offer { .. })
    }

    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OutMessage::AnnounceReply { .. } => "announce",
            OutMessage::Offer { .. } => "offer",
            OutMessage::Answer { .. } => "answer",
            OutMessage::Scrape { .. } => "scrape",
            OutMessage::Error { .. } => "error",
        }
    }

    /// An error reply in place of this message, for the same action and info_hash.
    pub fn into_error(self, reason: String) -> Self {
        let (action, info_hash) = match self {
            OutMessage::Scrape { .. } => (ReplyAction::Scrape, None),
            OutMessage::Error {
                action, info_hash, ..
            } => (action, info_hash),
            OutMessage::AnnounceReply { info_hash, .. }
            | OutMessage::Offer { info_hash, .. }
            | OutMessage::Answer { info_hash, .. } => (ReplyAction::Announce, Some(info_hash)),
        };
        OutMessage::Error {
            action,
            info_hash,
            reason,
        }
    }

    /// An error reply built from a decode failure.
    pub fn from_decode_error(e: DecodeError) -> Self {
        OutMessage::Error {
            action: e.action,
            info_hash: e.info_hash,
            reason: e.reason,
        }
    }

    /// Encodes as compact JSON, keys in the reference server's order.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(self.size_hint());
        self.encode_into(&mut s);
        s
    }

    /// A lower bound of [`OutMessage::encode`]'s length (the relayed SDP object alone).
    pub fn min_encoded_len(&self) -> usize {
        match self {
            OutMessage::Offer { offer, .. } => offer.get().len(),
            OutMessage::Answer { answer, .. } => answer.get().len(),
            _ => 0,
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            OutMessage::Offer { offer, .. } => offer.get().len() + 160,
            OutMessage::Answer { answer, .. } => answer.get().len() + 160,
            OutMessage::Scrape { files, .. } => files.len() * 96 + 80,
            _ => 160,
        }
    }

    /// Appends the JSON encoding to `s`.
    pub fn encode_into(&self, s: &mut String) {
        use fmt::Write;
        match self {
            OutMessage::AnnounceReply {
                info_hash,
                complete,
                incomplete,
                interval,
            } => {
                let _ = write!(
                    s,
                    r#"{{"complete":{complete},"incomplete":{incomplete},"action":"announce","interval":{interval},"info_hash":"#
                );
                push_id(s, info_hash);
                s.push('}');
            }
            OutMessage::Offer {
                info_hash,
                peer_id,
                offer_id,
                offer,
            } => {
                s.push_str(r#"{"action":"announce","offer":"#);
                s.push_str(offer.get());
                push_tail(s, offer_id, peer_id, info_hash);
            }
            OutMessage::Answer {
                info_hash,
                peer_id,
                offer_id,
                answer,
            } => {
                s.push_str(r#"{"action":"announce","answer":"#);
                s.push_str(answer.get());
                push_tail(s, offer_id, peer_id, info_hash);
            }
            OutMessage::Scrape {
                files,
                min_request_interval,
            } => {
                s.push_str(r#"{"action":"scrape","files":{"#);
                for (i, (hash, c)) in files.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    push_id(s, hash);
                    let _ = write!(
                        s,
                        r#":{{"complete":{},"incomplete":{},"downloaded":{}}}"#,
                        c.complete, c.incomplete, c.downloaded
                    );
                }
                let _ = write!(
                    s,
                    r#"}},"flags":{{"min_request_interval":{min_request_interval}}}}}"#
                );
            }
            OutMessage::Error {
                action,
                info_hash,
                reason,
            } => {
                s.push_str(r#"{"action":"#);
                push_json_str(s, action.as_str());
                s.push_str(r#","failure reason":"#);
                push_json_str(s, reason);
                if let Some(h) = info_hash {
                    s.push_str(r#","info_hash":"#);
                    push_id(s, h);
                }
                s.push('}');
            }
        }
    }
}

fn push_tail(s: &mut String, offer_id: &Id20, peer_id: &Id20, info_hash: &Id20) {
    s.push_str(r#","offer_id":"#);
    push_id(s, offer_id);
    s.push_str(r#","peer_id":"#);
    push_id(s, peer_id);
    s.push_str(r#","info_hash":"#);
    push_id(s, info_hash);
    s.push('}');
}

/// Writes a binary string the way `JSON.stringify` does: `"` and `\` escaped, the C0 controls
/// as `\b \t \n \f \r` or `\u00xx` (lower-case hex), everything else (DEL and U+0080..U+00FF
/// included) as the raw character.
fn push_id(s: &mut String, id: &Id20) {
    s.push('"');
    for &b in &id.0 {
        s.push_str(ESCAPED_BYTE[b as usize]);
    }
    s.push('"');
}

/// Each byte 0..=255 as `JSON.stringify` writes the character U+0000..=U+00FF (what
/// [`push_escaped_char`] writes, which a test checks), looked up instead of branched on: ids are
/// three of every relayed message's fields.
#[rustfmt::skip]
static ESCAPED_BYTE: [&str; 256] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
    "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f",
    "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    " ", "!", "\\\"", "#", "$", "%", "&", "'",
    "(", ")", "*", "+", ",", "-", ".", "/",
    "0", "1", "2", "3", "4", "5", "6", "7",
    "8", "9", ":", ";", "<", "=", ">", "?",
    "@", "A", "B", "C", "D", "E", "F", "G",
    "H", "I", "J", "K", "L", "M", "N", "O",
    "P", "Q", "R", "S", "T", "U", "V", "W",
    "X", "Y", "Z", "[", "\\\\", "]", "^", "_",
    "`", "a", "b", "c", "d", "e", "f", "g",
    "h", "i", "j", "k", "l", "m", "n", "o",
    "p", "q", "r", "s", "t", "u", "v", "w",
    "x", "y", "z", "{", "|", "}", "~", "\u{7f}",
    "\u{80}", "\u{81}", "\u{82}", "\u{83}", "\u{84}", "\u{85}", "\u{86}", "\u{87}",
    "\u{88}", "\u{89}", "\u{8a}", "\u{8b}", "\u{8c}", "\u{8d}", "\u{8e}", "\u{8f}",
    "\u{90}", "\u{91}", "\u{92}", "\u{93}", "\u{94}", "\u{95}", "\u{96}", "\u{97}",
    "\u{98}", "\u{99}", "\u{9a}", "\u{9b}", "\u{9c}", "\u{9d}", "\u{9e}", "\u{9f}",
    "\u{a0}", "\u{a1}", "\u{a2}", "\u{a3}", "\u{a4}", "\u{a5}", "\u{a6}", "\u{a7}",
    "\u{a8}", "\u{a9}", "\u{aa}", "\u{ab}", "\u{ac}", "\u{ad}", "\u{ae}", "\u{af}",
    "\u{b0}", "\u{b1}", "\u{b2}", "\u{b3}", "\u{b4}", "\u{b5}", "\u{b6}", "\u{b7}",
    "\u{b8}", "\u{b9}", "\u{ba}", "\u{bb}", "\u{bc}", "\u{bd}", "\u{be}", "\u{bf}",
    "\u{c0}", "\u{c1}", "\u{c2}", "\u{c3}", "\u{c4}", "\u{c5}", "\u{c6}", "\u{c7}",
    "\u{c8}", "\u{c9}", "\u{ca}", "\u{cb}", "\u{cc}", "\u{cd}", "\u{ce}", "\u{cf}",
    "\u{d0}", "\u{d1}", "\u{d2}", "\u{d3}", "\u{d4}", "\u{d5}", "\u{d6}", "\u{d7}",
    "\u{d8}", "\u{d9}", "\u{da}", "\u{db}", "\u{dc}", "\u{dd}", "\u{de}", "\u{df}",
    "\u{e0}", "\u{e1}", "\u{e2}", "\u{e3}", "\u{e4}", "\u{e5}", "\u{e6}", "\u{e7}",
    "\u{e8}", "\u{e9}", "\u{ea}", "\u{eb}", "\u{ec}", "\u{ed}", "\u{ee}", "\u{ef}",
    "\u{f0}", "\u{f1}", "\u{f2}", "\u{f3}", "\u{f4}", "\u{f5}", "\u{f6}", "\u{f7}",
    "\u{f8}", "\u{f9}", "\u{fa}", "\u{fb}", "\u{fc}", "\u{fd}", "\u{fe}", "\u{ff}",
];

/// Appends `text` as a JSON string literal, escaped exactly as `JSON.stringify` escapes it.
pub fn push_json_str(s: &mut String, text: &str) {
    s.push('"');
    for ch in text.chars() {
        push_escaped_char(s, ch);
    }
    s.push('"');
}

fn push_escaped_char(s: &mut String, ch: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ch {
        '"' => s.push_str("\\\""),
        '\\' => s.push_str("\\\\"),
        '\u{08}' => s.push_str("\\b"),
        '\t' => s.push_str("\\t"),
        '\n' => s.push_str("\\n"),
        '\u{0c}' => s.push_str("\\f"),
        '\r' => s.push_str("\\r"),
        c if (c as u32) < 0x20 => {
            let b = c as u32 as usize;
            s.push_str("\\u00");
            s.push(HEX[b >> 4] as char);
            s.push(HEX[b & 15] as char);
        }
        c => s.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> Id20 {
        Id20([b; 20])
    }

    #[test]
    fn id_literals_decode_like_serde_for_every_byte() {
        // Every byte, in two positions, as JSON.stringify writes it: the fast path agrees
        // with serde plus from_binary_str.
        for b in 0..=255u8 {
            let mut id = [b'x'; 20];
            id[(b as usize) % 20] = b;
            id[19] = b;
            let lit = Id20(id).to_json();
            assert_eq!(id_from_literal(&lit), Some(Id20(id)), "{lit}");
            let s: String = serde_json::from_str(&lit).expect("valid JSON");
            assert_eq!(Id20::from_binary_str(&s), Ok(Id20(id)));
        }
        // Escapes JSON.stringify does not write, but JSON allows.
        let lit = format!(r#""\/\u0041{}""#, "y".repeat(18));
        assert_eq!(
            id_from_literal(&lit).map(|i| i.0[..2].to_vec()),
            Some(b"/A".to_vec())
        );
        // Everything else goes to the general path (None here).
        for bad in [
            format!(r#""{}""#, "a".repeat(19)),
            format!(r#""{}""#, "a".repeat(21)),
            format!(r#""{}\u0100""#, "a".repeat(19)),
            format!(r#""{}\ud83d\ude00""#, "a".repeat(19)),
            format!("\"{}\u{100}\"", "a".repeat(19)),
            "12".to_string(),
            "null".to_string(),
        ] {
            assert_eq!(id_from_literal(&bad), None, "{bad}");
        }
    }

    #[test]
    fn escaped_byte_table_matches_the_escaping_rule() {
        for b in 0..=255u8 {
            let mut want = String::new();
            push_escaped_char(&mut want, b as char);
            assert_eq!(ESCAPED_BYTE[b as usize], want, "byte {b:#04x}");
        }
    }

    #[test]
    fn ids_decode_the_same_with_and_without_escapes() {
        let plain = format!(
            r#"{{"action":"announce","info_hash":"{}","peer_id":"{}"}}"#,
            "a".repeat(20),
            "\\u00ff".repeat(20)
        );
        match decode_request(plain.as_bytes()) {
            Ok(Request::Announce(a)) => {
                assert_eq!(a.info_hash, Id20([b'a'; 20]));
                assert_eq!(a.peer_id, Id20([0xff; 20]));
            }
            other => panic!("{other:?}"),
        }
        let raw_latin1 = format!(
            r#"{{"action":"announce","info_hash":"{}","peer_id":"{}"}}"#,
            "\u{e9}".repeat(20),
            "b".repeat(20)
        );
        match decode_request(raw_latin1.as_bytes()) {
            Ok(Request::Announce(a)) => assert_eq!(a.info_hash, Id20([0xe9; 20])),
            other => panic!("{other:?}"),
        }
        let e = decode_request(b"{\"action\":\"announce\",\"x\":\"\xff\"}").expect_err("not UTF-8");
        assert_eq!(e.action, ReplyAction::Announce);
        assert!(e.reason.contains("UTF-8"), "{}", e.reason);
    }

    #[test]
    fn binary_string_rejects_wrong_length_and_high_code_points() {
        assert_eq!(Id20::from_binary_str("short"), Err(IdError::Length(5)));
        let long: String = "a".repeat(21);
        assert_eq!(Id20::from_binary_str(&long), Err(IdError::Length(21)));
        let mut high: String = "a".repeat(19);
        high.push('\u{100}');
        assert_eq!(Id20::from_binary_str(&high), Err(IdError::CodePoint(0x100)));
        let emoji = format!("{}😀", "a".repeat(19));
        assert_eq!(
            Id20::from_binary_str(&emoji),
            Err(IdError::CodePoint(0x1F600))
        );
    }

    #[test]
    fn encoding_matches_captured_reference_bytes() {
        // Frame A2 of wt-frames.md, the reference server's announce reply, byte for byte.
        let expected = "7b22636f6d706c657465223a312c22696e636f6d706c657465223a302c22616374696f6e223a22616e6e6f756e6365222c22696e74657276616c223a3132302c22696e666f5f68617368223a2267c298c382c2895c6ec3a4c2855c753030306542c3a37a5c7530303066c2aac2bc217c7bc29a5c75303031357e227d";
        let msg = OutMessage::AnnounceReply {
            info_hash: Id20::from_hex("6798c2890ae4850e42e37a0faabc217c7b9a157e").expect("hex"),
            complete: 1,
            incomplete: 0,
            interval: 120,
        };
        let hex: String = msg.encode().bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn scrape_encoding_matches_captured_reference_bytes() {
        let expected = "7b22616374696f6e223a22736372617065222c2266696c6573223a7b2267c298c382c2895c6ec3a4c2855c753030306542c3a37a5c7530303066c2aac2bc217c7bc29a5c75303031357e223a7b22636f6d706c657465223a312c22696e636f6d706c657465223a312c22646f776e6c6f61646564223a317d7d2c22666c616773223a7b226d696e5f726571756573745f696e74657276616c223a3630307d7d";
        let msg = OutMessage::Scrape {
            files: vec![(
                Id20::from_hex("6798c2890ae4850e42e37a0faabc217c7b9a157e").expect("hex"),
                ScrapeCounts {
                    complete: 1,
                    incomplete: 1,
                    downloaded: 1,
                },
            )],
            min_request_interval: 600,
        };
        let hex: String = msg.encode().bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn id_escaping_agrees_with_serde_json_for_every_byte() {
        for b in 0u8..=255 {
            let mut s = String::new();
            push_id(&mut s, &id(b));
            let back: String = serde_json::from_str(&s).expect("valid JSON");
            assert_eq!(Id20::from_binary_str(&back), Ok(id(b)), "byte {b:#x}");
        }
    }

    #[test]
    fn announce_accepts_what_real_clients_send() {
        let ih = id(0x98).to_binary_string();
        let pid = id(b'p').to_binary_string();
        for (extra, want_left) in [
            ("", None),
            (r#","left":null"#, None),
            (r#","left":-1"#, None),
            (r#","left":12.5"#, Some(12.5)),
            (r#","left":0"#, Some(0.0)),
            (r#","left":"1000""#, Some(1000.0)),
        ] {
            let frame = format!(
                r#"{{"action":"announce","info_hash":{},"peer_id":{},"offers":null,"unknown":[1,{{}}]{extra}}}"#,
                serde_json::to_string(&ih).expect("json"),
                serde_json::to_string(&pid).expect("json"),
            );
            match decode_request(frame.as_bytes()) {
                Ok(Request::Announce(a)) => {
                    assert_eq!(a.left, want_left, "{extra}");
                    assert_eq!(a.event, Event::Update);
                    assert!(a.offers.is_empty());
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_carry_action_and_info_hash_when_known() {
        let e = decode_request(b"not json").expect_err("must fail");
        assert_eq!(e.action, ReplyAction::Announce);
        let e = decode_request(br#"{"action":"foo"}"#).expect_err("must fail");
        assert_eq!(e.action, ReplyAction::Other("foo".into()));
        let ih = serde_json::to_string(&id(1).to_binary_string()).expect("json");
        let frame = format!(r#"{{"action":"announce","info_hash":{ih},"peer_id":"short"}}"#);
        let e = decode_request(frame.as_bytes()).expect_err("must fail");
        assert_eq!(e.info_hash, Some(id(1)));
        assert!(e.reason.contains("peer_id"), "{}", e.reason);
        let frame =
            format!(r#"{{"action":"announce","info_hash":{ih},"peer_id":{ih},"event":"bogus"}}"#);
        let e = decode_request(frame.as_bytes()).expect_err("must fail");
        assert!(e.reason.contains("invalid event"));
        let e = decode_request(br#"{"action":"scrape","info_hash":[1]}"#).expect_err("must fail");
        assert_eq!(e.action, ReplyAction::Scrape);
        let text = OutMessage::from_decode_error(e).encode();
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["action"], "scrape");
        assert!(v["failure reason"].is_string());
    }
}
