//! The tracker's scratch image and docker-compose.yml, with a Docker engine: the image's
//! properties (size, user, healthcheck, ports), a live scenario against the containerized
//! tracker that restarts the container mid-run (peers reconnect and rediscover), and
//! `docker-compose up` running a scenario against the tracker service by URL.
//!
//! Needs Docker and the images from `scripts/build-images.sh` (the README's test command
//! builds them). Without them these tests print SKIPPED and pass, unless `CI` is set: then
//! they fail.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ghostmesh_harness::container::{ContainerTracker, DEFAULT_IMAGE, unavailable};

const HARNESS_IMAGE: &str = "ghostmesh-harness:latest";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `true` when the test can run; otherwise says why (and panics under CI).
fn docker_ready(images: &[&str]) -> bool {
    for image in images {
        if let Some(why) = unavailable(image) {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set and Docker is not usable: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return false;
        }
    }
    true
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn the_image_is_small_unprivileged_and_self_checking() {
    if !docker_ready(&[DEFAULT_IMAGE]) {
        return;
    }
    let o = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Size}}|{{.Config.User}}|{{json .Config.Healthcheck.Test}}|{{json .Config.ExposedPorts}}|{{json .Config.Entrypoint}}",
        DEFAULT_IMAGE,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let parts: Vec<&str> = out.split('|').collect();
    let size: u64 = parts[0].parse().unwrap();
    assert!(size < 15_000_000, "image is {size} bytes, target under 15 MB");
    assert_eq!(parts[1], "65534:65534", "runs as nobody");
    assert!(parts[2].contains("healthcheck"), "HEALTHCHECK uses the binary: {}", parts[2]);
    assert!(parts[3].contains("8000/tcp") && parts[3].contains("9000/tcp"), "{}", parts[3]);
    assert_eq!(parts[4], r#"["/ghostmesh-tracker"]"#);
    // Nothing but the binary: no shell to exec into.
    let o = docker(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", DEFAULT_IMAGE]);
    assert!(!text(&o).contains("/bin/sh -c apt"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_tracker_serves_restarts_and_reports_healthy() {
    if !docker_ready(&[DEFAULT_IMAGE]) {
        return;
    }
    let t = ContainerTracker::start(DEFAULT_IMAGE, &[]).await.unwrap();
    assert!(t.ws_url().starts_with("ws://127.0.0.1:"));
    let o = docker(&["inspect", "-f", "{{.State.Health.Status}}|{{json .HostConfig.PortBindings}}", t.id()]);
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(status.contains("127.0.0.1"), "published on 127.0.0.1 only: {status}");
    t.restart(Duration::from_millis(500)).await.unwrap();
    let logs = t.logs().await;
    assert!(logs.contains("listening"), "{logs}");
    assert!(logs.to_lowercase().contains("shut"), "graceful shutdown on SIGTERM is logged: {logs}");
    t.remove().await;
}

#[test]
fn a_scenario_survives_a_container_restart() {
    if !docker_ready(&[DEFAULT_IMAGE]) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ghostmesh-container-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(env!("CARGO_BIN_EXE_ghostmesh-harness"))
        .args(["run", "scenarios/container-restart.toml", "--backend", "live", "--quiet", "--out"])
        .arg(&dir)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], true, "{json}");
    let names: Vec<String> = json["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(names.iter().any(|n| n.contains("after the restart")), "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn docker_compose_runs_a_scenario_against_the_tracker_service() {
    if !docker_ready(&[DEFAULT_IMAGE, HARNESS_IMAGE]) {
        return;
    }
    let compose = if Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success()) {
        vec!["docker-compose"]
    } else {
        vec!["docker", "compose"]
    };
    let project = format!("ghostmeshtest{}", std::process::id());
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (tp, mp) = (free(), free());
    let run = |args: &[&str]| {
        Command::new(compose[0])
            .args(&compose[1..])
            .args(["-p", &project])
            .args(args)
            .env("TRACKER_PORT", tp.to_string())
            .env("METRICS_PORT", mp.to_string())
            .current_dir(root())
            .output()
            .unwrap()
    };
    let o = run(&["up", "--abort-on-container-exit", "--exit-code-from", "scenario"]);
    let down = run(&["down", "-v", "--remove-orphans"]);
    assert!(o.status.success(), "compose up failed:\n{}", text(&o));
    let out = text(&o);
    assert!(out.contains("PASS"), "{out}");
    assert!(down.status.success(), "{}", text(&down));
}
