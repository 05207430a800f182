//! A counting proxy between live peers and a `ws://` tracker, so the live backend measures the
//! tracker's traffic as the sim does: the payload bytes of every WebSocket data frame, both
//! ways, and the number of messages (the HTTP upgrade and frame headers are not counted).
//! It also lets the harness take an external tracker away from the peers
//! ([`TrackerProxy::cut`]): `tracker_restart` on a tracker the harness does not own.
//!
//! Peers get `ws://127.0.0.1:<proxy port><path>`; each connection is passed on to the
//! tracker's address as it is (a connection the tracker refuses is closed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long connecting to the tracker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest HTTP upgrade head the counter looks through.
const MAX_HEAD: usize = 64 * 1024;

/// Tracker messages and their payload bytes, both ways.
#[derive(Debug, Default)]
pub(crate) struct TrackerCounters {
    pub(crate) bytes: AtomicU64,
    pub(crate) frames: AtomicU64,
}

/// A running proxy; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub(crate) struct TrackerProxy {
    port: u16,
    pub(crate) counters: Arc<TrackerCounters>,
    down: Arc<AtomicBool>,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for TrackerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `ws://host:port/path` to (`host:port`, `/path`); `None` for anything else (`wss://`).
pub(crate) fn split_ws_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("ws://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    // A bracketed IPv6 address keeps its colons; a port is what follows the last `]:` or `:`.
    let has_port = match host.rfind(']') {
        Some(i) => host[i..].contains(':'),
        None => host.contains(':'),
    };
    let host = if has_port {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    Some((host, path.to_owned()))
}

impl TrackerProxy {
    /// Listens on 127.0.0.1 and passes connections on to `upstream` (`host:port`).
    pub(crate) async fn start(upstream: String) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("the tracker proxy cannot listen: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let counters = Arc::new(TrackerCounters::default());
        let down = Arc::new(AtomicBool::new(false));
        let (cut, cut_rx) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            counters.clone(),
            down.clone(),
            cut_rx,
        ));
        Ok(TrackerProxy {
            port,
            counters,
            down,
            cut,
            task,
        })
    }

    /// The URL peers use: `ws://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `true`: close every open connection and refuse new ones; `false`: accept again.
    pub(crate) fn cut(&self, down: bool) {
        self.down.store(down, Ordering::Release);
        if down {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    counters: Arc<TrackerCounters>,
    down: Arc<AtomicBool>,
    cut: watch::Receiver<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if down.load(Ordering::Acquire) {
            drop(client);
            continue;
        }
        let (upstream, counters, cut) = (upstream.clone(), counters.clone(), cut.clone());
        tokio::spawn(async move {
            let server =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&upstream)).await {
                    Ok(Ok(s)) => s,
                    _ => return, // the tracker is down: the peer sees its connection close
                };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            relay(client, server, counters, cut).await;
        });
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    counters: Arc<TrackerCounters>,
    mut cut: watch::Receiver<u64>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = pipe(&mut cr, &mut sw, &counters);
    let downstream = pipe(&mut sr, &mut cw, &counters);
    let _ = cut.borrow_and_update();
    // Whichever side ends (or a cut) ends both: the halves drop and the sockets close.
    tokio::select! {
        () = up => {}
        () = downstream => {}
        _ = cut.changed() => {}
    }
}

async fn pipe(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    counters: &TrackerCounters,
) {
    let mut counter = WsCounter::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (bytes, frames) = counter.feed(&buf[..n]);
        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        counters.frames.fetch_add(frames, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Counts the data frames of one direction of a WebSocket connection: skips the HTTP head,
/// then reads frame headers and counts the payload bytes of text, binary and continuation
/// frames, and one message per text or binary frame.
#[derive(Debug, Default)]
pub(crate) struct WsCounter {
    head_done: bool,
    /// The last bytes of the head seen so far (to find `\r\n\r\n` across reads).
    head: Vec<u8>,
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    skip: u64,
    /// Whether the current frame is a data frame.
    data: bool,
}

impl WsCounter {
    /// Feeds the next bytes; returns (payload bytes, messages) they completed or carried.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> (u64, u64) {
        let (mut bytes, mut frames) = (0u64, 0u64);
        if !self.head_done {
            let start = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(input);
            match self.head[start..].windows(4).position(|w| w == b"\r\n\r\n") {
                Some(i) => {
                    let end = start + i + 4;
                    let rest_from = end - (self.head.len() - input.len());
                    input = &input[rest_from..];
                    self.head_done = true;
                    self.head = Vec::new();
                }
                None => {
                    if self.head.len() > MAX_HEAD {
                        self.head.drain(..self.head.len() - 3);
                    }
                    return (0, 0);
                }
            }
        }
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len() as u64);
                if self.data {
                    bytes += n;
                }
                self.skip -= n;
                input = &input[n as usize..];
                continue;
            }
            self.header.push(input[0]);
            input = &input[1..];
            if self.header.len() < 2 {
                continue;
            }
            let len7 = self.header[1] & 0x7f;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
            if self.header.len() < 2 + ext + mask {
                continue;
            }
            let len = match ext {
                0 => u64::from(len7),
                n => self.header[2..2 + n]
                    .iter()
                    .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
            };
            let opcode = self.header[0] & 0x0f;
            self.data = matches!(opcode, 0..=2);
            if matches!(opcode, 1 | 2) {
                frames += 1;
            }
            self.skip = len;
            self.header.clear();
        }
        (bytes, frames)
    }
}

/// `GET path` on `host:port` (HTTP/1.1, `Connection: close`), bounded: the status code and
/// the body.
pub(crate) async fn http_get(host: &str, path: &str) -> Result<(u16, String), String> {
    let probe = async {
        let mut s = TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", &head[..head.len().min(40)]))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .map_err(|_| format!("GET http://{host}{path}: no answer within 5 s"))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn counts_data_frames_across_any_split() {
        let mut stream = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        stream.extend(frame(1, true, b"{\"action\":\"announce\"}"));
        stream.extend(frame(9, true, b"ping")); // control: not counted
        stream.extend(frame(2, true, &vec![7u8; 300]));
        stream.extend(frame(1, false, &vec![b'x'; 70_000]));
        let want = (21 + 300 + 70_000, 3);
        for chunk in [1, 2, 3, 7, 100, stream.len()] {
            let mut c = WsCounter::default();
            let mut got = (0, 0);
            for piece in stream.chunks(chunk) {
                let (b, f) = c.feed(piece);
                got.0 += b;
                got.1 += f;
            }
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    #[test]
    fn ws_urls_split_into_address_and_path() {
        assert_eq!(
            split_ws_url("ws://tracker:8000"),
            Some(("tracker:8000".into(), String::new()))
        );
        assert_eq!(
            split_ws_url("ws://example.org/announce"),
            Some(("example.org:80".into(), "/announce".into()))
        );
        assert_eq!(split_ws_url("wss://example.org"), None);
    }
}
