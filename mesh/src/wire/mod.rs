//! The P2PT data-channel message layer, byte-compatible with P2PT and GhostMesh.
//!
//! Every application message travels as one or more text frames on a WebRTC data channel:
//!
//! ```text
//! ^{"id":123456,"msg":"hello","c":0,"last":true}
//! ^{"id":123456,"msg":"{\"a\":1}","o":1,"c":0,"last":true}
//! ```
//!
//! `id` identifies the message (a response reuses it), `msg` is a slice of the payload text,
//! `o:1` says the text is JSON, `c` numbers the chunks from 0 and `last:true` marks the final
//! one. Text is sliced every [`MAX_CHUNK_UNITS`] UTF-16 code units, as JavaScript counts
//! string length, so a slice may end in the middle of a surrogate pair; such halves travel as
//! `\udxxx` escapes and are joined again before the text is decoded.
//!
//! This module is sans-IO: [`encode_chunks`] turns a payload into frames, a [`Reassembler`]
//! turns frames from any number of peers back into [`Message`]s, bounded by
//! [`ReassemblyLimits`]. It draws no random numbers (the caller chooses ids, see
//! [`MsgId::p2pt`]) and reads no clock (the caller passes `now`).
//!
//! ```
//! use std::time::Instant;
//! use ghostmesh::wire::{encode_chunks, MsgId, Payload, Reassembler, Received, MAX_CHUNK_UNITS};
//!
//! // 16001 UTF-16 code units: the emoji straddles the 16000-unit chunk boundary.
//! let text = format!("{}😀", "a".repeat(15_999));
//! let frames = encode_chunks(&MsgId::Int(123456), &Payload::Text(text.clone()), MAX_CHUNK_UNITS);
//! assert_eq!(frames.len(), 2);
//! assert!(frames[0].ends_with(r#"\ud83d","c":0}"#));
//! assert!(frames[1].starts_with(r#"^{"id":123456,"msg":"\ude00","c":1,"last":true"#));
//!
//! let mut reassembler = Reassembler::default();
//! let now = Instant::now();
//! assert!(matches!(reassembler.push(&"peer", &frames[0], now)?, Received::Partial { .. }));
//! match reassembler.push(&"peer", &frames[1], now)? {
//!     Received::Complete(message) => assert_eq!(message.payload, Payload::Text(text)),
//!     other => panic!("expected a complete message, got {other:?}"),
//! }
//! # Ok::<(), ghostmesh::wire::WireError>(())
//! ```

mod encode;
mod error;
mod frame;
mod id;
pub mod js_json;
mod reassembly;

use std::borrow::Cow;

pub use encode::{encode_chunks, encode_msg_chunks};
pub use error::WireError;
pub use frame::{Chunk, parse_frame};
pub use id::{MsgId, RawId};
pub use reassembly::{Message, Reassembler, ReassemblyLimits, Received};

/// The first character of every envelope frame (P2PT's `JSON_MESSAGE_IDENTIFIER`).
pub const ENVELOPE_PREFIX: char = '^';

/// P2PT's and GhostMesh's chunk size (`MAX_MESSAGE_LENGTH`), in UTF-16 code units of the
/// unescaped `msg` text. A frame can be far larger in bytes: escaping and UTF-8 expansion
/// are not counted.
pub const MAX_CHUNK_UNITS: usize = 16_000;

/// The content of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A string, sent as `msg` itself (no `o`).
    Text(String),
    /// A JSON value, sent as its `JSON.stringify` text with `o:1`. JavaScript does this for
    /// objects, arrays and `null`; see [`encode_chunks`] for scalars.
    Json(serde_json::Value),
}

impl Payload {
    /// Whether the payload is sent with `o:1`.
    pub fn is_json(&self) -> bool {
        matches!(self, Self::Json(_))
    }

    /// The `msg` text before chunking: the string itself, or the JSON text exactly as
    /// JavaScript's `JSON.stringify` writes it.
    pub fn msg_text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Json(value) => Cow::Owned(js_json::stringify(value)),
        }
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value)
    }
}
