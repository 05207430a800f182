//! The client side and the handler registry, as [`MeshHandle`] methods.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, RngExt};
use serde_json::Value;

use super::crypto::{self, Binding, KeyPair};
use super::packet::{self, Request};
use super::{HiddenContext, HiddenError, HiddenReply, HiddenRequestOptions, HiddenStats};
use crate::mesh::{MeshError, MeshHandle};
use crate::relay::packet::INTERNAL_KEY;
use crate::wire::Payload;

fn hex_id<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut b = [0u8; 8];
    rng.fill_bytes(&mut b);
    crypto::hex(&b)
}

fn hidden(e: HiddenError) -> MeshError {
    MeshError::Hidden(e)
}

impl MeshHandle {
    /// Serves `service` on this peer (which becomes its master): `handler` gets each
    /// decrypted request and its context; its answer is encrypted for the client. Needs
    /// `identity` in the hidden-service config. Replaces an earlier handler (returns `true`).
    pub fn handle_hidden_service<F, Fut>(&self, service: &str, handler: F) -> bool
    where
        F: Fn(Payload, HiddenContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Payload, String>> + Send + 'static,
    {
        let f: super::HiddenHandler = Arc::new(move |p, c| Box::pin(handler(p, c)));
        self.hidden.set_handler(service, Some(f))
    }

    /// As an entry, forwards requests for `service` to `master` (or stops, with `None`);
    /// returns the master it replaces. The config's `services` map seeds the same table.
    pub fn route_hidden_service(
        &self,
        service: &str,
        master: Option<&str>,
    ) -> Option<crate::mesh::PeerId> {
        self.hidden.set_master(service, master.map(str::to_owned))
    }

    /// Stops serving `service`; `true` when it was served.
    pub fn remove_hidden_service(&self, service: &str) -> bool {
        self.hidden.set_handler(service, None)
    }

    /// Counters of this peer's hidden-service roles.
    pub fn hidden_stats(&self) -> HiddenStats {
        self.hidden.stats()
    }

    /// Calls hidden service `service` through an entry peer (GhostMesh's
    /// `requestHiddenService`): the payload is encrypted for the master, the response
    /// decrypted with this request's key. Fails with [`MeshError::Timeout`] when nothing
    /// answers in time and with [`HiddenError::Remote`] when the entry or master refused.
    pub async fn request_hidden_service(
        &self,
        service: &str,
        payload: Payload,
        opts: HiddenRequestOptions,
    ) -> Result<HiddenReply, MeshError> {
        let cfg = &self.hidden.cfg;
        let master_key = opts
            .master_public_key
            .clone()
            .or_else(|| cfg.master_public_key.clone())
            .ok_or(hidden(HiddenError::NoMasterKey))?;
        let entry = match opts.entry.clone() {
            Some(e) => e,
            None => {
                let linked = self.peers().await?;
                let usable: Vec<&String> = cfg
                    .entry_peers
                    .iter()
                    .filter(|p| linked.contains(p))
                    .collect();
                if usable.is_empty() {
                    return Err(hidden(HiddenError::NoEntry));
                }
                let i = self.hidden.rng().random_range(0..usable.len());
                usable[i].clone()
            }
        };
        let keys = match &cfg.identity {
            Some(k) => k.clone(),
            None => tokio::task::spawn_blocking(KeyPair::generate)
                .await
                .map_err(|e| {
                    hidden(HiddenError::Crypto(crypto::CryptoError::Internal(
                        if e.is_panic() {
                            "keygen panicked"
                        } else {
                            "keygen cancelled"
                        },
                    )))
                })?
                .map_err(|e| hidden(HiddenError::Crypto(e)))?,
        };
        let request = {
            let mut rng = self.hidden.rng();
            let (request_id, nonce) = (hex_id(&mut *rng), hex_id(&mut *rng));
            let binding = Binding {
                client_key: keys.public(),
                request_id: &request_id,
                nonce: &nonce,
            };
            let key = crypto::content_key(&mut *rng, cfg.bind_client_key.then_some(binding));
            let body = crypto::seal(&mut *rng, &master_key, &key, &packet::plaintext(&payload))
                .map_err(|e| hidden(HiddenError::Crypto(e)))?;
            Request {
                service: service.to_owned(),
                request_id,
                nonce,
                client_public_key: keys.public().to_pem(),
                requested_hops: opts.min_hops.unwrap_or(cfg.min_hops).max(1),
                body,
            }
        };
        let mut v = packet::request(&request);
        if let Some(fixed) = cfg.fixed_packet_bytes {
            packet::pad(&mut v, fixed);
        }
        let timeout = opts.timeout.unwrap_or(
            self.hidden.request_timeout
                + Duration::from_millis(cfg.response_delay_ms.0.max(cfg.response_delay_ms.1)),
        );
        let answer = match opts.route {
            Some(route) => {
                self.send_routed_with_info(&entry, Payload::Json(v), Some(route), Some(timeout))
                    .await?
                    .0
            }
            None => {
                self.send_with_timeout(&entry, Payload::Json(v), timeout)
                    .await?
            }
        };
        let Payload::Json(answer) = answer else {
            return Err(hidden(HiddenError::BadResponse("not a JSON object".into())));
        };
        open_response(&answer, &request, &keys, entry)
    }

    /// Whether `peer` holds the private key of the configured master public key (GhostMesh's
    /// `peer.isServer()`): `false` without a configured key, when the peer refuses or fails
    /// the challenge, or when it does not answer within the request timeout (GhostMesh waits
    /// forever, e.g. on a plain P2PT peer).
    pub async fn is_server(&self, peer: &str) -> Result<bool, MeshError> {
        let Some(master_key) = self.hidden.cfg.master_public_key.clone() else {
            return Ok(false);
        };
        let (nonce, challenge) = {
            let mut rng = self.hidden.rng();
            let nonce = hex_id(&mut *rng);
            let plain = crate::wire::js_json::stringify(&serde_json::json!({"nonce": nonce}));
            let env = crypto::encrypt(&mut *rng, &master_key, plain.as_bytes())
                .map_err(|e| hidden(HiddenError::Crypto(e)))?;
            (nonce, env)
        };
        let reply = match self
            .send_with_timeout(
                peer,
                Payload::Json(packet::reveal_request(&challenge)),
                self.hidden.request_timeout,
            )
            .await
        {
            Ok(r) => r,
            Err(MeshError::Timeout) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(matches!(reply, Payload::Json(v)
            if v.get(INTERNAL_KEY).and_then(Value::as_str) == Some(packet::REVEAL_RESPONSE)
                && v.get("ok") == Some(&Value::Bool(true))
                && v.get("nonce").and_then(Value::as_str) == Some(nonce.as_str())))
    }
}

fn open_response(
    v: &Value,
    req: &Request,
    keys: &KeyPair,
    entry: String,
) -> Result<HiddenReply, MeshError> {
    let bad = |m: &str| hidden(HiddenError::BadResponse(m.to_owned()));
    if v.get(INTERNAL_KEY).and_then(Value::as_str) != Some(packet::RESPONSE) {
        return Err(bad("not a hidden-service-response"));
    }
    if v.get("requestId").and_then(Value::as_str) != Some(req.request_id.as_str())
        || v.get("nonce").and_then(Value::as_str) != Some(req.nonce.as_str())
    {
        return Err(bad("requestId or nonce does not match the request"));
    }
    let body = v.get("body").ok_or_else(|| bad("no body"))?;
    let env = crypto::Envelope::from_json(body, usize::MAX / 4)
        .map_err(|e| hidden(HiddenError::Crypto(e)))?;
    let opened = crypto::open(keys, &env).map_err(|e| hidden(HiddenError::Crypto(e)))?;
    let payload =
        packet::payload_of(&opened.plaintext).map_err(|e| hidden(HiddenError::Crypto(e)))?;
    if let Payload::Json(p) = &payload {
        if let Some((code, message)) = packet::as_error(p) {
            return Err(hidden(HiddenError::Remote { code, message }));
        }
    }
    let num = |k: &str| v.get(k).and_then(Value::as_u64);
    Ok(HiddenReply {
        payload,
        entry,
        real_hops: num("realHops"),
        simulated_hops: num("simulatedHops").unwrap_or(0),
        delayed_ms: num("delayedMs"),
        packet_len: packet::js_len(v),
    })
}
