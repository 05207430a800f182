//! Property tests: the binary-string codec, the decoder on hostile input, and the swarm core's
//! invariants against a simple model under random sequences of announces, answers, closes and
//! sweeps.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ghostmesh_tracker::swarm::{ConnId, CoreConfig, TrackerCore};
use ghostmesh_tracker::wire::{Id20, OutMessage, Request, decode_request};
use proptest::prelude::*;
use rand::SeedableRng;
use serde_json::json;

proptest! {
    #[test]
    fn any_20_bytes_round_trip_through_json(bytes in proptest::array::uniform20(any::<u8>())) {
        let id = Id20(bytes);
        let text = serde_json::to_string(&id).unwrap();
        let back: Id20 = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, id);
        // Our own encoder (used for replies) agrees with serde_json's reading of it.
        let reply = OutMessage::AnnounceReply { info_hash: id, complete: 0, incomplete: 0, interval: 1 }.encode();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        prop_assert_eq!(Id20::from_binary_str(v["info_hash"].as_str().unwrap()).unwrap(), id);
    }

    #[test]
    fn strings_with_a_code_point_above_255_are_rejected(
        prefix in proptest::collection::vec(0u8..=255, 0..20),
        high in 256u32..0x10FFFF,
    ) {
        let Some(c) = char::from_u32(high) else { return Ok(()) };
        let mut s: String = prefix.iter().map(|&b| b as char).collect();
        s.push(c);
        while s.chars().count() < 20 { s.push('a'); }
        prop_assert!(Id20::from_binary_str(&s).is_err());
    }

    #[test]
    fn strings_of_the_wrong_length_are_rejected(len in 0usize..60) {
        prop_assume!(len != 20);
        let s: String = std::iter::repeat_n('\u{e9}', len).collect();
        prop_assert!(Id20::from_binary_str(&s).is_err());
    }

    #[test]
    fn the_decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
    }

    #[test]
    fn the_decoder_never_panics_on_arbitrary_json(v in arb_json()) {
        let _ = decode_request(v.to_string().as_bytes());
        let mut obj = json!({"action": "announce"});
        obj["info_hash"] = v.clone();
        obj["peer_id"] = v.clone();
        obj["offers"] = v.clone();
        obj["left"] = v.clone();
        obj["event"] = v;
        // Every failure carries an action, so a reply can always be formed.
        if let Err(e) = decode_request(obj.to_string().as_bytes()) {
            let reply: serde_json::Value = serde_json::from_str(&OutMessage::from_decode_error(e).encode()).unwrap();
            prop_assert!(reply["action"].is_string());
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::hash_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One step of a random session.
#[derive(Debug, Clone)]
enum Op {
    Announce {
        conn: u8,
        swarm: u8,
        peer: u8,
        event: u8,
        left: Option<u8>,
        offers: u8,
    },
    Answer {
        conn: u8,
        swarm: u8,
        peer: u8,
        pick: u8,
    },
    Close {
        conn: u8,
    },
    Sweep {
        advance_ms: u16,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..5, 0u8..3, 0u8..6, 0u8..6, proptest::option::of(0u8..3), 0u8..7)
            .prop_map(|(conn, swarm, peer, event, left, offers)| Op::Announce { conn, swarm, peer, event, left, offers }),
        2 => (0u8..5, 0u8..3, 0u8..6, any::<u8>()).prop_map(|(conn, swarm, peer, pick)| Op::Answer { conn, swarm, peer, pick }),
        1 => (0u8..5).prop_map(|conn| Op::Close { conn }),
        1 => (0u16..3000).prop_map(|advance_ms| Op::Sweep { advance_ms }),
    ]
}

fn hash(s: u8) -> Id20 {
    Id20([s.wrapping_add(0x80); 20])
}
fn peer(p: u8) -> Id20 {
    Id20([p; 20])
}

/// What the model knows about a peer.
#[derive(Debug, Clone, Copy)]
struct ModelPeer {
    conn: u64,
    seeder: bool,
    last_seen: Instant,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn swarm_invariants_hold_under_random_sessions(ops in proptest::collection::vec(arb_op(), 1..80), seed in any::<u64>()) {
        let cfg = CoreConfig {
            peer_timeout: Duration::from_secs(2),
            offer_timeout: Duration::from_secs(1),
            max_offers: 4,
            max_peers_per_swarm: 5,
            max_swarms_per_connection: 4,
            ..CoreConfig::default()
        };
        let mut core = TrackerCore::new(cfg.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut now = Instant::now();
        let mut model: HashMap<u8, HashMap<u8, ModelPeer>> = HashMap::new();
        // Offers delivered and not yet answered: (swarm, offerer, offer_id) -> (recipient conn).
        let mut delivered: Vec<(u8, Id20, Id20, u64, Instant)> = Vec::new();
        let mut next_offer = 0u32;

        for op in ops {
            let mut out = Vec::new();
            match op {
                Op::Announce { conn, swarm, peer: p, event, left, offers } => {
                    let events = ["started", "stopped", "completed", "update", "paused", "empty"];
                    let mut m = json!({"action": "announce", "info_hash": hash(swarm).to_binary_string(),
                                       "peer_id": peer(p).to_binary_string(), "event": events[event as usize]});
                    if let Some(l) = left { m["left"] = l.into(); }
                    let list: Vec<_> = (0..offers).map(|_| {
                        next_offer += 1;
                        let mut oid = [0u8; 20];
                        oid[..4].copy_from_slice(&next_offer.to_be_bytes());
                        json!({"offer_id": Id20(oid).to_binary_string(), "offer": {"type": "offer", "sdp": "x"}})
                    }).collect();
                    m["offers"] = list.into();
                    let req = decode_request(m.to_string().as_bytes()).unwrap();
                    core.handle(ConnId(conn as u64), req, now, &mut rng, &mut out);

                    // Model the same announce.
                    let conn = conn as u64;
                    let sw = model.entry(swarm).or_default();
                    let held = |model: &HashMap<u8, HashMap<u8, ModelPeer>>| model.values().flat_map(|s| s.values()).filter(|mp| mp.conn == conn).count();
                    let mut refused = false;
                    if events[event as usize] == "stopped" {
                        if sw.get(&p).is_some_and(|mp| mp.conn == conn) { sw.remove(&p); }
                    } else if let Some(mp) = sw.get(&p).copied() {
                        if mp.conn != conn && held(&model) >= cfg.max_swarms_per_connection {
                            refused = true;
                        } else {
                            let seeder = if left.is_some() || event == 2 { event == 2 || left == Some(0) } else { mp.seeder };
                            model.entry(swarm).or_default().insert(p, ModelPeer { conn, seeder, last_seen: now });
                        }
                    } else if held(&model) >= cfg.max_swarms_per_connection || model[&swarm].len() >= cfg.max_peers_per_swarm {
                        refused = true;
                    } else {
                        model.entry(swarm).or_default().insert(p, ModelPeer { conn, seeder: event == 2 || left == Some(0), last_seen: now });
                    }
                    model.retain(|_, s| !s.is_empty());

                    // Exactly one reply to the announcer, first; then offers to distinct other peers.
                    prop_assert!(!out.is_empty());
                    prop_assert_eq!(out[0].to, ConnId(conn));
                    match &out[0].msg {
                        OutMessage::Error { .. } => prop_assert!(refused, "unexpected refusal"),
                        OutMessage::AnnounceReply { complete, incomplete, .. } => {
                            prop_assert!(!refused, "expected a refusal");
                            let s = model.get(&swarm);
                            let seeders = s.map_or(0, |s| s.values().filter(|m| m.seeder).count()) as u64;
                            let total = s.map_or(0, |s| s.len()) as u64;
                            prop_assert_eq!((*complete, *incomplete), (seeders, total - seeders));
                        }
                        other => prop_assert!(false, "first output {:?}", other),
                    }
                    let relayed: Vec<_> = out[1..].iter().collect();
                    let is_member = model.get(&swarm).is_some_and(|s| s.get(&p).is_some_and(|mp| mp.conn == conn));
                    let others = model.get(&swarm).map_or(0, |s| s.len().saturating_sub(1));
                    let expect = if is_member && events[event as usize] != "stopped" { (offers as usize).min(cfg.max_offers).min(others) } else { 0 };
                    prop_assert_eq!(relayed.len(), expect);
                    // Recipients are peers of the swarm other than the offerer: per connection,
                    // no more offers than it holds other peers.
                    let mut per_conn: HashMap<u64, usize> = HashMap::new();
                    let mut ids = HashSet::new();
                    for o in &relayed {
                        let OutMessage::Offer { peer_id, offer_id, .. } = &o.msg else { prop_assert!(false, "not an offer"); unreachable!() };
                        prop_assert_eq!(*peer_id, peer(p));
                        prop_assert!(ids.insert(*offer_id));
                        *per_conn.entry(o.to.0).or_default() += 1;
                        delivered.push((swarm, peer(p), *offer_id, o.to.0, now));
                    }
                    for (c, n) in per_conn {
                        let there = model[&swarm].iter().filter(|(pid, mp)| mp.conn == c && **pid != p).count();
                        prop_assert!(n <= there, "conn {} got {} offers but holds {} other peers", c, n, there);
                    }
                }
                Op::Answer { conn, swarm, peer: p, pick } => {
                    if delivered.is_empty() { continue; }
                    let (sw, offerer, offer_id, to_conn, at) = delivered[pick as usize % delivered.len()];
                    let m = json!({"action": "announce", "info_hash": hash(swarm).to_binary_string(),
                                   "peer_id": peer(p).to_binary_string(), "to_peer_id": offerer.to_binary_string(),
                                   "offer_id": offer_id.to_binary_string(), "answer": {"type": "answer", "sdp": "y"}});
                    let req = decode_request(m.to_string().as_bytes()).unwrap();
                    core.handle(ConnId(conn as u64), req, now, &mut rng, &mut out);
                    // Answering is a sign of life for the answerer's own membership.
                    if let Some(mp) = model.get_mut(&swarm).and_then(|s| s.get_mut(&p)).filter(|mp| mp.conn == conn as u64) {
                        mp.last_seen = now;
                    }
                    prop_assert_eq!(out.len(), 1);
                    if let OutMessage::Answer { .. } = out[0].msg {
                        // Relayed answers come only from the connection the offer went to, in time,
                        // for the right swarm, to the offerer's current connection.
                        prop_assert_eq!(sw, swarm);
                        prop_assert_eq!(to_conn, conn as u64);
                        prop_assert!(now.duration_since(at) < cfg.offer_timeout);
                        let offerer_conn = model[&swarm].get(&offerer.0[0]).map(|mp| mp.conn);
                        prop_assert_eq!(Some(out[0].to.0), offerer_conn);
                        delivered.retain(|d| !(d.1 == offerer && d.2 == offer_id));
                    } else {
                        prop_assert_eq!(out[0].to, ConnId(conn as u64));
                    }
                }
                Op::Close { conn } => {
                    core.connection_closed(ConnId(conn as u64));
                    for s in model.values_mut() { s.retain(|_, mp| mp.conn != conn as u64); }
                    model.retain(|_, s| !s.is_empty());
                    for s in 0..3 { for p in 0..6 {
                        prop_assert!(!core.is_member(ConnId(conn as u64), &hash(s), &peer(p)), "a peer survived its socket");
                    }}
                }
                Op::Sweep { advance_ms } => {
                    now += Duration::from_millis(advance_ms as u64);
                    core.sweep(now);
                    for s in model.values_mut() { s.retain(|_, mp| now.duration_since(mp.last_seen) < cfg.peer_timeout); }
                    model.retain(|_, s| !s.is_empty());
                }
            }
            core.check_invariants().map_err(TestCaseError::fail)?;
            let st = core.stats();
            prop_assert_eq!(st.swarms, model.len());
            prop_assert_eq!(st.peers, model.values().map(HashMap::len).sum::<usize>());
            prop_assert_eq!(st.seeders, model.values().flat_map(|s| s.values()).filter(|m| m.seeder).count());
        }
    }
}

#[test]
fn same_seed_same_peer_choice() {
    let run = |seed: u64| {
        let mut core = TrackerCore::new(CoreConfig::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let now = Instant::now();
        let mut out = Vec::new();
        for p in 0..50u8 {
            let m = json!({"action": "announce", "info_hash": hash(0).to_binary_string(), "peer_id": peer(p).to_binary_string()});
            core.handle(
                ConnId(p as u64),
                decode_request(m.to_string().as_bytes()).unwrap(),
                now,
                &mut rng,
                &mut out,
            );
        }
        out.clear();
        let offers: Vec<_> = (0..10u8)
            .map(|i| json!({"offer_id": Id20([i; 20]).to_binary_string(), "offer": {}}))
            .collect();
        let m = json!({"action": "announce", "info_hash": hash(0).to_binary_string(), "peer_id": peer(200).to_binary_string(), "offers": offers});
        core.handle(
            ConnId(999),
            decode_request(m.to_string().as_bytes()).unwrap(),
            now,
            &mut rng,
            &mut out,
        );
        out.iter()
            .filter(|o| o.msg.is_offer())
            .map(|o| o.to.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    assert_eq!(run(1).len(), 10);
}

#[test]
fn requests_decode_to_the_right_kind() {
    let ih = hash(1).to_binary_string();
    let r = decode_request(
        json!({"action": "scrape", "info_hash": [ih, ih]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert!(matches!(r, Request::Scrape(s) if s.info_hashes.as_ref().map(Vec::len) == Some(2)));
}
