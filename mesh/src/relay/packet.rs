//! GhostMesh's routed packets, byte-compatible: `onion-forward` / `onion-deliver` (the
//! `__p2ptInternal` layer, each inner layer a JSON *string*) and `route-request` /
//! `route-response` (the `__ghostmeshInternal` payloads delivered through them).

use serde_json::{Map, Value};

use crate::wire::js_json;

/// The key GhostMesh's onion handler dispatches on.
pub const ONION_KEY: &str = "__p2ptInternal";
/// The key of GhostMesh's other internal packets.
pub const INTERNAL_KEY: &str = "__ghostmeshInternal";

/// A message body as GhostMesh carries it in `msg`: the string itself, or `JSON.stringify`
/// of an object with `o: 1`.
pub fn msg_fields(m: &mut Map<String, Value>, payload: &crate::wire::Payload) {
    match payload {
        crate::wire::Payload::Text(t) => {
            m.insert("msg".into(), t.clone().into());
        }
        crate::wire::Payload::Json(v) => {
            m.insert("msg".into(), js_json::stringify(v).into());
            m.insert("o".into(), 1.into());
        }
    }
}

/// Reads `msg` (+ `o`) back into a payload; `None` when `msg` is missing or `o` is set on
/// text that is not JSON.
pub fn msg_payload(v: &Value) -> Option<crate::wire::Payload> {
    let msg = v.get("msg")?;
    let object = v.get("o").is_some_and(|o| o == 1 || o == true);
    match (msg, object) {
        (Value::String(s), true) => serde_json::from_str(s).ok().map(crate::wire::Payload::Json),
        (Value::String(s), false) => Some(crate::wire::Payload::Text(s.clone())),
        // Not what GhostMesh sends, but take a number or object as JSON.
        (other, _) => Some(crate::wire::Payload::Json(other.clone())),
    }
}

/// An `onion-deliver` packet.
pub fn deliver(circuit_id: &str, ttl: i64, payload: &crate::wire::Payload) -> Value {
    let mut m = Map::new();
    m.insert(ONION_KEY.into(), "onion-deliver".into());
    m.insert("circuitId".into(), circuit_id.into());
    m.insert("ttl".into(), ttl.into());
    msg_fields(&mut m, payload);
    Value::Object(m)
}

/// An `onion-forward` packet wrapping `inner` (as a JSON string, as GhostMesh nests them).
pub fn forward(circuit_id: &str, ttl: i64, next: &str, inner: &Value) -> Value {
    let mut m = Map::new();
    m.insert(ONION_KEY.into(), "onion-forward".into());
    m.insert("circuitId".into(), circuit_id.into());
    m.insert("ttl".into(), ttl.into());
    m.insert("nextPeerId".into(), next.into());
    m.insert("payload".into(), js_json::stringify(inner).into());
    Value::Object(m)
}

/// The packet to send to `route[0]` so that `route.last()` receives `payload` in an
/// `onion-deliver`.
///
/// TTLs: GhostMesh starts the outermost layer at 2 whatever the route length (so routes with
/// two or more relays die); we give layer `i` the ttl `len + 1 - i`, so every hop receives a
/// positive ttl, and relays that overwrite the inner ttl with theirs minus one (GhostMesh's
/// rule, which ours follow too) keep it positive to the end.
pub fn wrap(circuit_id: &str, route: &[String], payload: &crate::wire::Payload) -> Value {
    let len = route.len() as i64;
    let mut packet = deliver(circuit_id, 2, payload);
    for i in (0..route.len().saturating_sub(1)).rev() {
        packet = forward(circuit_id, len + 1 - i as i64, &route[i + 1], &packet);
    }
    packet
}

/// A relay's work on an `onion-forward` layer `v` that carries `ttl`: the inner layer, parsed
/// from its JSON string, with GhostMesh's ttl rule applied (the inner ttl becomes `ttl - 1`).
/// `None` when the inner layer is not an onion packet. The relay checks `ttl` and the next hop
/// first; the onion benchmark times this step on every hop.
pub fn unwrap_forward(v: &Value, ttl: i64) -> Option<Value> {
    let mut inner: Value = v
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .filter(|i: &Value| i.is_object() && is_onion(i))?;
    inner["ttl"] = (ttl - 1).into();
    Some(inner)
}

/// A `route-request` (GhostMesh's routed `send`).
pub fn route_request(
    circuit_id: &str,
    request_id: &str,
    origin: &str,
    reply_route: &[String],
    payload: &crate::wire::Payload,
) -> Value {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), "route-request".into());
    m.insert("circuitId".into(), circuit_id.into());
    m.insert("requestId".into(), request_id.into());
    m.insert("originPeerId".into(), origin.into());
    m.insert(
        "replyRoute".into(),
        Value::Array(reply_route.iter().map(|p| p.clone().into()).collect()),
    );
    msg_fields(&mut m, payload);
    Value::Object(m)
}

/// A `route-response`.
pub fn route_response(
    circuit_id: &str,
    request_id: &str,
    origin: &str,
    payload: &crate::wire::Payload,
) -> Value {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), "route-response".into());
    m.insert("circuitId".into(), circuit_id.into());
    m.insert("requestId".into(), request_id.into());
    m.insert("originPeerId".into(), origin.into());
    msg_fields(&mut m, payload);
    Value::Object(m)
}

/// Whether a message is one of GhostMesh's onion packets (its handler only checks the key).
pub fn is_onion(v: &Value) -> bool {
    v.get(ONION_KEY).is_some()
}

/// Whether a payload is a `route-request` or `route-response`.
pub fn route_kind(v: &Value) -> Option<&str> {
    match v.get(INTERNAL_KEY).and_then(Value::as_str) {
        Some(k @ ("route-request" | "route-response")) => Some(k),
        _ => None,
    }
}

/// Whether `s` is a peer id: 40 lowercase hex digits.
pub fn is_peer_id(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::Payload;
    use serde_json::json;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 40).collect()
    }

    #[test]
    fn layers_nest_as_json_strings_in_ghostmesh_key_order() {
        let route = vec![id('a'), id('b')];
        let p = wrap("c1", &route, &Payload::Json(json!({"x": 1})));
        let inner = r#"{"__p2ptInternal":"onion-deliver","circuitId":"c1","ttl":2,"msg":"{\"x\":1}","o":1}"#;
        assert_eq!(
            p.to_string(),
            format!(
                r#"{{"__p2ptInternal":"onion-forward","circuitId":"c1","ttl":3,"nextPeerId":"{}","payload":{}}}"#,
                id('b'),
                serde_json::to_string(inner).unwrap()
            )
        );
        let text = wrap("c2", &[id('t')], &Payload::from("hi"));
        assert_eq!(
            text.to_string(),
            r#"{"__p2ptInternal":"onion-deliver","circuitId":"c2","ttl":2,"msg":"hi"}"#
        );
    }

    #[test]
    fn ttls_stay_positive_through_every_relay() {
        // GhostMesh's relay rule (ours too) over a 5-relay route.
        let route: Vec<String> = "abcdef".chars().map(id).collect();
        let mut packet = wrap("c", &route, &Payload::from("m"));
        for hop in 0..route.len() - 1 {
            let ttl = packet["ttl"].as_i64().unwrap();
            assert!(ttl > 0, "hop {hop} would drop (ttl {ttl})");
            assert_eq!(packet["nextPeerId"], route[hop + 1]);
            packet = unwrap_forward(&packet, ttl).unwrap();
            assert_eq!(packet["ttl"], ttl - 1);
        }
        let bad = json!({"__p2ptInternal": "onion-forward", "payload": "{\"x\":1}"});
        assert_eq!(unwrap_forward(&bad, 3), None);
        assert_eq!(packet["__p2ptInternal"], "onion-deliver");
        assert!(packet["ttl"].as_i64().unwrap() > 0);
    }

    #[test]
    fn route_packets_and_bodies() {
        let r = route_request("c", "r", &id('a'), &[id('b'), id('a')], &Payload::from("5"));
        assert_eq!(
            r.to_string(),
            format!(
                r#"{{"__ghostmeshInternal":"route-request","circuitId":"c","requestId":"r","originPeerId":"{}","replyRoute":["{}","{}"],"msg":"5"}}"#,
                id('a'),
                id('b'),
                id('a')
            )
        );
        assert_eq!(route_kind(&r), Some("route-request"));
        assert_eq!(msg_payload(&r), Some(Payload::from("5")));
        let resp = route_response("c", "r", &id('t'), &Payload::Json(json!([1])));
        assert_eq!(msg_payload(&resp), Some(Payload::Json(json!([1]))));
        assert!(is_peer_id(&id('f')) && !is_peer_id("xyz") && !is_peer_id(&id('G')));
    }
}
