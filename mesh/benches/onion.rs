//! Routed packets in both modes, side by side: layered (src/onion/sphinx.rs: time to create a
//! packet for 3 and 5 hops, time for one hop to process one, bytes on the wire per hop) and
//! GhostMesh's format (src/relay/packet.rs: the relay step of parsing a layer and re-encoding
//! the inner one, and the layer sizes, which grow with every hop since each layer is a JSON
//! string inside JSON).
//!
//! `cargo bench -p ghostmesh --bench onion` (default geometry: 8 hops max, 4096-byte payload).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ghostmesh::onion::sphinx::{
    self, Hop, NodeKeys, Processed, ReplayCache, SphinxParams, header_len, packet_len,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn network(n: usize, rng: &mut StdRng) -> (Vec<NodeKeys>, Vec<Hop>) {
    let keys: Vec<NodeKeys> = (0..n).map(|_| NodeKeys::generate(rng)).collect();
    let hops = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Hop {
            id: format!("{:040x}", i + 1),
            public: k.public(),
        })
        .collect();
    (keys, hops)
}

fn benches(c: &mut Criterion) {
    let params = SphinxParams::default();
    let mut rng = StdRng::seed_from_u64(1);
    let payload = vec![0x42u8; params.payload_bytes];
    let (keys, hops) = network(5, &mut rng);
    println!(
        "onion: bytes on the wire per hop = packet_len = {} (header {}, payload capacity {}), \
         for every hop and route length up to {}",
        packet_len(&params),
        header_len(&params),
        params.payload_bytes,
        params.max_hops
    );

    for n in [3usize, 5] {
        c.bench_function(&format!("onion create {n} hops"), |b| {
            b.iter(|| {
                sphinx::create(&mut rng, &params, black_box(&hops[..n]), &payload, None).unwrap()
            })
        });
    }
    let (_, packet) = sphinx::create(&mut rng, &params, &hops, &payload, None).unwrap();
    let ttl = Duration::from_secs(3600);
    c.bench_function("onion process (relay hop)", |b| {
        b.iter_batched(
            || ReplayCache::new(16, ttl),
            |mut cache| {
                let r = sphinx::process(&params, &keys[0], &packet, &mut cache, Instant::now());
                assert!(matches!(r, Ok(Processed::Forward { .. })));
                r
            },
            BatchSize::SmallInput,
        )
    });
    let (_, last) = sphinx::create(&mut rng, &params, &hops[4..], &payload, None).unwrap();
    c.bench_function("onion process (destination)", |b| {
        b.iter_batched(
            || ReplayCache::new(16, ttl),
            |mut cache| {
                let r = sphinx::process(&params, &keys[4], &last, &mut cache, Instant::now());
                assert!(matches!(r, Ok(Processed::Deliver { .. })));
                r
            },
            BatchSize::SmallInput,
        )
    });
    let mut bad = packet.clone();
    bad[100] ^= 1;
    c.bench_function("onion process (tampered header, dropped)", |b| {
        let mut cache = ReplayCache::new(16, ttl);
        b.iter(|| sphinx::process(&params, &keys[0], &bad, &mut cache, Instant::now()).unwrap_err())
    });
}

/// GhostMesh's format: bytes per hop for a route of 5 relays and the relay's work per hop.
fn compat(c: &mut Criterion) {
    use ghostmesh::relay::packet::wrap;
    use ghostmesh::wire::{Payload, js_json};
    let route: Vec<String> = (1..=6).map(|i| format!("{i:040x}")).collect();
    let body = Payload::Json(serde_json::json!({"text": "x".repeat(1000)}));
    let outer = wrap("0123456789abcdef", &route, &body);
    // Walk the layers as relays do and print each one's size on the wire.
    let mut layer = outer.clone();
    let mut sizes = Vec::new();
    while let Some(inner) = layer.get("payload").and_then(|p| p.as_str()) {
        sizes.push(js_json::stringify(&layer).len());
        let mut next: serde_json::Value = serde_json::from_str(inner).unwrap();
        next["ttl"] = (layer["ttl"].as_i64().unwrap() - 1).into();
        layer = next;
    }
    sizes.push(js_json::stringify(&layer).len());
    println!(
        "ghostmesh format, 1000-byte message, 5 relays: bytes per hop (relay 1 .. target) = {sizes:?}"
    );
    let text = js_json::stringify(&outer);
    c.bench_function("ghostmesh-format relay hop (5 relays, first layer)", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(&text)).unwrap();
            let mut inner: serde_json::Value =
                serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
            inner["ttl"] = (v["ttl"].as_i64().unwrap() - 1).into();
            js_json::stringify(&inner)
        })
    });
}

criterion_group!(onion, benches, compat);
criterion_main!(onion);
