//! The entry and master roles and server reveal: a task fed by the core with the
//! hidden-service packets it receives, answering through a [`MeshHandle`]. Crypto and waits
//! (forwarding to the master, delay padding, the application's handler) happen here, off the
//! core; the handler and forward concurrency is bounded by `max_in_flight`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_lc_rs::digest;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::crypto::{self, Binding, PublicKey};
use super::packet::{self, DelayPlan, Request};
use super::state::{InFlight, Refused, ReplayCache};
use super::{HiddenContext, HiddenHandler, HiddenRole, HiddenServiceConfig, HiddenStats};
use crate::mesh::{MeshHandle, PeerId, ResponseHandle};
use crate::relay::{RouteOptions, RoutedReply};
use crate::wire::{Payload, js_json};

/// Where the answer to a request goes.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A direct message: answered under its id (`peer.respond`).
    Direct(ResponseHandle),
    /// A routed request: answered along its reply route.
    Routed(RoutedReply),
}

/// A packet the core hands over.
#[derive(Debug)]
pub(crate) enum HiddenMsg {
    /// A `hidden-service-request` from `from`.
    Request {
        from: PeerId,
        packet: Value,
        reply: Reply,
    },
    /// A `server-reveal-request`.
    Reveal {
        packet: Value,
        handle: ResponseHandle,
    },
}

/// Packets queued between the core and the task before the core drops them.
const QUEUE: usize = 256;

/// State shared by the handles, the core and the task.
pub(crate) struct Shared {
    pub(crate) cfg: HiddenServiceConfig,
    pub(crate) me: PeerId,
    pub(crate) request_timeout: Duration,
    handlers: Mutex<HashMap<String, HiddenHandler>>,
    /// Entry: service name to master, from the config and [`MeshHandle::route_hidden_service`].
    masters: Mutex<HashMap<String, PeerId>>,
    stats: Mutex<HiddenStats>,
    replay: Mutex<ReplayCache>,
    in_flight: Mutex<InFlight>,
    rng: Mutex<StdRng>,
    tx: mpsc::Sender<HiddenMsg>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("hidden::Shared")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere never leaves these tables half-written; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The shared state and the task's receiver.
    pub(crate) fn new(
        cfg: HiddenServiceConfig,
        me: PeerId,
        request_timeout: Duration,
        seed: u64,
    ) -> (Arc<Self>, mpsc::Receiver<HiddenMsg>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Shared {
            replay: Mutex::new(ReplayCache::new(cfg.replay_window, cfg.max_replay_entries)),
            masters: Mutex::new(
                cfg.services
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            in_flight: Mutex::new(InFlight::new(request_timeout, cfg.max_in_flight)),
            cfg,
            me,
            request_timeout,
            handlers: Mutex::new(HashMap::new()),
            stats: Mutex::new(HiddenStats::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            tx,
        };
        (Arc::new(shared), rx)
    }

    /// Called by the core: hands a packet to the task, or counts the drop.
    pub(crate) fn offer(&self, msg: HiddenMsg) {
        if self.tx.try_send(msg).is_err() {
            self.count("queue_full");
        }
    }

    pub(crate) fn count(&self, reason: &'static str) {
        lock(&self.stats).count(reason);
    }

    pub(crate) fn stats(&self) -> HiddenStats {
        lock(&self.stats).clone()
    }

    pub(crate) fn rng(&self) -> MutexGuard<'_, StdRng> {
        lock(&self.rng)
    }

    pub(crate) fn set_handler(&self, service: &str, handler: Option<HiddenHandler>) -> bool {
        let mut h = lock(&self.handlers);
        match handler {
            Some(f) => h.insert(service.to_owned(), f).is_some(),
            None => h.remove(service).is_some(),
        }
    }

    pub(crate) fn set_master(&self, service: &str, master: Option<PeerId>) -> Option<PeerId> {
        let mut m = lock(&self.masters);
        match master {
            Some(id) => m.insert(service.to_owned(), id),
            None => m.remove(service),
        }
    }

    fn master_of(&self, service: &str) -> Option<PeerId> {
        lock(&self.masters)
            .get(service)
            .cloned()
            .or_else(|| self.cfg.master_peer_id.clone())
    }

    fn handler(&self, service: &str) -> Option<HiddenHandler> {
        lock(&self.handlers).get(service).cloned()
    }
}

/// The task: takes packets from the core until the mesh stops.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<HiddenMsg>,
    handle: MeshHandle,
) {
    let slots = Arc::new(Semaphore::new(shared.cfg.max_in_flight.max(1)));
    while let Some(msg) = rx.recv().await {
        match msg {
            HiddenMsg::Reveal { packet, handle: h } => {
                let answer = reveal(&shared, &packet);
                let _ = handle.respond(h, Payload::Json(answer)).await;
            }
            HiddenMsg::Request {
                from,
                packet,
                reply,
            } => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Refuse at once, cheaply (one RSA public-key operation), rather than queue.
                    shared.count("busy");
                    if let Ok((req, key)) = parse(&shared, &packet) {
                        let v = error_response(
                            &shared,
                            &req,
                            &key,
                            "busy",
                            "too many hidden-service requests in flight",
                        );
                        answer(&handle, &reply, v).await;
                    }
                    continue;
                };
                let (shared, handle) = (shared.clone(), handle.clone());
                tokio::spawn(async move {
                    request(&shared, &handle, from, packet, reply).await;
                    drop(slot);
                });
            }
        }
    }
}

async fn answer(handle: &MeshHandle, reply: &Reply, v: Option<Value>) {
    let Some(v) = v else { return };
    let _ = match reply {
        Reply::Direct(h) => handle.respond(h.clone(), Payload::Json(v)).await,
        Reply::Routed(r) => handle.respond_routed(r.clone(), Payload::Json(v)).await,
    };
}

/// A `hidden-service-response` whose body is an encrypted `hidden-service-error`.
fn error_response(
    shared: &Shared,
    req: &Request,
    client: &PublicKey,
    code: &str,
    message: &str,
) -> Option<Value> {
    let plain = js_json::stringify(&packet::error_plaintext(code, message));
    let env = crypto::encrypt(&mut *shared.rng(), client, plain.as_bytes()).ok()?;
    let mut v = packet::response(&req.service, &req.request_id, &req.nonce, &env);
    if let Some(fixed) = shared.cfg.fixed_packet_bytes {
        packet::pad(&mut v, fixed);
    }
    Some(v)
}

/// The request and the client's key, or the drop reason (nothing to answer to).
fn parse(shared: &Shared, v: &Value) -> Result<(Request, PublicKey), &'static str> {
    let req = packet::parse_request(v, shared.cfg.max_packet_bytes).map_err(|_| "malformed")?;
    let key = PublicKey::from_pem(&req.client_public_key).map_err(|_| "malformed")?;
    Ok((req, key))
}

async fn request(shared: &Shared, handle: &MeshHandle, from: PeerId, v: Value, reply: Reply) {
    let (req, client) = match parse(shared, &v) {
        Ok(r) => r,
        Err(reason) => return shared.count(reason),
    };
    let fail = |reason: &'static str, code: &str, message: String| {
        shared.count(reason);
        error_response(shared, &req, &client, code, &message)
    };
    if packet::js_len(&v) > shared.cfg.max_packet_bytes {
        let msg = format!("packet over {} characters", shared.cfg.max_packet_bytes);
        return answer(handle, &reply, fail("too_large", "too-large", msg)).await;
    }
    if let Err(e) = packet::check_padding(&v, shared.cfg.fixed_packet_bytes.unwrap_or(0)) {
        return answer(handle, &reply, fail("bad_padding", "bad-padding", e)).await;
    }
    let out = match shared.handler(&req.service) {
        Some(h) => master(shared, h, from, &req, &client).await,
        None => entry(shared, handle, &from, v, &req).await,
    };
    let out = match out {
        Ok(v) => Some(v),
        Err((reason, code, message)) => fail(reason, code, message),
    };
    answer(handle, &reply, out).await;
}

type Refusal = (&'static str, &'static str, String);

async fn master(
    shared: &Shared,
    handler: HiddenHandler,
    from: PeerId,
    req: &Request,
    client: &PublicKey,
) -> Result<Value, Refusal> {
    let cfg = &shared.cfg;
    let identity = cfg.identity.as_ref().ok_or((
        "no_identity",
        "no-identity",
        "the master has no private key".to_owned(),
    ))?;
    let opened = crypto::open(identity, &req.body)
        .map_err(|e| ("decrypt_failed", "decrypt-failed", e.to_string()))?;
    let binding = Binding {
        client_key: client,
        request_id: &req.request_id,
        nonce: &req.nonce,
    };
    let bound = crypto::check_binding(&opened.key, binding)
        .map_err(|e| ("key_swap", "key-swap", e.to_string()))?;
    if !bound && cfg.require_bound_requests {
        return Err((
            "unbound",
            "unbound-request",
            "this master requires key-bound requests".into(),
        ));
    }
    let body_id: [u8; 32] = {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, &req.body.encrypted_key).as_ref());
        out
    };
    let seen = lock(&shared.replay).insert(body_id, Instant::now());
    match seen {
        Ok(()) => {}
        Err(Refused::Seen) => {
            return Err(("replay", "replay", "this request was already served".into()));
        }
        Err(Refused::Full) => {
            return Err((
                "replay_cache_full",
                "busy",
                "the master's replay cache is full; retry later".into(),
            ));
        }
    }
    let payload = packet::payload_of(&opened.plaintext)
        .map_err(|e| ("decrypt_failed", "decrypt-failed", e.to_string()))?;
    let ctx = HiddenContext {
        request_id: req.request_id.clone(),
        service: req.service.clone(),
        nonce: req.nonce.clone(),
        peer: from,
        client_public_key: client.clone(),
        bound,
    };
    let result = handler(payload, ctx)
        .await
        .map_err(|e| ("handler_error", "handler-error", e))?;
    let env = crypto::encrypt(&mut *shared.rng(), client, &packet::plaintext(&result))
        .map_err(|e| ("handler_error", "encrypt-failed", e.to_string()))?;
    let mut v = packet::response(&req.service, &req.request_id, &req.nonce, &env);
    if let Some(fixed) = cfg.fixed_packet_bytes {
        packet::pad(&mut v, fixed);
    }
    lock(&shared.stats).served += 1;
    Ok(v)
}

async fn entry(
    shared: &Shared,
    handle: &MeshHandle,
    from: &PeerId,
    v: Value,
    req: &Request,
) -> Result<Value, Refusal> {
    let master = shared.master_of(&req.service).ok_or_else(|| {
        (
            "unknown_service",
            "unknown-service",
            format!("no master for service {:?}", req.service),
        )
    })?;
    let key = format!("{}:{}:{}", req.service, req.request_id, req.nonce);
    let started = Instant::now();
    let refused = lock(&shared.in_flight).start(&key, started);
    match refused {
        Ok(()) => {}
        Err(Refused::Seen) => {
            return Err((
                "duplicate",
                "duplicate-request",
                packet::DUPLICATE_MESSAGE.into(),
            ));
        }
        Err(Refused::Full) => {
            return Err((
                "busy",
                "busy",
                "too many hidden-service requests in flight".into(),
            ));
        }
    }
    let result = forward(shared, handle, from, &master, v, req, started).await;
    lock(&shared.in_flight).finish(&key);
    result
}

async fn forward(
    shared: &Shared,
    handle: &MeshHandle,
    from: &PeerId,
    master: &PeerId,
    v: Value,
    req: &Request,
    started: Instant,
) -> Result<Value, Refusal> {
    let cfg = &shared.cfg;
    let mut requested = req.requested_hops.max(1);
    if requested > cfg.max_requested_hops {
        shared.count("hops_capped");
        requested = cfg.max_requested_hops.max(1);
    }
    let relays: Vec<PeerId> = if cfg.through.is_empty() {
        let linked = handle.peers().await.unwrap_or_default();
        let candidates: Vec<&PeerId> = linked
            .iter()
            .filter(|p| *p != master && *p != from && **p != shared.me)
            .collect();
        let want = (requested as usize).saturating_sub(1).min(candidates.len());
        let mut rng = shared.rng();
        rand::seq::index::sample(&mut *rng, candidates.len(), want)
            .into_iter()
            .map(|i| candidates[i].clone())
            .collect()
    } else {
        cfg.through.clone()
    };
    let route = RouteOptions::through(relays);
    let (response, info) = handle
        .send_routed_with_info(
            master,
            Payload::Json(v),
            Some(route),
            Some(shared.request_timeout),
        )
        .await
        .map_err(|e| ("master_unreachable", "master-unreachable", e.to_string()))?;
    let mut resp = match response {
        Payload::Json(r)
            if r.get(crate::relay::packet::INTERNAL_KEY)
                .and_then(Value::as_str)
                == Some(packet::RESPONSE)
                && r.get("requestId").and_then(Value::as_str) == Some(req.request_id.as_str())
                && r.get("nonce").and_then(Value::as_str) == Some(req.nonce.as_str()) =>
        {
            r
        }
        _ => {
            let msg = "the master's answer is not a hidden-service-response to this request".into();
            return Err(("bad_master_response", "bad-master-response", msg));
        }
    };
    let plan = DelayPlan::new(
        &mut *shared.rng(),
        info.route.len(),
        requested,
        cfg.response_delay_ms,
    );
    let hold = plan.hold(started.elapsed());
    if !hold.is_zero() {
        lock(&shared.stats).delayed += 1;
        tokio::time::sleep(hold).await;
    }
    plan.stamp(&mut resp, info.layered);
    if let Some(fixed) = cfg.fixed_packet_bytes {
        packet::repad(&mut resp, fixed);
    }
    lock(&shared.stats).forwarded += 1;
    Ok(resp)
}

/// Answers a server-reveal challenge. Only as a master with reveal on, and only a challenge
/// that is exactly `{"nonce": <string>}`: anything else (a captured request body, say) is
/// refused, so the master is no decryption oracle.
fn reveal(shared: &Shared, v: &Value) -> Value {
    let cfg = &shared.cfg;
    let identity = match (&cfg.identity, cfg.reveal_server, cfg.role) {
        (Some(id), true, Some(HiddenRole::Master)) => id,
        _ => {
            shared.count("reveal_refused");
            return packet::reveal_response(Err("server-reveal-disabled"), &shared.me);
        }
    };
    let nonce = v
        .get("challenge")
        .and_then(|c| crypto::Envelope::from_json(c, 4096).ok())
        .and_then(|env| crypto::open(identity, &env).ok())
        .and_then(|o| serde_json::from_slice::<Value>(&o.plaintext).ok())
        .and_then(|p| match p {
            Value::Object(m) if m.len() == 1 => {
                m.get("nonce").and_then(Value::as_str).map(str::to_owned)
            }
            _ => None,
        });
    match nonce {
        Some(n) => {
            lock(&shared.stats).revealed += 1;
            packet::reveal_response(Ok(&n), &shared.me)
        }
        None => {
            shared.count("reveal_refused");
            packet::reveal_response(Err("server-proof-failed"), &shared.me)
        }
    }
}
