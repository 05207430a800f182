//! JSON exactly as JavaScript writes it, and JSON strings read as UTF-16.
//!
//! P2PT frames are `JSON.stringify` output, and a JavaScript string is a sequence of UTF-16
//! code units that may hold unpaired surrogates. This module reproduces `JSON.stringify`
//! (ECMAScript 2019+, "well-formed JSON.stringify", as in Node 12+ and current browsers) for
//! UTF-16 slices and for [`serde_json::Value`], and parses a JSON string literal into code
//! units without rejecting lone surrogates (which `serde_json` does when it builds a
//! `String`).

use serde_json::Value;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `\u` and four lowercase hex digits, as `JSON.stringify` writes them.
fn push_u_escape(out: &mut String, unit: u16) {
    out.push_str("\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
    }
}

/// Appends one Unicode scalar value, escaped like `JSON.stringify` (QuoteJSONString).
///
/// Only `"`, `\` and the C0 controls are escaped: `/`, DEL, non-ASCII and U+2028/U+2029 go out
/// raw.
fn push_escaped_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\u{c}' => out.push_str("\\f"),
        '\r' => out.push_str("\\r"),
        // The guard guarantees the value fits in a u16.
        c if c < ' ' => push_u_escape(out, c as u16),
        c => out.push(c),
    }
}

/// Appends a Rust string as a JSON string literal, quotes included, like `JSON.stringify`.
pub fn push_js_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        push_escaped_char(out, c);
    }
    out.push('"');
}

/// Appends a slice of UTF-16 code units as a JSON string literal, quotes included, like
/// `JSON.stringify` does for a JavaScript string: paired surrogates become the raw character,
/// an unpaired one becomes a lowercase `\udxxx` escape.
pub fn push_js_utf16(out: &mut String, units: &[u16]) {
    out.push('"');
    for decoded in char::decode_utf16(units.iter().copied()) {
        match decoded {
            Ok(c) => push_escaped_char(out, c),
            Err(lone) => push_u_escape(out, lone.unpaired_surrogate()),
        }
    }
    out.push('"');
}

/// Formats a finite `f64` like JavaScript's `Number.prototype.toString()` (ECMA-262
/// Number::toString with radix 10), which is what `JSON.stringify` writes for numbers.
///
/// Differences from Rust and serde_json that matter here: `1.0` is `1`, `1e21` is `1e+21`,
/// `1e-7` is `1e-7` but `0.000001` stays decimal, `-0` is `0`. Non-finite values become
/// `null`, as in `JSON.stringify`.
pub fn js_number(value: f64) -> String {
    if !value.is_finite() {
        return "null".to_owned();
    }
    if value == 0.0 {
        return "0".to_owned();
    }
    if value < 0.0 {
        return format!("-{}", js_number(-value));
    }
    // Rust's `{:e}` prints the shortest digit string that round-trips, as the ECMAScript
    // algorithm requires: e.g. "1.2345e2" or "5e-324".
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    // In ECMA-262's terms the value is 0.digits × 10^n.
    let n = exponent + 1;
    if k <= n && n <= 21 {
        let zeros = usize::try_from(n - k).unwrap_or(0);
        format!("{digits}{}", "0".repeat(zeros))
    } else if 0 < n && n <= 21 {
        let split = usize::try_from(n).unwrap_or(0);
        format!("{}.{}", &digits[..split], &digits[split..])
    } else if -6 < n && n <= 0 {
        let zeros = usize::try_from(-n).unwrap_or(0);
        format!("0.{}{digits}", "0".repeat(zeros))
    } else {
        let sign = if n - 1 < 0 { '-' } else { '+' };
        let e = (n - 1).abs();
        if digits.len() == 1 {
            format!("{digits}e{sign}{e}")
        } else {
            format!("{}.{}e{sign}{e}", &digits[..1], &digits[1..])
        }
    }
}

/// Serializes a JSON value exactly like JavaScript's `JSON.stringify` would serialize the
/// equivalent JavaScript value: no whitespace, JavaScript string escaping and JavaScript
/// number formatting.
///
/// Object members are written in the `Value`'s own iteration order (sorted by key unless
/// serde_json's `preserve_order` feature is on). Integers are written exactly, even beyond
/// 2^53 where a JavaScript number would round.
///
/// ```
/// use ghostmesh::wire::js_json::stringify;
/// let v = serde_json::json!({"a": [1.0, 1e21, "\u{2028}/\u{1}"], "b": null});
/// assert_eq!(stringify(&v), "{\"a\":[1,1e+21,\"\u{2028}/\\u0001\"],\"b\":null}");
/// ```
pub fn stringify(value: &Value) -> String {
    let mut out = String::new();
    push_value(&mut out, value);
    out
}

fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&js_number(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => push_js_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_js_str(out, key);
                out.push(':');
                push_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Why a JSON string literal could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StringLiteralError {
    NotAString,
    BadEscape,
    RawControl,
}

impl StringLiteralError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::NotAString => "not a JSON string",
            Self::BadEscape => "invalid escape sequence in JSON string",
            Self::RawControl => "unescaped control character in JSON string",
        }
    }
}

/// Reads a JSON string literal (quotes included) into UTF-16 code units, appending to `out`.
///
/// Unlike serde_json's `String` deserialization, `\ud83d` without its partner is accepted and
/// kept as one code unit, exactly as `JSON.parse` keeps it in a JavaScript string.
pub(crate) fn parse_string_utf16(
    literal: &str,
    out: &mut Vec<u16>,
) -> Result<(), StringLiteralError> {
    let inner = literal
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or(StringLiteralError::NotAString)?;
    let mut rest = inner;
    loop {
        // Copy the run up to the next escape in one go: most of a message has no escapes.
        let run_end = rest.find('\\').unwrap_or(rest.len());
        let (run, after) = rest.split_at(run_end);
        if run.chars().any(|c| c < ' ') {
            return Err(StringLiteralError::RawControl);
        }
        out.extend(run.encode_utf16());
        let Some(escape) = after.strip_prefix('\\') else {
            return Ok(());
        };
        let mut chars = escape.chars();
        let unit = match chars.next() {
            Some('"') => 0x22,
            Some('\\') => 0x5c,
            Some('/') => 0x2f,
            Some('b') => 0x08,
            Some('f') => 0x0c,
            Some('n') => 0x0a,
            Some('r') => 0x0d,
            Some('t') => 0x09,
            Some('u') => {
                let mut unit: u16 = 0;
                for _ in 0..4 {
                    let digit = chars
                        .next()
                        .and_then(|c| c.to_digit(16))
                        .ok_or(StringLiteralError::BadEscape)?;
                    // to_digit(16) is < 16, so this cannot truncate.
                    unit = (unit << 4) | digit as u16;
                }
                unit
            }
            _ => return Err(StringLiteralError::BadEscape),
        };
        out.push(unit);
        rest = chars.as_str();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(literal: &str) -> Result<Vec<u16>, StringLiteralError> {
        let mut out = Vec::new();
        parse_string_utf16(literal, &mut out).map(|()| out)
    }

    fn js(units: &[u16]) -> String {
        let mut out = String::new();
        push_js_utf16(&mut out, units);
        out
    }

    #[test]
    fn lone_surrogates_are_escaped_lowercase() {
        // Node v20: JSON.stringify("\ud83d") === '"\\ud83d"'
        assert_eq!(js(&[0xd83d]), r#""\ud83d""#);
        // Node v20: JSON.stringify("\ude00x\ud83d\ude00") === '"\\ude00x😀"'
        assert_eq!(js(&[0xde00, 0x78, 0xd83d, 0xde00]), "\"\\ude00x😀\"");
    }

    #[test]
    fn controls_and_specials_match_node() {
        // Produced with Node v20:
        // let s = ""; for (let i = 0; i < 0x20; i++) s += String.fromCharCode(i);
        // s += "\x7f\"\\/\u2028\u2029\u0080\uffff\ufeff"; JSON.stringify(s)
        // (non-ASCII output characters transcribed as \u{..} escapes)
        let mut s: String = (0u8..0x20).map(char::from).collect();
        s.push_str("\u{7f}\"\\/\u{2028}\u{2029}\u{80}\u{ffff}\u{feff}");
        let node = "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\u{7f}\\\"\\\\/\u{2028}\u{2029}\u{80}\u{ffff}\u{feff}\"";
        let mut out = String::new();
        push_js_str(&mut out, &s);
        assert_eq!(out, node);
        let units: Vec<u16> = s.encode_utf16().collect();
        assert_eq!(js(&units), node);
        assert_eq!(utf16(node), Ok(units));
    }

    #[test]
    fn numbers_match_node() {
        // Produced with Node v20: JSON.stringify([1.0, 1e21, 1e-7, 1.5e-7, 0.000001, 123.456,
        // -0, 5e-324, 1.7976931348623157e308, 0.1+0.2, 100, 1e20, 123456789012345680000,
        // -1.5, 2**53+2, 1/3])
        let node = "[1,1e+21,1e-7,1.5e-7,0.000001,123.456,0,5e-324,1.7976931348623157e+308,0.30000000000000004,100,100000000000000000000,123456789012345680000,-1.5,9007199254740994,0.3333333333333333]";
        let values = [
            1.0,
            1e21,
            1e-7,
            1.5e-7,
            0.000001,
            123.456,
            -0.0,
            5e-324,
            1.7976931348623157e308,
            0.1 + 0.2,
            100.0,
            1e20,
            123456789012345680000.0,
            -1.5,
            9007199254740994.0,
            1.0 / 3.0,
        ];
        let ours: Vec<String> = values.iter().map(|v| js_number(*v)).collect();
        assert_eq!(format!("[{}]", ours.join(",")), node);
        assert_eq!(js_number(f64::NAN), "null");
        assert_eq!(js_number(f64::INFINITY), "null");
    }

    #[test]
    fn stringify_value_matches_node() {
        // Node v20: JSON.stringify({a:[null,true,false,"x\ud83d\ude00"],b:1})
        let v = serde_json::json!({"a": [null, true, false, "x😀"], "b": 1});
        assert_eq!(stringify(&v), "{\"a\":[null,true,false,\"x😀\"],\"b\":1}");
        assert_eq!(
            stringify(&serde_json::json!(u64::MAX)),
            "18446744073709551615"
        );
        assert_eq!(stringify(&serde_json::json!(-5)), "-5");
    }

    #[test]
    fn string_literal_parser_accepts_what_json_parse_accepts() {
        assert_eq!(utf16(r#""""#), Ok(vec![]));
        assert_eq!(utf16(r#""\ud83d""#), Ok(vec![0xd83d]));
        assert_eq!(utf16(r#""\uDE00\/""#), Ok(vec![0xde00, 0x2f]));
        assert_eq!(utf16("\"é😀\""), Ok(vec![0xe9, 0xd83d, 0xde00]));
        assert_eq!(utf16("\"a"), Err(StringLiteralError::NotAString));
        assert_eq!(utf16("5"), Err(StringLiteralError::NotAString));
        assert_eq!(utf16(r#""\x""#), Err(StringLiteralError::BadEscape));
        assert_eq!(utf16(r#""\u12""#), Err(StringLiteralError::BadEscape));
        assert_eq!(utf16(r#""\u12g4""#), Err(StringLiteralError::BadEscape));
        assert_eq!(utf16("\"\\\""), Err(StringLiteralError::BadEscape));
        assert_eq!(utf16("\"\n\""), Err(StringLiteralError::RawControl));
    }
}
