//! Counters and a latency histogram shared by every load connection (atomics: no locks on the
//! hot path), and their snapshots.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the load connections count, from the client's side.
#[derive(Debug, Default)]
pub struct Counters {
    /// Announces sent (with offers).
    pub announces_sent: AtomicU64,
    /// Answers sent (to relayed offers).
    pub answers_sent: AtomicU64,
    /// Scrapes sent.
    pub scrapes_sent: AtomicU64,
    /// Announce replies received.
    pub announce_replies: AtomicU64,
    /// Offers relayed to us.
    pub offers_in: AtomicU64,
    /// Answers relayed to us.
    pub answers_in: AtomicU64,
    /// Scrape replies received.
    pub scrape_replies: AtomicU64,
    /// Error replies received (`failure reason`).
    pub errors_in: AtomicU64,
    /// Frames we could not parse as tracker messages.
    pub unparsable: AtomicU64,
    /// Announces whose reply did not come within the reply timeout.
    pub announce_timeouts: AtomicU64,
    /// Announces whose reply never came although a later one did (the tracker dropped it).
    pub announce_replies_skipped: AtomicU64,
    /// Connections the tracker (or the network) closed while the load ran.
    pub disconnects: AtomicU64,
}

/// A plain copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub announces_sent: u64,
    pub answers_sent: u64,
    pub scrapes_sent: u64,
    pub announce_replies: u64,
    pub offers_in: u64,
    pub answers_in: u64,
    pub scrape_replies: u64,
    pub errors_in: u64,
    pub unparsable: u64,
    pub announce_timeouts: u64,
    pub announce_replies_skipped: u64,
    pub disconnects: u64,
}

impl Counters {
    /// Adds one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            announces_sent: g(&self.announces_sent),
            answers_sent: g(&self.answers_sent),
            scrapes_sent: g(&self.scrapes_sent),
            announce_replies: g(&self.announce_replies),
            offers_in: g(&self.offers_in),
            answers_in: g(&self.answers_in),
            scrape_replies: g(&self.scrape_replies),
            errors_in: g(&self.errors_in),
            unparsable: g(&self.unparsable),
            announce_timeouts: g(&self.announce_timeouts),
            announce_replies_skipped: g(&self.announce_replies_skipped),
            disconnects: g(&self.disconnects),
        }
    }
}

impl CounterSnapshot {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            announces_sent: self.announces_sent - earlier.announces_sent,
            answers_sent: self.answers_sent - earlier.answers_sent,
            scrapes_sent: self.scrapes_sent - earlier.scrapes_sent,
            announce_replies: self.announce_replies - earlier.announce_replies,
            offers_in: self.offers_in - earlier.offers_in,
            answers_in: self.answers_in - earlier.answers_in,
            scrape_replies: self.scrape_replies - earlier.scrape_replies,
            errors_in: self.errors_in - earlier.errors_in,
            unparsable: self.unparsable - earlier.unparsable,
            announce_timeouts: self.announce_timeouts - earlier.announce_timeouts,
            announce_replies_skipped: self.announce_replies_skipped
                - earlier.announce_replies_skipped,
            disconnects: self.disconnects - earlier.disconnects,
        }
    }

    /// Every message received: aquatic_ws_load_test's "responses".
    pub fn responses(&self) -> u64 {
        self.announce_replies
            + self.offers_in
            + self.answers_in
            + self.scrape_replies
            + self.errors_in
    }

    /// Every request sent.
    pub fn requests(&self) -> u64 {
        self.announces_sent + self.answers_sent + self.scrapes_sent
    }
}

/// Sub-buckets per power of two: values are kept to within ~3 %.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Up to 2^40 µs (12 days): more than any bounded run.
const BUCKETS: usize = ((40 - SUB_BITS as usize) + 1) * SUB as usize;

/// A log-linear histogram of microseconds, safe to record into from many tasks.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = (us >> shift) & (SUB - 1);
    (((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The smallest value of a bucket.
fn bucket_low(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let group = i / SUB; // >= 1
    let sub = i % SUB;
    let exp = group - 1 + SUB_BITS as u64;
    (1u64 << exp) + (sub << (exp - SUB_BITS as u64))
}

impl Histogram {
    /// Records one value in microseconds.
    pub fn record(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The value at quantile `q` (0..=1), in microseconds (bucket midpoint); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = bucket_low(i);
                let hi = bucket_low(i + 1);
                return Some((lo + hi) / 2);
            }
        }
        None
    }

    /// The largest bucket with a value, in microseconds (its upper bound).
    pub fn max(&self) -> Option<u64> {
        self.buckets
            .iter()
            .rposition(|b| b.load(Ordering::Relaxed) > 0)
            .map(|i| bucket_low(i + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            63,
            64,
            100,
            1000,
            12_345,
            1 << 20,
            1 << 30,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v}");
            last = b;
            let lo = bucket_low(b);
            let hi = bucket_low(b + 1);
            assert!(lo <= v && v < hi.max(lo + 1), "{v} in [{lo}, {hi})");
            assert!(
                (hi - lo) as f64 <= (v as f64 / 16.0).max(1.0),
                "{v}: width {}",
                hi - lo
            );
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 10);
        }
        let p50 = h.quantile(0.5).expect("values");
        let p99 = h.quantile(0.99).expect("values");
        assert!((4800..=5200).contains(&p50), "p50 {p50}");
        assert!((9600..=10_300).contains(&p99), "p99 {p99}");
        assert_eq!(h.count(), 1000);
    }
}
