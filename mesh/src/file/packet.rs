//! File-transfer packets: GhostMesh's JSON packets (`__ghostmeshInternal: "file-*"`, fields in
//! GhostMesh's wire order, base64 chunk data) and our binary fast-path chunk frame.
//!
//! Extensions, ignored by GhostMesh (it reads named fields only): `sha256` on `file-offer` and
//! `file-end`, `fast` on `file-offer`; and two packets only ever sent to a peer whose offer
//! carried `fast` (so a JavaScript peer never sees them): `file-accept` and `file-ack`.
//! A `file-accept` from this crate also carries `frame`, the largest fast-path frame payload
//! the receiver asks for (read from the JSON by the sender; receivers without it get 64 KiB
//! frames).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

/// The key GhostMesh dispatches internal packets on.
pub const INTERNAL_KEY: &str = "__ghostmeshInternal";

/// First bytes of a fast-path chunk frame. GhostMesh frames start with `^` (an envelope) or
/// are text; this starts with a NUL byte, so it is never mistaken for either.
pub const FAST_MAGIC: [u8; 4] = [0, b'G', b'M', b'F'];

/// Longest transfer id accepted (GhostMesh makes 16 hex characters).
pub const MAX_TRANSFER_ID: usize = 64;

/// A decoded file packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// A new transfer.
    Offer(Offer),
    /// Bytes at `offset` (a whole chunk, or a range reply spanning several).
    Chunk {
        /// The transfer.
        transfer_id: String,
        /// `floor(offset / chunkSize)` as GhostMesh sends it (not trusted).
        chunk_index: u64,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Please send `[start, end)` again (GhostMesh's streaming from an offset).
    RangeRequest {
        /// The transfer.
        transfer_id: String,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The transfer is abandoned.
    Cancel {
        /// The transfer.
        transfer_id: String,
        /// Why.
        reason: String,
    },
    /// The sender sent every chunk.
    End {
        /// The transfer.
        transfer_id: String,
        /// SHA-256 of the whole file, lowercase hex (our extension).
        sha256: Option<String>,
    },
    /// (Rust peers) The receiver takes binary chunks, and allows `window` bytes in flight.
    Accept {
        /// The transfer.
        transfer_id: String,
        /// Bytes the sender may have unacknowledged.
        window: u64,
    },
    /// (Rust peers) The receiver holds every byte below `received` contiguously... or, with
    /// `complete`, verified the whole file.
    Ack {
        /// The transfer.
        transfer_id: String,
        /// Bytes stored.
        received: u64,
        /// The file is complete (and matched its hash, if any).
        complete: bool,
    },
}

/// A `file-offer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// The transfer id (16 hex characters from GhostMesh and from us).
    pub transfer_id: String,
    /// File name.
    pub name: String,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// `max(1, ceil(size / chunkSize))`.
    pub total_chunks: u64,
    /// Application metadata, if any.
    pub metadata: Option<Value>,
    /// SHA-256 of the file, lowercase hex, when known up front (our extension).
    pub sha256: Option<String>,
    /// The sender speaks the binary fast path (our extension).
    pub fast: bool,
}

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketError(pub String);

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad file packet: {}", self.0)
    }
}

impl std::error::Error for PacketError {}

/// `max(1, ceil(size / chunk_size))`, as GhostMesh counts chunks.
pub fn total_chunks(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size.max(1)).max(1)
}

fn obj(kind: &str, transfer_id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(INTERNAL_KEY.into(), kind.into());
    m.insert("transferId".into(), transfer_id.into());
    m
}

impl Packet {
    /// The JSON object, keys in GhostMesh's order. (Chunks on the fast path are
    /// [`encode_fast`] frames instead.)
    pub fn to_json(&self) -> Value {
        let m = match self {
            Packet::Offer(o) => {
                let mut m = obj("file-offer", &o.transfer_id);
                m.insert("name".into(), o.name.clone().into());
                m.insert("mimeType".into(), o.mime_type.clone().into());
                m.insert("size".into(), o.size.into());
                m.insert("chunkSize".into(), o.chunk_size.into());
                m.insert("totalChunks".into(), o.total_chunks.into());
                if let Some(meta) = &o.metadata {
                    m.insert("metadata".into(), meta.clone());
                }
                if let Some(h) = &o.sha256 {
                    m.insert("sha256".into(), h.clone().into());
                }
                if o.fast {
                    m.insert("fast".into(), 1.into());
                }
                m
            }
            Packet::Chunk {
                transfer_id,
                chunk_index,
                offset,
                data,
            } => {
                let mut m = obj("file-chunk", transfer_id);
                m.insert("chunkIndex".into(), (*chunk_index).into());
                m.insert("offset".into(), (*offset).into());
                m.insert("data".into(), BASE64.encode(data).into());
                m
            }
            Packet::RangeRequest {
                transfer_id,
                start,
                end,
            } => {
                let mut m = obj("file-range-request", transfer_id);
                m.insert("start".into(), (*start).into());
                m.insert("end".into(), (*end).into());
                m
            }
            Packet::Cancel {
                transfer_id,
                reason,
            } => {
                let mut m = obj("file-cancel", transfer_id);
                m.insert("reason".into(), reason.clone().into());
                m
            }
            Packet::End {
                transfer_id,
                sha256,
            } => {
                let mut m = obj("file-end", transfer_id);
                if let Some(h) = sha256 {
                    m.insert("sha256".into(), h.clone().into());
                }
                m
            }
            Packet::Accept {
                transfer_id,
                window,
            } => {
                let mut m = obj("file-accept", transfer_id);
                m.insert("fast".into(), 1.into());
                m.insert("window".into(), (*window).into());
                m
            }
            Packet::Ack {
                transfer_id,
                received,
                complete,
            } => {
                let mut m = obj("file-ack", transfer_id);
                m.insert("received".into(), (*received).into());
                if *complete {
                    m.insert("complete".into(), true.into());
                }
                m
            }
        };
        Value::Object(m)
    }

    /// The transfer this packet belongs to.
    pub fn transfer_id(&self) -> &str {
        match self {
            Packet::Offer(o) => &o.transfer_id,
            Packet::Chunk { transfer_id, .. }
            | Packet::RangeRequest { transfer_id, .. }
            | Packet::Cancel { transfer_id, .. }
            | Packet::End { transfer_id, .. }
            | Packet::Accept { transfer_id, .. }
            | Packet::Ack { transfer_id, .. } => transfer_id,
        }
    }
}

/// Whether `value` is a file packet (an object whose `__ghostmeshInternal` starts `file-`).
pub fn is_file_packet(value: &Value) -> bool {
    value
        .get(INTERNAL_KEY)
        .and_then(Value::as_str)
        .is_some_and(|k| k.starts_with("file-"))
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, PacketError> {
    v.get(key)
        .ok_or_else(|| PacketError(format!("missing {key}")))
}

fn str_field(v: &Value, key: &str, max: usize) -> Result<String, PacketError> {
    let s = field(v, key)?
        .as_str()
        .ok_or_else(|| PacketError(format!("{key} is not a string")))?;
    if s.len() > max {
        return Err(PacketError(format!("{key} longer than {max} bytes")));
    }
    Ok(s.to_owned())
}

/// A non-negative integer up to 2^53 (JavaScript's safe integers); `1024.0` counts.
fn u64_field(v: &Value, key: &str) -> Result<u64, PacketError> {
    let x = field(v, key)?;
    let bad = || PacketError(format!("{key} is not a non-negative integer"));
    if let Some(n) = x.as_u64() {
        return (n <= 1 << 53).then_some(n).ok_or_else(bad);
    }
    match x.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0 => Ok(f as u64),
        _ => Err(bad()),
    }
}

fn opt_hash(v: &Value) -> Result<Option<String>, PacketError> {
    match v.get("sha256") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(h.to_ascii_lowercase()))
        }
        Some(_) => Err(PacketError("sha256 is not 64 hex digits".into())),
    }
}

/// Decodes a file packet (call when [`is_file_packet`] holds). `max_data` bounds the decoded
/// bytes of one chunk.
pub fn decode(v: &Value, max_data: usize) -> Result<Packet, PacketError> {
    let kind = field(v, INTERNAL_KEY)?.as_str().unwrap_or_default();
    let transfer_id = str_field(v, "transferId", MAX_TRANSFER_ID)?;
    if transfer_id.is_empty() {
        return Err(PacketError("empty transferId".into()));
    }
    Ok(match kind {
        "file-offer" => {
            let chunk_size = u64_field(v, "chunkSize")?;
            if chunk_size == 0 {
                return Err(PacketError("chunkSize is 0".into()));
            }
            let size = u64_field(v, "size")?;
            Packet::Offer(Offer {
                transfer_id,
                name: str_field(v, "name", 4096)?,
                mime_type: str_field(v, "mimeType", 1024)?,
                size,
                chunk_size,
                total_chunks: u64_field(v, "totalChunks")?,
                metadata: v.get("metadata").cloned(),
                sha256: opt_hash(v)?,
                fast: v.get("fast").is_some_and(|f| f == 1 || f == true),
            })
        }
        "file-chunk" => {
            let b64 = field(v, "data")?
                .as_str()
                .ok_or_else(|| PacketError("data is not a string".into()))?;
            // 4 base64 characters per 3 bytes: refuse before decoding.
            if b64.len() / 4 * 3 > max_data + 3 {
                return Err(PacketError(format!("chunk data over {max_data} bytes")));
            }
            let data = BASE64
                .decode(b64)
                .map_err(|e| PacketError(format!("data is not base64: {e}")))?;
            if data.len() > max_data {
                return Err(PacketError(format!("chunk data over {max_data} bytes")));
            }
            Packet::Chunk {
                transfer_id,
                chunk_index: u64_field(v, "chunkIndex")?,
                offset: u64_field(v, "offset")?,
                data,
            }
        }
        "file-range-request" => Packet::RangeRequest {
            transfer_id,
            start: u64_field(v, "start")?,
            end: u64_field(v, "end")?,
        },
        "file-cancel" => Packet::Cancel {
            transfer_id,
            reason: v
                .get("reason")
                .and_then(Value::as_str)
                .map(|r| r.chars().take(1024).collect())
                .unwrap_or_else(|| "Transfer canceled".into()),
        },
        "file-end" => Packet::End {
            transfer_id,
            sha256: opt_hash(v)?,
        },
        "file-accept" => Packet::Accept {
            transfer_id,
            window: u64_field(v, "window")?,
        },
        "file-ack" => Packet::Ack {
            transfer_id,
            received: u64_field(v, "received")?,
            complete: v.get("complete") == Some(&json!(true)),
        },
        other => return Err(PacketError(format!("unknown packet {other:?}"))),
    })
}

/// A fast-path chunk frame: magic, version 1, id length, id, offset (u64 BE), bytes.
pub fn encode_fast(transfer_id: &str, offset: u64, data: &[u8]) -> Vec<u8> {
    let id = transfer_id.as_bytes();
    let mut out = Vec::with_capacity(4 + 2 + id.len() + 8 + data.len());
    out.extend_from_slice(&FAST_MAGIC);
    out.push(1);
    out.push(id.len().min(MAX_TRANSFER_ID) as u8);
    out.extend_from_slice(&id[..id.len().min(MAX_TRANSFER_ID)]);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Whether a binary frame is a fast-path chunk frame.
pub fn is_fast(frame: &[u8]) -> bool {
    frame.starts_with(&FAST_MAGIC)
}

/// Decodes an [`encode_fast`] frame: (transfer id, offset, bytes).
pub fn decode_fast(frame: &[u8]) -> Result<(String, u64, &[u8]), PacketError> {
    let bad = |why: &str| PacketError(format!("fast chunk frame: {why}"));
    let rest = frame
        .strip_prefix(&FAST_MAGIC)
        .ok_or_else(|| bad("no magic"))?;
    let (&version, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    if version != 1 {
        return Err(bad(&format!("unknown version {version}")));
    }
    let (&len, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    let len = usize::from(len);
    if len == 0 || len > MAX_TRANSFER_ID || rest.len() < len + 8 {
        return Err(bad("bad id length or truncated"));
    }
    let id = std::str::from_utf8(&rest[..len]).map_err(|_| bad("id is not UTF-8"))?;
    let mut off = [0u8; 8];
    off.copy_from_slice(&rest[len..len + 8]);
    Ok((id.to_owned(), u64::from_be_bytes(off), &rest[len + 8..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn packets_have_ghostmesh_key_order() {
        let offer = Packet::Offer(Offer {
            transfer_id: "0123456789abcdef".into(),
            name: "a.txt".into(),
            mime_type: "text/plain".into(),
            size: 5,
            chunk_size: 12288,
            total_chunks: 1,
            metadata: Some(json!({"k": "v"})),
            sha256: None,
            fast: false,
        });
        assert_eq!(
            offer.to_json().to_string(),
            r#"{"__ghostmeshInternal":"file-offer","transferId":"0123456789abcdef","name":"a.txt","mimeType":"text/plain","size":5,"chunkSize":12288,"totalChunks":1,"metadata":{"k":"v"}}"#
        );
        let chunk = Packet::Chunk {
            transfer_id: "t".into(),
            chunk_index: 0,
            offset: 0,
            data: b"hello".to_vec(),
        };
        assert_eq!(
            chunk.to_json().to_string(),
            r#"{"__ghostmeshInternal":"file-chunk","transferId":"t","chunkIndex":0,"offset":0,"data":"aGVsbG8="}"#
        );
        for p in [offer, chunk] {
            assert_eq!(decode(&p.to_json(), 1 << 20).unwrap(), p);
        }
    }

    /// ghostmesh-wire.md 4.6: "A 12288-byte chunk becomes 16384 base64 characters, and the
    /// inner packet string is 16488 characters. Each file chunk therefore takes 2 envelope
    /// chunks."
    #[test]
    fn a_default_chunk_is_16488_characters_in_two_envelopes() {
        let chunk = Packet::Chunk {
            transfer_id: "0123456789abcdef".into(),
            chunk_index: 0,
            offset: 0,
            data: vec![7u8; 12288],
        };
        let v = chunk.to_json();
        assert_eq!(v["data"].as_str().unwrap().len(), 16384);
        let text = crate::wire::js_json::stringify(&v);
        assert_eq!(text.len(), 16488);
        let frames = crate::wire::encode_chunks(
            &crate::wire::MsgId::Int(123_456),
            &crate::wire::Payload::Json(v),
            crate::wire::MAX_CHUNK_UNITS,
        );
        assert_eq!(frames.len(), 2);
        assert!(
            frames[0]
                .starts_with(r#"^{"id":123456,"msg":"{\"__ghostmeshInternal\":\"file-chunk\""#)
        );
        // Defaults GhostMesh uses: cancel reason, chunk counting.
        let cancel = decode(
            &json!({"__ghostmeshInternal": "file-cancel", "transferId": "t"}),
            0,
        )
        .unwrap();
        assert_eq!(
            cancel,
            Packet::Cancel {
                transfer_id: "t".into(),
                reason: "Transfer canceled".into()
            }
        );
        assert_eq!((total_chunks(0, 12288), total_chunks(12289, 12288)), (1, 2));
    }

    /// ghostmesh-wire.md 4.6, fields in wire order:
    /// `file-range-request`: `{"__ghostmeshInternal","transferId","start","end"}`;
    /// `file-cancel`: `{"__ghostmeshInternal","transferId","reason"}`;
    /// `file-end`: `{"__ghostmeshInternal","transferId"}`. Byte for byte, as JSON and inside
    /// a one-way P2PT envelope (3.1: `id, msg, o, c, last`), and GhostMesh's text decodes to
    /// the same packet.
    #[test]
    fn range_request_cancel_and_end_are_byte_exact_ghostmesh_packets() {
        let id = "0123456789abcdef";
        let cases = [
            (
                Packet::RangeRequest {
                    transfer_id: id.into(),
                    start: 36_864,
                    end: 135_168,
                },
                r#"{"__ghostmeshInternal":"file-range-request","transferId":"0123456789abcdef","start":36864,"end":135168}"#,
            ),
            (
                Packet::Cancel {
                    transfer_id: id.into(),
                    reason: "Transfer canceled".into(),
                },
                r#"{"__ghostmeshInternal":"file-cancel","transferId":"0123456789abcdef","reason":"Transfer canceled"}"#,
            ),
            (
                Packet::Cancel {
                    transfer_id: id.into(),
                    reason: "Transfer destroyed".into(),
                },
                r#"{"__ghostmeshInternal":"file-cancel","transferId":"0123456789abcdef","reason":"Transfer destroyed"}"#,
            ),
            (
                Packet::End {
                    transfer_id: id.into(),
                    sha256: None,
                },
                r#"{"__ghostmeshInternal":"file-end","transferId":"0123456789abcdef"}"#,
            ),
        ];
        for (p, fixture) in cases {
            assert_eq!(p.to_json().to_string(), fixture);
            assert_eq!(crate::wire::js_json::stringify(&p.to_json()), fixture);
            let theirs: Value = serde_json::from_str(fixture).unwrap();
            assert!(is_file_packet(&theirs));
            assert_eq!(decode(&theirs, 0).unwrap(), p, "{fixture}");
            let frames = crate::wire::encode_chunks(
                &crate::wire::MsgId::Int(123_456),
                &crate::wire::Payload::Json(p.to_json()),
                crate::wire::MAX_CHUNK_UNITS,
            );
            let msg = serde_json::to_string(fixture).unwrap();
            assert_eq!(
                frames,
                vec![format!(
                    r#"^{{"id":123456,"msg":{msg},"o":1,"c":0,"last":true}}"#
                )]
            );
        }
        // Rust senders add the hash after GhostMesh's fields (GhostMesh reads named fields).
        let hash = "ab".repeat(32);
        let end = Packet::End {
            transfer_id: id.into(),
            sha256: Some(hash.clone()),
        };
        assert_eq!(
            end.to_json().to_string(),
            format!(
                r#"{{"__ghostmeshInternal":"file-end","transferId":"0123456789abcdef","sha256":"{hash}"}}"#
            )
        );
        // GhostMesh's numbers may come as floats (`1024.0` from some serialisers).
        let float = json!({"__ghostmeshInternal": "file-range-request", "transferId": id, "start": 1024.0, "end": 2048.0});
        assert_eq!(
            decode(&float, 0).unwrap(),
            Packet::RangeRequest {
                transfer_id: id.into(),
                start: 1024,
                end: 2048
            }
        );
    }

    #[test]
    fn bad_packets_are_errors() {
        for bad in [
            json!({"__ghostmeshInternal": "file-chunk", "transferId": "t", "chunkIndex": 0, "offset": -1, "data": ""}),
            json!({"__ghostmeshInternal": "file-chunk", "transferId": "t", "chunkIndex": 0, "offset": 0, "data": "!!"}),
            json!({"__ghostmeshInternal": "file-chunk", "transferId": "t", "chunkIndex": 0, "offset": 0.5, "data": ""}),
            json!({"__ghostmeshInternal": "file-offer", "transferId": "t", "name": "x", "mimeType": "y", "size": 1, "chunkSize": 0, "totalChunks": 1}),
            json!({"__ghostmeshInternal": "file-end", "transferId": ""}),
            json!({"__ghostmeshInternal": "file-end", "transferId": "x".repeat(65)}),
            json!({"__ghostmeshInternal": "file-end", "transferId": "t", "sha256": "zz"}),
            json!({"__ghostmeshInternal": "file-nope", "transferId": "t"}),
        ] {
            assert!(decode(&bad, 1024).is_err(), "{bad}");
        }
        let big = json!({"__ghostmeshInternal": "file-chunk", "transferId": "t", "chunkIndex": 0, "offset": 0, "data": BASE64.encode(vec![0u8; 2000])});
        assert!(decode(&big, 1024).unwrap_err().0.contains("over 1024"));
    }

    #[test]
    fn fast_frames_round_trip_and_reject_garbage() {
        let f = encode_fast("abc", 77, b"xyz");
        assert!(is_fast(&f));
        assert_eq!(
            decode_fast(&f).unwrap(),
            ("abc".to_owned(), 77, &b"xyz"[..])
        );
        for bad in [
            &f[..5],
            &f[..9],
            b"^{}".as_slice(),
            &[0, b'G', b'M', b'F', 2, 1, b'a'],
        ] {
            assert!(decode_fast(bad).is_err());
        }
    }
}
