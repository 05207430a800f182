//! Layered onion packets (src/onion/sphinx.rs): time to create a packet for 3 and 5 hops, time
//! for one hop to process one (relay and destination), and the bytes on the wire per hop.
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

criterion_group!(onion, benches);
criterion_main!(onion);
