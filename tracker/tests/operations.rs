//! Operating the tracker: health and stats endpoints, TLS with hot reload, X-Forwarded-For,
//! Origin checks, access lists, graceful shutdown, and the binary (signals, flags, config file,
//! healthcheck), over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ghostmesh_tracker::Config;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use support::{
    Client, WAIT, announce, assert_announce_reply, assert_error_reply, bin, hex, http_get, id,
    start, try_connect, wait_until,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("gm-ops-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces a file atomically (write beside it, then rename), so a watcher never reads half.
fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn close_code(c: &Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    u16::from(c.as_ref().expect("a close frame with a code").code)
}

/// Sends an announce on any WebSocket and returns the next JSON text message.
async fn ws_announce<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    info_hash: &str,
    peer_id: &str,
) -> Value {
    ws.send(Message::text(announce(info_hash, peer_id).to_string()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => {}
            other => panic!("no reply: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stats_json_and_metrics_reflect_the_swarm() {
    let t = start(|_| {}).await;
    let base = t.http_url();
    assert_eq!(
        http_get(&format!("{base}/health")).await,
        (200, "ok\n".into())
    );
    assert_eq!(http_get(&format!("{base}/nope")).await.0, 404);

    let ih = id(1);
    let mut seeder = Client::connect(&t.ws_url()).await;
    let mut m = announce(&ih, &bin(b's'));
    m["left"] = 0.into();
    seeder.send(&m).await;
    assert_announce_reply(&seeder.recv().await, &ih);
    let mut leecher = Client::connect(&t.ws_url()).await;
    let mut m = announce(&ih, &bin(b'l'));
    m["left"] = 1000.into();
    leecher.send(&m).await;
    assert_eq!(assert_announce_reply(&leecher.recv().await, &ih), (1, 1));

    let (status, body) = http_get(&format!("{base}/stats.json")).await;
    assert_eq!(status, 200, "{body}");
    let s: Value = serde_json::from_str(&body).expect("stats.json is JSON");
    assert_eq!(s["connections"], 2, "{s}");
    assert_eq!(s["swarms"], 1, "{s}");
    assert_eq!(s["peers"], 2, "{s}");
    assert_eq!(s["seeders"], 1, "{s}");
    assert_eq!(s["leechers"], 1, "{s}");
    for reason in [
        "offer_queue_full",
        "offer_evicted",
        "reply_queue_full",
        "recipient_gone",
    ] {
        assert_eq!(s["drops"][reason], 0, "{s}");
    }
    assert!(
        s["memory"]["rss_bytes"].as_u64().unwrap_or(0) > 1 << 20,
        "rss_bytes: {s}"
    );
    assert_eq!(s["requests"]["announce"], 2, "{s}");
    assert_eq!(s["top_swarms"][0]["info_hash"], hex(&ih), "{s}");
    assert_eq!(s["top_swarms"][0]["complete"], 1, "{s}");

    let (status, text) = http_get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE ghostmesh_tracker_peers gauge",
        "ghostmesh_tracker_peers 2",
        "ghostmesh_tracker_seeders 1",
        "ghostmesh_tracker_leechers 1",
        "ghostmesh_tracker_swarms 1",
        "ghostmesh_tracker_connections 2",
        "ghostmesh_tracker_requests_total{kind=\"announce\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "/metrics lacks {line:?}:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("ghostmesh_tracker_resident_memory_bytes ")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // A peer leaving shows at once.
    leecher.ws.close(None).await.unwrap();
    assert!(wait_until(WAIT, || t.snapshot().core.peers == 1).await);
    let (_, text) = http_get(&format!("{base}/metrics")).await;
    assert!(
        text.lines().any(|l| l == "ghostmesh_tracker_peers 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_moves_stats_off_the_main_listener() {
    let t = start(|c| c.metrics_listen = "127.0.0.1:0".into()).await;
    let metrics = t.metrics_addr().expect("metrics address");
    assert_ne!(metrics, t.local_addr());
    assert_eq!(t.http_url(), format!("http://{metrics}"));
    let main = format!("http://{}", t.local_addr());
    let side = format!("http://{metrics}");

    let mut c = Client::connect(&t.ws_url()).await;
    c.send(&announce(&id(1), &bin(b'a'))).await;
    c.recv().await;

    for base in [&main, &side] {
        assert_eq!(
            http_get(&format!("{base}/health")).await,
            (200, "ok\n".into())
        );
    }
    let (status, body) = http_get(&format!("{side}/stats.json")).await;
    assert_eq!(status, 200);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["peers"], 1, "{s}");
    let (status, text) = http_get(&format!("{side}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("ghostmesh_tracker_peers 1"), "{text}");

    assert_eq!(http_get(&format!("{main}/stats.json")).await.0, 404);
    assert_eq!(http_get(&format!("{main}/metrics")).await.0, 404);
    // The metrics listener does not take WebSocket clients.
    assert_eq!(
        try_connect(&format!("ws://{metrics}"), &[]).await.err(),
        Some(404)
    );
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A fresh self-signed certificate for "localhost": (cert PEM, key PEM, cert DER).
fn self_signed() -> (String, String, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().clone(),
    )
}

type TlsWs = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A TLS connection to `addr` as "localhost", trusting `roots`.
async fn tls_connect(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// Opens a wss:// connection to `addr` as "localhost", trusting `roots`; returns the socket and
/// the DER of the certificate the server presented.
async fn wss_connect(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
) -> Result<(TlsWs, Vec<u8>), String> {
    let fut = async {
        let tls = tls_connect(addr, roots).await?;
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let url = format!("wss://localhost:{}/announce", addr.port());
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .map_err(|e| format!("WebSocket: {e}"))?;
        Ok((ws, der))
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// GET over https:// (as "localhost"); returns (status, body).
async fn https_get(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    path: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(addr, roots).await.unwrap();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    // A peer that closes without close_notify is an error to rustls; what was read counts.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut buf)).await;
    support::parse_http_response(&buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_wss_and_reload_swaps_the_certificate_for_new_connections() {
    let dir = TempDir::new("tls-reload");
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    let (pem1, key1, der1) = self_signed();
    let (pem2, key2, der2) = self_signed();
    std::fs::write(&cert_path, &pem1).unwrap();
    std::fs::write(&key_path, &key1).unwrap();
    let t = start(|c| {
        c.tls_cert = cert_path.to_str().unwrap().into();
        c.tls_key = key_path.to_str().unwrap().into();
        c.reload_interval_secs = 0.0;
    })
    .await;
    assert!(t.ws_url().starts_with("wss://"), "{}", t.ws_url());
    let roots = [der1.clone(), der2.clone()];
    let ih = id(1);

    let (mut old, seen) = wss_connect(t.local_addr(), &roots).await.unwrap();
    assert_eq!(seen, der1.to_vec());
    assert_announce_reply(&ws_announce(&mut old, &ih, &bin(b'o')).await, &ih);
    // The HTTP endpoints are served over TLS on the same listener.
    assert!(t.http_url().starts_with("https://"), "{}", t.http_url());
    assert_eq!(
        https_get(t.local_addr(), &roots, "/health").await,
        (200, "ok\n".into())
    );
    let (status, body) = https_get(t.local_addr(), &roots, "/stats.json").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["peers"], 1, "{stats}");
    // Plain ws:// is not spoken on a TLS listener.
    assert!(
        try_connect(&format!("ws://{}", t.local_addr()), &[])
            .await
            .is_err()
    );

    // New files, explicit reload: new connections see the new certificate...
    replace_file(&cert_path, &pem2);
    replace_file(&key_path, &key2);
    let r = t.reload();
    assert!(matches!(r.tls, Some(Ok(true))), "{r:?}");
    let (mut new, seen) = wss_connect(t.local_addr(), &roots).await.unwrap();
    assert_eq!(
        seen,
        der2.to_vec(),
        "new connection still gets the old cert"
    );
    assert_eq!(
        assert_announce_reply(&ws_announce(&mut new, &ih, &bin(b'n')).await, &ih),
        (0, 2)
    );
    // ...and the open connection keeps working.
    assert_eq!(
        assert_announce_reply(&ws_announce(&mut old, &ih, &bin(b'o')).await, &ih),
        (0, 2)
    );
    // A client trusting only the old certificate is refused now.
    assert!(
        wss_connect(t.local_addr(), std::slice::from_ref(&der1))
            .await
            .unwrap_err()
            .contains("TLS")
    );

    // A broken file: the reload reports the error and the previous certificate stays.
    replace_file(&cert_path, "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let r = t.reload();
    assert!(matches!(r.tls, Some(Err(_))), "{r:?}");
    let (mut third, seen) = wss_connect(t.local_addr(), &roots).await.unwrap();
    assert_eq!(seen, der2.to_vec());
    assert_announce_reply(&ws_announce(&mut third, &ih, &bin(b't')).await, &ih);
    // A key that does not match the certificate is refused the same way.
    replace_file(&cert_path, &pem1);
    let r = t.reload();
    assert!(matches!(r.tls, Some(Err(_))), "{r:?}");
    let (_, seen) = wss_connect(t.local_addr(), &roots).await.unwrap();
    assert_eq!(seen, der2.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_are_polled_for_changes() {
    let dir = TempDir::new("tls-poll");
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    let (pem1, key1, der1) = self_signed();
    let (pem2, key2, der2) = self_signed();
    std::fs::write(&cert_path, &pem1).unwrap();
    std::fs::write(&key_path, &key1).unwrap();
    let t = start(|c| {
        c.tls_cert = cert_path.to_str().unwrap().into();
        c.tls_key = key_path.to_str().unwrap().into();
        c.reload_interval_secs = 0.1;
    })
    .await;
    let roots = [der1.clone(), der2.clone()];
    let (mut old, seen) = wss_connect(t.local_addr(), &roots).await.unwrap();
    assert_eq!(seen, der1.to_vec());
    // Let the file clock move on, so the new files' mtimes differ.
    tokio::time::sleep(Duration::from_millis(20)).await;
    replace_file(&cert_path, &pem2);
    replace_file(&key_path, &key2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, seen) = wss_connect(t.local_addr(), &roots).await.unwrap();
        if seen == der2.to_vec() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the polling reload did not pick up the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ih = id(2);
    assert_announce_reply(&ws_announce(&mut old, &ih, &bin(b'o')).await, &ih);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_failures_and_timeouts_are_refused_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("tls-handshake");
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    let (pem, key, der) = self_signed();
    std::fs::write(&cert_path, &pem).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let t = start(|c| {
        c.tls_cert = cert_path.to_str().unwrap().into();
        c.tls_key = key_path.to_str().unwrap().into();
        c.handshake_timeout_secs = 0.5;
    })
    .await;
    let mut buf = [0u8; 64];
    // Plain HTTP on the TLS port: the handshake fails and the socket is closed.
    let mut plain = TcpStream::connect(t.local_addr()).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), plain.read(&mut buf))
        .await
        .expect("closed");
    assert!(wait_until(WAIT, || t.metrics().rejections("tls_handshake") == 1).await);
    // A socket that never starts the handshake is closed after handshake_timeout_secs.
    let started = Instant::now();
    let mut silent = TcpStream::connect(t.local_addr()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("closed after the handshake timeout");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(
        wait_until(WAIT, || t.metrics().rejections("tls_handshake_timeout")
            == 1)
        .await
    );
    // Proper clients still get in.
    let (mut ws, _) = wss_connect(t.local_addr(), &[der]).await.unwrap();
    let ih = id(5);
    assert_announce_reply(&ws_announce(&mut ws, &ih, &bin(b'a')).await, &ih);
}

// ---------------------------------------------------------------------------------------------
// Upgrade checks
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_per_client_only_behind_trusted_proxies() {
    let xff = "X-Forwarded-For";
    let t = start(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.max_connections_per_ip = 1;
    })
    .await;
    let url = t.ws_url();
    let mut a = try_connect(&url, &[(xff, "203.0.113.1")]).await.unwrap();
    let _b = try_connect(&url, &[(xff, "203.0.113.2")]).await.unwrap();
    assert_eq!(
        try_connect(&url, &[(xff, "203.0.113.1")]).await.err(),
        Some(429)
    );
    // The rightmost untrusted hop counts: a client-supplied first entry cannot dodge the limit.
    assert_eq!(
        try_connect(&url, &[(xff, "198.51.100.9, 203.0.113.2")])
            .await
            .err(),
        Some(429)
    );
    // Without the header, the proxy's own address is the client.
    let _p = try_connect(&url, &[]).await.unwrap();
    assert_eq!(try_connect(&url, &[]).await.err(), Some(429));
    a.send(&announce(&id(1), &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &id(1));

    // Without trusted proxies the header is ignored: both come from 127.0.0.1.
    let t2 = start(|c| c.max_connections_per_ip = 1).await;
    let url2 = t2.ws_url();
    let _c = try_connect(&url2, &[(xff, "203.0.113.1")]).await.unwrap();
    assert_eq!(
        try_connect(&url2, &[(xff, "203.0.113.2")]).await.err(),
        Some(429)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allow_list() {
    let origin = "Origin";
    let t = start(|c| c.allowed_origins = vec!["https://good.example".into()]).await;
    let url = t.ws_url();
    let mut good = try_connect(&url, &[(origin, "https://good.example")])
        .await
        .unwrap();
    good.send(&announce(&id(1), &bin(b'g'))).await;
    assert_announce_reply(&good.recv().await, &id(1));
    assert_eq!(
        try_connect(&url, &[(origin, "https://bad.example")])
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        try_connect(&url, &[(origin, "https://good.example.evil")])
            .await
            .err(),
        Some(403)
    );
    assert_eq!(t.metrics().rejections("origin"), 2);
    // No Origin (Node, native clients): allowed by default.
    let _none = try_connect(&url, &[]).await.unwrap();

    let t2 = start(|c| {
        c.allowed_origins = vec!["https://good.example".into()];
        c.allow_missing_origin = false;
    })
    .await;
    assert_eq!(try_connect(&t2.ws_url(), &[]).await.err(), Some(403));
    let _ok = try_connect(&t2.ws_url(), &[(origin, "https://good.example")])
        .await
        .unwrap();

    // Without an allow-list any origin connects.
    let t3 = start(|_| {}).await;
    let _any = try_connect(&t3.ws_url(), &[(origin, "https://bad.example")])
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Access lists
// ---------------------------------------------------------------------------------------------

fn scrape_counts(v: &Value, ih: &str) -> (u64, u64) {
    assert_eq!(v["action"], "scrape", "{v}");
    let f = &v["files"][ih];
    (
        f["complete"].as_u64().unwrap(),
        f["incomplete"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_list_allow_mode_and_reload() {
    let dir = TempDir::new("access-allow");
    let list = dir.path("allow.txt");
    let (good, other) = (id(1), id(2));
    std::fs::write(&list, format!("# allowed\n{}\n", hex(&good))).unwrap();
    let t = start(|c| {
        c.access_list_mode = ghostmesh_tracker::access::AccessMode::Allow;
        c.access_list_path = list.to_str().unwrap().into();
        c.reload_interval_secs = 0.0;
    })
    .await;
    let mut a = Client::connect(&t.ws_url()).await;
    a.send(&announce(&good, &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &good);
    a.send(&announce(&other, &bin(b'a'))).await;
    assert_error_reply(&a.recv().await, "announce", Some(&other), "not allowed");
    // The socket stays usable.
    let mut b = Client::connect(&t.ws_url()).await;
    b.send(&announce(&good, &bin(b'b'))).await;
    assert_eq!(assert_announce_reply(&b.recv().await, &good), (0, 2));

    // A malformed file is refused on reload; the old list stays in force.
    replace_file(&list, "not a hash\n");
    let r = t.reload();
    assert!(r.access.is_err(), "{r:?}");
    a.send(&announce(&good, &bin(b'a'))).await;
    assert_announce_reply(&a.recv().await, &good);

    // Remove the hash and reload: its swarm goes, and new announces are refused.
    replace_file(&list, &format!("{}\n", hex(&other)));
    let r = t.reload();
    assert!(matches!(r.access, Ok(Some(1))), "{r:?}");
    assert_eq!(t.snapshot().core.swarms, 0);
    assert_eq!(t.snapshot().core.peers, 0);
    a.send(&serde_json::json!({"action": "scrape", "info_hash": good}))
        .await;
    assert_eq!(scrape_counts(&a.recv().await, &good), (0, 0));
    b.send(&announce(&good, &bin(b'b'))).await;
    assert_error_reply(&b.recv().await, "announce", Some(&good), "not allowed");
    b.send(&announce(&other, &bin(b'b'))).await;
    assert_eq!(assert_announce_reply(&b.recv().await, &other), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_list_deny_mode_and_polling_reload() {
    let dir = TempDir::new("access-deny");
    let list = dir.path("deny.txt");
    let (bad, fine) = (id(3), id(4));
    std::fs::write(&list, format!("{}  # blocked\n", hex(&bad).to_uppercase())).unwrap();
    let t = start(|c| {
        c.access_list_mode = ghostmesh_tracker::access::AccessMode::Deny;
        c.access_list_path = list.to_str().unwrap().into();
        c.reload_interval_secs = 0.1;
    })
    .await;
    let mut a = Client::connect(&t.ws_url()).await;
    a.send(&announce(&bad, &bin(b'a'))).await;
    assert_error_reply(&a.recv().await, "announce", Some(&bad), "not allowed");
    a.send(&announce(&fine, &bin(b'a'))).await;
    assert_eq!(assert_announce_reply(&a.recv().await, &fine), (0, 1));

    // Deny the other hash too, without calling reload: the file watcher picks it up.
    tokio::time::sleep(Duration::from_millis(20)).await;
    replace_file(&list, &format!("{}\n{}\n", hex(&bad), hex(&fine)));
    assert!(
        wait_until(WAIT, || t.snapshot().core.swarms == 0).await,
        "the denied swarm was not removed by the polling reload"
    );
    a.send(&announce(&fine, &bin(b'a'))).await;
    assert_error_reply(&a.recv().await, "announce", Some(&fine), "not allowed");
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_1001_within_the_grace_period() {
    let t = start(|c| c.shutdown_grace_secs = 3.0).await;
    let url = t.ws_url();
    let health = format!("{}/health", t.http_url());
    let mut a = Client::connect(&url).await;
    let mut b = Client::connect(&url).await;
    a.send(&announce(&id(1), &bin(b'a'))).await;
    a.recv().await;
    b.send(&announce(&id(1), &bin(b'b'))).await;
    b.recv().await;

    let started = Instant::now();
    let stop = tokio::spawn(t.shutdown());
    for c in [&mut a, &mut b] {
        let f = c.recv_close().await;
        assert_eq!(close_code(&f), 1001, "{f:?}");
    }
    tokio::time::timeout(Duration::from_secs(4), stop)
        .await
        .expect("shutdown returns within grace + 1 s")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    // Nothing listens any more.
    assert_eq!(try_connect(&url, &[]).await.err(), Some(0));
    let host = health.trim_start_matches("http://");
    let host = host.split('/').next().unwrap();
    assert!(TcpStream::connect(host).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_past_the_grace_period_for_a_stalled_client() {
    let t = start(|c| {
        c.shutdown_grace_secs = 1.0;
        c.write_timeout_secs = 30.0;
        c.out_queue_messages = 4;
    })
    .await;
    let ih = bin(b'S');
    let mut stalled = Client::connect(&t.ws_url()).await;
    stalled.send(&announce(&ih, &bin(b's'))).await;
    stalled.recv().await;
    let mut flooder = Client::connect(&t.ws_url()).await;
    flooder.send(&announce(&ih, &bin(b'f'))).await;
    flooder.recv().await;
    // Fill the stalled client's socket buffers and queue with 16 KiB offers.
    for i in 0..500u32 {
        let mut m = announce(&ih, &bin(b'f'));
        m["offers"] = serde_json::json!([{"offer_id": format!("d{i:019}"),
            "offer": {"type": "offer", "sdp": "s".repeat(16 * 1024)}}]);
        flooder.send(&m).await;
        assert_announce_reply(&flooder.recv().await, &ih);
    }
    assert!(
        support::drops(&t, "offer_queue_full") > 0,
        "precondition: the stalled client's queue is full"
    );

    let started = Instant::now();
    let stop = tokio::spawn(t.shutdown());
    assert_eq!(close_code(&flooder.recv_close().await), 1001);
    tokio::time::timeout(Duration::from_secs(3), stop)
        .await
        .expect("shutdown returns within grace + margin")
        .unwrap();
    let took = started.elapsed();
    // It waited for the stalled connection, but only for the grace period.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_upgraded_as_shutdown_begins_are_closed_too() {
    // Races connection attempts against shutdown (bounded: 80 rounds or 6 s). Every connection
    // that was accepted must be told 1001; one upgraded in the instant shutdown starts must not
    // be missed (it would stay open past the grace period).
    let started = Instant::now();
    let (mut rounds, mut checked) = (0u32, 0u32);
    while rounds < 80 && started.elapsed() < Duration::from_secs(6) {
        rounds += 1;
        let t = start(|c| c.shutdown_grace_secs = 0.3).await;
        let url = t.ws_url();
        let mut tasks = Vec::new();
        for k in 0..20u64 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(k * 50)).await;
                try_connect(&url, &[]).await.ok()
            }));
        }
        tokio::time::sleep(Duration::from_micros(u64::from(rounds % 5) * 250)).await;
        let stop = tokio::spawn(t.shutdown());
        for task in tasks {
            let Some(mut c) = task.await.unwrap() else {
                continue;
            };
            checked += 1;
            match tokio::time::timeout(Duration::from_secs(1), c.ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) if u16::from(f.code) == 1001 => {}
                other => panic!(
                    "round {rounds}: a connection accepted during shutdown got {other:?} \
                     instead of close 1001 ({checked} connections checked)"
                ),
            }
        }
        stop.await.unwrap();
    }
    eprintln!(
        "{rounds} rounds, {checked} connections, {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_ghostmesh-tracker");

/// The binary, with no GHOSTMESH_TRACKER_* variables inherited from the test's environment.
fn bin_cmd() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with(ghostmesh_tracker::config::ENV_PREFIX) {
            c.env_remove(k);
        }
    }
    c
}

/// A running tracker process, killed on drop if still alive.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    /// Starts the binary on 127.0.0.1:0 with `args` and reads the URL it prints.
    fn start(args: &[&str]) -> Proc {
        let mut child = bin_cmd()
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("the binary printed nothing within 10 s");
            }
        };
        let url = line
            .trim()
            .strip_prefix("ghostmesh-tracker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Proc { child, url }
    }

    fn addr(&self) -> &str {
        self.url.trim_start_matches("ws://")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits up to `within` for the process to exit; returns its exit code.
    async fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion (bounded) and returns (exit code, stdout, stderr).
fn run_bin(args: &[&str]) -> (i32, String, String) {
    run_bin_env(args, &[])
}

fn run_bin_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = bin_cmd()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ghostmesh-tracker {args:?} did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_sigterm_closes_clients_with_1001_and_exits_0() {
    let mut p = Proc::start(&["--shutdown-grace-secs", "2"]);
    assert!(p.url.starts_with("ws://127.0.0.1:"), "{}", p.url);
    let mut c = Client::connect(&p.url).await;
    let ih = id(1);
    c.send(&announce(&ih, &bin(b'a'))).await;
    assert_announce_reply(&c.recv().await, &ih);

    let started = Instant::now();
    p.signal("TERM");
    assert_eq!(close_code(&c.recv_close().await), 1001);
    let code = p.exit_within(Duration::from_secs(4)).await;
    assert_eq!(code, Some(0), "exit after SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_sigint_is_graceful_too() {
    let mut p = Proc::start(&["--shutdown-grace-secs", "2"]);
    let mut c = Client::connect(&p.url).await;
    c.send(&announce(&id(1), &bin(b'a'))).await;
    c.recv().await;
    p.signal("INT");
    assert_eq!(close_code(&c.recv_close().await), 1001);
    assert_eq!(p.exit_within(Duration::from_secs(4)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_print_config_is_a_valid_config_file() {
    let (code, out, err) = run_bin(&["--print-config"]);
    assert_eq!(code, 0, "{err}");
    let parsed: Config = toml::from_str(&out).expect("--print-config output parses");
    assert_eq!(parsed, Config::default());
    // Every key is documented in the output.
    for kd in ghostmesh_tracker::config::KEYS {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{} = ", kd.key))),
            "{} missing",
            kd.key
        );
    }
    // Flags are reflected, and the output can be fed back as --config.
    let (code, out, _) = run_bin(&["--max-offers", "3", "--print-config"]);
    assert_eq!(code, 0);
    let parsed: Config = toml::from_str(&out).unwrap();
    assert_eq!(parsed.max_offers, 3);
    let dir = TempDir::new("print-config");
    let file = dir.path("printed.toml");
    std::fs::write(&file, &out).unwrap();
    let (code, out2, err) = run_bin(&["--config", file.to_str().unwrap(), "--print-config"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(toml::from_str::<Config>(&out2).unwrap(), parsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_rejects_unknown_flags_and_keys_with_exit_2() {
    let (code, _, err) = run_bin(&["--max-ofers", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--max-ofers"), "{err}");

    let dir = TempDir::new("bad-config");
    let file = dir.path("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax_ofers = 3\n").unwrap();
    let (code, _, err) = run_bin(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max_ofers"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");

    std::fs::write(&file, "max_offers = \"ten\"\n").unwrap();
    let (code, _, err) = run_bin(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max_offers"), "{err}");

    let (code, _, err) = run_bin(&["--max-offers", "many"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--max-offers"), "{err}");

    let out = bin_cmd()
        .arg("--print-config")
        .env("GHOSTMESH_TRACKER_MAX_OFERS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GHOSTMESH_TRACKER_MAX_OFERS"), "{err}");

    // Invalid combinations are refused before listening.
    let (code, _, err) = run_bin(&["--listen", "127.0.0.1:0", "--access-list-mode", "allow"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("access_list_path"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_fails_when_the_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, out, err) = run_bin(&["--listen", &addr, "--log-level", "error"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("cannot listen"), "{err}");
    assert!(!out.contains("listening on"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_healthcheck_subcommand() {
    let p = Proc::start(&[]);
    let url = format!("http://{}/health", p.addr());
    let (code, _, err) = run_bin(&["healthcheck", &url]);
    assert_eq!(code, 0, "{err}");
    // A non-200 answer is unhealthy.
    let (code, _, _) = run_bin(&["healthcheck", &format!("http://{}/nope", p.addr())]);
    assert_ne!(code, 0);
    // A closed port is unhealthy.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (code, _, err) = run_bin(&["healthcheck", &format!("http://{closed}/health")]);
    assert_ne!(code, 0);
    assert!(err.contains("unhealthy"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_healthcheck_without_url_probes_where_the_configuration_serves_health() {
    let p = Proc::start(&[]);
    let port = p
        .addr()
        .rsplit_once(':')
        .map(|(_, port)| port)
        .unwrap()
        .to_string();
    // From the environment, a wildcard address probed on loopback: healthy.
    let listen = format!("0.0.0.0:{port}");
    let (code, _, err) = run_bin_env(&["healthcheck"], &[("GHOSTMESH_TRACKER_LISTEN", &listen)]);
    assert_eq!(code, 0, "{err}");
    // From flags before the subcommand, and metrics_listen wins over listen.
    let (code, _, err) = run_bin(&[
        "--metrics-listen",
        &format!("127.0.0.1:{port}"),
        "healthcheck",
    ]);
    assert_eq!(code, 0, "{err}");
    // From a config file.
    let dir = TempDir::new("healthcheck");
    let file = dir.path("tracker.toml");
    std::fs::write(&file, format!("listen = \"127.0.0.1:{port}\"\n")).unwrap();
    let (code, _, err) = run_bin(&["--config", file.to_str().unwrap(), "healthcheck"]);
    assert_eq!(code, 0, "{err}");
    // Where nothing listens: unhealthy, naming the derived URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (code, _, err) = run_bin_env(
        &["healthcheck"],
        &[("GHOSTMESH_TRACKER_LISTEN", &closed.to_string())],
    );
    assert_ne!(code, 0);
    assert!(err.contains(&format!("{closed}")), "{err}");
    // TLS on listen and no metrics_listen: no plain-HTTP /health to derive; a clear error.
    let (code, _, err) = run_bin_env(
        &["healthcheck"],
        &[
            ("GHOSTMESH_TRACKER_TLS_CERT", "/nonexistent/cert.pem"),
            ("GHOSTMESH_TRACKER_TLS_KEY", "/nonexistent/key.pem"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("metrics_listen"), "{err}");
    // Port 0 cannot be probed.
    let (code, _, err) = run_bin(&["--listen", "127.0.0.1:0", "healthcheck"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("port 0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_sighup_reloads_the_access_list() {
    let dir = TempDir::new("sighup");
    let list = dir.path("allow.txt");
    let (a_hash, b_hash) = (id(1), id(2));
    std::fs::write(&list, format!("{}\n{}\n", hex(&a_hash), hex(&b_hash))).unwrap();
    let p = Proc::start(&[
        "--access-list-mode",
        "allow",
        "--access-list-path",
        list.to_str().unwrap(),
        "--reload-interval-secs",
        "0",
    ]);
    let mut c = Client::connect(&p.url).await;
    c.send(&announce(&a_hash, &bin(b'a'))).await;
    assert_announce_reply(&c.recv().await, &a_hash);
    c.send(&announce(&id(3), &bin(b'a'))).await;
    assert_error_reply(&c.recv().await, "announce", Some(&id(3)), "not allowed");

    // Edit the file: without a signal nothing changes (polling is off)...
    replace_file(&list, &format!("{}\n", hex(&b_hash)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(&announce(&a_hash, &bin(b'a'))).await;
    assert_announce_reply(&c.recv().await, &a_hash);
    // ...SIGHUP reloads it.
    p.signal("HUP");
    let deadline = Instant::now() + WAIT;
    loop {
        c.send(&announce(&a_hash, &bin(b'a'))).await;
        let v = c.recv().await;
        if v.get("failure reason").is_some() {
            assert_error_reply(&v, "announce", Some(&a_hash), "not allowed");
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload the list");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.send(&announce(&b_hash, &bin(b'a'))).await;
    assert_announce_reply(&c.recv().await, &b_hash);
}
