//! `hidden_service_request` in the live backend, through the mesh's own API: masters serve the
//! step's service with [`MeshHandle::handle_hidden_service`] (an echo that also marks the
//! request delivered), entries learn the master with
//! [`MeshHandle::route_hidden_service`], clients call
//! [`MeshHandle::request_hidden_service`] with the step's entry and hop count. Real RSA-OAEP
//! and AES-GCM; one master key pair and one client key pair per run (made once, off the async
//! threads), so no request waits for a key generation.

use std::time::Duration;

use ghostmesh::hidden::{HiddenRequestOptions, HiddenRole, HiddenServiceConfig, KeyPair};
use ghostmesh::mesh::{MeshError, MeshHandle};
use ghostmesh::wire::Payload;

use super::{Live, SharedRef, lock};
use crate::payload;
use crate::record::{MsgRecord, kind};
use crate::scenario::{Action, Scenario};

/// The run's key pairs (master, client), when the scenario has hidden-service steps.
pub(crate) async fn keys(sc: &Scenario) -> Result<Option<(KeyPair, KeyPair)>, String> {
    if !sc
        .steps
        .iter()
        .any(|s| matches!(s.action, Action::HiddenRequest { .. }))
    {
        return Ok(None);
    }
    let make = || tokio::task::spawn_blocking(KeyPair::generate);
    let (m, c) = tokio::join!(make(), make());
    let flat = |r: Result<Result<KeyPair, _>, tokio::task::JoinError>| -> Result<KeyPair, String> {
        r.map_err(|e| format!("key generation: {e}"))?
            .map_err(|e| format!("key generation: {e}"))
    };
    Ok(Some((flat(m)?, flat(c)?)))
}

/// Peer `p`'s hidden-service settings: master, entry and client roles from every step that
/// names it.
pub(crate) fn config(
    sc: &Scenario,
    p: usize,
    keys: &Option<(KeyPair, KeyPair)>,
) -> HiddenServiceConfig {
    let mut cfg = HiddenServiceConfig::default();
    let Some((master, client)) = keys else {
        return cfg;
    };
    for step in &sc.steps {
        if let Action::HiddenRequest {
            from,
            entry,
            master: m,
            response_delay,
            fixed_packet_bytes,
            ..
        } = &step.action
        {
            if *m == p {
                cfg.identity = Some(master.clone());
                cfg.role = Some(HiddenRole::Master);
            }
            if *entry == p {
                cfg.response_delay_ms = (
                    response_delay.0.as_millis() as u64,
                    response_delay.1.as_millis() as u64,
                );
            }
            if from.peers.binary_search(&p).is_ok() && cfg.identity.is_none() {
                cfg.identity = Some(client.clone());
            }
            if *m == p || *entry == p || from.peers.binary_search(&p).is_ok() {
                cfg.fixed_packet_bytes = *fixed_packet_bytes;
            }
        }
    }
    cfg
}

/// Registers the echo service of every step whose master is `p`.
pub(crate) fn serve(sc: &Scenario, p: usize, handle: &MeshHandle, shared: &SharedRef) {
    for step in &sc.steps {
        if let Action::HiddenRequest {
            master, service, ..
        } = &step.action
            && *master == p
        {
            let shared = shared.clone();
            handle.handle_hidden_service(service, move |body: Payload, _ctx| {
                let shared = shared.clone();
                async move {
                    if let Some(id) = payload::id_of(&body) {
                        let mut s = lock(&shared);
                        let now = s.now();
                        if let Some(m) = s.rec.messages.get_mut(id)
                            && m.to == Some(p)
                            && m.delivered_at.is_none()
                        {
                            m.delivered_at = Some(now);
                        }
                    }
                    Ok(body)
                }
            });
        }
    }
}

impl Live<'_> {
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
            ..
        } = &sc.steps[i].action
        else {
            return;
        };
        let Some((master_keys, _)) = &self.hidden_keys else {
            return;
        };
        let entry_peer = self.peers[*entry]
            .as_ref()
            .map(|e| (e.handle.clone(), e.peer_id.clone()));
        let master_id = self.peers[*master].as_ref().map(|m| m.peer_id.clone());
        for &p in &from.peers {
            let Some(peer) = &self.peers[p] else { continue };
            if p == *entry || p == *master {
                continue;
            }
            let mut s = lock(&self.shared);
            let now = s.now();
            let id = s.rec.sent(MsgRecord {
                step: i,
                from: p,
                to: Some(*master),
                bytes: *size,
                sent_at: now,
                kind: kind::HIDDEN,
                ..MsgRecord::default()
            });
            let (Some((entry_handle, entry_id)), Some(master_id)) = (&entry_peer, &master_id)
            else {
                s.rec.messages[id].failure = Some("the entry or the master is not running".into());
                continue;
            };
            drop(s);
            entry_handle.route_hidden_service(service, Some(master_id));
            let handle = peer.handle.clone();
            let shared = self.shared.clone();
            let body = payload::make(id, *size, *content);
            let (size, content) = (*size, *content);
            let opts = HiddenRequestOptions {
                entry: Some(entry_id.clone()),
                master_public_key: Some(master_keys.public().clone()),
                min_hops: Some(*min_hops),
                timeout: Some(sc.groups[sc.group_of(p)].request_timeout + Duration::from_secs(1)),
                route: None,
            };
            let service = service.clone();
            self.sends.spawn(async move {
                let r = handle.request_hidden_service(&service, body, opts).await;
                let mut s = lock(&shared);
                let now = s.now();
                let m = &mut s.rec.messages[id];
                match r {
                    Ok(reply) if payload::intact(&reply.payload, id, size, content) => {
                        m.acked_at = Some(now);
                        m.hops = reply.real_hops.map(|h| h.saturating_sub(2) as u32);
                        m.padding_delay = reply.delayed_ms.map(|d| d * 1_000_000);
                        m.hop_bytes.push(reply.packet_len as u64);
                    }
                    Ok(_) => m.failure = Some("the answer arrived altered".into()),
                    Err(MeshError::Timeout) => m.failure = Some("request timed out".into()),
                    Err(e) => m.failure = Some(e.to_string()),
                }
            });
        }
    }
}
