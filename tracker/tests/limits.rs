//! Every configurable limit of the tracker, checked over real WebSockets on 127.0.0.1: the exact
//! error reply (or HTTP status) at the limit, and that the socket stays usable after a
//! recoverable error.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{
    Client, WAIT, announce, assert_announce_reply, assert_error_reply, bin, drops, http_get, id,
    offers, start, try_connect, wait_until,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const SILENCE: Duration = Duration::from_millis(300);

/// An announce padded with an ignored field so that its JSON text is exactly `len` bytes.
fn announce_of_len(info_hash: &str, peer_id: &str, len: usize) -> String {
    let mut m = announce(info_hash, peer_id);
    m["pad"] = "".into();
    let base = m.to_string().len();
    assert!(base <= len, "announce is already {base} bytes");
    m["pad"] = "x".repeat(len - base).into();
    let s = m.to_string();
    assert_eq!(s.len(), len);
    s
}

fn close_code(c: &Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    u16::from(c.as_ref().expect("a close frame with a code").code)
}

/// One offer whose SDP is `sdp_len` bytes.
fn big_offer(offer_id: &str, sdp_len: usize) -> Value {
    json!([{"offer_id": offer_id, "offer": {"type": "offer", "sdp": "s".repeat(sdp_len)}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_bytes_replies_with_an_error_then_closes_1009() {
    let t = start(|c| {
        c.max_message_bytes = 1024;
        c.max_frame_bytes = 64 * 1024;
    })
    .await;
    let ih = bin(b'm');

    // Exactly at the limit: accepted.
    let mut a = Client::connect(&t.ws_url()).await;
    a.send_text(&announce_of_len(&ih, &bin(b'a'), 1024)).await;
    assert_announce_reply(&a.recv().await, &ih);

    // One byte over: an error reply the client can route (action), then close 1009.
    let mut b = Client::connect(&t.ws_url()).await;
    b.send_text(&announce_of_len(&ih, &bin(b'b'), 1025)).await;
    let e = b.recv().await;
    assert_error_reply(&e, "announce", None, "message too big");
    let reason = e["failure reason"].as_str().unwrap();
    assert!(
        reason.contains("1025") && reason.contains("1024"),
        "{reason}"
    );
    assert_eq!(close_code(&b.recv_close().await), 1009);
    assert!(wait_until(WAIT, || t.metrics().closes("too_big") == 1).await);
    // The oversized peer never joined; the other connection is unaffected.
    assert_eq!(t.snapshot().core.peers, 1);
    a.send(&announce(&ih, &bin(b'a'))).await;
    assert_eq!(assert_announce_reply(&a.recv().await, &ih), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_frame_bytes_limits_frames_not_fragmented_messages() {
    let t = start(|c| {
        c.max_frame_bytes = 512;
        c.max_message_bytes = 4096;
    })
    .await;
    let ih = bin(b'f');

    // A 1200-byte message in three frames of 400 bytes: every frame is under the frame limit
    // and the message under the message limit, so it is accepted.
    let mut a = Client::connect(&t.ws_url()).await;
    let text = announce_of_len(&ih, &bin(b'a'), 1200).into_bytes();
    let parts: Vec<Vec<u8>> = text.chunks(400).map(<[u8]>::to_vec).collect();
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.into_iter().enumerate() {
        let op = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        a.ws.send(Message::Frame(Frame::message(p, op, i == 2)))
            .await
            .unwrap();
    }
    assert_announce_reply(&a.recv().await, &ih);

    // One 513-byte frame: over the frame limit, though under the message limit.
    let mut b = Client::connect(&t.ws_url()).await;
    b.send_text(&announce_of_len(&ih, &bin(b'b'), 513)).await;
    assert_error_reply(&b.recv().await, "announce", None, "message too big");
    assert_eq!(close_code(&b.recv_close().await), 1009);

    // A 512-byte frame is fine.
    let mut c = Client::connect(&t.ws_url()).await;
    c.send_text(&announce_of_len(&ih, &bin(b'c'), 512)).await;
    assert_eq!(assert_announce_reply(&c.recv().await, &ih), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_offers_relays_that_many_offers_to_distinct_peers() {
    let t = start(|c| c.max_offers = 2).await;
    let ih = bin(b'o');
    let mut others = Vec::new();
    for i in 0..4u8 {
        let mut c = Client::connect(&t.ws_url()).await;
        c.send(&announce(&ih, &bin(b'p' + i))).await;
        assert_announce_reply(&c.recv().await, &ih);
        others.push(c);
    }
    let sent = offers(9, 5);
    let sent_ids: HashSet<String> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offer_id"].as_str().unwrap().to_string())
        .collect();
    let mut o = Client::connect(&t.ws_url()).await;
    let mut m = announce(&ih, &bin(b'z'));
    m["offers"] = sent.clone();
    o.send(&m).await;
    assert_eq!(assert_announce_reply(&o.recv().await, &ih), (0, 5));

    let mut got_ids = HashSet::new();
    let mut receivers = 0;
    for c in &mut others {
        let Some(v) = c.recv_within(Duration::from_millis(500)).await else {
            continue;
        };
        receivers += 1;
        assert_eq!(v["action"], "announce", "{v}");
        assert_eq!(v["peer_id"], bin(b'z'), "{v}");
        assert_eq!(v["info_hash"], ih.as_str(), "{v}");
        assert_eq!(v["offer"]["type"], "offer", "{v}");
        let oid = v["offer_id"].as_str().unwrap().to_string();
        assert!(sent_ids.contains(&oid), "unknown offer_id in {v}");
        assert!(got_ids.insert(oid), "one offer relayed twice");
        // Each peer gets at most one offer of this announce.
        c.expect_silence(Duration::from_millis(200)).await;
    }
    assert_eq!(receivers, 2, "exactly max_offers peers get an offer");
    o.expect_silence(SILENCE).await;
    let s = t.snapshot();
    assert_eq!(s.counters.offers_relayed, 2);
    assert_eq!(s.counters.offers_surplus, 3);
    assert_eq!(t.metrics().responses("offer"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_swarms_per_connection_refuses_the_next_membership() {
    let t = start(|c| c.max_swarms_per_connection = 2).await;
    let (h1, h2, h3) = (id(1), id(2), id(3));
    let mut a = Client::connect(&t.ws_url()).await;
    for h in [&h1, &h2] {
        a.send(&announce(h, &bin(b'a'))).await;
        assert_announce_reply(&a.recv().await, h);
    }
    a.send(&announce(&h3, &bin(b'a'))).await;
    assert_error_reply(
        &a.recv().await,
        "announce",
        Some(&h3),
        "too many swarms on this connection (max 2)",
    );
    // A second peer_id on the same connection counts too.
    a.send(&announce(&h1, &bin(b'A'))).await;
    assert_error_reply(&a.recv().await, "announce", Some(&h1), "(max 2)");
    assert_eq!(t.snapshot().counters.announces_refused, 2);
    assert_eq!(t.snapshot().core.peers, 2);

    // The socket stays usable: updates to held memberships work.
    a.send(&announce(&h1, &bin(b'a'))).await;
    assert_eq!(assert_announce_reply(&a.recv().await, &h1), (0, 1));
    // The limit is per connection: another connection joins h3.
    let mut b = Client::connect(&t.ws_url()).await;
    b.send(&announce(&h3, &bin(b'b'))).await;
    assert_announce_reply(&b.recv().await, &h3);
    // Leaving a swarm frees a place on the connection.
    let mut stop = announce(&h2, &bin(b'a'));
    stop["event"] = "stopped".into();
    a.send(&stop).await;
    assert_announce_reply(&a.recv().await, &h2);
    a.send(&announce(&h3, &bin(b'a'))).await;
    assert_eq!(assert_announce_reply(&a.recv().await, &h3), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_peers_per_swarm_refuses_the_next_peer() {
    let t = start(|c| c.max_peers_per_swarm = 2).await;
    let ih = id(10);
    let mut a = Client::connect(&t.ws_url()).await;
    let mut b = Client::connect(&t.ws_url()).await;
    let mut c = Client::connect(&t.ws_url()).await;
    a.send(&announce(&ih, &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &ih);
    b.send(&announce(&ih, &bin(b'b'))).await;
    assert_eq!(assert_announce_reply(&b.recv().await, &ih), (0, 2));
    c.send(&announce(&ih, &bin(b'c'))).await;
    assert_error_reply(
        &c.recv().await,
        "announce",
        Some(&ih),
        "swarm is full (2 peers)",
    );
    assert_eq!(t.snapshot().core.peers, 2);

    // c's socket stays usable: another swarm accepts it.
    let other = id(11);
    c.send(&announce(&other, &bin(b'c'))).await;
    assert_announce_reply(&c.recv().await, &other);
    // When a peer leaves, c gets its place.
    a.ws.close(None).await.unwrap();
    assert!(wait_until(WAIT, || t.snapshot().core.peers == 2).await);
    c.send(&announce(&ih, &bin(b'c'))).await;
    assert_eq!(assert_announce_reply(&c.recv().await, &ih), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_swarms_refuses_new_swarms_but_not_existing_ones() {
    let t = start(|c| c.max_swarms = 2).await;
    let (h1, h2, h3) = (id(21), id(22), id(23));
    let mut a = Client::connect(&t.ws_url()).await;
    let mut b = Client::connect(&t.ws_url()).await;
    for h in [&h1, &h2] {
        a.send(&announce(h, &bin(b'a'))).await;
        assert_announce_reply(&a.recv().await, h);
    }
    for c in [&mut a, &mut b] {
        c.send(&announce(&h3, &bin(b'x'))).await;
        assert_error_reply(&c.recv().await, "announce", Some(&h3), "too many swarms");
    }
    assert_eq!(t.snapshot().core.swarms, 2);
    // Existing swarms still take peers, and the refused sockets stay usable.
    b.send(&announce(&h1, &bin(b'b'))).await;
    assert_eq!(assert_announce_reply(&b.recv().await, &h1), (0, 2));
    // When a swarm empties, a new one may be created.
    let mut stop = announce(&h2, &bin(b'a'));
    stop["event"] = "stopped".into();
    a.send(&stop).await;
    assert_announce_reply(&a.recv().await, &h2);
    a.send(&announce(&h3, &bin(b'a'))).await;
    assert_eq!(assert_announce_reply(&a.recv().await, &h3), (0, 1));
    assert_eq!(t.snapshot().counters.announces_refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_scrape_hashes_refuses_long_scrapes() {
    let t = start(|c| c.max_scrape_hashes = 2).await;
    let (h1, h2, h3) = (id(31), id(32), id(33));
    let mut a = Client::connect(&t.ws_url()).await;
    a.send(&announce(&h1, &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &h1);

    a.send(&json!({"action": "scrape", "info_hash": [h1, h2, h3]}))
        .await;
    assert_error_reply(
        &a.recv().await,
        "scrape",
        None,
        "too many info_hashes in one scrape (max 2)",
    );
    // At the limit: a normal reply, and the socket still announces.
    a.send(&json!({"action": "scrape", "info_hash": [h1, h2]}))
        .await;
    let v = a.recv().await;
    assert_eq!(v["action"], "scrape", "{v}");
    assert_eq!(v["files"][&h1]["incomplete"], 1, "{v}");
    assert_eq!(v["files"][&h2]["incomplete"], 0, "{v}");
    a.send(&announce(&h2, &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_full_scrape_false_refuses_scrapes_without_info_hash() {
    let t = start(|c| c.allow_full_scrape = false).await;
    let h1 = id(41);
    let mut a = Client::connect(&t.ws_url()).await;
    a.send(&announce(&h1, &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &h1);
    a.send(&json!({"action": "scrape"})).await;
    assert_error_reply(&a.recv().await, "scrape", None, "full scrape is disabled");
    a.send(&json!({"action": "scrape", "info_hash": null}))
        .await;
    assert_error_reply(&a.recv().await, "scrape", None, "full scrape is disabled");
    // A scrape naming its hash still works, and so does announcing.
    a.send(&json!({"action": "scrape", "info_hash": h1})).await;
    let v = a.recv().await;
    assert_eq!(v["files"][&h1]["incomplete"], 1, "{v}");
    a.send(&announce(&h1, &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &h1);

    // With the default, a full scrape lists the swarm.
    let t2 = start(|_| {}).await;
    let mut b = Client::connect(&t2.ws_url()).await;
    b.send(&announce(&h1, &bin(b'b'))).await;
    b.recv().await;
    b.send(&json!({"action": "scrape"})).await;
    let v = b.recv().await;
    assert_eq!(v["files"][&h1]["incomplete"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_503_and_frees_the_slot_on_close() {
    let t = start(|c| c.max_connections = 2).await;
    let url = t.ws_url();
    let mut a = Client::connect(&url).await;
    let b = Client::connect(&url).await;
    assert!(wait_until(WAIT, || t.snapshot().connections == 2).await);
    assert_eq!(try_connect(&url, &[]).await.err(), Some(503));
    assert_eq!(t.metrics().rejections("max_connections"), 1);
    // Plain HTTP is not a WebSocket connection: health checks still work when full.
    assert_eq!(
        http_get(&format!("{}/health", t.http_url())).await,
        (200, "ok\n".into())
    );

    // A clean close frees the slot.
    a.ws.close(None).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || t.snapshot().connections == 1).await,
        "slot not released after a close frame: {}",
        t.snapshot().connections
    );
    let mut c = try_connect(&url, &[]).await.expect("a slot is free again");
    c.send(&announce(&id(1), &bin(b'c'))).await;
    assert_announce_reply(&c.recv().await, &id(1));

    // So does a client that vanishes without a close frame (the default write timeout is 10 s:
    // the slot must not wait for it).
    drop(b);
    assert!(
        wait_until(Duration::from_secs(3), || t.snapshot().connections == 1).await,
        "slot not released after the client dropped its socket: {}",
        t.snapshot().connections
    );
    let _d = try_connect(&url, &[]).await.expect("a slot is free again");
    assert_eq!(
        t.metrics().closes("slow"),
        0,
        "a vanished client is not slow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_ip_answers_429_and_frees_the_slot_on_close() {
    let t = start(|c| c.max_connections_per_ip = 1).await;
    let url = t.ws_url();
    let mut a = Client::connect(&url).await;
    assert_eq!(try_connect(&url, &[]).await.err(), Some(429));
    assert_eq!(t.metrics().rejections("max_connections_per_ip"), 1);
    // The refused attempt took no slot; the first connection still works.
    a.send(&announce(&id(1), &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &id(1));
    a.ws.close(None).await.unwrap();
    assert!(wait_until(Duration::from_secs(3), || t.snapshot().connections == 0).await);
    let mut b = try_connect(&url, &[])
        .await
        .expect("the address has a slot again");
    b.send(&announce(&id(1), &bin(b'b'))).await;
    assert_eq!(assert_announce_reply(&b.recv().await, &id(1)), (0, 1));
}

/// Spawns a task that reads (and counts) everything a client receives, so that its own queue
/// never fills.
fn drain(
    stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let task = tokio::spawn(async move {
        let mut stream = stream;
        while let Some(Ok(_)) = stream.next().await {
            n2.fetch_add(1, Ordering::Relaxed);
        }
    });
    (n, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_queue_drops_offers_for_a_reader_that_never_reads_and_replies_evict_them() {
    const SDP: usize = 16 * 1024;
    const ANNOUNCES: u32 = 1000;
    let t = start(|c| {
        c.out_queue_messages = 4;
        c.out_queue_bytes = 1 << 20;
        c.write_timeout_secs = 60.0;
    })
    .await;
    let ih = bin(b'q');
    // The victim joins and then stops reading.
    let mut victim = Client::connect(&t.ws_url()).await;
    victim.send(&announce(&ih, &bin(b'v'))).await;
    assert_announce_reply(&victim.recv().await, &ih);
    // The flooder waits for each reply (lockstep), so its own queue never overflows.
    let mut flooder = Client::connect(&t.ws_url()).await;
    flooder.send(&announce(&ih, &bin(b'f'))).await;
    assert_announce_reply(&flooder.recv().await, &ih);

    let rss_before = ghostmesh_tracker::metrics::resident_memory_bytes();
    let started = Instant::now();
    for i in 0..ANNOUNCES {
        let mut m = announce(&ih, &bin(b'f'));
        m["offers"] = big_offer(&format!("a{i:019}"), SDP);
        flooder.send(&m).await;
        assert_announce_reply(&flooder.recv().await, &ih);
    }
    let flood_time = started.elapsed();
    let full = drops(&t, "offer_queue_full");
    let relayed = t.snapshot().counters.offers_relayed;
    assert_eq!(relayed, ANNOUNCES as u64);
    assert!(
        full > 0,
        "no offer dropped for a client that never reads ({relayed} relayed)"
    );
    // Delivered plus dropped accounts for every relayed offer.
    assert_eq!(t.metrics().responses("offer") + full, relayed);
    assert_eq!(drops(&t, "reply_queue_full"), 0);
    // Bounded memory: ~16 MiB of offers went to the victim; most were dropped, not held.
    if let (Some(before), Some(after)) = (
        rss_before,
        ghostmesh_tracker::metrics::resident_memory_bytes(),
    ) {
        let grown = after.saturating_sub(before);
        eprintln!("RSS grew by {grown} bytes during the flood");
        assert!(
            grown < (ANNOUNCES as u64 * SDP as u64) / 2,
            "RSS grew by {grown} bytes while relaying {} bytes of offers to a stalled client",
            ANNOUNCES as usize * SDP
        );
    }

    // The victim's queue is full of offers; a reply to it evicts one instead of being dropped.
    assert_eq!(drops(&t, "offer_evicted"), 0);
    victim.send(&announce(&ih, &bin(b'v'))).await;
    assert!(
        wait_until(WAIT, || drops(&t, "offer_evicted") == 1).await,
        "the reply did not evict a queued offer"
    );
    assert_eq!(drops(&t, "reply_queue_full"), 0);
    // Reading now, the victim gets the offers that were delivered, then its reply, last.
    let mut offers_read = 0u64;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no announce reply within {WAIT:?}"
        );
        let v = victim.recv().await;
        if v.get("offer").is_some() {
            offers_read += 1;
            assert!(offers_read <= relayed, "more offers than relayed");
            continue;
        }
        assert_eq!(assert_announce_reply(&v, &ih), (0, 2));
        break;
    }
    victim.expect_silence(SILENCE).await;
    assert_eq!(
        offers_read,
        t.metrics().responses("offer") - drops(&t, "offer_evicted"),
        "every queued offer that was not evicted arrives"
    );
    assert!(offers_read < relayed);
    eprintln!(
        "flood of {ANNOUNCES} x {SDP} B offers took {flood_time:?}: {full} dropped, {offers_read} delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_timeout_closes_a_reader_that_never_reads() {
    const SDP: usize = 16 * 1024;
    let t = start(|c| {
        c.out_queue_messages = 4;
        c.write_timeout_secs = 1.0;
    })
    .await;
    let ih = bin(b'w');
    let mut victim = Client::connect(&t.ws_url()).await;
    victim.send(&announce(&ih, &bin(b'v'))).await;
    assert_announce_reply(&victim.recv().await, &ih);
    let mut flooder = Client::connect(&t.ws_url()).await;
    flooder.send(&announce(&ih, &bin(b'f'))).await;
    assert_announce_reply(&flooder.recv().await, &ih);
    let (mut tx, rx) = flooder.ws.split();
    let (_replies, reader) = drain(rx);

    // Flood in rounds until the victim is closed as slow (bounded: 60 rounds, ~9 s).
    let started = Instant::now();
    let mut i = 0u32;
    for _round in 0..60 {
        if t.metrics().closes("slow") > 0 {
            break;
        }
        if t.snapshot().connections == 2 {
            for _ in 0..40 {
                let mut m = announce(&ih, &bin(b'f'));
                m["offers"] = big_offer(&format!("b{i:019}"), SDP);
                i += 1;
                tx.send(Message::text(m.to_string())).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        t.metrics().closes("slow"),
        1,
        "victim not closed as slow after {:?} ({i} offers)",
        started.elapsed()
    );
    // It left its swarm and its slot; the flooder is still there.
    assert!(wait_until(WAIT, || t.snapshot().connections == 1).await);
    assert_eq!(t.snapshot().core.peers, 1);
    tx.send(Message::text(announce(&ih, &bin(b'f')).to_string()))
        .await
        .unwrap();
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_silent_clients_with_1000_but_not_pinging_ones() {
    let t = start(|c| c.idle_timeout_secs = 0.5).await;
    let started = Instant::now();
    let mut silent = Client::connect(&t.ws_url()).await;
    let mut pinger = Client::connect(&t.ws_url()).await;
    for i in 0..6u8 {
        pinger.ws.send(Message::Ping(vec![i].into())).await.unwrap();
        // The tracker answers each ping with a pong carrying the same payload.
        let pong = tokio::time::timeout(WAIT, pinger.ws.next()).await.unwrap();
        match pong {
            Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], &[i]),
            other => panic!("expected a pong, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 1.5 s have passed: the pinger is still served.
    let ih = id(50);
    pinger.send(&announce(&ih, &bin(b'p'))).await;
    assert_announce_reply(&pinger.recv().await, &ih);
    let close = silent.recv_close().await;
    assert_eq!(close_code(&close), 1000);
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(t.metrics().closes("idle"), 1);
    // Without pings, the pinger goes the same way.
    let quiet_from = Instant::now();
    assert_eq!(close_code(&pinger.recv_close().await), 1000);
    let waited = quiet_from.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_queue_bytes_bounds_the_queue_by_size() {
    const SDP: usize = 16 * 1024;
    const ANNOUNCES: u32 = 600;
    let t = start(|c| {
        c.out_queue_messages = 10_000;
        c.out_queue_bytes = 48 * 1024;
        c.write_timeout_secs = 60.0;
    })
    .await;
    let ih = bin(b'B');
    let mut victim = Client::connect(&t.ws_url()).await;
    victim.send(&announce(&ih, &bin(b'v'))).await;
    assert_announce_reply(&victim.recv().await, &ih);
    let mut flooder = Client::connect(&t.ws_url()).await;
    flooder.send(&announce(&ih, &bin(b'f'))).await;
    assert_announce_reply(&flooder.recv().await, &ih);
    for i in 0..ANNOUNCES {
        let mut m = announce(&ih, &bin(b'f'));
        m["offers"] = big_offer(&format!("c{i:019}"), SDP);
        flooder.send(&m).await;
        assert_announce_reply(&flooder.recv().await, &ih);
    }
    let full = drops(&t, "offer_queue_full");
    assert!(full > 0, "the byte bound dropped nothing");
    assert_eq!(
        t.metrics().responses("offer") + full,
        t.snapshot().counters.offers_relayed
    );
    // Two queued offers (~33 KB) leave room for a small reply: it is delivered, nothing evicted.
    victim.send(&announce(&ih, &bin(b'v'))).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut offers_read = 0u64;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no reply");
        let v = victim.recv().await;
        if v.get("offer").is_some() {
            offers_read += 1;
            continue;
        }
        assert_announce_reply(&v, &ih);
        break;
    }
    assert_eq!(offers_read, t.metrics().responses("offer"));
    assert_eq!(drops(&t, "reply_queue_full"), 0);
    assert_eq!(drops(&t, "offer_evicted"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_closes_sockets_that_never_upgrade() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = start(|c| c.handshake_timeout_secs = 0.5).await;
    let addr = t.local_addr();
    let started = Instant::now();
    // Silent, half a request header (slowloris), and an idle keep-alive HTTP connection.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let mut keepalive = tokio::net::TcpStream::connect(addr).await.unwrap();
    keepalive
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = keepalive.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    for s in [&mut silent, &mut partial, &mut keepalive] {
        let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("the tracker closes the socket");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    // An upgraded connection is not subject to it.
    let mut c = Client::connect(&t.ws_url()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.send(&announce(&id(1), &bin(b'c'))).await;
    assert_announce_reply(&c.recv().await, &id(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_max_connections_plus_slack_are_dropped_at_accept() {
    use tokio::io::AsyncReadExt;
    // max_connections + 64 sockets may be mid-handshake; the next is closed at once.
    let t = start(|c| c.max_connections = 1).await;
    let addr = t.local_addr();
    let mut held = Vec::new();
    for _ in 0..65 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.metrics().rejections("socket_limit"), 0);
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("the extra socket is closed at once");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(t.metrics().rejections("socket_limit"), 1);
    // Held sockets are still open (the handshake timeout is 10 s).
    let r = tokio::time::timeout(Duration::from_millis(100), held[0].read(&mut buf)).await;
    assert!(r.is_err(), "a held socket was closed: {r:?}");
    // Once they go, a WebSocket client gets in.
    drop(held);
    drop(extra);
    let url = t.ws_url();
    let deadline = Instant::now() + WAIT;
    let mut c = loop {
        match try_connect(&url, &[]).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no slot after the sockets closed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    c.send(&announce(&id(1), &bin(b'c'))).await;
    assert_announce_reply(&c.recv().await, &id(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scrape_larger_than_out_queue_bytes_still_gets_an_answer() {
    // With the default out_queue_bytes (256 KiB), a full scrape of ~4000 swarms is larger than
    // the whole queue. The client must get a reply (or an error reply), never silence. Full
    // scrapes are allowed up to 10,000 swarms here, so the reply reaches the queue and the
    // oversized-reply safety net (not the core's full-scrape bound) answers.
    const SWARMS: u32 = 4000;
    let t = start(|c| {
        c.max_swarms_per_connection = SWARMS as usize + 1;
        c.max_scrape_hashes = 10_000;
    })
    .await;
    let mut a = Client::connect(&t.ws_url()).await;
    let started = Instant::now();
    for i in 0..SWARMS {
        let ih = format!("h{i:019}");
        a.send(&announce(&ih, &bin(b'a'))).await;
        assert_announce_reply(&a.recv().await, &ih);
    }
    eprintln!("{SWARMS} announces took {:?}", started.elapsed());
    assert_eq!(t.snapshot().core.swarms, SWARMS as usize);
    a.send(&json!({"action": "scrape"})).await;
    let v = a
        .recv_within(Duration::from_secs(3))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no answer to a full scrape; drops: {:?}",
                t.snapshot().drops
            )
        });
    assert_eq!(v["action"], "scrape", "{v}");
    let reason = v["failure reason"].as_str().unwrap_or_default();
    assert!(reason.contains("out_queue_bytes"), "{v}");
    // The socket keeps working.
    a.send(&announce(&id(1), &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &id(1));
}
