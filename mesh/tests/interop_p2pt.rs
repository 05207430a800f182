//! A Rust `Mesh` (the `chat` example in `--json` mode) and a real P2PT peer (JavaScript, p2pt
//! 1.6.2 on node-datachannel) meet through a tracker and exchange JSON and 100,000-character
//! messages with responses in both directions: `interop/rust-p2pt.mjs`, run through
//! `interop/run.sh` (a loopback-only network namespace). Once through our tracker binary,
//! once through the reference JS tracker.
//!
//! Binaries: `<target>/debug/ghostmesh-tracker` and `<target>/debug/examples/chat`, next to this
//! test binary, built first with `$CARGO build -p ghostmesh-tracker -p ghostmesh --example chat`
//! if either is missing (`binaries` in `interop/runner.rs`). A stale binary from an earlier
//! build would be used as is: run that `cargo build` yourself after changing the tracker or the
//! example.
//!
//! Needs `node`, `interop/node_modules` (`cd interop && npm ci`), `unshare` and `ip`, and the
//! right to create a network namespace (root). If something is missing the test prints a loud
//! `SKIPPED: ...` line, or fails when the `CI` environment variable is set (the rules of
//! `tracker/tests/interop_js.rs`).

use std::ffi::OsStr;

#[path = "../../interop/runner.rs"]
mod runner;

use runner::binaries;

/// Runs `interop/rust-p2pt.mjs` through our tracker binary or the reference tracker.
fn run_rust_p2pt(test: &str, reference_tracker: bool) {
    let (tracker, chat) = binaries(test);
    let tracker_cmd: &OsStr = if reference_tracker {
        OsStr::new("reference")
    } else {
        tracker.as_os_str()
    };
    runner::run_script(
        test,
        "rust-p2pt.mjs",
        &[
            ("TRACKER_CMD", tracker_cmd),
            ("RUST_PEER_CMD", chat.as_os_str()),
        ],
    );
}

/// Rust and P2PT meet through the `ghostmesh-tracker` binary.
#[test]
fn rust_and_p2pt_talk_through_our_tracker() {
    run_rust_p2pt("rust_and_p2pt_talk_through_our_tracker", false);
}

/// Rust and P2PT meet through bittorrent-tracker's own `Server` (the reference tracker).
#[test]
fn rust_and_p2pt_talk_through_the_reference_tracker() {
    run_rust_p2pt("rust_and_p2pt_talk_through_the_reference_tracker", true);
}
