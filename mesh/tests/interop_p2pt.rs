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
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The child is killed (with its whole process group) after this long.
const HARD_TIMEOUT: Duration = Duration::from_secs(90);

/// One interop run at a time: each spawns a tracker and two WebRTC peers (2 cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn probe(program: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{program}`: {e}")),
    }
}

/// Everything the script needs that cargo does not build; one line per missing item.
fn missing_preconditions(root: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if let Err(e) = probe("node", &["--version"]) {
        missing.push(format!(
            "node not usable ({e}): install Node.js >= 18 (e.g. `apt-get install nodejs`)"
        ));
    }
    let modules = root.join("interop/node_modules");
    if !modules.join("bittorrent-tracker").is_dir() || !modules.join("p2pt").is_dir() {
        missing.push(format!(
            "{} is missing or incomplete: run `cd interop && npm ci` (needs the npm registry)",
            modules.display()
        ));
    }
    let unshare = find_in_path("unshare");
    if unshare.is_none() {
        missing.push(
            "`unshare` not found in PATH: install util-linux (`apt-get install util-linux`)".into(),
        );
    }
    if find_in_path("ip").is_none() {
        missing
            .push("`ip` not found in PATH: install iproute2 (`apt-get install iproute2`)".into());
    }
    if unshare.is_some() {
        if let Err(e) = probe("unshare", &["-n", "true"]) {
            missing.push(format!(
                "cannot create a network namespace ({e}): run the tests as root (or with CAP_SYS_ADMIN)"
            ));
        }
    }
    missing
}

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

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Runs `interop/run.sh interop/rust-p2pt.mjs` with `tracker_cmd` (a path, or `reference`).
fn run_rust_p2pt(test: &str, reference_tracker: bool) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = workspace_root();

    let missing = missing_preconditions(&root);
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|m| format!("  - {m}"))
            .collect::<Vec<_>>()
            .join("\n");
        if in_ci() {
            panic!(
                "{test}: JS interop prerequisites missing (CI is set, so this fails instead of skipping):\n{list}"
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n==================== SKIPPED: {test} ====================\n\
             SKIPPED: {test}: JS interop prerequisites missing:\n{list}\n\
             SKIPPED: (set CI=1 to turn this skip into a failure)\n\
             =========================================================\n"
        );
        return;
    }

    let (tracker, chat) = binaries(test);
    let tracker_cmd: &OsStr = if reference_tracker {
        OsStr::new("reference")
    } else {
        tracker.as_os_str()
    };
    let started = Instant::now();
    let mut child = Command::new(root.join("interop/run.sh"))
        .arg("interop/rust-p2pt.mjs")
        .current_dir(&root)
        .env("TRACKER_CMD", tracker_cmd)
        .env("RUST_PEER_CMD", &chat)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{test}: cannot start interop/run.sh: {e}"));
    let pgid = child.id();
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => panic!("{test}: waiting for interop/run.sh: {e}"),
        }
        if started.elapsed() >= HARD_TIMEOUT {
            let _ = Command::new("kill")
                .args([
                    OsStr::new("-KILL"),
                    OsStr::new("--"),
                    OsStr::new(&format!("-{pgid}")),
                ])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };

    let out = stdout
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "<stdout still open>".into());
    let err = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "<stderr still open>".into());
    let report = format!(
        "command: TRACKER_CMD={} RUST_PEER_CMD={} interop/run.sh interop/rust-p2pt.mjs  (cwd {})\n\
         --- stdout ---\n{out}\n--- stderr ---\n{err}",
        tracker_cmd.to_string_lossy(),
        chat.display(),
        root.display()
    );
    match status {
        None => panic!("{test}: killed after {HARD_TIMEOUT:?} (hard timeout)\n{report}"),
        Some(s) if !s.success() => panic!(
            "{test}: interop script failed ({s}) after {:?}\n{report}",
            started.elapsed()
        ),
        Some(_) => println!("{test}: passed in {:?}\n{out}", started.elapsed()),
    }
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
