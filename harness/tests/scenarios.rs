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
    tour_has_a_bit_of_everything(&j);
}

/// What tour.toml shows besides messages: files, a broadcast, routed and onion messages, the
/// restarted tracker's count of every peer.
fn tour_has_a_bit_of_everything(j: &serde_json::Value) {
    let s = &j["summary"];
    assert_eq!(s["files_sent"], 2, "{s}");
    assert_eq!(s["files_complete"], 2, "{s}");
    assert_eq!(s["routed_sent"], 5, "{s}");
    assert_eq!(s["routed_delivered"], 5, "{s}");
    assert_eq!(s["routed_answered"], 3, "{s}");
    assert_eq!(s["tracker_restarts"], 1, "{s}");
    let names: Vec<&str> = j["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for n in [
        "files complete and intact",
        "every peer announced to the restarted tracker",
        "broadcast reaches every linked peer",
        "routed requests answered through the middle peer",
        "onion messages through one relay",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let restarted = j["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "tracker_peers")
        .unwrap();
    assert_eq!(restarted["actual"], "27 peers", "{restarted}");
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
    tour_has_a_bit_of_everything(&j);
    // Measured live, not left at 0: the tracker's messages (through the counting proxy) and
    // every link frame.
    assert!(
        j["summary"]["tracker_bytes"].as_u64().unwrap() > 10_000,
        "{}",
        j["summary"]
    );
    assert!(j["summary"]["tracker_frames"].as_u64().unwrap() > 100);
    assert!(j["summary"]["link_bytes"].as_u64().unwrap() > 2 * 256 * 1024);
    // The one setting the live backend does not apply is named.
    let w = j["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].as_str().unwrap().starts_with("tracker.latency"),
        "{w:?}"
    );
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
            "hidden-service-delay-padding.toml",
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
            "invalid-hidden.toml",
            ":11:",
            "step[0].entry",
            "entry names one peer",
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
        (
            "invalid-tracker-key.toml",
            ":7:",
            "tracker.max_ofers",
            "unknown key `max_ofers` in [tracker]",
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
    let o = harness(&[
        "validate",
        "harness/tests/fixtures/invalid-tracker-key.toml",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid-tracker-key.toml:8:17: key `tracker.offer_timeout`: invalid type"),
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

/// Delay padding on the virtual clock: every short-route answer held within the range (the
/// entry's drawn delays recorded, all different seeds of one range), none of the long-route
/// answers held; a range the delays cannot meet fails and names the assertion.
#[test]
fn sim_hidden_service_delay_padding() {
    let path = root().join("scenarios/hidden-service-delay-padding.toml");
    run_passes("scenarios/hidden-service-delay-padding.toml", "sim");
    let sc = scenario::load(&path, Some(Backend::Sim)).unwrap();
    let out = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    let step = |name: &str| sc.steps.iter().position(|s| s.name == name).unwrap();
    let (short, long) = (step("short-route"), step("long-route"));
    let held: Vec<u64> = out
        .rec
        .messages
        .iter()
        .filter(|m| m.step == short)
        .map(|m| m.padding_delay.unwrap())
        .collect();
    assert_eq!(held.len(), 8);
    assert!(
        held.iter()
            .all(|&d| (600_000_000..=1_500_000_000).contains(&d)),
        "{held:?}"
    );
    let mut distinct = held.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 1, "drawn, not fixed: {held:?}");
    for m in out.rec.messages.iter().filter(|m| m.step == short) {
        let rtt = m.acked_at.unwrap() - m.sent_at;
        assert!(
            rtt >= m.padding_delay.unwrap(),
            "answered before the delay passed"
        );
        assert_eq!(
            m.hops,
            Some(3),
            "3 relays (the entry used every peer it could)"
        );
    }
    for m in out.rec.messages.iter().filter(|m| m.step == long) {
        assert_eq!(m.padding_delay, Some(0));
        assert_eq!(m.hops, Some(2));
    }
    // Same seed, same delays; another seed, other delays.
    let again = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
    assert_eq!(again.trace_hash, out.trace_hash);
    let mut other = sc.clone();
    other.seed += 1;
    let o = ghostmesh_harness::sim::run(&other, &mut |_| {}).unwrap();
    let held2: Vec<Option<u64>> = o
        .rec
        .messages
        .iter()
        .filter(|m| m.step == short)
        .map(|m| m.padding_delay)
        .collect();
    assert_ne!(held2, held.iter().map(|&d| Some(d)).collect::<Vec<_>>());
}

#[test]
fn hidden_service_delay_padding_fails_when_answers_are_held_too_long_or_not_at_all() {
    let original =
        std::fs::read_to_string(root().join("scenarios/hidden-service-delay-padding.toml"))
            .unwrap();
    // Claim the short routes come back fast: the padding makes that false.
    let broken = original.replace("min = \"600ms\"\nmax = \"1600ms\"", "max = \"500ms\"");
    assert_ne!(broken, original);
    let dir = out_dir("hidden-broken");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.toml");
    std::fs::write(&file, broken).unwrap();
    let o = harness(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--json",
        dir.join("r.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    let failed: Vec<&str> = j["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["passed"] == false)
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["short routes are held within the delay range"]);
}

#[test]
fn live_hidden_service_delay_padding() {
    run_passes("scenarios/hidden-service-delay-padding.toml", "live");
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

/// scenarios/container-restart.toml with the embedded tracker (same timeline, no Docker),
/// plus `extra` steps.
fn container_restart_embedded(extra: &str) -> scenario::Scenario {
    let text = std::fs::read_to_string(root().join("scenarios/container-restart.toml"))
        .unwrap()
        .replace("kind = \"container\"", "kind = \"embedded\"");
    assert!(text.contains("kind = \"embedded\""));
    scenario::parse_str_for(
        Path::new("container-restart-embedded.toml"),
        &format!("{text}{extra}"),
        Some(Backend::Live),
    )
    .unwrap()
}

const RECONNECTED: &str = "all 12 peers announced to the restarted tracker";
const EARLY_MEETS_LATE: &str = "late peers reach early peers after the restart";

#[test]
fn live_peers_reconnect_after_a_tracker_restart() {
    // The container scenario's timeline with the embedded tracker: passes, and its two
    // reconnection assertions are the ones that fail when the peers that were there before
    // the restart are not back at the tracker (here: gone during the outage). Late peers
    // among themselves cannot satisfy them.
    let ok = std::thread::spawn(|| {
        ghostmesh_harness::cli::execute(&container_restart_embedded(""), true).unwrap()
    });
    let gone = std::thread::spawn(|| {
        let extra = "\n[[step]]\nat = \"6s\"\naction = \"crash\"\npeers = \"early\"\n";
        ghostmesh_harness::cli::execute(&container_restart_embedded(extra), true).unwrap()
    });
    let ok = ok.join().unwrap();
    let gone = gone.join().unwrap();
    assert!(ok.passed, "{}", ok.terminal());
    assert_eq!(ok.summary.tracker_restarts, 1);
    let actual = |r: &ghostmesh_harness::report::RunResult, n: &str| {
        r.assertions
            .iter()
            .find(|a| a.name == n)
            .unwrap()
            .actual
            .clone()
    };
    assert_eq!(actual(&ok, RECONNECTED), "12 peers");
    assert_eq!(
        gone.failed_assertions,
        [RECONNECTED, EARLY_MEETS_LATE],
        "{}",
        gone.terminal()
    );
    assert_eq!(actual(&gone, RECONNECTED), "4 peers");
    assert!(actual(&gone, EARLY_MEETS_LATE).starts_with("0.00%"));
}

/// Latencies (ms) of the delivered messages of step `name`.
fn delivered_ms(
    sc: &scenario::Scenario,
    rec: &ghostmesh_harness::record::Recorder,
    name: &str,
) -> Vec<f64> {
    let step = sc.steps.iter().position(|s| s.name == name).unwrap();
    let v: Vec<f64> = rec
        .messages
        .iter()
        .filter(|m| m.step == step)
        .map(|m| (m.delivered_at.expect(name) - m.sent_at) as f64 / 1e6)
        .collect();
    assert!(!v.is_empty(), "{name}");
    v
}

fn min_max(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::MAX, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

#[test]
fn live_links_follow_each_groups_network_and_link_rules() {
    // Six peers per run (each announce offers to all five others: every pair gets linked).
    // The live backend used to shape every memory link like the first memory group and ignore
    // jitter, loss and [[link]]; each of these checks fails then.
    let a = r#"name = "shaping-a"
duration = "20s"
[tracker]
announce_interval = "5s"
[[group]]
name = "near"
count = 2
transport = "memory"
network = { latency = "5ms" }
[[group]]
name = "far"
count = 2
transport = "memory"
network = { latency = "150ms" }
[[group]]
name = "lossy"
count = 2
transport = "memory"
network = { latency = "5ms", loss = 0.3 }
[[link]]
between = ["near", "far"]
latency = "40ms"
[[step]]
at = "0s"
action = "join"
peers = "all"
[[step]]
at = "4s"
name = "near-near"
action = "send"
from = "near[0]"
to = "near[1]"
count = 5
[[step]]
at = "4s"
name = "far-far"
action = "send"
from = "far[0]"
to = "far[1]"
count = 5
[[step]]
at = "4s"
name = "near-far"
action = "send"
from = "near[1]"
to = "far"
count = 5
[[step]]
at = "4s"
name = "lossy"
action = "send"
from = "lossy[0]"
to = "lossy[1]"
count = 16
interval = "700ms"
[[assert]]
kind = "delivery_ratio"
within = "5s"
"#;
    let b = r#"name = "shaping-b"
duration = "20s"
[tracker]
announce_interval = "5s"
[[group]]
name = "plain"
count = 2
transport = "memory"
network = { latency = "5ms" }
[[group]]
name = "jittery"
count = 2
transport = "memory"
network = { latency = "5ms", jitter = "200ms" }
[[group]]
name = "slow"
count = 2
transport = "memory"
network = { latency = "5ms", bandwidth = "1Mbps" }
[[step]]
at = "0s"
action = "join"
peers = "all"
[[step]]
at = "4s"
name = "jitter"
action = "send"
from = "jittery[0]"
to = "jittery[1]"
count = 20
interval = "250ms"
[[step]]
at = "4s"
name = "bandwidth"
action = "send"
from = "slow[0]"
to = "slow[1]"
size = "100KB"
[[assert]]
kind = "delivery_ratio"
within = "10s"
"#;
    let run = |text: &'static str| {
        std::thread::spawn(move || {
            let sc = scenario::parse_str_for(Path::new("shaping.toml"), text, Some(Backend::Live))
                .unwrap();
            let out = ghostmesh_harness::live::run(&sc, &mut |_| {}).unwrap();
            (sc, out)
        })
    };
    let (ha, hb) = (run(a), run(b));
    let (sa, oa) = ha.join().unwrap();
    let (sb, ob) = hb.join().unwrap();

    // Access links add up; a [[link]] rule replaces the sum.
    let (_, hi) = min_max(&delivered_ms(&sa, &oa.rec, "near-near"));
    assert!(hi < 150.0, "near-near (10 ms) took up to {hi} ms");
    let (lo, hi) = min_max(&delivered_ms(&sa, &oa.rec, "far-far"));
    assert!(
        lo >= 295.0 && hi < 1000.0,
        "far-far (300 ms): {lo}..{hi} ms"
    );
    let (lo, hi) = min_max(&delivered_ms(&sa, &oa.rec, "near-far"));
    assert!(
        lo >= 38.0 && hi < 150.0,
        "near-far ([[link]] 40 ms, not 155): {lo}..{hi} ms"
    );
    // Loss: each lost frame costs a 200 ms retransmission (combined loss 1 - 0.7² = 0.51),
    // so about half the messages (one frame each, sent 700 ms apart so that one delayed
    // frame seldom holds up the next) take 200 ms or more.
    let lossy = delivered_ms(&sa, &oa.rec, "lossy");
    let slow = lossy.iter().filter(|&&ms| ms >= 200.0).count();
    assert!(
        (2..16).contains(&slow),
        "lost frames delayed: {slow} of 16 took 200 ms or more: {lossy:?}"
    );
    // Jitter: up to 400 ms extra (both access links), spread over the messages.
    let (lo, hi) = min_max(&delivered_ms(&sb, &ob.rec, "jitter"));
    assert!(
        hi - lo >= 100.0 && hi < 1000.0,
        "jitter 0..=400 ms: {lo}..{hi} ms"
    );
    // Bandwidth: 100 kB at the sender's 1 Mbit/s is at least 0.8 s.
    let (lo, _) = min_max(&delivered_ms(&sb, &ob.rec, "bandwidth"));
    assert!(lo >= 750.0, "100 kB at 1 Mbit/s took {lo} ms");
    // Every frame is counted (the 100 kB message at least), and the tracker's messages.
    assert!(
        ob.rec.link_bytes > 100_000 && ob.rec.link_frames > 10,
        "{:?}",
        (ob.rec.link_bytes, ob.rec.link_frames)
    );
    assert!(
        ob.rec.tracker_bytes > 1000 && ob.rec.tracker_frames >= 6,
        "{:?}",
        (ob.rec.tracker_bytes, ob.rec.tracker_frames)
    );
    assert!(oa.rec.warnings.is_empty() && ob.rec.warnings.is_empty());
}

#[test]
fn live_says_what_it_cannot_measure_and_never_passes_it() {
    // Behind wss:// the tracker's traffic and stats cannot be read: the assertions on them
    // fail as not measurable (a 0 would have passed `max`), and the report says why.
    let dir = out_dir("unmeasurable");
    let file = dir.join("wss.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        &file,
        r#"name = "wss"
backend = "live"
tracker = "wss://127.0.0.1:9/announce"
duration = "3s"
link_failure_detect = "1s"
[[group]]
name = "p"
count = 1
transport = "memory"
[[step]]
at = "0s"
action = "join"
peers = "all"
[[step]]
at = "1s"
action = "tracker_restart"
[[assert]]
name = "tracker bytes"
kind = "bytes"
metric = "tracker"
max = "1MB"
[[assert]]
name = "tracker peers"
kind = "tracker_peers"
at = "2.5s"
max = 5
"#,
    )
    .unwrap();
    let json = dir.join("r.json");
    let junit = dir.join("r.xml");
    let o = harness(&[
        "run",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("[WARN] tracker bytes cannot be measured behind wss://"),
        "{t}"
    );
    assert!(
        t.contains("[WARN] tracker_restart cannot restart the external tracker"),
        "{t}"
    );
    assert!(
        t.contains("[WARN] link_failure_detect is applied by the sim only"),
        "{t}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        j["failed_assertions"],
        serde_json::json!(["tracker bytes", "tracker peers"])
    );
    for a in j["assertions"].as_array().unwrap() {
        assert!(
            a["actual"]
                .as_str()
                .unwrap()
                .starts_with("not measurable: "),
            "{a}"
        );
    }
    assert_eq!(
        j["warnings"].as_array().unwrap().len(),
        3,
        "{}",
        j["warnings"]
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains("<property name=\"warning\" value=\"tracker bytes cannot be measured"),
        "{x}"
    );
    // `validate` names them too, before anything runs.
    let o = harness(&["validate", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: tracker_restart cannot restart"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn live_tracker_restart_of_an_external_tracker_cuts_its_connections() {
    // The harness cannot restart a tracker it does not run; it takes it away from the peers
    // (every connection closed, new ones refused for down_for), says so, and the tracker's
    // own count shows the peers leave and come back.
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
        r#"name = "external-restart"
backend = "live"
tracker = "{}"
duration = "15s"
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
action = "tracker_restart"
down_for = "1s"
[[step]]
at = "9s"
name = "after"
action = "send"
from = "all"
[[assert]]
name = "before"
kind = "tracker_peers"
at = "1.5s"
min = 3
[[assert]]
name = "during"
kind = "tracker_peers"
at = "2.5s"
max = 0
[[assert]]
name = "back"
kind = "tracker_peers"
at = "9s"
min = 3
[[assert]]
kind = "delivery_ratio"
step = "after"
within = "3s"
"#,
        tracker.ws_url()
    );
    let sc = scenario::parse_str(Path::new("external-restart.toml"), &text).unwrap();
    let r = ghostmesh_harness::cli::execute(&sc, true).unwrap();
    assert!(r.passed, "{}", r.terminal());
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("cut every peer's tracker connection"));
    // Not a restart of the tracker: it is still the same process, and it is not counted.
    assert_eq!(r.summary.tracker_restarts, 0);
    assert!(r.summary.tracker_bytes > 0);
    rt.block_on(tracker.shutdown());
}

#[test]
fn bench_sim_smoke_and_exit_codes() {
    let o = harness(&["bench", "sim", "--peers", "50", "--seed", "3"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("bench sim: 50 peers") && t.contains("50 of 50 messages delivered"),
        "{t}"
    );
    assert!(
        t.contains("all assertions passed") && t.contains("PASSED"),
        "{t}"
    );
    // One peer can neither discover anyone nor deliver: the assertions fail, exit 1.
    let o = harness(&["bench", "sim", "--peers", "1"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("ASSERTIONS FAILED") && t.contains("[FAIL]"),
        "{t}"
    );
    // No peers is a bad command line.
    assert_eq!(
        harness(&["bench", "sim", "--peers", "0"]).status.code(),
        Some(2)
    );
}

#[test]
fn invalid_and_runtime_errors_still_write_json_junit_and_html() {
    let dir = out_dir("errors");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    // Exit 2: the scenario is invalid.
    let o = harness(&[
        "run",
        "harness/tests/fixtures/invalid-duration.toml",
        "--json",
        &p("bad.json"),
        "--junit",
        &p("bad.xml"),
        "--out",
        &p("bad-out"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bad.json")).unwrap()).unwrap();
    assert_eq!(j["passed"], false);
    assert_eq!(j["exit_code"], 2);
    assert_eq!(j["error_kind"], "invalid_scenario");
    assert!(
        j["errors"][0]
            .as_str()
            .unwrap()
            .contains("invalid-duration.toml:6:"),
        "{j}"
    );
    let x = std::fs::read_to_string(dir.join("bad.xml")).unwrap();
    assert!(x.starts_with("<?xml") && x.contains("errors=\"1\""), "{x}");
    assert!(
        x.contains("<testcase classname=\"ghostmesh-harness.invalid-duration\" name=\"scenario\""),
        "{x}"
    );
    assert!(
        x.contains("<error message=\"harness/tests/fixtures/invalid-duration.toml:6:"),
        "{x}"
    );
    for f in ["results.json", "junit.xml", "report.html"] {
        assert!(dir.join("bad-out").join(f).exists(), "{f}");
    }
    assert!(!dir.join("bad-out/scenario.resolved.toml").exists());

    // Exit 3: the run cannot be carried out (the tracker image does not exist).
    let o = Command::new(env!("CARGO_BIN_EXE_ghostmesh-harness"))
        .args([
            "run",
            "scenarios/container-restart.toml",
            "--backend",
            "live",
            "--quiet",
        ])
        .args([
            "--json",
            &p("rt.json"),
            "--junit",
            &p("rt.xml"),
            "--html",
            &p("rt.html"),
        ])
        .env("GHOSTMESH_TRACKER_IMAGE", "ghostmesh-no-such-image:none")
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rt.json")).unwrap()).unwrap();
    assert_eq!(j["exit_code"], 3);
    assert_eq!(j["error_kind"], "runtime_error");
    assert_eq!(j["scenario"], "container-restart");
    assert_eq!(j["backend"], "live");
    assert!(!j["errors"][0].as_str().unwrap().is_empty(), "{j}");
    let x = std::fs::read_to_string(dir.join("rt.xml")).unwrap();
    assert!(
        x.contains("<error ") && x.contains("type=\"runtime_error\""),
        "{x}"
    );
    assert!(
        dir.join("rt.scenario.toml").exists(),
        "resolved scenario next to the JSON"
    );
    let h = std::fs::read_to_string(dir.join("rt.html")).unwrap();
    assert!(h.contains("ERROR"));
    let _ = std::fs::remove_dir_all(&dir);
}
