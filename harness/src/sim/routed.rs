//! `relay_send` and `onion_send` in the simulator: GhostMesh onion packets built with
//! [`packet::wrap`] (routed requests carry a [`packet::route_request`] with the reply route,
//! answered by a [`packet::route_response`] wrapped along it), sent one-way through each
//! peer's [`Node`](ghostmesh::node::Node), and relayed by every peer with the mesh's rule: an
//! `onion-forward` with ttl > 0 whose `nextPeerId` is linked (and not itself) has its inner
//! layer's ttl set to its own minus one and goes one-way to that peer. Sizes per hop are the
//! real layers' sizes.

use ghostmesh::relay::packet;
use ghostmesh::wire::Payload;
use rand::RngExt;
use serde_json::Value;

use super::Sim;
use crate::filedata;
use crate::payload;
use crate::record::{MsgRecord, kind};
use crate::scenario::{Action, RouteSpec};

/// A circuit the harness opened: its message, and whether the response is on its way back.
#[derive(Debug)]
pub(super) struct Circuit {
    rec: usize,
    answering: bool,
}

impl Sim<'_> {
    pub(super) fn hex(&self, p: u32) -> String {
        self.peers[p as usize].identity.peer_id.to_hex()
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
        for &p in &from.peers {
            let p = p as u32;
            if !self.peers[p as usize].up {
                continue;
            }
            let fixed: &[usize] = match route {
                RouteSpec::Through(r) => r,
                RouteSpec::Hops(_) => &[],
            };
            let targets: Vec<u32> = to
                .peers
                .iter()
                .map(|&q| q as u32)
                .filter(|&q| q != p && self.peers[q as usize].up && !fixed.contains(&(q as usize)))
                .collect();
            let id = self.rec.sent(MsgRecord {
                step: i,
                from: p as usize,
                bytes: *size,
                sent_at: self.now,
                kind: if *onion { kind::ONION } else { kind::ROUTED },
                ..MsgRecord::default()
            });
            if targets.is_empty() {
                self.rec.messages[id].failure = Some("no target peer is up".into());
                continue;
            }
            let q = targets[self.rng.random_range(0..targets.len())];
            self.rec.messages[id].to = Some(q as usize);
            let relays: Vec<u32> = match route {
                RouteSpec::Through(r) => r.iter().map(|&x| x as u32).collect(),
                RouteSpec::Hops(n) => {
                    // As the mesh: a sample of the linked peers other than the target.
                    let candidates: Vec<u32> = self.peers[p as usize]
                        .links
                        .keys()
                        .copied()
                        .filter(|&x| x != q)
                        .collect();
                    if candidates.len() < *n {
                        self.rec.messages[id].failure = Some(format!(
                            "{n} relays wanted, {} linked peers can relay",
                            candidates.len()
                        ));
                        continue;
                    }
                    rand::seq::index::sample(&mut self.rng, candidates.len(), *n)
                        .into_iter()
                        .map(|k| candidates[k])
                        .collect()
                }
            };
            if !self.peers[p as usize].links.contains_key(&relays[0]) {
                self.rec.messages[id].failure = Some("no link to the first relay".into());
                continue;
            }
            let me = self.hex(p);
            let mut hops: Vec<String> = relays.iter().map(|&r| self.hex(r)).collect();
            hops.push(self.hex(q));
            let circuit = filedata::hex16(self.rng.random());
            let body = payload::make(id, *size, *content);
            let packet = if *onion && *ghostmesh_ttl {
                filedata::ghostmesh_wrap(&circuit, &hops, &body)
            } else if *onion {
                packet::wrap(&circuit, &hops, &body)
            } else {
                let request = filedata::hex16(self.rng.random());
                let mut reply_route: Vec<String> =
                    hops[..hops.len() - 1].iter().rev().cloned().collect();
                reply_route.push(me.clone());
                let req = packet::route_request(&circuit, &request, &me, &reply_route, &body);
                self.route_requests.insert(request, id);
                packet::wrap(&circuit, &hops, &Payload::Json(req))
            };
            self.rec.messages[id]
                .hop_bytes
                .push(filedata::packet_len(&packet));
            self.circuits.insert(
                circuit,
                Circuit {
                    rec: id,
                    answering: false,
                },
            );
            let now = self.instant();
            if let Some(n) = self.peers[p as usize].node.as_mut() {
                let _ = n.send_no_reply(now, &relays[0], Payload::Json(packet), &mut self.rng);
            }
            self.pump(p);
        }
    }

    fn onion_drop(&mut self, p: u32, circuit: &str, why: &str) {
        self.rec.relay_dropped += 1;
        if let Some(c) = self.circuits.get(circuit) {
            let m = &mut self.rec.messages[c.rec];
            if m.delivered_at.is_none() && m.failure.is_none() {
                m.failure = Some(format!(
                    "dropped at {}: {why}",
                    self.sc.peer_name(p as usize)
                ));
            }
        }
    }

    /// An onion packet `p` received from its neighbour `from` (called while `p`'s node is
    /// pumped; what it sends goes out with that pump).
    pub(super) fn on_onion_packet(&mut self, p: u32, _from: u32, v: &Value) {
        // The mesh's bound on relayed packets (GhostMesh's layers double in size per hop).
        let size = v
            .get("payload")
            .or_else(|| v.get("msg"))
            .and_then(Value::as_str)
            .map_or(0, str::len);
        let circuit = v
            .get("circuitId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(ttl) = v.get("ttl").and_then(Value::as_i64) else {
            return self.onion_drop(p, &circuit, "malformed layer");
        };
        if size > ghostmesh::relay::RelayConfig::default().max_packet_bytes {
            return self.onion_drop(p, &circuit, "packet too large");
        }
        if ttl <= 0 {
            return self.onion_drop(p, &circuit, "ttl spent");
        }
        let now = self.instant();
        match v.get(packet::ONION_KEY).and_then(Value::as_str) {
            Some("onion-forward") => {
                let next = v
                    .get("nextPeerId")
                    .and_then(Value::as_str)
                    .and_then(|n| self.by_hex.get(n).copied());
                let Some(next) = next else {
                    return self.onion_drop(p, &circuit, "next hop unknown");
                };
                if next == p {
                    return self.onion_drop(p, &circuit, "next hop is the relay itself");
                }
                if !self.peers[p as usize].links.contains_key(&next) {
                    return self.onion_drop(p, &circuit, "next hop not linked");
                }
                let inner: Option<Value> = v
                    .get("payload")
                    .and_then(Value::as_str)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .filter(|i: &Value| i.is_object() && packet::is_onion(i));
                let Some(mut inner) = inner else {
                    return self.onion_drop(p, &circuit, "malformed layer");
                };
                inner["ttl"] = (ttl - 1).into();
                self.rec.relay_forwarded += 1;
                if let Some(c) = self.circuits.get(&circuit)
                    && !c.answering
                {
                    let len = filedata::packet_len(&inner);
                    self.rec.messages[c.rec].hop_bytes.push(len);
                }
                if let Some(n) = self.peers[p as usize].node.as_mut() {
                    let _ = n.send_no_reply(now, &next, Payload::Json(inner), &mut self.rng);
                }
            }
            Some("onion-deliver") => {
                let Some(body) = packet::msg_payload(v) else {
                    return self.onion_drop(p, &circuit, "malformed layer");
                };
                let routed = match &body {
                    Payload::Json(b) => packet::route_kind(b).map(|k| (k.to_owned(), b.clone())),
                    Payload::Text(_) => None,
                };
                match routed {
                    Some((k, b)) if k == "route-request" => {
                        let inner = packet::msg_payload(&b);
                        self.delivered(p, &circuit, inner.as_ref());
                        let reply_route: Vec<String> = b
                            .get("replyRoute")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let request = b
                            .get("requestId")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let first = reply_route
                            .first()
                            .and_then(|h| self.by_hex.get(h).copied());
                        let Some(first) =
                            first.filter(|f| self.peers[p as usize].links.contains_key(f))
                        else {
                            return self.onion_drop(p, &circuit, "no link to the reply route");
                        };
                        let me = self.hex(p);
                        // A hidden-service request gets the master's answer; anything else
                        // an acknowledgement.
                        let answer = match &inner {
                            Some(Payload::Json(h))
                                if ghostmesh::hidden::packet::kind(h)
                                    == Some(ghostmesh::hidden::packet::REQUEST) =>
                            {
                                let h = h.clone();
                                self.hidden_answer(p, &h)
                            }
                            _ => Payload::Text("ack".into()),
                        };
                        let resp = packet::route_response(&circuit, request, &me, &answer);
                        let packet = packet::wrap(&circuit, &reply_route, &Payload::Json(resp));
                        if let Some(c) = self.circuits.get_mut(&circuit) {
                            c.answering = true;
                        }
                        if let Some(n) = self.peers[p as usize].node.as_mut() {
                            let _ =
                                n.send_no_reply(now, &first, Payload::Json(packet), &mut self.rng);
                        }
                    }
                    Some((_, b)) => {
                        let request = b
                            .get("requestId")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if self.on_hidden_response(p, request, &b) {
                            return;
                        }
                        if let Some(&id) = self.route_requests.get(request)
                            && self.rec.messages[id].from == p as usize
                            && self.rec.messages[id].acked_at.is_none()
                        {
                            self.rec.messages[id].acked_at = Some(self.now);
                        }
                    }
                    None => self.delivered(p, &circuit, Some(&body)),
                }
            }
            _ => self.onion_drop(p, &circuit, "malformed layer"),
        }
    }

    /// A routed message reached `p`: delivered if `p` is its target and it is intact.
    fn delivered(&mut self, p: u32, circuit: &str, body: Option<&Payload>) {
        let Some(c) = self.circuits.get(circuit) else {
            return;
        };
        let id = c.rec;
        let sc = self.sc;
        let m = &mut self.rec.messages[id];
        if m.to != Some(p as usize) || m.delivered_at.is_some() {
            return;
        }
        let (size, content) = match &sc.steps[m.step].action {
            Action::Routed { size, content, .. } => (*size, *content),
            _ => return,
        };
        if body.is_some_and(|b| payload::intact(b, id, size, content)) {
            m.delivered_at = Some(self.now);
            m.hops = Some(m.hop_bytes.len().saturating_sub(1) as u32);
            m.failure = None;
        } else {
            m.failure = Some("payload arrived altered".into());
        }
    }
}
