//! ghostmesh: GhostMesh-compatible mesh peers in Rust.
//!
//! Built so far, all sans-IO (no sockets, clock or RNG of their own):
//! - [`wire`]: the P2PT data-channel envelope, chunking and bounded reassembly;
//! - [`node`]: one peer's message layer: send, respond, responses, timeouts, bounds;
//! - [`signal`]: the tracker client: announces, relayed offers and answers, reconnect backoff.
//!
//! Still to come: the WebRTC and in-memory links, the tokio shell and the `Mesh` builder API.
#![warn(missing_docs)]

pub mod node;
pub mod signal;
pub mod transport;
pub mod wire;
