//! A Rust `Mesh` (the `chat` example in `--json` mode) and P2PT 1.6.2 in headless Chromium
//! (libwebrtc) meet through our tracker and exchange JSON and 100,000-character messages with
//! responses, once with the Rust peer offering and once with Chromium offering:
//! `interop/chromium-rust.mjs`, run through `interop/run.sh` (a loopback-only network
//! namespace).
//!
//! Needs, besides what `tests/interop_p2pt.rs` needs (node, `interop/node_modules`, `unshare`,
//! `ip`, root), a Chromium: `chromium` in `PATH` (Debian: `apt-get install chromium`) or the
//! `CHROMIUM` environment variable naming the binary. When something is missing the test prints
//! a loud `SKIPPED: ...` line, or fails when `CI` is set.
//!
//! The tracker binary and the chat example are taken from this test's target directory and
//! built first if missing (a stale binary is used as is; see `binaries` in `interop/runner.rs`).

use std::ffi::{OsStr, OsString};
use std::io::Write;

#[path = "../../interop/runner.rs"]
mod runner;

use runner::binaries;

/// The Chromium binary to use, or why there is none.
fn chromium() -> Result<OsString, String> {
    let bin = match std::env::var_os("CHROMIUM") {
        Some(b) if !b.is_empty() => b,
        _ => match runner::find_in_path("chromium") {
            Some(p) => p.into_os_string(),
            None => {
                return Err(
                    "`chromium` not found in PATH (and CHROMIUM not set): `apt-get install chromium`"
                        .into(),
                );
            }
        },
    };
    runner::probe(&bin.to_string_lossy(), &["--version"])
        .map(|_| bin)
        .map_err(|e| format!("Chromium not usable ({e})"))
}

fn run_chromium_rust(test: &str, order: &str) {
    let chromium = match chromium() {
        Ok(c) => c,
        Err(why) => {
            if runner::in_ci() {
                panic!("{test}: {why} (CI is set, so this fails instead of skipping)");
            }
            // Straight to fd 2: libtest captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\n==================== SKIPPED: {test} ====================\n\
                 SKIPPED: {test}: {why}\n\
                 SKIPPED: (set CI=1 to turn this skip into a failure)\n\
                 =========================================================\n"
            );
            return;
        }
    };
    let (tracker, chat) = binaries(test);
    runner::run_script(
        test,
        "chromium-rust.mjs",
        &[
            ("TRACKER_CMD", tracker.as_os_str()),
            ("RUST_PEER_CMD", chat.as_os_str()),
            ("CHROMIUM", chromium.as_os_str()),
            ("INTEROP_ORDER", OsStr::new(order)),
        ],
    );
}

/// Chromium announces first: the Rust peer offers (`a=setup:active`), Chromium answers.
#[test]
fn rust_offers_chromium_answers() {
    run_chromium_rust("rust_offers_chromium_answers", "chromium-first");
}

/// The Rust peer announces first: Chromium offers, the Rust peer answers.
#[test]
fn chromium_offers_rust_answers() {
    run_chromium_rust("chromium_offers_rust_answers", "rust-first");
}
