//! Routed delivery between `Mesh` peers over memory links, GhostMesh-compatible: 1, 3 and 5
//! relays (GhostMesh's own ttl drops routes with 2+ relays), routed request/response, random
//! relays, exact GhostMesh packets both ways with a raw peer, and every relay drop reason;
//! layered: no plaintext at relays, one length per packet at every hop, large payloads in
//! larger size classes (never a silent switch to the readable format), peers with different
//! `max_hops`, and every layered drop reason a neighbour can cause.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::relay::{OnionMessage, RelayConfig, RouteMode, RouteOptions};
use ghostmesh::signal::SignalConfig;
use ghostmesh::transport::connector::MemoryNetwork;
use ghostmesh::transport::memory::MemoryConfig;
use ghostmesh::transport::{Frame, Link};
use ghostmesh::wire::{MsgId, Payload, Reassembler, ReassemblyLimits, Received, encode_chunks};
use serde_json::{Value, json};

mod support;
use support::{connected, linked_to, raw_peer, start_tracker, wait_for, within};

const SWARM: &str = "relay-test";

async fn start(url: &str, net: &MemoryNetwork, name: &str, seed: u64) -> Mesh {
    start_with(url, net, name, seed, RelayConfig::default()).await
}

async fn start_with(
    url: &str,
    net: &MemoryNetwork,
    name: &str,
    seed: u64,
    relay: RelayConfig,
) -> Mesh {
    Mesh::builder(vec![url.to_owned()], SWARM)
        .connector(net.connector(name))
        .relay_config(relay)
        .signal_config(SignalConfig {
            offers_per_announce: 10,
            ..SignalConfig::default()
        })
        .request_timeout(Duration::from_secs(10))
        .seed(seed)
        .start()
        .await
        .unwrap()
}

async fn onion(mesh: &mut Mesh) -> OnionMessage {
    wait_for(mesh, "an onion message", |e| match e {
        MeshEvent::Onion(m) => Some(m),
        _ => None,
    })
    .await
}

/// Serves routed requests on `mesh` in the background, answering `{"echo": payload}`.
fn echo_routed(mut mesh: Mesh) -> tokio::task::JoinHandle<Mesh> {
    tokio::spawn(async move {
        while let Some(e) = mesh.next_event().await {
            if let MeshEvent::Onion(OnionMessage {
                payload,
                reply: Some(reply),
                ..
            }) = e
            {
                let answer = match payload {
                    Payload::Json(v) => json!({"echo": v}),
                    Payload::Text(t) => json!({"echo": t}),
                };
                mesh.handle()
                    .respond_routed(reply, answer.into())
                    .await
                    .unwrap();
            }
            if mesh.peers().await.is_err() {
                break;
            }
        }
        mesh
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_of_1_3_and_5_relays_deliver_and_answer() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut meshes = Vec::new();
    for i in 0..7 {
        meshes.push(start(&url, &net, &format!("p{i}"), 100 + i).await);
    }
    let ids: Vec<String> = meshes.iter().map(|m| m.peer_id().to_owned()).collect();
    // Wait for the full mesh: every peer linked to the other six.
    within("full mesh", async {
        loop {
            let mut full = true;
            for m in &meshes {
                full &= m.peers().await.unwrap().len() == 6;
            }
            if full {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut a = meshes.remove(0);
    let target = meshes.pop().unwrap();
    // Relays forward inside their cores; nobody needs to read their events.
    let relays = meshes;
    let relays_handles: Vec<_> = relays.iter().map(|m| m.handle()).collect();
    let t_id = ids[6].clone();
    let target_task = echo_routed(target);

    for mode in [RouteMode::Compat, RouteMode::Layered] {
        for n in [1usize, 3, 5] {
            let through: Vec<String> = ids[1..=n].to_vec();
            let route = RouteOptions::through(through.clone()).mode(mode);
            let before = relays_handles[0].relay_stats().await.unwrap();
            let answer = within(
                "routed request",
                a.send_routed(&t_id, json!({"n": n}).into(), Some(route)),
            )
            .await
            .unwrap();
            assert_eq!(
                answer,
                Payload::Json(json!({"echo": {"n": n}})),
                "{n} relays, {mode:?}"
            );
            // Relay 1 carried it both ways, in the format asked for.
            let after = relays_handles[0].relay_stats().await.unwrap();
            let (compat, layered) = (
                after.forwarded - before.forwarded,
                after.layered_forwarded - before.layered_forwarded,
            );
            match mode {
                RouteMode::Layered => assert_eq!((compat, layered), (0, 2), "{mode:?} {n}"),
                _ => assert_eq!((compat, layered), (2, 0), "{mode:?} {n}"),
            }
        }
    }
    // Random relays.
    let answer = a
        .send_routed(
            &t_id,
            "hi".into(),
            Some(RouteOptions {
                through: vec![],
                hops: 3,
                ..RouteOptions::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "hi"})));
    // A route set once on the builder applies to plain send().
    let mut routed = Mesh::builder(vec![url.clone()], SWARM)
        .connector(net.connector("routed"))
        .signal_config(SignalConfig {
            offers_per_announce: 10,
            ..SignalConfig::default()
        })
        .routing(RouteOptions {
            through: vec![ids[3].clone()],
            hops: 0,
            ..RouteOptions::default()
        })
        .seed(99)
        .start()
        .await
        .unwrap();
    within("the routed peer links to all", async {
        while routed.peers().await.unwrap().len() < 7 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Out and back via relay 3, in either format: the new peer may send before every hop's
    // hello (its layered capability) has reached it, and Auto then uses GhostMesh's format.
    let carried = |s: ghostmesh::relay::RelayStats| s.layered_forwarded + s.forwarded;
    let before = carried(relays_handles[2].relay_stats().await.unwrap());
    let answer = within(
        "send() through the default route",
        routed.send(&t_id, "plain".into()),
    )
    .await
    .unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "plain"})));
    assert_eq!(
        carried(relays_handles[2].relay_stats().await.unwrap()),
        before + 2
    );
    routed.stop().await;
    for (i, h) in relays_handles.iter().enumerate() {
        let stats = h.relay_stats().await.unwrap();
        assert_eq!(
            stats.dropped_ttl + stats.dropped_malformed + stats.dropped_unknown_next,
            0,
            "relay {i}: {stats:?}"
        );
    }

    // A one-way onion message names no sender; it arrives as an Onion event.
    let info = a
        .handle()
        .send_onion(
            &ids[5],
            "whisper".into(),
            Some(RouteOptions {
                through: ids[1..3].to_vec(),
                hops: 0,
                ..RouteOptions::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        info.route,
        vec![ids[1].clone(), ids[2].clone(), ids[5].clone()]
    );
    assert_eq!(info.circuit_id.len(), 16);
    assert!(info.layered && info.fallback.is_none(), "{info:?}");
    drop(target_task);

    // Bad routes are errors, not silent drops.
    for (route, why) in [
        (
            RouteOptions {
                through: vec!["nope".into()],
                hops: 0,
                ..RouteOptions::default()
            },
            "not a peer id",
        ),
        (
            RouteOptions {
                through: vec![ids[1].clone(), ids[1].clone()],
                hops: 0,
                ..RouteOptions::default()
            },
            "repeats",
        ),
        (
            RouteOptions {
                through: vec![],
                hops: 9,
                ..RouteOptions::default()
            },
            "relays wanted",
        ),
    ] {
        let err = a
            .send_routed(&t_id, "x".into(), Some(route))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    a.stop().await;
    drop(relays);
    tracker.shutdown().await;
}

fn frames(v: &Value, id: i64) -> Vec<Frame> {
    encode_chunks(&MsgId::Int(id), &Payload::Json(v.clone()), 16_000)
        .into_iter()
        .map(Frame::Text)
        .collect()
}

async fn send_packet(raw: &dyn Link, v: &Value, id: i64) {
    for f in frames(v, id) {
        raw.send(f).await.unwrap();
    }
}

async fn recv_packet(raw: &dyn Link, r: &mut Reassembler<u8>) -> Value {
    within("a packet on the raw link", async {
        loop {
            match raw.recv().await {
                Some(Frame::Text(t)) => {
                    if let Ok(Received::Complete(m)) = r.push(&0, &t, std::time::Instant::now()) {
                        if let Payload::Json(v) = m.payload {
                            return v;
                        }
                    }
                }
                // A Rust peer's hello (capabilities): JavaScript peers ignore such frames.
                Some(Frame::Binary(b))
                    if b.starts_with(&ghostmesh::relay::layered::HELLO_MAGIC) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghostmesh_packets_both_ways_and_every_drop_reason() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = start(&url, &net, "a", 1).await;
    wait_for(&mut a, "A announced", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;
    // The raw peer (a stand-in for a GhostMesh JavaScript peer) links to A only.
    let raw = raw_peer(&url, &net, SWARM).await;
    let raw = raw.as_ref();
    let raw_id = wait_for(&mut a, "A meets raw", connected("A")).await;
    let mut t = start(&url, &net, "t", 2).await;
    let t_id = wait_for(&mut a, "A meets T", connected("A")).await;
    assert_eq!(t_id, t.peer_id());
    let a_id = a.peer_id().to_owned();
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());

    // Our packets, exactly as GhostMesh writes them: a direct onion message to raw.
    let info = a
        .handle()
        .send_onion(
            &raw_id,
            json!({"k": 1}).into(),
            Some(RouteOptions {
                through: vec![],
                hops: 0,
                ..RouteOptions::default()
            }),
        )
        .await
        .unwrap();
    // raw sent no hello: GhostMesh's format, and the route says why.
    assert!(!info.layered);
    assert!(
        info.fallback
            .as_deref()
            .unwrap_or_default()
            .contains("does not speak layered"),
        "{info:?}"
    );
    let err = a
        .handle()
        .send_onion(
            &raw_id,
            "x".into(),
            Some(RouteOptions::through(vec![]).mode(RouteMode::Layered)),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("layered routing impossible"),
        "{err}"
    );
    let got = recv_packet(raw, &mut r).await;
    assert_eq!(
        got.to_string(),
        format!(
            r#"{{"__p2ptInternal":"onion-deliver","circuitId":"{}","ttl":2,"msg":"{{\"k\":1}}","o":1}}"#,
            info.circuit_id
        )
    );

    // A GhostMesh-built packet (outer ttl 2) relayed by A to T: one relay works even with
    // GhostMesh's ttl, and A keeps its relay rule (inner ttl = ttl - 1).
    let deliver = json!({"__p2ptInternal": "onion-deliver", "circuitId": "c0ffee0000000001", "ttl": 1, "msg": "from js"});
    let fwd = json!({"__p2ptInternal": "onion-forward", "circuitId": "c0ffee0000000001", "ttl": 2,
                     "nextPeerId": t_id, "payload": deliver.to_string()});
    send_packet(raw, &fwd, 100_001).await;
    let m = wait_for(&mut t, "T gets the onion message", |e| match e {
        MeshEvent::Onion(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(
        (m.payload, m.from.as_str(), m.info.circuit_id.as_str()),
        (Payload::from("from js"), a_id.as_str(), "c0ffee0000000001")
    );

    // A GhostMesh routed request from raw through A to T; T's response comes back to raw.
    let request = json!({"__ghostmeshInternal": "route-request", "circuitId": "c0ffee0000000002",
        "requestId": "0123456789abcdef", "originPeerId": raw_id, "replyRoute": [a_id, raw_id], "msg": "{\"q\":1}", "o": 1});
    let deliver = json!({"__p2ptInternal": "onion-deliver", "circuitId": "c0ffee0000000002", "ttl": 1,
        "msg": request.to_string(), "o": 1});
    let fwd = json!({"__p2ptInternal": "onion-forward", "circuitId": "c0ffee0000000002", "ttl": 2,
                     "nextPeerId": t_id, "payload": deliver.to_string()});
    send_packet(raw, &fwd, 100_002).await;
    let m = onion(&mut t).await;
    assert_eq!(m.from, raw_id);
    assert_eq!(m.payload, Payload::Json(json!({"q": 1})));
    assert_eq!(m.info.route, vec![raw_id.clone(), a_id.clone()]);
    t.handle()
        .respond_routed(m.reply.unwrap(), json!({"a": 2}).into())
        .await
        .unwrap();
    let back = recv_packet(raw, &mut r).await;
    assert_eq!(back["__p2ptInternal"], "onion-deliver");
    let body: Value = serde_json::from_str(back["msg"].as_str().unwrap()).unwrap();
    assert_eq!(
        body.to_string(),
        format!(
            r#"{{"__ghostmeshInternal":"route-response","circuitId":"c0ffee0000000002","requestId":"0123456789abcdef","originPeerId":"{t_id}","msg":"{{\"a\":2}}","o":1}}"#
        )
    );

    // Every drop reason, counted at A.
    let inner = json!({"__p2ptInternal": "onion-deliver", "circuitId": "x", "ttl": 1, "msg": "m"})
        .to_string();
    let bad = [
        json!({"__p2ptInternal": "onion-forward", "circuitId": "x", "ttl": 0, "nextPeerId": t_id, "payload": inner}),
        json!({"__p2ptInternal": "onion-forward", "circuitId": "x", "ttl": 3, "nextPeerId": "ab".repeat(20), "payload": inner}),
        json!({"__p2ptInternal": "onion-forward", "circuitId": "x", "ttl": 3, "nextPeerId": a_id, "payload": inner}),
        json!({"__p2ptInternal": "onion-forward", "circuitId": "x", "ttl": 3, "nextPeerId": t_id, "payload": "{not json"}),
        json!({"__p2ptInternal": "onion-forward", "circuitId": "x", "ttl": 3, "nextPeerId": t_id, "payload": "x".repeat((1 << 20) + 1)}),
        json!({"__p2ptInternal": "onion-deliver", "circuitId": "x", "ttl": 0, "msg": "late"}),
        json!({"__p2ptInternal": "onion-deliver", "circuitId": "x", "ttl": 2,
               "msg": json!({"__ghostmeshInternal": "route-response", "requestId": "ffffffffffffffff", "msg": "?"}).to_string(), "o": 1}),
        json!({"__p2ptInternal": "onion-deliver", "circuitId": "x", "ttl": 2,
               "msg": json!({"__ghostmeshInternal": "route-request", "circuitId": "x", "requestId": "r", "originPeerId": raw_id,
                              "replyRoute": vec![raw_id.clone(); 10], "msg": "?"}).to_string(), "o": 1}),
    ];
    for (i, p) in bad.iter().enumerate() {
        send_packet(raw, p, 200_000 + i as i64).await;
    }
    let stats = within("drops counted", async {
        loop {
            let s = a.handle().relay_stats().await.unwrap();
            if s.dropped_hops == 1 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        (
            stats.dropped_ttl,
            stats.dropped_unknown_next,
            stats.dropped_loop,
            stats.dropped_malformed,
            stats.dropped_too_large,
            stats.unmatched_responses
        ),
        (2, 1, 1, 1, 1, 1),
        "{stats:?}"
    );
    a.stop().await;
    t.stop().await;
    tracker.shutdown().await;
}

/// Every frame carrying a layered packet in a recorder.
fn onion_frames(log: &ghostmesh::transport::connector::Recorder) -> Vec<Vec<u8>> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|f| f.starts_with(&ghostmesh::relay::layered::ONION_MAGIC))
        .cloned()
        .collect()
}

fn contains(haystack: &[Vec<u8>], needle: &[u8]) -> bool {
    haystack
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_relays_see_no_plaintext_same_lengths_and_drop_tampering_and_replays() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let logs: Vec<_> = ["a", "r1", "r2", "r3"]
        .iter()
        .map(|n| net.record(n))
        .collect();
    let mut a = start(&url, &net, "a", 31).await;
    wait_for(&mut a, "A announced", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;
    let raw = raw_peer(&url, &net, SWARM).await;
    let mut others = Vec::new();
    for (i, name) in ["b", "r1", "r2", "r3", "t"].iter().enumerate() {
        others.push(start(&url, &net, name, 40 + i as u64).await);
    }
    let mut all: Vec<&Mesh> = others.iter().collect();
    all.push(&a);
    within("full mesh of the six Rust peers", async {
        loop {
            let mut full = true;
            for m in &all {
                full &= m.peers().await.unwrap().len() >= 5;
            }
            if full {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let ids: Vec<String> = others.iter().map(|m| m.peer_id().to_owned()).collect();
    let (b_id, relays, t_id) = (ids[0].clone(), ids[1..4].to_vec(), ids[4].clone());
    let t = others.pop().unwrap();
    let target = echo_routed(t);

    // A layered request through three relays, and its answer through the reply block.
    let marker = "SECRET-MARKER-7f3a9c";
    let answer = within(
        "layered request",
        a.send_routed(
            &t_id,
            marker.into(),
            Some(RouteOptions::through(relays.clone()).mode(RouteMode::Layered)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": marker})));
    let relay_frames: Vec<Vec<u8>> = logs[1..].iter().flat_map(onion_frames).collect();
    assert!(
        relay_frames.len() >= 6,
        "each relay handled the request and the reply: {}",
        relay_frames.len()
    );
    let everything: Vec<Vec<u8>> = logs[1..]
        .iter()
        .flat_map(|l| l.lock().unwrap().clone())
        .collect();
    assert!(
        !contains(&everything, marker.as_bytes()),
        "a relay saw the plaintext"
    );
    let lens: std::collections::BTreeSet<usize> = relay_frames.iter().map(Vec::len).collect();
    assert_eq!(
        lens.len(),
        1,
        "every layered packet has one length at every hop: {lens:?}"
    );

    // Control: GhostMesh's format is readable by the same relays.
    let compat_marker = "VISIBLE-MARKER-51be";
    a.send_routed(
        &t_id,
        compat_marker.into(),
        Some(RouteOptions::through(relays.clone()).mode(RouteMode::Compat)),
    )
    .await
    .unwrap();
    let everything: Vec<Vec<u8>> = logs[1..]
        .iter()
        .flat_map(|l| l.lock().unwrap().clone())
        .collect();
    assert!(contains(&everything, compat_marker.as_bytes()));

    // B routes through A: A's copy of that packet, replayed or tampered by the raw peer, is
    // dropped at A with the reason counted.
    let seen = onion_frames(&logs[0]).len();
    let a_id = a.peer_id().to_owned();
    let info = others[0]
        .send_onion(
            &t_id,
            "via A".into(),
            Some(RouteOptions::through(vec![a_id]).mode(RouteMode::Layered)),
        )
        .await
        .unwrap();
    assert!(info.layered);
    let frames = within("A relays B's packet", async {
        loop {
            let f = onion_frames(&logs[0]);
            if f.len() > seen {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let received = frames[seen].clone();
    raw.send(Frame::Binary(received.clone())).await.unwrap();
    let mut tampered = received.clone();
    tampered[40] ^= 1;
    raw.send(Frame::Binary(tampered)).await.unwrap();
    let stats = within("drops counted at A", async {
        loop {
            let s = a.handle().relay_stats().await.unwrap();
            if s.layered_dropped.values().sum::<u64>() >= 2 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(stats.layered_dropped.get("replay"), Some(&1), "{stats:?}");
    assert_eq!(stats.layered_dropped.get("bad_mac"), Some(&1), "{stats:?}");
    assert_eq!(b_id, others[0].peer_id());
    drop(target);
    a.stop().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_over_real_webrtc_in_both_modes() {
    use ghostmesh::transport::webrtc::WebRtcConfig;
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let mut meshes = Vec::new();
    for i in 0..5u64 {
        let m = Mesh::builder(vec![url.clone()], "relay-webrtc")
            .webrtc(WebRtcConfig::bound_to("127.0.0.1:0"))
            .signal_config(SignalConfig {
                offers_per_announce: 10,
                ..SignalConfig::default()
            })
            .seed(500 + i)
            .start()
            .await
            .unwrap();
        meshes.push(m);
    }
    within("full mesh over WebRTC", async {
        loop {
            let mut full = true;
            for m in &meshes {
                full &= m.peers().await.unwrap().len() == 4;
            }
            if full {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let ids: Vec<String> = meshes.iter().map(|m| m.peer_id().to_owned()).collect();
    let target = echo_routed(meshes.pop().unwrap());
    let a = meshes.remove(0);
    for mode in [RouteMode::Layered, RouteMode::Compat] {
        let answer = within(
            "routed over WebRTC",
            a.send_routed(
                &ids[4],
                json!({"mode": format!("{mode:?}")}).into(),
                Some(RouteOptions::through(ids[1..4].to_vec()).mode(mode)),
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            answer,
            Payload::Json(json!({"echo": {"mode": format!("{mode:?}")}}))
        );
    }
    let stats = meshes[1].relay_stats().await.unwrap();
    assert_eq!(
        (stats.layered_forwarded, stats.forwarded),
        (2, 2),
        "{stats:?}"
    );
    drop(target);
    drop(meshes);
    drop(a);
    tracker.shutdown().await;
}

fn marker_text(marker: &str, len: usize) -> String {
    marker.repeat(len / marker.len() + 1)[..len].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_between_rust_peers_stay_layered_in_fixed_size_classes() {
    use ghostmesh::onion::sphinx::packet_len;
    use ghostmesh::relay::layered::PACKET_CLASSES;
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let logs: Vec<_> = ["r1", "r2"].iter().map(|n| net.record(n)).collect();
    let a = start(&url, &net, "a", 61).await;
    let r1 = start(&url, &net, "r1", 62).await;
    let r2 = start(&url, &net, "r2", 63).await;
    let t = start(&url, &net, "t", 64).await;
    linked_to(&[&a, &r1, &r2, &t], 3).await;
    let (r1_id, r2_id, t_id) = (
        r1.peer_id().to_owned(),
        r2.peer_id().to_owned(),
        t.peer_id().to_owned(),
    );
    let target = echo_routed(t);
    let route = RouteOptions::through(vec![r1_id.clone(), r2_id.clone()]);
    assert_eq!(route.mode, RouteMode::Auto);

    let marker = "BIG-SECRET-MARKER-e41c";
    for len in [20_000usize, 150_000] {
        let text = marker_text(marker, len);
        let before = r1.relay_stats().await.unwrap();
        let answer = within(
            "a large routed request",
            a.send_routed(&t_id, text.clone().into(), Some(route.clone())),
        )
        .await
        .unwrap();
        assert_eq!(answer, Payload::Json(json!({"echo": text})));
        let after = r1.relay_stats().await.unwrap();
        assert_eq!(
            (
                after.layered_forwarded - before.layered_forwarded,
                after.forwarded - before.forwarded
            ),
            (2, 0),
            "{len} bytes went layered both ways"
        );
    }
    let info = a
        .handle()
        .send_onion(
            &t_id,
            marker_text(marker, 30_000).into(),
            Some(route.clone()),
        )
        .await
        .unwrap();
    assert!(info.layered && info.fallback.is_none(), "{info:?}");
    // What the relays handled: no plaintext, and only whole packets of the size classes.
    let classes: Vec<usize> = PACKET_CLASSES.iter().map(|p| 4 + packet_len(p)).collect();
    let relay_frames: Vec<Vec<u8>> = logs.iter().flat_map(onion_frames).collect();
    assert!(relay_frames.len() >= 10, "{}", relay_frames.len());
    assert!(
        relay_frames.iter().all(|f| classes.contains(&f.len())),
        "{:?}",
        relay_frames.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        relay_frames.iter().any(|f| f.len() == classes[2]),
        "150 KB went in the largest class"
    );
    let everything: Vec<Vec<u8>> = logs
        .iter()
        .flat_map(|l| l.lock().unwrap().clone())
        .collect();
    assert!(
        !contains(&everything, &marker.as_bytes()[..12]),
        "a relay saw the plaintext"
    );

    // Over the largest class: an error in automatic mode between capable peers (never a
    // silent readable packet); the readable format only when asked for.
    let huge = marker_text(marker, 300_000);
    let err = a
        .handle()
        .send_onion(&t_id, huge.clone().into(), Some(route.clone()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("largest layered packet") && err.to_string().contains("Compat"),
        "{err}"
    );
    let err = a
        .send_routed(&t_id, huge.clone().into(), Some(route.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("largest layered packet"), "{err}");
    let info = a
        .handle()
        .send_onion(
            &t_id,
            huge.into(),
            Some(route.clone().mode(RouteMode::Compat)),
        )
        .await
        .unwrap();
    assert!(!info.layered && info.fallback.is_none(), "{info:?}");
    drop(target);
    drop((a, r1, r2));
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_different_max_hops_route_layered_and_max_hops_refuses_long_routes() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let cfg = |max_hops| RelayConfig {
        max_hops,
        ..RelayConfig::default()
    };
    let a = start_with(&url, &net, "a", 71, cfg(2)).await;
    let r1 = start_with(&url, &net, "r1", 72, cfg(1)).await;
    let r2 = start_with(&url, &net, "r2", 73, cfg(8)).await;
    let r3 = start_with(&url, &net, "r3", 74, cfg(3)).await;
    let t = start_with(&url, &net, "t", 75, cfg(20)).await;
    linked_to(&[&a, &r1, &r2, &r3, &t], 4).await;
    let id = |m: &Mesh| m.peer_id().to_owned();
    let (a_id, r1_id, r2_id, r3_id, t_id) = (id(&a), id(&r1), id(&r2), id(&r3), id(&t));
    let target = echo_routed(t);

    // Layered packets have one geometry whatever max_hops says: these all route.
    let through =
        RouteOptions::through(vec![r1_id.clone(), r2_id.clone()]).mode(RouteMode::Layered);
    let answer = within(
        "A (max_hops 2) through r1 (1) and r2 (8)",
        a.send_routed(&t_id, "x".into(), Some(through)),
    )
    .await
    .unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "x"})));
    let through = RouteOptions::through(vec![r1_id.clone(), a_id.clone(), r2_id.clone()])
        .mode(RouteMode::Layered);
    let answer = within(
        "r3 (max_hops 3) through r1 (1), A (2), r2 (8)",
        r3.send_routed(&t_id, "y".into(), Some(through)),
    )
    .await
    .unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "y"})));
    let s = r1.relay_stats().await.unwrap();
    assert_eq!(s.layered_forwarded, 4, "{s:?}");
    assert!(s.layered_dropped.is_empty(), "{s:?}");

    // A's max_hops (2) refuses a third relay although three linked peers could relay.
    assert_eq!(a.peers().await.unwrap().len(), 4);
    for route in [
        RouteOptions {
            through: vec![],
            hops: 3,
            ..RouteOptions::default()
        },
        RouteOptions::through(vec![r1_id.clone(), r2_id.clone(), r3_id.clone()]),
    ] {
        let err = a
            .send_routed(&t_id, "z".into(), Some(route.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("3 relays, max_hops is 2"), "{err}");
        let err = a
            .handle()
            .send_onion(&t_id, "z".into(), Some(route))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("max_hops is 2"), "{err}");
    }
    drop(target);
    drop((a, r1, r2, r3));
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_loop_unknown_next_hop_bad_length_and_tampering_are_dropped_at_the_relay() {
    use ghostmesh::onion::sphinx::{self, Hop, header_len};
    use ghostmesh::relay::layered::{HELLO_MAGIC, ONION_MAGIC, PACKET_CLASSES};
    use rand::SeedableRng;
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = start(&url, &net, "a", 81).await;
    wait_for(&mut a, "A announced", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;
    // The raw peer reads A's onion key from its hello, then sends A hand-made packets.
    let raw = raw_peer(&url, &net, SWARM).await;
    let hello = within("A's hello", async {
        loop {
            if let Some(Frame::Binary(b)) = raw.recv().await {
                if let Some(body) = b.strip_prefix(&HELLO_MAGIC) {
                    return serde_json::from_slice::<Value>(body).unwrap();
                }
            }
        }
    })
    .await;
    let hex = hello["key"].as_str().unwrap();
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let a_key: [u8; 32] = key.try_into().unwrap();
    let a_id = a.peer_id().to_owned();
    let hop = |id: String| Hop { id, public: a_key };
    let params = PACKET_CLASSES[0];
    let mut rng = rand::rngs::StdRng::seed_from_u64(81);
    let mut make = |route: Vec<Hop>| {
        let (_, p) = sphinx::create(&mut rng, &params, &route, b"m", None).unwrap();
        [&ONION_MAGIC[..], &p].concat()
    };
    // A is told the next hop is itself (the sender names A's id as the hop after A).
    let looped = make(vec![hop("ab".repeat(20)), hop(a_id.clone())]);
    // ... or a peer it has no link to.
    let unknown = make(vec![hop("ab".repeat(20)), hop("cd".repeat(20))]);
    // ... or a fresh packet whose payload was modified on the way to A.
    let mut tampered = make(vec![hop("ab".repeat(20)), hop("cd".repeat(20))]);
    tampered[4 + header_len(&params) + 100] ^= 1;
    // ... or not a packet of any size class.
    let short = [&ONION_MAGIC[..], &[1u8; 100]].concat();
    for f in [looped, unknown, tampered, short] {
        raw.send(Frame::Binary(f)).await.unwrap();
    }
    let stats = within("drops counted at A", async {
        loop {
            let s = a.handle().relay_stats().await.unwrap();
            if s.layered_dropped.values().sum::<u64>() >= 4 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    for reason in ["loop", "unknown_next_hop", "payload_tampered", "bad_length"] {
        assert_eq!(
            stats.layered_dropped.get(reason),
            Some(&1),
            "{reason}: {stats:?}"
        );
    }
    assert_eq!(stats.layered_forwarded, 0);
    a.stop().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onion_keys_rotate_with_a_new_hello_and_old_replays_fail_the_mac() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let fast = RelayConfig {
        key_rotation: Duration::from_secs(1),
        key_grace: Duration::from_millis(500),
        ..RelayConfig::default()
    };
    let mut r = start_with(&url, &net, "r", 91, fast).await;
    wait_for(&mut r, "R announced", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;
    let raw = raw_peer(&url, &net, SWARM).await;
    let log = net.record("a");
    let a = start(&url, &net, "a", 92).await;
    let t = start(&url, &net, "t", 93).await;
    linked_to(&[&a, &t], 2).await;
    let t_id = t.peer_id().to_owned();
    let target = echo_routed(t);
    let through = RouteOptions::through(vec![r.peer_id().to_owned()]).mode(RouteMode::Layered);
    let answer = within(
        "a layered request through R",
        a.send_routed(&t_id, "1".into(), Some(through.clone())),
    )
    .await
    .unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "1"})));
    // A's packet to R, replayed at once: the replay cache catches it.
    let sent = onion_frames(&log)[0].clone();
    raw.send(Frame::Binary(sent.clone())).await.unwrap();
    // Two rotations later the key that opened it is gone: the replay fails the MAC (no cache
    // has to remember it), and A, told the new key by R's hellos, still routes through R.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    raw.send(Frame::Binary(sent)).await.unwrap();
    let answer = within(
        "a layered request after rotations",
        a.send_routed(&t_id, "2".into(), Some(through)),
    )
    .await
    .unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "2"})));
    let stats = within("drops counted at R", async {
        loop {
            let s = r.relay_stats().await.unwrap();
            if s.layered_dropped.values().sum::<u64>() >= 2 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        (
            stats.layered_dropped.get("replay"),
            stats.layered_dropped.get("bad_mac")
        ),
        (Some(&1), Some(&1)),
        "{stats:?}"
    );
    assert_eq!(stats.layered_forwarded, 4);
    drop(target);
    drop(a);
    r.stop().await;
    tracker.shutdown().await;
}
