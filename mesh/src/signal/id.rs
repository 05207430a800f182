//! 20-byte ids: the binary-string codec is the tracker crate's (one codec for both ends of the
//! protocol); this module adds what a peer needs on top: the swarm key and its identity.

use rand::Rng;
use sha1::{Digest, Sha1};

pub(crate) use ghostmesh_tracker::wire::push_json_str;
pub use ghostmesh_tracker::wire::{Id20, IdError};

/// The P2PT/GhostMesh swarm key: `SHA-1(UTF-8(identifier))`.
///
/// ```
/// use ghostmesh::signal::info_hash_of;
/// assert_eq!(info_hash_of("p2pt").to_hex(), "c57028cb762b1de5a76250fce9797416a34919d3");
/// ```
pub fn info_hash_of(identifier: &str) -> Id20 {
    let digest = Sha1::digest(identifier.as_bytes());
    let mut b = [0u8; 20];
    b.copy_from_slice(&digest);
    Id20(b)
}

/// Who this peer is in one swarm: shared by every [`TrackerClient`](super::TrackerClient) of
/// the peer (one per tracker URL), because a peer has one `peer_id` on all trackers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `SHA-1(UTF-8(identifier))`.
    pub info_hash: Id20,
    /// 20 random bytes.
    pub peer_id: Id20,
}

impl Identity {
    /// The identity P2PT gives itself: the swarm key from `identifier` and a random peer id
    /// drawn from `rng`.
    ///
    /// ```
    /// use ghostmesh::signal::Identity;
    /// use rand::SeedableRng;
    ///
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    /// let me = Identity::new("myApp", &mut rng);
    /// assert_eq!(me.info_hash.to_hex(), "f09fd667785a6ff44bd958473692dc5db29b8dfe");
    /// ```
    pub fn new<R: Rng + ?Sized>(identifier: &str, rng: &mut R) -> Self {
        Identity {
            info_hash: info_hash_of(identifier),
            peer_id: Id20::random(rng),
        }
    }
}

/// Writes a string as a JSON string literal the way `JSON.stringify` does for strings without
/// lone surrogates (Rust strings have none).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_vectors() {
        for (ident, hex) in [
            ("p2pt", "c57028cb762b1de5a76250fce9797416a34919d3"),
            ("myApp", "f09fd667785a6ff44bd958473692dc5db29b8dfe"),
            ("my-app", "431cf07b23d0c854bce158bb3564d6dee45b4f8c"),
            ("ghostmesh-demo", "cc60c7d327ebcd98667a77da4190d5da9272fecb"),
            ("wt-interop", "f6f531277422959b322efbc3064b445c37e9db42"),
            (
                "webtorrent-interop-fixture",
                "6798c2890ae4850e42e37a0faabc217c7b9a157e",
            ),
        ] {
            assert_eq!(info_hash_of(ident).to_hex(), hex, "{ident}");
        }
    }

    #[test]
    fn binary_string_round_trip_and_rejections() {
        let id = Id20(std::array::from_fn(|i| (i as u8).wrapping_mul(13)));
        assert_eq!(Id20::from_binary_str(&id.to_binary_string()), Ok(id));
        assert_eq!(Id20::from_hex(&id.to_hex()), Some(id));
        assert_eq!(
            Id20::from_binary_str(&"a".repeat(19)),
            Err(IdError::Length(19))
        );
        assert_eq!(
            Id20::from_binary_str(&"a".repeat(21)),
            Err(IdError::Length(21))
        );
        let mut s = "a".repeat(19);
        s.push('\u{100}');
        assert_eq!(Id20::from_binary_str(&s), Err(IdError::CodePoint(0x100)));
        assert_eq!(Id20::from_hex("zz"), None);
    }

    #[test]
    fn escaping_agrees_with_serde_json_for_every_byte() {
        for b in 0u8..=255 {
            let id = Id20([b; 20]);
            let ours = id.to_json();
            let serde = serde_json::to_string(&id.to_binary_string()).unwrap_or_default();
            assert_eq!(ours, serde, "byte {b:#04x}");
            let back: String = serde_json::from_str(&ours).unwrap_or_default();
            assert_eq!(Id20::from_binary_str(&back), Ok(id));
        }
    }
}
