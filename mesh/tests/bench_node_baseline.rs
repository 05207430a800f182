//! The JavaScript side of the transfer benchmark (`bench/transfer-vs-node.sh`) stays runnable:
//! `interop/wrtc-throughput.mjs` (two @roamhq/wrtc peers, libwebrtc) runs a tiny case in a
//! loopback-only network namespace, in one process and in two, and prints the machine-readable
//! line the bench script parses, with every figure present and positive. No speed is asserted
//! (benchmarks carry the numbers, not tests).
//!
//! Needs Node >= 18, `cd interop && npm ci` (for @roamhq/wrtc), `unshare` and `ip` as root:
//! when any is missing the test prints a loud `SKIPPED: ...`, or fails when `CI` is set (the
//! rules of `interop/runner.rs`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)] // only the precondition helpers are used here
#[path = "../../interop/runner.rs"]
mod runner;

/// One run of the script is killed after this long (a 1 MiB case takes about a second).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn missing() -> Vec<String> {
    let root = runner::workspace_root();
    let mut missing = runner::missing_preconditions(&root);
    if !root.join("interop/node_modules/@roamhq/wrtc").is_dir() {
        missing.push(
            "interop/node_modules/@roamhq/wrtc is missing: run `cd interop && npm ci`".into(),
        );
    }
    missing
}

/// `Some(reason)` when the test must skip; panics instead under `CI`.
fn skip_reason(test: &str) -> Option<String> {
    let missing = missing();
    if missing.is_empty() {
        return None;
    }
    let list = missing.join("\n  - ");
    if runner::in_ci() {
        panic!("{test}: prerequisites missing (CI is set, so this fails):\n  - {list}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n==================== SKIPPED: {test} ====================\n\
         SKIPPED: {test}: prerequisites missing:\n  - {list}\n\
         SKIPPED: (set CI=1 to turn this skip into a failure)\n\
         =========================================================\n"
    );
    Some(list)
}

/// Runs the script in a fresh loopback-only namespace; returns the `key=value` pairs of the
/// stdout line starting with `prefix`.
fn run(prefix: &str, extra: &[&str]) -> HashMap<String, String> {
    let root = runner::workspace_root();
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .args(["node", "interop/wrtc-throughput.mjs", "1", "1"])
        .args(extra)
        .env("WRTC_BENCH_TIMEOUT_S", "100")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let stdout = runner::drain(child.stdout.take());
    let stderr = runner::drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wrtc-throughput.mjs {extra:?} did not finish in {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out: Vec<String> = stdout.try_iter().collect();
    let err: Vec<String> = stderr.try_iter().collect();
    assert!(
        status.success(),
        "wrtc-throughput.mjs {extra:?}: {status}\nstdout:\n{}\nstderr:\n{}",
        out.join("\n"),
        err.join("\n")
    );
    let line = out
        .iter()
        .find(|l| l.starts_with(&format!("{prefix} ")))
        .unwrap_or_else(|| panic!("no `{prefix} ...` line in:\n{}", out.join("\n")));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_figures(prefix: &str, fields: &HashMap<String, String>) {
    for key in ["connect_ms", "mbs_16k", "mbs_64k", "cpu_16k", "cpu_64k"] {
        let v: f64 = fields
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix}: `{key}` missing or not a number: {fields:?}"));
        assert!(v.is_finite() && v > 0.0, "{prefix}: {key}={v}: {fields:?}");
    }
}

#[test]
fn node_baseline_runs_in_one_process_and_in_two() {
    let test = "node_baseline_runs_in_one_process_and_in_two";
    if skip_reason(test).is_some() {
        return;
    }
    assert_figures("node", &run("node", &[]));
    assert_figures("node2", &run("node2", &["--two-processes"]));
}
