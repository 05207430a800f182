//! A Rust `Mesh` (the `chat` example in `--json` mode) and a real P2PT peer (JavaScript, p2pt
//! 1.6.2 on node-datachannel) meet through a tracker and exchange JSON and 100,000-character
//! messages with responses in both directions: `interop/rust-p2pt.mjs`, run through
//! `interop/run.sh` (a loopback-only network namespace). Once through our tracker binary,
//! once through the reference JS tracker.
//!
//! Binaries: cargo gives a test `CARGO_BIN_EXE_*` only for its own package's binaries, and
//! never for examples. So this test looks next to itself: it runs as
//! `<target>/debug/deps/interop_p2pt-<hash>`, so `<target>/debug/ghostmesh-tracker` and
//! `<target>/debug/examples/chat` are two and one levels up. If either is missing it runs
//! `$CARGO build -p ghostmesh-tracker -p ghostmesh --example chat` first (with the same target
//! directory). A stale binary from an earlier build would be used as is: run that `cargo build`
//! yourself after changing the tracker or the example.
//!
//! Needs `node`, `interop/node_modules` (`cd interop && npm ci`), `unshare` and `ip`, and the
//! right to create a network namespace (root). If something is missing the test prints a loud
//! `SKIPPED: ...` line, or fails when the `CI` environment variable is set (the rules of
//! `tracker/tests/interop_js.rs`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../interop/runner.rs"]
mod runner;

use runner::workspace_root;

/// `<target>/debug` (the profile directory) from this test binary's path
/// (`<target>/debug/deps/interop_p2pt-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary path {}", exe.display()))
        .to_path_buf()
}

/// Paths of the tracker binary and the chat example, built with `$CARGO build` if missing.
fn binaries(test: &str) -> (PathBuf, PathBuf) {
    let dir = profile_dir();
    let tracker = dir.join("ghostmesh-tracker");
    let chat = dir.join("examples/chat");
    if !tracker.is_file() || !chat.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // <target> = the parent of the profile directory; keep the build there.
        let target = dir.parent().expect("target dir").to_path_buf();
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "ghostmesh-tracker",
            "-p",
            "ghostmesh",
            "--example",
            "chat",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(workspace_root());
        if dir.file_name() == Some(OsStr::new("release")) {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("{test}: cannot run cargo build: {e}"));
        assert!(status.success(), "{test}: cargo build failed ({status})");
    }
    assert!(tracker.is_file(), "{test}: {} missing", tracker.display());
    assert!(chat.is_file(), "{test}: {} missing", chat.display());
    (tracker, chat)
}

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
