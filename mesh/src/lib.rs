//! ghostmesh: GhostMesh-compatible mesh peers in Rust.
//!
//! - [`mesh`]: the tokio shell and the API: [`Mesh::builder`], events, send and respond.
//! - [`wire`]: the P2PT data-channel envelope, chunking and bounded reassembly (sans-IO);
//! - [`node`]: one peer's message layer: send, respond, responses, timeouts, bounds (sans-IO);
//! - [`signal`]: the tracker client: announces, relayed offers and answers, reconnect backoff
//!   (sans-IO);
//! - [`transport`]: links: in-memory, and WebRTC data channels (webrtc-rs), and the connectors
//!   that make them from signals;
//! - [`relay`]: routed delivery through relays, GhostMesh-compatible (onion layers, routed
//!   request/response); [`onion`]: encrypted layered packets between Rust peers;
//! - [`file`]: file transfer, GhostMesh-compatible, with a binary fast path between Rust peers;
//! - [`hidden`]: hidden services (client, entry, master), GhostMesh-compatible encryption,
//!   padding and delay padding, with key binding and a replay cache between Rust peers.
#![warn(missing_docs)]

pub mod file;
pub mod hidden;
pub mod mesh;
pub mod node;
pub mod onion;
pub mod relay;
pub mod signal;
pub mod transport;
pub mod wire;

pub use mesh::{Mesh, MeshBuilder, MeshError, MeshEvent, MeshHandle};
