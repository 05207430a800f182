//! The tracker client of one peer, for one tracker URL: announces, offers, answers, reconnects.
//!
//! A P2PT/GhostMesh peer finds others through WebTorrent trackers. It announces its swarm
//! (`info_hash = SHA-1(identifier)`) with a batch of WebRTC offers; the tracker relays each
//! offer to another peer of the swarm, whose answer comes back the same way. [`TrackerClient`]
//! is that protocol as a sans-IO state machine: it owns no socket, reads no clock and draws no
//! randomness of its own. The IO shell runs one per tracker URL (all sharing one [`Identity`]),
//! feeds it what happens ([`connected`](TrackerClient::connected), a received
//! [`frame`](TrackerClient::frame), offers the WebRTC layer [made](TrackerClient::offers_ready),
//! a timer that [fired](TrackerClient::tick), …) and carries out each [`Output`]: send this text
//! frame, make n offers, answer this offer, this offer got its answer, reconnect after a delay.
//! SDP offers and answers are opaque JSON objects (`{"type":"offer","sdp":"…"}`), passed through.
//!
//! Frames are byte-compatible with P2PT 1.6.2 (ghostmesh-wire.md §2): the announce has the keys
//! `numwant, uploaded, downloaded, action, info_hash, peer_id, [trackerid], offers` and no
//! `event`; answers `action, info_hash, peer_id, to_peer_id, answer, offer_id, [trackerid]`.
//! Differences from P2PT, all invisible to other peers:
//! - [`stop`](TrackerClient::stop) sends a clean `event:"stopped"` announce;
//! - reconnect backoff is 1 s doubling to 60 s plus up to 50 % jitter (P2PT: 10 s·2^n up to
//!   1 h plus 0–5 min), see [`SignalConfig`];
//! - without an `interval` from the tracker the client still re-announces every 120 s, and the
//!   tracker's interval is clamped to 5 s..1 h (a hostile `interval: 0.001` cannot make it spin);
//! - a frame with an unknown `action`, or a `failure reason` without `info_hash`, is a
//!   [`Output::Warning`], not a reason to drop the socket;
//! - every input is bounded (frame size, pending offers, message lengths) and never panics.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ghostmesh::signal::{Id20, Identity, Output, SignalConfig, TrackerClient};
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(42);
//! let me = Identity::new("myApp", &mut rng);
//! let mut client = TrackerClient::new(me, SignalConfig::default());
//! let t0 = Instant::now();
//! assert_eq!(client.poll_output(), Some(Output::Connect(Duration::ZERO)));
//!
//! // The shell opened the WebSocket: the client wants offers before it announces.
//! client.connected(t0);
//! assert_eq!(client.poll_output(), Some(Output::NeedOffers(5)));
//! let offers = (0..5)
//!     .map(|_| (Id20::random(&mut rng), r#"{"type":"offer","sdp":"v=0\r\n"}"#.to_string()))
//!     .collect();
//! client.offers_ready(t0, offers);
//! let Some(Output::Send(announce)) = client.poll_output() else { panic!() };
//! assert!(announce.starts_with(r#"{"numwant":5,"uploaded":0,"downloaded":0,"action":"announce","info_hash":"#));
//!
//! // The tracker's reply sets the re-announce interval.
//! let reply = format!(
//!     r#"{{"complete":0,"incomplete":1,"action":"announce","interval":120,"info_hash":{}}}"#,
//!     me.info_hash.to_json()
//! );
//! client.frame(t0, &reply);
//! assert_eq!(client.poll_output(), Some(Output::TrackerUpdate { complete: 0, incomplete: 1 }));
//! // Next deadline: the offers expire after 50 s (the re-announce is due at 120 s).
//! assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(50)));
//! ```

mod config;
mod frame;
mod id;
mod output;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

pub use config::SignalConfig;
pub use id::{Id20, IdError, Identity, info_hash_of};
pub use output::Output;

use frame::{OutOffer, RawFrame, TrackerId};

/// Longest `failure reason` / `warning message` text passed on (longer ones are cut).
const MAX_MESSAGE_LEN: usize = 512;
/// Longest `tracker id` remembered.
const MAX_TRACKER_ID_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// Waiting for the shell to (re)open the socket.
    Connecting,
    Connected,
    Stopped,
}

#[derive(Debug)]
struct PendingOffer {
    offer_id: Id20,
    expires: Instant,
}

/// The sans-IO tracker client of one peer for one tracker URL. See the [module docs](self).
#[derive(Debug)]
pub struct TrackerClient {
    me: Identity,
    cfg: SignalConfig,
    conn: Conn,
    /// Failed connection attempts since the last successful connect.
    retries: u32,
    out: VecDeque<Output>,
    /// Our offers awaiting an answer, oldest first.
    pending: VecDeque<PendingOffer>,
    /// Set while the transport is making offers for the next announce.
    offers_requested_at: Option<Instant>,
    next_announce: Option<Instant>,
    /// The tracker's `interval` (clamped), once it sent one.
    interval: Option<Duration>,
    tracker_id: Option<TrackerId>,
}

impl TrackerClient {
    /// A client for one tracker. Queues [`Output::Connect`]`(0)`.
    pub fn new(me: Identity, cfg: SignalConfig) -> Self {
        let mut out = VecDeque::new();
        out.push_back(Output::Connect(Duration::ZERO));
        TrackerClient {
            me,
            cfg,
            conn: Conn::Connecting,
            retries: 0,
            out,
            pending: VecDeque::new(),
            offers_requested_at: None,
            next_announce: None,
            interval: None,
            tracker_id: None,
        }
    }

    /// This peer's swarm and id.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// The configuration in use.
    pub fn config(&self) -> &SignalConfig {
        &self.cfg
    }

    /// Whether the socket is up (between [`connected`](Self::connected) and
    /// [`disconnected`](Self::disconnected)/[`stop`](Self::stop)).
    pub fn is_connected(&self) -> bool {
        self.conn == Conn::Connected
    }

    /// Ids of our offers still awaiting an answer, oldest first.
    pub fn pending_offers(&self) -> impl Iterator<Item = Id20> + '_ {
        self.pending.iter().map(|p| p.offer_id)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`tick`](Self::tick) must be called next (`None`: only on the next input).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.conn != Conn::Connected {
            return None;
        }
        let expiry = self.pending.iter().map(|p| p.expires).min();
        let gather = self
            .offers_requested_at
            .and_then(|t| t.checked_add(self.cfg.offer_gather_timeout));
        let announce = if self.offers_requested_at.is_some() {
            None
        } else {
            self.next_announce
        };
        [expiry, gather, announce].into_iter().flatten().min()
    }

    /// The WebSocket is open: announce (after asking for offers).
    pub fn connected(&mut self, now: Instant) {
        if self.conn != Conn::Connecting {
            return;
        }
        self.conn = Conn::Connected;
        // `retries` is reset by the tracker's first reply, not here: a tracker that accepts the
        // socket and drops it at once must not be redialled every second.
        self.start_announce(now);
    }

    /// The WebSocket closed or failed (or could not be opened): expire every pending offer, as
    /// their answers can no longer arrive, and ask for a reconnect after a backoff delay.
    pub fn disconnected<R: Rng + ?Sized>(&mut self, _now: Instant, rng: &mut R) {
        if self.conn == Conn::Stopped {
            return;
        }
        self.expire_all();
        self.offers_requested_at = None;
        self.next_announce = None;
        self.conn = Conn::Connecting;
        let delay = self.cfg.backoff(self.retries, rng);
        self.retries = self.retries.saturating_add(1);
        self.out.push_back(Output::Connect(delay));
    }

    /// The transport made the offers asked for by [`Output::NeedOffers`]: `(offer_id, offer
    /// JSON object text)` each. Announces them. Fewer than asked is fine; extra ones, and any
    /// that arrive while disconnected, are expired.
    pub fn offers_ready(&mut self, now: Instant, offers: Vec<(Id20, String)>) {
        self.offers_requested_at = None;
        if self.conn != Conn::Connected {
            for (offer_id, _) in offers {
                self.out.push_back(Output::ExpireOffer(offer_id));
            }
            return;
        }
        let mut accepted: Vec<(Id20, String)> = Vec::with_capacity(offers.len());
        for (offer_id, offer) in offers {
            if accepted.len() >= self.cfg.offers_per_announce {
                self.warn("more offers than offers_per_announce; the extra ones are expired");
                self.out.push_back(Output::ExpireOffer(offer_id));
                continue;
            }
            if accepted.iter().any(|(id, _)| *id == offer_id)
                || self.pending.iter().any(|p| p.offer_id == offer_id)
            {
                self.warn(format!("duplicate offer id {offer_id}; not announced"));
                continue;
            }
            match frame::validate_object_json(&offer) {
                Some(text) => {
                    let text = text.to_owned();
                    accepted.push((offer_id, text));
                }
                None => {
                    self.warn(format!("offer {offer_id} is not a JSON object; expired"));
                    self.out.push_back(Output::ExpireOffer(offer_id));
                }
            }
        }
        let expires = now.checked_add(self.cfg.offer_timeout).unwrap_or(now);
        for (offer_id, _) in &accepted {
            self.pending.push_back(PendingOffer {
                offer_id: *offer_id,
                expires,
            });
        }
        while self.pending.len() > self.cfg.max_pending() {
            if let Some(old) = self.pending.pop_front() {
                self.out.push_back(Output::ExpireOffer(old.offer_id));
            }
        }
        let out_offers: Vec<OutOffer<'_>> = accepted
            .iter()
            .map(|(offer_id, offer)| OutOffer {
                offer_id: *offer_id,
                offer,
            })
            .collect();
        self.send_announce(now, &out_offers);
    }

    /// The transport answered the relayed offer `offer_id` from `to_peer` (see
    /// [`Output::Offer`]): send the answer through the tracker. `answer` is the answer object's
    /// JSON text. Dropped with a warning while disconnected.
    pub fn answer_ready(&mut self, _now: Instant, to_peer: Id20, offer_id: Id20, answer: &str) {
        if self.conn != Conn::Connected {
            if self.conn == Conn::Connecting {
                self.warn(format!("not connected; answer to {to_peer} dropped"));
            }
            return;
        }
        let Some(answer) = frame::validate_object_json(answer) else {
            self.warn(format!("answer to {to_peer} is not a JSON object; dropped"));
            return;
        };
        let text = frame::encode_answer(
            &self.me.info_hash,
            &self.me.peer_id,
            &to_peer,
            answer,
            &offer_id,
            self.tracker_id.as_ref(),
        );
        self.out.push_back(Output::Send(text));
    }

    /// Announce again now with fresh offers (P2PT's `requestMorePeers`). No-op while
    /// disconnected or while offers for an announce are being made.
    pub fn request_announce(&mut self, now: Instant) {
        if self.conn == Conn::Connected {
            self.start_announce(now);
        }
    }

    /// Timers: expires unanswered offers, announces without offers if the transport did not
    /// deliver them in time, and re-announces when the interval has passed.
    pub fn tick(&mut self, now: Instant) {
        if self.conn != Conn::Connected {
            return;
        }
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].expires <= now {
                if let Some(p) = self.pending.remove(i) {
                    self.out.push_back(Output::ExpireOffer(p.offer_id));
                }
            } else {
                i += 1;
            }
        }
        if let Some(t) = self.offers_requested_at
            && t.checked_add(self.cfg.offer_gather_timeout)
                .is_none_or(|deadline| deadline <= now)
        {
            self.offers_requested_at = None;
            self.warn("no offers from the transport in time; announcing without offers");
            self.send_announce(now, &[]);
        }
        if self.offers_requested_at.is_none() && self.next_announce.is_some_and(|t| t <= now) {
            self.next_announce = None;
            self.start_announce(now);
        }
    }

    /// Leave the swarm: sends an `event:"stopped"` announce if connected and expires every
    /// pending offer. The shell may then close the socket; the client stays inert.
    pub fn stop(&mut self, _now: Instant) {
        if self.conn == Conn::Stopped {
            return;
        }
        if self.conn == Conn::Connected {
            let text = frame::encode_stopped(
                self.cfg.offers_per_announce,
                &self.me.info_hash,
                &self.me.peer_id,
                self.tracker_id.as_ref(),
            );
            self.out.push_back(Output::Send(text));
        }
        self.expire_all();
        self.conn = Conn::Stopped;
        self.offers_requested_at = None;
        self.next_announce = None;
    }

    /// A text frame from the tracker.
    pub fn frame(&mut self, now: Instant, text: &str) {
        if self.conn != Conn::Connected {
            return;
        }
        if text.len() > self.cfg.max_frame_len {
            self.warn(format!(
                "tracker frame of {} bytes exceeds the limit of {}; dropped",
                text.len(),
                self.cfg.max_frame_len
            ));
            return;
        }
        let raw = match frame::parse_frame(text) {
            Ok(raw) => raw,
            Err(e) => return self.warn(e),
        };
        let action = raw.action.and_then(frame::string_field);
        match action.as_deref() {
            Some("announce") => self.on_announce(now, &raw),
            // We never scrape; a reply meant for another client on a shared socket.
            Some("scrape") => {}
            Some(other) => {
                let msg = frame::truncate(other.to_owned(), 64);
                self.warn(format!(
                    "tracker frame with unknown action {msg:?}; ignored"
                ));
            }
            None => match frame::message_field(raw.failure_reason, MAX_MESSAGE_LEN) {
                Some(reason) => self.out.push_back(Output::Warning(reason)),
                None => self.warn("tracker frame without a string `action`; ignored"),
            },
        }
    }

    fn on_announce(&mut self, now: Instant, raw: &RawFrame<'_>) {
        // Same order of checks as bittorrent-tracker's `_onAnnounceResponse`.
        let info_hash = match frame::id_field("info_hash", raw.info_hash) {
            Ok(h) => h,
            Err(e) => {
                match frame::message_field(raw.failure_reason, MAX_MESSAGE_LEN) {
                    Some(reason) => self.out.push_back(Output::Warning(reason)),
                    None => self.warn(format!("tracker frame refused: {e}")),
                }
                return;
            }
        };
        if info_hash != self.me.info_hash {
            return; // another swarm on a shared socket
        }
        let peer_id = frame::id_field("peer_id", raw.peer_id);
        if peer_id.as_ref().is_ok_and(|p| *p == self.me.peer_id) {
            return; // our own offer or answer echoed on a shared socket
        }
        // A reply for our swarm proves the tracker works: the next outage starts a fresh backoff.
        self.retries = 0;
        if let Some(reason) = frame::message_field(raw.failure_reason, MAX_MESSAGE_LEN) {
            self.out.push_back(Output::Warning(reason));
            return;
        }
        if let Some(warning) = frame::message_field(raw.warning_message, MAX_MESSAGE_LEN) {
            self.out.push_back(Output::Warning(warning));
        }
        self.on_interval(now, raw);
        match frame::tracker_id_field(raw.tracker_id, MAX_TRACKER_ID_LEN) {
            Ok(Some(id)) => self.tracker_id = Some(id),
            Ok(None) => {}
            Err(e) => self.warn(e),
        }
        match frame::count_field("complete", raw.complete) {
            Ok(Some(complete)) => {
                let incomplete = match frame::count_field("incomplete", raw.incomplete) {
                    Ok(n) => n.unwrap_or(0),
                    Err(e) => {
                        self.warn(e);
                        0
                    }
                };
                self.out.push_back(Output::TrackerUpdate {
                    complete,
                    incomplete,
                });
            }
            Ok(None) => {}
            Err(e) => self.warn(e),
        }
        if let Some(offer) = raw.offer.filter(|o| o.get() != "null") {
            match self.relayed(&peer_id, raw, "offer", offer) {
                Ok((from_peer, offer_id, offer)) => self.out.push_back(Output::Offer {
                    from_peer,
                    offer_id,
                    offer,
                }),
                Err(e) => self.warn(format!("relayed offer refused: {e}")),
            }
        }
        if let Some(answer) = raw.answer.filter(|a| a.get() != "null") {
            match self.relayed(&peer_id, raw, "answer", answer) {
                Ok((from_peer, offer_id, answer)) => {
                    // Only an answer to one of our live offers; a late or forged one is dropped.
                    if let Some(pos) = self.pending.iter().position(|p| p.offer_id == offer_id) {
                        self.pending.remove(pos);
                        self.out.push_back(Output::Answer {
                            from_peer,
                            offer_id,
                            answer,
                        });
                    }
                }
                Err(e) => self.warn(format!("relayed answer refused: {e}")),
            }
        }
    }

    fn relayed(
        &self,
        peer_id: &Result<Id20, String>,
        raw: &RawFrame<'_>,
        name: &str,
        value: &serde_json::value::RawValue,
    ) -> Result<(Id20, Id20, String), String> {
        let from = peer_id.clone()?;
        let offer_id = frame::id_field("offer_id", raw.offer_id)?;
        let text = frame::object_field(name, value)?;
        Ok((from, offer_id, text))
    }

    /// `interval || "min interval"` in P2PT; here the larger of the two when both are given,
    /// clamped to the configured bounds. Resets the re-announce timer.
    fn on_interval(&mut self, now: Instant, raw: &RawFrame<'_>) {
        let interval = frame::seconds_field("interval", raw.interval).unwrap_or_else(|e| {
            self.warn(e);
            None
        });
        let min = frame::seconds_field("min interval", raw.min_interval).unwrap_or_else(|e| {
            self.warn(e);
            None
        });
        let secs = match (interval, min) {
            (Some(i), Some(m)) => i.max(m),
            (Some(s), None) | (None, Some(s)) => s,
            (None, None) => return,
        };
        let max = self.cfg.max_announce_interval.as_secs_f64();
        let d = Duration::from_secs_f64(secs.min(max).max(0.0)).clamp(
            self.cfg.min_announce_interval,
            self.cfg
                .max_announce_interval
                .max(self.cfg.min_announce_interval),
        );
        self.interval = Some(d);
        if self.offers_requested_at.is_none() {
            self.next_announce = now.checked_add(d);
        }
    }

    fn start_announce(&mut self, now: Instant) {
        if self.offers_requested_at.is_some() {
            return;
        }
        self.next_announce = None;
        if self.cfg.offers_per_announce == 0 {
            self.send_announce(now, &[]);
        } else {
            self.offers_requested_at = Some(now);
            self.out
                .push_back(Output::NeedOffers(self.cfg.offers_per_announce));
        }
    }

    fn send_announce(&mut self, now: Instant, offers: &[OutOffer<'_>]) {
        let text = frame::encode_announce(
            self.cfg.offers_per_announce,
            &self.me.info_hash,
            &self.me.peer_id,
            self.tracker_id.as_ref(),
            offers,
        );
        self.out.push_back(Output::Send(text));
        let period = self.interval.or(self.cfg.fallback_interval);
        self.next_announce = period.and_then(|p| now.checked_add(p));
    }

    fn expire_all(&mut self) {
        for p in self.pending.drain(..) {
            self.out.push_back(Output::ExpireOffer(p.offer_id));
        }
    }

    fn warn(&mut self, msg: impl Into<String>) {
        self.out.push_back(Output::Warning(frame::truncate(
            msg.into(),
            MAX_MESSAGE_LEN,
        )));
    }
}
