//! Layered onion routing between Rust peers: Sphinx-style packets (per-hop X25519 + HKDF keys,
//! header MACs, fixed packet length, replay caches, reply blocks) and onion key epochs.

pub(crate) mod crypto;
pub mod keyring;
pub mod replay;
pub mod sphinx;
