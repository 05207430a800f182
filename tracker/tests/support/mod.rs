//! Test support: start a tracker in-process on 127.0.0.1:0 and talk to it like a client.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ghostmesh_tracker::{Config, Tracker};
use rand::SeedableRng;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// A config for tests: loopback, port 0, quiet timers.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    }
}

/// Starts a tracker with `f` applied to the test config; the peer-choice RNG is seeded.
pub async fn start(f: impl FnOnce(&mut Config)) -> Tracker {
    let mut cfg = test_config();
    f(&mut cfg);
    Tracker::start_with_rng(cfg, rand::rngs::StdRng::seed_from_u64(42))
        .await
        .expect("tracker starts")
}

/// A 20-character binary string of one repeated byte.
pub fn bin(b: u8) -> String {
    std::iter::repeat_n(b as char, 20).collect()
}

/// A 20-character binary string from a seed, with bytes across the whole 0..=255 range.
pub fn id(seed: u32) -> String {
    (0..20u32)
        .map(|i| ((seed.wrapping_mul(2654435761).wrapping_add(i * 97)) % 256) as u8 as char)
        .collect()
}

/// An announce frame.
pub fn announce(info_hash: &str, peer_id: &str) -> Value {
    json!({"action": "announce", "info_hash": info_hash, "peer_id": peer_id, "numwant": 5,
           "uploaded": 0, "downloaded": 0})
}

/// `n` offers with distinct offer ids derived from `tag`.
pub fn offers(tag: u8, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"offer_id": id(tag as u32 * 1000 + i as u32),
                       "offer": {"type": "offer", "sdp": format!("v=0\r\no=- {tag} {i} IN IP4 127.0.0.1\r\n")}})
            })
            .collect(),
    )
}

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects to `url` (ws://).
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connects");
        Client { ws }
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, v: &Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::text(s.to_string()))
            .await
            .expect("send");
    }

    /// Next JSON message within `d`; `None` on timeout or close.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("tracker sent valid JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Next JSON message; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        self.recv_within(WAIT)
            .await
            .expect("a message from the tracker")
    }

    /// Asserts nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(v) = self.recv_within(d).await {
            panic!("expected no message, got {v}");
        }
    }

    /// Reads until the close frame; returns it (`None` if the socket ended without one).
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => return f,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("no close within {WAIT:?}"),
            }
        }
    }
}

/// GETs `url` (http://) and returns (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    parse_http_response(&buf)
}

/// (status, body) of a raw HTTP/1.1 response.
pub fn parse_http_response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

// ---- Helpers for limits.rs and operations.rs ----

/// Connects to `url` (ws://) with extra request headers. On refusal returns the HTTP status of
/// the refusal (0 when there was no HTTP response at all, e.g. connection refused).
pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut req = url.into_client_request().expect("valid ws url");
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => panic!("connect to {url}: no answer within {WAIT:?}"),
        Ok(Ok((ws, _))) => Ok(Client { ws }),
        Ok(Err(WsError::Http(resp))) => Err(resp.status().as_u16()),
        Ok(Err(_)) => Err(0),
    }
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The 40-hex-digit form of a 20-character binary string (as access-list files hold them).
pub fn hex(binary: &str) -> String {
    binary
        .chars()
        .map(|c| format!("{:02x}", c as u32))
        .collect()
}

/// One drop counter of a snapshot by its reason label (`offer_queue_full`, ...).
pub fn drops(t: &Tracker, reason: &str) -> u64 {
    t.snapshot()
        .drops
        .iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("no drop reason {reason}"))
}

/// Asserts `v` is an error reply: `action`, a `failure reason` containing `needle`, and
/// `info_hash` exactly as given (absent when `None`).
pub fn assert_error_reply(v: &Value, action: &str, info_hash: Option<&str>, needle: &str) {
    assert_eq!(v["action"], action, "error reply must carry action: {v}");
    let reason = v["failure reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no failure reason: {v}"));
    assert!(
        reason.contains(needle),
        "reason {reason:?} should mention {needle:?}"
    );
    match info_hash {
        Some(h) => assert_eq!(v["info_hash"], h, "{v}"),
        None => assert!(v.get("info_hash").is_none(), "{v}"),
    }
}

/// Asserts `v` is an announce reply for `info_hash` and returns (complete, incomplete).
pub fn assert_announce_reply(v: &Value, info_hash: &str) -> (u64, u64) {
    assert_eq!(v["action"], "announce", "{v}");
    assert!(v.get("failure reason").is_none(), "unexpected error: {v}");
    assert_eq!(v["info_hash"], info_hash, "{v}");
    (
        v["complete"].as_u64().expect("complete"),
        v["incomplete"].as_u64().expect("incomplete"),
    )
}
