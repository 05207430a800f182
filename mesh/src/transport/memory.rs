//! In-process links with settable latency and bandwidth, for tests and the harness.
//!
//! Each direction is a bounded FIFO: `send` waits when `capacity` frames are in flight (the
//! same backpressure a data channel's send-buffer limit gives). A frame becomes visible to
//! `recv` at `start + size / bandwidth + latency`, where `start` is when the direction's "wire"
//! is free, so frames serialise one after another like on a real link and stay in order. Time
//! is tokio's, so tests under `tokio::time::pause()` are exact and instant.
//!
//! ```
//! # tokio_test_block_on(async {
//! use ghostmesh::transport::memory::{MemoryConfig, pair};
//! use ghostmesh::transport::{Frame, Link};
//!
//! let (a, b) = pair("chan", MemoryConfig::default());
//! a.send(Frame::Text("hi".into())).await.unwrap();
//! assert_eq!(b.recv().await, Some(Frame::Text("hi".into())));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::Instant;

use super::{BoxFuture, Frame, Link, LinkError};

/// How a memory link behaves (the same in both directions).
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// One-way delay added to every frame.
    pub latency: Duration,
    /// Bytes per second each direction carries; `None` is unlimited.
    pub bandwidth: Option<u64>,
    /// Frames in flight per direction before `send` waits.
    pub capacity: usize,
    /// Largest frame accepted, in bytes (WebRTC peers commonly allow 256 KiB).
    pub max_frame_bytes: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            latency: Duration::ZERO,
            bandwidth: None,
            capacity: 1024,
            max_frame_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug)]
struct Shared {
    closed: AtomicBool,
    notify: Notify,
}

#[derive(Debug)]
struct Direction {
    tx: mpsc::Sender<(Instant, Frame)>,
    /// When this direction's wire is next free, and the last delivery time (for order).
    wire: std::sync::Mutex<(Instant, Instant)>,
}

/// One end of an in-memory link.
#[derive(Debug)]
pub struct MemoryLink {
    label: String,
    cfg: MemoryConfig,
    out: Direction,
    rx: Mutex<mpsc::Receiver<(Instant, Frame)>>,
    shared: Arc<Shared>,
}

/// Two connected ends.
pub fn pair(label: &str, cfg: MemoryConfig) -> (MemoryLink, MemoryLink) {
    let capacity = cfg.capacity.max(1);
    let (tx_ab, rx_ab) = mpsc::channel(capacity);
    let (tx_ba, rx_ba) = mpsc::channel(capacity);
    let shared = Arc::new(Shared {
        closed: AtomicBool::new(false),
        notify: Notify::new(),
    });
    let now = Instant::now();
    let end = |tx, rx| MemoryLink {
        label: label.to_string(),
        cfg: cfg.clone(),
        out: Direction {
            tx,
            wire: std::sync::Mutex::new((now, now)),
        },
        rx: Mutex::new(rx),
        shared: shared.clone(),
    };
    (end(tx_ab, rx_ba), end(tx_ba, rx_ab))
}

/// Closes a [`MemoryLink`] from outside (the harness cutting links, a partition); cheap to
/// clone, and does not keep the link alive.
#[derive(Debug, Clone)]
pub struct CloseHandle(Arc<Shared>);

impl CloseHandle {
    /// Closes both ends, as [`Link::close`] does.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// Whether either end closed the link.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }
}

impl MemoryLink {
    /// A handle that closes this link (both ends) from outside.
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle(self.shared.clone())
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// When a frame of `len` bytes sent now becomes visible to the other end.
    fn delivery_time(&self, len: usize) -> Instant {
        let now = Instant::now();
        let mut wire = self.out.wire.lock().unwrap_or_else(|e| e.into_inner());
        let start = wire.0.max(now);
        let on_wire = match self.cfg.bandwidth {
            Some(bw) if bw > 0 => Duration::from_secs_f64(len as f64 / bw as f64),
            _ => Duration::ZERO,
        };
        wire.0 = start + on_wire;
        // Ordered and reliable: never deliver before the previous frame.
        let at = (wire.0 + self.cfg.latency).max(wire.1);
        wire.1 = at;
        at
    }

    async fn send_frame(&self, frame: Frame) -> Result<(), LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed);
        }
        let size = frame.len();
        if size > self.cfg.max_frame_bytes {
            return Err(LinkError::TooLarge {
                size,
                max: self.cfg.max_frame_bytes,
            });
        }
        // Reserve a slot first (backpressure), then stamp the delivery time, so a sender that
        // waited is timed from when its frame really entered the wire.
        let closed = self.shared.notify.notified();
        tokio::pin!(closed);
        let permit = tokio::select! {
            p = self.out.tx.reserve() => p.map_err(|_| LinkError::Closed)?,
            _ = &mut closed => return Err(LinkError::Closed),
        };
        if self.is_closed() {
            return Err(LinkError::Closed);
        }
        permit.send((self.delivery_time(size), frame));
        Ok(())
    }

    async fn recv_frame(&self) -> Option<Frame> {
        let mut rx = self.rx.lock().await;
        let closed = self.shared.notify.notified();
        tokio::pin!(closed);
        // Register for the close notification before checking the flag.
        closed.as_mut().enable();
        if self.is_closed() {
            return None;
        }
        let (at, frame) = tokio::select! {
            f = rx.recv() => f?,
            _ = &mut closed => return None,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => Some(frame),
            _ = &mut closed => None,
        }
    }
}

impl Link for MemoryLink {
    fn send(&self, frame: Frame) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(self.send_frame(frame))
    }

    fn recv(&self) -> BoxFuture<'_, Option<Frame>> {
        Box::pin(self.recv_frame())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.close_handle().close() })
    }

    fn label(&self) -> &str {
        &self.label
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn text(s: &str) -> Frame {
        Frame::Text(s.into())
    }

    #[tokio::test]
    async fn frames_cross_both_ways_in_order() {
        let (a, b) = pair("x", MemoryConfig::default());
        for i in 0..100 {
            a.send(text(&i.to_string())).await.unwrap();
        }
        b.send(Frame::Binary(vec![1, 2, 3])).await.unwrap();
        for i in 0..100 {
            assert_eq!(b.recv().await, Some(text(&i.to_string())));
        }
        assert_eq!(a.recv().await, Some(Frame::Binary(vec![1, 2, 3])));
        assert_eq!(a.label(), "x");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_every_frame_exactly() {
        let cfg = MemoryConfig {
            latency: Duration::from_millis(40),
            ..MemoryConfig::default()
        };
        let (a, b) = pair("x", cfg);
        let t0 = Instant::now();
        a.send(text("one")).await.unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        a.send(text("two")).await.unwrap();
        assert_eq!(b.recv().await, Some(text("one")));
        assert_eq!(Instant::now() - t0, Duration::from_millis(40));
        assert_eq!(b.recv().await, Some(text("two")));
        assert_eq!(Instant::now() - t0, Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn bandwidth_serialises_frames() {
        let cfg = MemoryConfig {
            bandwidth: Some(10_000),
            latency: Duration::from_millis(5),
            ..MemoryConfig::default()
        };
        let (a, b) = pair("x", cfg);
        let t0 = Instant::now();
        for _ in 0..10 {
            a.send(Frame::Binary(vec![0; 1000])).await.unwrap();
        }
        for _ in 0..10 {
            b.recv().await.unwrap();
        }
        // 10 kB at 10 kB/s, plus the latency of the last frame.
        assert_eq!(Instant::now() - t0, Duration::from_millis(1005));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_direction_makes_send_wait() {
        let cfg = MemoryConfig {
            capacity: 2,
            ..MemoryConfig::default()
        };
        let (a, b) = pair("x", cfg);
        a.send(text("1")).await.unwrap();
        a.send(text("2")).await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(1), a.send(text("3"))).await;
        assert!(
            third.is_err(),
            "the third send must wait while 2 frames are in flight"
        );
        assert_eq!(b.recv().await, Some(text("1")));
        a.send(text("3")).await.unwrap();
    }

    #[tokio::test]
    async fn close_ends_both_sides_and_blocked_calls() {
        let cfg = MemoryConfig {
            capacity: 1,
            ..MemoryConfig::default()
        };
        let (a, b) = pair("x", cfg);
        let b = Arc::new(b);
        let waiting = {
            let b = b.clone();
            tokio::spawn(async move { b.recv().await })
        };
        a.send(text("fill")).await.unwrap();
        assert_eq!(waiting.await.unwrap(), Some(text("fill")));
        let waiting = {
            let b = b.clone();
            tokio::spawn(async move { b.recv().await })
        };
        tokio::task::yield_now().await;
        a.close().await;
        assert_eq!(waiting.await.unwrap(), None);
        assert_eq!(a.send(text("late")).await, Err(LinkError::Closed));
        assert_eq!(b.send(text("late")).await, Err(LinkError::Closed));
        assert_eq!(a.recv().await, None);
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let cfg = MemoryConfig {
            max_frame_bytes: 4,
            ..MemoryConfig::default()
        };
        let (a, _b) = pair("x", cfg);
        assert_eq!(
            a.send(text("12345")).await,
            Err(LinkError::TooLarge { size: 5, max: 4 })
        );
        a.send(text("1234")).await.unwrap();
    }
}
