//! The scenario file as written: serde structs with unknown keys refused. Typed checks (units,
//! names, ranges) happen in [`super::validate`].

use serde::{Deserialize, Serialize};

/// The top level of a scenario file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Option<String>,
    pub description: Option<String>,
    pub seed: Option<u64>,
    pub backend: Option<String>,
    pub identifier: Option<String>,
    pub duration: Option<String>,
    pub link_failure_detect: Option<String>,
    pub tracker: Option<toml::Value>,
    #[serde(default)]
    pub group: Vec<RawGroup>,
    #[serde(default)]
    pub link: Vec<RawLink>,
    #[serde(default)]
    pub step: Vec<RawStep>,
    #[serde(default)]
    pub assert: Vec<RawAssert>,
}

/// `[tracker]` as a table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracker {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub announce_interval: Option<String>,
    pub latency: Option<String>,
    pub max_offers: Option<u64>,
    pub max_peers_per_swarm: Option<u64>,
    pub offer_timeout: Option<String>,
}

/// The network model of a group or a link.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNet {
    pub latency: Option<String>,
    pub jitter: Option<String>,
    pub bandwidth: Option<String>,
    pub loss: Option<f64>,
}

/// `[[group]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: Option<String>,
    pub count: Option<u64>,
    pub transport: Option<String>,
    pub offers_per_announce: Option<u64>,
    pub request_timeout: Option<String>,
    pub max_chunk_units: Option<u64>,
    pub network: Option<RawNet>,
}

/// `[[link]]`: a network model between two groups (overrides theirs).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub between: Option<Vec<String>>,
    pub latency: Option<String>,
    pub jitter: Option<String>,
    pub bandwidth: Option<String>,
    pub loss: Option<f64>,
}

/// `[[step]]`: one timeline entry. Which keys apply depends on `action`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub at: Option<String>,
    pub action: Option<String>,
    pub name: Option<String>,
    pub peers: Option<String>,
    pub spread: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub count: Option<u64>,
    pub interval: Option<String>,
    pub size: Option<toml::Value>,
    pub content: Option<String>,
    pub sides: Option<Vec<Vec<String>>>,
    pub down_for: Option<String>,
    /// `relay_send` / `onion_send`: random relays (or `through`).
    pub hops: Option<u64>,
    /// `relay_send` / `onion_send`: explicit relays, one peer each, in order.
    pub through: Option<Vec<String>>,
    /// `send_file`: GhostMesh chunk size.
    pub chunk_size: Option<toml::Value>,
    /// `send_file`: `"fast"` or `"compat"`.
    pub format: Option<String>,
    /// `onion_send`: `"mesh"` or `"ghostmesh"` (GhostMesh's default layer ttls).
    pub ttl: Option<String>,
    /// `hidden_service_request`: the service name.
    pub service: Option<String>,
    /// `hidden_service_request`: the entry peer (one peer).
    pub entry: Option<String>,
    /// `hidden_service_request`: the master peer (one peer).
    pub master: Option<String>,
    /// `hidden_service_request`: hops the clients ask for (GhostMesh's `minHops`).
    pub min_hops: Option<u64>,
    /// `hidden_service_request`: the entry's delay range, `[min, max]`.
    pub response_delay: Option<Vec<String>>,
    /// `hidden_service_request`: GhostMesh's `fixedPacketBytes` for clients, entry and master.
    pub fixed_packet_bytes: Option<u64>,
}

/// `[[assert]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssert {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub step: Option<String>,
    pub min: Option<toml::Value>,
    pub max: Option<toml::Value>,
    pub within: Option<String>,
    pub percentile: Option<f64>,
    pub metric: Option<String>,
    pub min_links: Option<u64>,
    /// `delivery_ratio` / `latency`: `"delivery"` or `"round_trip"`.
    pub measure: Option<String>,
    /// `hop_bytes`: which hop (0 = sender to first relay); default every hop.
    pub hop: Option<u64>,
    /// `tracker_peers`: when the tracker's swarm is counted (a duration from the start).
    pub at: Option<String>,
}
