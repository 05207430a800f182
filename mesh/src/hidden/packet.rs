//! GhostMesh's hidden-service packets, field for field (wire reference 4.7-4.8), GhostMesh's
//! exact padding rule, and the entry's delay-padding plan. All pure: no clock, no IO; the
//! randomness comes from the caller.

use std::time::Duration;

use rand::{Rng, RngExt};
use serde_json::{Map, Value};

use super::crypto::{CryptoError, Envelope};
use crate::relay::packet::INTERNAL_KEY;
use crate::wire::{Payload, js_json};

/// `__ghostmeshInternal` of a request.
pub const REQUEST: &str = "hidden-service-request";
/// `__ghostmeshInternal` of a response.
pub const RESPONSE: &str = "hidden-service-response";
/// `__ghostmeshInternal` of an error carried (encrypted) in a response body.
pub const ERROR: &str = "hidden-service-error";
/// `__ghostmeshInternal` of a server-reveal challenge.
pub const REVEAL_REQUEST: &str = "server-reveal-request";
/// `__ghostmeshInternal` of its answer.
pub const REVEAL_RESPONSE: &str = "server-reveal-response";
/// GhostMesh's message for a duplicate request (a JavaScript client throws it).
pub const DUPLICATE_MESSAGE: &str = "Duplicate hidden-service request already in flight. Ask the requester to use another entry peer.";

/// The hidden-service kind of an internal packet, if it is one.
pub fn kind(v: &Value) -> Option<&str> {
    v.get(INTERNAL_KEY)
        .and_then(Value::as_str)
        .filter(|k| [REQUEST, RESPONSE, REVEAL_REQUEST, REVEAL_RESPONSE].contains(k))
}

/// A parsed `hidden-service-request`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Service name.
    pub service: String,
    /// 16 hex characters.
    pub request_id: String,
    /// 16 hex characters.
    pub nonce: String,
    /// The client's SPKI PEM, as sent.
    pub client_public_key: String,
    /// Hops the client asked for.
    pub requested_hops: u64,
    /// The encrypted payload.
    pub body: Envelope,
}

/// `{"__ghostmeshInternal":"hidden-service-request","service","requestId","nonce",
/// "clientPublicKey","requestedHops","body":{...}}` (padding is added by [`pad`]).
pub fn request(r: &Request) -> Value {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), REQUEST.into());
    m.insert("service".into(), r.service.clone().into());
    m.insert("requestId".into(), r.request_id.clone().into());
    m.insert("nonce".into(), r.nonce.clone().into());
    m.insert("clientPublicKey".into(), r.client_public_key.clone().into());
    m.insert("requestedHops".into(), r.requested_hops.into());
    m.insert("body".into(), r.body.to_json());
    Value::Object(m)
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, CryptoError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| CryptoError::Malformed(format!("{name} missing or not a string")))
}

/// Reads a request; `max_body` bounds the ciphertext.
pub fn parse_request(v: &Value, max_body: usize) -> Result<Request, CryptoError> {
    // GhostMesh: max(1, requestedHops), a number; take a numeric string too.
    let hops = match v.get("requestedHops") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(1.0),
        Some(Value::String(s)) => s.trim().parse::<f64>().unwrap_or(1.0),
        _ => 1.0,
    };
    let body = v
        .get("body")
        .ok_or_else(|| CryptoError::Malformed("body missing".into()))?;
    Ok(Request {
        service: str_field(v, "service")?.to_owned(),
        request_id: str_field(v, "requestId")?.to_owned(),
        nonce: str_field(v, "nonce")?.to_owned(),
        client_public_key: str_field(v, "clientPublicKey")?.to_owned(),
        requested_hops: if hops.is_finite() {
            hops.clamp(1.0, u32::MAX as f64) as u64
        } else {
            1
        },
        body: Envelope::from_json(body, max_body)?,
    })
}

/// The master's response: `{"__ghostmeshInternal":"hidden-service-response","service",
/// "requestId","nonce","body","realHops":0,"simulatedHops":0,"delayedMs":0}`.
pub fn response(service: &str, request_id: &str, nonce: &str, body: &Envelope) -> Value {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), RESPONSE.into());
    m.insert("service".into(), service.into());
    m.insert("requestId".into(), request_id.into());
    m.insert("nonce".into(), nonce.into());
    m.insert("body".into(), body.to_json());
    m.insert("realHops".into(), 0.into());
    m.insert("simulatedHops".into(), 0.into());
    m.insert("delayedMs".into(), 0.into());
    Value::Object(m)
}

/// The plaintext of an error body.
pub fn error_plaintext(code: &str, message: &str) -> Value {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), ERROR.into());
    m.insert("code".into(), code.into());
    m.insert("message".into(), message.into());
    Value::Object(m)
}

/// `(code, message)` when a decrypted body is an error.
pub fn as_error(v: &Value) -> Option<(String, String)> {
    if v.get(INTERNAL_KEY).and_then(Value::as_str) != Some(ERROR) {
        return None;
    }
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some((s("code"), s("message")))
}

/// `UTF-8(JSON.stringify(payload))`.
pub fn plaintext(payload: &Payload) -> Vec<u8> {
    match payload {
        Payload::Json(v) => js_json::stringify(v).into_bytes(),
        Payload::Text(t) => js_json::stringify(&Value::String(t.clone())).into_bytes(),
    }
}

/// The payload back from a decrypted body: a JSON string is text, anything else JSON.
pub fn payload_of(plain: &[u8]) -> Result<Payload, CryptoError> {
    let v: Value = serde_json::from_slice(plain)
        .map_err(|e| CryptoError::Malformed(format!("body is not JSON: {e}")))?;
    Ok(match v {
        Value::String(s) => Payload::Text(s),
        other => Payload::Json(other),
    })
}

/// `JSON.stringify(v).length`: UTF-16 code units, as GhostMesh measures.
pub fn js_len(v: &Value) -> usize {
    js_json::stringify(v).encode_utf16().count()
}

/// GhostMesh's `fixedPacketBytes` rule: when `fixed - JSON.stringify(packet).length > 0`
/// (padding included), `padding` becomes that many `'0'`s. A padded packet is therefore
/// `fixed + 13` characters (the `,"padding":""` itself); a larger one is left alone.
pub fn pad(v: &mut Value, fixed: usize) {
    if fixed == 0 {
        return;
    }
    let current = js_len(v);
    if fixed > current {
        if let Value::Object(m) = v {
            m.insert("padding".into(), "0".repeat(fixed - current).into());
        }
    }
}

/// Pads from scratch (any old padding removed first), so the size is exact whatever the
/// counters now hold; our entry re-pads this way.
pub fn repad(v: &mut Value, fixed: usize) {
    if let Value::Object(m) = v {
        m.shift_remove("padding");
    }
    pad(v, fixed);
}

/// Why a packet's padding is refused by a peer that pads to `fixed`.
pub fn check_padding(v: &Value, fixed: usize) -> Result<(), String> {
    let padding = v.get("padding");
    if let Some(p) = padding {
        if !p.as_str().is_some_and(|s| s.bytes().all(|b| b == b'0')) {
            return Err("padding is not a string of '0'".into());
        }
    }
    if fixed == 0 {
        return Ok(());
    }
    let len = js_len(v);
    // Padded to another size, or a size class an observer could tell apart.
    if padding.is_some() && len < fixed {
        return Err(format!(
            "undersized padded packet: {len} characters, padding to {fixed}"
        ));
    }
    // The counters an entry rewrites may add a few digits to a padded packet (GhostMesh's
    // drift): allow the `,"padding":""` key and 24 digits more.
    if padding.is_some() && len > fixed + PAD_SLACK {
        return Err(format!(
            "oversized padded packet: {len} characters, padding to {fixed}"
        ));
    }
    if padding.is_none() && len < fixed {
        return Err(format!(
            "unpadded packet of {len} characters, padding to {fixed} is required"
        ));
    }
    Ok(())
}

/// `,"padding":""` plus the digits the three hop counters may gain after padding.
pub const PAD_SLACK: usize = 13 + 24;

/// What an entry does to the response: the hop counts it reports and how long the response
/// must have been on its way before it is passed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayPlan {
    /// `max(1, route.len() + 1)`.
    pub real_hops: u64,
    /// `max(real_hops, requested_hops)`.
    pub simulated_hops: u64,
    /// The drawn delay (`min + floor(random × (max − min + 1))` ms) when the real route is
    /// shorter than asked; zero otherwise.
    pub delayed: Duration,
}

impl DelayPlan {
    /// GhostMesh's rule for a route of `route_len` peers (relays + master) and a client that
    /// asked for `requested` hops; `range_ms` is `responseDelayMs`.
    pub fn new<R: Rng + ?Sized>(
        rng: &mut R,
        route_len: usize,
        requested: u64,
        range_ms: (u64, u64),
    ) -> Self {
        let real_hops = (route_len as u64 + 1).max(1);
        let simulated_hops = real_hops.max(requested);
        let delayed = if real_hops < simulated_hops {
            let (lo, hi) = (range_ms.0.min(range_ms.1), range_ms.0.max(range_ms.1));
            Duration::from_millis(rng.random_range(lo..=hi))
        } else {
            Duration::ZERO
        };
        DelayPlan {
            real_hops,
            simulated_hops,
            delayed,
        }
    }

    /// How much longer to hold the response after `elapsed` since the request arrived.
    pub fn hold(&self, elapsed: Duration) -> Duration {
        self.delayed.saturating_sub(elapsed)
    }

    /// Writes the counters into a response. With `hide`, the real hop count and the delay are
    /// left out (both reveal the real route length) and only the simulated count is told.
    pub fn stamp(&self, v: &mut Value, hide: bool) {
        let Value::Object(m) = v else { return };
        if hide {
            m.shift_remove("realHops");
            m.shift_remove("delayedMs");
            m.insert("simulatedHops".into(), self.simulated_hops.into());
        } else {
            m.insert("realHops".into(), self.real_hops.into());
            m.insert("simulatedHops".into(), self.simulated_hops.into());
            m.insert("delayedMs".into(), (self.delayed.as_millis() as u64).into());
        }
    }
}

/// `{"__ghostmeshInternal":"server-reveal-request","challenge":{...}}`.
pub fn reveal_request(challenge: &Envelope) -> Value {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), REVEAL_REQUEST.into());
    m.insert("challenge".into(), challenge.to_json());
    Value::Object(m)
}

/// A server-reveal answer: `ok` with the nonce, or a refusal with its reason.
pub fn reveal_response(result: Result<&str, &str>, peer_id: &str) -> Value {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), REVEAL_RESPONSE.into());
    match result {
        Ok(nonce) => {
            m.insert("ok".into(), (!nonce.is_empty()).into());
            m.insert("nonce".into(), nonce.into());
        }
        Err(reason) => {
            m.insert("ok".into(), false.into());
            m.insert("reason".into(), reason.into());
        }
    }
    m.insert("peerId".into(), peer_id.into());
    Value::Object(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use serde_json::json;

    #[test]
    fn padding_follows_ghostmesh_exactly() {
        // The wire reference's run: 4096 becomes 4109 characters.
        let mut v =
            json!({"__ghostmeshInternal": "hidden-service-response", "service": "s", "x": "é😀"});
        pad(&mut v, 4096);
        assert_eq!(js_len(&v), 4096 + 13);
        assert_eq!(
            v.as_object().unwrap().keys().next_back().unwrap(),
            "padding"
        );
        // Already larger: untouched.
        let mut big = json!({"a": "x".repeat(5000)});
        let before = big.clone();
        pad(&mut big, 4096);
        assert_eq!(big, before);
        // Re-padding a padded packet does nothing (GhostMesh), repad is exact.
        let mut again = v.clone();
        pad(&mut again, 4096);
        assert_eq!(again, v);
        again["realHops"] = 12345.into();
        repad(&mut again, 4096);
        assert_eq!(js_len(&again), 4109);
    }

    #[test]
    fn padded_sizes_are_exact_for_many_payloads() {
        for n in [0usize, 1, 100, 1000, 4000] {
            for fixed in [512usize, 2048, 4096, 8192] {
                let mut v =
                    json!({"__ghostmeshInternal": "hidden-service-request", "body": "é".repeat(n)});
                let raw = js_len(&v);
                pad(&mut v, fixed);
                let want = if fixed > raw { fixed + 13 } else { raw };
                assert_eq!(js_len(&v), want, "payload {n}, fixed {fixed}");
                if fixed > raw {
                    check_padding(&v, fixed).unwrap();
                }
            }
        }
    }

    #[test]
    fn padding_checks_name_the_fault() {
        let mut v = json!({"a": 1});
        pad(&mut v, 300);
        assert!(check_padding(&v, 300).is_ok());
        assert!(check_padding(&v, 600).unwrap_err().contains("undersized"));
        assert!(check_padding(&v, 100).unwrap_err().contains("oversized"));
        assert!(
            check_padding(&json!({"a": 1}), 300)
                .unwrap_err()
                .contains("unpadded")
        );
        assert!(check_padding(&json!({"a": 1, "padding": "01"}), 0).is_err());
        assert!(check_padding(&json!({"a": 1}), 0).is_ok());
    }

    #[test]
    fn delay_plan_is_ghostmeshs_rule() {
        let mut rng = StdRng::seed_from_u64(7);
        // Master linked directly: route [master], realHops 2 < minHops 3: delayed.
        for _ in 0..200 {
            let p = DelayPlan::new(&mut rng, 1, 3, (1000, 5000));
            assert_eq!((p.real_hops, p.simulated_hops), (2, 3));
            assert!((1000..=5000).contains(&(p.delayed.as_millis() as u64)));
            assert_eq!(p.hold(p.delayed + Duration::from_secs(1)), Duration::ZERO);
            assert_eq!(
                p.hold(Duration::from_millis(10)),
                p.delayed - Duration::from_millis(10)
            );
        }
        // Long enough: no delay.
        let p = DelayPlan::new(&mut rng, 2, 3, (1000, 5000));
        assert_eq!(
            (p.real_hops, p.simulated_hops, p.delayed),
            (3, 3, Duration::ZERO)
        );
        let p = DelayPlan::new(&mut rng, 5, 3, (1000, 5000));
        assert_eq!(
            (p.real_hops, p.simulated_hops, p.delayed),
            (6, 6, Duration::ZERO)
        );
        // Same seed, same delays.
        let draw = |seed| {
            let mut r = StdRng::seed_from_u64(seed);
            (0..5)
                .map(|_| DelayPlan::new(&mut r, 1, 4, (1, 1000)).delayed)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn stamp_hides_the_real_route_when_asked() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = DelayPlan::new(&mut rng, 1, 3, (10, 20));
        let mut v = json!({"__ghostmeshInternal": RESPONSE, "realHops": 0, "simulatedHops": 0, "delayedMs": 0});
        p.stamp(&mut v, false);
        assert_eq!(v["realHops"], 2);
        assert_eq!(v["simulatedHops"], 3);
        assert_eq!(v["delayedMs"], p.delayed.as_millis() as u64);
        p.stamp(&mut v, true);
        assert!(v.get("realHops").is_none() && v.get("delayedMs").is_none());
        assert_eq!(v["simulatedHops"], 3);
    }

    #[test]
    fn packets_keep_ghostmesh_field_order() {
        let env = Envelope {
            encrypted_key: vec![1; 256],
            iv: [2; 12],
            ciphertext: vec![3; 20],
        };
        let r = Request {
            service: "svc".into(),
            request_id: "0011223344556677".into(),
            nonce: "8899aabbccddeeff".into(),
            client_public_key: "PEM".into(),
            requested_hops: 3,
            body: env.clone(),
        };
        let v = request(&r);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "__ghostmeshInternal",
                "service",
                "requestId",
                "nonce",
                "clientPublicKey",
                "requestedHops",
                "body"
            ]
        );
        let body_keys: Vec<&str> = v["body"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(body_keys, ["encryptedKey", "iv", "ciphertext"]);
        assert_eq!(v["body"]["encryptedKey"].as_str().unwrap().len(), 344);
        assert_eq!(v["body"]["iv"].as_str().unwrap().len(), 16);
        assert_eq!(parse_request(&v, 1 << 20).unwrap(), r);
        let resp = response("svc", "a", "b", &env);
        let keys: Vec<&str> = resp
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "__ghostmeshInternal",
                "service",
                "requestId",
                "nonce",
                "body",
                "realHops",
                "simulatedHops",
                "delayedMs"
            ]
        );
        assert_eq!(
            js_json::stringify(&reveal_response(Err("server-reveal-disabled"), "ab")),
            r#"{"__ghostmeshInternal":"server-reveal-response","ok":false,"reason":"server-reveal-disabled","peerId":"ab"}"#
        );
        assert_eq!(
            js_json::stringify(&reveal_response(Ok("00ff"), "ab")),
            r#"{"__ghostmeshInternal":"server-reveal-response","ok":true,"nonce":"00ff","peerId":"ab"}"#
        );
        // Bad input names the field.
        let mut bad = v.clone();
        bad["body"]["iv"] = "AAAA".into();
        assert!(
            parse_request(&bad, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("iv")
        );
        bad = v.clone();
        bad.as_object_mut().unwrap().remove("clientPublicKey");
        assert!(
            parse_request(&bad, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("clientPublicKey")
        );
        assert!(
            parse_request(&v, 4)
                .unwrap_err()
                .to_string()
                .contains("over")
        );
    }
}
