//! Every shipped scenario runs and passes (sim; live for the small ones), a failing scenario
//! exits 1 and names its failing assertion in every output, invalid files exit 2 with
//! file:line and key, and the simulator is deterministic.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ghostmesh_harness::scenario::{self, Backend};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ghostmesh-harness"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ghostmesh-harness-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a scenario with every output; checks it passes and the outputs are well-formed.
fn run_passes(file: &str, backend: &str) -> serde_json::Value {
    let dir = out_dir(&format!("{}-{backend}", file.replace('/', "_")));
    let d = dir.to_str().unwrap();
    let o = harness(&["run", file, "--backend", backend, "--quiet", "--out", d]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{file} ({backend}) failed:\n{}",
        text(&o)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["backend"], backend);
    let n = json["assertions"].as_array().unwrap().len();
    assert!(n > 0);
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(
        junit.matches("<testcase ").count(),
        n,
        "one testcase per assertion"
    );
    assert!(!junit.contains("<failure"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("PASSED"));
    // The resolved scenario is saved and is itself a valid scenario with the seed used.
    let resolved = dir.join("scenario.resolved.toml");
    let sc = scenario::load(&resolved, None).unwrap();
    assert_eq!(sc.seed, json["seed"].as_u64().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    json
}

#[test]
fn sim_tour() {
    let j = run_passes("scenarios/tour.toml", "sim");
    assert!(j["trace_hash"].as_str().unwrap().len() == 16);
}

#[test]
fn sim_discovery_1k() {
    let j = run_passes("scenarios/discovery-1k.toml", "sim");
    assert_eq!(j["summary"]["peers"], 1000);
}

#[test]
fn sim_chunking() {
    run_passes("scenarios/chunking.toml", "sim");
}

#[test]
fn sim_churn_and_tracker_restart() {
    let j = run_passes("scenarios/churn-and-tracker-restart.toml", "sim");
    assert_eq!(j["summary"]["tracker_restarts"], 2);
}

#[test]
fn sim_throughput() {
    run_passes("scenarios/throughput.toml", "sim");
}

#[test]
fn live_tour_with_embedded_tracker_and_memory_links() {
    let j = run_passes("scenarios/tour.toml", "live");
    assert_eq!(j["summary"]["tracker_restarts"], 1);
}

#[test]
fn live_chunking() {
    run_passes("scenarios/chunking.toml", "live");
}

#[test]
fn every_shipped_scenario_is_valid_and_tested() {
    let mut names: Vec<String> = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        // Container scenarios need Docker; tests/container.rs runs them.
        .filter(|n| !n.starts_with("container-"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "chunking.toml",
            "churn-and-tracker-restart.toml",
            "discovery-1k.toml",
            "file-transfer.toml",
            "onion-3-hops.toml",
            "relay.toml",
            "throughput.toml",
            "tour.toml"
        ]
    );
    for n in names {
        let path = root().join("scenarios").join(&n);
        let sc = scenario::load(&path, Some(Backend::Sim)).unwrap();
        assert!(!sc.description.is_empty(), "{n} has a description");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with('#'),
            "{n} documents what it shows in comments"
        );
    }
}

#[test]
fn failing_scenario_exits_1_and_names_the_assertion_everywhere() {
    let dir = out_dir("failing");
    let d = dir.to_str().unwrap();
    let json_path = dir.join("r.json");
    let junit_path = dir.join("r.xml");
    let html_path = dir.join("r.html");
    let o = harness(&[
        "run",
        "harness/tests/fixtures/failing.toml",
        "--json",
        json_path.to_str().unwrap(),
        "--junit",
        junit_path.to_str().unwrap(),
        "--html",
        html_path.to_str().unwrap(),
        "--out",
        d,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let terminal = text(&o);
    assert!(terminal.contains("[FAIL] impossible latency"), "{terminal}");
    assert!(terminal.contains("FAILED") && terminal.contains("failed: impossible latency"));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(
        json["failed_assertions"],
        serde_json::json!(["impossible latency"])
    );
    let failing: Vec<&serde_json::Value> = json["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["passed"] == false)
        .collect();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0]["name"], "impossible latency");
    assert!(
        dir.join("r.scenario.toml").exists(),
        "resolved scenario next to the JSON"
    );

    let junit = std::fs::read_to_string(&junit_path).unwrap();
    assert!(junit.starts_with("<?xml"));
    assert_eq!(junit.matches("<testcase ").count(), 2);
    assert_eq!(junit.matches("<failure ").count(), 1);
    assert!(junit.contains("name=\"impossible latency\" time=\"0\">\n      <failure message=\"impossible latency: expected p50"));
    assert!(junit.contains("failures=\"1\""));

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<svg"));
    assert!(html.contains("FAILED"));
    assert!(html.contains("<td class=\"fail\">FAIL</td><td>impossible latency</td>"));
    for f in [
        "results.json",
        "junit.xml",
        "report.html",
        "scenario.resolved.toml",
    ] {
        assert!(dir.join(f).exists(), "{f} in --out");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_scenarios_exit_2_naming_file_line_and_key() {
    let cases = [
        (
            "invalid-unknown-key.toml",
            ":6:",
            "lattency",
            "unknown field",
        ),
        (
            "invalid-duration.toml",
            ":6:",
            "group[0].network.latency",
            "expected ns, us, ms, s, m or h",
        ),
        (
            "invalid-group-ref.toml",
            ":10:",
            "step[0].peers",
            "names no group",
        ),
        (
            "invalid-type.toml",
            ":5:",
            "count",
            "expected a whole number",
        ),
        (
            "invalid-unsupported.toml",
            ":9:",
            "step[0].action",
            "not supported yet",
        ),
        (
            "invalid-container.toml",
            ":2:",
            "tracker",
            "needs --backend live",
        ),
        (
            "invalid-wrong-key-for-action.toml",
            ":11:",
            "step[0].size",
            "does not apply to action \"join\"",
        ),
        ("invalid-syntax.toml", ":2:", "", "expected `]`"),
        (
            "invalid-relay-route.toml",
            ":18:",
            "step[1].through",
            "\"relays[0]\" names no group",
        ),
        (
            "invalid-file-size.toml",
            ":11:",
            "step[0].size",
            "\"two megabytes\" is not a size",
        ),
    ];
    for (file, line, key, needle) in cases {
        let path = format!("harness/tests/fixtures/{file}");
        for cmd in ["validate", "run"] {
            let o = harness(&[cmd, &path]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{cmd} {file}: {err}");
            assert!(
                err.contains(&format!("{path}{line}")),
                "{file}: file:line in {err}"
            );
            if !key.is_empty() {
                assert!(
                    err.contains(&format!("key `{key}`")),
                    "{file}: key in {err}"
                );
            }
            assert!(err.contains(needle), "{file}: {needle:?} in {err}");
        }
    }
    // The second mistake of each new-action fixture is reported too.
    let o = harness(&[
        "validate",
        "harness/tests/fixtures/invalid-relay-route.toml",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid-relay-route.toml:25:8: key `step[2].hops`: 2 relays need 4 peers"),
        "{err}"
    );
    let o = harness(&["validate", "harness/tests/fixtures/invalid-file-size.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid-file-size.toml:12:10: key `step[0].format`: unknown format \"zip\""),
        "{err}"
    );
    // Two mistakes in one file: both reported.
    let o = harness(&[
        "validate",
        "harness/tests/fixtures/invalid-wrong-key-for-action.toml",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no step is named \"nope\""));
    // Live-only restrictions are checked against the backend used.
    let o = harness(&[
        "validate",
        "scenarios/churn-and-tracker-restart.toml",
        "--backend",
        "live",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("transport \"sim\" runs only in the sim backend")
    );
    // Usage errors exit 2 too.
    assert_eq!(harness(&["run"]).status.code(), Some(2));
    assert_eq!(
        harness(&["run", "no/such/file.toml"]).status.code(),
        Some(2)
    );
}

#[test]
fn help_documents_exit_codes() {
    let o = harness(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let t = text(&o);
    assert!(t.contains("Exit codes:") && t.contains("invalid scenario"));
}

#[test]
fn determinism_same_seed_same_trace_different_seed_different_trace() {
    let path = root().join("scenarios/churn-and-tracker-restart.toml");
    let mut sc = scenario::load(&path, Some(Backend::Sim)).unwrap();
    let a = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    let b = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    sc.seed += 1;
    let c = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    assert_ne!(a.trace_hash, c.trace_hash);

    // Separate processes (different std hash seeds, a different base Instant) agree too.
    let hashes: Vec<String> = (0..2)
        .map(|i| {
            let dir = out_dir(&format!("det{i}"));
            let o = harness(&[
                "run",
                "scenarios/tour.toml",
                "--quiet",
                "--out",
                dir.to_str().unwrap(),
            ]);
            assert_eq!(o.status.code(), Some(0));
            let j: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
                    .unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            j["trace_hash"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(hashes[0], hashes[1]);

    let o = harness(&["run", "scenarios/tour.toml", "--check-determinism"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("gave the same trace hash"));
}

#[test]
fn live_webrtc_peers_on_loopback() {
    run_passes("harness/tests/fixtures/live-webrtc.toml", "live");
}

#[test]
fn live_against_an_external_tracker_url() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tracker = rt
        .block_on(ghostmesh_tracker::Tracker::start(
            ghostmesh_tracker::Config {
                listen: "127.0.0.1:0".into(),
                ..ghostmesh_tracker::Config::default()
            },
        ))
        .unwrap();
    let text = format!(
        r#"name = "external"
backend = "live"
tracker = "{}"
duration = "20s"
[[group]]
name = "p"
count = 3
transport = "memory"
[[step]]
at = "0s"
action = "join"
peers = "all"
[[step]]
at = "2s"
name = "hi"
action = "send"
from = "all"
[[assert]]
kind = "delivery_ratio"
step = "hi"
within = "5s"
"#,
        tracker.ws_url()
    );
    let sc = scenario::parse_str(Path::new("external.toml"), &text).unwrap();
    let r = ghostmesh_harness::cli::execute(&sc, true).unwrap();
    assert!(r.passed, "{}", r.terminal());
    assert_eq!(r.summary.messages_delivered, 3);
    // The same URL is refused by the sim backend, which runs the tracker in-process.
    let errs =
        scenario::parse_str_for(Path::new("external.toml"), &text, Some(Backend::Sim)).unwrap_err();
    assert!(
        errs[0].to_string().contains("external.toml:3:"),
        "{}",
        errs[0]
    );
    rt.block_on(tracker.shutdown());
}

#[test]
fn sim_file_transfer() {
    let j = run_passes("scenarios/file-transfer.toml", "sim");
    let s = &j["summary"];
    assert_eq!(s["files_sent"], 12);
    assert_eq!(s["files_complete"], 12);
    assert_eq!(s["files_fast"], 1, "the 2 MiB fast file used binary frames");
}

#[test]
fn sim_relay() {
    let j = run_passes("scenarios/relay.toml", "sim");
    assert_eq!(j["summary"]["routed_answered"], 15);
    assert_eq!(j["summary"]["relay_forwarded"], 30);
}

#[test]
fn sim_onion_3_hops() {
    let j = run_passes("scenarios/onion-3-hops.toml", "sim");
    let s = &j["summary"];
    assert_eq!(s["routed_delivered"], 45);
    // 30 onion messages and 10 requests each way, 3 relays every time (150), then GhostMesh's
    // layers: 5 through one relay, 5 through three, forwarded twice and dropped by the third.
    assert_eq!(s["relay_forwarded"], 165);
    assert_eq!(s["relay_dropped"], 5);
    let sc = scenario::load(
        &root().join("scenarios/onion-3-hops.toml"),
        Some(Backend::Sim),
    )
    .unwrap();
    let out = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    let step = sc
        .steps
        .iter()
        .position(|s| s.name == "ghostmesh-ttl-3-relays")
        .unwrap();
    let dropped: Vec<&ghostmesh_harness::record::MsgRecord> =
        out.rec.messages.iter().filter(|m| m.step == step).collect();
    assert_eq!(dropped.len(), 5);
    for m in dropped {
        assert_eq!(
            m.failure.as_deref(),
            Some("dropped at relays[2]: ttl spent")
        );
        assert_eq!(m.hop_bytes.len(), 3, "hops 0..=2 carried it");
    }
}

#[test]
fn live_file_transfer() {
    let j = run_passes("scenarios/file-transfer.toml", "live");
    assert_eq!(j["summary"]["files_complete"], 12);
}

#[test]
fn live_relay() {
    run_passes("scenarios/relay.toml", "live");
}

#[test]
fn live_onion_3_hops() {
    let j = run_passes("scenarios/onion-3-hops.toml", "live");
    assert_eq!(j["summary"]["relay_forwarded"], 165);
    assert_eq!(j["summary"]["relay_dropped"], 5);
}

#[test]
fn live_webrtc_files_and_relays() {
    run_passes(
        "harness/tests/fixtures/live-webrtc-files-and-relays.toml",
        "live",
    );
}

#[test]
fn determinism_of_files_relays_and_onions() {
    for f in ["file-transfer", "relay", "onion-3-hops"] {
        let path = root().join(format!("scenarios/{f}.toml"));
        let mut sc = scenario::load(&path, Some(Backend::Sim)).unwrap();
        let a = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
        let b = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
        assert_eq!(a.trace_hash, b.trace_hash, "{f}");
        assert_eq!(a.rec.link_bytes, b.rec.link_bytes, "{f}");
        let hops = |o: &ghostmesh_harness::sim::SimOutcome| -> Vec<Vec<u64>> {
            o.rec.messages.iter().map(|m| m.hop_bytes.clone()).collect()
        };
        assert_eq!(hops(&a), hops(&b), "{f}");
        sc.seed += 1;
        let c = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
        assert_ne!(a.trace_hash, c.trace_hash, "{f}");
    }
    let o = harness(&["run", "scenarios/onion-3-hops.toml", "--check-determinism"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn sim_routes_drop_on_a_missing_link_and_say_where() {
    // Two relays that never link to each other (a partition between their groups): the first
    // relay drops the packet, counts it and the message names the relay.
    let text = r#"name = "cut-route"
duration = "10s"
[tracker]
announce_interval = "5s"
[[group]]
name = "s"
count = 1
[[group]]
name = "r1"
count = 1
[[group]]
name = "r2"
count = 1
[[group]]
name = "t"
count = 1
[[step]]
at = "0s"
action = "partition"
sides = [["r1"], ["r2"]]
[[step]]
at = "0s"
action = "join"
peers = "all"
[[step]]
at = "3s"
name = "o"
action = "onion_send"
from = "s"
to = "t"
through = ["r1[0]", "r2[0]"]
[[assert]]
kind = "delivery_ratio"
step = "o"
min = 0.0
"#;
    let sc = scenario::parse_str(Path::new("cut-route.toml"), text).unwrap();
    let out = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    assert_eq!(out.rec.relay_dropped, 1);
    let m = &out.rec.messages[0];
    assert!(m.delivered_at.is_none());
    assert_eq!(
        m.failure.as_deref(),
        Some("dropped at r1[0]: next hop not linked")
    );
    assert_eq!(m.hop_bytes.len(), 1);
}

#[test]
fn sim_file_fails_when_the_receiver_crashes_mid_transfer() {
    let text = r#"name = "crash-mid-file"
duration = "20s"
link_failure_detect = "1s"
[tracker]
announce_interval = "5s"
[[group]]
name = "a"
count = 2
network = { latency = "5ms", bandwidth = "10Mbps" }
[[step]]
at = "0s"
action = "join"
peers = "all"
[[step]]
at = "3s"
name = "f"
action = "send_file"
from = "a[0]"
size = "4MiB"
[[step]]
at = "3.5s"
action = "crash"
peers = "a[1]"
[[assert]]
kind = "delivery_ratio"
step = "f"
min = 0.0
"#;
    let sc = scenario::parse_str(Path::new("crash-mid-file.toml"), text).unwrap();
    let out = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    let m = &out.rec.messages[0];
    assert!(m.delivered_at.is_none());
    assert_eq!(m.failure.as_deref(), Some("link closed"));
}
