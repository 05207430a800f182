//! Two `Mesh`es find each other through our tracker (in-process, 127.0.0.1) and talk over
//! real WebRTC data channels.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::transport::webrtc::WebRtcConfig;
use ghostmesh::wire::Payload;
use serde_json::json;

mod support;
use support::{connected, serve_one, start_tracker, wait_for, within};

async fn start_mesh(url: &str, seed: u64) -> Mesh {
    Mesh::builder(vec![url.to_owned()], "mesh-webrtc-test")
        .webrtc(WebRtcConfig::bound_to("127.0.0.1:0"))
        .request_timeout(Duration::from_secs(20))
        .seed(seed)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_meshes_discover_each_other_and_exchange_messages() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();

    let t0 = Instant::now();
    let mut a = start_mesh(&url, 1).await;
    let mut b = start_mesh(&url, 2).await;
    let (a_id, b_id) = (a.peer_id().to_owned(), b.peer_id().to_owned());
    assert_ne!(a_id, b_id);

    let seen_by_a = wait_for(&mut a, "A: PeerConnected", connected("A")).await;
    assert_eq!(seen_by_a, b_id);
    let seen_by_b = wait_for(&mut b, "B: PeerConnected", connected("B")).await;
    assert_eq!(seen_by_b, a_id);
    println!("start to PeerConnected on both sides: {:?}", t0.elapsed());

    // A sends JSON to B; B answers.
    let (sent, served) = tokio::join!(
        within(
            "A's JSON request",
            a.send(&b_id, json!({"hello": "B", "n": 1}).into())
        ),
        serve_one(&mut b, |p| {
            assert_eq!(p, &Payload::Json(json!({"hello": "B", "n": 1})));
            json!({"ok": true}).into()
        }),
    );
    assert_eq!(served.0, a_id);
    assert_eq!(sent.unwrap(), Payload::Json(json!({"ok": true})));

    // B sends text to A; A answers.
    let (sent, served) = tokio::join!(
        within("B's text request", b.send(&a_id, "ping".into())),
        serve_one(&mut a, |p| {
            assert_eq!(p, &Payload::from("ping"));
            "pong".into()
        }),
    );
    assert_eq!(served.0, b_id);
    assert_eq!(sent.unwrap(), Payload::from("pong"));

    // A 100,000-character message with emoji (chunked) round-trips.
    let unit = "héllo wörld 👋🏽 ghostmesh 🚀 ";
    let big: String = unit.chars().cycle().take(100_000).collect();
    assert_eq!(big.chars().count(), 100_000);
    let expected = big.clone();
    let (sent, served) = tokio::join!(
        within("big request", a.send(&b_id, big.clone().into())),
        serve_one(&mut b, |p| p.clone()),
    );
    assert_eq!(served.1, Payload::Text(expected.clone()));
    assert_eq!(sent.unwrap(), Payload::Text(expected));

    // A handle sends from another task while the mesh itself keeps reading its events.
    let handle = b.handle();
    let to = a_id.clone();
    let from_task = tokio::spawn(async move { handle.send(&to, "from a task".into()).await });
    let (peer, _) = serve_one(&mut a, |p| {
        assert_eq!(p, &Payload::from("from a task"));
        "answered".into()
    })
    .await;
    assert_eq!(peer, b_id);
    let answer = within("the spawned send", from_task).await.unwrap();
    assert_eq!(answer.unwrap(), Payload::from("answered"));

    // Fire-and-forget arrives as a message.
    a.send_no_reply(&b_id, "no reply".into()).await.unwrap();
    let got = wait_for(&mut b, "fire-and-forget", |e| match e {
        MeshEvent::Message { payload, .. } => Some(payload),
        _ => None,
    })
    .await;
    assert_eq!(got, Payload::from("no reply"));

    // A stops; B sees A's links close.
    within("A stops", a.stop()).await;
    let closed = wait_for(&mut b, "B: PeerClosed", |e| match e {
        MeshEvent::PeerClosed(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(closed, a_id);
    assert!(matches!(
        b.send(&a_id, "gone?".into()).await,
        Err(ghostmesh::mesh::MeshError::Send(_))
    ));

    within("B stops", b.stop()).await;
    within("tracker shutdown", tracker.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_tracker_warns_and_stop_is_prompt() {
    // Nothing listens on port 1 of 127.0.0.1: the connect fails at once.
    let mut mesh = start_mesh("ws://127.0.0.1:1", 3).await;
    let message = wait_for(&mut mesh, "a tracker warning", |e| match e {
        MeshEvent::TrackerWarning { url, message } => {
            assert_eq!(url, "ws://127.0.0.1:1");
            Some(message)
        }
        _ => None,
    })
    .await;
    assert!(message.contains("connect"), "{message}");
    // No link to an unknown peer: refused at once, not after the request timeout.
    let unknown = "00".repeat(20);
    assert!(matches!(
        mesh.send(&unknown, "hi".into()).await,
        Err(ghostmesh::mesh::MeshError::Send(_))
    ));
    let t = Instant::now();
    within("stop while backing off", mesh.stop()).await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(within("end of events", mesh.next_event()).await, None);
}
