//! The WebTorrent tracker protocol over real WebSockets on 127.0.0.1: every rule of the
//! protocol section of the tracker issue, checked from the client's side.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::{Client, announce, assert_error_reply, bin, id, offers, start};
use tokio_tungstenite::tungstenite::Message;

const SILENCE: Duration = Duration::from_millis(300);

fn counts(v: &Value) -> (u64, u64) {
    assert_eq!(v["action"], "announce", "{v}");
    (
        v["complete"].as_u64().unwrap(),
        v["incomplete"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_the_captured_p2pt_session_with_equivalent_replies() {
    // Two P2PT peers in one Node process share one socket (see frames/README.md): replaying
    // their client frames on one connection must produce the reference server's replies.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/reference/frames/p2pt-via-reference-tracker.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("captured frames (../shared beside the repo)");
    let frames: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let t = start(|_| {}).await;
    let mut c = Client::connect(&t.ws_url()).await;
    let mut expected = Vec::new();
    let mut got = Vec::new();
    for f in &frames {
        let body: Value = serde_json::from_str(f["text"].as_str().unwrap()).unwrap();
        if f["dir"] == "c2s" {
            // Send the exact captured bytes.
            c.send_text(f["text"].as_str().unwrap()).await;
        } else {
            expected.push(body);
            got.push(c.recv().await);
        }
    }
    c.expect_silence(SILENCE).await;
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_events_and_left_variants_keep_counts_right() {
    let t = start(|_| {}).await;
    let ih = id(1);
    let mut a = Client::connect(&t.ws_url()).await;
    let mut b = Client::connect(&t.ws_url()).await;

    // started, left 0: a seeder. The reply mirrors the reference: counts, interval, info_hash.
    let mut m = announce(&ih, &bin(b'a'));
    m["event"] = "started".into();
    m["left"] = 0.into();
    a.send(&m).await;
    let r = a.recv().await;
    assert_eq!(counts(&r), (1, 0));
    assert_eq!(r["interval"], 120);
    assert_eq!(r["info_hash"], ih.as_str());

    // P2PT style: no event, no left, offers null, unknown fields: a leecher.
    let mut m = announce(&ih, &bin(b'b'));
    m["offers"] = Value::Null;
    m["x_custom"] = json!({"nested": [1, 2]});
    b.send(&m).await;
    assert_eq!(counts(&b.recv().await), (1, 1));

    // Float, negative and null `left`, `paused`, `empty` and `update` are all accepted.
    for (event, left) in [
        (json!("paused"), json!(12.5)),
        (json!("empty"), json!(-1)),
        (json!("update"), Value::Null),
        (json!(""), json!(3)),
    ] {
        let mut m = announce(&ih, &bin(b'b'));
        m["event"] = event.clone();
        m["left"] = left.clone();
        b.send(&m).await;
        assert_eq!(counts(&b.recv().await), (1, 1), "event {event} left {left}");
    }

    // completed makes a seeder and counts a download; binary frames work like text.
    let mut m = announce(&ih, &bin(b'b'));
    m["event"] = "completed".into();
    b.ws.send(Message::binary(m.to_string().into_bytes()))
        .await
        .unwrap();
    assert_eq!(counts(&b.recv().await), (2, 0));

    // stopped leaves and still gets a reply (the reference client expects one).
    let mut m = announce(&ih, &bin(b'a'));
    m["event"] = "stopped".into();
    a.send(&m).await;
    assert_eq!(counts(&a.recv().await), (1, 0));

    b.send(&json!({"action": "scrape", "info_hash": ih})).await;
    let s = b.recv().await;
    assert_eq!(
        s["files"][ih.as_str()],
        json!({"complete": 1, "incomplete": 0, "downloaded": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_go_to_distinct_random_other_peers_exactly_as_sent() {
    let t = start(|_| {}).await;
    let ih = id(2);
    let mut peers = Vec::new();
    for p in 0..3u8 {
        let mut c = Client::connect(&t.ws_url()).await;
        c.send(&announce(&ih, &bin(b'0' + p))).await;
        c.recv().await;
        peers.push(c);
    }
    let mut offerer = Client::connect(&t.ws_url()).await;
    let mut m = announce(&ih, &id(99));
    // Five offers for three other peers: offers[0..3) are relayed, the rest dropped. The offer
    // objects carry extra fields and odd spacing-free JSON that must arrive untouched.
    let mut list = offers(7, 5);
    list[0]["offer"]["extra"] = json!({"k": [true, null, "\u{e9}"]});
    m["offers"] = list.clone();
    offerer.send(&m).await;
    assert_eq!(counts(&offerer.recv().await), (0, 4));
    offerer.expect_silence(SILENCE).await; // no offer back to the sender

    let mut seen = HashSet::new();
    for c in &mut peers {
        let o = c.recv().await;
        let keys: HashSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            HashSet::from(["action", "offer", "offer_id", "peer_id", "info_hash"]),
            "{o}"
        );
        assert_eq!(o["action"], "announce");
        assert_eq!(o["peer_id"], id(99).as_str());
        assert_eq!(o["info_hash"], ih.as_str());
        let i = list
            .as_array()
            .unwrap()
            .iter()
            .position(|x| x["offer_id"] == o["offer_id"])
            .expect("a sent offer");
        assert!(
            i < 3,
            "offers are relayed in order, surplus dropped: got offer {i}"
        );
        assert_eq!(o["offer"], list[i]["offer"]);
        assert!(seen.insert(i), "each peer gets a different offer");
        c.expect_silence(SILENCE).await; // exactly one offer per peer
    }
    assert_eq!(t.snapshot().counters.offers_surplus, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_reach_only_the_offerer_and_only_from_the_recipient() {
    let t = start(|c| c.offer_timeout_secs = 0.6).await;
    let ih = id(3);
    let (mut a, mut b, mut c) = (
        Client::connect(&t.ws_url()).await,
        Client::connect(&t.ws_url()).await,
        Client::connect(&t.ws_url()).await,
    );
    a.send(&announce(&ih, &bin(b'a'))).await;
    a.recv().await;
    let mut m = announce(&ih, &bin(b'b'));
    m["offers"] = offers(1, 1);
    b.send(&m).await;
    b.recv().await;
    let offer = a.recv().await;
    let offer_id = offer["offer_id"].as_str().unwrap().to_string();
    let answer = |from: u8| {
        json!({"action": "announce", "info_hash": ih, "peer_id": bin(from), "to_peer_id": bin(b'b'),
               "offer_id": offer_id, "answer": {"type": "answer", "sdp": "v=0\r\n"}})
    };

    // A third party that was never sent the offer cannot answer it (anti-spoofing).
    c.send(&answer(b'c')).await;
    assert_error_reply(&c.recv().await, "announce", Some(&ih), "no matching offer");
    // Nor can the right peer_id from the wrong socket.
    c.send(&answer(b'a')).await;
    assert_error_reply(&c.recv().await, "announce", Some(&ih), "no matching offer");
    b.expect_silence(SILENCE).await;

    // The recipient's answer goes to the offerer, with no reply to the answerer (reference).
    a.send(&answer(b'a')).await;
    let got = b.recv().await;
    assert_eq!(
        got,
        json!({"action": "announce", "answer": {"type": "answer", "sdp": "v=0\r\n"}, "offer_id": offer_id,
               "peer_id": bin(b'a'), "info_hash": ih})
    );
    a.expect_silence(SILENCE).await;

    // One answer per offer.
    a.send(&answer(b'a')).await;
    assert_error_reply(&a.recv().await, "announce", Some(&ih), "no matching offer");

    // An expired offer cannot be answered.
    let mut m = announce(&ih, &bin(b'b'));
    m["offers"] = offers(2, 1);
    b.send(&m).await;
    b.recv().await;
    let offer = a.recv().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut late = answer(b'a');
    late["offer_id"] = offer["offer_id"].clone();
    a.send(&late).await;
    assert_error_reply(&a.recv().await, "announce", Some(&ih), "expired");
    b.expect_silence(SILENCE).await;
    assert_eq!(t.snapshot().counters.answers_relayed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_one_many_or_all_with_zeros_for_unknown() {
    let t = start(|_| {}).await;
    let (ih1, ih2, unknown) = (id(10), id(11), id(12));
    let mut c = Client::connect(&t.ws_url()).await;
    let mut m = announce(&ih1, &bin(1));
    m["left"] = 0.into();
    c.send(&m).await;
    c.recv().await;
    c.send(&announce(&ih2, &bin(2))).await;
    c.recv().await;

    c.send(&json!({"action": "scrape", "info_hash": ih1})).await;
    let r = c.recv().await;
    assert_eq!(r["action"], "scrape");
    assert_eq!(
        r["files"],
        json!({ih1.clone(): {"complete": 1, "incomplete": 0, "downloaded": 0}})
    );
    assert_eq!(r["flags"]["min_request_interval"], 120);

    c.send(&json!({"action": "scrape", "info_hash": [ih2, unknown]}))
        .await;
    let r = c.recv().await;
    assert_eq!(
        r["files"],
        json!({ih2.clone(): {"complete": 0, "incomplete": 1, "downloaded": 0},
               unknown.clone(): {"complete": 0, "incomplete": 0, "downloaded": 0}})
    );

    c.send(&json!({"action": "scrape"})).await;
    let r = c.recv().await;
    assert_eq!(r["files"].as_object().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scrape_is_bounded_like_a_list() {
    let t = start(|c| c.max_scrape_hashes = 1).await;
    let mut c = Client::connect(&t.ws_url()).await;
    for s in [50, 51] {
        c.send(&announce(&id(s), &bin(1))).await;
        c.recv().await;
    }
    c.send(&json!({"action": "scrape"})).await;
    assert_error_reply(&c.recv().await, "scrape", None, "max_scrape_hashes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_error_replies_and_the_socket_stays_open() {
    let t = start(|_| {}).await;
    let ih = id(4);
    let mut c = Client::connect(&t.ws_url()).await;
    let high = format!("{}\u{100}", "a".repeat(19));
    let cases: Vec<(String, &str, Option<&str>, &str)> = vec![
        ("not json".into(), "announce", None, "not valid JSON"),
        ("[1,2]".into(), "announce", None, "invalid request"),
        (json!({"info_hash": ih}).to_string(), "announce", None, "missing `action`"),
        (json!({"action": "foo"}).to_string(), "foo", None, "invalid action"),
        (json!({"action": "announce", "info_hash": "short", "peer_id": bin(1)}).to_string(), "announce", None, "invalid info_hash"),
        (json!({"action": "announce", "info_hash": high, "peer_id": bin(1)}).to_string(), "announce", None, "U+0100"),
        (json!({"action": "announce", "info_hash": ih, "peer_id": 5}).to_string(), "announce", Some(&ih), "invalid peer_id"),
        (json!({"action": "announce", "info_hash": ih, "peer_id": bin(1), "event": "bogus"}).to_string(), "announce", Some(&ih), "invalid event"),
        (json!({"action": "announce", "info_hash": ih, "peer_id": bin(1), "left": "many"}).to_string(), "announce", Some(&ih), "invalid left"),
        (json!({"action": "announce", "info_hash": ih, "peer_id": bin(1), "offers": [{"offer_id": "x"}]}).to_string(), "announce", Some(&ih), "offers[0]"),
        (json!({"action": "announce", "info_hash": ih, "peer_id": bin(1), "answer": {"type": "answer"}}).to_string(), "announce", Some(&ih), "to_peer_id"),
        (json!({"action": "scrape", "info_hash": [1]}).to_string(), "scrape", None, "invalid info_hash"),
    ];
    for (frame, action, info_hash, needle) in &cases {
        c.send_text(frame).await;
        assert_error_reply(&c.recv().await, action, *info_hash, needle);
    }
    // Invalid UTF-8 in a binary frame is an error reply too, not a dropped socket.
    c.ws.send(Message::binary(vec![0xff, 0xfe, b'{']))
        .await
        .unwrap();
    assert_error_reply(&c.recv().await, "announce", None, "not valid JSON");
    c.send(&announce(&ih, &bin(1))).await;
    assert_eq!(counts(&c.recv().await), (0, 1), "socket still works");
    assert!(t.metrics().requests("invalid") >= cases.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_socket_removes_every_peer_it_announced() {
    let t = start(|_| {}).await;
    let (ih1, ih2) = (id(20), id(21));
    let mut pooled = Client::connect(&t.ws_url()).await;
    // A pooled client socket: several info_hashes and several peer_ids on one connection.
    for (ih, p) in [(&ih1, 1u8), (&ih1, 2), (&ih2, 1), (&ih2, 3)] {
        pooled.send(&announce(ih, &bin(p))).await;
        pooled.recv().await;
    }
    let mut other = Client::connect(&t.ws_url()).await;
    other.send(&announce(&ih1, &bin(9))).await;
    assert_eq!(counts(&other.recv().await), (0, 3));
    assert_eq!(t.snapshot().core.peers, 5);

    pooled.ws.close(None).await.unwrap();
    drop(pooled);
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while t.snapshot().core.peers != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = t.snapshot().core;
    assert_eq!((s.peers, s.swarms), (1, 1), "the empty swarm is freed");
    other
        .send(&json!({"action": "scrape", "info_hash": [ih1, ih2]}))
        .await;
    let r = other.recv().await;
    assert_eq!(r["files"][ih1.as_str()]["incomplete"], 1);
    assert_eq!(r["files"][ih2.as_str()]["incomplete"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_expire_and_their_swarms_are_freed() {
    let t = start(|c| {
        c.peer_timeout_secs = 0.4;
        c.sweep_interval_secs = 0.1;
    })
    .await;
    let ih = id(30);
    let mut quiet = Client::connect(&t.ws_url()).await;
    quiet.send(&announce(&ih, &bin(1))).await;
    quiet.recv().await;
    let mut chatty = Client::connect(&t.ws_url()).await;
    for _ in 0..8 {
        chatty.send(&announce(&ih, &bin(2))).await;
        chatty.recv().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chatty.send(&announce(&ih, &bin(2))).await;
    assert_eq!(
        counts(&chatty.recv().await),
        (0, 1),
        "the silent peer expired, the chatty one stayed"
    );
    assert!(t.snapshot().counters.peers_expired >= 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(t.snapshot().core.swarms, 0, "empty swarms are freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reconnects_moves_to_its_new_socket() {
    let t = start(|_| {}).await;
    let ih = id(40);
    let mut old = Client::connect(&t.ws_url()).await;
    old.send(&announce(&ih, &bin(1))).await;
    old.recv().await;
    let mut new = Client::connect(&t.ws_url()).await;
    new.send(&announce(&ih, &bin(1))).await;
    assert_eq!(
        counts(&new.recv().await),
        (0, 1),
        "same peer, not a second one"
    );
    // A stopped from the old socket no longer removes the peer.
    let mut m = announce(&ih, &bin(1));
    m["event"] = "stopped".into();
    old.send(&m).await;
    assert_eq!(counts(&old.recv().await), (0, 1));
    // Offers now reach the new socket.
    let mut offerer = Client::connect(&t.ws_url()).await;
    let mut m = announce(&ih, &bin(2));
    m["offers"] = offers(3, 1);
    offerer.send(&m).await;
    offerer.recv().await;
    assert_eq!(new.recv().await["peer_id"], bin(2).as_str());
    old.expect_silence(SILENCE).await;
}
