//! `hidden_service_request` in the simulator: the client sends a GhostMesh
//! `hidden-service-request` (built by the mesh's own [`packet`] code, padded by its exact rule)
//! to the entry as a request; the entry picks `requestedHops - 1` relays among its links
//! (never the client or the master), forwards the packet unchanged as a routed request
//! ([`relay::packet`] layers, relayed by every peer as in `relay_send`), and, when the
//! master's response comes back, applies the mesh's [`DelayPlan`] on the virtual clock: a route
//! shorter than asked is held for a delay drawn from `response_delay`. The body is an envelope
//! of the real sizes (256-byte wrapped key, 12-byte IV, plaintext + 16-byte tag) but not
//! encrypted: the crypto is the mesh crate's, tested there and in live runs; here what counts
//! is who sees what, when, and how large.

use ghostmesh::hidden::crypto::Envelope;
use ghostmesh::hidden::packet::{self as hp, DelayPlan, Request};
use ghostmesh::node::MessageHandle;
use ghostmesh::relay::packet;
use ghostmesh::wire::Payload;
use serde_json::Value;

use super::{Ev, Sim, nanos};
use crate::filedata;
use crate::payload;
use crate::record::{MsgRecord, kind};
use crate::scenario::Action;

/// The entry's half of a request: waiting for the master, then for the delay to pass.
#[derive(Debug)]
pub(super) struct AtEntry {
    rec: usize,
    entry: u32,
    handle: MessageHandle<u32>,
    started: u64,
    requested: u64,
    route_len: usize,
    delay: (u64, u64),
    fixed: Option<usize>,
}

/// A response the entry holds until its delay has passed.
#[derive(Debug)]
pub(super) struct Held {
    entry: u32,
    handle: MessageHandle<u32>,
    packet: Value,
}

/// A public key of the real PEM length (a 2048-bit SPKI is 294 bytes), so sizes are real.
fn client_key_pem() -> String {
    let b64 = "A".repeat(392);
    let lines: Vec<&str> = (0..b64.len())
        .step_by(64)
        .map(|i| &b64[i..(i + 64).min(b64.len())])
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
        lines.join("\n")
    )
}

fn envelope(plain_len: usize) -> Envelope {
    Envelope {
        encrypted_key: vec![0x5a; 256],
        iv: [7; 12],
        ciphertext: vec![0xa5; plain_len + 16],
    }
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

impl Sim<'_> {
    /// The record a hidden-service packet belongs to: the harness names requests by record.
    fn hidden_rec(&self, v: &Value) -> Option<usize> {
        v.get("requestId")
            .and_then(Value::as_str)
            .and_then(|r| u64::from_str_radix(r, 16).ok())
            .map(|r| r as usize)
            .filter(|&r| r < self.rec.messages.len())
    }

    /// One round of a `hidden_service_request` step: every up peer of `from` calls.
    pub(super) fn hidden_round(&mut self, i: usize) {
        let sc = self.sc;
        let Action::HiddenRequest {
            from,
            entry,
            master,
            service,
            min_hops,
            size,
            content,
            fixed_packet_bytes,
            ..
        } = &sc.steps[i].action
        else {
            return;
        };
        let (e, m) = (*entry as u32, *master as u32);
        for &p in &from.peers {
            let p = p as u32;
            if !self.peers[p as usize].up || p == e || p == m {
                continue;
            }
            let id = self.rec.sent(MsgRecord {
                step: i,
                from: p as usize,
                to: Some(m as usize),
                bytes: *size,
                sent_at: self.now,
                kind: kind::HIDDEN,
                ..MsgRecord::default()
            });
            if !self.peers[p as usize].links.contains_key(&e) {
                self.rec.messages[id].failure = Some("no link to the entry peer".into());
                continue;
            }
            let body = payload::make(id, *size, *content);
            let req = Request {
                service: service.clone(),
                request_id: filedata::hex16(id as u64),
                nonce: filedata::hex16(rand::RngExt::random(&mut self.rng)),
                client_public_key: client_key_pem(),
                requested_hops: (*min_hops).max(1),
                body: envelope(hp::plaintext(&body).len()),
            };
            let mut v = hp::request(&req);
            if let Some(f) = fixed_packet_bytes {
                hp::pad(&mut v, *f);
            }
            self.rec.messages[id]
                .hop_bytes
                .push(filedata::packet_len(&v));
            let now = self.instant();
            let sent = self.peers[p as usize]
                .node
                .as_mut()
                .map(|n| n.send(now, &e, Payload::Json(v), &mut self.rng));
            match sent {
                Some(Ok(request)) => {
                    self.peers[p as usize].requests.insert(request, id);
                }
                Some(Err(err)) => {
                    self.rec.messages[id].failure = Some(format!("send refused: {err:?}"))
                }
                None => {}
            }
            self.pump(p);
        }
    }

    /// A `hidden-service-request` reached `p` (the entry) from `from`.
    pub(super) fn on_hidden_request(
        &mut self,
        p: u32,
        from: u32,
        handle: MessageHandle<u32>,
        v: &Value,
    ) {
        let Some(rec) = self.hidden_rec(v) else {
            return;
        };
        let sc = self.sc;
        let Action::HiddenRequest {
            entry,
            master,
            response_delay,
            fixed_packet_bytes,
            ..
        } = &sc.steps[self.rec.messages[rec].step].action
        else {
            return;
        };
        if *entry as u32 != p {
            return;
        }
        let m = *master as u32;
        let requested = v
            .get("requestedHops")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, 8);
        // As the mesh's entry: requestedHops - 1 relays among the linked peers, never the
        // client or the master; fewer when fewer are linked.
        let candidates: Vec<u32> = self.peers[p as usize]
            .links
            .keys()
            .copied()
            .filter(|&x| x != m && x != from)
            .collect();
        let want = (requested as usize).saturating_sub(1).min(candidates.len());
        let mut relays: Vec<u32> = rand::seq::index::sample(&mut self.rng, candidates.len(), want)
            .into_iter()
            .map(|k| candidates[k])
            .collect();
        relays.push(m);
        if !self.peers[p as usize].links.contains_key(&relays[0]) {
            self.rec.messages[rec].failure = Some("the entry has no link toward the master".into());
            return;
        }
        let hops: Vec<String> = relays.iter().map(|&r| self.hex(r)).collect();
        let me = self.hex(p);
        let circuit = filedata::hex16(rand::RngExt::random(&mut self.rng));
        let request = filedata::hex16(rand::RngExt::random(&mut self.rng));
        let mut reply_route: Vec<String> = hops[..hops.len() - 1].iter().rev().cloned().collect();
        reply_route.push(me);
        let inner = packet::route_request(
            &circuit,
            &request,
            &self.hex(p),
            &reply_route,
            &Payload::Json(v.clone()),
        );
        let layers = packet::wrap(&circuit, &hops, &Payload::Json(inner));
        self.rec.messages[rec]
            .hop_bytes
            .push(filedata::packet_len(&layers));
        self.hidden_entry.insert(
            request,
            AtEntry {
                rec,
                entry: p,
                handle,
                started: self.now,
                requested,
                route_len: hops.len(),
                delay: (ms(response_delay.0), ms(response_delay.1)),
                fixed: *fixed_packet_bytes,
            },
        );
        let now = self.instant();
        if let Some(n) = self.peers[p as usize].node.as_mut() {
            let _ = n.send_no_reply(now, &relays[0], Payload::Json(layers), &mut self.rng);
        }
    }

    /// The master `p` answers a hidden-service request delivered to it: the request is
    /// delivered (for the records), and the answer is a response of the real size.
    pub(super) fn hidden_answer(&mut self, p: u32, v: &Value) -> Payload {
        let rec = self.hidden_rec(v);
        let mut fixed = None;
        if let Some(rec) = rec {
            let m = &mut self.rec.messages[rec];
            if m.to == Some(p as usize) && m.delivered_at.is_none() {
                m.delivered_at = Some(self.now);
            }
            if let Action::HiddenRequest {
                fixed_packet_bytes, ..
            } = &self.sc.steps[m.step].action
            {
                fixed = *fixed_packet_bytes;
            }
        }
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut resp = hp::response(&s("service"), &s("requestId"), &s("nonce"), &envelope(16));
        if let Some(f) = fixed {
            hp::pad(&mut resp, f);
        }
        Payload::Json(resp)
    }

    /// A route response reached `p`: `true` when it answers a hidden-service forward (then
    /// the entry holds it for its delay and passes it back).
    pub(super) fn on_hidden_response(&mut self, p: u32, request: &str, body: &Value) -> bool {
        let Some(at) = self.hidden_entry.remove(request) else {
            return false;
        };
        if at.entry != p {
            return true;
        }
        let Some(Payload::Json(mut resp)) = packet::msg_payload(body) else {
            self.rec.messages[at.rec].failure = Some("the master's answer is malformed".into());
            return true;
        };
        let plan = DelayPlan::new(&mut self.rng, at.route_len, at.requested, at.delay);
        let elapsed = std::time::Duration::from_nanos(self.now - at.started);
        let hold = plan.hold(elapsed);
        plan.stamp(&mut resp, false);
        if let Some(f) = at.fixed {
            hp::repad(&mut resp, f);
        }
        let m = &mut self.rec.messages[at.rec];
        m.hops = Some(at.route_len as u32 - 1);
        m.padding_delay = Some(nanos(plan.delayed));
        let key = self.next_held;
        self.next_held += 1;
        self.held.insert(
            key,
            Held {
                entry: p,
                handle: at.handle,
                packet: resp,
            },
        );
        self.at(self.now + nanos(hold), Ev::HiddenReply(key));
        true
    }

    /// A held response is due: the entry answers the client.
    pub(super) fn hidden_reply(&mut self, key: u64) {
        let Some(h) = self.held.remove(&key) else {
            return;
        };
        let now = self.instant();
        if let Some(n) = self.peers[h.entry as usize].node.as_mut() {
            let _ = n.respond(now, &h.handle, Payload::Json(h.packet));
        }
        self.pump(h.entry);
    }
}
