//! Connectors turn the offers and answers a tracker relays into [`Link`]s. The [`Mesh`] shell
//! makes offers, answers offers and accepts answers through one [`Connector`], so the same
//! shell runs over WebRTC ([`WebRtcConnector`], the default) or over in-process memory links
//! ([`MemoryNetwork`], for tests and the harness's live backend).
//!
//! The signal strings have the shape trackers relay unchanged (`{"type":"offer","sdp":...}`);
//! a memory "SDP" only names a slot in its [`MemoryNetwork`], so memory peers must share one
//! network object, and a WebRTC peer rejects a memory offer as malformed (and the reverse).
//!
//! [`Mesh`]: crate::mesh::Mesh

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::memory::{self, CloseHandle, MemoryConfig};
use super::webrtc::{self, WebRtcConfig};
use super::{BoxFuture, Link};

/// Why an offer, an answer or a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError(pub String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

/// A made offer waiting for the remote answer.
pub trait AwaitingAnswer: Send + fmt::Debug {
    /// Applies the relayed answer and waits (bounded) for the link to open.
    fn accept(
        self: Box<Self>,
        answer: String,
    ) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>>;
}

/// A sent answer waiting for the link to open.
pub trait AwaitingOpen: Send + fmt::Debug {
    /// Waits (bounded) for the link to open.
    fn connected(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>>;
}

/// An offer JSON and what completes it.
pub type Offer = (String, Box<dyn AwaitingAnswer>);
/// An answer JSON and what completes it.
pub type Answer = (String, Box<dyn AwaitingOpen>);

/// Makes links from signals; see the [module docs](self).
pub trait Connector: Send + Sync + fmt::Debug {
    /// Makes an offer for a channel named `label` (the P2PT channel label).
    fn offer(&self, label: String) -> BoxFuture<'static, Result<Offer, ConnectError>>;
    /// Answers a relayed offer.
    fn answer(&self, offer: String) -> BoxFuture<'static, Result<Answer, ConnectError>>;
}

// ── WebRTC ────────────────────────────────────────────────────────────────────────────────

/// WebRTC data channels (webrtc-rs) with one [`WebRtcConfig`].
#[derive(Debug, Clone, Default)]
pub struct WebRtcConnector {
    cfg: Arc<WebRtcConfig>,
}

impl WebRtcConnector {
    /// A connector building every peer connection with `cfg`.
    pub fn new(cfg: WebRtcConfig) -> Self {
        WebRtcConnector { cfg: Arc::new(cfg) }
    }

    /// The settings in use.
    pub fn config(&self) -> &WebRtcConfig {
        &self.cfg
    }
}

#[derive(Debug)]
struct WebRtcOffer(webrtc::PendingOffer);

#[derive(Debug)]
struct WebRtcAnswer(webrtc::PendingAnswer);

impl AwaitingAnswer for WebRtcOffer {
    fn accept(
        self: Box<Self>,
        answer: String,
    ) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            let link = self
                .0
                .accept_answer(&answer)
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
            Ok(link.boxed())
        })
    }
}

impl AwaitingOpen for WebRtcAnswer {
    fn connected(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            let link = self
                .0
                .connected()
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
            Ok(link.boxed())
        })
    }
}

impl Connector for WebRtcConnector {
    fn offer(&self, label: String) -> BoxFuture<'static, Result<Offer, ConnectError>> {
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let (pending, json) = webrtc::create_offer(&cfg, &label)
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
            Ok((
                json,
                Box::new(WebRtcOffer(pending)) as Box<dyn AwaitingAnswer>,
            ))
        })
    }

    fn answer(&self, offer: String) -> BoxFuture<'static, Result<Answer, ConnectError>> {
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let (json, pending) = webrtc::accept_offer(&cfg, &offer)
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
            Ok((
                json,
                Box::new(WebRtcAnswer(pending)) as Box<dyn AwaitingOpen>,
            ))
        })
    }
}

// ── Memory ────────────────────────────────────────────────────────────────────────────────

/// How long a memory answerer waits for the offerer to apply its answer.
const MEMORY_OPEN_TIMEOUT: Duration = Duration::from_secs(15);

static NEXT_NETWORK: AtomicU64 = AtomicU64::new(1);

/// An in-process network of memory links. Each peer gets an endpoint with
/// [`MemoryNetwork::connector`]; the network can cut links and partition endpoints.
///
/// ```
/// use ghostmesh::transport::connector::MemoryNetwork;
/// use ghostmesh::transport::memory::MemoryConfig;
/// let net = MemoryNetwork::new(MemoryConfig::default());
/// let alice = net.connector("alice"); // pass to MeshBuilder::connector
/// # let _ = alice;
/// ```
#[derive(Debug, Clone)]
pub struct MemoryNetwork {
    id: u64,
    state: Arc<Mutex<NetState>>,
}

#[derive(Debug)]
struct NetState {
    cfg: MemoryConfig,
    next_token: u64,
    /// Offers made and not yet taken by their offerer (dropped offers remove themselves).
    offers: HashMap<u64, Slot>,
    links: Vec<LinkRecord>,
    /// Unordered endpoint pairs that cannot reach each other.
    blocked: Vec<(String, String)>,
    /// Endpoints whose link traffic is recorded (see [`MemoryNetwork::record`]).
    recorders: HashMap<String, Recorder>,
}

/// Every frame an endpoint sent or received on its memory links, in order (tests use it to
/// check what a relay could see).
pub type Recorder = Arc<Mutex<Vec<Vec<u8>>>>;

/// A memory link whose traffic is copied into a [`Recorder`].
#[derive(Debug)]
struct RecordingLink {
    inner: memory::MemoryLink,
    log: Recorder,
}

impl RecordingLink {
    fn note(&self, frame: &super::Frame) {
        let bytes = match frame {
            super::Frame::Text(t) => t.as_bytes().to_vec(),
            super::Frame::Binary(b) => b.clone(),
        };
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bytes);
    }
}

impl Link for RecordingLink {
    fn send(&self, frame: super::Frame) -> BoxFuture<'_, Result<(), super::LinkError>> {
        self.note(&frame);
        self.inner.send(frame)
    }

    fn recv(&self) -> BoxFuture<'_, Option<super::Frame>> {
        Box::pin(async move {
            let f = self.inner.recv().await;
            if let Some(f) = &f {
                self.note(f);
            }
            f
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }

    fn label(&self) -> &str {
        self.inner.label()
    }
}

/// Boxes `link`, recording it when its endpoint is recorded.
fn boxed(link: memory::MemoryLink, log: Option<&Recorder>) -> Box<dyn Link> {
    match log {
        Some(log) => Box::new(RecordingLink {
            inner: link,
            log: log.clone(),
        }),
        None => Box::new(link),
    }
}

#[derive(Debug)]
struct Slot {
    from: String,
    label: String,
    answered: Option<(Box<dyn Link>, oneshot::Sender<()>)>,
}

#[derive(Debug)]
struct LinkRecord {
    a: String,
    b: String,
    close: CloseHandle,
}

fn same_pair(x: &(String, String), a: &str, b: &str) -> bool {
    (x.0 == a && x.1 == b) || (x.0 == b && x.1 == a)
}

impl MemoryNetwork {
    /// A network whose links all behave as `cfg` says.
    pub fn new(cfg: MemoryConfig) -> Self {
        MemoryNetwork {
            id: NEXT_NETWORK.fetch_add(1, Ordering::Relaxed),
            state: Arc::new(Mutex::new(NetState {
                cfg,
                next_token: 0,
                offers: HashMap::new(),
                links: Vec::new(),
                blocked: Vec::new(),
                recorders: HashMap::new(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint named `name` (names let the network cut and partition; they need not be
    /// unique, but cutting acts on every endpoint of a name).
    pub fn connector(&self, name: &str) -> Arc<dyn Connector> {
        Arc::new(MemoryConnector {
            net: self.clone(),
            name: name.to_owned(),
        })
    }

    /// Open links, as endpoint-name pairs (offerer, answerer).
    pub fn links(&self) -> Vec<(String, String)> {
        let mut st = self.state();
        st.links.retain(|l| !l.close.is_closed());
        st.links
            .iter()
            .map(|l| (l.a.clone(), l.b.clone()))
            .collect()
    }

    /// Closes every open link between `a` and `b`; returns how many.
    pub fn disconnect(&self, a: &str, b: &str) -> usize {
        let mut st = self.state();
        let mut n = 0;
        st.links.retain(|l| {
            let hit = same_pair(&(l.a.clone(), l.b.clone()), a, b);
            if hit {
                l.close.close();
                n += 1;
            }
            !hit && !l.close.is_closed()
        });
        n
    }

    /// Closes the oldest open link between `a` and `b`; `false` when there is none.
    pub fn disconnect_one(&self, a: &str, b: &str) -> bool {
        let mut st = self.state();
        st.links.retain(|l| !l.close.is_closed());
        let pair = (a.to_owned(), b.to_owned());
        match st.links.iter().position(|l| same_pair(&pair, &l.a, &l.b)) {
            Some(i) => {
                st.links.remove(i).close.close();
                true
            }
            None => false,
        }
    }

    /// Closes every link of `name` (a crash, seen from the network).
    pub fn disconnect_all(&self, name: &str) -> usize {
        let mut st = self.state();
        let mut n = 0;
        st.links.retain(|l| {
            let hit = l.a == name || l.b == name;
            if hit {
                l.close.close();
                n += 1;
            }
            !hit && !l.close.is_closed()
        });
        n
    }

    /// Cuts every pair across `side_a` × `side_b`: open links close and new ones are refused
    /// until [`MemoryNetwork::heal`].
    pub fn partition(&self, side_a: &[String], side_b: &[String]) {
        for a in side_a {
            for b in side_b {
                self.disconnect(a, b);
                let mut st = self.state();
                if !st.blocked.iter().any(|x| same_pair(x, a, b)) {
                    st.blocked.push((a.clone(), b.clone()));
                }
            }
        }
    }

    /// Lifts every partition.
    pub fn heal(&self) {
        self.state().blocked.clear();
    }

    /// Records every frame the endpoint `name` sends or receives on links made from now on.
    pub fn record(&self, name: &str) -> Recorder {
        self.state()
            .recorders
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Offers made and neither taken nor withdrawn (for bounds checks).
    pub fn pending_offers(&self) -> usize {
        self.state().offers.len()
    }

    fn signal(&self, kind: &str, token: u64) -> String {
        serde_json::json!({
            "type": kind,
            "sdp": format!("ghostmesh-memory {} {token}", self.id),
        })
        .to_string()
    }

    /// The token of a memory signal of type `kind` made by this network.
    fn parse(&self, kind: &str, json: &str) -> Result<u64, ConnectError> {
        let bad = |why: &str| ConnectError(format!("invalid memory {kind}: {why}"));
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
        if v.get("type").and_then(|t| t.as_str()) != Some(kind) {
            return Err(bad("wrong type"));
        }
        let sdp = v
            .get("sdp")
            .and_then(|s| s.as_str())
            .ok_or_else(|| bad("no sdp"))?;
        let mut words = sdp.split(' ');
        if words.next() != Some("ghostmesh-memory") {
            return Err(bad("not a memory description (a WebRTC peer?)"));
        }
        let net: u64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| bad("no network id"))?;
        if net != self.id {
            return Err(bad("made by another memory network"));
        }
        words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| bad("no token"))
    }
}

#[derive(Debug)]
struct MemoryConnector {
    net: MemoryNetwork,
    name: String,
}

#[derive(Debug)]
struct MemoryOffer {
    net: MemoryNetwork,
    token: u64,
}

impl Drop for MemoryOffer {
    fn drop(&mut self) {
        // Withdrawn (expired or accepted): the slot goes; an answerer still waiting fails.
        self.net.state().offers.remove(&self.token);
    }
}

impl AwaitingAnswer for MemoryOffer {
    fn accept(
        self: Box<Self>,
        answer: String,
    ) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            let token = self.net.parse("answer", &answer)?;
            if token != self.token {
                return Err(ConnectError("answer for another offer".into()));
            }
            let slot = self.net.state().offers.remove(&token);
            match slot.and_then(|s| s.answered) {
                Some((link, open)) => {
                    let _ = open.send(());
                    Ok(link)
                }
                None => Err(ConnectError("offer was never answered".into())),
            }
        })
    }
}

#[derive(Debug)]
struct MemoryAnswer {
    link: Box<dyn Link>,
    open: oneshot::Receiver<()>,
}

impl AwaitingOpen for MemoryAnswer {
    fn connected(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            match tokio::time::timeout(MEMORY_OPEN_TIMEOUT, self.open).await {
                Ok(Ok(())) => Ok(self.link),
                Ok(Err(_)) => Err(ConnectError("the offer was withdrawn".into())),
                Err(_) => Err(ConnectError("timed out waiting for the offerer".into())),
            }
        })
    }
}

impl Connector for MemoryConnector {
    fn offer(&self, label: String) -> BoxFuture<'static, Result<Offer, ConnectError>> {
        let net = self.net.clone();
        let from = self.name.clone();
        Box::pin(async move {
            let token = {
                let mut st = net.state();
                let token = st.next_token;
                st.next_token += 1;
                st.offers.insert(
                    token,
                    Slot {
                        from,
                        label,
                        answered: None,
                    },
                );
                token
            };
            let json = net.signal("offer", token);
            Ok((
                json,
                Box::new(MemoryOffer { net, token }) as Box<dyn AwaitingAnswer>,
            ))
        })
    }

    fn answer(&self, offer: String) -> BoxFuture<'static, Result<Answer, ConnectError>> {
        let net = self.net.clone();
        let me = self.name.clone();
        Box::pin(async move {
            let token = net.parse("offer", &offer)?;
            let (link, open) = {
                let mut guard = net.state();
                let st = &mut *guard;
                let slot = st
                    .offers
                    .get_mut(&token)
                    .ok_or_else(|| ConnectError("unknown or withdrawn memory offer".into()))?;
                if slot.answered.is_some() {
                    return Err(ConnectError("memory offer already answered".into()));
                }
                if st.blocked.iter().any(|x| same_pair(x, &slot.from, &me)) {
                    return Err(ConnectError("partitioned from the offerer".into()));
                }
                let (theirs, mine) = memory::pair(&slot.label, st.cfg.clone());
                let (open_tx, open_rx) = oneshot::channel();
                st.links.retain(|l| !l.close.is_closed());
                st.links.push(LinkRecord {
                    a: slot.from.clone(),
                    b: me.clone(),
                    close: mine.close_handle(),
                });
                slot.answered = Some((boxed(theirs, st.recorders.get(&slot.from)), open_tx));
                (boxed(mine, st.recorders.get(&me)), open_rx)
            };
            let json = net.signal("answer", token);
            Ok((
                json,
                Box::new(MemoryAnswer { link, open }) as Box<dyn AwaitingOpen>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::transport::Frame;

    async fn connect(net: &MemoryNetwork, a: &str, b: &str) -> (Box<dyn Link>, Box<dyn Link>) {
        let (ca, cb) = (net.connector(a), net.connector(b));
        let (offer, pending) = ca.offer("chan".into()).await.unwrap();
        let (answer, waiting) = cb.answer(offer).await.unwrap();
        let opened = tokio::spawn(waiting.connected());
        let la = pending.accept(answer).await.unwrap();
        let lb = opened.await.unwrap().unwrap();
        (la, lb)
    }

    #[tokio::test]
    async fn offer_answer_makes_a_working_link() {
        let net = MemoryNetwork::new(MemoryConfig::default());
        let (a, b) = connect(&net, "a", "b").await;
        a.send(Frame::Text("hi".into())).await.unwrap();
        assert_eq!(b.recv().await, Some(Frame::Text("hi".into())));
        assert_eq!(a.label(), "chan");
        assert_eq!(net.links(), vec![("a".to_owned(), "b".to_owned())]);
        assert_eq!(net.pending_offers(), 0);
    }

    #[tokio::test]
    async fn disconnect_and_partition_cut_links() {
        let net = MemoryNetwork::new(MemoryConfig::default());
        let (a, _b) = connect(&net, "a", "b").await;
        assert_eq!(net.disconnect("b", "a"), 1);
        assert_eq!(a.recv().await, None);
        assert!(net.links().is_empty());

        net.partition(&["a".into()], &["b".into()]);
        let (offer, _pending) = net.connector("a").offer("x".into()).await.unwrap();
        let err = net.connector("b").answer(offer).await.unwrap_err();
        assert!(err.0.contains("partitioned"), "{err}");
        net.heal();
        let (_a, _b) = connect(&net, "a", "b").await;
        assert_eq!(net.disconnect_all("a"), 1);
    }

    #[tokio::test]
    async fn withdrawn_offers_free_their_slot_and_fail_the_answerer() {
        let net = MemoryNetwork::new(MemoryConfig::default());
        let (offer, pending) = net.connector("a").offer("x".into()).await.unwrap();
        let (_answer, waiting) = net.connector("b").answer(offer.clone()).await.unwrap();
        assert!(
            net.connector("c").answer(offer).await.is_err(),
            "answered once only"
        );
        drop(pending);
        assert_eq!(net.pending_offers(), 0);
        assert!(waiting.connected().await.is_err());
    }

    #[tokio::test]
    async fn foreign_and_malformed_signals_are_refused() {
        let net = MemoryNetwork::new(MemoryConfig::default());
        let other = MemoryNetwork::new(MemoryConfig::default());
        let (offer, _p) = other.connector("a").offer("x".into()).await.unwrap();
        for bad in [
            offer.as_str(),
            "not json",
            r#"{"type":"answer","sdp":"ghostmesh-memory 1 0"}"#,
            r#"{"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}"#,
            r#"{"type":"offer"}"#,
        ] {
            assert!(
                net.connector("b").answer(bad.into()).await.is_err(),
                "{bad}"
            );
        }
    }
}
