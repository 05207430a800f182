//! File-transfer goodput over real WebRTC on 127.0.0.1, side by side with the raw data
//! channel it runs on, in one process and one run.
//!
//! `cargo bench -p ghostmesh --bench file_throughput [-- <MiB> [<rounds>] [options]]` (default
//! 256 MiB, 1 round). Per round, one after the other: the raw data channel (64 KiB binary
//! messages, the size of the fast path's frames before issue 9; sender and receiver in two
//! tasks, as the file path's are), the file fast path (binary
//! frames under the receiver's window), and GhostMesh's format (12 KiB chunks in base64 JSON).
//! File times run from `send_file` until the receiver holds every byte and checked its SHA-256
//! (both formats carry one from Rust senders), and the sender got the completion. Prints MB/s
//! (10^6 bytes/s), MB per CPU-second of the whole process (user + system, every thread, both
//! peers: it depends less on what else runs on a shared machine) and, for both, the ratio to
//! the first raw case of the same round; then medians over the rounds.
//!
//! Options:
//! - `--only=raw,fast,compat`: run only these cases (e.g. `--only=fast` to profile it);
//! - `--raw=SIZE,...`: message sizes of the raw cases (default `64k`);
//! - `--fast=FRAME/WINDOW,...`: one more fast-path case per item, each on its own pair of
//!   meshes whose [`FileConfig`] has `fast_frame_bytes = FRAME` (sender) and
//!   `fast_window = WINDOW` (receiver), e.g. `--fast=64k/16m` for the settings before issue 9;
//!   they run in the same rounds, right after the default fast-path case, so settings compare
//!   side by side. Sizes take `k` and `m` suffixes (KiB, MiB).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ghostmesh::file::{FileConfig, FileOptions, FileSource};
use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::transport::Frame;
use ghostmesh::transport::webrtc::{WebRtcConfig, accept_offer, create_offer};
use ghostmesh_tracker::{Config, Tracker};

/// CPU time of the whole process (every thread, user + system), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// (MB/s, MB per CPU-second) for `bytes` moved since `t0` / `cpu0`.
fn rates(bytes: usize, t0: Instant, cpu0: Duration) -> (f64, f64) {
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (process_cpu() - cpu0).as_secs_f64().max(0.01);
    (bytes as f64 / secs / 1e6, bytes as f64 / cpu / 1e6)
}

async fn raw(cfg: &WebRtcConfig, msg: usize, total: usize) -> (f64, f64) {
    let (po, offer) = create_offer(cfg, "0123456789abcdef0123456789abcdef01234567")
        .await
        .unwrap();
    let (answer, pa) = accept_offer(cfg, &offer).await.unwrap();
    let (a, b) = tokio::join!(po.accept_answer(&answer), pa.connected());
    let (a, b) = (a.unwrap().boxed(), b.unwrap().boxed());
    let n = total / msg;
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    // The sender is a task of its own, as the file sender is: both ends can run at once.
    let send = tokio::spawn(async move {
        for _ in 0..n {
            a.send(Frame::Binary(vec![7u8; msg])).await.unwrap();
        }
        a
    });
    let recv = async {
        let mut got = 0;
        while got < n * msg {
            match b.recv().await {
                Some(f) => got += f.len(),
                None => panic!("link closed"),
            }
        }
    };
    let (a, ()) = tokio::time::timeout(Duration::from_secs(600), async {
        let ((), a) = tokio::join!(recv, send);
        (a.unwrap(), ())
    })
    .await
    .expect("raw transfer timed out");
    let r = rates(n * msg, t0, cpu0);
    a.close().await;
    b.close().await;
    r
}

async fn file(a: &Mesh, b: &mut Mesh, b_id: &str, data: &bytes::Bytes, fast: bool) -> (f64, f64) {
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let options = FileOptions {
        fast,
        ..FileOptions::default()
    };
    let out = a
        .send_file(b_id, FileSource::Bytes(data.clone()), options)
        .await
        .unwrap();
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
    let r = rates(data.len(), t0, cpu0);
    assert_eq!(out.fast_path(), fast);
    r
}

/// `64k`, `16m`, `1000`.
fn size(s: &str) -> u64 {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k') => (&s[..s.len() - 1], 1 << 10),
        Some(b'm') => (&s[..s.len() - 1], 1 << 20),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().expect("a size like 64k or 16m") * mult
}

/// Two meshes (A sends to B) linked over WebRTC through `tracker`, with `files` on both.
async fn pair(
    tracker: &Tracker,
    cfg: &WebRtcConfig,
    identifier: &str,
    files: FileConfig,
    seed: u64,
) -> (Mesh, Mesh, String) {
    let start = |seed| {
        Mesh::builder(vec![tracker.ws_url()], identifier)
            .webrtc(cfg.clone())
            .file_config(files.clone())
            .seed(seed)
            .start()
    };
    let mut a = start(seed).await.unwrap();
    let b = start(seed + 1).await.unwrap();
    let b_id = loop {
        if let Some(MeshEvent::PeerConnected(p)) = a.next_event().await {
            break p;
        }
    };
    (a, b, b_id)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with('-')).collect();
    let opt = |name: &str| {
        all.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
    };
    let only = opt("only").unwrap_or_else(|| "raw,fast,compat".into());
    let run = |case: &str| only.split(',').any(|c| c == case);
    let raw_sizes: Vec<(String, usize)> = opt("raw")
        .unwrap_or_else(|| "64k".into())
        .split(',')
        .filter(|x| !x.is_empty())
        .map(|x| (format!("raw {x}"), size(x) as usize))
        .collect();
    let variants: Vec<(String, u64, u64)> = opt("fast")
        .map(|v| {
            v.split(',')
                .filter(|x| !x.is_empty())
                .map(|x| {
                    let (f, w) = x.split_once('/').expect("--fast=FRAME/WINDOW");
                    (format!("fast {x}"), size(f), size(w))
                })
                .collect()
        })
        .unwrap_or_default();
    let mib: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let total = mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = WebRtcConfig::bound_to("127.0.0.1:0");
        let tracker = Tracker::start(Config {
            listen: "127.0.0.1:0".into(),
            ..Config::default()
        })
        .await
        .unwrap();
        let (mut a, mut b, b_id) =
            pair(&tracker, &cfg, "file-bench", FileConfig::default(), 1).await;
        let mut others = Vec::new();
        for (i, (name, frame, window)) in variants.iter().enumerate() {
            let files = FileConfig {
                fast_frame_bytes: *frame,
                fast_window: *window,
                ..FileConfig::default()
            };
            let ident = format!("file-bench-{i}");
            let (va, vb, vid) = pair(&tracker, &cfg, &ident, files, 10 + 2 * i as u64).await;
            others.push((name.clone(), va, vb, vid));
        }
        // Random bytes, so nothing compresses or dedupes along the way.
        let data: bytes::Bytes = {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let mut v = vec![0u8; total];
            rng.fill_bytes(&mut v);
            v.into()
        };
        let defaults = FileConfig::default();
        println!(
            "{mib} MiB per transfer, {rounds} round(s), WebRTC on 127.0.0.1; fast = defaults \
             ({} KiB frames, {} MiB window); MB/s, MB per CPU-second, % of the round's first raw case",
            defaults.fast_frame_bytes >> 10,
            defaults.fast_window >> 20
        );
        let mut names: Vec<String> = Vec::new();
        if run("raw") {
            names.extend(raw_sizes.iter().map(|r| r.0.clone()));
        }
        if run("fast") {
            names.push("fast".into());
            names.extend(others.iter().map(|o| o.0.clone()));
        }
        if run("compat") {
            names.push("compat".into());
        }
        // results[case][round] = (MB/s, MB/CPU-s)
        let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); names.len()];
        for round in 1..=rounds {
            let mut r: Vec<(f64, f64)> = Vec::new();
            if run("raw") {
                for (_, msg) in &raw_sizes {
                    r.push(raw(&cfg, *msg, total).await);
                }
            }
            if run("fast") {
                r.push(file(&a, &mut b, &b_id, &data, true).await);
                for (_, va, vb, vid) in &mut others {
                    r.push(file(va, vb, vid, &data, true).await);
                }
            }
            if run("compat") {
                r.push(file(&a, &mut b, &b_id, &data, false).await);
            }
            let base = run("raw").then(|| r[0]);
            let mut line = format!("round {round}:");
            for (i, (name, v)) in names.iter().zip(&r).enumerate() {
                results[i].push(*v);
                let pct = base.map_or(String::new(), |b| {
                    format!(" ({:.0}% / {:.0}%)", v.0 / b.0 * 100.0, v.1 / b.1 * 100.0)
                });
                line += &format!("  {name} {:.1} MB/s {:.1} MB/cpu-s{pct};", v.0, v.1);
            }
            println!("{line}");
        }
        println!(
            "\n{:<22} {:>10} {:>14} {:>16} {:>16}",
            "median over rounds", "MB/s", "MB/CPU-s", "MB/s / raw", "MB/CPU-s / raw"
        );
        for (i, name) in names.iter().enumerate() {
            let mbs: Vec<f64> = results[i].iter().map(|v| v.0).collect();
            let eff: Vec<f64> = results[i].iter().map(|v| v.1).collect();
            let (rm, re) = if run("raw") {
                let rm: Vec<f64> = results[i]
                    .iter()
                    .zip(&results[0])
                    .map(|(v, b)| v.0 / b.0 * 100.0)
                    .collect();
                let re: Vec<f64> = results[i]
                    .iter()
                    .zip(&results[0])
                    .map(|(v, b)| v.1 / b.1 * 100.0)
                    .collect();
                (format!("{:.0}%", median(&rm)), format!("{:.0}%", median(&re)))
            } else {
                (String::new(), String::new())
            };
            println!(
                "{name:<22} {:>10.1} {:>14.1} {rm:>16} {re:>16}",
                median(&mbs),
                median(&eff)
            );
        }
        a.stop().await;
        b.stop().await;
        for (_, mut va, mut vb, _) in others {
            va.stop().await;
            vb.stop().await;
        }
        tracker.shutdown().await;
    });
}
