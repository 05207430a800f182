//! Hidden services between `Mesh` peers over memory links: client, entry and master; delay
//! padding observed on tokio's paused clock; padding sizes; and every refusal (wrong key,
//! tampered body, swapped client key, replay, unknown service, duplicate, bad padding, hop
//! cap) reaching the caller as a clear error and counted at the peer.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use ghostmesh::hidden::crypto::{self, Binding};
use ghostmesh::hidden::packet::{self, Request};
use ghostmesh::hidden::{
    HiddenError, HiddenRequestOptions, HiddenRole, HiddenServiceConfig, KeyPair,
};
use ghostmesh::mesh::{Mesh, MeshError};
use ghostmesh::signal::SignalConfig;
use ghostmesh::transport::connector::MemoryNetwork;
use ghostmesh::transport::memory::MemoryConfig;
use ghostmesh::wire::Payload;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

mod support;
use support::{start_tracker, within};

/// RSA key generation is slow in bulk: each test process makes these once.
fn keys() -> &'static (KeyPair, KeyPair, KeyPair) {
    static KEYS: OnceLock<(KeyPair, KeyPair, KeyPair)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        )
    })
}
fn master_keys() -> &'static KeyPair {
    &keys().0
}
fn client_keys() -> &'static KeyPair {
    &keys().1
}
fn other_keys() -> &'static KeyPair {
    &keys().2
}

/// A peer's hidden-service config, made from every peer's id.
type Role = Box<dyn Fn(&[String]) -> HiddenServiceConfig>;

struct Net {
    meshes: Vec<Mesh>,
    ids: Vec<String>,
    _tracker: ghostmesh_tracker::Tracker,
}

/// `cfgs.len()` peers on one swarm, each with its hidden-service config (built from the
/// others' ids), all linked to each other before returning.
async fn mesh_of(swarm: &str, cfgs: Vec<Role>, seed: u64) -> Net {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    // Peer ids come from the seed: learn them with a throwaway start, then start for real.
    let n = cfgs.len();
    let mut ids = Vec::new();
    for i in 0..n {
        let mut m = Mesh::builder(vec![url.clone()], &format!("{swarm}-probe"))
            .seed(seed + i as u64)
            .start()
            .await
            .unwrap();
        ids.push(m.peer_id().to_owned());
        m.stop().await;
    }
    let mut meshes = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        let m = Mesh::builder(vec![url.clone()], swarm)
            .connector(net.connector(&format!("p{i}")))
            .signal_config(SignalConfig {
                offers_per_announce: 10,
                ..SignalConfig::default()
            })
            .request_timeout(Duration::from_secs(10))
            .hidden_service(cfg(&ids))
            .seed(seed + i as u64)
            .start()
            .await
            .unwrap();
        assert_eq!(m.peer_id(), ids[i]);
        meshes.push(m);
    }
    within("full mesh", async {
        loop {
            let mut full = true;
            for m in &meshes {
                full &= m.peers().await.unwrap().len() == n - 1;
            }
            if full {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    Net {
        meshes,
        ids,
        _tracker: tracker,
    }
}

/// Roles: 0 client, 1 entry, 2 master (echo service), 3.. relays.
fn roles(fixed: Option<usize>, delay: (u64, u64)) -> Vec<Role> {
    let client = move |ids: &[String]| HiddenServiceConfig {
        entry_peers: vec![ids[1].clone()],
        master_public_key: Some(master_keys().public().clone()),
        identity: Some(client_keys().clone()),
        fixed_packet_bytes: fixed,
        ..HiddenServiceConfig::default()
    };
    let entry = move |ids: &[String]| HiddenServiceConfig {
        services: BTreeMap::from([("echo".to_owned(), ids[2].clone())]),
        response_delay_ms: delay,
        fixed_packet_bytes: fixed,
        ..HiddenServiceConfig::default()
    };
    let master = move |_: &[String]| HiddenServiceConfig {
        identity: Some(master_keys().clone()),
        role: Some(HiddenRole::Master),
        reveal_server: true,
        fixed_packet_bytes: fixed,
        ..HiddenServiceConfig::default()
    };
    vec![Box::new(client), Box::new(entry), Box::new(master)]
}

fn serve_echo(master: &Mesh) {
    master.handle_hidden_service("echo", |payload: Payload, ctx| async move {
        Ok(
            json!({"echo": payload_json(&payload), "bound": ctx.bound, "service": ctx.service})
                .into(),
        )
    });
}

fn payload_json(p: &Payload) -> Value {
    match p {
        Payload::Json(v) => v.clone(),
        Payload::Text(t) => Value::String(t.clone()),
    }
}

fn remote_code(e: MeshError) -> String {
    match e {
        MeshError::Hidden(HiddenError::Remote { code, .. }) => code,
        other => panic!("expected a remote hidden-service error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_entry_master_round_trip_with_padding_and_key_binding() {
    let mut cfgs = roles(Some(4096), (1, 2));
    // Peer 3: a client with no key pair of its own (a temporary one per request).
    cfgs.push(Box::new(|ids: &[String]| HiddenServiceConfig {
        entry_peers: vec![ids[1].clone()],
        master_public_key: Some(master_keys().public().clone()),
        fixed_packet_bytes: Some(4096),
        ..HiddenServiceConfig::default()
    }));
    let net = mesh_of("hs-basic", cfgs, 500).await;
    let (client, entry, master) = (&net.meshes[0], &net.meshes[1], &net.meshes[2]);
    serve_echo(master);

    // Text and JSON, with emoji; the master saw a bound key; the response is padded exactly.
    for payload in [
        Payload::Text("héllo 😀".into()),
        json!({"a": [1, 2, {"b": "c"}]}).into(),
    ] {
        let reply = within(
            "hidden request",
            client.request_hidden_service("echo", payload.clone(), HiddenRequestOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(
            reply.payload,
            Payload::Json(
                json!({"echo": payload_json(&payload), "bound": true, "service": "echo"})
            )
        );
        assert_eq!(reply.entry, net.ids[1]);
        assert_eq!(reply.simulated_hops, 3);
        // The entry re-pads from scratch: exact size after it rewrote the counters.
        assert_eq!(reply.packet_len, 4096 + 13);
    }
    assert_eq!(master.hidden_stats().served, 2);
    assert_eq!(entry.hidden_stats().forwarded, 2);
    // No master key: a clear error before anything is sent.
    let err = entry
        .request_hidden_service("echo", "x".into(), HiddenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err, MeshError::Hidden(HiddenError::NoMasterKey));

    // A temporary key pair per request when none is configured (GhostMesh's default client).
    let temp = &net.meshes[3];
    let reply = within(
        "temporary key",
        temp.request_hidden_service("echo", "t".into(), HiddenRequestOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.payload,
        Payload::Json(json!({"echo": "t", "bound": true, "service": "echo"}))
    );

    let reply = within(
        "request with the entry named",
        client.request_hidden_service(
            "echo",
            "x".into(),
            HiddenRequestOptions {
                entry: Some(net.ids[1].clone()),
                min_hops: Some(1),
                ..HiddenRequestOptions::default()
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.simulated_hops, 2,
        "asked for 1 hop, the route entry->master is 2"
    );

    // An entry learns a service's master at run time too.
    assert_eq!(entry.route_hidden_service("echo2", Some(&net.ids[2])), None);
    master.handle_hidden_service("echo2", |p: Payload, _| async move { Ok(p) });
    let reply = within(
        "runtime route",
        client.request_hidden_service("echo2", "r".into(), HiddenRequestOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(reply.payload, Payload::Text("r".into()));
    assert_eq!(
        entry.route_hidden_service("echo2", None),
        Some(net.ids[2].clone())
    );

    // Unknown service: a clear error, counted at the entry (GhostMesh's entry stays silent).
    let err = within(
        "unknown service",
        client.request_hidden_service("nope", "x".into(), HiddenRequestOptions::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(remote_code(err), "unknown-service");
    assert_eq!(entry.hidden_stats().dropped("unknown_service"), 1);

    // Server reveal: the master proves it holds the key; the entry does not.
    assert!(
        within("reveal", client.is_server(&net.ids[2]))
            .await
            .unwrap()
    );
    assert!(
        !within("reveal", client.is_server(&net.ids[1]))
            .await
            .unwrap()
    );
    assert_eq!(master.hidden_stats().revealed, 1);
    assert_eq!(entry.hidden_stats().dropped("reveal_refused"), 1);
}

/// A request made by hand (what a malicious entry or relay could send), straight to the master.
fn crafted(
    service: &str,
    client: &KeyPair,
    bind_to: Option<&KeyPair>,
    payload: &Payload,
    seed: u64,
) -> Request {
    let mut rng = StdRng::seed_from_u64(seed);
    let (request_id, nonce) = (format!("{seed:016x}"), format!("{:016x}", seed + 1));
    let binder = bind_to.unwrap_or(client);
    let binding = Binding {
        client_key: binder.public(),
        request_id: &request_id,
        nonce: &nonce,
    };
    let key = crypto::content_key(&mut rng, bind_to.map(|_| binding));
    let body = crypto::seal(
        &mut rng,
        master_keys().public(),
        &key,
        &packet::plaintext(payload),
    )
    .unwrap();
    Request {
        service: service.into(),
        request_id,
        nonce,
        client_public_key: client.public().to_pem(),
        requested_hops: 1,
        body,
    }
}

/// Sends `req` to `to` and returns the decrypted answer (with `keys`) as JSON.
async fn ask(from: &Mesh, to: &str, v: Value, keys: &KeyPair) -> Value {
    let answer = within("crafted request", from.send(to, Payload::Json(v)))
        .await
        .unwrap();
    let Payload::Json(answer) = answer else {
        panic!("not JSON")
    };
    assert_eq!(answer["__ghostmeshInternal"], "hidden-service-response");
    let env = crypto::Envelope::from_json(&answer["body"], 1 << 20).unwrap();
    let opened = crypto::open(keys, &env).unwrap();
    serde_json::from_slice(&opened.plaintext).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_refuse_swapped_keys_replays_tampering_and_bad_padding() {
    let mut cfgs = roles(Some(2048), (1, 2));
    // Peer 3: a master that takes only key-bound (Rust client) requests.
    cfgs.push(Box::new(|_: &[String]| HiddenServiceConfig {
        identity: Some(master_keys().clone()),
        require_bound_requests: true,
        fixed_packet_bytes: Some(2048),
        ..HiddenServiceConfig::default()
    }));
    let net = mesh_of("hs-attacks", cfgs, 600).await;
    let (client, master) = (&net.meshes[0], &net.meshes[2]);
    let master_id = net.ids[2].clone();
    serve_echo(master);
    let p: Payload = "secret".into();
    let pad = |mut v: Value| {
        packet::pad(&mut v, 2048);
        v
    };

    // A well-formed bound request is served, once; the same packet again is a replay.
    let good = pad(packet::request(&crafted(
        "echo",
        client_keys(),
        Some(client_keys()),
        &p,
        10,
    )));
    let a = ask(client, &master_id, good.clone(), client_keys()).await;
    assert_eq!(a["echo"], "secret");
    assert_eq!(a["bound"], true);
    let a = ask(client, &master_id, good, client_keys()).await;
    assert_eq!(a["code"], "replay");
    assert_eq!(master.hidden_stats().dropped("replay"), 1);

    // An entry swaps in its own key to read the response: the binding catches it.
    let mut swapped = crafted("echo", client_keys(), Some(client_keys()), &p, 20);
    swapped.client_public_key = other_keys().public().to_pem();
    let a = ask(
        client,
        &master_id,
        pad(packet::request(&swapped)),
        other_keys(),
    )
    .await;
    assert_eq!(a["code"], "key-swap");
    // Swapped ids are caught the same way.
    let mut reid = crafted("echo", client_keys(), Some(client_keys()), &p, 30);
    reid.request_id = "ffffffffffffffff".into();
    let a = ask(
        client,
        &master_id,
        pad(packet::request(&reid)),
        client_keys(),
    )
    .await;
    assert_eq!(a["code"], "key-swap");
    assert_eq!(master.hidden_stats().dropped("key_swap"), 2);

    // An unbound (GhostMesh client) request is still served, and says so.
    let legacy = crafted("echo", client_keys(), None, &p, 40);
    let a = ask(
        client,
        &master_id,
        pad(packet::request(&legacy)),
        client_keys(),
    )
    .await;
    assert_eq!(
        (a["echo"].as_str(), a["bound"].as_bool()),
        (Some("secret"), Some(false))
    );

    // Tampered ciphertext and a body for another key.
    let mut tampered = crafted("echo", client_keys(), Some(client_keys()), &p, 50);
    tampered.body.ciphertext[0] ^= 1;
    let a = ask(
        client,
        &master_id,
        pad(packet::request(&tampered)),
        client_keys(),
    )
    .await;
    assert_eq!(a["code"], "decrypt-failed");
    let mut wrong = crafted("echo", client_keys(), Some(client_keys()), &p, 60);
    wrong.body = crypto::encrypt(
        &mut StdRng::seed_from_u64(1),
        other_keys().public(),
        b"\"x\"",
    )
    .unwrap();
    let a = ask(
        client,
        &master_id,
        pad(packet::request(&wrong)),
        client_keys(),
    )
    .await;
    assert_eq!(a["code"], "decrypt-failed");
    assert_eq!(master.hidden_stats().dropped("decrypt_failed"), 2);

    // Padding: unpadded, padded to another size, oversized padding.
    let plain = packet::request(&crafted("echo", client_keys(), Some(client_keys()), &p, 70));
    let a = ask(client, &master_id, plain.clone(), client_keys()).await;
    assert_eq!(a["code"], "bad-padding");
    let mut small = plain.clone();
    packet::pad(&mut small, 1600);
    let a = ask(client, &master_id, small, client_keys()).await;
    assert_eq!(a["code"], "bad-padding");
    let mut big = plain;
    big["padding"] = "0".repeat(5000).into();
    let a = ask(client, &master_id, big, client_keys()).await;
    assert_eq!(a["code"], "bad-padding");
    assert_eq!(master.hidden_stats().dropped("bad_padding"), 3);
    assert_eq!(master.hidden_stats().served, 2);

    // Malformed (no client key to answer to): counted, nothing served.
    let before = master.hidden_stats().dropped("malformed");
    client
        .send_no_reply(
            &master_id,
            json!({"__ghostmeshInternal": "hidden-service-request", "service": "echo"}).into(),
        )
        .await
        .unwrap();
    within("malformed counted", async {
        while master.hidden_stats().dropped("malformed") == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // A master that requires bound requests refuses GhostMesh-style ones, serves bound ones.
    let strict = &net.meshes[3];
    serve_echo(strict);
    let legacy = crafted("echo", client_keys(), None, &p, 90);
    let a = ask(
        client,
        &net.ids[3],
        pad(packet::request(&legacy)),
        client_keys(),
    )
    .await;
    assert_eq!(a["code"], "unbound-request");
    assert_eq!(strict.hidden_stats().dropped("unbound"), 1);
    let bound = crafted("echo", client_keys(), Some(client_keys()), &p, 100);
    let a = ask(
        client,
        &net.ids[3],
        pad(packet::request(&bound)),
        client_keys(),
    )
    .await;
    assert_eq!(a["echo"], "secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_dedupe_in_flight_requests_and_cap_requested_hops() {
    let net = mesh_of("hs-entry", roles(None, (1, 2)), 700).await;
    let (client, entry, master) = (&net.meshes[0], &net.meshes[1], &net.meshes[2]);
    let entry_id = net.ids[1].clone();
    // A slow service, so the first request is still in flight when the duplicate comes.
    master.handle_hidden_service("echo", |payload: Payload, _| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(payload)
    });
    let mut req = crafted(
        "echo",
        client_keys(),
        Some(client_keys()),
        &"dup".into(),
        80,
    );
    req.requested_hops = 1_000_000;
    let v = packet::request(&req);
    let first = {
        let (c, v, e) = (client.handle(), v.clone(), entry_id.clone());
        tokio::spawn(async move { c.send(&e, Payload::Json(v)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = ask(client, &entry_id, v, client_keys()).await;
    assert_eq!(a["code"], "duplicate-request");
    assert_eq!(a["message"], packet::DUPLICATE_MESSAGE);
    let first = within("first request", first).await.unwrap().unwrap();
    let Payload::Json(first) = first else {
        panic!()
    };
    // Served, with the requested hops capped at the entry's maximum (8), not a million.
    assert_eq!(first["simulatedHops"], 8);
    assert_eq!(entry.hidden_stats().dropped("duplicate"), 1);
    assert_eq!(entry.hidden_stats().dropped("hops_capped"), 1);
}

/// Delay padding on tokio's paused clock: with the master one hop from the entry
/// (realHops 2 < minHops 3), the response is held for a delay drawn from
/// `response_delay_ms`; with enough relays for 3 real hops, it is not held at all.
#[tokio::test(flavor = "current_thread")]
async fn delay_padding_holds_short_routes_only() {
    // Client, entry, master, and two relays (4 and 5 are linked but the entry may use them).
    let mut cfgs = roles(None, (1000, 5000));
    cfgs.push(Box::new(|_: &[String]| HiddenServiceConfig::default()));
    cfgs.push(Box::new(|_: &[String]| HiddenServiceConfig::default()));
    let net = mesh_of("hs-delay", cfgs, 800).await;
    let (client, entry, master) = (&net.meshes[0], &net.meshes[1], &net.meshes[2]);
    serve_echo(master);
    tokio::time::pause();

    // Asking for 5 hops: the entry has only 2 relays (everyone but the client and master), so
    // the real route is 4 hops: held.
    let mut held = Vec::new();
    for _ in 0..4 {
        let t0 = tokio::time::Instant::now();
        let opts = HiddenRequestOptions {
            min_hops: Some(5),
            ..HiddenRequestOptions::default()
        };
        let reply = match within(
            "delayed request",
            client.request_hidden_service("echo", "d".into(), opts),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                for m in &net.meshes {
                    eprintln!("DEBUG {:?} {:?}", m.relay_stats().await, m.hidden_stats());
                }
                panic!("{e:?}");
            }
        };
        let took = t0.elapsed();
        // All peers are Rust: the entry reaches the master over layered routing and hides the
        // real hop count and delay; it still pads the time.
        assert_eq!(
            (reply.real_hops, reply.delayed_ms, reply.simulated_hops),
            (None, None, 5)
        );
        assert!(took >= Duration::from_millis(1000), "held only {took:?}");
        assert!(
            took <= Duration::from_millis(5000) + Duration::from_millis(50),
            "held {took:?}"
        );
        held.push(took);
    }
    held.dedup();
    assert!(held.len() > 1, "delays are drawn, not fixed: {held:?}");
    assert_eq!(entry.hidden_stats().delayed, 4);

    // Asking for 3 hops (the default): the entry takes two relays: no delay.
    let t0 = tokio::time::Instant::now();
    let reply = within(
        "undelayed request",
        client.request_hidden_service("echo", "n".into(), HiddenRequestOptions::default()),
    )
    .await
    .unwrap();
    let took = t0.elapsed();
    // Two relays and the master: 4 real hops, more than the 3 asked for.
    assert_eq!(reply.simulated_hops, 4);
    assert!(
        took < Duration::from_millis(1000),
        "not delayed, yet took {took:?}"
    );
    assert_eq!(entry.hidden_stats().delayed, 4);
}
