//! The Tokio runtime webrtc-rs runs each peer connection on, with two changes:
//!
//! * UDP sockets get larger kernel buffers ([`super::WebRtcConfig::socket_buffer_bytes`]);
//! * while the connection is being set up, the driver's timer is capped
//!   ([`super::WebRtcConfig::setup_wake_interval`]).
//!
//! Why the timer cap: webrtc-rs 0.21's driver loop flushes the packets its core queued at the
//! top of each iteration, then handles events (ICE connected, DTLS done, SCTP up), then sleeps
//! until the next protocol timer. Packets queued *while handling those events* (the DTLS
//! ClientHello, the SCTP INIT, the DCEP OPEN) wait for that timer: on loopback ~200 ms at each
//! of the three steps, ~600 ms per connection. A capped sleep makes the driver loop again
//! promptly; `handle_timeout` with no timer due does nothing, so the only cost is a few hundred
//! cheap wake-ups per connection setup. The cap runs from the moment the handshake can start
//! (the offerer applies the answer; the answerer has made its answer) until the channel opens,
//! the connection is dropped, or a bounded window passes (`setup.rs`).

use std::io;
use std::net::UdpSocket;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

type PinFut<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The driver-timer cap of one connection; shared by its runtime and its setup code.
///
/// Off until [`WakeCap::start`] (when the handshake can start: before that nothing is queued,
/// and an offer may wait long for an answer that never comes), then on until [`WakeCap::end`]
/// or the deadline given to `start`, whichever comes first.
#[derive(Debug, Default)]
pub(super) struct WakeCap {
    /// The cap and its end; `None` = no cap.
    state: Mutex<Option<(Duration, Instant)>>,
}

impl WakeCap {
    /// Caps the driver's sleeps at `cap` (if any) until `end` is called or `limit` has passed.
    pub(super) fn start(&self, cap: Option<Duration>, limit: Duration) {
        let on = cap.map(|c| (c, Instant::now() + limit));
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = on;
    }

    /// Removes the cap (the connection is up, or given up).
    pub(super) fn end(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn cap(&self, d: Duration) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            Some((cap, until)) if Instant::now() < until => d.min(cap),
            Some(_) => {
                *state = None;
                d
            }
            None => d,
        }
    }
}

/// Tokio runtime with bigger UDP socket buffers and a driver-timer cap during setup.
#[derive(Debug)]
pub(super) struct BufRuntime {
    inner: TokioRuntime,
    socket_buffer_bytes: usize,
    wake: Arc<WakeCap>,
}

impl BufRuntime {
    pub(super) fn new(socket_buffer_bytes: usize, wake: Arc<WakeCap>) -> Self {
        BufRuntime {
            inner: TokioRuntime,
            socket_buffer_bytes,
            wake,
        }
    }
}

impl Runtime for BufRuntime {
    fn spawn(&self, future: PinFut<'static, ()>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }
    fn spawn_reactor(&self, pool: usize, future: PinFut<'static, ()>) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(pool, future)
    }
    fn wrap_udp_socket(&self, socket: UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        if self.socket_buffer_bytes > 0 {
            let r = socket2::SockRef::from(&socket);
            // Best effort: the kernel clamps to rmem_max/wmem_max, and an error only costs speed.
            let _ = r.set_recv_buffer_size(self.socket_buffer_bytes);
            let _ = r.set_send_buffer_size(self.socket_buffer_bytes);
        }
        self.inner.wrap_udp_socket(socket)
    }
    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }
    fn connect_tcp<'a>(
        &'a self,
        remote: std::net::SocketAddr,
    ) -> PinFut<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        self.inner.connect_tcp(remote)
    }
    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> PinFut<'a, io::Result<Vec<std::net::SocketAddr>>> {
        self.inner.resolve_host(host)
    }
    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }
    fn sleep(&self, duration: Duration) -> PinFut<'static, ()> {
        // The driver's timer (and a 50 ms send-capacity backstop) are the only sleeps
        // webrtc-rs 0.21 takes; both are fine waking early.
        self.inner.sleep(self.wake.cap(duration))
    }
    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }
    fn block_on(&self, future: Pin<Box<dyn std::future::Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }
    fn yield_now(&self) -> PinFut<'static, ()> {
        self.inner.yield_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_shortens_sleeps_until_ended() {
        let second = Duration::from_secs(1);
        let w = WakeCap::default();
        assert_eq!(w.cap(second), second);
        w.start(Some(Duration::from_millis(2)), Duration::from_secs(60));
        assert_eq!(w.cap(second), Duration::from_millis(2));
        assert_eq!(w.cap(Duration::from_micros(5)), Duration::from_micros(5));
        w.end();
        assert_eq!(w.cap(second), second);
        w.start(None, Duration::from_secs(60));
        assert_eq!(w.cap(second), second);
        w.start(Some(Duration::from_millis(2)), Duration::ZERO);
        assert_eq!(w.cap(second), second);
    }
}
