//! `tracker = "container"`: the tracker's scratch image (`scripts/build-images.sh`) run through
//! testcontainers, on a Docker network created for the run, its WebSocket port (8000) and its
//! metrics port (9000: `/stats.json`, `/metrics`) published on 127.0.0.1 only (fixed ports, so
//! a restarted container keeps its URLs).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The image `scripts/build-images.sh` builds.
pub const DEFAULT_IMAGE: &str = "ghostmesh-tracker:latest";

/// How long a (re)started container may take to answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why Docker cannot be used, if it cannot: no `docker` client, no engine, or no image.
pub fn unavailable(image: &str) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output();
    match out {
        Err(e) => Some(format!(
            "the docker client cannot run ({e}); install docker.io"
        )),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            // "Error response from daemon: No such image" names the daemon too: it answered.
            let no_image = err.to_lowercase().contains("no such image");
            if !no_image && (err.contains("Cannot connect") || err.contains("daemon")) {
                Some(format!(
                    "no Docker engine answers ({}); start dockerd",
                    err.trim()
                ))
            } else {
                Some(format!(
                    "image {image} is missing; build it with scripts/build-images.sh"
                ))
            }
        }
    }
}

/// A tracker running in a container.
pub struct ContainerTracker {
    container: ContainerAsync<GenericImage>,
    port: u16,
    metrics_port: u16,
    image: String,
}

impl std::fmt::Debug for ContainerTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerTracker")
            .field("image", &self.image)
            .field("id", &self.container.id())
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port)
            .finish()
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl ContainerTracker {
    /// Starts `image` (e.g. [`DEFAULT_IMAGE`]) with `env` (tracker settings as
    /// `GHOSTMESH_TRACKER_*` variables) and waits until it answers `/health`.
    pub async fn start(image: &str, env: &[(String, String)]) -> Result<Self, String> {
        if let Some(why) = unavailable(image) {
            return Err(why);
        }
        let (name, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let port = free_port()?;
        let metrics_port = free_port()?;
        let network = format!("ghostmesh-harness-{}-{port}", std::process::id());
        let local = |p: u16| {
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(p.to_string()),
            }])
        };
        let binding = HashMap::from([
            ("8000/tcp".to_owned(), local(port)),
            ("9000/tcp".to_owned(), local(metrics_port)),
        ]);
        let mut request = GenericImage::new(name, tag)
            .with_exposed_port(8000.tcp())
            .with_exposed_port(9000.tcp())
            .with_wait_for(WaitFor::healthcheck())
            .with_network(network);
        for (k, v) in env {
            request = request.with_env_var(k, v);
        }
        let request = request
            .with_startup_timeout(READY_TIMEOUT)
            .with_host_config_modifier(move |hc: &mut HostConfig| {
                hc.publish_all_ports = Some(false);
                hc.port_bindings = Some(binding.clone());
            });
        let container = request
            .start()
            .await
            .map_err(|e| format!("starting {image}: {e}"))?;
        let t = ContainerTracker {
            container,
            port,
            metrics_port,
            image: image.to_owned(),
        };
        t.wait_ready().await?;
        Ok(t)
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` of the metrics listener (`/stats.json`, `/metrics`).
    pub fn metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    /// The container id.
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// Stops the container (SIGTERM: the tracker closes its sockets and exits).
    pub async fn stop(&self) -> Result<(), String> {
        self.container
            .stop()
            .await
            .map_err(|e| format!("stopping: {e}"))
    }

    /// Starts a stopped container again (same port) and waits until it answers.
    pub async fn start_again(&self) -> Result<(), String> {
        self.container
            .start()
            .await
            .map_err(|e| format!("starting again: {e}"))?;
        self.wait_ready().await
    }

    /// [`stop`](Self::stop), `down_for`, [`start_again`](Self::start_again).
    pub async fn restart(&self, down_for: Duration) -> Result<(), String> {
        self.stop().await?;
        tokio::time::sleep(down_for).await;
        self.start_again().await
    }

    /// What the container printed on stdout and stderr so far.
    pub async fn logs(&self) -> String {
        let out = self.container.stdout_to_vec().await.unwrap_or_default();
        let err = self.container.stderr_to_vec().await.unwrap_or_default();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    }

    /// Removes the container (and, with it, the network testcontainers created).
    pub async fn remove(self) {
        let _ = self.container.rm().await;
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match health(self.port).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{} not healthy after {READY_TIMEOUT:?}: {e}",
                        self.image
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// `GET /health` on 127.0.0.1:`port`, bounded.
async fn health(port: u16) -> Result<(), String> {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        if buf.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned())
        }
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .map_err(|_| "timed out".to_owned())?
}
