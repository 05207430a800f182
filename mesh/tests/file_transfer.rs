//! File transfer between `Mesh` peers over memory links (and one test over real WebRTC):
//! sizes around chunk boundaries in both formats, a 64 MiB file through disk, pause/resume,
//! cancel from either side, range reads and streaming before completion, and bad input from a
//! raw peer speaking GhostMesh's packets (corruption, unknown transfers, oversized offers,
//! silent senders, GhostMesh range replies). Failure paths (hash checks failing on either
//! hash, receivers gone silent, range-request floods, byte-exact control packets, stream
//! sources) are in `file_transfer/faults.rs`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ghostmesh::file::{
    Direction, FileConfig, FileError, FileOptions, FileSession, FileSource, FileStatus,
};
use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::transport::connector::MemoryNetwork;
use ghostmesh::transport::memory::MemoryConfig;
use ghostmesh::transport::{Frame, Link};
use ghostmesh::wire::{MsgId, Payload, Reassembler, ReassemblyLimits, Received, encode_chunks};
use ghostmesh_tracker::Tracker;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

mod support;
use support::{connected, raw_peer, start_tracker, wait_for, within};

#[path = "file_transfer/faults.rs"]
mod faults;

const SWARM: &str = "file-transfer-test";

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

fn sha256_hex(d: &[u8]) -> String {
    Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh directory under the system temp dir, removed on drop.
struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ghostmesh-ft-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn files(&self) -> usize {
        std::fs::read_dir(&self.0).unwrap().count()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Pair {
    tracker: Tracker,
    a: Mesh,
    b: Mesh,
    b_id: String,
}

async fn pair(link: MemoryConfig, files: FileConfig) -> Pair {
    pair_with(link, files.clone(), files).await
}

/// A pair whose sender (A) and receiver (B) have different file settings.
async fn pair_with(link: MemoryConfig, files_a: FileConfig, files_b: FileConfig) -> Pair {
    let tracker = start_tracker("127.0.0.1:0").await;
    let urls = vec![tracker.ws_url()];
    let net = MemoryNetwork::new(link);
    let start = |name: &str, seed: u64, files: FileConfig| {
        Mesh::builder(urls.clone(), SWARM)
            .connector(net.connector(name))
            .file_config(files)
            .seed(seed)
            .start()
    };
    let mut a = start("a", 1, files_a).await.unwrap();
    let mut b = start("b", 2, files_b).await.unwrap();
    let b_id = wait_for(&mut a, "A meets B", connected("A")).await;
    wait_for(&mut b, "B meets A", connected("B")).await;
    Pair {
        tracker,
        a,
        b,
        b_id,
    }
}

impl Pair {
    async fn stop(mut self) {
        self.a.stop().await;
        self.b.stop().await;
        self.tracker.shutdown().await;
    }
}

async fn incoming(mesh: &mut Mesh) -> FileSession {
    wait_for(mesh, "an incoming file", |e| match e {
        MeshEvent::File(s) => Some(s),
        _ => None,
    })
    .await
}

fn opts(fast: bool) -> FileOptions {
    FileOptions {
        fast,
        ..FileOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_around_chunk_boundaries_round_trip_in_both_formats() {
    let dir = Dir::new("sizes");
    let files = FileConfig {
        temp_dir: Some(dir.0.clone()),
        ..FileConfig::default()
    };
    let mut p = pair(MemoryConfig::default(), files).await;
    for fast in [false, true] {
        for (i, size) in [0usize, 1, 12_287, 12_288, 12_289, 3 * 12_288 + 5, 300_000]
            .into_iter()
            .enumerate()
        {
            let bytes = data(size, i as u64);
            let meta = json!({"i": i, "fast": fast});
            let options = FileOptions {
                name: Some(format!("f{i}.bin")),
                mime_type: Some("application/x-test".into()),
                metadata: Some(meta.clone()),
                ..opts(fast)
            };
            let out =
                p.a.send_file(&p.b_id, FileSource::bytes(bytes.clone()), options)
                    .await
                    .unwrap();
            assert_eq!(
                (out.direction(), out.size(), out.name()),
                (
                    Direction::Outgoing,
                    size as u64,
                    format!("f{i}.bin").as_str()
                )
            );
            let inc = incoming(&mut p.b).await;
            assert_eq!(inc.transfer_id(), out.transfer_id());
            assert_eq!(inc.transfer_id().len(), 16);
            assert_eq!(
                (inc.name(), inc.mime_type()),
                (format!("f{i}.bin").as_str(), "application/x-test")
            );
            assert_eq!(inc.metadata(), Some(&meta));
            assert_eq!(inc.size(), size as u64);
            assert_eq!(inc.chunk_size(), 12_288);
            assert_eq!(inc.total_chunks(), (size as u64).div_ceil(12_288).max(1));
            assert_eq!(inc.direction(), Direction::Incoming);
            assert_eq!(inc.peer_id(), p.a.peer_id());
            within("incoming completes", inc.wait_until_complete())
                .await
                .unwrap();
            within("outgoing completes", out.wait_until_complete())
                .await
                .unwrap();
            assert_eq!(inc.status(), FileStatus::Complete);
            assert_eq!((inc.progress(), out.progress()), (1.0, 1.0));
            assert_eq!(
                inc.read_range(0, size as u64).await.unwrap(),
                bytes,
                "size {size} fast {fast}"
            );
            let mut streamed = Vec::new();
            inc.reader().read_to_end(&mut streamed).await.unwrap();
            assert_eq!(streamed, bytes);
            let saved = dir.0.join(format!("saved-{i}-{fast}"));
            inc.save_to(&saved).await.unwrap();
            assert_eq!(std::fs::read(&saved).unwrap(), bytes);
            std::fs::remove_file(&saved).unwrap();
            if size == 300_000 {
                assert_eq!(
                    out.fast_path(),
                    fast,
                    "the fast path is used exactly when offered"
                );
            }
        }
    }
    // Every temporary file goes with its session.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(dir.files(), 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_goes_through_disk_on_the_fast_path() {
    let dir = Dir::new("big");
    let src = dir.0.join("source.bin");
    let bytes = data(64 << 20, 7);
    std::fs::write(&src, &bytes).unwrap();
    let recv_dir = Dir::new("big-recv");
    let files = FileConfig {
        temp_dir: Some(recv_dir.0.clone()),
        ..FileConfig::default()
    };
    let mut p = pair(MemoryConfig::default(), files).await;
    let t = Instant::now();
    let out =
        p.a.send_file(
            &p.b_id,
            FileSource::path(&src),
            FileOptions {
                hash_upfront: true,
                ..opts(true)
            },
        )
        .await
        .unwrap();
    assert_eq!(out.name(), "source.bin");
    let inc = incoming(&mut p.b).await;
    // The bytes land in a temporary file in the configured directory while they arrive.
    assert_eq!(recv_dir.files(), 1);
    within("64 MiB arrive", inc.wait_until_complete())
        .await
        .unwrap();
    within("sender confirmed", out.wait_until_complete())
        .await
        .unwrap();
    println!("64 MiB over memory links (debug build): {:?}", t.elapsed());
    assert!(out.fast_path());
    let saved = dir.0.join("saved.bin");
    inc.save_to(&saved).await.unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&saved).unwrap()),
        sha256_hex(&bytes)
    );
    assert_eq!(inc.bytes(), 64 << 20);
    drop(inc);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        recv_dir.files(),
        0,
        "the temporary file goes with the session"
    );
    p.stop().await;
}

/// A slow link, so transfers are still running when the test acts.
fn slow() -> MemoryConfig {
    MemoryConfig {
        bandwidth: Some(2_000_000),
        capacity: 16,
        ..MemoryConfig::default()
    }
}

async fn wait_bytes(s: &FileSession, at_least: u64) {
    within("progress", async {
        while s.bytes() < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_on_either_side() {
    let files = FileConfig {
        fast_window: 256 << 10,
        ..FileConfig::default()
    };
    let mut p = pair(slow(), files).await;
    for fast in [false, true] {
        let bytes = data(3 << 20, 3);
        let out =
            p.a.send_file(&p.b_id, FileSource::bytes(bytes.clone()), opts(fast))
                .await
                .unwrap();
        let inc = incoming(&mut p.b).await;
        let mut events = out.events();

        // The sender pauses: the bytes sent stop growing.
        wait_bytes(&out, 256 << 10).await;
        out.pause();
        assert_eq!(out.status(), FileStatus::Paused);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let frozen = out.bytes();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(out.bytes(), frozen, "a paused sender sends nothing");
        out.resume().await;
        let mut seen = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
            seen.push(e);
        }
        assert!(
            seen.contains(&ghostmesh::file::FileEvent::Paused),
            "{seen:?}"
        );
        assert!(
            seen.contains(&ghostmesh::file::FileEvent::Resumed),
            "{seen:?}"
        );

        if fast {
            // The receiver pauses: it stops acknowledging, so the sender stops within its
            // window.
            wait_bytes(&inc, frozen + (256 << 10)).await;
            inc.pause();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let held = out.bytes();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(out.bytes(), held, "the sender waits for a paused receiver");
            assert!(held < bytes.len() as u64);
            inc.resume().await;
        }
        within("completes after resume", inc.wait_until_complete())
            .await
            .unwrap();
        out.wait_until_complete().await.unwrap();
        assert_eq!(inc.read_range(0, bytes.len() as u64).await.unwrap(), bytes);
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_either_side_ends_both_and_frees_the_file() {
    let dir = Dir::new("cancel");
    // A small window keeps the sender from running ahead into the link buffers, so the
    // transfer is still going when either side cancels.
    let files = FileConfig {
        temp_dir: Some(dir.0.clone()),
        fast_window: 256 << 10,
        ..FileConfig::default()
    };
    let mut p = pair(slow(), files).await;
    for sender_cancels in [true, false] {
        let out =
            p.a.send_file(&p.b_id, FileSource::bytes(data(4 << 20, 4)), opts(true))
                .await
                .unwrap();
        let inc = incoming(&mut p.b).await;
        wait_bytes(&inc, 100_000).await;
        let (me, them) = if sender_cancels {
            (&out, &inc)
        } else {
            (&inc, &out)
        };
        me.cancel("changed my mind").await;
        assert!(me.canceled());
        let err = within("the other side sees the cancel", them.wait_until_complete())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            FileError::Canceled {
                reason: "changed my mind".into(),
                by_peer: true
            }
        );
        assert!(them.canceled());
        assert_eq!(
            me.error(),
            Some(FileError::Canceled {
                reason: "changed my mind".into(),
                by_peer: false
            })
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dir.files(), 0, "a canceled transfer's file is gone at once");
    }
    let stats = p.b.handle().file_stats().await.unwrap();
    assert_eq!((stats.incoming, stats.outgoing), (0, 0));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_streams_are_readable_before_completion() {
    let mut p = pair(slow(), FileConfig::default()).await;
    let size = 4usize << 20;
    let bytes = data(size, 5);
    // GhostMesh format: the far range is asked for with file-range-request and served
    // ahead of the queued chunks.
    let out =
        p.a.send_file(&p.b_id, FileSource::bytes(bytes.clone()), opts(false))
            .await
            .unwrap();
    let inc = incoming(&mut p.b).await;
    let far = (3 << 20) as u64;
    let got = within("a far range", inc.read_range(far, far + 5000))
        .await
        .unwrap();
    assert_eq!(got, bytes[far as usize..far as usize + 5000]);
    assert_ne!(inc.status(), FileStatus::Complete);
    assert!(
        inc.bytes() < size as u64 / 2,
        "the range came before the sequential flow: {}",
        inc.bytes()
    );

    // A stream yields the first bytes before the transfer completes.
    let mut reader = inc.reader();
    let mut first = vec![0u8; 1000];
    within("stream start", reader.read_exact(&mut first))
        .await
        .unwrap();
    assert_eq!(first, bytes[..1000]);
    assert_ne!(inc.status(), FileStatus::Complete);
    let mut rest = Vec::new();
    within("stream rest", reader.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(rest, bytes[1000..]);
    inc.wait_until_complete().await.unwrap();
    out.wait_until_complete().await.unwrap();
    // Outgoing sessions read their own source.
    assert_eq!(out.read_range(10, 20).await.unwrap(), bytes[10..20]);
    p.stop().await;
}

// ── A raw peer speaking GhostMesh's file packets ─────────────────────────────────────────

fn frames(v: &Value, id: i64) -> Vec<Frame> {
    encode_chunks(&MsgId::Int(id), &Payload::Json(v.clone()), 16_000)
        .into_iter()
        .map(Frame::Text)
        .collect()
}

async fn send_packet(raw: &dyn Link, v: Value) {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(100_000);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for f in frames(&v, id) {
        raw.send(f).await.unwrap();
    }
}

/// Reads GhostMesh packets off the raw link until `pick` takes one (bounded).
async fn recv_packet<T>(
    raw: &dyn Link,
    r: &mut Reassembler<u8>,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> T {
    within("a packet from the mesh", async {
        loop {
            match raw.recv().await {
                Some(Frame::Text(t)) => {
                    if let Ok(Received::Complete(m)) = r.push(&0, &t, Instant::now()) {
                        if let Payload::Json(v) = m.payload {
                            if let Some(x) = pick(&v) {
                                return x;
                            }
                        }
                    }
                }
                // A Rust peer's hello (capabilities): JavaScript peers ignore such frames.
                Some(Frame::Binary(b))
                    if b.starts_with(&ghostmesh::relay::layered::HELLO_MAGIC) => {}
                Some(Frame::Binary(_)) => {
                    panic!("a GhostMesh peer must never get file or onion binary frames")
                }
                None => panic!("raw link closed"),
            }
        }
    })
    .await
}

fn offer(id: &str, size: usize, chunk: usize, hash: Option<String>) -> Value {
    let mut v = json!({
        "__ghostmeshInternal": "file-offer", "transferId": id, "name": format!("{id}.bin"),
        "mimeType": "application/octet-stream", "size": size, "chunkSize": chunk,
        "totalChunks": size.div_ceil(chunk).max(1),
    });
    if let Some(h) = hash {
        v["sha256"] = h.into();
    }
    v
}

fn chunk(id: &str, index: usize, offset: usize, d: &[u8]) -> Value {
    use base64::Engine as _;
    json!({"__ghostmeshInternal": "file-chunk", "transferId": id, "chunkIndex": index,
           "offset": offset, "data": base64::engine::general_purpose::STANDARD.encode(d)})
}

fn end(id: &str) -> Value {
    json!({"__ghostmeshInternal": "file-end", "transferId": id})
}

async fn raw_setup(files: FileConfig) -> (Tracker, Mesh, Box<dyn Link>, String) {
    raw_setup_with(files, MemoryConfig::default()).await
}

async fn raw_setup_with(
    files: FileConfig,
    link: MemoryConfig,
) -> (Tracker, Mesh, Box<dyn Link>, String) {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(link);
    let mut a = Mesh::builder(vec![url.clone()], SWARM)
        .connector(net.connector("a"))
        .file_config(files)
        .seed(9)
        .start()
        .await
        .unwrap();
    wait_for(&mut a, "TrackerConnected", |e| {
        matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
    })
    .await;
    let raw = raw_peer(&url, &net, SWARM).await;
    let raw_id = wait_for(&mut a, "A meets the raw peer", connected("A")).await;
    (tracker, a, raw, raw_id)
}

async fn warning(a: &mut Mesh) -> String {
    wait_for(a, "a peer warning", |e| match e {
        MeshEvent::PeerWarning { message, .. } => Some(message),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghostmesh_packets_in_and_bad_input_ends_sessions_cleanly() {
    let dir = Dir::new("raw");
    let files = FileConfig {
        temp_dir: Some(dir.0.clone()),
        max_file_size: 1 << 20,
        idle_timeout: Duration::from_millis(400),
        ..FileConfig::default()
    };
    let (tracker, mut a, raw, _raw_id) = raw_setup(files).await;
    let raw = raw.as_ref();
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());

    // A GhostMesh transfer with a GhostMesh range reply (one chunk at an unaligned offset
    // spanning several chunks) in the middle: stored once, complete, exact.
    let d = data(5 * 1024 + 77, 10);
    send_packet(raw, offer("aaaa000000000001", d.len(), 1024, None)).await;
    let inc = incoming(&mut a).await;
    for (i, c) in d.chunks(1024).enumerate().take(3) {
        send_packet(raw, chunk("aaaa000000000001", i, i * 1024, c)).await;
    }
    send_packet(
        raw,
        chunk("aaaa000000000001", 1, 1500, &d[1500..1500 + 2048]),
    )
    .await;
    for (i, c) in d.chunks(1024).enumerate().skip(3) {
        send_packet(raw, chunk("aaaa000000000001", i, i * 1024, c)).await;
    }
    send_packet(raw, end("aaaa000000000001")).await;
    within("GhostMesh transfer completes", inc.wait_until_complete())
        .await
        .unwrap();
    assert_eq!(inc.bytes(), d.len() as u64);
    assert_eq!(inc.read_range(0, d.len() as u64).await.unwrap(), d);

    // A corrupted chunk: the hash in the offer catches it.
    let good = data(3000, 11);
    let mut bad = good.clone();
    bad[1234] ^= 0xff;
    send_packet(
        raw,
        offer("aaaa000000000002", 3000, 1024, Some(sha256_hex(&good))),
    )
    .await;
    let inc = incoming(&mut a).await;
    for (i, c) in bad.chunks(1024).enumerate() {
        send_packet(raw, chunk("aaaa000000000002", i, i * 1024, c)).await;
    }
    send_packet(raw, end("aaaa000000000002")).await;
    let err = within("hash check", inc.wait_until_complete())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FileError::Integrity(m) if m.contains("SHA-256 mismatch")),
        "{err}"
    );

    // A chunk past the size fails the transfer, and the sender is told.
    send_packet(raw, offer("aaaa000000000003", 2000, 1024, None)).await;
    let inc = incoming(&mut a).await;
    send_packet(raw, chunk("aaaa000000000003", 1, 1024, &[0; 1000])).await;
    let err = within("offset check", inc.wait_until_complete())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FileError::Protocol(m) if m.contains("past the size")),
        "{err}"
    );
    let reason = recv_packet(raw, &mut r, |v| {
        (v["__ghostmeshInternal"] == "file-cancel" && v["transferId"] == "aaaa000000000003")
            .then(|| v["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(reason.contains("past the size"), "{reason}");

    // file-end with bytes missing is an integrity error, not a silent "complete".
    send_packet(raw, offer("aaaa000000000004", 2048, 1024, None)).await;
    let inc = incoming(&mut a).await;
    send_packet(raw, chunk("aaaa000000000004", 0, 0, &[1; 1024])).await;
    send_packet(raw, end("aaaa000000000004")).await;
    let err = within("completeness check", inc.wait_until_complete())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FileError::Integrity(m) if m.contains("1024 bytes missing")),
        "{err}"
    );

    // Too large: refused with a file-cancel the GhostMesh sender understands.
    send_packet(raw, offer("aaaa000000000005", 2 << 20, 12288, None)).await;
    let reason = recv_packet(raw, &mut r, |v| {
        (v["__ghostmeshInternal"] == "file-cancel" && v["transferId"] == "aaaa000000000005")
            .then(|| v["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(reason.contains("limit"), "{reason}");
    let w = warning(&mut a).await;
    assert!(w.contains("file offer refused"), "{w}");

    // A chunk for a transfer nobody offered: a warning, counted.
    send_packet(raw, chunk("ffff000000000000", 0, 0, b"x")).await;
    let w = warning(&mut a).await;
    assert!(w.contains("unknown transfer"), "{w}");

    // A sender that goes silent: the idle timeout ends it and frees the file.
    send_packet(raw, offer("aaaa000000000006", 5000, 1024, None)).await;
    let inc = incoming(&mut a).await;
    send_packet(raw, chunk("aaaa000000000006", 0, 0, &[2; 1024])).await;
    let err = within("idle timeout", inc.wait_until_complete())
        .await
        .unwrap_err();
    assert_eq!(err, FileError::Timeout);

    let stats = a.handle().file_stats().await.unwrap();
    assert!(
        stats.unknown_transfer >= 1 && stats.refused_offers >= 1,
        "{stats:?}"
    );
    assert_eq!((stats.incoming, stats.outgoing), (0, 0), "{stats:?}");
    drop(inc);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Only the completed transfer's file is still held (its session is alive in this test).
    assert!(dir.files() <= 1, "{} files left", dir.files());
    a.stop().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghostmesh_receiver_gets_ghostmesh_packets_only() {
    let (tracker, a, raw, raw_id) = raw_setup(FileConfig::default()).await;
    let raw = raw.as_ref();
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());
    let d = data(2 * 12_288 + 100, 12);
    let out = a
        .send_file(
            &raw_id,
            FileSource::bytes(d.clone()),
            FileOptions {
                metadata: Some(json!({"m": 1})),
                ..FileOptions::default()
            },
        )
        .await
        .unwrap();
    let offer = recv_packet(raw, &mut r, |v| Some(v.clone())).await;
    let text = offer.to_string();
    assert!(
        text.starts_with(&format!(r#"{{"__ghostmeshInternal":"file-offer","transferId":"{}","name":"ghostmesh-{}","mimeType":"application/octet-stream","size":24676,"chunkSize":12288,"totalChunks":3,"metadata":{{"m":1}}"#, out.transfer_id(), out.transfer_id())),
        "{text}"
    );
    let mut got = vec![0u8; d.len()];
    for i in 0..3 {
        let v = recv_packet(raw, &mut r, |v| Some(v.clone())).await;
        assert_eq!(v["__ghostmeshInternal"], "file-chunk", "{v}");
        assert_eq!(
            (v["chunkIndex"].as_u64(), v["offset"].as_u64()),
            (Some(i), Some(i * 12_288))
        );
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        got[i as usize * 12_288..i as usize * 12_288 + bytes.len()].copy_from_slice(&bytes);
    }
    assert_eq!(got, d);
    let v = recv_packet(raw, &mut r, |v| Some(v.clone())).await;
    assert_eq!(v["__ghostmeshInternal"], "file-end");
    assert_eq!(v["sha256"], sha256_hex(&d).as_str());
    within(
        "sent is complete toward GhostMesh",
        out.wait_until_complete(),
    )
    .await
    .unwrap();
    assert!(!out.fast_path());
    drop(a);
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_real_webrtc_in_both_formats() {
    use ghostmesh::transport::webrtc::WebRtcConfig;
    let tracker = start_tracker("127.0.0.1:0").await;
    let urls = vec![tracker.ws_url()];
    let start = |seed: u64| {
        Mesh::builder(urls.clone(), "file-transfer-webrtc")
            .webrtc(WebRtcConfig::bound_to("127.0.0.1:0"))
            .seed(seed)
            .start()
    };
    let mut a = start(21).await.unwrap();
    let mut b = start(22).await.unwrap();
    let b_id = wait_for(&mut a, "A meets B", connected("A")).await;
    wait_for(&mut b, "B meets A", connected("B")).await;
    for fast in [false, true] {
        for size in [0usize, 1, 12_287, 12_288, 12_289, 3 << 20] {
            let d = data(size, 13 + size as u64);
            let out = a
                .send_file(&b_id, FileSource::bytes(d.clone()), opts(fast))
                .await
                .unwrap();
            let inc = incoming(&mut b).await;
            within("webrtc transfer", inc.wait_until_complete())
                .await
                .unwrap();
            within("sender done", out.wait_until_complete())
                .await
                .unwrap();
            if size == 3 << 20 {
                assert_eq!(out.fast_path(), fast);
            }
            let got = inc.read_range(0, d.len() as u64).await.unwrap();
            assert_eq!(sha256_hex(&got), sha256_hex(&d), "size {size} fast {fast}");
        }
    }
    a.stop().await;
    b.stop().await;
    tracker.shutdown().await;
}
