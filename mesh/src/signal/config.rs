//! [`SignalConfig`]: timings, limits and the reconnect backoff.

use std::time::Duration;

use rand::{Rng, RngExt};

/// Timings and limits of a [`TrackerClient`](super::TrackerClient). `Default` gives the values documented per field.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalConfig {
    /// Offers made for each announce (and the announce's `numwant`). Default 5, as P2PT.
    pub offers_per_announce: usize,
    /// An offer without an answer after this long is expired ([`Output::ExpireOffer`](super::Output::ExpireOffer)).
    /// Default 50 s (P2PT's `OFFER_TIMEOUT`).
    pub offer_timeout: Duration,
    /// Pending offers are bounded by `offers_per_announce × pending_announces` (at least one
    /// announce's worth); the oldest are expired first. Default 3.
    pub pending_announces: usize,
    /// How long to wait for [`TrackerClient::offers_ready`](super::TrackerClient::offers_ready) after [`Output::NeedOffers`](super::Output::NeedOffers) before
    /// announcing without offers. Default 15 s (non-trickle ICE gathering gives up after 5 s).
    pub offer_gather_timeout: Duration,
    /// Re-announce period while the tracker has not sent an `interval`. Default `Some(120 s)`
    /// (the reference tracker's WebSocket interval); `None` re-announces only on the tracker's
    /// interval, as P2PT does.
    pub fallback_interval: Option<Duration>,
    /// Lower bound on the tracker's interval. Default 5 s.
    pub min_announce_interval: Duration,
    /// Upper bound on the tracker's interval. Default 1 h.
    pub max_announce_interval: Duration,
    /// First reconnect delay. Default 1 s.
    pub backoff_base: Duration,
    /// The delay doubles per failed attempt up to this. Default 60 s.
    pub backoff_max: Duration,
    /// Uniform random extra delay, as a percentage of the delay (0..=this). Default 50.
    pub backoff_jitter_percent: u32,
    /// Frames longer than this many bytes are refused with a warning. Default 64 KiB (the
    /// limit of aquatic and wt-tracker).
    pub max_frame_len: usize,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            offers_per_announce: 5,
            offer_timeout: Duration::from_secs(50),
            pending_announces: 3,
            offer_gather_timeout: Duration::from_secs(15),
            fallback_interval: Some(Duration::from_secs(120)),
            min_announce_interval: Duration::from_secs(5),
            max_announce_interval: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            backoff_jitter_percent: 50,
            max_frame_len: 64 * 1024,
        }
    }
}

impl SignalConfig {
    /// The reconnect delay after `retries` failed attempts since the last successful connect:
    /// `min(base · 2^retries, max)` plus a uniform jitter of `0..=jitter_percent %` of that.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ghostmesh::signal::SignalConfig;
    /// use rand::SeedableRng;
    ///
    /// let cfg = SignalConfig::default();
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    /// let d = cfg.backoff(3, &mut rng);
    /// assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12));
    /// ```
    pub fn backoff<R: Rng + ?Sized>(&self, retries: u32, rng: &mut R) -> Duration {
        let factor = 1u32 << retries.min(31);
        let delay = self
            .backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let jitter_max = delay_ms.saturating_mul(u64::from(self.backoff_jitter_percent)) / 100;
        let jitter = rng.random_range(0..=jitter_max);
        delay.saturating_add(Duration::from_millis(jitter))
    }

    pub(crate) fn max_pending(&self) -> usize {
        self.offers_per_announce
            .saturating_mul(self.pending_announces.max(1))
    }
}
