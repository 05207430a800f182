//! The tracker client core (`ghostmesh::signal`) against captured P2PT frames, on an injected
//! clock and seeded RNG, and against our real tracker core in-process.

use std::time::{Duration, Instant};

use ghostmesh::signal::{Id20, Identity, Output, SignalConfig, TrackerClient};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The captured frames in ../shared (CI clones the repo with shared/ beside it).
const FRAMES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/frames");
const SDP: &str = r#"{"type":"offer","sdp":"v=0\r\n"}"#;

fn drain(c: &mut TrackerClient) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn sends(outs: &[Output]) -> Vec<&str> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

fn warnings(outs: &[Output]) -> usize {
    outs.iter()
        .filter(|o| matches!(o, Output::Warning(_)))
        .count()
}

fn ident(a: u8, b: u8) -> Identity {
    Identity {
        info_hash: Id20([a; 20]),
        peer_id: Id20([b; 20]),
    }
}

fn offers(rng: &mut StdRng, n: usize) -> Vec<(Id20, String)> {
    (0..n)
        .map(|_| (Id20::random(rng), SDP.to_string()))
        .collect()
}

/// A client that is connected and has announced `n` offers at `t0`; returns the offer ids.
fn announced(
    me: Identity,
    cfg: SignalConfig,
    t0: Instant,
    rng: &mut StdRng,
) -> (TrackerClient, Vec<Id20>) {
    let n = cfg.offers_per_announce;
    let mut c = TrackerClient::new(me, cfg);
    assert_eq!(drain(&mut c), vec![Output::Connect(Duration::ZERO)]);
    c.connected(t0);
    assert_eq!(drain(&mut c), vec![Output::NeedOffers(n)]);
    let o = offers(rng, n);
    let ids = o.iter().map(|(id, _)| *id).collect();
    c.offers_ready(t0, o);
    let outs = drain(&mut c);
    assert_eq!(sends(&outs).len(), 1, "{outs:?}");
    (c, ids)
}

fn reply(me: &Identity, extra: &str) -> String {
    format!(
        r#"{{"complete":0,"incomplete":1,"action":"announce"{extra},"info_hash":{}}}"#,
        me.info_hash.to_json()
    )
}

// ---------------------------------------------------------------------------------------------
// Captured frames

#[derive(Deserialize)]
struct CapturedLine {
    dir: String,
    hex: String,
    text: String,
}

#[derive(Deserialize)]
struct CapturedAnnounce<'a> {
    info_hash: String,
    peer_id: String,
    #[serde(borrow)]
    offers: Vec<CapturedOffer<'a>>,
}

#[derive(Deserialize)]
struct CapturedOffer<'a> {
    #[serde(borrow)]
    offer: &'a RawValue,
    offer_id: String,
}

#[derive(Deserialize)]
struct CapturedAnswer<'a> {
    to_peer_id: String,
    offer_id: String,
    #[serde(borrow)]
    answer: &'a RawValue,
}

fn id(s: &str) -> Id20 {
    Id20::from_binary_str(s).expect("captured id")
}

/// Replays a captured announce through a client with the captured identity; returns the client
/// (connected, announced) and the frame it sent.
fn replay_announce(text: &str, t0: Instant) -> (TrackerClient, String) {
    let a: CapturedAnnounce<'_> = serde_json::from_str(text).expect("captured announce");
    let me = Identity {
        info_hash: id(&a.info_hash),
        peer_id: id(&a.peer_id),
    };
    let mut c = TrackerClient::new(me, SignalConfig::default());
    drain(&mut c);
    c.connected(t0);
    assert_eq!(drain(&mut c), vec![Output::NeedOffers(a.offers.len())]);
    let offers = a
        .offers
        .iter()
        .map(|o| (id(&o.offer_id), o.offer.get().to_string()))
        .collect();
    c.offers_ready(t0, offers);
    let outs = drain(&mut c);
    let sent = sends(&outs);
    assert_eq!(sent.len(), 1);
    let sent = sent[0].to_string();
    (c, sent)
}

#[test]
fn p2pt_capture_via_reference_tracker_is_reproduced_byte_for_byte() {
    let text = std::fs::read_to_string(format!("{FRAMES_DIR}/p2pt-via-reference-tracker.jsonl"))
        .expect("fixture");
    let lines: Vec<CapturedLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect();
    for l in &lines {
        let bytes: Vec<u8> = (0..l.hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&l.hex[i..i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(bytes, l.text.as_bytes());
    }
    let t0 = Instant::now();
    // Both P2PT peers shared one socket (conn 1): every s2c frame reached both.
    let (mut a, a_sent) = replay_announce(&lines[0].text, t0);
    assert_eq!(a_sent, lines[0].text, "announce of peer A");
    let (mut b, b_sent) = replay_announce(&lines[2].text, t0);
    assert_eq!(b_sent, lines[2].text, "announce of peer B");
    let (pa, pb) = (a.identity().peer_id, b.identity().peer_id);

    let mut got_offer = None;
    let mut got_answer = None;
    for (i, l) in lines.iter().enumerate() {
        if l.dir != "s2c" {
            continue;
        }
        a.frame(t0, &l.text);
        b.frame(t0, &l.text);
        let (oa, ob) = (drain(&mut a), drain(&mut b));
        assert_eq!(warnings(&oa) + warnings(&ob), 0, "frame {i}: {oa:?} {ob:?}");
        let v: serde_json::Value = serde_json::from_str(&l.text).expect("s2c json");
        if let Some(complete) = v.get("complete") {
            let want = Output::TrackerUpdate {
                complete: complete.as_u64().expect("n"),
                incomplete: v["incomplete"].as_u64().expect("n"),
            };
            assert_eq!(oa, vec![want.clone()], "frame {i}");
            assert_eq!(ob, vec![want], "frame {i}");
        } else if v.get("offer").is_some() {
            // B's offer: A must answer it, B ignores its own.
            assert!(ob.is_empty(), "{ob:?}");
            match oa.as_slice() {
                [
                    Output::Offer {
                        from_peer,
                        offer_id,
                        offer,
                    },
                ] => {
                    assert_eq!(*from_peer, pb);
                    assert!(b.pending_offers().any(|p| p == *offer_id));
                    assert!(l.text.contains(offer.as_str()));
                    got_offer = Some((*from_peer, *offer_id));
                }
                other => panic!("frame {i}: {other:?}"),
            }
            // A answers with the captured answer: the frame must be the captured one.
            let ans_line = &lines[i + 1];
            assert_eq!(ans_line.dir, "c2s");
            let ans: CapturedAnswer<'_> = serde_json::from_str(&ans_line.text).expect("answer");
            assert_eq!(id(&ans.to_peer_id), pb);
            assert_eq!(Some((pb, id(&ans.offer_id))), got_offer);
            a.answer_ready(t0, pb, id(&ans.offer_id), ans.answer.get());
            assert_eq!(drain(&mut a), vec![Output::Send(ans_line.text.clone())]);
        } else if v.get("answer").is_some() {
            assert!(oa.is_empty(), "A ignores its own answer: {oa:?}");
            match ob.as_slice() {
                [
                    Output::Answer {
                        from_peer,
                        offer_id,
                        answer,
                    },
                ] => {
                    assert_eq!(*from_peer, pa);
                    assert!(l.text.contains(answer.as_str()));
                    got_answer = Some(*offer_id);
                }
                other => panic!("frame {i}: {other:?}"),
            }
        } else {
            panic!("unexpected s2c frame {i}");
        }
    }
    let (_, offer_id) = got_offer.expect("an offer was relayed");
    assert_eq!(got_answer, Some(offer_id));
    assert!(!b.pending_offers().any(|p| p == offer_id));
}

/// The `json` code blocks under a heading of wt-frames.md.
fn md_blocks(heading: &str) -> Vec<String> {
    let md = std::fs::read_to_string(format!("{FRAMES_DIR}/wt-frames.md")).expect("fixture");
    let start = md.find(heading).expect("heading");
    let rest = &md[start + heading.len()..];
    let end = rest.find("\n### ").unwrap_or(rest.len());
    rest[..end]
        .split("```json\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .map(str::to_string)
        .collect()
}

/// wt-frames.md writes U+007F..U+00FF as `\u00xx` (its one presentation change).
fn md_presentation(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        let cp = u32::from(ch);
        if (0x7f..=0xff).contains(&cp) {
            out.push_str(&format!("\\u{cp:04x}"));
        } else {
            out.push(ch);
        }
    }
    out
}

#[test]
fn wt_frames_p2pt_announces_and_answers_match() {
    let t0 = Instant::now();
    for heading in ["### C1.", "### D1."] {
        let blocks = md_blocks(heading);
        let (_, sent) = replay_announce(&blocks[0], t0);
        assert_eq!(md_presentation(&sent), blocks[0], "{heading}");
    }
    for (heading, idx) in [("### C2.", 2), ("### D2.", 1), ("### D3.", 0)] {
        let blocks = md_blocks(heading);
        let text = &blocks[idx];
        #[derive(Deserialize)]
        struct Ids {
            info_hash: String,
            peer_id: String,
        }
        let ids: Ids = serde_json::from_str(text).expect("ids");
        let ans: CapturedAnswer<'_> = serde_json::from_str(text).expect("answer");
        let me = Identity {
            info_hash: id(&ids.info_hash),
            peer_id: id(&ids.peer_id),
        };
        let mut c = TrackerClient::new(me, SignalConfig::default());
        c.connected(t0);
        drain(&mut c);
        c.answer_ready(t0, id(&ans.to_peer_id), id(&ans.offer_id), ans.answer.get());
        let outs = drain(&mut c);
        assert_eq!(sends(&outs).len(), 1, "{heading}");
        assert_eq!(md_presentation(sends(&outs)[0]), *text, "{heading}");
    }
    // C2's tracker frames decode: update, then the relayed offer.
    let c2 = md_blocks("### C2.");
    let reply: serde_json::Value = serde_json::from_str(&c2[0]).expect("json");
    let me = Identity {
        info_hash: id(reply["info_hash"].as_str().expect("s")),
        peer_id: Id20([7; 20]),
    };
    let mut c = TrackerClient::new(me, SignalConfig::default());
    c.connected(t0);
    drain(&mut c);
    c.frame(t0, &c2[0]);
    assert_eq!(
        drain(&mut c),
        vec![Output::TrackerUpdate {
            complete: 0,
            incomplete: 1
        }]
    );
    c.frame(t0, &c2[1]);
    assert!(matches!(drain(&mut c).as_slice(), [Output::Offer { .. }]));
}

// ---------------------------------------------------------------------------------------------
// Behaviour on an injected clock

#[test]
fn relayed_offer_becomes_offer_output() {
    let mut rng = StdRng::seed_from_u64(1);
    let t0 = Instant::now();
    let me = ident(1, 2);
    let (mut c, _) = announced(me, SignalConfig::default(), t0, &mut rng);
    let frame = format!(
        r#"{{"action":"announce","offer":{SDP},"offer_id":{},"peer_id":{},"info_hash":{}}}"#,
        Id20([9; 20]).to_json(),
        Id20([3; 20]).to_json(),
        me.info_hash.to_json()
    );
    c.frame(t0, &frame);
    assert_eq!(
        drain(&mut c),
        vec![Output::Offer {
            from_peer: Id20([3; 20]),
            offer_id: Id20([9; 20]),
            offer: SDP.to_string()
        }]
    );
    c.answer_ready(
        t0,
        Id20([3; 20]),
        Id20([9; 20]),
        r#"{"type":"answer","sdp":"x"}"#,
    );
    let outs = drain(&mut c);
    let want = format!(
        r#"{{"action":"announce","info_hash":{},"peer_id":{},"to_peer_id":{},"answer":{{"type":"answer","sdp":"x"}},"offer_id":{}}}"#,
        me.info_hash.to_json(),
        me.peer_id.to_json(),
        Id20([3; 20]).to_json(),
        Id20([9; 20]).to_json()
    );
    assert_eq!(sends(&outs), vec![want.as_str()]);
}

fn answer_frame(me: &Identity, from: Id20, offer_id: Id20) -> String {
    format!(
        r#"{{"action":"announce","answer":{{"type":"answer","sdp":"a"}},"offer_id":{},"peer_id":{},"info_hash":{}}}"#,
        offer_id.to_json(),
        from.to_json(),
        me.info_hash.to_json()
    )
}

#[test]
fn answers_only_for_pending_offers() {
    let mut rng = StdRng::seed_from_u64(2);
    let t0 = Instant::now();
    let me = ident(1, 2);
    let (mut c, ids) = announced(me, SignalConfig::default(), t0, &mut rng);
    c.frame(t0, &answer_frame(&me, Id20([5; 20]), Id20([0xee; 20])));
    assert_eq!(drain(&mut c), vec![], "unknown offer id");
    c.frame(t0, &answer_frame(&me, Id20([5; 20]), ids[2]));
    assert_eq!(
        drain(&mut c),
        vec![Output::Answer {
            from_peer: Id20([5; 20]),
            offer_id: ids[2],
            answer: r#"{"type":"answer","sdp":"a"}"#.into()
        }]
    );
    assert_eq!(c.pending_offers().count(), 4);
    c.frame(t0, &answer_frame(&me, Id20([6; 20]), ids[2]));
    assert_eq!(drain(&mut c), vec![], "second answer to the same offer");
}

#[test]
fn offers_expire_exactly_at_the_timeout() {
    let mut rng = StdRng::seed_from_u64(3);
    let t0 = Instant::now();
    let me = ident(1, 2);
    let (mut c, ids) = announced(me, SignalConfig::default(), t0, &mut rng);
    let timeout = Duration::from_secs(50);
    assert_eq!(c.poll_timeout(), Some(t0 + timeout));
    c.tick(t0 + timeout - Duration::from_millis(1));
    assert_eq!(drain(&mut c), vec![]);
    c.tick(t0 + timeout);
    let want: Vec<Output> = ids.iter().map(|i| Output::ExpireOffer(*i)).collect();
    assert_eq!(drain(&mut c), want);
    // An answer after expiry is dropped.
    c.frame(t0 + timeout, &answer_frame(&me, Id20([5; 20]), ids[0]));
    assert_eq!(drain(&mut c), vec![]);
    // Next deadline: the fallback re-announce at 120 s.
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(120)));
}

#[test]
fn reannounces_at_the_tracker_interval() {
    let mut rng = StdRng::seed_from_u64(4);
    let t0 = Instant::now();
    let me = ident(1, 2);
    let (mut c, _) = announced(me, SignalConfig::default(), t0, &mut rng);
    let t1 = t0 + Duration::from_millis(20);
    c.frame(t1, &reply(&me, r#","interval":30"#));
    drain(&mut c);
    let due = t1 + Duration::from_secs(30);
    assert_eq!(c.poll_timeout(), Some(due));
    c.tick(due - Duration::from_millis(1));
    assert_eq!(drain(&mut c), vec![]);
    c.tick(due);
    assert_eq!(drain(&mut c), vec![Output::NeedOffers(5)]);
    // While offers are being made, no second request; the deadline is the gather timeout.
    c.request_announce(due);
    assert_eq!(drain(&mut c), vec![]);
    assert_eq!(c.poll_timeout(), Some(due + Duration::from_secs(15)));
    c.offers_ready(due, offers(&mut rng, 5));
    assert_eq!(sends(&drain(&mut c)).len(), 1);
    assert_eq!(c.pending_offers().count(), 10);
    // The remembered interval applies to the next cycle too (before any reply).
    c.tick(t0 + Duration::from_secs(50)); // first batch expires
    assert_eq!(drain(&mut c).len(), 5);
    assert_eq!(c.poll_timeout(), Some(due + Duration::from_secs(30)));
}

#[test]
fn min_interval_and_clamping() {
    let t0 = Instant::now();
    let me = ident(1, 2);
    let cfg = SignalConfig {
        offers_per_announce: 0,
        ..SignalConfig::default()
    };
    for (extra, secs) in [
        (r#","interval":10,"min interval":60"#, 60.0),
        (r#","min interval":45"#, 45.0),
        (r#","interval":0.001"#, 5.0),
        (r#","interval":1e300"#, 3600.0),
        (r#","interval":-4"#, 120.0), // ignored: the fallback stays
    ] {
        let mut c = TrackerClient::new(me, cfg.clone());
        c.connected(t0);
        let outs = drain(&mut c);
        assert_eq!(sends(&outs).len(), 1, "no offers: announce at once");
        c.frame(t0, &reply(&me, extra));
        drain(&mut c);
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + Duration::from_secs_f64(secs)),
            "{extra}"
        );
    }
}

#[test]
fn offers_never_delivered_announce_after_gather_timeout() {
    let t0 = Instant::now();
    let me = ident(1, 2);
    let mut c = TrackerClient::new(me, SignalConfig::default());
    c.connected(t0);
    assert_eq!(
        drain(&mut c),
        vec![Output::Connect(Duration::ZERO), Output::NeedOffers(5)]
    );
    let late = t0 + Duration::from_secs(15);
    assert_eq!(c.poll_timeout(), Some(late));
    c.tick(late);
    let outs = drain(&mut c);
    assert_eq!(warnings(&outs), 1);
    assert!(sends(&outs)[0].ends_with(r#","offers":[]}"#));
}

#[test]
fn pending_offers_are_bounded_oldest_first() {
    let mut rng = StdRng::seed_from_u64(6);
    let t0 = Instant::now();
    let (mut c, first) = announced(ident(1, 2), SignalConfig::default(), t0, &mut rng);
    for _ in 0..2 {
        c.request_announce(t0);
        drain(&mut c);
        c.offers_ready(t0, offers(&mut rng, 5));
        assert_eq!(warnings(&drain(&mut c)), 0);
    }
    assert_eq!(c.pending_offers().count(), 15);
    c.request_announce(t0);
    drain(&mut c);
    c.offers_ready(t0, offers(&mut rng, 7)); // two too many
    let outs = drain(&mut c);
    let expired: Vec<Id20> = outs
        .iter()
        .filter_map(|o| match o {
            Output::ExpireOffer(i) => Some(*i),
            _ => None,
        })
        .collect();
    assert_eq!(expired.len(), 7);
    assert_eq!(&expired[2..], &first[..]);
    assert_eq!(c.pending_offers().count(), 15);
}

#[test]
fn backoff_grows_caps_jitters_and_resets() {
    let cfg = SignalConfig::default();
    let mut rng = StdRng::seed_from_u64(7);
    for retries in 0..40u32 {
        let base = Duration::from_secs(1u64 << retries.min(6)).min(Duration::from_secs(60));
        for _ in 0..200 {
            let d = cfg.backoff(retries, &mut rng);
            assert!(d >= base && d <= base + base / 2, "{retries}: {d:?}");
        }
    }
    // The jitter really varies.
    let samples: std::collections::HashSet<Duration> =
        (0..50).map(|_| cfg.backoff(2, &mut rng)).collect();
    assert!(samples.len() > 10);

    let t0 = Instant::now();
    let mut c = TrackerClient::new(ident(1, 2), cfg);
    drain(&mut c);
    let mut delays = Vec::new();
    for _ in 0..9 {
        c.disconnected(t0, &mut rng);
        match drain(&mut c).as_slice() {
            [Output::Connect(d)] => delays.push(*d),
            other => panic!("{other:?}"),
        }
    }
    let floors = [1, 2, 4, 8, 16, 32, 60, 60, 60];
    for (d, f) in delays.iter().zip(floors) {
        let f = Duration::from_secs(f);
        assert!(*d >= f && *d <= f + f / 2, "{d:?} vs {f:?}");
    }
    // A socket that opens and drops without a tracker reply does not reset the backoff...
    c.connected(t0);
    drain(&mut c);
    c.disconnected(t0, &mut rng);
    match drain(&mut c).as_slice() {
        [Output::Connect(d)] => assert!(*d >= Duration::from_secs(60), "{d:?}"),
        other => panic!("{other:?}"),
    }
    // ...a reply from the tracker does.
    c.connected(t0);
    drain(&mut c);
    let me = ident(1, 2);
    c.frame(
        t0,
        &format!(
            r#"{{"complete":0,"incomplete":1,"action":"announce","interval":120,"info_hash":{}}}"#,
            me.info_hash.to_json()
        ),
    );
    drain(&mut c);
    c.disconnected(t0, &mut rng);
    match drain(&mut c).as_slice() {
        [Output::Connect(d)] => assert!(*d <= Duration::from_millis(1500), "{d:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn disconnect_expires_pending_offers_and_late_offers() {
    let mut rng = StdRng::seed_from_u64(8);
    let t0 = Instant::now();
    let (mut c, ids) = announced(ident(1, 2), SignalConfig::default(), t0, &mut rng);
    c.request_announce(t0);
    drain(&mut c);
    c.disconnected(t0, &mut rng);
    let outs = drain(&mut c);
    assert_eq!(outs.len(), 6);
    for (o, i) in outs.iter().zip(&ids) {
        assert_eq!(*o, Output::ExpireOffer(*i));
    }
    assert!(matches!(outs[5], Output::Connect(_)));
    assert_eq!(c.poll_timeout(), None);
    // The offers requested before the disconnect arrive late.
    let late = offers(&mut rng, 2);
    c.offers_ready(t0, late.clone());
    assert_eq!(
        drain(&mut c),
        late.iter()
            .map(|(i, _)| Output::ExpireOffer(*i))
            .collect::<Vec<_>>()
    );
    c.answer_ready(t0, Id20([1; 20]), Id20([2; 20]), "{}");
    assert_eq!(warnings(&drain(&mut c)), 1);
    // Reconnect: a fresh announce.
    c.connected(t0);
    assert_eq!(drain(&mut c), vec![Output::NeedOffers(5)]);
}

#[test]
fn foreign_info_hash_and_own_peer_id_are_ignored() {
    let mut rng = StdRng::seed_from_u64(9);
    let t0 = Instant::now();
    let me = ident(1, 2);
    let (mut c, ids) = announced(me, SignalConfig::default(), t0, &mut rng);
    let foreign = ident(4, 5);
    c.frame(
        t0,
        &reply(&foreign, r#","interval":7,"failure reason":"x""#),
    );
    c.frame(
        t0,
        &format!(
            r#"{{"action":"announce","offer":{SDP},"offer_id":{},"peer_id":{},"info_hash":{}}}"#,
            Id20([9; 20]).to_json(),
            me.peer_id.to_json(),
            me.info_hash.to_json()
        ),
    );
    c.frame(t0, &answer_frame(&me, me.peer_id, ids[0]));
    assert_eq!(drain(&mut c), vec![]);
    assert_eq!(c.pending_offers().count(), 5);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(50)));
}

#[test]
fn failure_and_warning_messages() {
    let mut rng = StdRng::seed_from_u64(10);
    let t0 = Instant::now();
    let me = ident(1, 2);
    let (mut c, _) = announced(me, SignalConfig::default(), t0, &mut rng);
    c.frame(
        t0,
        &reply(&me, r#","failure reason":"denied","interval":7"#),
    );
    assert_eq!(drain(&mut c), vec![Output::Warning("denied".into())]);
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + Duration::from_secs(50)),
        "dropped"
    );
    c.frame(
        t0,
        &reply(&me, r#","warning message":"careful","interval":7"#),
    );
    assert_eq!(
        drain(&mut c),
        vec![
            Output::Warning("careful".into()),
            Output::TrackerUpdate {
                complete: 0,
                incomplete: 1
            }
        ]
    );
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(7)));
    // The reference server's parse-error reply carries neither action nor info_hash.
    c.frame(t0, r#"{"failure reason":"invalid info_hash"}"#);
    assert_eq!(
        drain(&mut c),
        vec![Output::Warning("invalid info_hash".into())]
    );
}

#[test]
fn tracker_id_is_echoed_as_trackerid() {
    let mut rng = StdRng::seed_from_u64(11);
    let t0 = Instant::now();
    let me = ident(b'i', b'p');
    let cfg = SignalConfig {
        offers_per_announce: 1,
        ..SignalConfig::default()
    };
    let (mut c, _) = announced(me, cfg, t0, &mut rng);
    c.frame(t0, &reply(&me, r#","tracker id":"t\"1""#));
    drain(&mut c);
    c.request_announce(t0);
    drain(&mut c);
    c.offers_ready(t0, vec![(Id20([b'o'; 20]), SDP.into())]);
    let outs = drain(&mut c);
    assert_eq!(
        sends(&outs),
        vec![concat!(
            r#"{"numwant":1,"uploaded":0,"downloaded":0,"action":"announce","#,
            r#""info_hash":"iiiiiiiiiiiiiiiiiiii","peer_id":"pppppppppppppppppppp","#,
            r#""trackerid":"t\"1","offers":[{"offer":{"type":"offer","sdp":"v=0\r\n"},"#,
            r#""offer_id":"oooooooooooooooooooo"}]}"#
        )]
    );
    c.answer_ready(
        t0,
        Id20([b'q'; 20]),
        Id20([b'r'; 20]),
        r#"{"type":"answer"}"#,
    );
    let outs = drain(&mut c);
    assert!(sends(&outs)[0].ends_with(r#","offer_id":"rrrrrrrrrrrrrrrrrrrr","trackerid":"t\"1"}"#));
    c.stop(t0);
    let outs = drain(&mut c);
    assert_eq!(
        sends(&outs),
        vec![concat!(
            r#"{"numwant":1,"uploaded":0,"downloaded":0,"event":"stopped","action":"announce","#,
            r#""info_hash":"iiiiiiiiiiiiiiiiiiii","peer_id":"pppppppppppppppppppp","trackerid":"t\"1"}"#
        )]
    );
}

#[test]
fn stop_sends_stopped_and_goes_inert() {
    let mut rng = StdRng::seed_from_u64(12);
    let t0 = Instant::now();
    let me = ident(b'h', b'p');
    let (mut c, ids) = announced(me, SignalConfig::default(), t0, &mut rng);
    c.stop(t0);
    let mut want = vec![Output::Send(
        r#"{"numwant":5,"uploaded":0,"downloaded":0,"event":"stopped","action":"announce","info_hash":"hhhhhhhhhhhhhhhhhhhh","peer_id":"pppppppppppppppppppp"}"#
            .into(),
    )];
    want.extend(ids.iter().map(|i| Output::ExpireOffer(*i)));
    assert_eq!(drain(&mut c), want);
    assert_eq!(c.poll_timeout(), None);
    c.frame(t0, &reply(&me, ""));
    c.tick(t0 + Duration::from_secs(1000));
    c.disconnected(t0, &mut rng);
    c.connected(t0);
    c.request_announce(t0);
    c.stop(t0);
    assert_eq!(drain(&mut c), vec![]);
    // The stopped announce is accepted by our tracker's decoder.
    let s = match &want[0] {
        Output::Send(s) => s.clone(),
        _ => unreachable!(),
    };
    assert!(ghostmesh_tracker::wire::decode_request(s.as_bytes()).is_ok());
}

#[test]
fn hostile_frames_warn_and_never_panic() {
    let mut rng = StdRng::seed_from_u64(13);
    let t0 = Instant::now();
    let me = ident(1, 2);
    let (mut c, ids) = announced(me, SignalConfig::default(), t0, &mut rng);
    let ih = me.info_hash.to_json();
    let mut high = "a".repeat(19);
    high.push('\u{100}');
    let high = serde_json::to_string(&high).expect("json");
    let hostile = vec![
        String::new(),
        "garbage".into(),
        "[1,2,3]".into(),
        "null".into(),
        "{".into(),
        r#"{"action":5}"#.into(),
        r#"{"action":"announce"}"#.into(),
        r#"{"action":"bogus","info_hash":1}"#.into(),
        format!(r#"{{"action":"announce","info_hash":{high}}}"#),
        r#"{"action":"announce","info_hash":"short"}"#.into(),
        format!(r#"{{"action":"announce","info_hash":{ih},"complete":"many"}}"#),
        format!(r#"{{"action":"announce","info_hash":{ih},"complete":-1}}"#),
        format!(r#"{{"action":"announce","info_hash":{ih},"interval":"120"}}"#),
        format!(r#"{{"action":"announce","info_hash":{ih},"tracker id":{{}}}}"#),
        format!(
            r#"{{"action":"announce","info_hash":{ih},"offer":{SDP},"offer_id":{high},"peer_id":{}}}"#,
            Id20([3; 20]).to_json()
        ),
        format!(
            r#"{{"action":"announce","info_hash":{ih},"offer":{SDP},"offer_id":{},"peer_id":{high}}}"#,
            Id20([3; 20]).to_json()
        ),
        format!(
            r#"{{"action":"announce","info_hash":{ih},"offer":"sdp","offer_id":{},"peer_id":{}}}"#,
            Id20([3; 20]).to_json(),
            Id20([3; 20]).to_json()
        ),
        format!(
            r#"{{"action":"announce","info_hash":{ih},"answer":[1],"offer_id":{},"peer_id":{}}}"#,
            ids[0].to_json(),
            Id20([3; 20]).to_json()
        ),
        format!(r#"{{"action":"announce","info_hash":{ih},"action":"announce"}}"#),
        format!(
            r#"{{"action":"announce","info_hash":{ih},"x":"{}"}}"#,
            "y".repeat(70_000)
        ),
    ];
    for f in &hostile {
        c.frame(t0, f);
        let outs = drain(&mut c);
        assert!(
            outs.iter().all(|o| matches!(o, Output::Warning(_))) && !outs.is_empty(),
            "{}: {outs:?}",
            &f[..f.len().min(120)]
        );
        for o in &outs {
            if let Output::Warning(w) = o {
                assert!(w.len() <= 520, "warning too long");
            }
        }
    }
    assert_eq!(
        c.pending_offers().count(),
        5,
        "hostile frames touched no offer"
    );
    // Bad input from the local transport.
    c.request_announce(t0);
    drain(&mut c);
    c.offers_ready(
        t0,
        vec![
            (Id20([1; 20]), "not json".into()),
            (Id20([2; 20]), r#"{"a":1} {"b":2}"#.into()),
            (ids[0], SDP.into()),
        ],
    );
    let outs = drain(&mut c);
    assert_eq!(warnings(&outs), 3);
    assert!(sends(&outs)[0].ends_with(r#","offers":[]}"#));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,300}") {
        let mut rng = StdRng::seed_from_u64(14);
        let t0 = Instant::now();
        let (mut c, _) = announced(ident(1, 2), SignalConfig::default(), t0, &mut rng);
        c.frame(t0, &s);
        c.answer_ready(t0, Id20([1; 20]), Id20([2; 20]), &s);
        c.offers_ready(t0, vec![(Id20([3; 20]), s.clone())]);
        c.tick(t0 + Duration::from_secs(60));
        drain(&mut c);
    }

    #[test]
    fn arbitrary_tracker_objects_never_panic(
        fields in proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "action", "info_hash", "peer_id", "offer_id", "offer", "answer", "interval",
                    "min interval", "failure reason", "warning message", "tracker id", "complete",
                    "incomplete",
                ]),
                prop_oneof![
                    Just("null".to_string()),
                    Just(r#""announce""#.to_string()),
                    Just(Id20([1; 20]).to_json()),
                    Just(Id20([2; 20]).to_json()),
                    Just(Id20([3; 20]).to_json()),
                    Just(SDP.to_string()),
                    any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap_or_default()),
                    any::<i64>().prop_map(|i| i.to_string()),
                    ".{0,24}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
                    Just("[]".to_string()),
                    Just("{}".to_string()),
                    Just("true".to_string()),
                ],
            ),
            0..10,
        )
    ) {
        let mut rng = StdRng::seed_from_u64(15);
        let t0 = Instant::now();
        let (mut c, _) = announced(ident(1, 2), SignalConfig::default(), t0, &mut rng);
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        c.frame(t0, &text);
        for o in drain(&mut c) {
            if let Output::Warning(w) = o {
                prop_assert!(w.len() <= 520);
            }
        }
        c.tick(t0 + Duration::from_secs(3600 * 24));
        drain(&mut c);
    }
}

// ---------------------------------------------------------------------------------------------
// Two clients through our tracker core, in-process

mod with_tracker {
    use super::*;
    use ghostmesh_tracker::swarm::{ConnId, CoreConfig, TrackerCore};
    use ghostmesh_tracker::wire::decode_request;

    /// Runs A and B through the tracker core; returns every output of both, in order.
    fn run(seed: u64) -> Vec<(usize, Output)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut core = TrackerCore::new(CoreConfig::default());
        let t0 = Instant::now();
        let cfg = SignalConfig::default();
        let mut clients = [
            TrackerClient::new(Identity::new("ghostmesh-demo", &mut rng), cfg.clone()),
            TrackerClient::new(Identity::new("ghostmesh-demo", &mut rng), cfg),
        ];
        let mut log = Vec::new();
        let mut answered = 0;
        let mut step = |clients: &mut [TrackerClient; 2],
                        core: &mut TrackerCore,
                        rng: &mut StdRng,
                        log: &mut Vec<(usize, Output)>| {
            // Pump until quiet.
            loop {
                let mut progressed = false;
                for i in 0..2 {
                    while let Some(o) = clients[i].poll_output() {
                        progressed = true;
                        log.push((i, o.clone()));
                        match o {
                            Output::Connect(_) => clients[i].connected(t0),
                            Output::NeedOffers(n) => {
                                let offers = (0..n)
                                    .map(|k| {
                                        (
                                            Id20::random(rng),
                                            format!(r#"{{"type":"offer","sdp":"fake-{i}-{k}"}}"#),
                                        )
                                    })
                                    .collect();
                                clients[i].offers_ready(t0, offers);
                            }
                            Output::Send(text) => {
                                let req =
                                    decode_request(text.as_bytes()).expect("our frame decodes");
                                let mut out = Vec::new();
                                core.handle(ConnId(i as u64), req, t0, rng, &mut out);
                                for m in out {
                                    let to = m.to.0 as usize;
                                    clients[to].frame(t0, &m.msg.encode());
                                }
                            }
                            Output::Offer {
                                from_peer,
                                offer_id,
                                ..
                            } => {
                                answered += 1;
                                clients[i].answer_ready(
                                    t0,
                                    from_peer,
                                    offer_id,
                                    &format!(r#"{{"type":"answer","sdp":"fake-answer-{i}"}}"#),
                                );
                            }
                            Output::Warning(w) => panic!("client {i}: {w}"),
                            _ => {}
                        }
                    }
                }
                if !progressed {
                    break;
                }
            }
        };
        // A connects and announces alone, then B.
        let b_first = clients[1].poll_output();
        assert_eq!(b_first, Some(Output::Connect(Duration::ZERO)));
        step(&mut clients, &mut core, &mut rng, &mut log);
        clients[1].connected(t0);
        step(&mut clients, &mut core, &mut rng, &mut log);
        assert_eq!(answered, 1);
        log
    }

    #[test]
    fn two_clients_discover_each_other() {
        let log = run(99);
        let offer = log.iter().find_map(|(i, o)| match o {
            Output::Offer {
                from_peer,
                offer_id,
                offer,
            } => Some((*i, *from_peer, *offer_id, offer.clone())),
            _ => None,
        });
        let (to, from_peer, offer_id, offer) = offer.expect("A got B's offer");
        assert_eq!(to, 0);
        assert_eq!(offer, r#"{"type":"offer","sdp":"fake-1-0"}"#);
        let answer = log.iter().find_map(|(i, o)| match o {
            Output::Answer {
                from_peer,
                offer_id,
                answer,
            } => Some((*i, *from_peer, *offer_id, answer.clone())),
            _ => None,
        });
        let (to_b, from_a, answered_id, answer) = answer.expect("B got A's answer");
        assert_eq!(to_b, 1);
        assert_eq!(answered_id, offer_id);
        assert_eq!(answer, r#"{"type":"answer","sdp":"fake-answer-0"}"#);
        assert_ne!(from_peer, from_a);
        // Updates: A saw 1 peer, B saw 2.
        let updates: Vec<(usize, u64)> = log
            .iter()
            .filter_map(|(i, o)| match o {
                Output::TrackerUpdate { incomplete, .. } => Some((*i, *incomplete)),
                _ => None,
            })
            .collect();
        assert_eq!(updates, vec![(0, 1), (1, 2)]);
    }

    #[test]
    fn same_seed_same_frames() {
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
