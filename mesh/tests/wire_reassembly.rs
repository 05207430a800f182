//! Reassembly: per-peer keying, ordering, and every bound against a hostile peer.

use std::time::{Duration, Instant};

use ghostmesh::wire::{
    MsgId, Payload, Reassembler, ReassemblyLimits, Received, WireError, encode_chunks,
};
use serde_json::json;

fn chunk(id: i64, msg: &str, c: u64, last: bool) -> String {
    let last = if last { r#","last":true"# } else { "" };
    format!(r#"^{{"id":{id},"msg":"{msg}","c":{c}{last}}}"#)
}

fn complete(received: Result<Received, WireError>) -> Payload {
    match received {
        Ok(Received::Complete(message)) => message.payload,
        other => panic!("expected a complete message, got {other:?}"),
    }
}

fn partial(received: Result<Received, WireError>) {
    assert!(
        matches!(received, Ok(Received::Partial { .. })),
        "expected a partial message, got {received:?}"
    );
}

fn text(s: &str) -> Payload {
    Payload::Text(s.to_owned())
}

fn small_limits() -> ReassemblyLimits {
    ReassemblyLimits {
        max_message_units: 100,
        max_partials_per_peer: 3,
        max_partials: 5,
        max_buffered_units: 1000,
        partial_timeout: Duration::from_secs(10),
    }
}

#[test]
fn two_peers_with_the_same_id_do_not_mix() {
    let mut r = Reassembler::default();
    let now = Instant::now();
    let a = encode_chunks(&MsgId::Int(123_456), &text("AAAAAAAAAA"), 3);
    let b = encode_chunks(&MsgId::Int(123_456), &text("bbbbbbbbbb"), 3);
    for (fa, fb) in a.iter().zip(&b).take(a.len() - 1) {
        partial(r.push(&"peer-a", fa, now));
        partial(r.push(&"peer-b", fb, now));
    }
    assert_eq!(r.partial_count(), 2);
    assert_eq!(
        complete(r.push(&"peer-b", &b[b.len() - 1], now)),
        text("bbbbbbbbbb")
    );
    assert_eq!(
        complete(r.push(&"peer-a", &a[a.len() - 1], now)),
        text("AAAAAAAAAA")
    );
    assert_eq!((r.partial_count(), r.buffered_units()), (0, 0));
}

#[test]
fn one_peer_may_interleave_several_ids() {
    let mut r = Reassembler::default();
    let now = Instant::now();
    partial(r.push(&0, &chunk(1, "a", 0, false), now));
    partial(r.push(&0, &chunk(2, "x", 0, false), now));
    assert_eq!(
        complete(r.push(&0, &chunk(2, "y", 1, true), now)),
        text("xy")
    );
    assert_eq!(
        complete(r.push(&0, &chunk(1, "b", 1, true), now)),
        text("ab")
    );
}

#[test]
fn stale_leftovers_never_join_a_new_message() {
    // P2PT bug (ghostmesh-wire.md §5.1.3): stale chunks 0..5 followed by a new 2-chunk message
    // under the same id yield "new0 new1 stale2..stale5". Here chunk 0 starts over.
    let mut r = Reassembler::default();
    let now = Instant::now();
    for c in 0..6 {
        partial(r.push(&0, &chunk(7, "stale", c, false), now));
    }
    partial(r.push(&0, &chunk(7, "new0", 0, false), now));
    assert_eq!(
        complete(r.push(&0, &chunk(7, "new1", 1, true), now)),
        text("new0new1")
    );
    assert_eq!((r.partial_count(), r.buffered_units()), (0, 0));
}

#[test]
fn out_of_order_chunks_drop_the_message() {
    let mut r = Reassembler::default();
    let now = Instant::now();
    // A continuation with no start.
    assert_eq!(
        r.push(&0, &chunk(1, "x", 1, true), now),
        Err(WireError::ChunkOutOfOrder {
            id: MsgId::Int(1),
            expected: 0,
            got: 1
        })
    );
    // A gap.
    partial(r.push(&0, &chunk(1, "x", 0, false), now));
    assert_eq!(
        r.push(&0, &chunk(1, "x", 2, false), now),
        Err(WireError::ChunkOutOfOrder {
            id: MsgId::Int(1),
            expected: 1,
            got: 2
        })
    );
    assert_eq!((r.partial_count(), r.buffered_units()), (0, 0));
    // A duplicate.
    partial(r.push(&0, &chunk(1, "x", 0, false), now));
    partial(r.push(&0, &chunk(1, "x", 1, false), now));
    assert_eq!(
        r.push(&0, &chunk(1, "x", 1, false), now),
        Err(WireError::ChunkOutOfOrder {
            id: MsgId::Int(1),
            expected: 2,
            got: 1
        })
    );
    assert_eq!(r.partial_count(), 0);
}

#[test]
fn hostile_endless_chunks_without_last_hit_the_size_limit() {
    let mut r = Reassembler::new(small_limits());
    let now = Instant::now();
    let ten = "0123456789";
    let mut result = Ok(Received::Raw);
    let mut c = 0;
    // A peer that never sends `last`: the 11th 10-unit chunk passes 100 units.
    while c < 1_000 {
        result = r.push(&"evil", &chunk(9, ten, c, false), now);
        if result.is_err() {
            break;
        }
        c += 1;
    }
    assert_eq!(c, 10);
    assert_eq!(
        result,
        Err(WireError::MessageTooLarge {
            id: MsgId::Int(9),
            limit: 100
        })
    );
    assert_eq!((r.partial_count(), r.buffered_units()), (0, 0));
    // The rest of the oversized message is refused chunk by chunk without being stored.
    assert!(matches!(
        r.push(&"evil", &chunk(9, ten, 11, false), now),
        Err(WireError::ChunkOutOfOrder {
            expected: 0,
            got: 11,
            ..
        })
    ));
    assert_eq!(r.partial_count(), 0);
    // Exactly at the limit is fine.
    for c in 0..9 {
        partial(r.push(&"evil", &chunk(9, ten, c, false), now));
    }
    assert_eq!(
        complete(r.push(&"evil", &chunk(9, ten, 9, true), now)),
        text(&ten.repeat(10))
    );
}

#[test]
fn hostile_single_oversized_frame() {
    let mut r = Reassembler::new(small_limits());
    let now = Instant::now();
    let big = "x".repeat(101);
    assert_eq!(
        r.push(&0, &chunk(3, &big, 0, true), now),
        Err(WireError::MessageTooLarge {
            id: MsgId::Int(3),
            limit: 100
        })
    );
    // Size is counted in UTF-16 code units: 50 emoji are 100 units, 51 are too many.
    partial(r.push(&0, &chunk(4, &"😀".repeat(25), 0, false), now));
    assert_eq!(
        complete(r.push(&0, &chunk(4, &"😀".repeat(25), 1, true), now)),
        text(&"😀".repeat(50))
    );
    assert!(matches!(
        r.push(&0, &chunk(4, &"😀".repeat(51), 0, true), now),
        Err(WireError::MessageTooLarge { .. })
    ));
}

#[test]
fn hostile_empty_chunks_cost_no_memory() {
    let mut r = Reassembler::new(small_limits());
    let now = Instant::now();
    for c in 0..10_000 {
        partial(r.push(&0, &chunk(5, "", c, false), now));
    }
    assert_eq!((r.partial_count(), r.buffered_units()), (1, 0));
    assert_eq!(
        complete(r.push(&0, &chunk(5, "end", 10_000, true), now)),
        text("end")
    );
}

#[test]
fn hostile_many_partial_ids_from_one_peer() {
    let mut r = Reassembler::new(small_limits());
    let now = Instant::now();
    for id in 0..3 {
        partial(r.push(&"evil", &chunk(id, "x", 0, false), now));
    }
    assert_eq!(
        r.push(&"evil", &chunk(3, "x", 0, false), now),
        Err(WireError::TooManyPartialsForPeer {
            id: MsgId::Int(3),
            limit: 3
        })
    );
    // The peer's existing messages still progress, single-frame messages still pass, and
    // other peers are unaffected.
    partial(r.push(&"evil", &chunk(0, "y", 1, false), now));
    assert_eq!(
        complete(r.push(&"evil", &chunk(3, "z", 0, true), now)),
        text("z")
    );
    partial(r.push(&"good", &chunk(3, "x", 0, false), now));
    assert_eq!(r.peer_partial_count(&"evil"), 3);
    assert_eq!(r.partial_count(), 4);
}

#[test]
fn hostile_many_peers_hit_the_total_limit() {
    let mut r = Reassembler::new(small_limits());
    let now = Instant::now();
    for peer in 0..5u32 {
        partial(r.push(&peer, &chunk(1, "x", 0, false), now));
    }
    assert_eq!(
        r.push(&5, &chunk(1, "x", 0, false), now),
        Err(WireError::TooManyPartials {
            id: MsgId::Int(1),
            limit: 5
        })
    );
    assert_eq!(r.partial_count(), 5);
    // Finishing one frees a slot.
    assert_eq!(
        complete(r.push(&0, &chunk(1, "y", 1, true), now)),
        text("xy")
    );
    partial(r.push(&5, &chunk(1, "x", 0, false), now));
}

#[test]
fn hostile_peers_hit_the_buffer_limit() {
    let limits = ReassemblyLimits {
        max_buffered_units: 250,
        ..small_limits()
    };
    let mut r = Reassembler::new(limits);
    let now = Instant::now();
    let ninety = "x".repeat(90);
    partial(r.push(&1, &chunk(1, &ninety, 0, false), now));
    partial(r.push(&2, &chunk(1, &ninety, 0, false), now));
    assert_eq!(r.buffered_units(), 180);
    // Growing peer 1's message to 100 would make 190: fine. A third 90 would make 280.
    partial(r.push(&1, &chunk(1, "0123456789", 1, false), now));
    assert_eq!(
        r.push(&3, &chunk(1, &ninety, 0, false), now),
        Err(WireError::BufferFull {
            id: MsgId::Int(1),
            limit: 250
        })
    );
    assert_eq!((r.partial_count(), r.buffered_units()), (2, 190));
    // A message that arrives whole in one frame is never buffered, so it still passes.
    assert_eq!(
        complete(r.push(&3, &chunk(2, &ninety, 0, true), now)),
        text(&ninety)
    );
    // Completing a message frees its units.
    assert_eq!(
        complete(r.push(&1, &chunk(1, "", 2, true), now)),
        text(&format!("{ninety}0123456789"))
    );
    assert_eq!(r.buffered_units(), 90);
}

#[test]
fn hostile_abandoned_partials_expire() {
    let mut r = Reassembler::new(small_limits());
    let t0 = Instant::now();
    partial(r.push(&"a", &chunk(1, "x", 0, false), t0));
    partial(r.push(&"b", &chunk(2, "yy", 0, false), t0 + Duration::from_secs(5)));
    assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(10)));
    assert!(r.expire(t0 + Duration::from_millis(9_999)).is_empty());
    assert_eq!(
        r.expire(t0 + Duration::from_secs(10)),
        vec![("a", MsgId::Int(1))]
    );
    assert_eq!((r.partial_count(), r.buffered_units()), (1, 2));
    assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(15)));
    // A chunk restarts the clock.
    partial(r.push(&"b", &chunk(2, "z", 1, false), t0 + Duration::from_secs(14)));
    assert!(r.expire(t0 + Duration::from_secs(20)).is_empty());
    assert_eq!(
        r.expire(t0 + Duration::from_secs(24)),
        vec![("b", MsgId::Int(2))]
    );
    assert_eq!(
        (r.partial_count(), r.buffered_units(), r.next_expiry()),
        (0, 0, None)
    );
    // The late remainder of an expired message is refused, not glued to anything.
    assert!(matches!(
        r.push(
            &"a",
            &chunk(1, "late", 1, true),
            t0 + Duration::from_secs(30)
        ),
        Err(WireError::ChunkOutOfOrder { expected: 0, .. })
    ));
}

#[test]
fn an_overdue_partial_is_dropped_even_without_expire() {
    let mut r = Reassembler::new(small_limits());
    let t0 = Instant::now();
    partial(r.push(&0, &chunk(1, "old", 0, false), t0));
    assert!(matches!(
        r.push(&0, &chunk(1, "x", 1, true), t0 + Duration::from_secs(10)),
        Err(WireError::ChunkOutOfOrder {
            expected: 0,
            got: 1,
            ..
        })
    ));
    assert_eq!(r.partial_count(), 0);
}

#[test]
fn removing_a_peer_frees_its_partials() {
    let mut r = Reassembler::new(small_limits());
    let now = Instant::now();
    partial(r.push(&"a", &chunk(1, "xx", 0, false), now));
    partial(r.push(&"a", &chunk(2, "xxx", 0, false), now));
    partial(r.push(&"b", &chunk(1, "x", 0, false), now));
    assert_eq!(r.remove_peer(&"a"), 2);
    assert_eq!(r.remove_peer(&"a"), 0);
    assert_eq!((r.partial_count(), r.buffered_units()), (1, 1));
}

#[test]
fn raw_and_binary_frames() {
    let mut r = Reassembler::default();
    let now = Instant::now();
    assert_eq!(r.push(&0, "hello", now), Ok(Received::Raw));
    assert_eq!(r.push(&0, "", now), Ok(Received::Raw));
    assert_eq!(r.push_bytes(&0, &[0xff, b'^'], now), Ok(Received::Raw));
    let frame = chunk(1, "é", 0, true);
    assert_eq!(complete(r.push_bytes(&0, frame.as_bytes(), now)), text("é"));
    // Invalid UTF-8 inside `msg` becomes U+FFFD, as TextDecoder does in JavaScript.
    let mut bytes = br#"^{"id":1,"msg":""#.to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(br#"","last":true}"#);
    assert_eq!(complete(r.push_bytes(&0, &bytes, now)), text("\u{fffd}"));
}

#[test]
fn undecodable_messages_are_errors() {
    let mut r = Reassembler::default();
    let now = Instant::now();
    // Half a pair with no partner.
    partial(r.push(&0, &chunk(1, r"a\ud83d", 0, false), now));
    assert_eq!(
        r.push(&0, &chunk(1, "b", 1, true), now),
        Err(WireError::LoneSurrogate { id: MsgId::Int(1) })
    );
    // o:1 but not JSON.
    let frame = r#"^{"id":2,"msg":"{nope","o":1,"c":0,"last":true}"#;
    assert!(matches!(
        r.push(&0, frame, now),
        Err(WireError::InvalidJson { .. })
    ));
    // Malformed frames leave other messages alone.
    partial(r.push(&0, &chunk(3, "keep", 0, false), now));
    assert!(matches!(
        r.push(&0, "^{bad", now),
        Err(WireError::Malformed { .. })
    ));
    assert_eq!(
        complete(r.push(&0, &chunk(3, "!", 1, true), now)),
        text("keep!")
    );
    assert_eq!(r.partial_count(), 0);
}

#[test]
fn o_and_last_come_from_the_final_chunk() {
    // P2PT reads `o` from the chunk that completes the message.
    let mut r = Reassembler::default();
    let now = Instant::now();
    partial(r.push(&0, r#"^{"id":1,"msg":"[1,","c":0}"#, now));
    assert_eq!(
        complete(r.push(&0, r#"^{"id":1,"msg":"2]","o":1,"c":1,"last":1}"#, now)),
        Payload::Json(json!([1, 2]))
    );
}

#[test]
fn errors_explain_themselves() {
    let e = WireError::MessageTooLarge {
        id: MsgId::from("x"),
        limit: 100,
    };
    assert_eq!(
        e.to_string(),
        "message \"x\": larger than 100 UTF-16 code units; message dropped"
    );
    let e = WireError::ChunkOutOfOrder {
        id: MsgId::Int(5),
        expected: 0,
        got: 3,
    };
    assert_eq!(
        e.to_string(),
        "message 5: expected chunk 0, got chunk 3; message dropped"
    );
}
