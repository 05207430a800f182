//! File-transfer goodput over real WebRTC on 127.0.0.1, side by side with the raw data
//! channel it runs on, in one process and one run.
//!
//! `cargo bench -p ghostmesh --bench file_throughput [-- <MiB> [<rounds>]]` (default 256 MiB,
//! 1 round). Per round, one after the other: raw data channel (64 KiB binary messages, the
//! fast path's frame size), the file fast path (binary frames under the receiver's window), and
//! GhostMesh's format (12 KiB chunks in base64 JSON). File times run from `send_file` until
//! the receiver holds every byte and checked its SHA-256 (both formats carry one from Rust
//! senders), and the sender got the completion. Prints MB/s (10^6 bytes/s) and ratios to raw.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ghostmesh::file::{FileOptions, FileSource};
use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::transport::webrtc::{WebRtcConfig, accept_offer, create_offer};
use ghostmesh::transport::Frame;
use ghostmesh_tracker::{Config, Tracker};

const FRAME: usize = 64 * 1024;

async fn raw(cfg: &WebRtcConfig, total: usize) -> f64 {
    let (po, offer) = create_offer(cfg, "0123456789abcdef0123456789abcdef01234567").await.unwrap();
    let (answer, pa) = accept_offer(cfg, &offer).await.unwrap();
    let (a, b) = tokio::join!(po.accept_answer(&answer), pa.connected());
    let (a, b) = (a.unwrap().boxed(), b.unwrap().boxed());
    let n = total / FRAME;
    let t0 = Instant::now();
    let send = async {
        for _ in 0..n {
            a.send(Frame::Binary(vec![7u8; FRAME])).await.unwrap();
        }
    };
    let recv = async {
        let mut got = 0;
        while got < n * FRAME {
            match b.recv().await {
                Some(f) => got += f.len(),
                None => panic!("link closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(600), async { tokio::join!(send, recv) })
        .await
        .expect("raw transfer timed out");
    let secs = t0.elapsed().as_secs_f64();
    a.close().await;
    b.close().await;
    total as f64 / secs / 1e6
}

async fn file(a: &Mesh, b: &mut Mesh, b_id: &str, data: &bytes::Bytes, fast: bool) -> f64 {
    let t0 = Instant::now();
    let options = FileOptions {
        fast,
        ..FileOptions::default()
    };
    let out = a.send_file(b_id, FileSource::Bytes(data.clone()), options).await.unwrap();
    let inc = loop {
        match b.next_event().await {
            Some(MeshEvent::File(s)) => break s,
            Some(_) => {}
            None => panic!("mesh B stopped"),
        }
    };
    tokio::time::timeout(Duration::from_secs(900), async {
        inc.wait_until_complete().await.unwrap();
        out.wait_until_complete().await.unwrap();
    })
    .await
    .expect("file transfer timed out");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(out.fast_path(), fast);
    data.len() as f64 / secs / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mib: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let total = mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = WebRtcConfig::bound_to("127.0.0.1:0");
        let tracker = Tracker::start(Config {
            listen: "127.0.0.1:0".into(),
            ..Config::default()
        })
        .await
        .unwrap();
        let start = |seed| {
            Mesh::builder(vec![tracker.ws_url()], "file-bench")
                .webrtc(cfg.clone())
                .seed(seed)
                .start()
        };
        let mut a = start(1).await.unwrap();
        let mut b = start(2).await.unwrap();
        let b_id = loop {
            if let Some(MeshEvent::PeerConnected(p)) = a.next_event().await {
                break p;
            }
        };
        // Random bytes, so nothing compresses or dedupes along the way.
        let data: bytes::Bytes = {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let mut v = vec![0u8; total];
            rng.fill_bytes(&mut v);
            v.into()
        };
        println!("{mib} MiB per transfer, {rounds} round(s), WebRTC on 127.0.0.1");
        println!("{:<6} {:>12} {:>14} {:>10} {:>14} {:>10}", "round", "raw MB/s", "fast MB/s", "fast/raw", "compat MB/s", "compat/raw");
        for round in 1..=rounds {
            let r = raw(&cfg, total).await;
            let f = file(&a, &mut b, &b_id, &data, true).await;
            let c = file(&a, &mut b, &b_id, &data, false).await;
            println!("{round:<6} {r:>12.1} {f:>14.1} {:>9.0}% {c:>14.1} {:>9.0}%", f / r * 100.0, c / r * 100.0);
        }
        a.stop().await;
        b.stop().await;
        tracker.shutdown().await;
    });
}
