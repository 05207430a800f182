//! Real JavaScript WebTorrent clients against the `ghostmesh-tracker` binary.
//!
//! Each test runs one script of `interop/` (see `interop/README.md`) through `interop/run.sh`,
//! i.e. inside a loopback-only network namespace, with `TRACKER_CMD` pointing at the binary
//! cargo built for this test. The script starts the tracker, drives two independent JS clients
//! (one node process each) through it, and exits 0 only if every step passed.
//!
//! Needs `node`, `interop/node_modules` (`cd interop && npm ci`), `unshare` and `ip`, and the
//! right to create a network namespace (root). If something is missing the test prints a loud
//! `SKIPPED: ...` line, or fails when the `CI` environment variable is set.

#[path = "../../interop/runner.rs"]
mod runner;

/// Runs an interop script against the tracker binary cargo built for this test.
fn run_interop(test: &str, script: &str) {
    let tracker = std::ffi::OsStr::new(env!("CARGO_BIN_EXE_ghostmesh-tracker"));
    runner::run_script(test, script, &[("TRACKER_CMD", tracker)]);
}

/// Two bittorrent-tracker `Client`s (binary peer ids): announce started/completed/stopped,
/// offer/answer relay, a data channel with a message each way, scrape counts at every stage.
#[test]
fn bittorrent_tracker_clients_work_through_our_tracker() {
    run_interop(
        "bittorrent_tracker_clients_work_through_our_tracker",
        "bittorrent-tracker-clients.mjs",
    );
}

/// Two P2PT peers with one identifier meet through the tracker and exchange JSON messages and
/// responses in both directions.
#[test]
fn p2pt_peers_meet_through_our_tracker() {
    run_interop("p2pt_peers_meet_through_our_tracker", "p2pt-pair.mjs");
}
