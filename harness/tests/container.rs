//! The tracker's scratch image and docker-compose.yml, with a Docker engine: the image's
//! properties (size, user, healthcheck, ports), a live scenario against the containerized
//! tracker that restarts the container mid-run (peers reconnect and rediscover), and
//! `docker-compose up` running a scenario against the tracker service by URL.
//!
//! Needs Docker, `docker-compose` (or the `docker compose` plugin) for the compose test, and
//! the images from `scripts/build-images.sh` (the README's test command builds them).
//! Without them these tests print a SKIPPED line and pass, unless `CI` is set: then they
//! fail. `GHOSTMESH_TRACKER_IMAGE` and `GHOSTMESH_HARNESS_IMAGE` test other images (e.g.
//! `TAG=dev scripts/build-images.sh`).
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ghostmesh_harness::container::{ContainerTracker, DEFAULT_IMAGE, unavailable};
use testcontainers::core::{Healthcheck, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

fn tracker_image() -> String {
    std::env::var("GHOSTMESH_TRACKER_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned())
}

fn harness_image() -> String {
    std::env::var("GHOSTMESH_HARNESS_IMAGE")
        .unwrap_or_else(|_| "ghostmesh-harness:latest".to_owned())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tool the test needs is missing: fails under `CI`, otherwise says so loudly and lets the
/// test pass.
fn missing(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and {test} cannot run: {why}");
    }
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {why} (set CI=1 to make this a failure)"
    );
}

/// `true` when the test can run; otherwise says why (and panics under CI).
fn docker_ready(test: &str, images: &[&str]) -> bool {
    for image in images {
        if let Some(why) = unavailable(image) {
            missing(test, &why);
            return false;
        }
    }
    true
}

/// The compose command: `docker-compose`, else `docker compose`; `None` when neither runs.
fn compose_command() -> Option<Vec<&'static str>> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    [vec!["docker-compose"], vec!["docker", "compose"]]
        .into_iter()
        .find(|c| works(c))
}

/// Polls `docker inspect` until the container's health is `want` (or `timeout` passes);
/// returns the last status seen.
fn health_status(id: &str, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let o = docker(&["inspect", "-f", "{{.State.Health.Status}}", id]);
        let status = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        if status == want || Instant::now() >= deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_image_is_small_unprivileged_and_self_checking() {
    let image = tracker_image();
    if !docker_ready(
        "the_image_is_small_unprivileged_and_self_checking",
        &[&image],
    ) {
        return;
    }
    let o = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Size}}|{{.Config.User}}|{{json .Config.Healthcheck.Test}}|{{json .Config.ExposedPorts}}|{{json .Config.Entrypoint}}",
        &image,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let parts: Vec<&str> = out.split('|').collect();
    let size: u64 = parts[0].parse().unwrap();
    assert!(
        size < 15_000_000,
        "image is {size} bytes, target under 15 MB"
    );
    assert_eq!(parts[1], "65534:65534", "runs as nobody");
    assert!(
        parts[2].contains("healthcheck"),
        "HEALTHCHECK uses the binary: {}",
        parts[2]
    );
    assert!(
        parts[3].contains("8000/tcp") && parts[3].contains("9000/tcp"),
        "{}",
        parts[3]
    );
    assert_eq!(parts[4], r#"["/ghostmesh-tracker"]"#);
    // Nothing but the binary: no shell to exec into.
    let o = docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        &image,
    ]);
    assert!(!text(&o).contains("/bin/sh -c apt"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_tracker_serves_restarts_and_reports_healthy() {
    let image = tracker_image();
    if !docker_ready(
        "a_container_tracker_serves_restarts_and_reports_healthy",
        &[&image],
    ) {
        return;
    }
    let t = ContainerTracker::start(&image, &[]).await.unwrap();
    assert!(t.ws_url().starts_with("ws://127.0.0.1:"));
    let o = docker(&[
        "inspect",
        "-f",
        "{{.State.Health.Status}}|{{json .HostConfig.PortBindings}}",
        t.id(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let (status, bindings) = out.split_once('|').unwrap();
    // start() waited for Docker's own verdict (the image's HEALTHCHECK), not only /health.
    assert_eq!(status, "healthy", "{out}");
    assert!(
        bindings.contains("127.0.0.1"),
        "published on 127.0.0.1 only: {bindings}"
    );
    t.restart(Duration::from_millis(500)).await.unwrap();
    // Healthy again after the restart (the first check comes one interval, 10 s, in).
    let id = t.id().to_owned();
    let status =
        tokio::task::spawn_blocking(move || health_status(&id, "healthy", Duration::from_secs(40)))
            .await
            .unwrap();
    assert_eq!(status, "healthy", "after the restart");
    let logs = t.logs().await;
    assert!(logs.contains("listening"), "{logs}");
    assert!(
        logs.to_lowercase().contains("shut"),
        "graceful shutdown on SIGTERM is logged: {logs}"
    );
    t.remove().await;
}

/// Starts the tracker image with `cmd` and `env` under the health check `check` (probed every
/// 500 ms), waits until Docker reports it healthy, and asserts that; `None` when Docker or the
/// image is missing (and the test may skip).
async fn healthy_tracker(
    test: &str,
    cmd: &[&str],
    env: &[(&str, &str)],
    check: &[&str],
) -> Option<testcontainers::ContainerAsync<GenericImage>> {
    let image = tracker_image();
    if !docker_ready(test, &[&image]) {
        return None;
    }
    let (name, tag) = image.rsplit_once(':').unwrap_or((&image, "latest"));
    let mut req = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::healthcheck())
        .with_cmd(cmd.iter().map(|s| s.to_string()));
    for (k, v) in env {
        req = req.with_env_var(*k, *v);
    }
    let c = req
        .with_health_check(
            Healthcheck::cmd(check.iter().map(|s| s.to_string()))
                .with_interval(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(3))
                .with_retries(3),
        )
        .with_startup_timeout(Duration::from_secs(30))
        .start()
        .await
        .unwrap();
    let o = docker(&["inspect", "-f", "{{.State.Health.Status}}", c.id()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "healthy",
        "{test}"
    );
    Some(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_on_another_port_is_healthy_with_the_documented_override() {
    // The image's HEALTHCHECK does not see CMD's flags; a tracker told by a flag to listen
    // elsewhere needs the exec-form override the Dockerfile documents (docker-compose.yml uses
    // the same form).
    let Some(c) = healthy_tracker(
        "a_tracker_on_another_port_is_healthy_with_the_documented_override",
        &["--listen", "0.0.0.0:8123"],
        &[],
        &[
            "/ghostmesh-tracker",
            "healthcheck",
            "http://127.0.0.1:8123/health",
        ],
    )
    .await
    else {
        return;
    };
    let _ = c.rm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_configured_by_environment_is_probed_on_its_own_port() {
    // The image's check is `healthcheck` without a URL: it reads GHOSTMESH_TRACKER_* like the
    // tracker, so moving the port through the environment needs no override. (Same command as
    // the image's, with a shorter interval so the test does not wait 10 s per probe.)
    let image_check = ["/ghostmesh-tracker", "healthcheck"];
    let Some(c) = healthy_tracker(
        "a_tracker_configured_by_environment_is_probed_on_its_own_port",
        // Replaces the default CMD's --listen flag (flags win over the environment).
        &["--log-level", "info"],
        &[("GHOSTMESH_TRACKER_LISTEN", "0.0.0.0:8123")],
        &image_check,
    )
    .await
    else {
        return;
    };
    // The image's own check is that same command.
    let o = docker(&[
        "inspect",
        "-f",
        "{{json .Config.Healthcheck.Test}}",
        &tracker_image(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        r#"["CMD","/ghostmesh-tracker","healthcheck"]"#
    );
    let _ = c.rm().await;
}

#[test]
fn compose_health_probe_names_the_port_the_config_serves() {
    // No Docker needed: docker-compose.yml's probe and deploy/tracker.toml must agree, and so
    // must the Dockerfile's HEALTHCHECK and its default CMD.
    let port_of = |addr: &str| {
        addr.rsplit(':')
            .next()
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    let cfg: toml::Table = std::fs::read_to_string(root().join("deploy/tracker.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let served: Vec<String> = ["listen", "metrics_listen"]
        .iter()
        .filter_map(|k| cfg.get(*k).and_then(|v| v.as_str()))
        .filter(|v| !v.is_empty())
        .map(port_of)
        .collect();
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let probe = compose
        .lines()
        .find(|l| l.contains("\"healthcheck\"") && l.contains("test:"))
        .expect("docker-compose.yml overrides the tracker's healthcheck");
    let url = probe.split('"').find(|p| p.starts_with("http://")).unwrap();
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap();
    assert!(
        served.iter().any(|p| p == port),
        "compose probes {url}; tracker.toml serves {served:?}"
    );

    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let check = dockerfile
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("CMD [\"/ghostmesh-tracker\", \"healthcheck\"")
        })
        .unwrap();
    let cmd = dockerfile
        .lines()
        .find(|l| l.starts_with("CMD [\"--listen\""))
        .unwrap();
    let listen = cmd.split('"').nth(3).unwrap();
    // The image's check takes no URL: it probes where the configuration it sees serves
    // /health. It does not see CMD's flags, so the tracker's default listen must be CMD's.
    assert_eq!(
        check.trim(),
        r#"CMD ["/ghostmesh-tracker", "healthcheck"]"#,
        "HEALTHCHECK {check}"
    );
    assert_eq!(
        ghostmesh_tracker::Config::default().health_url().unwrap(),
        format!("http://127.0.0.1:{}/health", port_of(listen)),
        "the default configuration's /health vs {cmd}"
    );
}

#[test]
fn a_scenario_survives_a_container_restart() {
    if !docker_ready(
        "a_scenario_survives_a_container_restart",
        &[&tracker_image()],
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ghostmesh-container-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(env!("CARGO_BIN_EXE_ghostmesh-harness"))
        .args([
            "run",
            "scenarios/container-restart.toml",
            "--backend",
            "live",
            "--quiet",
            "--out",
        ])
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
    // The assertions that prove reconnection (see the scenario's comments, and
    // tests/scenarios.rs for the same timeline failing them when peers do not come back).
    for n in [
        "all 12 peers announced to the restarted tracker",
        "late peers reach early peers after the restart",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    assert_eq!(json["summary"]["tracker_restarts"], 1, "{json}");
    let counted = json["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "tracker_peers")
        .unwrap();
    assert_eq!(counted["actual"], "12 peers", "{counted}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn docker_compose_runs_a_scenario_against_the_tracker_service() {
    const TEST: &str = "docker_compose_runs_a_scenario_against_the_tracker_service";
    let (tracker, harness) = (tracker_image(), harness_image());
    if !docker_ready(TEST, &[&tracker, &harness]) {
        return;
    }
    let Some(compose) = compose_command() else {
        missing(
            TEST,
            "neither `docker-compose` nor `docker compose` runs (apt-get install docker-compose)",
        );
        return;
    };
    let project = format!("ghostmeshtest{}", std::process::id());
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (tp, mp) = (free(), free());
    let run = |args: &[&str]| {
        Command::new(compose[0])
            .args(&compose[1..])
            .args(["-p", &project])
            .args(args)
            .env("TRACKER_PORT", tp.to_string())
            .env("METRICS_PORT", mp.to_string())
            .env("GHOSTMESH_TRACKER_IMAGE", &tracker)
            .env("GHOSTMESH_HARNESS_IMAGE", &harness)
            .current_dir(root())
            .output()
            .unwrap()
    };
    let o = run(&[
        "up",
        "--abort-on-container-exit",
        "--exit-code-from",
        "scenario",
    ]);
    let down = run(&["down", "-v", "--remove-orphans"]);
    assert!(o.status.success(), "compose up failed:\n{}", text(&o));
    let out = text(&o);
    assert!(out.contains("PASSED"), "{out}");
    // The scenario service started only once the tracker was healthy (depends_on:
    // service_healthy), i.e. once the compose file's probe found /health.
    assert!(down.status.success(), "{}", text(&down));
}
