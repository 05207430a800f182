//! Reading one P2PT frame.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ENVELOPE_PREFIX, MsgId, WireError, js_json};

/// One parsed envelope frame: a slice of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The message id.
    pub id: MsgId,
    /// This chunk's slice of the message text, in UTF-16 code units (it may begin or end
    /// with half of a surrogate pair).
    pub units: Vec<u16>,
    /// `o` was truthy: the reassembled text is JSON.
    pub object: bool,
    /// `c`, the chunk index (0 when absent or `null`, as GhostMesh reads it).
    pub index: u64,
    /// `last` was truthy: this chunk completes the message.
    pub last: bool,
}

/// The envelope's fields as raw JSON. `id` and `msg` are required; serde_json has checked
/// that each is one well-formed JSON value, and its raw-value path accepts lone surrogate
/// escapes (the `String` path rejects them).
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    msg: &'a RawValue,
    #[serde(borrow, default)]
    o: Option<&'a RawValue>,
    #[serde(borrow, default)]
    c: Option<&'a RawValue>,
    #[serde(borrow, default)]
    last: Option<&'a RawValue>,
}

/// Largest index a JavaScript array accepts; P2PT stores chunks in an array by `c`.
const MAX_ARRAY_INDEX: u64 = u32::MAX as u64 - 1;

/// Parses one data-channel frame.
///
/// Returns `Ok(None)` for a frame that does not start with `^`: P2PT hands those only to its
/// raw `data` event. Unknown envelope fields are ignored, as JavaScript ignores them.
///
/// Stricter than P2PT, which would accept and mangle these: `msg` must be a string (P2PT
/// `join`s whatever it gets, `5` becomes `"5"`), `id` and `msg` must be present, and `c`
/// must be a non-negative integer. A duplicated field is an error (serde_json), where
/// `JSON.parse` keeps the last one.
///
/// ```
/// use ghostmesh::wire::{parse_frame, MsgId};
/// let chunk = parse_frame(r#"^{"id":7,"msg":"\ud83d","c":3}"#).unwrap().unwrap();
/// assert_eq!((chunk.id, chunk.units, chunk.index, chunk.last), (MsgId::Int(7), vec![0xd83d], 3, false));
/// assert_eq!(parse_frame("hello"), Ok(None));
/// ```
pub fn parse_frame(frame: &str) -> Result<Option<Chunk>, WireError> {
    let Some(json) = frame.strip_prefix(ENVELOPE_PREFIX) else {
        return Ok(None);
    };
    let raw: RawEnvelope<'_> = serde_json::from_str(json).map_err(|e| WireError::Malformed {
        reason: e.to_string(),
    })?;
    let id = MsgId::from_raw_json(raw.id.get());
    let mut units = Vec::new();
    js_json::parse_string_utf16(raw.msg.get().trim(), &mut units).map_err(|e| {
        WireError::Malformed {
            reason: format!("field `msg`: {}", e.describe()),
        }
    })?;
    let index = match raw.c {
        None => 0,
        Some(c) => chunk_index(c.get()).ok_or_else(|| WireError::InvalidChunkIndex {
            id: id.clone(),
            raw: c.get().to_owned(),
        })?,
    };
    Ok(Some(Chunk {
        id,
        units,
        object: raw.o.is_some_and(|o| js_truthy(o.get())),
        index,
        last: raw.last.is_some_and(|l| js_truthy(l.get())),
    }))
}

/// `c` as an array index: a non-negative integral number (`2`, `2.0`, `2e0`). `null` is
/// mapped to `None` by serde before this is reached, and means 0.
fn chunk_index(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let index = match raw.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            let f = raw.parse::<f64>().ok()?;
            if f.fract() != 0.0 || !(0.0..=MAX_ARRAY_INDEX as f64).contains(&f) {
                return None;
            }
            // Exact: integral and in range.
            f as u64
        }
    };
    (index <= MAX_ARRAY_INDEX).then_some(index)
}

/// JavaScript truthiness of a JSON value, which is how P2PT tests `o` and `last`: `false`,
/// `null`, `0` (in any spelling) and `""` are falsy, everything else is truthy.
fn js_truthy(raw: &str) -> bool {
    let raw = raw.trim();
    match raw.as_bytes().first() {
        Some(b't' | b'{' | b'[') => true,
        Some(b'f' | b'n') | None => false,
        Some(b'"') => raw != "\"\"",
        // A number; serde_json validated it, so it parses (possibly to infinity, truthy).
        Some(_) => !raw.parse::<f64>().is_ok_and(|f| f == 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(frame: &str) -> Chunk {
        match parse_frame(frame) {
            Ok(Some(chunk)) => chunk,
            other => panic!("{frame}: {other:?}"),
        }
    }

    #[test]
    fn reference_examples() {
        let chunk = parse(r#"^{"id":123456,"msg":"hello","c":0,"last":true}"#);
        assert_eq!(chunk.id, MsgId::Int(123_456));
        assert_eq!(String::from_utf16_lossy(&chunk.units), "hello");
        assert!(!chunk.object && chunk.last && chunk.index == 0);
        let chunk = parse(r#"^{"id":123456,"msg":"{\"a\":1}","o":1,"c":0,"last":true}"#);
        assert_eq!(String::from_utf16_lossy(&chunk.units), "{\"a\":1}");
        assert!(chunk.object && chunk.last);
    }

    #[test]
    fn not_envelopes() {
        for frame in [
            "",
            "hello",
            " ^{}",
            "{\"id\":1,\"msg\":\"x\"}",
            "p{\"id\":1}",
        ] {
            assert_eq!(parse_frame(frame), Ok(None), "{frame}");
        }
    }

    #[test]
    fn missing_c_is_zero_and_truthiness_follows_javascript() {
        let chunk = parse(r#"^{"id":1,"msg":"x"}"#);
        assert!(chunk.index == 0 && !chunk.last && !chunk.object);
        let chunk = parse(r#"^{"id":1,"msg":"x","c":null,"last":null,"o":null}"#);
        assert!(chunk.index == 0 && !chunk.last && !chunk.object);
        for (raw, truthy) in [
            ("true", true),
            ("1", true),
            ("-0.5", true),
            ("\"x\"", true),
            ("\"false\"", true),
            ("{}", true),
            ("[]", true),
            ("false", false),
            ("0", false),
            ("-0", false),
            ("0.0e5", false),
            ("\"\"", false),
            ("null", false),
        ] {
            let chunk = parse(&format!(r#"^{{"id":1,"msg":"x","o":{raw},"last":{raw}}}"#));
            assert_eq!((chunk.object, chunk.last), (truthy, truthy), "{raw}");
        }
    }

    #[test]
    fn chunk_indexes() {
        assert_eq!(parse(r#"^{"id":1,"msg":"x","c":2.0}"#).index, 2);
        assert_eq!(parse(r#"^{"id":1,"msg":"x","c":3e0}"#).index, 3);
        assert_eq!(
            parse(r#"^{"id":1,"msg":"x","c":4294967294}"#).index,
            4_294_967_294
        );
        for bad in ["-1", "1.5", "4294967295", "1e300", "\"1\"", "true", "[0]"] {
            let frame = format!(r#"^{{"id":1,"msg":"x","c":{bad}}}"#);
            assert_eq!(
                parse_frame(&frame),
                Err(WireError::InvalidChunkIndex {
                    id: MsgId::Int(1),
                    raw: bad.to_owned()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for frame in [
            "^",
            "^{",
            "^null",
            "^[1,2]",
            "^\"x\"",
            r#"^{"msg":"x"}"#,
            r#"^{"id":1}"#,
            r#"^{"id":1,"msg":5}"#,
            r#"^{"id":1,"msg":null}"#,
            r#"^{"id":1,"msg":"\x"}"#,
            r#"^{"id":1,"msg":"x","msg":"y"}"#,
            r#"^{"id":1,"msg":"x"} trailing"#,
            "^{\"id\":1,\"msg\":\"\u{1}\"}",
        ] {
            assert!(
                matches!(parse_frame(frame), Err(WireError::Malformed { .. })),
                "{frame}: {:?}",
                parse_frame(frame)
            );
        }
    }

    #[test]
    fn tolerated_oddities() {
        // Whitespace, unknown fields and any id type are fine.
        let chunk = parse("^ { \"id\" : null , \"msg\" : \"\\ude00\" , \"extra\" : [1] }");
        assert_eq!(chunk.id.to_json(), "null");
        assert_eq!(chunk.units, [0xde00]);
        let chunk = parse(r#"^{"id":"\ud800","msg":"x"}"#);
        assert_eq!(chunk.id.to_json(), r#""\ud800""#);
    }
}
