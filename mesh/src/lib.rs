//! ghostmesh: GhostMesh-compatible mesh peers in Rust.
//!
//! Work in progress: [`wire`] (the P2PT envelope and chunking) is the first piece.
#![warn(missing_docs)]

pub mod signal;
pub mod wire;
