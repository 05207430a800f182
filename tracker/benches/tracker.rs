//! Hot functions of the tracker: decoding an announce, encoding replies, and one announce with
//! 10 offers into a 1,000-peer swarm (peer choice, pending-offer bookkeeping, relay messages).
//! Run: `cargo bench -p ghostmesh-tracker`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ghostmesh_tracker::swarm::{ConnId, CoreConfig, TrackerCore};
use ghostmesh_tracker::wire::{Id20, OutMessage, decode_request};
use rand::SeedableRng;
use serde_json::json;

fn id(seed: u32) -> String {
    (0..20u32)
        .map(|i| ((seed.wrapping_mul(2654435761).wrapping_add(i * 97)) % 256) as u8 as char)
        .collect()
}

/// An announce shaped like the reference client's: 10 offers with ~600-byte SDPs.
fn announce_frame(peer: u32, n_offers: usize) -> String {
    let sdp = "v=0\r\no=rtc 2178570232 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic:WMS *\r\na=ice-options:ice2,trickle\r\na=fingerprint:sha-256 71:2D:E9:6A:4C:59:B2:F6:80:74:A9:2D:9A:94:D1:5B:6A:27:CB:A0:78:73:4B:02:6D:5B:9B:65:B0:11:80:F5\r\nm=application 37278 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\na=sendrecv\r\na=sctp-port:5000\r\na=max-message-size:262144\r\na=setup:actpass\r\na=ice-ufrag:MVN/\r\na=ice-pwd:QK4uJC8LWLSJNjaYzllsbI\r\na=candidate:1 1 UDP 2114977791 127.0.0.1 37278 typ host\r\na=end-of-candidates\r\n";
    let offers: Vec<_> = (0..n_offers)
        .map(|i| json!({"offer": {"type": "offer", "sdp": sdp}, "offer_id": id(peer * 100 + i as u32)}))
        .collect();
    json!({"numwant": n_offers, "uploaded": 0, "downloaded": 0, "action": "announce",
           "info_hash": id(7), "peer_id": id(peer), "offers": offers})
    .to_string()
}

fn benches(c: &mut Criterion) {
    let frame = announce_frame(1, 10);
    c.bench_function("decode announce with 10 offers", |b| {
        b.iter(|| decode_request(black_box(frame.as_bytes())).unwrap())
    });

    let reply = OutMessage::AnnounceReply {
        info_hash: Id20::from_binary_str(&id(7)).unwrap(),
        complete: 12,
        incomplete: 340,
        interval: 120,
    };
    c.bench_function("encode announce reply", |b| {
        b.iter(|| black_box(&reply).encode())
    });

    let mut core = TrackerCore::new(CoreConfig::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let now = Instant::now();
    let mut out = Vec::new();
    for p in 0..1000u32 {
        let f = json!({"action": "announce", "info_hash": id(7), "peer_id": id(10_000 + p)})
            .to_string();
        core.handle(
            ConnId(p as u64),
            decode_request(f.as_bytes()).unwrap(),
            now,
            &mut rng,
            &mut out,
        );
    }
    let offerer = announce_frame(1, 10);
    c.bench_function(
        "announce with 10 offers into a 1000-peer swarm (core only)",
        |b| {
            b.iter_batched(
                || decode_request(offerer.as_bytes()).unwrap(),
                |req| {
                    out.clear();
                    core.handle(ConnId(5000), req, now, &mut rng, &mut out);
                    black_box(out.len())
                },
                BatchSize::SmallInput,
            )
        },
    );
    c.bench_function(
        "announce with 10 offers into a 1000-peer swarm (decode + core + encode)",
        |b| {
            b.iter(|| {
                out.clear();
                let req = decode_request(black_box(offerer.as_bytes())).unwrap();
                core.handle(ConnId(5000), req, now, &mut rng, &mut out);
                out.iter().map(|o| o.msg.encode().len()).sum::<usize>()
            })
        },
    );
}

criterion_group!(tracker, benches);
criterion_main!(tracker);
