//! A hidden service, its entry peer and a client in one program, over real WebRTC on
//! 127.0.0.1 through an in-process tracker (or `--tracker URL` for yours).
//!
//! ```sh
//! cargo run -p ghostmesh --example hidden_service
//! cargo run -p ghostmesh --example hidden_service -- --requests 5 --min-hops 3 --delay-ms 200-800
//! ```
//!
//! The master serves `time` (it answers with the request and its own clock); the entry knows
//! which peer is the master and forwards requests it cannot read; the client only knows the
//! entry and the master's public key. Each line printed shows the answer, the hop counts the
//! entry reported, whether the master saw a key-bound request, and how long the call took
//! (the entry holds responses of short routes for a random delay: delay padding). The client
//! has no key pair of its own, so, as in GhostMesh, each request makes a temporary 2048-bit
//! one (tens of milliseconds to a second); `identity` in its config reuses one instead.
//!
//! Flags: `--tracker URL` (default: start one in-process), `--requests N` (default 3),
//! `--min-hops N` (default 3), `--delay-ms MIN-MAX` (default 200-800; GhostMesh's is
//! 1000-5000), `--pad BYTES` (fixed packet size, default 2048).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ghostmesh::hidden::{HiddenRequestOptions, HiddenRole, HiddenServiceConfig, KeyPair};
use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::transport::webrtc::WebRtcConfig;
use ghostmesh::wire::Payload;
use serde_json::json;

struct Args {
    tracker: Option<String>,
    requests: usize,
    min_hops: u64,
    delay: (u64, u64),
    pad: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        tracker: None,
        requests: 3,
        min_hops: 3,
        delay: (200, 800),
        pad: 2048,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--tracker" => a.tracker = Some(value()?),
            "--requests" => {
                a.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?
            }
            "--min-hops" => {
                a.min_hops = value()?.parse().map_err(|e| format!("--min-hops: {e}"))?
            }
            "--pad" => a.pad = value()?.parse().map_err(|e| format!("--pad: {e}"))?,
            "--delay-ms" => {
                let v = value()?;
                let (lo, hi) = v
                    .split_once('-')
                    .ok_or("--delay-ms takes MIN-MAX, e.g. 200-800")?;
                a.delay = (
                    lo.parse().map_err(|e| format!("--delay-ms: {e}"))?,
                    hi.parse().map_err(|e| format!("--delay-ms: {e}"))?,
                );
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

async fn peer(url: &str, cfg: HiddenServiceConfig) -> Result<Mesh, Box<dyn std::error::Error>> {
    Ok(
        Mesh::builder(vec![url.to_owned()], "ghostmesh-hidden-service-example")
            .webrtc(WebRtcConfig::bound_to("127.0.0.1:0"))
            .hidden_service(cfg)
            .start()
            .await?,
    )
}

/// Reads a mesh's events in the background (the example needs none of them but must keep the
/// queue moving).
fn drain(mut mesh: Mesh) -> tokio::task::JoinHandle<Mesh> {
    tokio::spawn(async move {
        while let Some(e) = mesh.next_event().await {
            if let MeshEvent::PeerWarning { peer, message } = e {
                eprintln!("warning from {}: {message}", &peer[..8]);
            }
        }
        mesh
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        eprintln!("{e}\nusage: hidden_service [--tracker URL] [--requests N] [--min-hops N] [--delay-ms MIN-MAX] [--pad BYTES]");
        e
    })?;
    let tracker = match &args.tracker {
        Some(_) => None,
        None => Some(
            ghostmesh_tracker::Tracker::start(ghostmesh_tracker::Config {
                listen: "127.0.0.1:0".into(),
                ..ghostmesh_tracker::Config::default()
            })
            .await?,
        ),
    };
    let url = args
        .tracker
        .clone()
        .unwrap_or_else(|| tracker.as_ref().map(|t| t.ws_url()).unwrap_or_default());
    println!("tracker {url}");

    let started = Instant::now();
    let master_keys = tokio::task::spawn_blocking(KeyPair::generate).await??;
    println!("master key generated in {:?}", started.elapsed());

    let master = peer(
        &url,
        HiddenServiceConfig {
            identity: Some(master_keys.clone()),
            role: Some(HiddenRole::Master),
            reveal_server: true,
            fixed_packet_bytes: Some(args.pad),
            ..HiddenServiceConfig::default()
        },
    )
    .await?;
    let master_id = master.peer_id().to_owned();
    master.handle_hidden_service("time", |payload: Payload, ctx| async move {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        let sent = match payload {
            Payload::Text(t) => json!(t),
            Payload::Json(v) => v,
        };
        Ok(
            json!({"you_sent": sent, "unix_ms": now.as_millis() as u64, "key_bound": ctx.bound})
                .into(),
        )
    });
    let entry = peer(
        &url,
        HiddenServiceConfig {
            services: BTreeMap::from([("time".to_owned(), master_id.clone())]),
            response_delay_ms: args.delay,
            fixed_packet_bytes: Some(args.pad),
            ..HiddenServiceConfig::default()
        },
    )
    .await?;
    let entry_id = entry.peer_id().to_owned();
    let client = peer(
        &url,
        HiddenServiceConfig {
            entry_peers: vec![entry_id.clone()],
            master_public_key: Some(master_keys.public().clone()),
            min_hops: args.min_hops,
            fixed_packet_bytes: Some(args.pad),
            ..HiddenServiceConfig::default()
        },
    )
    .await?;
    println!(
        "master {}  entry {}  client {}",
        &master_id[..8],
        &entry_id[..8],
        &client.peer_id()[..8]
    );
    let (master_task, entry_task) = (drain(master), drain(entry));

    // Wait (bounded) until the client links to the entry.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.peers().await?.contains(&entry_id) {
        if Instant::now() > deadline {
            return Err("the client did not link to the entry within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "is the master a server? {}",
        client.is_server(&master_id).await?
    );
    println!(
        "is the entry a server?  {}",
        client.is_server(&entry_id).await?
    );

    for i in 0..args.requests {
        let t0 = Instant::now();
        let reply = client
            .request_hidden_service(
                "time",
                format!("request {i}").into(),
                HiddenRequestOptions::default(),
            )
            .await?;
        let shown = match &reply.payload {
            Payload::Json(v) => v.to_string(),
            Payload::Text(t) => t.clone(),
        };
        let told = |v: Option<u64>| v.map_or("hidden".to_owned(), |n| n.to_string());
        println!(
            "{shown} | hops: real {}, simulated {} | delayed {} ms | response {} chars | took {:?}",
            told(reply.real_hops),
            reply.simulated_hops,
            told(reply.delayed_ms),
            reply.packet_len,
            t0.elapsed()
        );
    }
    let mut client = client;
    client.stop().await;
    for task in [master_task, entry_task] {
        task.abort();
    }
    drop(tracker);
    Ok(())
}
