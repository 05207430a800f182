//! WebRTC link throughput and connect time: two webrtc-rs peers in one process on 127.0.0.1.
//!
//! `cargo bench -p ghostmesh --bench webrtc_throughput [-- <MiB per run>]` (default 64 MiB).
//! Prints MB/s (10^6 bytes/s) from the first send to the receiver holding the last byte.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ghostmesh::transport::webrtc::{WebRtcConfig, accept_offer, create_offer};
use ghostmesh::transport::{Frame, Link};

async fn connect(cfg: &WebRtcConfig) -> (Box<dyn Link>, Box<dyn Link>, Duration) {
    let t0 = Instant::now();
    let (po, offer) = create_offer(cfg, "0123456789abcdef0123456789abcdef01234567")
        .await
        .unwrap();
    let (answer, pa) = accept_offer(cfg, &offer).await.unwrap();
    let (a, b) = tokio::join!(po.accept_answer(&answer), pa.connected());
    (a.unwrap().boxed(), b.unwrap().boxed(), t0.elapsed())
}

async fn throughput(cfg: &WebRtcConfig, msg: usize, total: usize) -> f64 {
    let (a, b, _) = connect(cfg).await;
    let n = total / msg;
    let t0 = Instant::now();
    let sender = async {
        for i in 0..n {
            let mut m = vec![0u8; msg];
            m[..8].copy_from_slice(&(i as u64).to_be_bytes());
            a.send(Frame::Binary(m)).await.unwrap();
        }
    };
    let receiver = async {
        let mut bytes = 0usize;
        for i in 0..n {
            match b.recv().await {
                Some(Frame::Binary(m)) => {
                    assert_eq!(u64::from_be_bytes(m[..8].try_into().unwrap()), i as u64);
                    bytes += m.len();
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
        bytes
    };
    let ((), bytes) = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(sender, receiver)
    })
    .await
    .expect("transfer timed out");
    let secs = t0.elapsed().as_secs_f64();
    a.close().await;
    b.close().await;
    bytes as f64 / secs / 1e6
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = WebRtcConfig::bound_to("127.0.0.1:0");
        let mut times = Vec::new();
        for _ in 0..5 {
            let (a, b, t) = connect(&cfg).await;
            times.push(t);
            a.close().await;
            b.close().await;
        }
        println!("connect (offer → both channels open), 5 runs: {times:?}");
        let fast = WebRtcConfig {
            ice_check_interval: Some(Duration::from_millis(10)),
            ..cfg.clone()
        };
        let (a, b, t) = connect(&fast).await;
        println!("connect with 10 ms ICE check interval: {t:?}");
        a.close().await;
        b.close().await;

        for msg in [16 * 1024, 64 * 1024] {
            let mbs = throughput(&cfg, msg, mib * 1024 * 1024).await;
            println!(
                "{} KiB messages, {mib} MiB, 4 MiB socket buffers, 1 MiB send limit: {mbs:.1} MB/s",
                msg / 1024
            );
        }
        let small = WebRtcConfig {
            socket_buffer_bytes: 0,
            ..cfg.clone()
        };
        let mbs = throughput(&small, 16 * 1024, 16 * 1024 * 1024).await;
        println!("16 KiB messages, 16 MiB, OS-default socket buffers: {mbs:.1} MB/s");
    });
}
