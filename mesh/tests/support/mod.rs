//! Helpers shared by the `Mesh` shell tests: bounded waits, event pickers, an in-process tracker.
#![allow(clippy::unwrap_used, dead_code)]

use std::time::Duration;

use ghostmesh::mesh::{Mesh, MeshEvent, PeerId};
use ghostmesh::wire::Payload;
use ghostmesh_tracker::{Config, Tracker};

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

/// Our tracker, in-process on 127.0.0.1 (`listen` "127.0.0.1:0" for any port).
pub async fn start_tracker(listen: &str) -> Tracker {
    Tracker::start(Config {
        listen: listen.into(),
        ..Config::default()
    })
    .await
    .unwrap()
}
