//! Message ids.

use std::fmt;

use super::js_json;

/// The id of a P2PT message, as carried in the envelope's `id` field.
///
/// P2PT draws a random integer in [`MsgId::P2PT_MIN`]`..=`[`MsgId::P2PT_MAX`] for a new message,
/// and a response reuses the id of the message it answers. A caller may also pass its own id,
/// which JavaScript then sends as whatever JSON type it is (usually a string). Ids are always
/// chosen by the caller here; [`MsgId::p2pt`] maps a caller-drawn random number to P2PT's
/// range.
///
/// Decoding never fails because of the id's type: integers (also when written as `1e5` or
/// `100000.0`, which JavaScript reads as the same number) become [`MsgId::Int`], strings
/// become [`MsgId::Str`], and anything else (fractions, huge numbers, `null`, booleans,
/// objects, strings with unpaired surrogates) is kept verbatim as [`MsgId::Other`] so that a
/// response can echo it byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MsgId {
    /// An integer id, as P2PT generates. Written as a JSON number.
    Int(i64),
    /// A string id. Written as a JSON string.
    Str(String),
    /// Any other JSON value seen on the wire, kept as its JSON text.
    Other(RawId),
}

/// The JSON text of an id that is neither an integer nor a valid Unicode string.
///
/// Only the decoder creates these, so the text is always one valid JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawId(String);

impl RawId {
    /// The id's JSON text, exactly as received.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

impl MsgId {
    /// The smallest id P2PT and GhostMesh generate.
    pub const P2PT_MIN: i64 = 100_000;
    /// The largest id P2PT and GhostMesh generate.
    pub const P2PT_MAX: i64 = 199_999;

    /// An id in P2PT's range, from a random number the caller drew (for example
    /// `rng.random::<u32>()`).
    ///
    /// JavaScript computes `Math.floor(Math.random() * 100000 + 100000)`; this scales
    /// `random / 2^32` the same way, so every id in the range is (almost exactly) equally
    /// likely.
    ///
    /// ```
    /// use ghostmesh::wire::MsgId;
    /// assert_eq!(MsgId::p2pt(0), MsgId::Int(100_000));
    /// assert_eq!(MsgId::p2pt(u32::MAX), MsgId::Int(199_999));
    /// ```
    pub fn p2pt(random: u32) -> Self {
        let span = Self::P2PT_MAX - Self::P2PT_MIN + 1;
        let offset = (i64::from(random) * span) >> 32;
        Self::Int(Self::P2PT_MIN + offset)
    }

    /// Appends the id's JSON text.
    pub(crate) fn push_json(&self, out: &mut String) {
        match self {
            Self::Int(n) => out.push_str(&n.to_string()),
            Self::Str(s) => js_json::push_js_str(out, s),
            Self::Other(raw) => out.push_str(&raw.0),
        }
    }

    /// The id as JSON text, as it appears in a frame.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.push_json(&mut out);
        out
    }

    /// Builds an id from the raw JSON text of a frame's `id` field (already validated as one
    /// JSON value by serde_json).
    pub(crate) fn from_raw_json(raw: &str) -> Self {
        let raw = raw.trim();
        if raw.starts_with('"') {
            let mut units = Vec::new();
            if js_json::parse_string_utf16(raw, &mut units).is_ok() {
                if let Ok(s) = String::from_utf16(&units) {
                    return Self::Str(s);
                }
            }
        } else if raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            if let Ok(n) = raw.parse::<i64>() {
                return Self::Int(n);
            }
            // `1e5` and `100000.0` are the number 100000 to JavaScript.
            if let Ok(f) = raw.parse::<f64>() {
                if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER {
                    // Exact: integral and within ±2^53.
                    return Self::Int(f as i64);
                }
            }
        }
        Self::Other(RawId(raw.to_owned()))
    }
}

impl fmt::Display for MsgId {
    /// Shows the id as its JSON text (`123456`, `"abc"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<i64> for MsgId {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<i32> for MsgId {
    fn from(n: i32) -> Self {
        Self::Int(i64::from(n))
    }
}

impl From<u32> for MsgId {
    fn from(n: u32) -> Self {
        Self::Int(i64::from(n))
    }
}

impl From<String> for MsgId {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<&str> for MsgId {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2pt_range() {
        assert_eq!(MsgId::p2pt(0), MsgId::Int(100_000));
        assert_eq!(MsgId::p2pt(u32::MAX / 2), MsgId::Int(149_999));
        assert_eq!(MsgId::p2pt(u32::MAX), MsgId::Int(199_999));
    }

    #[test]
    fn raw_ids_are_classified_like_javascript_reads_them() {
        assert_eq!(MsgId::from_raw_json("123456"), MsgId::Int(123_456));
        assert_eq!(MsgId::from_raw_json("-0"), MsgId::Int(0));
        assert_eq!(MsgId::from_raw_json("1e5"), MsgId::Int(100_000));
        assert_eq!(MsgId::from_raw_json("100000.0"), MsgId::Int(100_000));
        assert_eq!(MsgId::from_raw_json(r#""abc""#), MsgId::from("abc"));
        assert_eq!(MsgId::from_raw_json(r#""\u00e9""#), MsgId::from("é"));
        for raw in [
            "1.5",
            "1e300",
            "null",
            "true",
            "[1]",
            "{\"a\":1}",
            r#""\ud800""#,
        ] {
            let id = MsgId::from_raw_json(raw);
            assert!(matches!(id, MsgId::Other(_)), "{raw}: {id:?}");
            assert_eq!(id.to_json(), raw);
        }
    }

    #[test]
    fn json_text() {
        assert_eq!(MsgId::Int(123_456).to_json(), "123456");
        assert_eq!(MsgId::from("a\"b\u{1}").to_json(), "\"a\\\"b\\u0001\"");
        assert_eq!(MsgId::from("x").to_string(), "\"x\"");
    }
}
