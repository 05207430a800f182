//! Routed file transfer (GhostMesh's `sendFile` with `onion`) between `Mesh` peers over memory
//! links: routing defaults set on the builder apply to `send_file`, whose packets go through
//! 1 or 3 relays in GhostMesh's format and in layered packets, and arrive as a complete,
//! hash-checked incoming transfer; a routed cancel reaches the receiver; a GhostMesh-built
//! routed transfer (onion-forward / onion-deliver around `file-*` packets, as a JavaScript
//! peer sends it, in order and reordered) becomes a file session; and the bounds on routed
//! offers and on packets that overtake their offer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ghostmesh::file::{
    FileConfig, FileError, FileOptions, FileSession, FileSource, FileStatus, ROUTED_PEER,
};
use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::relay::{RelayStats, RouteMode, RouteOptions};
use ghostmesh::signal::SignalConfig;
use ghostmesh::transport::connector::MemoryNetwork;
use ghostmesh::transport::memory::MemoryConfig;
use ghostmesh::transport::{Frame, Link};
use ghostmesh::wire::{MsgId, Payload, encode_chunks};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod support;
use support::{connected, linked_to, raw_peer, start_tracker, wait_for, within};

const SWARM: &str = "relay-files-test";

fn builder(url: &str, net: &MemoryNetwork, name: &str, seed: u64) -> ghostmesh::mesh::MeshBuilder {
    Mesh::builder(vec![url.to_owned()], SWARM)
        .connector(net.connector(name))
        .signal_config(SignalConfig {
            offers_per_announce: 10,
            ..SignalConfig::default()
        })
        .seed(seed)
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

async fn file_event(mesh: &mut Mesh) -> FileSession {
    wait_for(mesh, "a file offer", |e| match e {
        MeshEvent::File(s) => Some(s),
        MeshEvent::Onion(m) => panic!("a routed file packet surfaced as an onion message: {m:?}"),
        _ => None,
    })
    .await
}

/// `send_file`, retried while a hop's hello (its layered capability) has not reached the
/// sender yet, which makes a layered route impossible for a moment after linking.
async fn send_file_when_ready(
    mesh: &Mesh,
    to: &str,
    bytes: &[u8],
    options: FileOptions,
) -> FileSession {
    within("send_file", async {
        loop {
            match mesh
                .send_file(to, FileSource::bytes(bytes.to_vec()), options.clone())
                .await
            {
                Ok(s) => return s,
                Err(e) if e.to_string().contains("layered routing impossible") => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("send_file: {e}"),
            }
        }
    })
    .await
}

/// Layers the relays passed on, in either format: (GhostMesh's, layered).
fn carried(after: &RelayStats, before: &RelayStats) -> (u64, u64) {
    (
        after.forwarded - before.forwarded,
        after.layered_forwarded - before.layered_forwarded,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_file_with_routing_defaults_goes_through_1_and_3_relays_in_both_formats() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let relays: Vec<Mesh> = {
        let mut v = Vec::new();
        for i in 0..3u64 {
            v.push(
                builder(&url, &net, &format!("r{i}"), 300 + i)
                    .start()
                    .await
                    .unwrap(),
            );
        }
        v
    };
    let mut t = builder(&url, &net, "t", 310).start().await.unwrap();
    let relay_ids: Vec<String> = relays.iter().map(|m| m.peer_id().to_owned()).collect();
    let t_id = t.peer_id().to_owned();
    let cases = [
        (RouteMode::Compat, 1usize),
        (RouteMode::Compat, 3),
        (RouteMode::Layered, 1),
        (RouteMode::Layered, 3),
    ];
    let mut senders = Vec::new();
    for (i, (mode, n)) in cases.iter().enumerate() {
        let route = RouteOptions::through(relay_ids[..*n].to_vec()).mode(*mode);
        senders.push(
            builder(&url, &net, &format!("a{i}"), 320 + i as u64)
                .routing(route)
                .start()
                .await
                .unwrap(),
        );
    }
    let all: Vec<&Mesh> = relays
        .iter()
        .chain(std::iter::once(&t))
        .chain(senders.iter())
        .collect();
    linked_to(&all, all.len() - 1).await;

    for (i, ((mode, n), a)) in cases.iter().zip(&senders).enumerate() {
        // 100 kB in 12 KiB chunks: an offer, 9 chunks and an end, each along its own circuit.
        let bytes = data(100_000, 400 + i as u64);
        let packets = 1 + 9 + 1;
        let before: Vec<RelayStats> =
            futures_util::future::join_all(relays.iter().map(|r| r.relay_stats()))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        let t_before = t.relay_stats().await.unwrap();
        let name = format!("routed-{mode:?}-{n}.bin");
        let options = FileOptions {
            name: Some(name.clone()),
            ..FileOptions::default()
        };
        let out = send_file_when_ready(a, &t_id, &bytes, options).await;
        assert!(out.routed(), "{mode:?} {n}");
        let incoming = file_event(&mut t).await;
        assert!(incoming.routed());
        assert_eq!(
            (incoming.peer_id(), incoming.name(), incoming.size()),
            (ROUTED_PEER, name.as_str(), 100_000)
        );
        within(
            "the routed file completes at the target",
            incoming.wait_until_complete(),
        )
        .await
        .unwrap();
        within("the sender completes", out.wait_until_complete())
            .await
            .unwrap();
        assert!(
            !out.fast_path(),
            "a routed transfer never takes the fast path"
        );
        // Every byte, in order (the Rust sender's SHA-256 in file-end was checked before
        // completion too).
        let got = incoming.read_range(0, incoming.size()).await.unwrap();
        assert_eq!(Sha256::digest(&got), Sha256::digest(&bytes), "{mode:?} {n}");
        // Each relay on the route carried every packet once, in the format asked for; the
        // relays off the route carried nothing.
        for (j, r) in relays.iter().enumerate() {
            let c = carried(&r.relay_stats().await.unwrap(), &before[j]);
            let expected = match (j < *n, mode) {
                (false, _) => (0, 0),
                (true, RouteMode::Layered) => (0, packets),
                (true, _) => (packets, 0),
            };
            assert_eq!(c, expected, "relay {j}, {mode:?} through {n}");
        }
        let t_after = t.relay_stats().await.unwrap();
        let delivered = (
            t_after.delivered - t_before.delivered,
            t_after.layered_delivered - t_before.layered_delivered,
        );
        let expected = if *mode == RouteMode::Layered {
            (0, packets)
        } else {
            (packets, 0)
        };
        assert_eq!(delivered, expected, "{mode:?} {n}");
    }
    for r in &relays {
        let s = r.relay_stats().await.unwrap();
        assert_eq!(
            s.dropped_ttl + s.dropped_malformed + s.dropped_unknown_next + s.dropped_too_large,
            0,
            "{s:?}"
        );
        assert!(s.layered_dropped.is_empty(), "{s:?}");
    }
    // (A session completes when its hash check passes; the core forgets it just after.)
    let stats = within("the target forgets its finished transfers", async {
        loop {
            let s = t.file_stats().await.unwrap();
            if s.incoming == 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        (
            stats.unknown_transfer,
            stats.malformed,
            stats.refused_offers
        ),
        (0, 0, 0),
        "{stats:?}"
    );

    // Random relays (a fresh route per packet) deliver too.
    let mut random = builder(&url, &net, "random", 330)
        .routing(RouteOptions {
            through: vec![],
            hops: 2,
            ..RouteOptions::default()
        })
        .start()
        .await
        .unwrap();
    let all: Vec<&Mesh> = relays
        .iter()
        .chain(std::iter::once(&t))
        .chain(senders.iter())
        .chain(std::iter::once(&random))
        .collect();
    linked_to(&all, all.len() - 1).await;
    let all: Vec<ghostmesh::mesh::MeshHandle> = all.into_iter().map(|m| m.handle()).collect();
    let bytes = data(50_000, 499);
    let before: u64 = futures_util::future::join_all(all.iter().map(|m| m.relay_stats()))
        .await
        .into_iter()
        .map(|s| {
            let s = s.unwrap();
            s.forwarded + s.layered_forwarded
        })
        .sum();
    let out = random
        .send_file(
            &t_id,
            FileSource::bytes(bytes.clone()),
            FileOptions::default(),
        )
        .await
        .unwrap();
    let incoming = file_event(&mut t).await;
    within("a file over random relays", incoming.wait_until_complete())
        .await
        .unwrap();
    within("its sender", out.wait_until_complete())
        .await
        .unwrap();
    assert_eq!(incoming.read_range(0, 50_000).await.unwrap(), bytes);
    let after: u64 = futures_util::future::join_all(all.iter().map(|m| m.relay_stats()))
        .await
        .into_iter()
        .map(|s| {
            let s = s.unwrap();
            s.forwarded + s.layered_forwarded
        })
        .sum();
    // 1 offer + 5 chunks + 1 end, two relays each.
    assert_eq!(after - before, 14);

    // As for send: the receiver need not be linked, the first relay must be.
    let unlinked = random
        .send_file(
            &"ab".repeat(20),
            FileSource::bytes(vec![1u8; 10]),
            FileOptions::default(),
        )
        .await;
    assert!(unlinked.is_ok(), "{unlinked:?}");
    random.stop().await;
    let lonely = builder(&url, &net, "lonely", 331)
        .routing(RouteOptions::through(vec!["cd".repeat(20)]))
        .start()
        .await
        .unwrap();
    let err = lonely
        .send_file(
            &t_id,
            FileSource::bytes(vec![1u8; 10]),
            FileOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("send refused"), "{err}");
    drop((lonely, senders, relays, t));
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_cancel_reaches_the_receiver_and_a_receiver_cancel_stays_local() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    // Slow links, so the transfers are still running when canceled.
    let net = MemoryNetwork::new(MemoryConfig {
        bandwidth: Some(1_000_000),
        ..MemoryConfig::default()
    });
    let r = builder(&url, &net, "r", 340).start().await.unwrap();
    let mut t = builder(&url, &net, "t", 341).start().await.unwrap();
    let route = RouteOptions::through(vec![r.peer_id().to_owned()]).mode(RouteMode::Compat);
    let a = builder(&url, &net, "a", 342)
        .routing(route)
        .start()
        .await
        .unwrap();
    linked_to(&[&a, &r, &t], 2).await;
    let t_id = t.peer_id().to_owned();

    let out = a
        .send_file(
            &t_id,
            FileSource::bytes(data(6_000_000, 7)),
            FileOptions::default(),
        )
        .await
        .unwrap();
    let incoming = file_event(&mut t).await;
    out.cancel("changed my mind").await;
    within("the cancel comes through the relay", ended(&incoming)).await;
    assert_eq!(incoming.status(), FileStatus::Canceled);
    assert_eq!(
        incoming.error(),
        Some(FileError::Canceled {
            reason: "changed my mind".into(),
            by_peer: true
        })
    );

    // The receiver cancels: nothing can go back through the relays, so its side ends and
    // the sender's (which, like GhostMesh's, hears nothing) finishes sending.
    let out = a
        .send_file(
            &t_id,
            FileSource::bytes(data(300_000, 8)),
            FileOptions::default(),
        )
        .await
        .unwrap();
    let incoming = file_event(&mut t).await;
    incoming.cancel("no thanks").await;
    assert_eq!(incoming.status(), FileStatus::Canceled);
    within("the sender finishes", out.wait_until_complete())
        .await
        .unwrap();
    // Its chunks for the gone transfer are counted, not stored.
    let stats = within("late chunks counted", async {
        loop {
            let s = t.file_stats().await.unwrap();
            if s.unknown_transfer > 0 && s.incoming == 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(stats.malformed, 0, "{stats:?}");
    drop((a, r, t));
    tracker.shutdown().await;
}

/// Waits (unbounded: wrap it in `within`) until the session has ended.
async fn ended(s: &FileSession) {
    let mut events = s.events();
    while !s.status().is_final() {
        let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
    }
}

/// GhostMesh's P2PT envelope(s) for `v`, sent one-way on the raw link.
async fn send_packet(raw: &dyn Link, v: &Value, id: i64) {
    for f in encode_chunks(&MsgId::Int(id), &Payload::Json(v.clone()), 16_000) {
        raw.send(Frame::Text(f)).await.unwrap();
    }
}

/// What a GhostMesh JavaScript peer sends for `packet` routed through `relay` (whose link is
/// the raw one) to `target`: `_createOnionPacket([target])` sent to the relay, i.e. an
/// onion-forward (ttl 2) around an onion-deliver (ttl 1) whose `msg` is the packet's JSON.
fn ghostmesh_routed(circuit: &str, target: &str, packet: &Value) -> Value {
    let deliver = json!({"__p2ptInternal": "onion-deliver", "circuitId": circuit, "ttl": 1, "msg": packet.to_string(), "o": 1});
    json!({"__p2ptInternal": "onion-forward", "circuitId": circuit, "ttl": 2, "nextPeerId": target, "payload": deliver.to_string()})
}

fn offer(id: &str, name: &str, size: usize, chunk: usize) -> Value {
    json!({"__ghostmeshInternal": "file-offer", "transferId": id, "name": name, "mimeType": "application/octet-stream",
           "size": size, "chunkSize": chunk, "totalChunks": size.div_ceil(chunk).max(1)})
}

fn chunk(id: &str, index: usize, chunk: usize, bytes: &[u8]) -> Value {
    use base64::Engine as _;
    let start = index * chunk;
    let part = &bytes[start..(start + chunk).min(bytes.len())];
    json!({"__ghostmeshInternal": "file-chunk", "transferId": id, "chunkIndex": index, "offset": start,
           "data": base64::engine::general_purpose::STANDARD.encode(part)})
}

fn end(id: &str) -> Value {
    json!({"__ghostmeshInternal": "file-end", "transferId": id})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghostmesh_routed_files_become_sessions_within_the_incoming_bounds() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = builder(&url, &net, "a", 350).start().await.unwrap();
    wait_for(&mut a, "A announced", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;
    // The raw peer (a stand-in for a GhostMesh JavaScript peer) links to A only; A relays.
    let raw = raw_peer(&url, &net, SWARM).await;
    let raw = raw.as_ref();
    wait_for(&mut a, "A meets raw", connected("A")).await;
    let files = FileConfig {
        max_incoming_per_peer: 2,
        idle_timeout: Duration::from_secs(2),
        ..FileConfig::default()
    };
    let mut t = builder(&url, &net, "t", 351)
        .file_config(files)
        .start()
        .await
        .unwrap();
    let t_id = wait_for(&mut a, "A meets T", connected("A")).await;
    assert_eq!(t_id, t.peer_id());
    let mut msg_id = 1000;
    let mut circuit = 0u64;
    let mut routed = |packet: &Value| {
        circuit += 1;
        msg_id += 1;
        (
            ghostmesh_routed(&format!("{circuit:016x}"), &t_id, packet),
            msg_id,
        )
    };

    // In GhostMesh's order: offer, chunks, end, each along its own circuit.
    let bytes = data(30_000, 9);
    let id1 = "00000000000000a1";
    let mut packets = vec![offer(id1, "js.bin", 30_000, 12_288)];
    packets.extend((0..3).map(|i| chunk(id1, i, 12_288, &bytes)));
    packets.push(end(id1));
    for p in &packets {
        let (v, id) = routed(p);
        send_packet(raw, &v, id).await;
    }
    let s = file_event(&mut t).await;
    assert_eq!(
        (s.transfer_id(), s.name(), s.peer_id(), s.routed()),
        (id1, "js.bin", ROUTED_PEER, true)
    );
    within(
        "the GhostMesh routed file completes",
        s.wait_until_complete(),
    )
    .await
    .unwrap();
    assert_eq!(s.read_range(0, 30_000).await.unwrap(), bytes);
    assert_eq!(a.relay_stats().await.unwrap().forwarded, 5);
    assert_eq!(t.relay_stats().await.unwrap().delivered, 5);

    // Reordered, as separate routes may deliver: a chunk before the offer, the end before
    // the last chunk. The chunk waits for its offer, the end for the missing bytes.
    let id2 = "00000000000000a2";
    for p in [
        chunk(id2, 1, 12_288, &bytes),
        offer(id2, "late-offer.bin", 30_000, 12_288),
        chunk(id2, 0, 12_288, &bytes),
        end(id2),
    ] {
        let (v, id) = routed(&p);
        send_packet(raw, &v, id).await;
    }
    let s = file_event(&mut t).await;
    assert_eq!(s.transfer_id(), id2);
    within("the held chunk and the next are stored", async {
        while s.bytes() < 24_576 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The end came (it was sent before this check), yet the transfer waits for its last chunk.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        (s.status(), s.bytes()),
        (FileStatus::Active, 24_576),
        "the end waits for the last chunk"
    );
    let (v, id) = routed(&chunk(id2, 2, 12_288, &bytes));
    send_packet(raw, &v, id).await;
    within(
        "the reordered routed file completes",
        s.wait_until_complete(),
    )
    .await
    .unwrap();
    assert_eq!(s.read_range(0, 30_000).await.unwrap(), bytes);

    // Routed offers, whoever sends them, share the routed pseudo-peer's slots: two at once
    // (max_incoming_per_peer); the others are refused and counted.
    let offers: Vec<String> = (0..4).map(|i| format!("00000000000000b{i}")).collect();
    for o in &offers {
        let (v, id) = routed(&offer(o, "flood.bin", 1000, 1024));
        send_packet(raw, &v, id).await;
    }
    let first = file_event(&mut t).await;
    let second = file_event(&mut t).await;
    assert_eq!(
        (first.transfer_id(), second.transfer_id()),
        (offers[0].as_str(), offers[1].as_str())
    );
    let stats = within("refusals counted", async {
        loop {
            let s = t.file_stats().await.unwrap();
            if s.refused_offers >= 2 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!((stats.refused_offers, stats.incoming), (2, 2), "{stats:?}");
    // A direct transfer is not held back by the routed slots.
    let direct = a
        .send_file(
            &t_id,
            FileSource::bytes(bytes.clone()),
            FileOptions::default(),
        )
        .await
        .unwrap();
    let d = file_event(&mut t).await;
    assert!(!d.routed() && d.peer_id() == a.peer_id());
    within("the direct file completes", d.wait_until_complete())
        .await
        .unwrap();
    within("its sender", direct.wait_until_complete())
        .await
        .unwrap();
    // Silent routed transfers end after the idle timeout and free their slots.
    within("the idle timeout", ended(&first)).await;
    assert_eq!(first.error(), Some(FileError::Timeout));
    let (v, id) = routed(&offer("00000000000000c0", "after.bin", 10, 1024));
    send_packet(raw, &v, id).await;
    assert_eq!(file_event(&mut t).await.transfer_id(), "00000000000000c0");

    // Chunks for transfers never offered are held for a moment, at most 64: the rest are
    // dropped oldest first and counted.
    let before = t.file_stats().await.unwrap().unknown_transfer;
    for i in 0..100 {
        let (v, id) = routed(&chunk(&format!("{:016x}", 0xd000 + i), 0, 1024, &bytes));
        send_packet(raw, &v, id).await;
    }
    let stats = within("overflow counted", async {
        loop {
            let s = t.file_stats().await.unwrap();
            if s.unknown_transfer >= before + 36 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(stats.unknown_transfer, before + 36, "{stats:?}");
    assert_eq!(stats.malformed, 0);
    a.stop().await;
    t.stop().await;
    tracker.shutdown().await;
}
