//! Two webrtc-rs peers in one process, on 127.0.0.1, through the `Link` trait.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ghostmesh::transport::webrtc::{
    WebRtcConfig, WebRtcError, accept_offer, create_offer, random_label,
};
use ghostmesh::transport::{Frame, Link, LinkError};
use rand::SeedableRng;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

fn cfg() -> WebRtcConfig {
    WebRtcConfig::bound_to("127.0.0.1:0")
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Connects a pair: (offerer link, answerer link, connect time).
async fn pair(cfg: &WebRtcConfig) -> (Box<dyn Link>, Box<dyn Link>, Duration) {
    pair_with(cfg, cfg).await
}

/// Connects a pair whose offerer and answerer use different configurations.
async fn pair_with(
    offerer: &WebRtcConfig,
    answerer: &WebRtcConfig,
) -> (Box<dyn Link>, Box<dyn Link>, Duration) {
    let cfg = offerer;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let label = random_label(&mut rng);
    let t0 = Instant::now();
    let (pending_offer, offer) = within("offer", create_offer(cfg, &label)).await.unwrap();
    assert!(
        offer.starts_with(r#"{"type":"offer","sdp":"v=0"#),
        "{offer}"
    );
    assert!(!offer.contains("a=ice-options:trickle"));
    let (answer, pending_answer) = within("answer", accept_offer(answerer, &offer))
        .await
        .unwrap();
    assert!(answer.starts_with(r#"{"type":"answer","sdp":"#), "{answer}");
    let (a, b) = within("open", async {
        tokio::join!(
            pending_offer.accept_answer(&answer),
            pending_answer.connected()
        )
    })
    .await;
    let elapsed = t0.elapsed();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.label(), label);
    assert_eq!(b.label(), label);
    (a.boxed(), b.boxed(), elapsed)
}

async fn recv(link: &dyn Link) -> Option<Frame> {
    within("recv", link.recv()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_exchange_text_and_binary_both_ways() {
    let (a, b, took) = pair(&cfg()).await;
    println!("webrtc connect (offer → answer → both channels open): {took:?}");

    a.send(Frame::Text("hello from offerer".into()))
        .await
        .unwrap();
    assert_eq!(
        recv(&*b).await,
        Some(Frame::Text("hello from offerer".into()))
    );
    b.send(Frame::Text("hello from answerer".into()))
        .await
        .unwrap();
    assert_eq!(
        recv(&*a).await,
        Some(Frame::Text("hello from answerer".into()))
    );

    a.send(Frame::Binary(vec![0, 1, 2, 255])).await.unwrap();
    assert_eq!(recv(&*b).await, Some(Frame::Binary(vec![0, 1, 2, 255])));
    b.send(Frame::Binary(vec![9; 3])).await.unwrap();
    assert_eq!(recv(&*a).await, Some(Frame::Binary(vec![9; 3])));

    // Latin-1 "binary string" text as P2PT would send it.
    let latin = "\u{0}\u{80}\u{ff}é".to_string();
    a.send(Frame::Text(latin.clone())).await.unwrap();
    assert_eq!(recv(&*b).await, Some(Frame::Text(latin)));

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_up_to_256_kib() {
    let (a, b, _) = pair(&cfg()).await;
    for size in [
        16 * 1024,
        16 * 1024 + 1,
        32 * 1024,
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        256 * 1024,
    ] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        a.send(Frame::Binary(payload.clone())).await.unwrap();
        assert_eq!(
            recv(&*b).await,
            Some(Frame::Binary(payload)),
            "binary {size}"
        );
        let text = "x".repeat(size);
        b.send(Frame::Text(text.clone())).await.unwrap();
        assert_eq!(recv(&*a).await, Some(Frame::Text(text)), "text {size}");
    }
    let too_big = Frame::Binary(vec![0; 256 * 1024 + 1]);
    assert!(matches!(
        a.send(too_big).await,
        Err(LinkError::TooLarge {
            size: 262_145,
            max: 262_144
        })
    ));
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_arrive_in_order() {
    let (a, b, _) = pair(&cfg()).await;
    let sender = async {
        for i in 0..1000u32 {
            a.send(Frame::Text(format!(
                "{i}:{}",
                "p".repeat((i % 97) as usize)
            )))
            .await
            .unwrap();
        }
    };
    let receiver = async {
        for i in 0..1000u32 {
            match recv(&*b).await {
                Some(Frame::Text(t)) => {
                    assert_eq!(t.split(':').next(), Some(i.to_string().as_str()))
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
    };
    within("1000 messages", async { tokio::join!(sender, receiver) }).await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_remote_recv() {
    let (a, b, _) = pair(&cfg()).await;
    a.send(Frame::Text("last".into())).await.unwrap();
    let t0 = Instant::now();
    a.close().await;
    println!("local close took {:?}", t0.elapsed());
    assert_eq!(recv(&*b).await, Some(Frame::Text("last".into())));
    assert_eq!(recv(&*b).await, None);
    println!("remote recv ended {:?} after close started", t0.elapsed());
    assert_eq!(recv(&*a).await, None);
    assert_eq!(
        a.send(Frame::Text("after".into())).await,
        Err(LinkError::Closed)
    );
    assert!(b.send(Frame::Text("after".into())).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_answerer_ends_the_offerer_recv() {
    let (a, b, _) = pair(&cfg()).await;
    b.close().await;
    assert_eq!(recv(&*a).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_signals_are_errors_not_panics() {
    let c = cfg();
    for bad in [
        "",
        "nope",
        "{}",
        r#"{"type":"answer","sdp":"v=0"}"#,
        r#"{"type":"offer","sdp":"garbage"}"#,
    ] {
        let r = within("bad offer", accept_offer(&c, bad)).await;
        assert!(
            matches!(r, Err(WebRtcError::InvalidSignal(_))),
            "{bad}: {r:?}"
        );
    }
    for bad in [
        "",
        "{",
        r#"{"type":"offer","sdp":"v=0"}"#,
        r#"{"type":"answer","sdp":"garbage"}"#,
    ] {
        let (pending, _offer) = within("offer", create_offer(&c, "abc")).await.unwrap();
        let r = within("bad answer", pending.accept_answer(bad)).await;
        assert!(r.is_err(), "{bad}: {r:?}");
    }
    // An answer to a different offer parses but cannot connect: bounded error, no panic.
    let c = WebRtcConfig {
        connect_timeout: Duration::from_secs(3),
        ..cfg()
    };
    let (p1, _o1) = create_offer(&c, "one").await.unwrap();
    let (_p2, o2) = create_offer(&c, "two").await.unwrap();
    let (answer2, _pa) = accept_offer(&c, &o2).await.unwrap();
    let r = within("mismatched answer", p1.accept_answer(&answer2)).await;
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_link_ends_the_remote_recv() {
    let (a, b, _) = pair(&cfg()).await;
    let t0 = Instant::now();
    drop(a);
    assert_eq!(recv(&*b).await, None);
    println!(
        "remote recv ended {:?} after the offerer's link was dropped",
        t0.elapsed()
    );
}

/// A receiver that does not read slows the sender down (send waits) instead of losing data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_backpressures_the_sender() {
    let c = WebRtcConfig {
        send_buffer_limit: 256 * 1024,
        recv_queue_frames: 8,
        ..cfg()
    };
    let (a, b, _) = pair(&c).await;
    // 1500 x 16 KiB = 24 MiB, far above what can sit unread: our queue (8 frames), webrtc-rs's
    // per-channel event queue (256 messages), the SCTP receive window (1 MiB), the send buffer.
    const N: u32 = 1500;
    let mut sent = 0u32;
    let stalled = loop {
        let mut msg = vec![0u8; 16 * 1024];
        msg[..4].copy_from_slice(&sent.to_be_bytes());
        match tokio::time::timeout(Duration::from_millis(500), a.send(Frame::Binary(msg))).await {
            Ok(r) => r.unwrap(),
            Err(_) => break true,
        }
        sent += 1;
        if sent == N {
            break false;
        }
    };
    assert!(stalled, "all {N} sends completed although nobody read");
    println!("sender stalled after {sent} x 16 KiB unread messages");
    // The message whose send timed out was cancelled before queueing or is in flight; read on
    // and check order and that nothing before it is lost.
    for i in 0..sent {
        match recv(&*b).await {
            Some(Frame::Binary(m)) => assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), i),
            other => panic!("message {i}: {other:?}"),
        }
    }
    a.close().await;
}

/// Sends one text message each way and checks both arrive.
async fn ping_both_ways(a: &dyn Link, b: &dyn Link) {
    a.send(Frame::Text("ping".into())).await.unwrap();
    assert_eq!(recv(b).await, Some(Frame::Text("ping".into())));
    let big = Frame::Binary((0..64 * 1024).map(|i| (i % 253) as u8).collect());
    b.send(big.clone()).await.unwrap();
    assert_eq!(recv(a).await, Some(big));
}

/// The setup wake-ups (`setup_wake_interval`) and the active offer (`offer_dtls_client`) take
/// connection setup from ~600 ms (webrtc-rs's own timing) to milliseconds on loopback. Best of
/// three, with a loose bound, so a loaded machine does not fail it; the old timing cannot pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_connects_well_under_the_stack_default_600_ms() {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let (a, b, took) = pair(&cfg()).await;
        best = best.min(took);
        ping_both_ways(&*a, &*b).await;
        a.close().await;
        b.close().await;
    }
    println!("best connect time with the defaults: {best:?}");
    assert!(best < Duration::from_millis(300), "best connect {best:?}");
}

/// webrtc-rs's own timing, packet size and `actpass` offers still connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_defaults_still_connect() {
    let old = cfg().stack_defaults();
    assert_eq!(old.setup_wake_interval, None);
    assert!(!old.offer_dtls_client);
    assert_eq!(old.sctp_mtu, None);
    let (a, b, took) = pair(&old).await;
    println!("connect with stack_defaults(): {took:?}");
    ping_both_ways(&*a, &*b).await;
    a.close().await;
    b.close().await;
}

/// A peer with the new defaults and one with webrtc-rs's behaviour connect in both roles: the
/// answerer must answer `a=setup:passive` to an `active` offer (webrtc-rs alone would answer
/// `active`, and both ends would wait as DTLS servers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_stack_default_configs_connect_in_both_roles() {
    let new = cfg();
    let old = cfg().stack_defaults();
    for (offerer, answerer, what) in [(&new, &old, "new offers"), (&old, &new, "old offers")] {
        let (a, b, took) = pair_with(offerer, answerer).await;
        println!("{what}: connected in {took:?}");
        ping_both_ways(&*a, &*b).await;
        a.close().await;
        b.close().await;
    }
}

/// The offer says `a=setup:active` by default, `actpass` without `offer_dtls_client`; the
/// answer to an active offer says `passive`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_and_answers_carry_the_expected_dtls_setup() {
    let (_p, offer) = within("offer", create_offer(&cfg(), "x")).await.unwrap();
    assert!(offer.contains("a=setup:active"), "{offer}");
    assert!(!offer.contains("a=setup:actpass"), "{offer}");
    let (answer, _pa) = within("answer", accept_offer(&cfg(), &offer))
        .await
        .unwrap();
    assert!(answer.contains("a=setup:passive"), "{answer}");

    let actpass = WebRtcConfig {
        offer_dtls_client: false,
        ..cfg()
    };
    let (_p, offer) = within("offer", create_offer(&actpass, "x")).await.unwrap();
    assert!(offer.contains("a=setup:actpass"), "{offer}");
    let (answer, _pa) = within("answer", accept_offer(&cfg(), &offer))
        .await
        .unwrap();
    assert!(answer.contains("a=setup:active"), "{answer}");
}

/// A large SCTP MTU (the loopback-only option) carries messages of every size, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sctp_mtu_on_loopback_carries_every_size() {
    let big_mtu = WebRtcConfig {
        sctp_mtu: Some(16384),
        ..cfg()
    };
    let (a, b, _) = pair(&big_mtu).await;
    for size in [1, 1000, 16 * 1024, 16 * 1024 + 1, 64 * 1024, 256 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        a.send(Frame::Binary(payload.clone())).await.unwrap();
        assert_eq!(recv(&*b).await, Some(Frame::Binary(payload)), "{size}");
    }
    a.close().await;
}
