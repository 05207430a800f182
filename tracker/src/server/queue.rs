//! The bounded outbound queue of one connection.
//!
//! Drop policy, in order: a relayed offer that finds the queue full is dropped (an offer is a
//! guess: the offerer's client times it out and makes new ones); a reply (announce reply,
//! relayed answer, scrape reply, error) that finds the queue full evicts the oldest queued offer;
//! only a queue full of replies drops the reply. Every drop is counted by reason. A close
//! request always fits: it is kept apart from the messages and sent after them.

use std::collections::VecDeque;

use crate::metrics::Drop;

/// Limits of one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Messages at most.
    pub messages: usize,
    /// Bytes at most (sum of message lengths).
    pub bytes: usize,
}

/// What the writer takes next.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A JSON text frame.
    Text(String),
    /// Send a close frame with this code and reason, then stop.
    Close(u16, String),
}

/// The queue. Not synchronised: the connection wraps it in a mutex.
#[derive(Debug)]
pub struct OutQueue {
    limits: QueueLimits,
    items: VecDeque<(bool, String)>,
    bytes: usize,
    close: Option<(u16, String)>,
}

impl OutQueue {
    /// An empty queue.
    pub fn new(limits: QueueLimits) -> Self {
        OutQueue {
            limits,
            items: VecDeque::new(),
            bytes: 0,
            close: None,
        }
    }

    fn fits(&self, len: usize) -> bool {
        self.items.len() < self.limits.messages && self.bytes + len <= self.limits.bytes
    }

    /// Queues a message. `evicted` receives the drops this caused (offers evicted); the error is
    /// the drop of the message itself.
    pub fn push(
        &mut self,
        text: String,
        is_offer: bool,
        evicted: &mut Vec<Drop>,
    ) -> Result<(), Drop> {
        if self.close.is_some() {
            return Err(Drop::RecipientGone);
        }
        let len = text.len();
        if len > self.limits.bytes {
            return Err(if is_offer {
                Drop::OfferQueueFull
            } else {
                Drop::ReplyQueueFull
            });
        }
        while !self.fits(len) {
            if is_offer {
                return Err(Drop::OfferQueueFull);
            }
            let Some(pos) = self.items.iter().position(|(offer, _)| *offer) else {
                return Err(Drop::ReplyQueueFull);
            };
            if let Some((_, old)) = self.items.remove(pos) {
                self.bytes -= old.len();
                evicted.push(Drop::OfferEvicted);
            }
        }
        self.bytes += len;
        self.items.push_back((is_offer, text));
        Ok(())
    }

    /// Whether an offer of at least `min_len` bytes would be dropped now, and why: lets the
    /// caller skip encoding an offer that cannot be queued. `None` does not promise that
    /// [`OutQueue::push`] succeeds (the encoded offer may be longer).
    pub fn offer_refusal(&self, min_len: usize) -> Option<Drop> {
        if self.close.is_some() {
            Some(Drop::RecipientGone)
        } else if !self.fits(min_len) {
            Some(Drop::OfferQueueFull)
        } else {
            None
        }
    }

    /// Asks the writer to close after the queued messages (the first request wins).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.close.is_none() {
            self.close = Some((code, reason.to_string()));
        }
    }

    /// Next item for the writer.
    pub fn pop(&mut self) -> Option<Item> {
        if let Some((_, text)) = self.items.pop_front() {
            self.bytes -= text.len();
            return Some(Item::Text(text));
        }
        self.close.take().map(|(c, r)| Item::Close(c, r))
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_refusal_agrees_with_push() {
        let mut q = OutQueue::new(QueueLimits {
            messages: 2,
            bytes: 100,
        });
        let mut ev = Vec::new();
        assert_eq!(q.offer_refusal(10), None);
        assert_eq!(q.offer_refusal(101), Some(Drop::OfferQueueFull));
        assert_eq!(
            q.push("x".repeat(101), true, &mut ev),
            Err(Drop::OfferQueueFull)
        );
        q.push("a".into(), true, &mut ev).expect("fits");
        q.push("b".into(), false, &mut ev).expect("fits");
        // Full by count: an offer is refused, before and after encoding alike.
        assert_eq!(q.offer_refusal(1), Some(Drop::OfferQueueFull));
        assert_eq!(q.push("c".into(), true, &mut ev), Err(Drop::OfferQueueFull));
        q.close(1000, "");
        assert_eq!(q.offer_refusal(1), Some(Drop::RecipientGone));
    }

    fn q(messages: usize, bytes: usize) -> OutQueue {
        OutQueue::new(QueueLimits { messages, bytes })
    }

    #[test]
    fn offers_are_dropped_when_full_and_evicted_for_replies() {
        let mut q = q(3, 1000);
        let mut ev = Vec::new();
        q.push("o1".into(), true, &mut ev).expect("fits");
        q.push("r1".into(), false, &mut ev).expect("fits");
        q.push("o2".into(), true, &mut ev).expect("fits");
        assert_eq!(
            q.push("o3".into(), true, &mut ev),
            Err(Drop::OfferQueueFull)
        );
        q.push("r2".into(), false, &mut ev).expect("evicts o1");
        assert_eq!(ev, vec![Drop::OfferEvicted]);
        q.push("r3".into(), false, &mut ev).expect("evicts o2");
        assert_eq!(
            q.push("r4".into(), false, &mut ev),
            Err(Drop::ReplyQueueFull)
        );
        let order: Vec<Item> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![
                Item::Text("r1".into()),
                Item::Text("r2".into()),
                Item::Text("r3".into())
            ]
        );
    }

    #[test]
    fn byte_bound_holds_and_close_comes_last() {
        let mut q = q(100, 10);
        let mut ev = Vec::new();
        q.push("123456".into(), true, &mut ev).expect("fits");
        assert_eq!(
            q.push("12345".into(), true, &mut ev),
            Err(Drop::OfferQueueFull)
        );
        q.push("12345".into(), false, &mut ev)
            .expect("evicts the offer");
        assert_eq!(
            q.push("x".repeat(11), false, &mut ev),
            Err(Drop::ReplyQueueFull)
        );
        q.close(1001, "bye");
        assert_eq!(
            q.push("late".into(), false, &mut ev),
            Err(Drop::RecipientGone)
        );
        assert_eq!(q.pop(), Some(Item::Text("12345".into())));
        assert_eq!(q.pop(), Some(Item::Close(1001, "bye".into())));
        assert_eq!(q.pop(), None);
    }
}
