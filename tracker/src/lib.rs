//! ghostmesh-tracker: a WebTorrent-compatible WebSocket signalling tracker.
//!
//! - [`wire`]: the WebTorrent tracker messages and the 20-byte binary-string codec.
//! - [`swarm`]: the sans-IO core (swarms, peers, offer/answer routing, expiry, limits).
//! - [`server`]: the tokio shell (listeners, TLS, WebSocket connections, HTTP endpoints).
//! - [`config`]: every setting, from flags, environment and a TOML file.
#![warn(missing_docs)]

pub mod access;
pub mod config;
pub mod metrics;
pub mod server;
pub mod swarm;
pub mod tls;
pub mod wire;

pub use config::Config;
pub use server::Tracker;
