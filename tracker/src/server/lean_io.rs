//! The socket under a connection's WebSocket layer: big reads and batched writes, with no
//! buffer held while the connection is idle.
//!
//! Reads: tungstenite allocates its read buffer (`read_buffer_size`) up front, per connection,
//! and reads at most that much per call. A 4 KiB buffer was most of an idle connection's
//! memory; a 512-byte one alone would cost ~20 `read` syscalls per 10 KB announce. `LeanIo`
//! reads up to 16 KiB at once into a stack buffer, hands over what was asked for, and keeps
//! the rest on the heap only until it is consumed.
//!
//! Writes: in a batch (see [`LeanIo::set_batching`]) frames collect in one buffer and go out
//! in one `write` on flush instead of one syscall per frame (`sendto` was ~43 % of the
//! tracker's CPU under load); the buffer is freed once written. Outside a batch, writes go
//! straight through, so frames tungstenite writes on its own (pongs, close replies) are never
//! held back.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct LeanIo<S> {
    io: S,
    /// Read but not yet handed over; empty (no allocation) most of the time.
    spill: Vec<u8>,
    spill_pos: usize,
    /// Written in a batch, not yet on the socket; empty (no allocation) between batches.
    out: Vec<u8>,
    out_pos: usize,
    batching: bool,
}

impl<S> LeanIo<S> {
    pub(crate) fn new(io: S) -> Self {
        LeanIo {
            io,
            spill: Vec::new(),
            spill_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            batching: false,
        }
    }

    /// While on, writes collect until the next flush.
    pub(crate) fn set_batching(&mut self, on: bool) {
        self.batching = on;
    }

    /// Bytes collected and not yet written.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

impl<S: AsyncWrite + Unpin> LeanIo<S> {
    /// Writes out the batch buffer; frees it once empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        if self.out.capacity() > 0 {
            self.out = Vec::new();
            self.out_pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LeanIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.spill_pos < this.spill.len() {
            let n = (this.spill.len() - this.spill_pos).min(buf.remaining());
            buf.put_slice(&this.spill[this.spill_pos..this.spill_pos + n]);
            this.spill_pos += n;
            if this.spill_pos == this.spill.len() {
                this.spill = Vec::new();
                this.spill_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_CHUNK {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut ahead = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut this.io).poll_read(cx, &mut ahead))?;
        let got = ahead.filled();
        let n = got.len().min(buf.remaining());
        buf.put_slice(&got[..n]);
        if n < got.len() {
            this.spill = got[n..].to_vec();
            this.spill_pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LeanIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.batching {
            this.out.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // What a batch left unwritten goes first.
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order_and_the_spill_is_freed() {
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).await.expect("write");
        drop(a);
        let mut r = LeanIo::new(b);
        let mut out = Vec::new();
        let mut small = [0u8; 300];
        loop {
            let n = r.read(&mut small).await.expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&small[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(r.spill.capacity(), 0, "nothing held once consumed");
    }

    #[tokio::test]
    async fn large_reads_bypass_the_read_ahead() {
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        a.write_all(&[7u8; 20_000]).await.expect("write");
        drop(a);
        let mut r = LeanIo::new(b);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.expect("read");
        assert_eq!(out.len(), 20_000);
        assert!(r.spill.is_empty());
    }

    #[tokio::test]
    async fn batched_writes_wait_for_flush_and_unbatched_ones_keep_order() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut w = LeanIo::new(a);
        w.set_batching(true);
        w.write_all(b"one,").await.expect("write");
        w.write_all(b"two,").await.expect("write");
        assert_eq!(w.pending(), 8);
        w.set_batching(false);
        // An unbatched write drains the batch first.
        w.write_all(b"three").await.expect("write");
        assert_eq!(w.pending(), 0);
        assert_eq!(
            w.out.capacity(),
            0,
            "the batch buffer is freed once written"
        );
        w.set_batching(true);
        w.write_all(b",four").await.expect("write");
        w.flush().await.expect("flush");
        assert_eq!(w.pending(), 0);
        drop(w);
        let mut got = String::new();
        b.read_to_string(&mut got).await.expect("read");
        assert_eq!(got, "one,two,three,four");
    }
}
