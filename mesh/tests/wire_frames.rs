//! Byte-exact frame fixtures for the P2PT envelope (ghostmesh-wire.md §3.1–3.2).
//!
//! Expected frames either come from the wire reference, or were printed by Node v20 running
//! P2PT's own send loop (`src/p2pt.js` `send()`: `'^' + JSON.stringify(data)` per 16000-unit
//! slice). `tests/wire_node_compat.rs` re-runs that comparison on every test run when Node is
//! installed; the fixtures here keep the expectations visible without Node.

use std::time::Instant;

use ghostmesh::wire::{
    MAX_CHUNK_UNITS, MsgId, Payload, Reassembler, Received, encode_chunks, parse_frame,
};
use serde_json::json;

fn frames(id: impl Into<MsgId>, payload: impl Into<Payload>) -> Vec<String> {
    encode_chunks(&id.into(), &payload.into(), MAX_CHUNK_UNITS)
}

/// Feeds frames to a fresh reassembler and returns the one message they make.
fn reassemble(frames: &[String]) -> (MsgId, Payload) {
    let mut reassembler = Reassembler::default();
    let now = Instant::now();
    let mut result = None;
    for (i, frame) in frames.iter().enumerate() {
        match reassembler.push(&1u8, frame, now) {
            Ok(Received::Complete(message)) => {
                assert_eq!(i + 1, frames.len(), "completed early");
                result = Some((message.id, message.payload));
            }
            Ok(Received::Partial { .. }) => assert!(i + 1 < frames.len(), "last frame"),
            other => panic!("frame {i}: {other:?}"),
        }
    }
    assert_eq!(reassembler.partial_count(), 0);
    result.expect("a complete message")
}

#[test]
fn reference_examples_byte_for_byte() {
    // ghostmesh-wire.md §3.1; Node v20 printed the same two lines.
    assert_eq!(
        frames(123_456, "hello"),
        [r#"^{"id":123456,"msg":"hello","c":0,"last":true}"#]
    );
    assert_eq!(
        frames(123_456, json!({"a": 1})),
        [r#"^{"id":123456,"msg":"{\"a\":1}","o":1,"c":0,"last":true}"#]
    );
    for example in [
        r#"^{"id":123456,"msg":"hello","c":0,"last":true}"#,
        r#"^{"id":123456,"msg":"{\"a\":1}","o":1,"c":0,"last":true}"#,
    ] {
        let (id, _) = reassemble(&[example.to_owned()]);
        assert_eq!(id, MsgId::Int(123_456));
    }
    assert_eq!(
        reassemble(&frames(123_456, json!({"a": 1}))).1,
        Payload::Json(json!({"a": 1}))
    );
}

#[test]
fn null_is_sent_as_the_text_null_with_o() {
    // Node v20: '^' + JSON.stringify({id: 123456, msg: JSON.stringify(null), o: 1, c: 0, last: true})
    let sent = frames(123_456, json!(null));
    assert_eq!(
        sent,
        [r#"^{"id":123456,"msg":"null","o":1,"c":0,"last":true}"#]
    );
    assert_eq!(reassemble(&sent).1, Payload::Json(json!(null)));
}

#[test]
fn string_ids() {
    let sent = frames("reply-7", "hi");
    assert_eq!(sent, [r#"^{"id":"reply-7","msg":"hi","c":0,"last":true}"#]);
    assert_eq!(reassemble(&sent).0, MsgId::from("reply-7"));
    // Node v20: '^' + JSON.stringify({id: "\ud800é\"", msg: "null", o: 1, c: 0, last: true})
    // An id with a lone surrogate cannot be a Rust String; it is kept verbatim.
    let node = r#"^{"id":"\ud800é\"","msg":"null","o":1,"c":0,"last":true}"#;
    let (id, payload) = reassemble(&[node.to_owned()]);
    assert_eq!(id.to_json(), r#""\ud800é\"""#);
    assert_eq!(payload, Payload::Json(json!(null)));
    // Echoing it back writes the same bytes.
    assert_eq!(frames(id, json!(null)), [node]);
}

#[test]
fn boundary_15999_units_is_one_frame() {
    let text = "a".repeat(15_999);
    let sent = frames(100_000, text.as_str());
    assert_eq!(
        sent,
        [format!(
            r#"^{{"id":100000,"msg":"{text}","c":0,"last":true}}"#
        )]
    );
    assert_eq!(reassemble(&sent).1, Payload::Text(text));
}

#[test]
fn boundary_16000_units_is_one_frame() {
    let text = "a".repeat(16_000);
    let sent = frames(100_000, text.as_str());
    assert_eq!(
        sent,
        [format!(
            r#"^{{"id":100000,"msg":"{text}","c":0,"last":true}}"#
        )]
    );
    assert_eq!(reassemble(&sent).1, Payload::Text(text));
}

#[test]
fn boundary_16001_units_is_two_frames() {
    let text = "a".repeat(16_001);
    let sent = frames(100_000, text.as_str());
    assert_eq!(
        sent,
        [
            format!(r#"^{{"id":100000,"msg":"{}","c":0}}"#, "a".repeat(16_000)),
            r#"^{"id":100000,"msg":"a","c":1,"last":true}"#.to_owned(),
        ]
    );
    assert_eq!(reassemble(&sent).1, Payload::Text(text));
}

#[test]
fn emoji_split_across_the_boundary() {
    // U+1F600 is the pair d83d de00; it occupies units 15999 and 16000.
    let text = format!("{}😀b", "a".repeat(15_999));
    let sent = frames(199_999, text.as_str());
    assert_eq!(
        sent,
        [
            format!(
                r#"^{{"id":199999,"msg":"{}\ud83d","c":0}}"#,
                "a".repeat(15_999)
            ),
            r#"^{"id":199999,"msg":"\ude00b","c":1,"last":true}"#.to_owned(),
        ]
    );
    assert_eq!(reassemble(&sent).1, Payload::Text(text));
}

#[test]
fn escapes_count_after_slicing() {
    // Slicing is by unescaped code units: 16000 quotes become a 32000-character `msg`.
    let text = "\"".repeat(16_001);
    let sent = frames(1, text.as_str());
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].len(), r#"^{"id":1,"msg":"","c":0}"#.len() + 32_000);
    assert_eq!(sent[1], r#"^{"id":1,"msg":"\"","c":1,"last":true}"#);
    assert_eq!(reassemble(&sent).1, Payload::Text(text));
}

#[test]
fn json_payload_is_chunked_as_its_text() {
    // The JSON text is `{"k":"` + 15993 x + 😀 + `"}`: the emoji sits on units 15999/16000.
    let value = json!({"k": format!("{}😀", "x".repeat(15_993))});
    let sent = frames(5, value.clone());
    assert_eq!(sent.len(), 2);
    assert!(sent[0].starts_with(r#"^{"id":5,"msg":"{\"k\":\"xxx"#));
    assert!(sent[0].ends_with(r#"xx\ud83d","o":1,"c":0}"#));
    assert_eq!(
        sent[1],
        r#"^{"id":5,"msg":"\ude00\"}","o":1,"c":1,"last":true}"#
    );
    assert_eq!(reassemble(&sent).1, Payload::Json(value));
}

#[test]
fn empty_string_is_one_empty_last_chunk() {
    // P2PT sends nothing for "" (its loop runs while msg.length > 0). We send one frame that
    // P2PT's receiver turns into the message "" (checked under Node in wire_node_compat.rs).
    let sent = frames(1, "");
    assert_eq!(sent, [r#"^{"id":1,"msg":"","c":0,"last":true}"#]);
    assert_eq!(reassemble(&sent).1, Payload::Text(String::new()));
}

#[test]
fn json_scalars_are_sent_with_o() {
    // JavaScript sends nothing for numbers and booleans; we send their JSON text with o:1,
    // which P2PT's receiver JSON.parses back to the same value.
    for (value, frame) in [
        (json!(5), r#"^{"id":1,"msg":"5","o":1,"c":0,"last":true}"#),
        (
            json!(1.5),
            r#"^{"id":1,"msg":"1.5","o":1,"c":0,"last":true}"#,
        ),
        (
            json!(true),
            r#"^{"id":1,"msg":"true","o":1,"c":0,"last":true}"#,
        ),
        (
            json!("s"),
            r#"^{"id":1,"msg":"\"s\"","o":1,"c":0,"last":true}"#,
        ),
    ] {
        let sent = frames(1, value.clone());
        assert_eq!(sent, [frame]);
        assert_eq!(reassemble(&sent).1, Payload::Json(value));
    }
}

#[test]
fn hundred_thousand_characters_with_emoji_on_every_boundary() {
    // Put a surrogate pair across every 16000-unit boundary, then fill to 100,000 chars.
    let mut text = String::new();
    let mut units = 0usize;
    let mut chars = 0usize;
    while chars < 100_000 {
        if units % MAX_CHUNK_UNITS == MAX_CHUNK_UNITS - 1 {
            text.push('😀');
            units += 2;
        } else {
            text.push(if chars % 7 == 0 { 'é' } else { 'a' });
            units += 1;
        }
        chars += 1;
    }
    let sent = frames(123_456, text.as_str());
    assert_eq!(sent.len(), units.div_ceil(MAX_CHUNK_UNITS));
    for (i, frame) in sent.iter().enumerate() {
        if i + 1 < sent.len() {
            assert!(
                frame.ends_with(&format!(r#"\ud83d","c":{i}}}"#)),
                "frame {i}"
            );
        }
        if i > 0 {
            assert!(frame.contains(r#","msg":"\ude00"#), "frame {i}");
        }
        let chunk = parse_frame(frame).expect("valid").expect("envelope");
        assert!(chunk.units.len() <= MAX_CHUNK_UNITS);
    }
    assert_eq!(reassemble(&sent).1, Payload::Text(text));
}
