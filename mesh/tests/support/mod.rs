//! Helpers shared by the `Mesh` shell tests: bounded waits, event pickers, an in-process tracker.
#![allow(clippy::unwrap_used, dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ghostmesh::mesh::{Mesh, MeshEvent, PeerId};
use ghostmesh::signal::{Id20, info_hash_of};
use ghostmesh::transport::connector::MemoryNetwork;
use ghostmesh::transport::{Frame, Link};
use ghostmesh::wire::Payload;
use ghostmesh_tracker::{Config, Tracker};
use rand::SeedableRng;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

/// `fut`, or a panic naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Waits for the first event `pick` accepts, skipping others.
pub async fn wait_for<T>(
    mesh: &mut Mesh,
    what: &str,
    mut pick: impl FnMut(MeshEvent) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            match mesh.next_event().await {
                Some(event) => {
                    if let Some(v) = pick(event) {
                        return v;
                    }
                }
                None => panic!("event stream ended while waiting for {what}"),
            }
        }
    })
    .await
}

/// A picker for `PeerConnected` that logs tracker warnings on the way.
pub fn connected(me: &str) -> impl FnMut(MeshEvent) -> Option<PeerId> {
    let me = me.to_owned();
    move |e: MeshEvent| match e {
        MeshEvent::PeerConnected(p) => Some(p),
        MeshEvent::TrackerWarning { message, .. } => {
            eprintln!("{me}: tracker warning: {message}");
            None
        }
        _ => None,
    }
}

/// Answers the next message with `reply(payload)` and returns what was received.
pub async fn serve_one(
    mesh: &mut Mesh,
    reply: impl FnOnce(&Payload) -> Payload,
) -> (String, Payload) {
    let (peer, payload, handle) = wait_for(mesh, "a message", |e| match e {
        MeshEvent::Message {
            peer,
            payload,
            handle,
        } => Some((peer, payload, handle)),
        _ => None,
    })
    .await;
    let answer = reply(&payload);
    mesh.respond(handle, answer).await.unwrap();
    (peer, payload)
}

/// Our tracker, in-process on 127.0.0.1 (`listen` "127.0.0.1:0" for any port). A fixed port
/// just released by a stopped tracker may take a moment to be free again: retried, bounded.
pub async fn start_tracker(listen: &str) -> Tracker {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let started = Tracker::start(Config {
            listen: listen.into(),
            ..Config::default()
        })
        .await;
        match started {
            Ok(t) => return t,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("tracker on {listen} not up yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("tracker on {listen}: {e}"),
        }
    }
}

/// A raw peer: announces one memory offer over its own WebSocket, and returns the link the
/// mesh's answer opens.
pub async fn raw_peer(url: &str, net: &MemoryNetwork, swarm: &str) -> Box<dyn Link> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let (offer, pending) = net.connector("raw").offer("rawlabel".into()).await.unwrap();
    let offer: serde_json::Value = serde_json::from_str(&offer).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let offer_id = Id20::random(&mut rng);
    let announce = format!(
        r#"{{"action":"announce","info_hash":{},"peer_id":{},"numwant":1,"uploaded":0,"downloaded":0,"left":0,"event":"started","offers":[{{"offer_id":{},"offer":{}}}]}}"#,
        info_hash_of(swarm).to_json(),
        Id20::random(&mut rng).to_json(),
        offer_id.to_json(),
        offer,
    );
    ws.send(WsMessage::Text(announce.into())).await.unwrap();
    let answer = within("the mesh's answer", async {
        loop {
            let Some(Ok(WsMessage::Text(text))) = ws.next().await else {
                panic!("tracker socket ended")
            };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if let Some(answer) = v.get("answer") {
                return answer.to_string();
            }
        }
    })
    .await;
    pending.accept(answer).await.unwrap()
}

/// The next text frame on a raw link, skipping a Rust peer's binary hello (which JavaScript
/// peers ignore too).
pub async fn next_text(link: &dyn Link) -> String {
    loop {
        match within("a frame", link.recv()).await {
            Some(Frame::Text(t)) => return t,
            Some(Frame::Binary(b)) if b.starts_with(&ghostmesh::relay::layered::HELLO_MAGIC) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Waits until every mesh is linked to at least `n` peers.
pub async fn linked_to(meshes: &[&Mesh], n: usize) {
    within("the peers link up", async {
        loop {
            let mut full = true;
            for m in meshes {
                full &= m.peers().await.unwrap().len() >= n;
            }
            if full {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
