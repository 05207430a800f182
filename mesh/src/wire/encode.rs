//! Splitting a payload into P2PT frames.

use super::{ENVELOPE_PREFIX, MsgId, Payload, js_json};

/// Encodes a payload as the P2PT frames that carry it, in sending order.
///
/// The output is byte for byte what P2PT's and GhostMesh's `send()` produce with the same id
/// and payload when `max_chunk_units` is [`MAX_CHUNK_UNITS`](super::MAX_CHUNK_UNITS):
/// `'^' + JSON.stringify({id, msg, o?, c, last?})` per chunk, with `msg` cut every
/// `max_chunk_units` UTF-16 code units (before escaping, possibly between the two halves of a
/// surrogate pair, which then travel as `\udxxx` escapes). A `max_chunk_units` of 0 is treated
/// as 1. Receivers do not care about the chunk size, only about order and `last`.
///
/// Where JavaScript sends nothing at all, this sends something a JavaScript receiver accepts
/// (checked against P2PT's receive code under Node; see `tests/node_compat.rs`):
///
/// * The empty string: P2PT's send loop (`while (msg.length > 0)`) sends no frame and its
///   promise never settles. Here it is one frame, `{"id":…,"msg":"","c":0,"last":true}`, which
///   P2PT stores as chunk 0, joins to `""` on `last` and emits as the message `""`.
/// * JSON scalars ([`Payload::Json`] holding a number, boolean or string): JavaScript only
///   sets `o:1` for `typeof msg === 'object'` and sends nothing for numbers and booleans. Here
///   they go out as their JSON text with `o:1`, and P2PT's `JSON.parse` gives back the same
///   value. Objects, arrays and `null` are exactly what JavaScript sends.
///
/// ```
/// use ghostmesh::wire::{encode_chunks, MsgId, Payload, MAX_CHUNK_UNITS};
/// let frames = encode_chunks(&MsgId::Int(123456), &Payload::from("hello"), MAX_CHUNK_UNITS);
/// assert_eq!(frames, [r#"^{"id":123456,"msg":"hello","c":0,"last":true}"#]);
/// ```
pub fn encode_chunks(id: &MsgId, payload: &Payload, max_chunk_units: usize) -> Vec<String> {
    match payload {
        Payload::Text(text) => encode_msg_chunks(id, text, false, max_chunk_units),
        Payload::Json(value) => {
            encode_msg_chunks(id, &js_json::stringify(value), true, max_chunk_units)
        }
    }
}

/// Encodes an already serialized `msg` string as P2PT frames.
///
/// `object` sets `o:1`, which tells the receiver to `JSON.parse` the reassembled text; `msg`
/// must then be JSON text. Use this to send JSON whose member order you control (GhostMesh
/// packets have fixed field orders, which a `serde_json::Value` without `preserve_order` does
/// not keep); otherwise prefer [`encode_chunks`].
pub fn encode_msg_chunks(
    id: &MsgId,
    msg: &str,
    object: bool,
    max_chunk_units: usize,
) -> Vec<String> {
    let units: Vec<u16> = msg.encode_utf16().collect();
    let max = max_chunk_units.max(1);
    if units.is_empty() {
        return vec![frame(id, &[], object, 0, true)];
    }
    let count = units.len().div_ceil(max);
    units
        .chunks(max)
        .enumerate()
        .map(|(index, chunk)| frame(id, chunk, object, index as u64, index + 1 == count))
        .collect()
}

/// One frame; the key order `id, msg, [o], c, [last]` is the order in which P2PT assigns the
/// properties, which `JSON.stringify` preserves.
fn frame(id: &MsgId, units: &[u16], object: bool, index: u64, last: bool) -> String {
    // Escaping grows the text by at most 6x (`\u0000`); most chunks need little more than
    // their length.
    let mut out = String::with_capacity(units.len() + 48);
    out.push(ENVELOPE_PREFIX);
    out.push_str("{\"id\":");
    id.push_json(&mut out);
    out.push_str(",\"msg\":");
    js_json::push_js_utf16(&mut out, units);
    if object {
        out.push_str(",\"o\":1");
    }
    out.push_str(",\"c\":");
    out.push_str(&index.to_string());
    if last {
        out.push_str(",\"last\":true");
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reference_examples() {
        // ghostmesh-wire.md §3.1, [V-run].
        let id = MsgId::Int(123_456);
        assert_eq!(
            encode_chunks(&id, &Payload::from("hello"), 16000),
            [r#"^{"id":123456,"msg":"hello","c":0,"last":true}"#]
        );
        assert_eq!(
            encode_chunks(&id, &Payload::Json(json!({"a": 1})), 16000),
            [r#"^{"id":123456,"msg":"{\"a\":1}","o":1,"c":0,"last":true}"#]
        );
    }

    #[test]
    fn zero_chunk_size_is_one() {
        let frames = encode_chunks(&MsgId::Int(1), &Payload::from("ab"), 0);
        assert_eq!(
            frames,
            [
                r#"^{"id":1,"msg":"a","c":0}"#,
                r#"^{"id":1,"msg":"b","c":1,"last":true}"#
            ]
        );
    }
}
