//! `send_file`, `relay_send` and `onion_send` in the live backend, through the mesh's own API:
//! [`MeshHandle::send_file`](ghostmesh::mesh::MeshHandle::send_file) (incoming as
//! `MeshEvent::File`), `send_routed` / `respond_routed` and `send_onion` (incoming as
//! `MeshEvent::Onion`). The live backend cannot see relays' frames, so the bytes per hop are
//! computed with the mesh's packet encoders from the route actually used (exact sizes: ids
//! that are not visible, like a routed request's id, have a fixed length).

use std::time::Duration;

use ghostmesh::file::{FileOptions, FileSession, FileSource};
use ghostmesh::mesh::Mesh;
use ghostmesh::relay::{OnionMessage, RouteMode, RouteOptions, packet};
use ghostmesh::wire::Payload;
use rand::RngExt;
use serde_json::json;

use super::{Live, SharedRef, lock};
use crate::filedata;
use crate::payload;
use crate::record::{MsgRecord, kind};
use crate::scenario::{Action, Content, FileFormat, RouteSpec, Target};

/// How long a sender waits for the receiver's verdict after its own side completed.
const VERDICT_WAIT: Duration = Duration::from_secs(30);

impl Live<'_> {
    pub(super) fn file_round(&mut self, i: usize) {
        let sc = self.sc;
        let Action::SendFile {
            from,
            to,
            size,
            chunk_size,
            format,
            ..
        } = &sc.steps[i].action
        else {
            return;
        };
        for &p in &from.peers {
            let Some(peer) = &self.peers[p] else { continue };
            let mut s = lock(&self.shared);
            let pool: Vec<usize> = s.links[p]
                .iter()
                .copied()
                .filter(|q| self.peers[*q].is_some())
                .filter(|q| match to {
                    Target::Neighbour => true,
                    Target::Among(sel) => sel.peers.binary_search(q).is_ok(),
                })
                .collect();
            let target = (!pool.is_empty()).then(|| pool[self.rng.random_range(0..pool.len())]);
            let now = s.now();
            let id = s.rec.sent(MsgRecord {
                step: i,
                from: p,
                to: target,
                bytes: *size as usize,
                sent_at: now,
                failure: target.is_none().then(|| "no link to a target peer".into()),
                kind: kind::FILE,
                fast: Some(false),
                ..MsgRecord::default()
            });
            let Some(q) = target else { continue };
            let Some(to_id) = self.peers[q].as_ref().map(|t| t.peer_id.clone()) else {
                continue;
            };
            let data = filedata::bytes(filedata::file_seed(s.seed, id), 0, *size as usize);
            drop(s);
            let handle = peer.handle.clone();
            let shared = self.shared.clone();
            let options = FileOptions {
                chunk_size: *chunk_size,
                fast: *format == FileFormat::Fast,
                metadata: Some(json!({ "gm": id })),
                ..FileOptions::default()
            };
            self.sends.spawn(async move {
                let session = match handle
                    .send_file(&to_id, FileSource::bytes(data), options)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        lock(&shared).rec.messages[id].failure = Some(e.to_string());
                        return;
                    }
                };
                let r = session.wait_until_complete().await;
                {
                    let mut s = lock(&shared);
                    let now = s.now();
                    let m = &mut s.rec.messages[id];
                    m.fast = Some(session.fast_path());
                    match r {
                        Ok(()) => m.acked_at = Some(now),
                        Err(e) if m.delivered_at.is_none() => {
                            m.failure = Some(format!("sender: {e}"))
                        }
                        Err(_) => {}
                    }
                }
                // Wait for the receiver's verdict (it may come after a GhostMesh-format sender
                // completed), so the run does not end before it.
                let until = std::time::Instant::now() + VERDICT_WAIT;
                while std::time::Instant::now() < until {
                    {
                        let s = lock(&shared);
                        let m = &s.rec.messages[id];
                        if m.delivered_at.is_some() || m.failure.is_some() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    }

    pub(super) fn routed_round(&mut self, i: usize) {
        let sc = self.sc;
        let Action::Routed {
            onion,
            from,
            to,
            route,
            size,
            content,
            ghostmesh_ttl,
            ..
        } = &sc.steps[i].action
        else {
            return;
        };
        let onion = *onion;
        let ghostmesh_ttl = *ghostmesh_ttl;
        for &p in &from.peers {
            let Some(peer) = &self.peers[p] else { continue };
            let fixed: &[usize] = match route {
                RouteSpec::Through(r) => r,
                RouteSpec::Hops(_) => &[],
            };
            let targets: Vec<usize> = to
                .peers
                .iter()
                .copied()
                .filter(|&q| q != p && self.peers[q].is_some() && !fixed.contains(&q))
                .collect();
            let mut s = lock(&self.shared);
            let now = s.now();
            let id = s.rec.sent(MsgRecord {
                step: i,
                from: p,
                bytes: *size,
                sent_at: now,
                kind: if onion { kind::ONION } else { kind::ROUTED },
                ..MsgRecord::default()
            });
            if targets.is_empty() {
                s.rec.messages[id].failure = Some("no target peer is up".into());
                continue;
            }
            let q = targets[self.rng.random_range(0..targets.len())];
            s.rec.messages[id].to = Some(q);
            let opts = match route {
                RouteSpec::Hops(n) => RouteOptions {
                    through: Vec::new(),
                    hops: *n,
                    // GhostMesh's packets, which the sim models (layered routing is another
                    // issue's).
                    mode: RouteMode::Compat,
                    ..RouteOptions::default()
                },
                RouteSpec::Through(r) => {
                    let ids: Option<Vec<String>> = r
                        .iter()
                        .map(|&x| self.peers[x].as_ref().map(|l| l.peer_id.clone()))
                        .collect();
                    let Some(ids) = ids else {
                        s.rec.messages[id].failure =
                            Some("a relay of `through` is not running".into());
                        continue;
                    };
                    RouteOptions {
                        hops: ids.len(),
                        through: ids,
                        mode: RouteMode::Compat,
                        ..RouteOptions::default()
                    }
                }
            };
            let Some(target) = self.peers[q].as_ref().map(|t| t.peer_id.clone()) else {
                continue;
            };
            // GhostMesh's layers: built here and sent one-way to the first relay, as the mesh
            // sends its own onion packets.
            let mut manual = None;
            if ghostmesh_ttl {
                let relays: Vec<String> = if opts.through.is_empty() {
                    let candidates: Vec<String> = s.links[p]
                        .iter()
                        .filter(|&&x| x != q)
                        .filter_map(|&x| self.peers[x].as_ref().map(|l| l.peer_id.clone()))
                        .collect();
                    if candidates.len() < opts.hops {
                        s.rec.messages[id].failure = Some(format!(
                            "{} relays wanted, {} linked peers can relay",
                            opts.hops,
                            candidates.len()
                        ));
                        continue;
                    }
                    rand::seq::index::sample(&mut self.rng, candidates.len(), opts.hops)
                        .into_iter()
                        .map(|k| candidates[k].clone())
                        .collect()
                } else {
                    opts.through.clone()
                };
                let mut route = relays;
                route.push(target.clone());
                let circuit = filedata::hex16(self.rng.random());
                let packet =
                    filedata::ghostmesh_wrap(&circuit, &route, &payload::make(id, *size, *content));
                s.rec.messages[id].hops = Some(route.len() as u32 - 1);
                s.rec.messages[id].hop_bytes = filedata::hop_sizes_of(packet.clone());
                manual = Some((route[0].clone(), packet));
            }
            drop(s);
            let handle = peer.handle.clone();
            let shared = self.shared.clone();
            let (size, content) = (*size, *content);
            let timeout = sc.groups[sc.group_of(p)].request_timeout + Duration::from_secs(1);
            self.sends.spawn(async move {
                let body = payload::make(id, size, content);
                if onion {
                    let r = match manual {
                        Some((first, packet)) => handle
                            .send_no_reply(&first, Payload::Json(packet))
                            .await
                            .map(|()| None),
                        None => handle
                            .send_onion(&target, body.clone(), Some(opts))
                            .await
                            .map(Some),
                    };
                    {
                        let mut s = lock(&shared);
                        let m = &mut s.rec.messages[id];
                        match r {
                            Ok(None) => {}
                            Ok(Some(info)) => {
                                m.hops = Some(info.route.len().saturating_sub(1) as u32);
                                m.hop_bytes =
                                    filedata::hop_sizes(&info.circuit_id, &info.route, &body);
                            }
                            Err(e) => m.failure = Some(e.to_string()),
                        }
                    }
                    // One-way: wait (bounded) for the target to have it.
                    let until = std::time::Instant::now() + timeout;
                    while std::time::Instant::now() < until {
                        if lock(&shared).rec.messages[id].delivered_at.is_some() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let mut s = lock(&shared);
                    let m = &mut s.rec.messages[id];
                    if m.delivered_at.is_none() && m.failure.is_none() {
                        m.failure = Some("not delivered before the request timeout".into());
                    }
                } else {
                    let r = tokio::time::timeout(
                        timeout,
                        handle.send_routed(&target, body, Some(opts)),
                    )
                    .await;
                    let mut s = lock(&shared);
                    let now = s.now();
                    let m = &mut s.rec.messages[id];
                    match r {
                        Ok(Ok(_)) => m.acked_at = Some(now),
                        Ok(Err(e)) if m.delivered_at.is_none() => m.failure = Some(e.to_string()),
                        Err(_) if m.delivered_at.is_none() => {
                            m.failure = Some("request timed out".into())
                        }
                        _ => {}
                    }
                }
            });
        }
    }
}

/// An incoming file at peer `p`: wait for it, then check every byte.
pub(super) async fn receive_file(shared: SharedRef, p: usize, session: FileSession) {
    let Some(id) = session
        .metadata()
        .and_then(|m| m.get("gm"))
        .and_then(serde_json::Value::as_u64)
        .map(|x| x as usize)
    else {
        return;
    };
    let r = session.wait_until_complete().await;
    let (done_at, seed, expected) = {
        let s = lock(&shared);
        match s.rec.messages.get(id) {
            Some(m) if m.to == Some(p) && m.kind == kind::FILE => (s.now(), s.seed, m.bytes as u64),
            _ => return,
        }
    };
    let verdict = match r {
        Err(e) => Err(format!("receiver: {e}")),
        Ok(()) => match session.read_range(0, session.size()).await {
            Ok(data)
                if data.len() as u64 == expected
                    && filedata::intact(filedata::file_seed(seed, id), 0, &data) =>
            {
                Ok(())
            }
            Ok(data) => Err(format!(
                "integrity: {} of {expected} bytes, or altered",
                data.len()
            )),
            Err(e) => Err(format!("receiver: {e}")),
        },
    };
    let mut s = lock(&shared);
    let m = &mut s.rec.messages[id];
    match verdict {
        Ok(()) => {
            m.delivered_at = Some(done_at);
            m.failure = None;
        }
        Err(e) => m.failure = Some(e),
    }
}

/// A routed message at peer `p`: record its delivery, answer routed requests.
pub(super) async fn on_onion(
    shared: &SharedRef,
    p: usize,
    steps: &[(usize, Content)],
    mesh: &Mesh,
    msg: OnionMessage,
) {
    if let Some(id) = payload::id_of(&msg.payload) {
        let me = mesh.peer_id().to_owned();
        let mut s = lock(shared);
        let now = s.now();
        if let Some(m) = s.rec.messages.get_mut(id)
            && m.to == Some(p)
            && m.delivered_at.is_none()
            && matches!(m.kind, kind::ROUTED | kind::ONION)
        {
            let (size, content) = steps.get(m.step).copied().unwrap_or((0, Content::Text));
            if payload::intact(&msg.payload, id, size, content) {
                m.delivered_at = Some(now);
                m.failure = None;
                if msg.reply.is_some() {
                    // info.route: the requester, then the relays in order.
                    m.hops = Some(msg.info.route.len().saturating_sub(1) as u32);
                    let mut route: Vec<String> = msg.info.route.iter().skip(1).cloned().collect();
                    route.push(me);
                    let reply_route: Vec<String> = msg.info.route.iter().rev().cloned().collect();
                    let body = packet::route_request(
                        &msg.info.circuit_id,
                        "0000000000000000",
                        &msg.from,
                        &reply_route,
                        &msg.payload,
                    );
                    m.hop_bytes =
                        filedata::hop_sizes(&msg.info.circuit_id, &route, &Payload::Json(body));
                }
            } else {
                m.failure = Some("payload arrived altered".into());
            }
        }
    }
    if let Some(reply) = msg.reply {
        let _ = mesh
            .respond_routed(reply, Payload::Text("ack".into()))
            .await;
    }
}
