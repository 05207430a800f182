//! [`HashFollower`]: the SHA-256 of an incoming file, computed as its bytes arrive in order,
//! off the core's task.
//!
//! Why: hashing on arrival inside the core (as before) put ~40 µs of SHA-256 per 64 KiB on
//! the one task that also reads every frame of every peer, writes them and sends the acks.
//! Now the core only says how far the file is contiguous from byte 0; a task hashes up to
//! there on the blocking pool, reading back the bytes the core has just written (they are in
//! the page cache: a copy, no disk read), in passes of at least [`STEP`] bytes so a fast
//! transfer costs one wake-up per MiB, not one per frame. At completion the core takes the
//! hasher back and hashes whatever is left (usually under one step) before deciding.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The core publishes progress in steps of at least this many bytes.
const STEP: u64 = 1 << 20;
/// One blocking pass hashes at most this many bytes (so a transfer that ends stops its
/// follower soon).
const MAX_PASS: u64 = 8 << 20;
/// Bytes read back per `pread`.
const READ: usize = 1 << 20;

/// Follows one incoming file's contiguous prefix with a SHA-256.
pub(super) struct HashFollower {
    front: watch::Sender<u64>,
    published: u64,
    task: JoinHandle<(Sha256, u64)>,
}

impl HashFollower {
    /// Starts following `file` (needs a Tokio runtime).
    pub(super) fn start(file: Arc<std::fs::File>) -> Self {
        let (front, mut rx) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut hasher = Sha256::new();
            let mut hashed = 0u64;
            let mut buf = Vec::new();
            // Ends when the core drops the sender (the transfer completed, failed or ended).
            while let Ok(front) = rx.wait_for(|&f| f > hashed).await.map(|f| *f) {
                let target = front.min(hashed + MAX_PASS);
                let file = file.clone();
                let pass =
                    tokio::task::spawn_blocking(move || feed(hasher, buf, &file, hashed, target))
                        .await;
                match pass {
                    Ok((h, b, reached)) => {
                        hasher = h;
                        buf = b;
                        let failed = reached < target;
                        hashed = reached;
                        if failed {
                            // A read failed: the final pass (`hash_file`) retries and reports it.
                            break;
                        }
                    }
                    // The hasher went with the panicked pass: start over at the end.
                    Err(_) => return (Sha256::new(), 0),
                }
            }
            (hasher, hashed)
        });
        HashFollower {
            front,
            published: 0,
            task,
        }
    }

    /// The file is now contiguous from byte 0 up to `front`.
    pub(super) fn advance(&mut self, front: u64) {
        if front >= self.published + STEP {
            self.published = front;
            self.front.send_replace(front);
        }
    }

    /// Stops following; returns the hasher and how many bytes from 0 it holds.
    pub(super) async fn finish(self) -> (Sha256, u64) {
        drop(self.front);
        self.task.await.unwrap_or_else(|_| (Sha256::new(), 0))
    }
}

/// Feeds bytes `from..to` of `file` to `hasher` (reading through `buf`, kept between passes);
/// returns both and how far it got (`to` unless a read failed).
fn feed(
    mut hasher: Sha256,
    mut buf: Vec<u8>,
    file: &std::fs::File,
    from: u64,
    to: u64,
) -> (Sha256, Vec<u8>, u64) {
    use std::os::unix::fs::FileExt;
    if buf.len() < READ {
        buf.resize(READ, 0);
    }
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(buf.len());
        if file.read_exact_at(&mut buf[..n], pos).is_err() {
            break;
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    (hasher, buf, pos)
}
