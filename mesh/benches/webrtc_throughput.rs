//! WebRTC link throughput and connect time: two webrtc-rs peers in one process on 127.0.0.1.
//!
//! `cargo bench -p ghostmesh --bench webrtc_throughput [-- <MiB per run> [<rounds>]]`
//! (default 64 MiB, 3 rounds). Each round runs every configuration once, one after the other,
//! so configurations are compared side by side under the same load. Prints connect times
//! (create_offer → both channels open) and MB/s (10^6 bytes/s) from the first send to the
//! receiver holding the last byte.
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

fn ms(d: &Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    items.join(" / ")
}

fn main() {
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = nums.first().copied().unwrap_or(64);
    let rounds = nums.get(1).copied().unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = WebRtcConfig::bound_to("127.0.0.1:0");
        // What the link did before setup wake-ups, active offers and the 1052-byte SCTP MTU.
        let stack = cfg.clone().stack_defaults();
        // Only between two webrtc-rs peers on loopback (see `WebRtcConfig::sctp_mtu`).
        let loopback_mtu = WebRtcConfig {
            sctp_mtu: Some(16384),
            ..cfg.clone()
        };

        let connect_cases = [("defaults", &cfg), ("stack_defaults()", &stack)];
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); connect_cases.len()];
        for _ in 0..5 {
            for (i, (_, c)) in connect_cases.iter().enumerate() {
                let (a, b, t) = connect(c).await;
                times[i].push(t);
                a.close().await;
                b.close().await;
            }
        }
        for ((name, _), t) in connect_cases.iter().zip(&times) {
            let l: Vec<String> = t.iter().map(ms).collect();
            println!(
                "connect (create_offer -> both channels open), {name}: {} ms",
                l.join(" / ")
            );
        }

        let cases: [(&str, &WebRtcConfig, usize); 6] = [
            ("16 KiB, stack_defaults()", &stack, 16 * 1024),
            ("16 KiB, defaults", &cfg, 16 * 1024),
            (
                "16 KiB, sctp_mtu 16384 (loopback only)",
                &loopback_mtu,
                16 * 1024,
            ),
            ("64 KiB, stack_defaults()", &stack, 64 * 1024),
            ("64 KiB, defaults", &cfg, 64 * 1024),
            (
                "64 KiB, sctp_mtu 16384 (loopback only)",
                &loopback_mtu,
                64 * 1024,
            ),
        ];
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        for _ in 0..rounds {
            for (i, (_, c, msg)) in cases.iter().enumerate() {
                results[i].push(throughput(c, *msg, mib * 1024 * 1024).await);
            }
        }
        println!(
            "throughput, {mib} MiB per run, {rounds} rounds (each round runs every case once):"
        );
        for ((name, _, _), r) in cases.iter().zip(&results) {
            println!("  {name}: {} MB/s", list(r));
        }
        for (new, old) in [(1, 0), (2, 0), (4, 3), (5, 3)] {
            let ratios: Vec<f64> = results[new]
                .iter()
                .zip(&results[old])
                .map(|(n, o)| n / o)
                .collect();
            println!(
                "  ratio {} / {}: {}",
                cases[new].0,
                cases[old].0.split(", ").nth(1).unwrap_or(""),
                list(&ratios)
            );
        }

        let small_bufs = WebRtcConfig {
            socket_buffer_bytes: 0,
            ..cfg.clone()
        };
        let m = mib.min(16);
        let mbs = throughput(&small_bufs, 16 * 1024, m * 1024 * 1024).await;
        println!("16 KiB messages, {m} MiB, defaults but OS-default socket buffers: {mbs:.1} MB/s");
    });
}
