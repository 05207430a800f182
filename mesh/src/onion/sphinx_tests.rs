//! Tests of the layered packets: a small in-memory network of peers whose processing records
//! every byte they handle.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const MARKER: &[u8] = b"GHOSTMESH-PLAINTEXT-MARKER-7f3a9c";
const REPLY_MARKER: &[u8] = b"GHOSTMESH-REPLY-MARKER-0d41e2";

struct Node {
    id: String,
    keys: NodeKeys,
    cache: ReplayCache,
    /// Every byte this peer handled as a relay (packets in and out).
    seen: Vec<Vec<u8>>,
}

struct Net {
    params: SphinxParams,
    nodes: Vec<Node>,
    now: Instant,
}

/// What one run of a packet along its route produced.
struct Trace {
    /// (peer index, packet it received).
    hops: Vec<(usize, Vec<u8>)>,
    delays: Vec<Duration>,
    end: Result<Processed, SphinxError>,
}

impl Net {
    fn new(seed: u64, n: usize, params: SphinxParams) -> Net {
        // not the seed the tests' senders use: node secrets and packet scalars must differ
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_0000_0000);
        let nodes = (0..n)
            .map(|i| Node {
                id: format!("{:040x}", 0xabc0_0000_u64 + i as u64),
                keys: NodeKeys::generate(&mut rng),
                cache: ReplayCache::new(1000, Duration::from_secs(600)),
                seen: Vec::new(),
            })
            .collect();
        Net {
            params,
            nodes,
            now: Instant::now(),
        }
    }

    fn hops(&self, idx: &[usize]) -> Vec<Hop> {
        idx.iter()
            .map(|&i| Hop {
                id: self.nodes[i].id.clone(),
                public: self.nodes[i].keys.public(),
            })
            .collect()
    }

    fn index(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// One peer processes one packet; a relay records what it received and what it sends.
    fn step(&mut self, to: usize, packet: &[u8]) -> Result<Processed, SphinxError> {
        let node = &mut self.nodes[to];
        let r = process(&self.params, &node.keys, packet, &mut node.cache, self.now);
        if let Ok(Processed::Forward { packet: out, .. }) = &r {
            node.seen.push(packet.to_vec());
            node.seen.push(out.clone());
        }
        r
    }

    /// Runs a packet until it is delivered or dropped.
    fn run(&mut self, first: &str, packet: Vec<u8>) -> Trace {
        let mut at = self.index(first);
        let mut packet = packet;
        let mut trace = Trace {
            hops: Vec::new(),
            delays: Vec::new(),
            end: Err(SphinxError::EmptyRoute),
        };
        for _ in 0..=MAX_HOPS_LIMIT {
            trace.hops.push((at, packet.clone()));
            match self.step(at, &packet) {
                Ok(Processed::Forward {
                    next,
                    packet: p,
                    delay,
                }) => {
                    trace.delays.push(delay);
                    at = self.index(&next);
                    packet = p;
                }
                end => {
                    trace.end = end;
                    return trace;
                }
            }
        }
        panic!("packet did not end");
    }

    /// Whether any relay ever handled bytes containing a 12-byte window of `secret`.
    fn relays_saw(&self, secret: &[u8]) -> bool {
        self.nodes.iter().any(|n| {
            n.seen.iter().any(|bytes| {
                secret
                    .windows(12)
                    .any(|w| bytes.windows(w.len()).any(|b| b == w))
            })
        })
    }
}

fn marker_payload(len: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(len).collect()
}

fn small() -> SphinxParams {
    SphinxParams {
        max_hops: 4,
        payload_bytes: 48,
    }
}

#[test]
fn layout_sizes() {
    let p = SphinxParams::default();
    assert_eq!(header_len(&p), 505);
    assert_eq!(reply_block_len(&p), 557);
    assert_eq!(body_len(&p), 4686);
    assert_eq!(packet_len(&p), 5191);
}

#[test]
fn route_lengths_deliver_with_constant_length_and_no_plaintext_at_relays() {
    let params = SphinxParams::default();
    for n in [1usize, 3, 5, params.max_hops] {
        let mut net = Net::new(n as u64, n, params);
        let mut rng = StdRng::seed_from_u64(100 + n as u64);
        let route: Vec<usize> = (0..n).collect();
        let payload = marker_payload(params.payload_bytes);
        let (first, packet) = create(&mut rng, &params, &net.hops(&route), &payload, None).unwrap();
        assert_eq!(first, net.nodes[0].id);
        let trace = net.run(&first, packet);
        let visited: Vec<usize> = trace.hops.iter().map(|h| h.0).collect();
        assert_eq!(visited, route, "route of {n}");
        for (_, p) in &trace.hops {
            assert_eq!(p.len(), packet_len(&params), "route of {n}");
        }
        match trace.end {
            Ok(Processed::Deliver {
                payload: got,
                reply,
            }) => {
                assert_eq!(got, payload);
                assert!(reply.is_none());
            }
            other => panic!("route of {n}: {other:?}"),
        }
        assert!(
            !net.relays_saw(MARKER),
            "a relay saw the plaintext (route {n})"
        );
        // every hop's bytes differ entirely from the last hop's (no constant-position leak)
        assert!(trace.delays.iter().all(|d| d.is_zero()));
    }
}

#[test]
fn the_plaintext_search_finds_plaintext() {
    // control for the relay checks: the destination (not a relay) holds the marker, and a relay
    // that recorded it would be caught
    let params = small();
    let mut net = Net::new(12, 2, params);
    let mut rng = StdRng::seed_from_u64(12);
    let (first, packet) = create(&mut rng, &params, &net.hops(&[0, 1]), MARKER, None).unwrap();
    let Ok(Processed::Deliver { payload, .. }) = net.run(&first, packet).end else {
        panic!()
    };
    assert!(!net.relays_saw(MARKER));
    net.nodes[0]
        .seen
        .push([&[1u8, 2][..], &payload[3..20], &[3]].concat());
    assert!(net.relays_saw(MARKER));
}

#[test]
fn short_payloads_and_empty_payload() {
    let params = small();
    let mut net = Net::new(1, 2, params);
    let mut rng = StdRng::seed_from_u64(2);
    for payload in [&b""[..], b"x", &[7u8; 48]] {
        let (first, packet) = create(&mut rng, &params, &net.hops(&[0, 1]), payload, None).unwrap();
        match net.run(&first, packet).end {
            Ok(Processed::Deliver { payload: got, .. }) => assert_eq!(got, payload),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn route_errors_are_refused() {
    let params = small();
    let net = Net::new(3, 6, params);
    let mut rng = StdRng::seed_from_u64(3);
    let too_long = net.hops(&[0, 1, 2, 3, 4]);
    assert_eq!(
        create(&mut rng, &params, &too_long, b"x", None).unwrap_err(),
        SphinxError::TooManyHops { hops: 5, max: 4 }
    );
    assert!(create(&mut rng, &params, &net.hops(&[0, 1, 2, 3]), b"x", None).is_ok());
    assert_eq!(
        create(&mut rng, &params, &[], b"x", None).unwrap_err(),
        SphinxError::EmptyRoute
    );
    assert!(matches!(
        create(&mut rng, &params, &net.hops(&[0, 1, 0]), b"x", None),
        Err(SphinxError::RouteLoop(_))
    ));
    assert!(matches!(
        create_reply_block(&mut rng, &params, &net.hops(&[2, 2]), None),
        Err(SphinxError::RouteLoop(_))
    ));
    let mut bad = net.hops(&[0, 1]);
    bad[1].id = bad[1].id.to_uppercase();
    assert!(matches!(
        create(&mut rng, &params, &bad, b"x", None),
        Err(SphinxError::BadHopId(_))
    ));
    let mut bad = net.hops(&[0, 1]);
    bad[1].public = [0; 32];
    assert!(matches!(
        create(&mut rng, &params, &bad, b"x", None),
        Err(SphinxError::BadHopKey(_))
    ));
    assert_eq!(
        create(&mut rng, &params, &net.hops(&[0]), &[0; 49], None).unwrap_err(),
        SphinxError::PayloadTooLarge { len: 49, max: 48 }
    );
    let bad_params = SphinxParams {
        max_hops: 0,
        payload_bytes: 1,
    };
    assert_eq!(
        create(&mut rng, &bad_params, &net.hops(&[0]), b"", None).unwrap_err(),
        SphinxError::BadParams
    );
}

#[test]
fn wrong_peer_and_bad_lengths_are_dropped() {
    let params = small();
    let mut net = Net::new(4, 3, params);
    let mut rng = StdRng::seed_from_u64(4);
    let (_, packet) = create(&mut rng, &params, &net.hops(&[0, 1]), b"hi", None).unwrap();
    assert_eq!(net.step(2, &packet).unwrap_err(), SphinxError::BadMac);
    let len = packet_len(&params);
    assert_eq!(
        net.step(0, &packet[..len - 1]).unwrap_err(),
        SphinxError::BadLength {
            expected: len,
            got: len - 1
        }
    );
    let mut longer = packet.clone();
    longer.push(0);
    assert!(matches!(
        net.step(0, &longer),
        Err(SphinxError::BadLength { .. })
    ));
    let mut zero_alpha = packet.clone();
    zero_alpha[1..33].fill(0);
    assert_eq!(net.step(0, &zero_alpha).unwrap_err(), SphinxError::BadKey);
    // the original still works: drops are not remembered
    assert!(matches!(
        net.step(0, &packet),
        Ok(Processed::Forward { .. })
    ));
}

/// The error expected when byte `j` of a packet is flipped on the way to a hop.
fn expect_tamper_error(params: &SphinxParams, j: usize, err: &SphinxError, forward: bool) {
    let hl = header_len(params);
    let ok = match j {
        0 => matches!(err, SphinxError::BadVersion(_)),
        1..=32 => matches!(err, SphinxError::BadMac | SphinxError::BadKey),
        _ if j < hl => *err == SphinxError::BadMac,
        _ => forward && *err == SphinxError::PayloadTampered,
    };
    assert!(ok, "byte {j}: {err:?}");
}

#[test]
fn any_flipped_byte_is_dropped_at_the_next_hop() {
    let params = small();
    let mut net = Net::new(5, 3, params);
    let mut rng = StdRng::seed_from_u64(5);
    let (first, packet) = create(&mut rng, &params, &net.hops(&[0, 1, 2]), MARKER, None).unwrap();
    let honest = net.run(&first, packet.clone());
    assert!(matches!(honest.end, Ok(Processed::Deliver { .. })));
    // fresh caches: the honest run remembered its tags
    let mut net = Net::new(5, 3, params);
    for (at, received) in &honest.hops {
        for j in 0..received.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = received.clone();
                bad[j] ^= bit;
                let err = net.step(*at, &bad).unwrap_err();
                expect_tamper_error(&params, j, &err, true);
            }
        }
    }
    assert!(net.nodes.iter().all(|n| n.cache.is_empty()));
}

#[test]
fn replayed_packet_is_dropped_at_the_same_relay() {
    let params = small();
    let mut net = Net::new(6, 3, params);
    let mut rng = StdRng::seed_from_u64(6);
    let (_, packet) = create(&mut rng, &params, &net.hops(&[0, 1, 2]), b"hi", None).unwrap();
    let Ok(Processed::Forward { packet: p1, .. }) = net.step(0, &packet) else {
        panic!()
    };
    assert_eq!(net.step(0, &packet).unwrap_err(), SphinxError::Replay);
    let Ok(Processed::Forward { packet: p2, .. }) = net.step(1, &p1) else {
        panic!()
    };
    assert_eq!(net.step(1, &p1).unwrap_err(), SphinxError::Replay);
    assert!(matches!(net.step(2, &p2), Ok(Processed::Deliver { .. })));
    assert_eq!(net.step(2, &p2).unwrap_err(), SphinxError::Replay);
    // the same payload sent again is a new packet, not a replay
    let (_, again) = create(&mut rng, &params, &net.hops(&[0, 1, 2]), b"hi", None).unwrap();
    assert!(matches!(net.step(0, &again), Ok(Processed::Forward { .. })));
}

#[test]
fn replay_cache_is_bounded_refuses_when_full_and_expires() {
    let ttl = Duration::from_secs(10);
    let mut cache = ReplayCache::new(100, ttl);
    let t0 = Instant::now();
    let tag = |i: u32| {
        let mut tag = [0u8; 16];
        tag[..4].copy_from_slice(&i.to_be_bytes());
        tag
    };
    for i in 0..1000u32 {
        assert_eq!(cache.insert(tag(i), t0), i < 100);
        assert!(cache.len() <= 100);
        assert!(cache.map_len() <= 100);
    }
    // A flood never pushes the first tags out.
    assert_eq!(cache.refused(), 900);
    assert!(cache.contains(&tag(0), t0 + Duration::from_secs(9)));
    assert!(!cache.contains(&tag(999), t0));
    assert!(cache.is_full(t0));
    assert!(!cache.contains(&tag(0), t0 + ttl));
    assert!(cache.is_empty());
    assert!(cache.insert(tag(999), t0 + ttl));
    assert_eq!(ReplayCache::new(0, ttl).capacity(), 1);
}

#[test]
fn a_full_replay_cache_drops_new_packets_and_still_knows_old_ones() {
    let params = small();
    let mut net = Net::new(13, 2, params);
    net.nodes[0].cache = ReplayCache::new(2, Duration::from_secs(600));
    let mut rng = StdRng::seed_from_u64(13);
    let packets: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            create(&mut rng, &params, &net.hops(&[0, 1]), b"x", None)
                .unwrap()
                .1
        })
        .collect();
    assert!(net.step(0, &packets[0]).is_ok());
    assert!(net.step(0, &packets[1]).is_ok());
    for p in &packets[2..] {
        assert_eq!(net.step(0, p).unwrap_err(), SphinxError::ReplayCacheFull);
    }
    assert_eq!(net.step(0, &packets[0]).unwrap_err(), SphinxError::Replay);
    assert_eq!(SphinxError::ReplayCacheFull.reason(), "replay_cache_full");
}

#[test]
fn a_reply_block_serves_every_payload_size_of_one_header_geometry() {
    // Reply blocks hold only a header, whose size depends on max_hops alone: the replier picks
    // the payload size that fits its answer.
    let (small_p, large_p) = (
        SphinxParams {
            max_hops: 4,
            payload_bytes: 48,
        },
        SphinxParams {
            max_hops: 4,
            payload_bytes: 4000,
        },
    );
    assert_eq!(reply_block_len(&small_p), reply_block_len(&large_p));
    let mut net = Net::new(14, 3, small_p);
    let mut rng = StdRng::seed_from_u64(14);
    let (block, rkeys) =
        create_reply_block(&mut rng, &small_p, &net.hops(&[1, 2, 0]), None).unwrap();
    let answer = marker_payload(3000);
    let (first, packet) = use_reply_block(&mut rng, &large_p, &block, &answer).unwrap();
    assert_eq!(packet.len(), packet_len(&large_p));
    net.params = large_p;
    let back = net.run(&first, packet);
    assert!(back.hops.iter().all(|h| h.1.len() == packet_len(&large_p)));
    let Ok(Processed::Reply { body, .. }) = back.end else {
        panic!("{:?}", back.end)
    };
    assert_eq!(open_reply(&large_p, &rkeys, &body).unwrap(), answer);
    assert!(!net.relays_saw(MARKER));
}

#[test]
fn reply_reaches_the_sender_through_the_block() {
    let params = SphinxParams::default();
    // 0 = sender A; forward 1, 2 -> 3 (destination); back 4, 5 -> A.
    let mut net = Net::new(7, 6, params);
    let mut rng = StdRng::seed_from_u64(7);
    let (block, rkeys) =
        create_reply_block(&mut rng, &params, &net.hops(&[4, 5, 0]), None).unwrap();
    assert_eq!(block.to_bytes().len(), reply_block_len(&params));
    assert_eq!(
        ReplyBlock::from_bytes(&params, &block.to_bytes()).unwrap(),
        block
    );
    let (first, packet) = create_with_reply(
        &mut rng,
        &params,
        &net.hops(&[1, 2, 3]),
        MARKER,
        None,
        &block,
    )
    .unwrap();
    let trace = net.run(&first, packet);
    let Ok(Processed::Deliver { payload, reply }) = trace.end else {
        panic!("{:?}", trace.end)
    };
    assert_eq!(payload, MARKER);
    let reply = reply.unwrap();
    assert_eq!(reply.first_hop(), net.nodes[4].id);
    // the block names neither the sender's id nor its key in clear
    let raw_a = parse_id(&net.nodes[0].id).unwrap();
    let rb = reply.to_bytes();
    assert!(!rb.windows(20).any(|w| w == raw_a));
    assert!(!rb.windows(32).any(|w| w == net.nodes[0].keys.public()));

    let (first, packet) = use_reply_block(&mut rng, &params, &reply, REPLY_MARKER).unwrap();
    let back = net.run(&first, packet.clone());
    assert_eq!(
        back.hops.iter().map(|h| h.0).collect::<Vec<_>>(),
        vec![4, 5, 0]
    );
    assert!(back.hops.iter().all(|h| h.1.len() == packet_len(&params)));
    let Ok(Processed::Reply { id, body }) = back.end else {
        panic!("{:?}", back.end)
    };
    assert_eq!(id, rkeys.id());
    assert_eq!(open_reply(&params, &rkeys, &body).unwrap(), REPLY_MARKER);
    assert!(!net.relays_saw(MARKER));
    assert!(!net.relays_saw(REPLY_MARKER));
    // single use: the same reply packet again is a replay at the first return relay
    assert_eq!(net.step(4, &packet).unwrap_err(), SphinxError::Replay);
}

#[test]
fn tampered_reply_is_dropped_by_the_sender() {
    let params = small();
    let mut net = Net::new(8, 3, params);
    let mut rng = StdRng::seed_from_u64(8);
    let (block, rkeys) =
        create_reply_block(&mut rng, &params, &net.hops(&[1, 2, 0]), None).unwrap();
    let (_, packet) = use_reply_block(&mut rng, &params, &block, b"answer").unwrap();
    let honest = net.run(&block.first_hop(), packet.clone());
    let Ok(Processed::Reply { body, .. }) = &honest.end else {
        panic!()
    };
    assert_eq!(open_reply(&params, &rkeys, body).unwrap(), b"answer");
    let hl = header_len(&params);
    for (k, (at, received)) in honest.hops.iter().enumerate() {
        for j in 0..received.len() {
            let mut net = Net::new(8, 3, params);
            let mut bad = received.clone();
            bad[j] ^= 0x01;
            if j < hl {
                let err = net.step(*at, &bad).unwrap_err();
                expect_tamper_error(&params, j, &err, false);
                continue;
            }
            // payload: return relays cannot check it; the sender's AEAD does
            let mut p = bad;
            let mut at = *at;
            let body = loop {
                match net.step(at, &p).unwrap() {
                    Processed::Forward { next, packet, .. } => {
                        at = net.index(&next);
                        p = packet;
                    }
                    Processed::Reply { body, .. } => break body,
                    other => panic!("hop {k} byte {j}: {other:?}"),
                }
            };
            assert_eq!(
                open_reply(&params, &rkeys, &body).unwrap_err(),
                SphinxError::PayloadTampered
            );
        }
    }
}

#[test]
fn delays_are_seeded_and_exponential() {
    let params = small();
    let mean = Duration::from_millis(20);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut net = Net::new(9, 4, params);
        let mut rng = StdRng::seed_from_u64(9);
        let (first, packet) = create(
            &mut rng,
            &params,
            &net.hops(&[0, 1, 2, 3]),
            b"d",
            Some(mean),
        )
        .unwrap();
        let trace = net.run(&first, packet.clone());
        assert!(matches!(trace.end, Ok(Processed::Deliver { .. })));
        assert_eq!(trace.delays.len(), 3);
        assert!(trace.delays.iter().any(|d| !d.is_zero()));
        runs.push((packet, trace.delays));
    }
    assert_eq!(runs[0], runs[1], "same seed, same packet and delays");

    let mut rng = StdRng::seed_from_u64(10);
    let n = 50_000;
    let samples: Vec<f64> = (0..n)
        .map(|_| f64::from(sample_delay_us(&mut rng, Some(mean))))
        .collect();
    let avg = samples.iter().sum::<f64>() / n as f64;
    assert!((avg - 20_000.0).abs() < 400.0, "mean {avg} us");
    // exponential: P(X > mean) = 1/e
    let above = samples.iter().filter(|&&s| s > 20_000.0).count() as f64 / n as f64;
    assert!((above - (-1f64).exp()).abs() < 0.01, "tail {above}");
    assert_eq!(sample_delay_us(&mut rng, None), 0);
    assert_eq!(sample_delay_us(&mut rng, Some(Duration::ZERO)), 0);
    // Truncated at MAX_HOP_DELAY, whatever the mean: still exponential below it.
    let cap = MAX_HOP_DELAY.as_micros() as f64;
    for mean in [Duration::from_secs(30), Duration::from_secs(1 << 40)] {
        let samples: Vec<f64> = (0..20_000)
            .map(|_| f64::from(sample_delay_us(&mut rng, Some(mean))))
            .collect();
        assert!(samples.iter().all(|&s| s < cap));
        let m = mean.as_secs_f64() * 1e6;
        let expected = m - cap / (cap / m).exp_m1(); // mean of the truncated exponential
        let avg = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!(
            (avg - expected).abs() < 0.02 * cap,
            "mean {mean:?}: {avg} vs {expected}"
        );
    }
}

#[test]
fn node_keys_are_deterministic_and_round_trip() {
    let a = NodeKeys::generate(&mut StdRng::seed_from_u64(11));
    let b = NodeKeys::generate(&mut StdRng::seed_from_u64(11));
    assert_eq!(a.public(), b.public());
    let c = NodeKeys::from_secret(a.secret()).unwrap();
    assert_eq!(c.public(), a.public());
    assert!(!format!("{a:?}").contains(&hex(&a.secret())));
    assert_eq!(SphinxError::Replay.reason(), "replay");
    assert!(SphinxError::BadMac.to_string().contains("MAC"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn process_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..800),
        exact in any::<bool>(),
    ) {
        let params = small();
        let keys = NodeKeys::from_secret([7; 32]).unwrap();
        let mut cache = ReplayCache::new(4, Duration::from_secs(1));
        let mut bytes = bytes;
        if exact {
            bytes.resize(packet_len(&params), 0x5a);
            bytes[0] = VERSION;
        }
        let r = process(&params, &keys, &bytes, &mut cache, Instant::now());
        prop_assert!(r.is_err());
        let _ = ReplyBlock::from_bytes(&params, &bytes);
        let _ = open_reply(
            &params,
            &ReplyKeys { id: [0; 16], key: [1; 32], layers: vec![[2; 32]] },
            &bytes,
        );
    }

    #[test]
    fn process_never_panics_on_mutated_packets(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8),
    ) {
        let params = small();
        let mut net = Net::new(seed, 2, params);
        let mut rng = StdRng::seed_from_u64(seed);
        let (_, mut packet) = create(&mut rng, &params, &net.hops(&[0, 1]), b"p", None).unwrap();
        let original = packet.clone();
        for (pos, val) in edits {
            let i = usize::from(pos) % packet.len();
            packet[i] = val;
        }
        let r = net.step(0, &packet);
        if packet != original {
            prop_assert!(r.is_err());
        }
    }
}
