//! Routed delivery between `Mesh` peers over memory links, GhostMesh-compatible: 1, 3 and 5
//! relays (GhostMesh's own ttl drops routes with 2+ relays), routed request/response, random
//! relays, exact GhostMesh packets both ways with a raw peer, and every relay drop reason.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::relay::{OnionMessage, RouteOptions};
use ghostmesh::signal::SignalConfig;
use ghostmesh::transport::connector::MemoryNetwork;
use ghostmesh::transport::memory::MemoryConfig;
use ghostmesh::transport::{Frame, Link};
use ghostmesh::wire::{MsgId, Payload, Reassembler, ReassemblyLimits, Received, encode_chunks};
use serde_json::{Value, json};

mod support;
use support::{connected, raw_peer, start_tracker, wait_for, within};

const SWARM: &str = "relay-test";

async fn start(url: &str, net: &MemoryNetwork, name: &str, seed: u64) -> Mesh {
    Mesh::builder(vec![url.to_owned()], SWARM)
        .connector(net.connector(name))
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
            if let MeshEvent::Onion(OnionMessage { payload, reply: Some(reply), .. }) = e {
                let answer = match payload {
                    Payload::Json(v) => json!({"echo": v}),
                    Payload::Text(t) => json!({"echo": t}),
                };
                mesh.handle().respond_routed(reply, answer.into()).await.unwrap();
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

    for n in [1usize, 3, 5] {
        let through: Vec<String> = ids[1..=n].to_vec();
        let route = RouteOptions { through: through.clone(), hops: 0 };
        let answer = within("routed request", a.send_routed(&t_id, json!({"n": n}).into(), Some(route)))
            .await
            .unwrap();
        assert_eq!(answer, Payload::Json(json!({"echo": {"n": n}})), "{n} relays");
    }
    // Random relays.
    let answer = a.send_routed(&t_id, "hi".into(), Some(RouteOptions { through: vec![], hops: 3 })).await.unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "hi"})));
    // A route set once on the builder applies to plain send().
    let mut routed = Mesh::builder(vec![url.clone()], SWARM)
        .connector(net.connector("routed"))
        .signal_config(SignalConfig { offers_per_announce: 10, ..SignalConfig::default() })
        .routing(RouteOptions { through: vec![ids[3].clone()], hops: 0 })
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
    let before = relays_handles[2].relay_stats().await.unwrap().forwarded;
    let answer = within("send() through the default route", routed.send(&t_id, "plain".into())).await.unwrap();
    assert_eq!(answer, Payload::Json(json!({"echo": "plain"})));
    assert_eq!(relays_handles[2].relay_stats().await.unwrap().forwarded, before + 2, "out and back via relay 3");
    routed.stop().await;
    for (i, h) in relays_handles.iter().enumerate() {
        let stats = h.relay_stats().await.unwrap();
        assert_eq!(stats.dropped_ttl + stats.dropped_malformed + stats.dropped_unknown_next, 0, "relay {i}: {stats:?}");
    }
    // Relay 1 was on every explicit route, both ways.
    assert!(relays_handles[0].relay_stats().await.unwrap().forwarded >= 6);

    // A one-way onion message names no sender; it arrives as an Onion event.
    let info = a
        .handle()
        .send_onion(&ids[5], "whisper".into(), Some(RouteOptions { through: ids[1..3].to_vec(), hops: 0 }))
        .await
        .unwrap();
    assert_eq!(info.route, vec![ids[1].clone(), ids[2].clone(), ids[5].clone()]);
    assert_eq!(info.circuit_id.len(), 16);
    drop(target_task);

    // Bad routes are errors, not silent drops.
    for (route, why) in [
        (RouteOptions { through: vec!["nope".into()], hops: 0 }, "not a peer id"),
        (RouteOptions { through: vec![ids[1].clone(), ids[1].clone()], hops: 0 }, "repeats"),
        (RouteOptions { through: vec![], hops: 9 }, "relays wanted"),
    ] {
        let err = a.send_routed(&t_id, "x".into(), Some(route)).await.unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    a.stop().await;
    drop(relays);
    tracker.shutdown().await;
}

fn frames(v: &Value, id: i64) -> Vec<Frame> {
    encode_chunks(&MsgId::Int(id), &Payload::Json(v.clone()), 16_000).into_iter().map(Frame::Text).collect()
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
    wait_for(&mut a, "A announced", |e| matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())).await;
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
    let info = a.handle().send_onion(&raw_id, json!({"k": 1}).into(), Some(RouteOptions { through: vec![], hops: 0 })).await.unwrap();
    let got = recv_packet(raw, &mut r).await;
    assert_eq!(
        got.to_string(),
        format!(r#"{{"__p2ptInternal":"onion-deliver","circuitId":"{}","ttl":2,"msg":"{{\"k\":1}}","o":1}}"#, info.circuit_id)
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
    assert_eq!((m.payload, m.from.as_str(), m.info.circuit_id.as_str()), (Payload::from("from js"), a_id.as_str(), "c0ffee0000000001"));

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
    t.handle().respond_routed(m.reply.unwrap(), json!({"a": 2}).into()).await.unwrap();
    let back = recv_packet(raw, &mut r).await;
    assert_eq!(back["__p2ptInternal"], "onion-deliver");
    let body: Value = serde_json::from_str(back["msg"].as_str().unwrap()).unwrap();
    assert_eq!(
        body.to_string(),
        format!(r#"{{"__ghostmeshInternal":"route-response","circuitId":"c0ffee0000000002","requestId":"0123456789abcdef","originPeerId":"{t_id}","msg":"{{\"a\":2}}","o":1}}"#)
    );

    // Every drop reason, counted at A.
    let inner = json!({"__p2ptInternal": "onion-deliver", "circuitId": "x", "ttl": 1, "msg": "m"}).to_string();
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
        (stats.dropped_ttl, stats.dropped_unknown_next, stats.dropped_loop, stats.dropped_malformed, stats.dropped_too_large, stats.unmatched_responses),
        (2, 1, 1, 1, 1, 1),
        "{stats:?}"
    );
    a.stop().await;
    t.stop().await;
    tracker.shutdown().await;
}
