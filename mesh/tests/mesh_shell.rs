//! The `Mesh` shell over in-process memory links (a `MemoryNetwork` connector) and our tracker
//! on 127.0.0.1: several links per peer and failover, a lagging application, tracker restarts,
//! link and peer caps, `wss://` trackers, and a hostile peer speaking raw frames.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ghostmesh::mesh::{Mesh, MeshBuilder, MeshEvent};
use ghostmesh::signal::SignalConfig;
use ghostmesh::transport::Frame;
use ghostmesh::transport::connector::MemoryNetwork;
use ghostmesh::transport::memory::MemoryConfig;
use ghostmesh::wire::Payload;
use ghostmesh_tracker::{Config, Tracker};
use serde_json::json;

mod support;
use support::{connected, next_text, raw_peer, serve_one, start_tracker, wait_for, within};

const SWARM: &str = "mesh-shell-test";

/// Fast reconnects, so tracker restarts are quick to test.
fn signal() -> SignalConfig {
    SignalConfig {
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        ..SignalConfig::default()
    }
}

fn builder(urls: &[String], net: &MemoryNetwork, name: &str, seed: u64) -> MeshBuilder {
    Mesh::builder(urls.to_vec(), SWARM)
        .connector(net.connector(name))
        .signal_config(signal())
        .request_timeout(Duration::from_secs(20))
        .seed(seed)
}

async fn start(urls: &[String], net: &MemoryNetwork, name: &str, seed: u64) -> Mesh {
    builder(urls, net, name, seed).start().await.unwrap()
}

/// Polls `cond` every 20 ms until it holds (bounded).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_meshes_meet_talk_and_keep_json_key_order() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let urls = [tracker.ws_url()];
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = start(&urls, &net, "a", 1).await;
    let mut b = start(&urls, &net, "b", 2).await;
    let (a_id, b_id) = (a.peer_id().to_owned(), b.peer_id().to_owned());
    assert_eq!(wait_for(&mut a, "A meets B", connected("A")).await, b_id);
    assert_eq!(wait_for(&mut b, "B meets A", connected("B")).await, a_id);
    assert_eq!(a.peers().await.unwrap(), vec![b_id.clone()]);
    // Events are also a Stream.
    b.send_no_reply(&a_id, "via stream".into()).await.unwrap();
    let got = within("a streamed event", async {
        use futures_util::StreamExt;
        loop {
            if let Some(MeshEvent::Message { payload, .. }) = a.next().await {
                return payload;
            }
        }
    })
    .await;
    assert_eq!(got, Payload::from("via stream"));

    // Key order survives (JavaScript peers see JSON.stringify order, not sorted keys).
    let value: serde_json::Value =
        serde_json::from_str(r#"{"zeta":1,"alpha":{"y":2,"b":3}}"#).unwrap();
    let (sent, served) = tokio::join!(
        within("A's request", a.send(&b_id, Payload::Json(value.clone()))),
        serve_one(&mut b, |p| p.clone()),
    );
    let Payload::Json(got) = served.1 else {
        panic!("not JSON")
    };
    assert_eq!(got.to_string(), r#"{"zeta":1,"alpha":{"y":2,"b":3}}"#);
    let Payload::Json(back) = sent.unwrap() else {
        panic!("not JSON")
    };
    assert_eq!(back.to_string(), value.to_string());

    within("A stops", a.stop()).await;
    let closed = wait_for(&mut b, "B: PeerClosed", |e| match e {
        MeshEvent::PeerClosed(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(closed, a_id);
    assert!(b.peers().await.unwrap().is_empty());
    within("B stops", b.stop()).await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_link_takes_over_when_the_first_closes() {
    // Through two trackers the peers meet twice: two links.
    let (t1, t2) = (
        start_tracker("127.0.0.1:0").await,
        start_tracker("127.0.0.1:0").await,
    );
    let urls = [t1.ws_url(), t2.ws_url()];
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = start(&urls, &net, "a", 3).await;
    let mut b = start(&urls, &net, "b", 4).await;
    let b_id = b.peer_id().to_owned();
    wait_for(&mut a, "A meets B", connected("A")).await;
    until("two links", || net.links().len() == 2).await;

    assert!(net.disconnect_one("a", "b"));
    assert_eq!(net.links().len(), 1);
    // Give the close time to reach both cores, then talk over the remaining link.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (sent, _) = tokio::join!(
        within("send after failover", a.send(&b_id, "still there?".into())),
        serve_one(&mut b, |_| "yes".into()),
    );
    assert_eq!(sent.unwrap(), Payload::from("yes"));
    assert_eq!(
        a.peers().await.unwrap(),
        vec![b_id.clone()],
        "one link closing is not the peer closing"
    );

    // The last link closing is.
    assert_eq!(net.disconnect("a", "b"), 1);
    let closed = wait_for(&mut a, "A: PeerClosed", |e| match e {
        MeshEvent::PeerClosed(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(closed, b_id);
    a.stop().await;
    b.stop().await;
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_application_loses_nothing_and_commands_keep_working() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let urls = [tracker.ws_url()];
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = start(&urls, &net, "a", 5).await;
    let mut b = start(&urls, &net, "b", 6).await;
    let a_id = a.peer_id().to_owned();
    let b_id = wait_for(&mut a, "A meets B", connected("A")).await;
    wait_for(&mut b, "B meets A", connected("B")).await;

    // B sends far more messages than A's event queue and backlog hold; A reads nothing.
    const N: usize = 3 * ghostmesh::mesh::EVENT_BACKLOG;
    let sender = b.handle();
    let to = a_id.clone();
    let flood = tokio::spawn(async move {
        for i in 0..N {
            sender
                .send_no_reply(&to, format!("m{i}").into())
                .await
                .unwrap();
        }
    });
    within("B queues the flood", flood).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A's core still serves commands while its application lags.
    let t = Instant::now();
    assert_eq!(
        within("peers() while lagging", a.peers()).await.unwrap(),
        vec![b_id.clone()]
    );
    within(
        "send while lagging",
        a.send_no_reply(&b_id, "hello from A".into()),
    )
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // Now A reads: every message, in order.
    for i in 0..N {
        let got = wait_for(&mut a, "the next flooded message", |e| match e {
            MeshEvent::Message { payload, .. } => Some(payload),
            _ => None,
        })
        .await;
        assert_eq!(got, Payload::from(format!("m{i}").as_str()));
    }
    let got = wait_for(&mut b, "A's message", |e| match e {
        MeshEvent::Message { payload, .. } => Some(payload),
        _ => None,
    })
    .await;
    assert_eq!(got, Payload::from("hello from A"));
    a.stop().await;
    b.stop().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_tracker_is_reconnected_and_new_peers_still_meet() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let addr = tracker.local_addr();
    let urls = [tracker.ws_url()];
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = start(&urls, &net, "a", 7).await;
    wait_for(&mut a, "first TrackerConnected", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;

    tracker.shutdown().await;
    wait_for(&mut a, "a warning on tracker loss", |e| {
        matches!(e, MeshEvent::TrackerWarning { .. }).then_some(())
    })
    .await;
    let tracker = start_tracker(&addr.to_string()).await;
    wait_for(&mut a, "TrackerConnected after the restart", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;

    let mut c = start(&urls, &net, "c", 8).await;
    let c_id = c.peer_id().to_owned();
    assert_eq!(wait_for(&mut a, "A meets C", connected("A")).await, c_id);
    wait_for(&mut c, "C meets A", connected("C")).await;
    a.stop().await;
    c.stop().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_and_peer_caps_refuse_the_surplus() {
    let (t1, t2) = (
        start_tracker("127.0.0.1:0").await,
        start_tracker("127.0.0.1:0").await,
    );
    let urls = [t1.ws_url(), t2.ws_url()];
    let net = MemoryNetwork::new(MemoryConfig::default());

    // One link per peer: the second tracker's link to B is refused.
    let mut a = builder(&urls, &net, "a", 9)
        .max_links_per_peer(1)
        .start()
        .await
        .unwrap();
    let mut b = start(&urls, &net, "b", 10).await;
    let warning = wait_for(&mut a, "A refuses a second link", |e| match e {
        MeshEvent::PeerWarning { message, .. } => Some(message),
        _ => None,
    })
    .await;
    assert!(warning.contains("max_links_per_peer"), "{warning}");
    until("the refused link closes", || net.links().len() == 1).await;
    b.stop().await;
    a.stop().await;

    // One peer: C and D both reach E, only one stays.
    let mut e = builder(&urls[..1], &net, "e", 11)
        .max_peers(1)
        .start()
        .await
        .unwrap();
    let mut c = start(&urls[..1], &net, "c", 12).await;
    let mut d = start(&urls[..1], &net, "d", 13).await;
    let warning = wait_for(&mut e, "E refuses a second peer", |e| match e {
        MeshEvent::PeerWarning { message, .. } => Some(message),
        _ => None,
    })
    .await;
    assert!(warning.contains("max_peers"), "{warning}");
    assert_eq!(e.peers().await.unwrap().len(), 1);
    for m in [&mut c, &mut d, &mut e] {
        m.stop().await;
    }
    t1.shutdown().await;
    t2.shutdown().await;
}

/// A tracker serving `wss://` with a fresh self-signed certificate for "localhost", and
/// client settings trusting it.
async fn tls_tracker(tag: &str) -> (Tracker, Arc<rustls::ClientConfig>, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("ghostmesh-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tracker = Tracker::start(Config {
        listen: "127.0.0.1:0".into(),
        tls_cert: cert.to_str().unwrap().into(),
        tls_key: key.to_str().unwrap().into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (tracker, Arc::new(cfg), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_trackers_work_and_unknown_certificates_are_refused() {
    let (tracker, tls, dir) = tls_tracker("wss").await;
    let url = format!("wss://localhost:{}", tracker.local_addr().port());
    let urls = [url.clone()];
    let net = MemoryNetwork::new(MemoryConfig::default());

    // The default trust store (webpki roots) does not know our self-signed certificate.
    let mut stranger = start(&urls, &net, "s", 14).await;
    let message = wait_for(&mut stranger, "a TLS warning", |e| match e {
        MeshEvent::TrackerWarning { message, .. } => Some(message),
        _ => None,
    })
    .await;
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    stranger.stop().await;

    let mut a = builder(&urls, &net, "a", 15)
        .tracker_tls(tls.clone())
        .start()
        .await
        .unwrap();
    let mut b = builder(&urls, &net, "b", 16)
        .tracker_tls(tls)
        .start()
        .await
        .unwrap();
    assert_eq!(
        wait_for(&mut a, "A meets B over wss", connected("A")).await,
        b.peer_id()
    );
    wait_for(&mut b, "B meets A over wss", connected("B")).await;
    a.stop().await;
    b.stop().await;
    tracker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_tracker_urls_are_configuration_errors() {
    let err = Mesh::builder(vec!["http://127.0.0.1:1".into()], SWARM)
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ws://"), "{err}");
    let err = Mesh::builder(vec![], SWARM).start().await.unwrap_err();
    assert!(err.to_string().contains("no tracker"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_raw_peer_gets_warnings_not_a_broken_mesh() {
    let tracker = start_tracker("127.0.0.1:0").await;
    let urls = [tracker.ws_url()];
    let net = MemoryNetwork::new(MemoryConfig::default());
    let mut a = start(&urls, &net, "a", 17).await;
    wait_for(&mut a, "TrackerConnected", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;
    let raw = raw_peer(&urls[0], &net, SWARM).await;
    let raw_id = wait_for(&mut a, "A meets the raw peer", connected("A")).await;

    // Malformed envelopes: warnings, the link stays.
    for bad in [
        r#"^{"id":1,"msg":"x","c":"#,
        r#"^{"id":1,"c":0,"last":true}"#,
        r#"^[]"#,
    ] {
        raw.send(Frame::Text(bad.into())).await.unwrap();
        let (peer, message) = wait_for(&mut a, "a protocol warning", |e| match e {
            MeshEvent::PeerWarning { peer, message } => Some((peer, message)),
            _ => None,
        })
        .await;
        assert_eq!(peer, raw_id);
        assert!(message.contains("protocol error"), "{message}");
    }
    // More unfinished messages than a peer may have open: bounded, then a warning.
    for id in 0..40 {
        let f = format!(r#"^{{"id":{},"msg":"part","c":0}}"#, 1000 + id);
        raw.send(Frame::Text(f)).await.unwrap();
    }
    let message = wait_for(&mut a, "a partials warning", |e| match e {
        MeshEvent::PeerWarning { message, .. } => Some(message),
        _ => None,
    })
    .await;
    assert!(message.contains("protocol error"), "{message}");
    // A non-envelope frame is P2PT's raw data.
    raw.send(Frame::Text("plain".into())).await.unwrap();
    let data = wait_for(&mut a, "raw data", |e| match e {
        MeshEvent::Raw { data, .. } => Some(data),
        _ => None,
    })
    .await;
    assert_eq!(data, ghostmesh::node::RawFrame::Text("plain".into()));

    // Then a well-formed request is answered, in P2PT's exact framing and key order.
    raw.send(Frame::Text(
        r#"^{"id":7,"msg":"{\"z\":1,\"a\":2}","o":1,"c":0,"last":true}"#.into(),
    ))
    .await
    .unwrap();
    let (peer, payload) = serve_one(&mut a, |p| p.clone()).await;
    assert_eq!(peer, raw_id);
    assert_eq!(payload, Payload::Json(json!({"z": 1, "a": 2})));
    assert_eq!(
        next_text(raw.as_ref()).await,
        r#"^{"id":7,"msg":"{\"z\":1,\"a\":2}","o":1,"c":0,"last":true}"#
    );
    a.stop().await;
    tracker.shutdown().await;
}
