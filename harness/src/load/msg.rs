//! The frames a load connection sends (announces with realistic SDP-sized offers, answers,
//! scrapes) and the light parse of what it receives.

use std::borrow::Cow;
use std::fmt::Write as _;

use ghostmesh_tracker::wire::Id20;
use rand::{Rng, RngExt};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A non-trickle Chrome data-channel offer (host, srflx and TCP candidates), ~750 bytes like
/// the offers real WebTorrent/P2PT peers send. `{U}`, `{P}`, `{F}` and `{S}` are replaced per
/// connection (ICE credentials, DTLS fingerprint, setup role).
const SDP_TEMPLATE: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=application 50712 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 192.168.1.23\r\n\
a=candidate:1467250027 1 udp 2122260223 192.168.1.23 50712 typ host generation 0 network-id 1 network-cost 10\r\n\
a=candidate:3272342213 1 udp 1686052607 203.0.113.45 50712 typ srflx raddr 192.168.1.23 rport 50712 generation 0 network-id 1 network-cost 10\r\n\
a=candidate:434397563 1 tcp 1518280447 192.168.1.23 9 typ host tcptype active generation 0 network-id 1 network-cost 10\r\n\
a=ice-ufrag:{U}\r\n\
a=ice-pwd:{P}\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 {F}\r\n\
a=setup:{S}\r\n\
a=mid:0\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

fn random_token<R: Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect()
}

/// The `offer` and `answer` objects of one connection, already JSON-encoded.
#[derive(Debug, Clone)]
pub struct Sdp {
    /// `{"type":"offer","sdp":"..."}`.
    pub offer_json: String,
    /// `{"type":"answer","sdp":"..."}`.
    pub answer_json: String,
}

impl Sdp {
    /// Fresh ICE credentials and fingerprint; `sdp_bytes` pads (or trims nothing below) the
    /// SDP text to about that many bytes when it is larger than the template.
    pub fn new<R: Rng + ?Sized>(rng: &mut R, sdp_bytes: usize) -> Sdp {
        let ufrag = random_token(rng, 4);
        let pwd = random_token(rng, 24);
        let mut fp = String::with_capacity(95);
        for i in 0..32 {
            if i > 0 {
                fp.push(':');
            }
            let _ = write!(fp, "{:02X}", rng.random::<u8>());
        }
        let make = |kind: &str, setup: &str| {
            let mut sdp = SDP_TEMPLATE
                .replace("{U}", &ufrag)
                .replace("{P}", &pwd)
                .replace("{F}", &fp)
                .replace("{S}", setup);
            // Larger SDPs (more candidates) as extra candidate-like lines.
            let mut n = 0u32;
            while sdp.len() + 90 <= sdp_bytes {
                let _ = write!(
                    sdp,
                    "a=candidate:{} 1 udp 2122194687 10.{}.{}.{} 5{:04} typ host generation 0\r\n",
                    1_000_000_000 + n,
                    n % 250,
                    (n / 250) % 250,
                    n % 200 + 1,
                    n % 10_000
                );
                n += 1;
            }
            let mut j = String::with_capacity(sdp.len() + 64);
            j.push_str(r#"{"type":""#);
            j.push_str(kind);
            j.push_str(r#"","sdp":"#);
            ghostmesh_tracker::wire::push_json_str(&mut j, &sdp);
            j.push('}');
            j
        };
        Sdp {
            offer_json: make("offer", "actpass"),
            answer_json: make("answer", "active"),
        }
    }
}

/// An announce with `offers` offers. `event` is "started" on a peer's first announce in a
/// swarm, absent afterwards (a regular update), as real clients do.
pub fn announce<R: Rng + ?Sized>(
    rng: &mut R,
    info_hash: &Id20,
    peer_id: &Id20,
    left: u64,
    first: bool,
    offers: usize,
    sdp: &Sdp,
) -> String {
    let mut s = String::with_capacity(200 + offers * (sdp.offer_json.len() + 60));
    s.push_str(r#"{"action":"announce","info_hash":"#);
    info_hash.push_json(&mut s);
    s.push_str(r#","peer_id":"#);
    peer_id.push_json(&mut s);
    let _ = write!(
        s,
        r#","numwant":{offers},"uploaded":0,"downloaded":0,"left":{left}"#
    );
    if first {
        s.push_str(r#","event":"started""#);
    }
    s.push_str(r#","offers":["#);
    for i in 0..offers {
        if i > 0 {
            s.push(',');
        }
        s.push_str(r#"{"offer_id":"#);
        Id20::random(rng).push_json(&mut s);
        s.push_str(r#","offer":"#);
        s.push_str(&sdp.offer_json);
        s.push('}');
    }
    s.push_str("]}");
    s
}

/// An answer to a relayed offer. `info_hash`, `to_peer_id` and `offer_id` are the JSON string
/// literals exactly as the tracker sent them.
pub fn answer(
    info_hash_raw: &str,
    peer_id: &Id20,
    to_peer_raw: &str,
    offer_id_raw: &str,
    sdp: &Sdp,
) -> String {
    let mut s = String::with_capacity(200 + sdp.answer_json.len());
    s.push_str(r#"{"action":"announce","info_hash":"#);
    s.push_str(info_hash_raw);
    s.push_str(r#","peer_id":"#);
    peer_id.push_json(&mut s);
    s.push_str(r#","to_peer_id":"#);
    s.push_str(to_peer_raw);
    s.push_str(r#","offer_id":"#);
    s.push_str(offer_id_raw);
    s.push_str(r#","answer":"#);
    s.push_str(&sdp.answer_json);
    s.push('}');
    s
}

/// A scrape of several info_hashes.
pub fn scrape(hashes: &[Id20]) -> String {
    let mut s = String::from(r#"{"action":"scrape","info_hash":["#);
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        h.push_json(&mut s);
    }
    s.push_str("]}");
    s
}

/// The fields of a tracker message the load generator looks at.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub info_hash: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub peer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub offer_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub offer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub answer: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "failure reason")]
    pub failure: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub files: Option<&'a RawValue>,
}

/// What a received frame is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// An announce reply for this swarm.
    AnnounceReply(Option<Id20>),
    /// A relayed offer.
    Offer,
    /// A relayed answer.
    Answer,
    /// A scrape reply.
    Scrape,
    /// An error reply, for this swarm when it says.
    Error(Option<Id20>),
    /// Something else.
    Other,
}

/// Decodes a raw JSON string literal holding a binary-string id.
pub fn raw_id(raw: &RawValue) -> Option<Id20> {
    let s: Cow<'_, str> = serde_json::from_str(raw.get()).ok()?;
    Id20::from_binary_str(&s).ok()
}

impl Incoming<'_> {
    /// Classifies the message.
    pub fn kind(&self) -> Kind {
        if self.failure.is_some() {
            return Kind::Error(self.info_hash.and_then(raw_id));
        }
        if self.offer.is_some() {
            return Kind::Offer;
        }
        if self.answer.is_some() {
            return Kind::Answer;
        }
        match self.action.as_deref() {
            Some("scrape") => Kind::Scrape,
            Some("announce") if self.files.is_none() => {
                Kind::AnnounceReply(self.info_hash.and_then(raw_id))
            }
            Some("announce") => Kind::Scrape,
            _ => Kind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn frames_decode_with_the_tracker_codec() {
        let mut rng = SmallRng::seed_from_u64(7);
        let sdp = Sdp::new(&mut rng, 0);
        assert!(
            (650..=1000).contains(&sdp.offer_json.len()),
            "{}",
            sdp.offer_json.len()
        );
        let h = Id20([0x22; 20]); // '"' needs escaping
        let p = Id20([0x5c; 20]); // '\\' too
        let a = announce(&mut rng, &h, &p, 50, true, 10, &sdp);
        match ghostmesh_tracker::wire::decode_request(a.as_bytes()).expect("valid announce") {
            ghostmesh_tracker::wire::Request::Announce(ann) => {
                assert_eq!(ann.info_hash, h);
                assert_eq!(ann.peer_id, p);
                assert_eq!(ann.offers.len(), 10);
            }
            other => panic!("not an announce: {other:?}"),
        }
        let ans = answer(
            &h.to_json(),
            &p,
            &Id20([1; 20]).to_json(),
            &Id20([2; 20]).to_json(),
            &sdp,
        );
        assert!(matches!(
            ghostmesh_tracker::wire::decode_request(ans.as_bytes()),
            Ok(ghostmesh_tracker::wire::Request::Answer(_))
        ));
        let sc = scrape(&[h, p]);
        assert!(matches!(
            ghostmesh_tracker::wire::decode_request(sc.as_bytes()),
            Ok(ghostmesh_tracker::wire::Request::Scrape(_))
        ));
        let big = Sdp::new(&mut rng, 2000);
        assert!(big.offer_json.len() >= 1900);
    }

    #[test]
    fn replies_are_classified() {
        let h = Id20([3; 20]);
        let reply = format!(
            r#"{{"action":"announce","info_hash":{},"complete":1,"incomplete":2,"interval":120}}"#,
            h.to_json()
        );
        let m: Incoming<'_> = serde_json::from_str(&reply).expect("json");
        assert_eq!(m.kind(), Kind::AnnounceReply(Some(h)));
        let err = r#"{"action":"announce","failure reason":"nope"}"#;
        let m: Incoming<'_> = serde_json::from_str(err).expect("json");
        assert_eq!(m.kind(), Kind::Error(None));
        let sc = r#"{"action":"scrape","files":{}}"#;
        let m: Incoming<'_> = serde_json::from_str(sc).expect("json");
        assert_eq!(m.kind(), Kind::Scrape);
    }
}
