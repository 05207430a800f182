//! Harness messages: a payload of a chosen size and kind that carries the harness's message
//! number, so the receiver can report its delivery.

use ghostmesh::wire::Payload;
use serde_json::json;

use crate::scenario::Content;

const PREFIX: &str = "gm:";
const EMOJI_FILL: &str = "👻ghost🎉mesh🌍é€";

/// A payload of about `size` bytes (UTF-8) carrying message number `id`.
pub fn make(id: usize, size: usize, content: Content) -> Payload {
    let head = format!("{PREFIX}{id}|");
    let fill_len = size.saturating_sub(head.len());
    match content {
        Content::Text => {
            let mut s = head;
            s.extend((0..fill_len).map(|i| (b'a' + (i % 26) as u8) as char));
            Payload::Text(s)
        }
        Content::Emoji => {
            let mut s = head;
            let target = s.len() + fill_len;
            'outer: loop {
                for c in EMOJI_FILL.chars() {
                    if s.len() + c.len_utf8() > target {
                        break 'outer;
                    }
                    s.push(c);
                }
            }
            Payload::Text(s)
        }
        Content::Json => {
            let pad: String = (0..size.saturating_sub(24))
                .map(|i| (b'a' + (i % 26) as u8) as char)
                .collect();
            Payload::Json(json!({ "gm": id, "pad": pad }))
        }
    }
}

/// The message number a harness payload carries, if it is one.
pub fn id_of(p: &Payload) -> Option<usize> {
    match p {
        Payload::Text(s) => s.strip_prefix(PREFIX)?.split_once('|')?.0.parse().ok(),
        Payload::Json(v) => v.get("gm")?.as_u64().map(|n| n as usize),
    }
}

/// Whether `p` is exactly what [`make`] produced for `id` (checks that chunking kept it whole).
pub fn intact(p: &Payload, id: usize, size: usize, content: Content) -> bool {
    *p == make(id, size, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for c in [Content::Text, Content::Json, Content::Emoji] {
            let p = make(42, 1000, c);
            assert_eq!(id_of(&p), Some(42));
            assert!(intact(&p, 42, 1000, c));
        }
        let Payload::Text(e) = make(1, 100, Content::Emoji) else {
            return;
        };
        assert!(e.len() <= 100 && e.len() > 90);
        assert!(e.chars().any(|c| c.len_utf16() == 2));
    }
}
