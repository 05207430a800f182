//! WebRTC link throughput and connect time: two webrtc-rs peers in one process on 127.0.0.1.
//!
//! `cargo bench -p ghostmesh --bench webrtc_throughput [-- <MiB per run> [<rounds>]]`
//! (default 64 MiB, 3 rounds). Each round runs every configuration once, one after the other,
//! so configurations are compared side by side under the same load. Prints connect times
//! (create_offer → both channels open) and MB/s (10^6 bytes/s) from the first send to the
//! receiver holding the last byte.
//!
//! `--compact` (or `GHOSTMESH_BENCH_COMPACT=1`): only what `bench/transfer-vs-node.sh` compares
//! with the Node baseline (`interop/wrtc-throughput.mjs`), printed as one machine-readable line
//! on stdout (medians, then every value):
//!
//! ```text
//! rust connect_ms=.. mbs_16k=.. mbs_64k=.. mbs_16k_mtu16k=.. mbs_64k_mtu16k=.. cpu_16k=.. cpu_64k=.. ...
//! ```
//!
//! connect = the default configuration, 5 connects per round; `mbs_*` = MB/s with the default
//! configuration, `*_mtu16k` with `sctp_mtu: Some(16384)` (two Rust peers on loopback only);
//! `cpu_*` = MB per CPU-second of the whole process (user + system, both peers), with the
//! default configuration: a figure that depends less on what else runs on the machine.
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

/// CPU time of the whole process (every thread, user + system), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // USER_HZ is 100 on Linux (x86_64, arm64).
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

async fn throughput(cfg: &WebRtcConfig, msg: usize, total: usize) -> f64 {
    throughput_cpu(cfg, msg, total).await.0
}

/// (MB/s, MB per CPU-second of the whole process).
async fn throughput_cpu(cfg: &WebRtcConfig, msg: usize, total: usize) -> (f64, f64) {
    let (a, b, _) = connect(cfg).await;
    let n = total / msg;
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    // The sender is a task of its own (an application's sender and receiver would be): both
    // ends can run at once on the two worker threads.
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let mut m = vec![0u8; msg];
            m[..8].copy_from_slice(&(i as u64).to_be_bytes());
            a.send(Frame::Binary(m)).await.unwrap();
        }
        a
    });
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
    let (a, bytes) = tokio::time::timeout(Duration::from_secs(300), async {
        let (a, bytes) = tokio::join!(sender, receiver);
        (a.unwrap(), bytes)
    })
    .await
    .expect("transfer timed out");
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (process_cpu() - cpu0).as_secs_f64().max(0.01);
    a.close().await;
    b.close().await;
    (bytes as f64 / secs / 1e6, bytes as f64 / cpu / 1e6)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn csv(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    items.join(",")
}

/// The `--compact` run: see the module docs.
async fn compact(mib: usize, rounds: usize) {
    let cfg = WebRtcConfig::bound_to("127.0.0.1:0");
    let mtu = WebRtcConfig {
        sctp_mtu: Some(16384),
        ..cfg.clone()
    };
    let total = mib * 1024 * 1024;
    let mut v: [Vec<f64>; 7] = Default::default();
    for _ in 0..rounds {
        for _ in 0..5 {
            let (a, b, t) = connect(&cfg).await;
            v[0].push(t.as_secs_f64() * 1e3);
            a.close().await;
            b.close().await;
        }
        let (m16, c16) = throughput_cpu(&cfg, 16 * 1024, total).await;
        let (m64, c64) = throughput_cpu(&cfg, 64 * 1024, total).await;
        v[1].push(m16);
        v[2].push(m64);
        v[3].push(throughput(&mtu, 16 * 1024, total).await);
        v[4].push(throughput(&mtu, 64 * 1024, total).await);
        v[5].push(c16);
        v[6].push(c64);
    }
    let names = [
        "connect_ms",
        "mbs_16k",
        "mbs_64k",
        "mbs_16k_mtu16k",
        "mbs_64k_mtu16k",
        "cpu_16k",
        "cpu_64k",
    ];
    let mut line = String::from("rust");
    for (name, values) in names.iter().zip(&v) {
        line += &format!(" {name}={:.1}", median(values));
    }
    for (name, values) in names.iter().zip(&v) {
        line += &format!(" {name}_all={}", csv(values));
    }
    println!("{line}");
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
    let compact_mode = std::env::args().any(|a| a == "--compact")
        || std::env::var("GHOSTMESH_BENCH_COMPACT").is_ok_and(|v| v == "1");
    if compact_mode {
        rt.block_on(compact(mib, rounds));
        return;
    }
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
