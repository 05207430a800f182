//! Contents of harness files and routed-packet sizes, shared by both backends.
//!
//! A file's bytes are a pure function of a per-file seed and the offset, so a receiver checks
//! every chunk where it lands (a misplaced or altered byte fails the file) without keeping a
//! copy of what was sent.

use ghostmesh::relay::packet;
use ghostmesh::wire::{Payload, js_json};
use serde_json::Value;

/// Fast-path frame payload bytes (the mesh's `FileConfig::fast_frame_bytes` default).
pub const FAST_FRAME_BYTES: u64 = 64 << 10;
/// Fast-path window a receiver grants (the mesh's `FileConfig::fast_window` default).
pub const FAST_WINDOW: u64 = 16 << 20;

/// The seed of file number `id` in a run seeded `seed`.
pub fn file_seed(seed: u64, id: usize) -> u64 {
    splitmix(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes `[offset, offset + len)` of the file seeded `seed`.
pub fn bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut pos = offset;
    let end = offset + len as u64;
    while pos < end {
        let block = splitmix(seed ^ (pos / 8)).to_le_bytes();
        let from = (pos % 8) as usize;
        let take = (8 - from).min((end - pos) as usize);
        out.extend_from_slice(&block[from..from + take]);
        pos += take as u64;
    }
    out
}

/// Whether `data` is what the file seeded `seed` holds at `offset`.
pub fn intact(seed: u64, offset: u64, data: &[u8]) -> bool {
    bytes(seed, offset, data.len()) == data
}

/// 64 hex digits standing in for the file's SHA-256 in the sim (same length on the wire; the
/// sim checks every byte instead).
pub fn digest_hex(seed: u64, size: u64) -> String {
    (0..4u64)
        .map(|k| format!("{:016x}", splitmix(seed ^ size.rotate_left(17) ^ k)))
        .collect()
}

/// The onion packet a JavaScript GhostMesh sender builds with its default ttl, one more than
/// the route's length, each forward layer `i` getting `ttl - (len - 1 - i)`: the outermost
/// layer's ttl is 2 whatever the route length, so relays following GhostMesh's rule drop
/// routes with two or more relays (ghostmesh-wire.md, section 4.4).
pub fn ghostmesh_wrap(circuit_id: &str, route: &[String], payload: &Payload) -> Value {
    let len = route.len() as i64;
    let mut p = packet::deliver(circuit_id, len + 1, payload);
    for i in (0..route.len().saturating_sub(1)).rev() {
        p = packet::forward(circuit_id, 2 + i as i64, &route[i + 1], &p);
    }
    p
}

/// 16 lowercase hex digits (transfer, circuit and request ids, as GhostMesh makes them).
pub fn hex16(x: u64) -> String {
    format!("{x:016x}")
}

/// Bytes of a packet as the node serialises it.
pub fn packet_len(v: &Value) -> u64 {
    js_json::stringify(v).len() as u64
}

/// Bytes of the onion packet on each hop of `route` (relays then target) carrying `payload`,
/// when every relay follows GhostMesh's rule (inner ttl = ttl - 1): index 0 is the sender to
/// the first relay. Used by the live backend, which cannot see relays' frames.
pub fn hop_sizes(circuit_id: &str, route: &[String], payload: &Payload) -> Vec<u64> {
    hop_sizes_of(packet::wrap(circuit_id, route, payload))
}

/// [`hop_sizes`] of a built packet.
pub fn hop_sizes_of(mut p: Value) -> Vec<u64> {
    let mut sizes = vec![packet_len(&p)];
    while p.get(packet::ONION_KEY).and_then(Value::as_str) == Some("onion-forward") {
        let ttl = p.get("ttl").and_then(Value::as_i64).unwrap_or(0);
        let Some(mut inner) = p
            .get("payload")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        else {
            break;
        };
        inner["ttl"] = (ttl - 1).into();
        sizes.push(packet_len(&inner));
        p = inner;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_offset_independent_slices() {
        let whole = bytes(7, 0, 100);
        assert_eq!(bytes(7, 13, 50), whole[13..63].to_vec());
        assert!(intact(7, 5, &whole[5..40]));
        assert!(!intact(8, 5, &whole[5..40]));
        assert_eq!(digest_hex(1, 2).len(), 64);
    }

    #[test]
    fn hop_sizes_shrink_toward_the_target() {
        let id = |c: char| std::iter::repeat_n(c, 40).collect::<String>();
        let route = vec![id('a'), id('b'), id('c'), id('d')];
        let s = hop_sizes("0123456789abcdef", &route, &Payload::from("hello"));
        assert_eq!(s.len(), 4);
        assert!(s.windows(2).all(|w| w[0] > w[1]), "{s:?}");
    }
}
