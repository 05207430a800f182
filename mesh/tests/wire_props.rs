//! Property tests: encode → frames → reassemble gives back the payload, and no input makes
//! the reassembler panic or exceed its bounds.

use std::time::{Duration, Instant};

use ghostmesh::wire::{
    MsgId, Payload, Reassembler, ReassemblyLimits, Received, encode_chunks, js_json, parse_frame,
};
use proptest::prelude::*;
use serde_json::Value;

/// Characters that stress the encoding: controls, JSON specials, U+2028/2029, BMP, astral.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        any::<char>(),
        prop::char::range('\u{0}', '\u{1f}'),
        prop::sample::select(vec![
            '"', '\\', '/', '\u{7f}', '\u{2028}', '\u{2029}', '\u{feff}'
        ]),
        prop::char::range('\u{10000}', '\u{10ffff}'),
        Just('😀'),
        prop::char::range('a', 'z'),
    ]
}

fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..max).prop_map(String::from_iter)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-integral floats with short exact decimals: serde_json reads them back exactly.
        // (Integral floats come back as integers, as in JavaScript, which has one number type.)
        any::<i32>().prop_map(|n| Value::from(f64::from(n) + 0.5)),
        tricky_string(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(6), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn msg_id() -> impl Strategy<Value = MsgId> {
    prop_oneof![
        (MsgId::P2PT_MIN..=MsgId::P2PT_MAX).prop_map(MsgId::Int),
        any::<i64>().prop_map(MsgId::Int),
        tricky_string(8).prop_map(MsgId::Str),
    ]
}

fn chunk_size() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..40, Just(16_000)]
}

fn roundtrip(id: &MsgId, payload: &Payload, max: usize) -> Result<(), TestCaseError> {
    let frames = encode_chunks(id, payload, max);
    let mut r = Reassembler::default();
    let now = Instant::now();
    let mut done = None;
    for (i, frame) in frames.iter().enumerate() {
        let chunk = parse_frame(frame)
            .map_err(|e| TestCaseError::fail(format!("{frame}: {e}")))?
            .ok_or_else(|| TestCaseError::fail("not an envelope"))?;
        prop_assert_eq!(chunk.index, i as u64);
        prop_assert_eq!(chunk.last, i + 1 == frames.len());
        prop_assert!(chunk.units.len() <= max.max(1));
        match r.push(&(), frame, now) {
            Ok(Received::Complete(m)) => done = Some(m),
            Ok(Received::Partial { .. }) => {}
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }
    let message = done.ok_or_else(|| TestCaseError::fail("never completed"))?;
    prop_assert_eq!(&message.id, id);
    prop_assert_eq!(&message.payload, payload);
    prop_assert_eq!(r.partial_count(), 0);
    Ok(())
}

proptest! {
    #[test]
    fn text_roundtrips(id in msg_id(), text in tricky_string(200), max in chunk_size()) {
        roundtrip(&id, &Payload::Text(text), max)?;
    }

    #[test]
    fn json_roundtrips(id in msg_id(), value in json_value(), max in chunk_size()) {
        roundtrip(&id, &Payload::Json(value), max)?;
    }

    #[test]
    fn js_numbers_read_back_exactly(bits in any::<u64>()) {
        let f = f64::from_bits(bits);
        prop_assume!(f.is_finite());
        let text = js_json::js_number(f);
        let back: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert!(back == f, "{} -> {} -> {}", f, text, back);
    }

    /// Several peers send several messages, some under the same id, with their frames
    /// interleaved arbitrarily (each message's own frames stay in order, as on one channel).
    #[test]
    fn interleaved_peers_and_ids_never_mix(
        messages in prop::collection::vec(
            (0u8..3, 0i64..3, tricky_string(60), 1usize..8), 1..8),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..400),
    ) {
        // Keep only one message per (peer, id) at a time, as a well-behaved sender does.
        let mut seen = std::collections::HashSet::new();
        let messages: Vec<_> = messages
            .into_iter()
            .filter(|(peer, id, _, _)| seen.insert((*peer, *id)))
            .collect();
        let mut queues: Vec<std::collections::VecDeque<String>> = messages
            .iter()
            .map(|(_, id, text, max)| {
                encode_chunks(&MsgId::Int(*id), &Payload::Text(text.clone()), *max).into()
            })
            .collect();
        let mut r = Reassembler::default();
        let now = Instant::now();
        let mut completed = vec![None; messages.len()];
        let mut picks = picks.into_iter();
        loop {
            let open: Vec<usize> = (0..queues.len()).filter(|&i| !queues[i].is_empty()).collect();
            if open.is_empty() {
                break;
            }
            let i = match picks.next() {
                Some(pick) => open[pick.index(open.len())],
                None => open[0],
            };
            let frame = queues[i].pop_front().ok_or_else(|| TestCaseError::fail("empty"))?;
            match r.push(&messages[i].0, &frame, now) {
                Ok(Received::Complete(m)) => completed[i] = Some(m.payload),
                Ok(Received::Partial { .. }) => {}
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
        }
        for (i, (_, _, text, _)) in messages.iter().enumerate() {
            prop_assert_eq!(completed[i].clone(), Some(Payload::Text(text.clone())));
        }
        prop_assert_eq!(r.partial_count(), 0);
    }

    /// Arbitrary text and bytes never panic.
    #[test]
    fn arbitrary_frames_never_panic(text in ".{0,64}", bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut r = Reassembler::default();
        let now = Instant::now();
        let _ = r.push(&0, &text, now);
        let _ = r.push(&0, &format!("^{text}"), now);
        let _ = r.push_bytes(&0, &bytes, now);
        let mut framed = vec![b'^'];
        framed.extend_from_slice(&bytes);
        let _ = r.push_bytes(&0, &framed, now);
    }

}

proptest! {
    // Long sequences: fewer cases keep this quick in debug builds.
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A hostile mix of well-formed chunks with random ids, indexes, `last` flags, peers and
    /// clock jumps never panics and never breaks a bound.
    #[test]
    fn bounds_hold_under_hostile_sequences(
        steps in prop::collection::vec(
            (0u8..6, 0i64..8, 0u64..6, any::<bool>(), 0usize..30, 0u64..4, any::<bool>()),
            0..300),
    ) {
        let limits = ReassemblyLimits {
            max_message_units: 64,
            max_partials_per_peer: 3,
            max_partials: 8,
            max_buffered_units: 200,
            partial_timeout: Duration::from_secs(5),
        };
        let mut r = Reassembler::new(limits.clone());
        let mut now = Instant::now();
        for (peer, id, c, last, len, advance, expire) in steps {
            // Only sizes matter here; emoji make units and chars differ.
            let text: String = (0..len).map(|i| if i % 3 == 0 { '😀' } else { 'x' }).collect();
            let mut msg = String::new();
            js_json::push_js_str(&mut msg, &text);
            let last = if last { r#","last":true"# } else { "" };
            let frame = format!(r#"^{{"id":{id},"msg":{msg},"c":{c}{last}}}"#);
            let _ = r.push(&peer, &frame, now);
            now += Duration::from_secs(advance);
            if expire {
                r.expire(now);
            }
            prop_assert!(r.partial_count() <= limits.max_partials);
            prop_assert!(r.buffered_units() <= limits.max_buffered_units);
            for p in 0..6 {
                prop_assert!(r.peer_partial_count(&p) <= limits.max_partials_per_peer);
            }
        }
        r.expire(now + Duration::from_secs(5));
        prop_assert_eq!((r.partial_count(), r.buffered_units()), (0, 0));
    }
}
