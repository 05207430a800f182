//! `ghostmesh-harness bench sim`: N simulated peers discover each other through the tracker
//! core and each deliver one message; reports wall time.

use std::path::Path;
use std::time::Instant;

use crate::report::RunResult;
use crate::scenario;

/// The bench scenario for `peers` peers.
pub fn scenario_text(peers: usize, seed: u64) -> String {
    format!(
        r#"name = "bench-sim-{peers}"
description = "{peers} peers join over 10 s, discover each other through the tracker core, then each sends one message to a neighbour."
seed = {seed}
duration = "40s"

[tracker]
announce_interval = "30s"
max_peers_per_swarm = 1000000

[[group]]
name = "peers"
count = {peers}
network = {{ latency = "20ms", jitter = "5ms" }}

[[step]]
at = "0s"
action = "join"
peers = "all"
spread = "10s"

[[step]]
at = "25s"
name = "hello"
action = "send"
from = "all"

[[assert]]
name = "every peer linked within 10 s of joining"
kind = "discovered"
within = "10s"

[[assert]]
name = "every message delivered within 5 s"
kind = "delivery_ratio"
step = "hello"
min = 1.0
within = "5s"
"#
    )
}

/// What a bench run gives: a printable report and whether its assertions passed (the
/// command exits 1 when they did not).
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    pub report: String,
    pub passed: bool,
}

/// Why a bench could not run.
#[derive(Debug, Clone)]
pub enum BenchError {
    /// Bad parameters (e.g. `--peers 0`): exit 2.
    Invalid(String),
    /// The simulation failed: exit 3.
    Runtime(String),
}

/// Runs the bench.
pub fn sim(peers: usize, seed: u64) -> Result<BenchOutcome, BenchError> {
    let text = scenario_text(peers, seed);
    let sc = scenario::parse_str(Path::new("<bench>"), &text).map_err(|e| {
        BenchError::Invalid(
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let wall = Instant::now();
    let o = crate::sim::run(&sc, &mut |_| {}).map_err(BenchError::Runtime)?;
    let secs = wall.elapsed().as_secs_f64();
    let r = RunResult::new(&sc, &o.rec, o.end_ns, Some(o.trace_hash), o.events, secs);
    let report = format!(
        "bench sim: {peers} peers, {} events, {} links, {} of {} messages delivered: {secs:.2} s wall ({})\n{}",
        o.events,
        r.summary.links_formed,
        r.summary.messages_delivered,
        r.summary.messages_sent,
        if r.passed {
            "all assertions passed"
        } else {
            "ASSERTIONS FAILED"
        },
        r.terminal()
    );
    Ok(BenchOutcome {
        report,
        passed: r.passed,
    })
}
