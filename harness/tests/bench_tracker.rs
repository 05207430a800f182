//! Smoke tests of `bench tracker`: a few connections for a second or two; the numbers must be
//! sane (messages flow in every direction, nothing is dropped or unparsable). Not timed tests:
//! no throughput is asserted.

use std::path::PathBuf;
use std::time::Duration;

use ghostmesh_harness::load::{self, BenchConfig, Mode};

fn small() -> BenchConfig {
    BenchConfig {
        connections: 12,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(300),
        // Few hashes and two swarms each: every swarm has several peers, so offers are relayed.
        hashes: 3,
        swarms_per_conn: 2,
        threads: 2,
        ..BenchConfig::default()
    }
}

fn assert_sane(r: &load::BenchReport) {
    let text = r.text();
    assert_eq!(r.opened, r.connections, "{text}");
    assert_eq!(r.failed, 0, "{text}");
    assert_eq!(r.open_at_end, r.connections, "{text}");
    let c = &r.client;
    assert!(r.responses_per_sec() > 0.0, "{text}");
    assert!(c.announce_replies > 0, "no announce replies\n{text}");
    assert!(c.offers_in > 0, "no offer relayed\n{text}");
    assert!(c.answers_sent > 0, "no answer sent\n{text}");
    assert!(c.answers_in > 0, "no answer relayed\n{text}");
    assert_eq!(
        c.errors_in, 0,
        "error replies: {:?}\n{text}",
        r.error_reasons
    );
    assert_eq!(c.unparsable, 0, "{text}");
    assert_eq!(c.disconnects, 0, "{text}");
    assert_eq!(
        c.announce_timeouts + c.announce_replies_skipped,
        0,
        "{text}"
    );
    let [p50, _, p99, max] = r.latency_us.expect("latency samples");
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{text}");
    // The tracker's own counters agree that it answered.
    let s = r.server.counters.as_ref().expect("tracker counters");
    assert!(s.responses.get("offer").copied().unwrap_or(0) > 0, "{text}");
    assert!(
        s.responses.get("answer").copied().unwrap_or(0) > 0,
        "{text}"
    );
    assert_eq!(load::procfs::ServerCounters::total(&s.drops), 0, "{text}");
    assert!(r.server.rss_peak.is_some(), "{text}");
    let j = r.json();
    assert!(j["responses_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(j["latency_ms"]["p99"].as_f64().is_some());
}

#[test]
fn load_against_an_embedded_tracker() {
    let r = load::run(&small()).expect("bench runs");
    assert!(r.embedded);
    assert_sane(&r);
}

#[test]
fn load_over_wss_with_a_self_signed_certificate() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cfg = BenchConfig {
        tls_cert: Some(fixtures.join("bench-tls-cert.pem")),
        tls_key: Some(fixtures.join("bench-tls-key.pem")),
        connections: 6,
        ..small()
    };
    let r = load::run(&cfg).expect("bench runs");
    assert!(r.target.contains("wss://"), "{}", r.target);
    assert_sane(&r);
}

#[test]
fn load_against_a_tracker_at_a_url_reads_its_stats_and_process() {
    // A tracker on its own runtime, as if it were another process.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cfg = ghostmesh_tracker::Config {
                listen: "127.0.0.1:0".into(),
                shutdown_grace_secs: 1.0,
                ..ghostmesh_tracker::Config::default()
            };
            let t = ghostmesh_tracker::Tracker::start(cfg)
                .await
                .expect("tracker starts");
            tx.send(t.ws_url()).expect("send url");
            let _ =
                tokio::task::spawn_blocking(move || stop_rx.recv_timeout(Duration::from_secs(60)))
                    .await;
            t.shutdown().await;
        });
    });
    let url = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("tracker url");
    let r = load::run(&BenchConfig {
        url: Some(url.clone()),
        ..small()
    })
    .expect("bench runs");
    let _ = stop_tx.send(());
    server.join().expect("tracker thread");
    assert!(!r.embedded);
    assert_eq!(r.target, url);
    // Found by its listening port: this process.
    assert_eq!(
        r.server.process.as_deref(),
        Some(format!("tracker pid {}", std::process::id()).as_str())
    );
    assert_sane(&r);
}

#[test]
fn idle_mode_holds_connections_and_reports_memory() {
    let r = load::run(&BenchConfig {
        mode: Mode::Idle,
        connections: 20,
        duration: Duration::from_millis(300),
        ..small()
    })
    .expect("bench runs");
    assert_eq!(r.opened, 20, "{}", r.text());
    assert_eq!(r.open_at_end, 20, "{}", r.text());
    assert_eq!(r.client.disconnects, 0);
    assert!(r.bytes_per_connection().is_some(), "{}", r.text());
    assert!(
        r.server
            .counters
            .as_ref()
            .is_some_and(|c| c.connections == 20),
        "{}",
        r.text()
    );
}

#[test]
fn bounds_and_loopback_are_enforced() {
    let bad = |c: BenchConfig| match load::run(&c) {
        Err(load::LoadError::Invalid(e)) => e,
        other => panic!("expected an invalid-options error, got {other:?}"),
    };
    let e = bad(BenchConfig {
        connections: 100_001,
        ..small()
    });
    assert!(e.contains("--connections"), "{e}");
    let e = bad(BenchConfig {
        duration: Duration::from_secs(601),
        ..small()
    });
    assert!(e.contains("--duration"), "{e}");
    let e = bad(BenchConfig {
        url: Some("ws://192.0.2.1:8000".into()),
        ..small()
    });
    assert!(e.contains("loopback"), "{e}");
    let e = bad(BenchConfig {
        url: Some("ws://example.com:8000".into()),
        ..small()
    });
    assert!(e.contains("IP address or localhost"), "{e}");
    assert!(load::parse_loopback_url("ws://localhost:1/x", &["ws"]).is_ok());
    assert!(load::parse_loopback_url("wss://[::1]:443", &["wss"]).is_ok());
    assert!(load::parse_loopback_url("ws://127.3.4.5", &["ws"]).is_ok());
}
