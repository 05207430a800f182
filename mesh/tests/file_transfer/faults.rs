//! Failure paths: a hash check failing on the fast path (either hash) cancels the sender; an
//! outgoing transfer whose receiver goes silent times out (paused ones do not); a
//! range-request flood stays under the outbox cap; GhostMesh range requests are served, and
//! our range request, cancel and end are byte-exact; stream sources and chunk sizes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ghostmesh::file::packet::FAST_MAGIC;

use super::*;

// ── A man in the middle between two meshes, tampering with A's frames to B ─────────────────

#[derive(Debug, Clone, Copy)]
enum Tamper {
    None,
    /// Flip the last byte of the `n`th fast-path frame (counting from 1).
    Corrupt(usize),
    /// The same, and deliver that frame after the next one (out of order, so the receiver
    /// hashes from its file instead of on arrival).
    CorruptLate(usize),
    /// Change one hex digit of the SHA-256 in `file-end` (the data stays intact).
    EndHash,
}

#[derive(Debug)]
struct TamperState {
    mode: Tamper,
    fast_frames: usize,
    held: Option<Frame>,
}

fn tamper(state: &Mutex<TamperState>, frame: Frame) -> Vec<Frame> {
    let mut st = state.lock().unwrap();
    if let Some(held) = st.held.take() {
        return vec![frame, held];
    }
    match (st.mode, frame) {
        (Tamper::Corrupt(n) | Tamper::CorruptLate(n), Frame::Binary(mut b))
            if b.starts_with(&FAST_MAGIC) =>
        {
            st.fast_frames += 1;
            if st.fast_frames == n {
                let last = b.len() - 1;
                b[last] ^= 0xff;
                if matches!(st.mode, Tamper::CorruptLate(_)) {
                    st.held = Some(Frame::Binary(b));
                    return Vec::new();
                }
            }
            vec![Frame::Binary(b)]
        }
        (Tamper::EndHash, Frame::Text(t)) if t.contains("file-end") => {
            let key = r#"sha256\":\""#;
            let at = t
                .find(key)
                .expect("file-end from a Rust sender carries sha256")
                + key.len();
            let mut bytes = t.into_bytes();
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            vec![Frame::Text(String::from_utf8(bytes).unwrap())]
        }
        (_, frame) => vec![frame],
    }
}

async fn forward(
    from: Arc<dyn Link>,
    to: Arc<dyn Link>,
    mut f: impl FnMut(Frame) -> Vec<Frame> + Send + 'static,
) {
    while let Some(frame) = from.recv().await {
        for out in f(frame) {
            if to.send(out).await.is_err() {
                return;
            }
        }
    }
    to.close().await;
}

struct Mitm {
    tracker: Tracker,
    a: Mesh,
    b: Mesh,
    /// The peer A sends to: the middle, which passes everything on to B.
    b_id: String,
    tamper: Arc<Mutex<TamperState>>,
}

/// A and B in different swarms; two raw peers, one meeting each, forward frames between them.
async fn mitm(files: FileConfig) -> Mitm {
    let tracker = start_tracker("127.0.0.1:0").await;
    let url = tracker.ws_url();
    let net = MemoryNetwork::new(MemoryConfig::default());
    let start = |name: &str, swarm: &str, seed: u64| {
        Mesh::builder(vec![url.clone()], swarm)
            .connector(net.connector(name))
            .file_config(files.clone())
            .seed(seed)
            .start()
    };
    let mut a = start("a", "ft-mitm-a", 31).await.unwrap();
    let mut b = start("b", "ft-mitm-b", 32).await.unwrap();
    for m in [&mut a, &mut b] {
        wait_for(m, "TrackerConnected", |e| {
            matches!(e, MeshEvent::TrackerConnected { .. }).then_some(())
        })
        .await;
    }
    let to_a: Arc<dyn Link> = raw_peer(&url, &net, "ft-mitm-a").await.into();
    let b_id = wait_for(&mut a, "A meets the middle", connected("A")).await;
    let to_b: Arc<dyn Link> = raw_peer(&url, &net, "ft-mitm-b").await.into();
    wait_for(&mut b, "B meets the middle", connected("B")).await;
    let state = Arc::new(Mutex::new(TamperState {
        mode: Tamper::None,
        fast_frames: 0,
        held: None,
    }));
    let st = state.clone();
    tokio::spawn(forward(to_a.clone(), to_b.clone(), move |f| tamper(&st, f)));
    tokio::spawn(forward(to_b, to_a, |f| vec![f]));
    Mitm {
        tracker,
        a,
        b,
        b_id,
        tamper: state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hash_check_cancels_the_fast_path_sender_and_frees_both_sides() {
    let dir = Dir::new("mitm");
    let files = FileConfig {
        temp_dir: Some(dir.0.clone()),
        ..FileConfig::default()
    };
    let mut m = mitm(files).await;
    let cases = [
        (
            "corrupted fast frame, hash in file-end (the default)",
            Tamper::Corrupt(2),
            false,
        ),
        (
            "corrupted fast frame, hash in the offer",
            Tamper::Corrupt(2),
            true,
        ),
        (
            "corrupted fast frame out of order (hashed from the file)",
            Tamper::CorruptLate(2),
            false,
        ),
        (
            "intact data, wrong hash in file-end",
            Tamper::EndHash,
            false,
        ),
    ];
    for (i, (what, mode, upfront)) in cases.into_iter().enumerate() {
        *m.tamper.lock().unwrap() = TamperState {
            mode,
            fast_frames: 0,
            held: None,
        };
        let options = FileOptions {
            hash_upfront: upfront,
            ..opts(true)
        };
        let out =
            m.a.send_file(
                &m.b_id,
                FileSource::bytes(data(4 << 20, 40 + i as u64)),
                options,
            )
            .await
            .unwrap();
        let inc = incoming(&mut m.b).await;
        let err = within(what, inc.wait_until_complete()).await.unwrap_err();
        assert!(
            matches!(&err, FileError::Integrity(e) if e.contains("SHA-256 mismatch")),
            "{what}: {err}"
        );
        // The sender waited for the final ack forever before the receiver sent file-cancel.
        let err = within(what, out.wait_until_complete()).await.unwrap_err();
        match &err {
            FileError::Canceled {
                reason,
                by_peer: true,
            } => {
                assert!(
                    reason.contains("integrity: SHA-256 mismatch"),
                    "{what}: {reason}"
                )
            }
            other => panic!("{what}: {other}"),
        }
        assert!(out.fast_path(), "{what}");
        assert_eq!(
            (out.status(), inc.status()),
            (FileStatus::Canceled, FileStatus::Failed)
        );
        let (sa, sb) = (
            m.a.handle().file_stats().await.unwrap(),
            m.b.handle().file_stats().await.unwrap(),
        );
        assert_eq!(
            (sa.outgoing, sa.incoming, sb.outgoing, sb.incoming),
            (0, 0, 0, 0),
            "{what}: {sa:?} {sb:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(dir.files(), 0, "failed transfers leave no temporary file");
    m.a.stop().await;
    m.b.stop().await;
    m.tracker.shutdown().await;
}

// ── Outgoing idle timeout ────────────────────────────────────────────────────────────────

/// Like `recv_packet`, but skips binary frames (fast-path chunks, for a raw peer posing as a
/// Rust receiver).
async fn recv_any<T>(
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
                Some(Frame::Binary(_)) => {}
                None => panic!("raw link closed"),
            }
        }
    })
    .await
}

fn cancel_reason(id: &str) -> impl FnMut(&Value) -> Option<String> + '_ {
    move |v| {
        (v["__ghostmeshInternal"] == "file-cancel" && v["transferId"] == id)
            .then(|| v["reason"].as_str().unwrap_or_default().to_owned())
    }
}

/// A link that holds few frames, so a peer that stops reading stalls the sender at once.
fn narrow() -> MemoryConfig {
    MemoryConfig {
        capacity: 16,
        ..MemoryConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_transfer_times_out_when_its_receiver_goes_silent() {
    let idle = Duration::from_millis(800);
    let files = FileConfig {
        idle_timeout: idle,
        ..FileConfig::default()
    };
    let (tracker, a, raw, raw_id) = raw_setup_with(files, narrow()).await;
    let raw = raw.as_ref();
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());

    // A "Rust receiver" that accepts the fast path, keeps reading, and never acknowledges.
    let out = a
        .send_file(&raw_id, FileSource::bytes(data(8 << 20, 50)), opts(true))
        .await
        .unwrap();
    let id = out.transfer_id().to_owned();
    recv_any(raw, &mut r, |v| {
        (v["__ghostmeshInternal"] == "file-offer" && v["fast"] == 1).then_some(())
    })
    .await;
    let accept = json!({"__ghostmeshInternal": "file-accept", "transferId": id, "fast": 1, "window": 256 << 10});
    send_packet(raw, accept).await;
    let t = Instant::now();
    let reason = recv_any(raw, &mut r, cancel_reason(&id)).await;
    assert!(reason.contains("timed out"), "{reason}");
    assert!(
        t.elapsed() >= idle,
        "not before the idle timeout: {:?}",
        t.elapsed()
    );
    assert_eq!(
        within("the sender ends", out.wait_until_complete())
            .await
            .unwrap_err(),
        FileError::Timeout
    );
    assert!(out.fast_path() && out.bytes() < 8 << 20);

    // A GhostMesh receiver that stops reading: the chunks wait for room, then time out.
    let out = a
        .send_file(&raw_id, FileSource::bytes(data(8 << 20, 51)), opts(false))
        .await
        .unwrap();
    let err = within("the sender times out", out.wait_until_complete())
        .await
        .unwrap_err();
    assert_eq!(err, FileError::Timeout);
    assert!(!out.fast_path() && out.bytes() < 8 << 20);
    // The cancel is queued ahead of the chunks; the receiver sees it once it reads again.
    let reason = recv_any(raw, &mut r, cancel_reason(out.transfer_id())).await;
    assert!(reason.contains("timed out"), "{reason}");

    let stats = a.handle().file_stats().await.unwrap();
    assert_eq!(
        (stats.outgoing, stats.outgoing_timeouts),
        (0, 2),
        "{stats:?}"
    );
    drop(a);
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_transfers_outlive_the_idle_timeout() {
    let idle = Duration::from_millis(800);
    let files = FileConfig {
        idle_timeout: idle,
        fast_window: 256 << 10,
        ..FileConfig::default()
    };
    let size = 2 << 20;
    // The sender pauses. (Pause is local in GhostMesh's format, so the receiver keeps a
    // longer timeout here: a paused sender still ends at the receiver's idle timeout.)
    let receiver = FileConfig {
        fast_window: 256 << 10,
        ..FileConfig::default()
    };
    let mut p = pair_with(slow(), files.clone(), receiver).await;
    for fast in [false, true] {
        let bytes = data(size, 61);
        let out =
            p.a.send_file(&p.b_id, FileSource::bytes(bytes.clone()), opts(fast))
                .await
                .unwrap();
        let inc = incoming(&mut p.b).await;
        wait_bytes(&out, 256 << 10).await;
        out.pause();
        tokio::time::sleep(idle * 3).await;
        assert_eq!(out.status(), FileStatus::Paused, "fast {fast}");
        out.resume().await;
        within("completes after resume", inc.wait_until_complete())
            .await
            .unwrap();
        within("sender completes", out.wait_until_complete())
            .await
            .unwrap();
        assert_eq!(inc.read_range(0, size as u64).await.unwrap(), bytes);
    }
    p.stop().await;

    // The receiver pauses: it stops acknowledging (so the sender stops), but its keep-alive
    // acks hold off the sender's idle timeout.
    let mut p = pair(slow(), files).await;
    let bytes = data(size, 62);
    let out =
        p.a.send_file(&p.b_id, FileSource::bytes(bytes.clone()), opts(true))
            .await
            .unwrap();
    let inc = incoming(&mut p.b).await;
    wait_bytes(&inc, 256 << 10).await;
    inc.pause();
    tokio::time::sleep(idle * 3).await;
    assert_eq!(
        (out.status(), inc.status()),
        (FileStatus::Active, FileStatus::Paused)
    );
    assert!(out.fast_path() && out.bytes() < size as u64);
    inc.resume().await;
    within("completes after resume", inc.wait_until_complete())
        .await
        .unwrap();
    within("sender completes", out.wait_until_complete())
        .await
        .unwrap();
    assert_eq!(inc.read_range(0, size as u64).await.unwrap(), bytes);
    let stats = p.a.handle().file_stats().await.unwrap();
    assert_eq!(stats.outgoing_timeouts, 0);
    p.stop().await;
}

// ── Outbox cap ───────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_request_flood_stays_under_the_outbox_cap() {
    let cap = 1usize << 20;
    let files = FileConfig {
        max_outbox_bytes: cap,
        ..FileConfig::default()
    };
    let (tracker, a, raw, raw_id) = raw_setup_with(files, narrow()).await;
    let raw = raw.as_ref();
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());
    let size = 4usize << 20;
    let d = data(size, 70);
    let out = a
        .send_file(&raw_id, FileSource::bytes(d.clone()), opts(false))
        .await
        .unwrap();
    let id = out.transfer_id().to_owned();
    recv_packet(raw, &mut r, |v| {
        (v["__ghostmeshInternal"] == "file-offer").then_some(())
    })
    .await;

    // The peer stops reading and asks for 8 chunks (about 128 KiB of base64 each) 2000 times:
    // 256 MB if every reply were queued.
    let handle = a.handle();
    let flood = 2000u64;
    let mut most = 0;
    let starts: Vec<u64> = (0..flood)
        .map(|i| (i * 4099 + 1) % (size as u64 - 1000))
        .collect();
    for (i, start) in starts.iter().enumerate() {
        let ask = json!({"__ghostmeshInternal": "file-range-request", "transferId": id, "start": start, "end": start + 8 * 12_288});
        send_packet(raw, ask).await;
        if i % 50 == 0 {
            let s = handle.file_stats().await.unwrap();
            assert!(s.queued_bytes <= cap, "{s:?}");
            most = most.max(s.queued_bytes);
        }
    }
    let stats = within("the flood is handled", async {
        loop {
            let s = handle.file_stats().await.unwrap();
            assert!(s.queued_bytes <= cap, "{s:?}");
            most = most.max(s.queued_bytes);
            if s.range_replies_dropped >= flood - 20 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        most >= cap / 2,
        "the outbox really filled: {most} bytes at most"
    );
    assert_eq!(stats.outgoing, 1, "{stats:?}");

    // It reads again: the replies that were queued are right, and the transfer still ends.
    let mut replies = 0;
    recv_packet(raw, &mut r, |v| {
        if v["__ghostmeshInternal"] == "file-chunk" {
            let offset = v["offset"].as_u64().unwrap_or_default();
            if offset % 12_288 != 0 {
                use base64::Engine as _;
                let got = base64::engine::general_purpose::STANDARD
                    .decode(v["data"].as_str().unwrap())
                    .unwrap();
                let o = offset as usize;
                assert_eq!(got, d[o..(o + 8 * 12_288).min(size)]);
                replies += 1;
            }
        }
        (v["__ghostmeshInternal"] == "file-end").then_some(())
    })
    .await;
    assert!(
        (1..=20).contains(&replies),
        "{replies} range replies served"
    );
    within("the sender completes", out.wait_until_complete())
        .await
        .unwrap();
    drop(a);
    tracker.shutdown().await;
}

// ── GhostMesh's range requests served; our control packets byte for byte ──────────────

/// The next raw text frame containing `needle`, skipping others (binary hello included).
async fn raw_frame_with(raw: &dyn Link, needle: &str) -> String {
    within(needle, async {
        loop {
            match raw.recv().await {
                Some(Frame::Text(t)) if t.contains(needle) => return t,
                Some(_) => {}
                None => panic!("raw link closed"),
            }
        }
    })
    .await
}

/// `packet` as GhostMesh sends it one way: `^{"id":<P2PT id>,"msg":<packet>,"o":1,"c":0,"last":true}`.
fn assert_one_way(frame: &str, packet: &str) {
    let envelope: Value = serde_json::from_str(frame.strip_prefix('^').unwrap()).unwrap();
    let id = envelope["id"].as_i64().unwrap();
    assert!(
        (100_000..=199_999).contains(&id),
        "P2PT ids are 100000..=199999: {id}"
    );
    let msg = serde_json::to_string(packet).unwrap();
    assert_eq!(
        frame,
        format!(r#"^{{"id":{id},"msg":{msg},"o":1,"c":0,"last":true}}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghostmesh_range_requests_are_served_and_our_control_packets_are_byte_exact() {
    let (tracker, mut a, raw, raw_id) = raw_setup_with(FileConfig::default(), narrow()).await;
    let raw = raw.as_ref();
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());

    // A GhostMesh receiver streams from offsets: one file-chunk at offset = start,
    // chunkIndex = floor(start / chunkSize), up to 8 chunks, clipped to the size.
    let size = 4usize << 20;
    let d = data(size, 80);
    let out = a
        .send_file(&raw_id, FileSource::bytes(d.clone()), opts(false))
        .await
        .unwrap();
    let id = out.transfer_id().to_owned();
    recv_packet(raw, &mut r, |v| {
        (v["__ghostmeshInternal"] == "file-offer").then_some(())
    })
    .await;
    let asks = [
        (100_000, 100_000 + 3 * 12_288, 100_000 + 3 * 12_288),
        (1_000_001, size, 1_000_001 + 8 * 12_288),
        (size - 100, size + 50_000, size),
    ];
    for (start, end, _) in asks {
        let ask = json!({"__ghostmeshInternal": "file-range-request", "transferId": id, "start": start, "end": end});
        send_packet(raw, ask).await;
    }
    let mut got: HashMap<usize, Value> = HashMap::new();
    recv_packet(raw, &mut r, |v| {
        let offset = v["offset"].as_u64().unwrap_or_default() as usize;
        if v["__ghostmeshInternal"] == "file-chunk" && asks.iter().any(|a| a.0 == offset) {
            got.insert(offset, v.clone());
        }
        (got.len() == asks.len()).then_some(())
    })
    .await;
    for (start, _, served_end) in asks {
        let v = &got[&start];
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "__ghostmeshInternal",
                "transferId",
                "chunkIndex",
                "offset",
                "data"
            ]
        );
        assert_eq!(
            (v["transferId"].as_str(), v["chunkIndex"].as_u64()),
            (Some(id.as_str()), Some(start as u64 / 12_288))
        );
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, d[start..served_end], "range at {start}");
    }

    // file-end: GhostMesh's fields, then our hash.
    let end = raw_frame_with(raw, "file-end").await;
    let hash = sha256_hex(&d);
    assert_one_way(
        &end,
        &format!(r#"{{"__ghostmeshInternal":"file-end","transferId":"{id}","sha256":"{hash}"}}"#),
    );
    within("sent", out.wait_until_complete()).await.unwrap();

    // Receiving from GhostMesh: a read ahead of the data asks with file-range-request...
    let tid = "bbbb000000000001";
    send_packet(raw, offer(tid, 100_000, 1024, None)).await;
    let inc = incoming(&mut a).await;
    let reader = inc.clone();
    let read = tokio::spawn(async move { reader.read_range(50_000, 51_000).await });
    let ask = raw_frame_with(raw, "file-range-request").await;
    assert_one_way(
        &ask,
        &format!(
            r#"{{"__ghostmeshInternal":"file-range-request","transferId":"{tid}","start":50000,"end":51000}}"#
        ),
    );
    // ... which GhostMesh answers with one chunk at offset = start.
    let part = data(1000, 81);
    send_packet(raw, chunk(tid, 48, 50_000, &part)).await;
    assert_eq!(
        within("the range arrives", read).await.unwrap().unwrap(),
        part
    );
    // file-cancel with the reason.
    inc.cancel("Transfer canceled").await;
    let cancel = raw_frame_with(raw, "file-cancel").await;
    assert_one_way(
        &cancel,
        &format!(
            r#"{{"__ghostmeshInternal":"file-cancel","transferId":"{tid}","reason":"Transfer canceled"}}"#
        ),
    );
    a.stop().await;
    tracker.shutdown().await;
}

// ── Stream sources, chunk sizes ────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sources_and_non_default_chunk_sizes_round_trip() {
    let mut p = pair(MemoryConfig::default(), FileConfig::default()).await;
    for fast in [false, true] {
        for (size, asked) in [
            (0usize, 4096u64),
            (10_000, 4096),
            (3 * 4096, 4096),
            (300_001, 65_536),
            (5000, 100),
        ] {
            let d = data(size, 90 + size as u64);
            let source = FileSource::reader(std::io::Cursor::new(d.clone()), size as u64);
            // hash_upfront is ignored for a stream (it is read once): the hash goes in file-end.
            let options = FileOptions {
                chunk_size: asked,
                hash_upfront: true,
                ..opts(fast)
            };
            let out = p.a.send_file(&p.b_id, source, options).await.unwrap();
            let chunk = asked.max(1024);
            let total = (size as u64).div_ceil(chunk).max(1);
            assert_eq!(
                (out.size(), out.chunk_size(), out.total_chunks()),
                (size as u64, chunk, total)
            );
            let inc = incoming(&mut p.b).await;
            assert_eq!(
                (inc.size(), inc.chunk_size(), inc.total_chunks()),
                (size as u64, chunk, total)
            );
            within("stream received", inc.wait_until_complete())
                .await
                .unwrap();
            within("stream sent", out.wait_until_complete())
                .await
                .unwrap();
            assert_eq!(
                inc.read_range(0, size as u64).await.unwrap(),
                d,
                "size {size} chunk {chunk} fast {fast}"
            );
            if size > 0 {
                let again = out.read_range(0, 1).await.unwrap_err();
                assert!(matches!(again, FileError::Unavailable(_)), "{again}");
            }
        }
    }
    // A stream shorter than its declared size: the sender fails, and tells the receiver.
    let source = FileSource::reader(std::io::Cursor::new(vec![1u8; 1000]), 50_000);
    let out = p.a.send_file(&p.b_id, source, opts(true)).await.unwrap();
    let inc = incoming(&mut p.b).await;
    let err = within("sender fails", out.wait_until_complete())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FileError::Io(e) if e.contains("reading the source")),
        "{err}"
    );
    let err = within("receiver hears", inc.wait_until_complete())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FileError::Canceled { reason, by_peer: true } if reason.contains("reading the source")),
        "{err}"
    );
    let (sa, sb) = (
        p.a.handle().file_stats().await.unwrap(),
        p.b.handle().file_stats().await.unwrap(),
    );
    assert_eq!((sa.outgoing, sb.incoming), (0, 0));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_toward_ghostmesh_uses_the_chosen_chunk_size() {
    let (tracker, mut a, raw, raw_id) = raw_setup_with(FileConfig::default(), narrow()).await;
    let raw = raw.as_ref();
    let mut r = Reassembler::<u8>::new(ReassemblyLimits::default());
    let size = 4usize << 20;
    let d = data(size, 95);
    let options = FileOptions {
        chunk_size: 4096,
        ..FileOptions::default()
    };
    let out = a
        .send_file(
            &raw_id,
            FileSource::reader(std::io::Cursor::new(d.clone()), size as u64),
            options,
        )
        .await
        .unwrap();
    let id = out.transfer_id().to_owned();
    let offer = recv_packet(raw, &mut r, |v| {
        (v["__ghostmeshInternal"] == "file-offer").then(|| v.clone())
    })
    .await;
    assert_eq!(
        (offer["chunkSize"].as_u64(), offer["totalChunks"].as_u64()),
        (Some(4096), Some(1024))
    );
    // A stream cannot serve a range request: a warning, and the transfer goes on.
    let ask = json!({"__ghostmeshInternal": "file-range-request", "transferId": id, "start": 100_000, "end": 110_000});
    send_packet(raw, ask).await;
    let w = warning(&mut a).await;
    assert!(w.contains("streamed file"), "{w}");
    for i in 0..3u64 {
        let v = recv_packet(raw, &mut r, |v| {
            (v["__ghostmeshInternal"] == "file-chunk").then(|| v.clone())
        })
        .await;
        assert_eq!(
            (v["chunkIndex"].as_u64(), v["offset"].as_u64()),
            (Some(i), Some(i * 4096))
        );
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, d[i as usize * 4096..(i as usize + 1) * 4096]);
    }
    assert_eq!(out.status(), FileStatus::Active);
    a.stop().await;
    tracker.shutdown().await;
}
