//! The node core: two nodes back to back, correlation, timeouts, bounds and hostile input.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ghostmesh::node::{Event, MessageHandle, Node, NodeConfig, RawFrame, RequestId, SendError};
use ghostmesh::wire::{MsgId, Payload, ReassemblyLimits, WireError, parse_frame};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

type N = Node<&'static str>;

/// Alice and Bob, linked to each other.
fn pair(config: NodeConfig) -> (N, N) {
    let mut a = Node::new(config.clone());
    let mut b = Node::new(config);
    a.link_up("bob");
    b.link_up("alice");
    (a, b)
}

/// Moves frames both ways until neither side has anything left to write.
fn pump(a: &mut N, b: &mut N, now: Instant) {
    loop {
        let mut moved = false;
        while let Some((to, frame)) = a.poll_transmit() {
            assert_eq!(to, "bob");
            b.frame(now, &"alice", &frame);
            moved = true;
        }
        while let Some((to, frame)) = b.poll_transmit() {
            assert_eq!(to, "alice");
            a.frame(now, &"bob", &frame);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn events(node: &mut N) -> Vec<Event<&'static str>> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

fn one_message(node: &mut N) -> (MessageHandle<&'static str>, Payload) {
    match events(node).as_slice() {
        [
            Event::Message {
                handle, payload, ..
            },
        ] => (handle.clone(), payload.clone()),
        other => panic!("expected one message, got {other:?}"),
    }
}

fn one_response(node: &mut N) -> (RequestId, MessageHandle<&'static str>, Payload) {
    match events(node).as_slice() {
        [
            Event::Response {
                request,
                handle,
                payload,
                ..
            },
        ] => (*request, handle.clone(), payload.clone()),
        other => panic!("expected one response, got {other:?}"),
    }
}

fn frame_id(frame: &str) -> MsgId {
    parse_frame(frame)
        .expect("valid frame")
        .expect("envelope frame")
        .id
}

#[test]
fn text_and_json_both_ways_with_responses() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(1);
    let (mut a, mut b) = pair(NodeConfig::default());

    let r1 = a
        .send(now, &"bob", "hello bob".into(), &mut rng)
        .expect("accepted");
    pump(&mut a, &mut b, now);
    let (handle, payload) = one_message(&mut b);
    assert_eq!(payload, Payload::from("hello bob"));
    assert_eq!(handle.peer(), &"alice");
    b.respond(now, &handle, json!({"ok": true, "n": [1, 2]}).into())
        .expect("accepted");
    pump(&mut a, &mut b, now);
    let (request, _, payload) = one_response(&mut a);
    assert_eq!(request, r1);
    assert_eq!(payload, Payload::Json(json!({"ok": true, "n": [1, 2]})));

    let r2 = b
        .send(now, &"alice", json!({"q": "é😀"}).into(), &mut rng)
        .expect("accepted");
    pump(&mut a, &mut b, now);
    let (handle, payload) = one_message(&mut a);
    assert_eq!(payload, Payload::Json(json!({"q": "é😀"})));
    a.respond(now, &handle, "plain answer".into())
        .expect("accepted");
    pump(&mut a, &mut b, now);
    let (request, _, payload) = one_response(&mut b);
    assert_eq!(request, r2);
    assert_eq!(payload, Payload::from("plain answer"));

    assert_eq!((a.pending_count(), b.pending_count()), (0, 0));
    assert_eq!(a.stats().responses, 1);
    assert_eq!(a.stats().messages, 1);
}

/// At least 100,000 UTF-16 code units, with an emoji straddling every 16000-unit boundary.
fn big_text() -> String {
    let mut text = String::new();
    let mut units = 0;
    for boundary in (1..=6).map(|k| k * 16_000) {
        while units < boundary - 1 {
            text.push(if units % 7 == 0 { '"' } else { 'a' });
            units += 1;
        }
        text.push('😀');
        units += 2;
    }
    while units < 100_000 {
        text.push('z');
        units += 1;
    }
    text
}

#[test]
fn large_message_with_emoji_at_chunk_boundaries_both_ways() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(2);
    let (mut a, mut b) = pair(NodeConfig::default());
    let text = big_text();
    assert!(text.encode_utf16().count() >= 100_000);

    let request = a
        .send(now, &"bob", text.clone().into(), &mut rng)
        .expect("accepted");
    let frames: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert_eq!(frames.len(), 7);
    assert!(frames[0].1.ends_with(r#"\ud83d","c":0}"#), "split pair");
    assert!(frames[1].1.contains(r#""msg":"\ude00"#));
    for (_, frame) in &frames {
        b.frame(now, &"alice", frame);
    }
    let (handle, payload) = one_message(&mut b);
    assert_eq!(payload, Payload::Text(text.clone()));

    b.respond(now, &handle, Payload::Text(text.clone()))
        .expect("accepted");
    let frames: Vec<_> = std::iter::from_fn(|| b.poll_transmit()).collect();
    assert_eq!(frames.len(), 7);
    assert!(frames[5].1.ends_with(r#"\ud83d","c":5}"#), "split pair");
    for (_, frame) in &frames {
        a.frame(now, &"bob", frame);
    }
    let (r, _, payload) = one_response(&mut a);
    assert_eq!(r, request);
    assert_eq!(payload, Payload::Text(text));
}

#[test]
fn concurrent_requests_answered_out_of_order_get_the_right_responses() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(3);
    let (mut a, mut b) = pair(NodeConfig::default());
    let requests: Vec<RequestId> = (0..5)
        .map(|i| {
            a.send(now, &"bob", format!("q{i}").into(), &mut rng)
                .expect("accepted")
        })
        .collect();
    pump(&mut a, &mut b, now);
    let incoming: Vec<(MessageHandle<_>, Payload)> = events(&mut b)
        .into_iter()
        .map(|e| match e {
            Event::Message {
                handle, payload, ..
            } => (handle, payload),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(incoming.len(), 5);
    // Answer in the order 4, 1, 3, 0, 2, with more messages arriving in between (the P2PT
    // race: its `peer.respond` would answer all of them under the newest id).
    for &i in &[4usize, 1, 3, 0, 2] {
        let (handle, payload) = &incoming[i];
        let Payload::Text(q) = payload else { panic!() };
        b.respond(now, handle, format!("answer to {q}").into())
            .expect("accepted");
        a.send_no_reply(now, &"bob", "noise".into(), &mut rng)
            .expect("accepted");
        pump(&mut a, &mut b, now);
    }
    let mut answered = 0;
    for event in events(&mut a) {
        let Event::Response {
            request, payload, ..
        } = event
        else {
            panic!("{event:?}")
        };
        let i = requests
            .iter()
            .position(|r| *r == request)
            .expect("a request of ours");
        assert_eq!(payload, Payload::Text(format!("answer to q{i}")));
        answered += 1;
    }
    assert_eq!(answered, 5);
    assert_eq!(a.pending_count(), 0);
    // The noise arrived as messages, none taken for a response.
    assert_eq!(events(&mut b).len(), 5);
}

#[test]
fn timeout_fires_at_exactly_now_plus_timeout() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(4);
    let (mut a, mut b) = pair(NodeConfig::default());
    assert_eq!(a.poll_timeout(), None);
    let request = a
        .send(t0, &"bob", "anyone?".into(), &mut rng)
        .expect("accepted");
    let deadline = t0 + Duration::from_secs(60);
    assert_eq!(a.poll_timeout(), Some(deadline));

    a.tick(deadline - Duration::from_nanos(1));
    assert!(a.poll_event().is_none());
    assert_eq!(a.pending_count(), 1);
    a.tick(deadline);
    assert_eq!(
        events(&mut a),
        [Event::Timeout {
            peer: "bob",
            request
        }]
    );
    assert_eq!(a.pending_count(), 0);
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.stats().timeouts, 1);

    // The late answer is a plain message.
    pump(&mut a, &mut b, deadline);
    let (handle, _) = one_message(&mut b);
    b.respond(deadline, &handle, "late".into())
        .expect("accepted");
    pump(&mut a, &mut b, deadline);
    let (_, payload) = one_message(&mut a);
    assert_eq!(payload, Payload::from("late"));
}

#[test]
fn configured_and_per_request_timeouts() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(5);
    let config = NodeConfig {
        request_timeout: Duration::from_millis(250),
        ..NodeConfig::default()
    };
    let (mut a, mut b) = pair(config);
    let short = a.send(t0, &"bob", "a".into(), &mut rng).expect("accepted");
    let long = a
        .send_with_timeout(t0, &"bob", "b".into(), Duration::from_secs(5), &mut rng)
        .expect("accepted");
    let forever = a
        .send_with_timeout(t0, &"bob", "c".into(), Duration::MAX, &mut rng)
        .expect("accepted");
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    a.tick(t0 + Duration::from_secs(10));
    assert_eq!(
        events(&mut a),
        [
            Event::Timeout {
                peer: "bob",
                request: short
            },
            Event::Timeout {
                peer: "bob",
                request: long
            },
        ]
    );
    assert_eq!(a.pending_count(), 1);
    assert_eq!(a.poll_timeout(), None);

    // A response arriving at the deadline, before any tick, is too late as well.
    let t1 = t0 + Duration::from_secs(20);
    let r = a.send(t1, &"bob", "d".into(), &mut rng).expect("accepted");
    pump(&mut a, &mut b, t1);
    let handles: Vec<_> = events(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message {
                handle,
                payload: Payload::Text(t),
                ..
            } if t == "d" => Some(handle),
            _ => None,
        })
        .collect();
    b.respond(t1, &handles[0], "x".into()).expect("accepted");
    pump(&mut a, &mut b, t1 + Duration::from_millis(250));
    let evs = events(&mut a);
    assert!(matches!(evs[0], Event::Timeout { request, .. } if request == r));
    assert!(matches!(evs[1], Event::Message { .. }));
    assert!(a.cancel(forever));
    assert!(!a.cancel(forever));
    assert_eq!(a.pending_count(), 0);
}

#[test]
fn link_down_fails_pending_requests_and_drops_state() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(6);
    let mut a: N = Node::default();
    a.link_up("bob");
    a.link_up("carol");
    let r1 = a.send(now, &"bob", "1".into(), &mut rng).expect("accepted");
    let r2 = a.send(now, &"bob", "2".into(), &mut rng).expect("accepted");
    let rc = a
        .send(now, &"carol", "3".into(), &mut rng)
        .expect("accepted");
    // A partial incoming message from bob.
    a.frame(now, &"bob", r#"^{"id":5,"msg":"x","c":0}"#);
    assert_eq!(a.reassembler().peer_partial_count(&"bob"), 1);

    a.link_down(&"bob");
    assert_eq!(
        events(&mut a),
        [
            Event::PeerFailed {
                peer: "bob",
                request: r1
            },
            Event::PeerFailed {
                peer: "bob",
                request: r2
            },
        ]
    );
    assert!(!a.is_linked(&"bob"));
    assert_eq!(a.pending_count(), 1);
    assert_eq!(a.reassembler().peer_partial_count(&"bob"), 0);
    assert_eq!(a.stats().frames_dropped, 2);
    assert_eq!(
        a.send(now, &"bob", "x".into(), &mut rng),
        Err(SendError::NoLink)
    );
    // Only carol's frame is left, and the timer is carol's.
    assert_eq!(a.poll_transmit().map(|(p, _)| p), Some("carol"));
    assert_eq!(a.poll_transmit(), None);
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(60)));
    a.link_down(&"carol");
    assert_eq!(
        events(&mut a),
        [Event::PeerFailed {
            peer: "carol",
            request: rc
        }]
    );
    a.link_down(&"carol"); // idempotent
    assert_eq!(a.poll_timeout(), None);

    // A fresh link starts clean.
    a.link_up("bob");
    a.send(now, &"bob", "again".into(), &mut rng)
        .expect("accepted");
    assert_eq!(a.poll_transmit().map(|(p, _)| p), Some("bob"));
    assert_eq!(a.poll_transmit(), None);
}

#[test]
fn ids_are_p2pt_ids_unique_per_peer() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let config = NodeConfig {
        max_pending_per_peer: 5000,
        ..NodeConfig::default()
    };
    let mut a = Node::new(config);
    a.link_up("bob");
    a.link_up("carol");
    let mut ids = HashSet::new();
    // 5000 draws from 100,000 values collide about 120 times: the node must redraw.
    for _ in 0..5000 {
        a.send(now, &"bob", "x".into(), &mut rng).expect("accepted");
        let (_, frame) = a.poll_transmit().expect("accepted");
        let id = frame_id(&frame);
        let MsgId::Int(n) = id else { panic!() };
        assert!((MsgId::P2PT_MIN..=MsgId::P2PT_MAX).contains(&n));
        assert!(ids.insert(n), "id {n} reused while pending");
    }
    // Another peer has its own id space.
    a.send(now, &"carol", "y".into(), &mut rng)
        .expect("accepted");
    assert_eq!(a.peer_pending_count(&"bob"), 5000);
    assert_eq!(a.peer_pending_count(&"carol"), 1);
}

#[test]
fn chained_conversation_under_one_id() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(8);
    let (mut a, mut b) = pair(NodeConfig::default());
    let r = a.send(now, &"bob", "1".into(), &mut rng).expect("accepted");
    let (_, frame) = a.poll_transmit().expect("accepted");
    let id = frame_id(&frame);
    b.frame(now, &"alice", &frame);
    let (h1, _) = one_message(&mut b);
    assert_eq!(h1.id(), &id);
    let rb = b
        .respond_expecting_reply(now, &h1, "2".into())
        .expect("accepted");
    assert_eq!(b.pending_count(), 1);
    pump(&mut a, &mut b, now);
    let (got, h2, p) = one_response(&mut a);
    assert_eq!((got, p), (r, Payload::from("2")));
    assert_eq!(h2.id(), &id);
    a.respond_expecting_reply(now, &h2, "3".into())
        .expect("accepted");
    pump(&mut a, &mut b, now);
    let (got, h3, p) = one_response(&mut b);
    assert_eq!((got, p), (rb, Payload::from("3")));
    b.respond(now, &h3, "4".into()).expect("accepted");
    assert_eq!(b.pending_count(), 0, "respond registers nothing");
    pump(&mut a, &mut b, now);
    let (_, h4, p) = one_response(&mut a);
    assert_eq!(p, Payload::from("4"));
    assert_eq!(h4.id(), &id);
    assert_eq!(a.pending_count(), 0);
    // The conversation is over: the same id is now a new message.
    b.respond(now, &h3, "5".into()).expect("accepted");
    pump(&mut a, &mut b, now);
    let (_, p) = one_message(&mut a);
    assert_eq!(p, Payload::from("5"));
}

#[test]
fn integer_and_string_ids_correlate_as_javascript_does() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(9);
    let mut a: N = Node::default();
    a.link_up("bob");
    let r = a.send(now, &"bob", "q".into(), &mut rng).expect("accepted");
    let (_, frame) = a.poll_transmit().expect("accepted");
    let MsgId::Int(n) = frame_id(&frame) else {
        panic!()
    };
    // A JavaScript peer that answers under the id as a string.
    a.frame(
        now,
        &"bob",
        &format!(r#"^{{"id":"{n}","msg":"a","c":0,"last":true}}"#),
    );
    let evs = events(&mut a);
    assert!(
        matches!(&evs[..], [Event::Response { request, handle, .. }] if *request == r && handle.id() == &MsgId::Str(n.to_string())),
        "{evs:?}"
    );
    // Our answer echoes the id byte for byte.
    let Event::Response { handle, .. } = &evs[0] else {
        panic!()
    };
    a.respond(now, handle, "b".into()).expect("accepted");
    let (_, frame) = a.poll_transmit().expect("accepted");
    assert_eq!(
        frame,
        format!(r#"^{{"id":"{n}","msg":"b","c":0,"last":true}}"#)
    );
    // respond_expecting_reply under an id already awaited is refused.
    a.frame(now, &"bob", r#"^{"id":"7","msg":"m","c":0,"last":true}"#);
    let (h, _) = one_message(&mut a);
    a.respond_expecting_reply(now, &h, "1".into())
        .expect("accepted");
    a.frame(now, &"bob", r#"^{"id":7,"msg":"m","c":0,"last":true}"#);
    let (_, _, p) = one_response(&mut a);
    assert_eq!(p, Payload::from("m"));
    a.frame(now, &"bob", r#"^{"id":7,"msg":"n","c":0,"last":true}"#);
    let (h, _) = one_message(&mut a);
    a.respond_expecting_reply(now, &h, "1".into())
        .expect("accepted");
    assert!(matches!(
        a.respond_expecting_reply(now, &h, "2".into()),
        Err(SendError::IdInUse { .. })
    ));
}

#[test]
fn no_reply_messages_register_nothing() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(10);
    let (mut a, mut b) = pair(NodeConfig::default());
    let id = a
        .send_no_reply(now, &"bob", "fire".into(), &mut rng)
        .expect("accepted");
    assert_eq!(a.pending_count(), 0);
    assert_eq!(a.poll_timeout(), None);
    pump(&mut a, &mut b, now);
    let (h, _) = one_message(&mut b);
    assert_eq!(h.id(), &id);
    // An answer anyway is a new message, not swallowed.
    b.respond(now, &h, "forget".into()).expect("accepted");
    pump(&mut a, &mut b, now);
    let (_, p) = one_message(&mut a);
    assert_eq!(p, Payload::from("forget"));
}

#[test]
fn raw_and_binary_frames() {
    let now = Instant::now();
    let mut a: N = Node::default();
    a.frame(now, &"bob", "hello");
    a.frame_bytes(now, &"bob", &[0xff, 0x00]);
    a.frame_bytes(now, &"bob", br#"^{"id":1,"msg":"bin","c":0,"last":true}"#);
    let evs = events(&mut a);
    assert_eq!(
        evs[..2],
        [
            Event::Raw {
                peer: "bob",
                data: RawFrame::Text("hello".into())
            },
            Event::Raw {
                peer: "bob",
                data: RawFrame::Binary(vec![0xff, 0])
            },
        ]
    );
    assert!(matches!(&evs[2], Event::Message { payload, .. } if *payload == Payload::from("bin")));
    assert_eq!(a.stats().raw_frames, 2);
}

#[test]
fn pending_bounds_per_peer_and_total() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(11);
    let config = NodeConfig {
        max_pending_per_peer: 2,
        max_pending: 3,
        ..NodeConfig::default()
    };
    let mut a = Node::new(config);
    a.link_up("bob");
    a.link_up("carol");
    a.send(now, &"bob", "1".into(), &mut rng).expect("accepted");
    let r = a.send(now, &"bob", "2".into(), &mut rng).expect("accepted");
    assert_eq!(
        a.send(now, &"bob", "3".into(), &mut rng),
        Err(SendError::TooManyPendingForPeer { limit: 2 })
    );
    // Fire-and-forget is not bounded by pending limits.
    a.send_no_reply(now, &"bob", "4".into(), &mut rng)
        .expect("accepted");
    a.send(now, &"carol", "5".into(), &mut rng)
        .expect("accepted");
    assert_eq!(
        a.send(now, &"carol", "6".into(), &mut rng),
        Err(SendError::TooManyPending { limit: 3 })
    );
    assert!(a.cancel(r));
    a.send(now, &"carol", "6".into(), &mut rng)
        .expect("accepted");
    assert_eq!(a.pending_count(), 3);
}

#[test]
fn outbound_queue_bounds_give_backpressure() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(12);
    let config = NodeConfig {
        max_queued_frames_per_peer: 3,
        max_queued_bytes_per_peer: 1000,
        max_chunk_units: 100,
        ..NodeConfig::default()
    };
    let mut a = Node::new(config);
    a.link_up("bob");
    a.link_up("carol");
    // Bob never reads: his queue fills and sends are refused instead of growing it.
    a.send_no_reply(now, &"bob", "x".repeat(200).into(), &mut rng)
        .expect("accepted");
    let err = a
        .send_no_reply(now, &"bob", "x".repeat(200).into(), &mut rng)
        .expect_err("refused");
    assert!(
        matches!(
            err,
            SendError::Backpressure {
                queued_frames: 2,
                frames: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(a.queued_frames(&"bob"), 2);
    // A refused request registers nothing.
    assert!(matches!(
        a.send(now, &"bob", "y".repeat(150).into(), &mut rng),
        Err(SendError::Backpressure { .. })
    ));
    assert_eq!(a.pending_count(), 0);
    // Bytes bound: 10 chunks of 100 units fit the frame bound? No: too many frames and bytes.
    assert!(matches!(
        a.send_no_reply(now, &"carol", "z".repeat(999).into(), &mut rng),
        Err(SendError::Backpressure { frames: 10, .. })
    ));
    // 3 frames of control characters (6 bytes each when escaped): over 1000 bytes.
    let err = a
        .send_no_reply(now, &"carol", "\u{1}".repeat(250).into(), &mut rng)
        .expect_err("refused");
    assert!(
        matches!(err, SendError::Backpressure { frames: 3, bytes, .. } if bytes > 1000),
        "{err:?}"
    );
    // Carol is unaffected by Bob's full queue; draining Bob's frees it.
    a.send_no_reply(now, &"carol", "ok".into(), &mut rng)
        .expect("accepted");
    assert!(a.poll_transmit_to(&"bob").is_some());
    assert!(a.poll_transmit_to(&"bob").is_some());
    assert_eq!((a.queued_frames(&"bob"), a.queued_bytes(&"bob")), (0, 0));
    a.send(now, &"bob", "y".repeat(150).into(), &mut rng)
        .expect("accepted");
    let order: Vec<_> = std::iter::from_fn(|| a.poll_transmit())
        .map(|(p, _)| p)
        .collect();
    assert_eq!(order, ["bob", "carol", "bob"]);
}

#[test]
fn message_size_and_link_errors_on_send() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(13);
    let config = NodeConfig {
        max_message_units: 10,
        ..NodeConfig::default()
    };
    let mut a = Node::new(config);
    assert_eq!(
        a.send(now, &"bob", "x".into(), &mut rng),
        Err(SendError::NoLink)
    );
    a.link_up("bob");
    // Counted in UTF-16 code units: five emoji are ten units.
    a.send(now, &"bob", "😀".repeat(5).into(), &mut rng)
        .expect("accepted");
    assert_eq!(
        a.send(now, &"bob", ("😀".repeat(5) + "a").into(), &mut rng)
            .map(|_| ()),
        Err(SendError::TooLarge {
            units: 11,
            limit: 10
        })
    );
    assert!(matches!(
        a.send_no_reply(now, &"bob", json!({"a": "0123456"}).into(), &mut rng),
        Err(SendError::TooLarge { units: 15, .. })
    ));
}

#[test]
fn hostile_peer_cannot_grow_reassembly_without_bound() {
    let now = Instant::now();
    let config = NodeConfig {
        reassembly: ReassemblyLimits {
            max_message_units: 1000,
            ..ReassemblyLimits::default()
        },
        ..NodeConfig::default()
    };
    let mut a = Node::new(config);
    a.link_up("mallory");
    // Many unfinished messages.
    for id in 0..100 {
        a.frame(
            now,
            &"mallory",
            &format!(r#"^{{"id":{id},"msg":"x","c":0}}"#),
        );
    }
    assert_eq!(a.reassembler().peer_partial_count(&"mallory"), 16);
    let errors = events(&mut a);
    assert_eq!(errors.len(), 84);
    assert!(errors.iter().all(|e| matches!(
        e,
        Event::ProtocolError {
            peer: "mallory",
            error: WireError::TooManyPartialsForPeer { .. }
        }
    )));
    // One message growing past the size limit.
    let chunk = "y".repeat(600);
    a.frame(
        now,
        &"mallory",
        &format!(r#"^{{"id":0,"msg":"{chunk}","c":1}}"#),
    );
    a.frame(
        now,
        &"mallory",
        &format!(r#"^{{"id":0,"msg":"{chunk}","c":2}}"#),
    );
    assert!(matches!(
        events(&mut a).as_slice(),
        [Event::ProtocolError {
            error: WireError::MessageTooLarge { .. },
            ..
        }]
    ));
    assert_eq!(a.stats().protocol_errors, 85);
    // Stale partials expire on the timer.
    let due = a.poll_timeout().expect("a timer is set");
    assert_eq!(due, now + Duration::from_secs(60));
    a.tick(due);
    assert_eq!(a.reassembler().partial_count(), 0);
    assert_eq!(a.stats().partials_expired, 15);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn same_seed_same_frames() {
    fn run(seed: u64) -> Vec<(&'static str, String)> {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut a: N = Node::default();
        for p in ["bob", "carol", "dave"] {
            a.link_up(p);
        }
        for i in 0..20 {
            let peer = ["bob", "carol", "dave"][i % 3];
            a.send(now, &peer, json!({ "i": i }).into(), &mut rng)
                .expect("accepted");
            a.send_no_reply(now, &peer, "x".repeat(i * 1000).into(), &mut rng)
                .expect("accepted");
        }
        a.link_down(&"carol");
        std::iter::from_fn(|| a.poll_transmit()).collect()
    }
    let first = run(99);
    assert_eq!(first.len(), 28);
    assert_eq!(first, run(99));
    assert_ne!(first, run(100));
}

fn hostile_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any::<String>().prop_map(|s| format!("^{s}")),
        (
            prop_oneof![
                Just("1".to_string()),
                Just("\"1\"".to_string()),
                Just("null".to_string()),
                Just("1.5".to_string()),
                Just("[]".to_string()),
                Just("\"\\ud800\"".to_string()),
            ],
            "[a-z\\\\\"]{0,4}|\\\\ud83d|\\\\ude00",
            prop::option::of(prop_oneof![
                Just("0".to_string()),
                Just("1".to_string()),
                Just("-1".to_string()),
                Just("1e3".to_string()),
                Just("\"x\"".to_string()),
            ]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(id, msg, c, o, last)| {
                let mut f = format!(r#"^{{"id":{id},"msg":"{msg}""#);
                if o {
                    f.push_str(r#","o":1"#);
                }
                if let Some(c) = c {
                    f.push_str(&format!(r#","c":{c}"#));
                }
                if last {
                    f.push_str(r#","last":true"#);
                }
                f.push('}');
                f
            }),
    ]
}

proptest! {
    #[test]
    fn hostile_frames_never_panic(frames in prop::collection::vec(hostile_frame(), 0..40)) {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(0);
        let mut a: N = Node::default();
        a.link_up("mallory");
        let request = a.send(now, &"mallory", "q".into(), &mut rng).expect("accepted");
        for (i, frame) in frames.iter().enumerate() {
            let t = now + Duration::from_secs(i as u64);
            if i % 2 == 0 {
                a.frame(t, &"mallory", frame);
            } else {
                a.frame_bytes(t, &"mallory", frame.as_bytes());
            }
        }
        let mut errors = 0;
        for event in events(&mut a) {
            match event {
                Event::ProtocolError { peer, .. } => {
                    prop_assert_eq!(peer, "mallory");
                    errors += 1;
                }
                Event::Raw { .. } | Event::Message { .. } => {}
                Event::Response { request: r, .. } | Event::Timeout { request: r, .. } => {
                    prop_assert_eq!(r, request)
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(errors, a.stats().protocol_errors);
        // Still usable afterwards.
        a.send_no_reply(now, &"mallory", "still here".into(), &mut rng).expect("accepted");
        prop_assert!(a.poll_transmit().is_some());
    }
}
