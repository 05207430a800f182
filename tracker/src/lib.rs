//! ghostmesh-tracker: a WebTorrent-compatible WebSocket signalling tracker.
//!
//! - [`wire`]: the WebTorrent tracker messages and the 20-byte binary-string codec.
//! - [`swarm`]: the sans-IO core (swarms, peers, offer/answer routing, expiry, limits).
//! - [`server`]: the tokio shell (listeners, TLS, WebSocket connections, HTTP endpoints).
//! - [`config`]: every setting, from flags, environment and a TOML file.
//!
//! The `server` feature (on by default) brings the tokio shell, TLS, metrics and configuration.
//! `default-features = false` leaves the pure protocol (`wire`, `swarm`, `access`) with only
//! serde, indexmap and rand, for mesh peers and the simulator.
#![warn(missing_docs)]

pub mod access;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
pub mod swarm;
#[cfg(feature = "server")]
pub mod tls;
pub mod wire;

#[cfg(feature = "server")]
pub use config::Config;
#[cfg(feature = "server")]
pub use server::Tracker;
