//! Routed packets in both modes, side by side, on a route of 5 relays and a target, out and
//! back (a routed request and its response):
//!
//! - layered (src/onion, src/relay/layered.rs): the sender's work (create a packet, a reply
//!   block), each hop's work on the real path ([`KeyRing::process`] on the packet, with the
//!   relay's replay cache, then re-framing), the target's sealing of the reply, the
//!   requester's opening of it; bytes on the wire per hop (one fixed length per size class);
//! - GhostMesh's format (src/relay/packet.rs): each hop's work on the real relay path: P2PT
//!   envelope frames reassembled, the layer parsed, [`packet::unwrap_forward`] (the step
//!   `Relay::on_packet` runs), the inner layer re-encoded as envelope frames; bytes on the
//!   wire per hop, which shrink along the route because every layer is a JSON string inside
//!   JSON.
//!
//! `cargo bench -p ghostmesh --bench onion` prints the byte tables first, then criterion's
//! timings. Shorter runs: `cargo bench -p ghostmesh --bench onion -- --warm-up-time 1
//! --measurement-time 2`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ghostmesh::onion::keyring::{KeyRing, KeyRingConfig};
use ghostmesh::onion::sphinx::{self, Hop, Processed, packet_len};
use ghostmesh::relay::layered::{ONION_MAGIC, PACKET_CLASSES, class_of_packet};
use ghostmesh::relay::packet;
use ghostmesh::wire::{
    MAX_CHUNK_UNITS, MsgId, Payload, Reassembler, ReassemblyLimits, Received, encode_chunks,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

/// Relays on the benchmarked route (the target follows them).
const RELAYS: usize = 5;
/// The message of the request and of the response.
const MESSAGE_BYTES: usize = 1000;

fn id(i: usize) -> String {
    format!("{i:040x}")
}

fn message() -> Value {
    json!({"text": "x".repeat(MESSAGE_BYTES)})
}

// ---------------------------------------------------------------------------------------------
// Layered

/// Node `i`'s key ring, the same at every call (fresh replay cache).
fn ring(i: usize) -> KeyRing {
    KeyRing::new(
        &mut StdRng::seed_from_u64(1000 + i as u64),
        KeyRingConfig::default(),
    )
}

fn frame(packet: &[u8]) -> Vec<u8> {
    [&ONION_MAGIC[..], packet].concat()
}

/// One hop on the relay's path: strip the frame, find the class, process, re-frame.
fn layered_hop(ring: &mut KeyRing, received: &[u8], now: Instant) -> Option<Vec<u8>> {
    let packet = received.strip_prefix(&ONION_MAGIC)?;
    let params = class_of_packet(packet.len())?;
    match ring.process(&params, packet, now).ok()? {
        Processed::Forward { packet, .. } => Some(frame(&packet)),
        Processed::Deliver { payload, .. } => Some(payload),
        Processed::Reply { body, .. } => Some(body),
    }
}

/// The frames each hop receives, from the first relay to the end of the route.
fn walk(first: Vec<u8>, route: &[usize], now: Instant) -> Vec<Vec<u8>> {
    let mut frames = vec![first];
    for &node in &route[..route.len() - 1] {
        let last = frames.last().unwrap();
        frames.push(layered_hop(&mut ring(node), last, now).unwrap());
    }
    frames
}

fn layered(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let now = Instant::now();
    // Node 0 is the requester, 1..=RELAYS the relays, RELAYS + 1 the target.
    let hop = |i: usize| Hop {
        id: id(i),
        public: ring(i).public(),
    };
    let target = RELAYS + 1;
    let forward: Vec<usize> = (1..=target).collect();
    let back: Vec<usize> = (1..=RELAYS).rev().chain([0]).collect();
    let hops = |idx: &[usize]| idx.iter().map(|&i| hop(i)).collect::<Vec<_>>();
    let params = PACKET_CLASSES[0];
    let msg = packet::route_request("", "", "", &[], &Payload::Json(message()));
    let request =
        json!({"t": "q", "id": "0123456789abcdef", "msg": msg["msg"], "o": 1}).to_string();
    let response =
        json!({"t": "r", "id": "0123456789abcdef", "msg": msg["msg"], "o": 1}).to_string();

    println!("\nlayered: bytes on the wire per hop (frame = 4 + packet), by size class:");
    for p in PACKET_CLASSES {
        println!(
            "  payload up to {:>6} B: {:>6} B at every hop, out and back, any route length up to {}",
            p.payload_bytes,
            4 + packet_len(&p),
            p.max_hops
        );
    }

    for n in [3usize, 6] {
        c.bench_function(&format!("layered create ({n} hops, 4 KiB class)"), |b| {
            let route = hops(&forward[forward.len() - n..]);
            b.iter(|| {
                sphinx::create(
                    &mut rng,
                    &params,
                    black_box(&route),
                    request.as_bytes(),
                    None,
                )
                .unwrap()
            })
        });
    }
    c.bench_function(
        "layered create request + reply block (6 hops out, 6 back)",
        |b| {
            let (out, home) = (hops(&forward), hops(&back));
            b.iter(|| {
                let (block, keys) =
                    sphinx::create_reply_block(&mut rng, &params, &home, None).unwrap();
                let p = sphinx::create_with_reply(
                    &mut rng,
                    &params,
                    &out,
                    request.as_bytes(),
                    None,
                    &block,
                )
                .unwrap();
                (keys, p)
            })
        },
    );

    // Out: the request, with a reply block, through every hop.
    let (block, keys) = sphinx::create_reply_block(&mut rng, &params, &hops(&back), None).unwrap();
    let (_, p) = sphinx::create_with_reply(
        &mut rng,
        &params,
        &hops(&forward),
        request.as_bytes(),
        None,
        &block,
    )
    .unwrap();
    let out = walk(frame(&p), &forward, now);
    let sizes: Vec<usize> = out.iter().map(Vec::len).collect();
    println!(
        "layered, {MESSAGE_BYTES}-byte message, {RELAYS} relays: request bytes per hop (relay 1 .. target) = {sizes:?}"
    );
    for (k, (&node, received)) in forward.iter().zip(&out).enumerate() {
        let what = if node == target { "target" } else { "relay" };
        c.bench_function(
            &format!("layered request hop {}/{} ({what})", k + 1, forward.len()),
            |b| {
                b.iter_batched(
                    || ring(node),
                    |mut r| layered_hop(&mut r, black_box(received), now).unwrap(),
                    BatchSize::SmallInput,
                )
            },
        );
    }

    // Back: the target answers through the reply block; the return relays and the requester.
    c.bench_function("layered reply: target seals the response", |b| {
        b.iter(|| sphinx::use_reply_block(&mut rng, &params, &block, response.as_bytes()).unwrap())
    });
    let (_, p) = sphinx::use_reply_block(&mut rng, &params, &block, response.as_bytes()).unwrap();
    let home = walk(frame(&p), &back, now);
    let sizes: Vec<usize> = home.iter().map(Vec::len).collect();
    println!(
        "layered, {MESSAGE_BYTES}-byte message, {RELAYS} relays: response bytes per hop (relay {RELAYS} .. requester) = {sizes:?}"
    );
    for (k, (&node, received)) in back.iter().zip(&home).enumerate() {
        let what = if node == 0 { "requester" } else { "relay" };
        c.bench_function(
            &format!("layered reply hop {}/{} ({what})", k + 1, back.len()),
            |b| {
                b.iter_batched(
                    || ring(node),
                    |mut r| layered_hop(&mut r, black_box(received), now).unwrap(),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    let body = layered_hop(&mut ring(0), home.last().unwrap(), now).unwrap();
    c.bench_function("layered reply: requester opens the response", |b| {
        b.iter(|| sphinx::open_reply(&params, &keys, black_box(&body)).unwrap())
    });

    // The largest class, and a dropped packet.
    let big = PACKET_CLASSES[2];
    let (_, p) = sphinx::create(
        &mut rng,
        &big,
        &hops(&forward),
        &vec![7u8; big.payload_bytes],
        None,
    )
    .unwrap();
    let received = frame(&p);
    c.bench_function("layered relay hop (240 KiB class)", |b| {
        b.iter_batched(
            || ring(1),
            |mut r| layered_hop(&mut r, black_box(&received), now).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut bad = out[0].clone();
    bad[100] ^= 1;
    c.bench_function("layered relay hop (tampered header, dropped)", |b| {
        let mut r = ring(1);
        b.iter(|| assert!(layered_hop(&mut r, black_box(&bad), now).is_none()))
    });
}

// ---------------------------------------------------------------------------------------------
// GhostMesh's format

/// A packet as P2PT envelope frames, as a node sends it.
fn envelope(v: &Value) -> Vec<String> {
    encode_chunks(&MsgId::Int(1), &Payload::Json(v.clone()), MAX_CHUNK_UNITS)
}

/// One hop on the relay's path: reassemble, parse, [`packet::unwrap_forward`] and re-encode
/// (relays); reassemble, parse and read the message (target).
fn compat_hop(frames: &[String]) -> Result<Vec<String>, Payload> {
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());
    let now = Instant::now();
    let mut msg = None;
    for f in frames {
        if let Ok(Received::Complete(m)) = r.push(&0, f, now) {
            msg = Some(m.payload);
        }
    }
    let Some(Payload::Json(v)) = msg else {
        panic!("not a packet")
    };
    let ttl = v["ttl"].as_i64().unwrap();
    match v[packet::ONION_KEY].as_str() {
        Some("onion-forward") => Ok(envelope(&packet::unwrap_forward(&v, ttl).unwrap())),
        _ => Err(packet::msg_payload(&v).unwrap()),
    }
}

/// The frames each hop of `route` receives for `body` wrapped along it.
fn compat_walk(route: &[String], body: &Value) -> Vec<Vec<String>> {
    let mut frames = vec![envelope(&packet::wrap(
        "0123456789abcdef",
        route,
        &Payload::Json(body.clone()),
    ))];
    while let Ok(next) = compat_hop(frames.last().unwrap()) {
        frames.push(next);
    }
    frames
}

fn bytes(frames: &[String]) -> usize {
    frames.iter().map(String::len).sum()
}

fn compat(c: &mut Criterion) {
    let requester = id(0);
    let relays: Vec<String> = (1..=RELAYS).map(id).collect();
    let target = id(RELAYS + 1);
    let forward: Vec<String> = relays.iter().cloned().chain([target.clone()]).collect();
    let back: Vec<String> = relays
        .iter()
        .rev()
        .cloned()
        .chain([requester.clone()])
        .collect();
    let request = packet::route_request(
        "0123456789abcdef",
        "fedcba9876543210",
        &requester,
        &back,
        &Payload::Json(message()),
    );
    let response = packet::route_response(
        "0123456789abcdef",
        "fedcba9876543210",
        &target,
        &Payload::Json(message()),
    );

    println!();
    for (name, route, body) in [
        ("request", &forward, &request),
        ("response", &back, &response),
    ] {
        let frames = compat_walk(route, body);
        assert_eq!(frames.len(), route.len());
        let sizes: Vec<usize> = frames.iter().map(|f| bytes(f)).collect();
        println!(
            "ghostmesh format, {MESSAGE_BYTES}-byte message, {RELAYS} relays: {name} bytes per hop (first hop .. end) = {sizes:?}"
        );
        for (k, received) in frames.iter().enumerate() {
            let what = if k + 1 == frames.len() {
                "end"
            } else {
                "relay"
            };
            c.bench_function(
                &format!(
                    "ghostmesh-format {name} hop {}/{} ({what})",
                    k + 1,
                    frames.len()
                ),
                |b| b.iter(|| compat_hop(black_box(received))),
            );
        }
    }
    for n in [1usize, 3, 5, 8] {
        let route: Vec<String> = (1..=n + 1).map(id).collect();
        let back: Vec<String> = (1..=n).rev().map(id).chain([requester.clone()]).collect();
        let request = packet::route_request(
            "0123456789abcdef",
            "fedcba9876543210",
            &requester,
            &back,
            &Payload::Json(message()),
        );
        let sizes: Vec<usize> = compat_walk(&route, &request)
            .iter()
            .map(|f| bytes(f))
            .collect();
        println!(
            "ghostmesh format, {n} relays: request bytes per hop (first hop .. target) = {sizes:?}"
        );
    }
}

criterion_group!(onion, layered, compat);
criterion_main!(onion);
