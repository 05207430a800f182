//! Tracker frames: what the client sends (built by hand, in P2PT's key order) and what it
//! reads (parsed leniently field by field, so one bad field names itself).

use std::borrow::Cow;
use std::fmt::Write;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::id::{Id20, push_json_str};

/// One offer in an announce: its id and the offer object's JSON text (`{"type":"offer","sdp":…}`).
pub(crate) struct OutOffer<'a> {
    pub(crate) offer_id: Id20,
    pub(crate) offer: &'a str,
}

/// `{"numwant":N,"uploaded":0,"downloaded":0,"action":"announce","info_hash":…,"peer_id":…,["trackerid":…,]"offers":[{"offer":…,"offer_id":…},…]}`
/// — P2PT's `WebSocketTracker.announce` key order.
pub(crate) fn encode_announce(
    numwant: usize,
    info_hash: &Id20,
    peer_id: &Id20,
    tracker_id: Option<&TrackerId>,
    offers: &[OutOffer<'_>],
) -> String {
    let sdp_len: usize = offers.iter().map(|o| o.offer.len() + 60).sum();
    let mut s = String::with_capacity(200 + sdp_len);
    let _ = write!(
        s,
        r#"{{"numwant":{numwant},"uploaded":0,"downloaded":0,"action":"announce","info_hash":"#
    );
    info_hash.push_json(&mut s);
    s.push_str(r#","peer_id":"#);
    peer_id.push_json(&mut s);
    push_tracker_id(&mut s, tracker_id);
    s.push_str(r#","offers":["#);
    for (i, o) in offers.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(r#"{"offer":"#);
        s.push_str(o.offer);
        s.push_str(r#","offer_id":"#);
        o.offer_id.push_json(&mut s);
        s.push('}');
    }
    s.push_str("]}");
    s
}

/// `{"numwant":N,"uploaded":0,"downloaded":0,"event":"stopped","action":"announce","info_hash":…,"peer_id":…[,"trackerid":…]}`
/// — the bittorrent-tracker `Client`'s stop announce (minus `left`, which P2PT never sends).
pub(crate) fn encode_stopped(
    numwant: usize,
    info_hash: &Id20,
    peer_id: &Id20,
    tracker_id: Option<&TrackerId>,
) -> String {
    let mut s = String::with_capacity(200);
    let _ = write!(
        s,
        r#"{{"numwant":{numwant},"uploaded":0,"downloaded":0,"event":"stopped","action":"announce","info_hash":"#
    );
    info_hash.push_json(&mut s);
    s.push_str(r#","peer_id":"#);
    peer_id.push_json(&mut s);
    push_tracker_id(&mut s, tracker_id);
    s.push('}');
    s
}

/// `{"action":"announce","info_hash":…,"peer_id":…,"to_peer_id":…,"answer":…,"offer_id":…[,"trackerid":…]}`
/// — P2PT's answer (`_onAnnounceResponse`, `peer.once('signal')`).
pub(crate) fn encode_answer(
    info_hash: &Id20,
    peer_id: &Id20,
    to_peer_id: &Id20,
    answer: &str,
    offer_id: &Id20,
    tracker_id: Option<&TrackerId>,
) -> String {
    let mut s = String::with_capacity(answer.len() + 200);
    s.push_str(r#"{"action":"announce","info_hash":"#);
    info_hash.push_json(&mut s);
    s.push_str(r#","peer_id":"#);
    peer_id.push_json(&mut s);
    s.push_str(r#","to_peer_id":"#);
    to_peer_id.push_json(&mut s);
    s.push_str(r#","answer":"#);
    s.push_str(answer);
    s.push_str(r#","offer_id":"#);
    offer_id.push_json(&mut s);
    push_tracker_id(&mut s, tracker_id);
    s.push('}');
    s
}

fn push_tracker_id(s: &mut String, tracker_id: Option<&TrackerId>) {
    match tracker_id {
        None => {}
        Some(TrackerId::Text(t)) => {
            s.push_str(r#","trackerid":"#);
            push_json_str(s, t);
        }
        Some(TrackerId::Number(n)) => {
            s.push_str(r#","trackerid":"#);
            s.push_str(n);
        }
    }
}

/// A `tracker id` as the tracker sent it, echoed as `trackerid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrackerId {
    /// A JSON string.
    Text(String),
    /// A JSON number, kept as its literal text.
    Number(String),
}

/// The fields of a tracker frame the client looks at, each still raw JSON.
#[derive(Deserialize, Default)]
pub(crate) struct RawFrame<'a> {
    #[serde(borrow, default)]
    pub(crate) action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) info_hash: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) peer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) offer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) offer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) answer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) interval: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "min interval")]
    pub(crate) min_interval: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "failure reason")]
    pub(crate) failure_reason: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "warning message")]
    pub(crate) warning_message: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "tracker id")]
    pub(crate) tracker_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) complete: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) incomplete: Option<&'a RawValue>,
}

/// Parses a frame into its raw fields. Only a JSON object is a frame (serde would otherwise read
/// an array as a struct, field by field).
pub(crate) fn parse_frame(text: &str) -> Result<RawFrame<'_>, String> {
    if !text.trim_start().starts_with('{') {
        return Err("tracker frame is not a JSON object".into());
    }
    serde_json::from_str(text).map_err(|e| format!("invalid tracker frame: {e}"))
}

/// A JSON string field, unescaped.
pub(crate) fn string_field<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(raw.get()).ok()
}

/// An id field: a 20-character binary string.
pub(crate) fn id_field(name: &str, raw: Option<&RawValue>) -> Result<Id20, String> {
    let raw = raw.ok_or_else(|| format!("`{name}` is missing"))?;
    let s = string_field(raw).ok_or_else(|| format!("`{name}` is not a string"))?;
    Id20::from_binary_str(&s).map_err(|e| format!("invalid `{name}`: {e}"))
}

/// JavaScript truthiness of a raw JSON value (`null`, `false`, `0`, `""` are falsy).
pub(crate) fn is_truthy(raw: Option<&RawValue>) -> bool {
    let Some(raw) = raw else { return false };
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Null) | Err(_) => false,
        Ok(serde_json::Value::Bool(b)) => b,
        Ok(serde_json::Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Ok(serde_json::Value::String(s)) => !s.is_empty(),
        Ok(_) => true,
    }
}

/// The text of a truthy `failure reason` / `warning message`, like JS `new Error(value)`.
pub(crate) fn message_field(raw: Option<&RawValue>, max_len: usize) -> Option<String> {
    if !is_truthy(raw) {
        return None;
    }
    let raw = raw?;
    let text = match string_field(raw) {
        Some(s) => s.into_owned(),
        None => raw.get().to_owned(),
    };
    Some(truncate(text, max_len))
}

/// A non-negative count (`complete`, `incomplete`). `Ok(None)` when absent or null.
pub(crate) fn count_field(name: &str, raw: Option<&RawValue>) -> Result<Option<u64>, String> {
    let Some(raw) = raw else { return Ok(None) };
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(serde_json::Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    // Saturating float-to-int cast; NaN cannot come out of JSON.
                    Some(f) if f >= 0.0 => Ok(Some(f as u64)),
                    _ => Err(format!("`{name}` is negative: {}", raw.get())),
                }
            }
        }
        _ => Err(format!(
            "`{name}` is not a number: {}",
            truncate(raw.get().to_owned(), 64)
        )),
    }
}

/// Seconds (`interval`, `min interval`). `Ok(None)` when absent, null, zero or negative
/// (JavaScript treats 0 as "no interval"; a negative one is meaningless).
pub(crate) fn seconds_field(name: &str, raw: Option<&RawValue>) -> Result<Option<f64>, String> {
    let Some(raw) = raw else { return Ok(None) };
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if f > 0.0 && f.is_finite() => Ok(Some(f)),
            _ => Ok(None),
        },
        _ => Err(format!(
            "`{name}` is not a number: {}",
            truncate(raw.get().to_owned(), 64)
        )),
    }
}

/// `tracker id`: a non-empty string or a non-zero number, at most `max_len` bytes.
pub(crate) fn tracker_id_field(
    raw: Option<&RawValue>,
    max_len: usize,
) -> Result<Option<TrackerId>, String> {
    if !is_truthy(raw) {
        return Ok(None);
    }
    let Some(raw) = raw else { return Ok(None) };
    if raw.get().len() > max_len {
        return Err(format!(
            "`tracker id` is longer than {max_len} bytes; ignored"
        ));
    }
    if let Some(s) = string_field(raw) {
        return Ok(Some(TrackerId::Text(s.into_owned())));
    }
    if raw
        .get()
        .starts_with(|c: char| c == '-' || c.is_ascii_digit())
    {
        return Ok(Some(TrackerId::Number(raw.get().to_owned())));
    }
    Err("`tracker id` is neither a string nor a number; ignored".into())
}

/// The compact JSON text of an `offer`/`answer` object, or why it is not one.
pub(crate) fn object_field(name: &str, raw: &RawValue) -> Result<String, String> {
    if raw.get().starts_with('{') {
        Ok(raw.get().to_owned())
    } else {
        Err(format!("`{name}` is not a JSON object"))
    }
}

/// Validates caller-supplied SDP JSON: exactly one JSON object; returned trimmed.
pub(crate) fn validate_object_json(text: &str) -> Option<&str> {
    let t = text.trim();
    if !t.starts_with('{') {
        return None;
    }
    serde_json::from_str::<&RawValue>(t).ok().map(|_| t)
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
