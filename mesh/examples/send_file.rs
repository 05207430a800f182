//! Send a file to the first peer met in a swarm, or receive files into a directory, with a
//! progress bar.
//!
//! ```sh
//! cargo run --release -p ghostmesh-tracker -- --listen 127.0.0.1:8000                # tracker
//! cargo run --release -p ghostmesh --example send_file -- --tracker ws://127.0.0.1:8000 \
//!     --identifier files --receive /tmp/inbox                                          # receiver
//! cargo run --release -p ghostmesh --example send_file -- --tracker ws://127.0.0.1:8000 \
//!     --identifier files --send ./big.iso                                              # sender
//! ```
//!
//! Flags: `--tracker URL` (repeatable, required), `--identifier NAME` (required), one of
//! `--send PATH` or `--receive DIR`, `--bind ADDR` (bind WebRTC to this address, e.g.
//! `127.0.0.1`), `--compat` (sender: GhostMesh's base64 format even toward Rust peers),
//! `--hash` (sender: hash the file first so the offer carries its SHA-256). The receiver keeps
//! running until Ctrl-C; the sender leaves once the transfer completes.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ghostmesh::file::{FileOptions, FileSession, FileSource};
use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::transport::webrtc::WebRtcConfig;

const USAGE: &str = "usage: send_file --tracker URL [--tracker URL ...] --identifier NAME \
                     (--send PATH | --receive DIR) [--bind ADDR] [--compat] [--hash]";

#[derive(Debug, Default)]
struct Args {
    trackers: Vec<String>,
    identifier: String,
    send: Option<PathBuf>,
    receive: Option<PathBuf>,
    bind: Option<String>,
    compat: bool,
    hash: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--tracker" => args.trackers.push(value("--tracker")?),
            "--identifier" => args.identifier = value("--identifier")?,
            "--send" => args.send = Some(value("--send")?.into()),
            "--receive" => args.receive = Some(value("--receive")?.into()),
            "--bind" => args.bind = Some(value("--bind")?),
            "--compat" => args.compat = true,
            "--hash" => args.hash = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if args.trackers.is_empty() || args.identifier.is_empty() {
        return Err(USAGE.into());
    }
    if args.send.is_some() == args.receive.is_some() {
        return Err(format!("give exactly one of --send and --receive\n{USAGE}"));
    }
    Ok(args)
}

/// Redraws one progress line until the session ends; returns its final error, if any.
async fn progress(session: FileSession, label: &str) -> Result<(), String> {
    let started = Instant::now();
    let draw = |s: &FileSession| {
        let width = 30;
        let filled = (s.progress() * width as f64) as usize;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let rate = s.bytes() as f64 / secs / 1e6;
        eprint!(
            "\r{label} {} [{}{}] {:>5.1}% {:>8.1} MB/s {}",
            s.name(),
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            s.progress() * 100.0,
            rate,
            if s.fast_path() { "(fast path)" } else { "" },
        );
        let _ = std::io::stderr().flush();
    };
    let done = session.wait_until_complete();
    tokio::pin!(done);
    loop {
        tokio::select! {
            r = &mut done => {
                draw(&session);
                eprintln!();
                return r.map_err(|e| e.to_string());
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => draw(&session),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut builder = Mesh::builder(args.trackers.clone(), &args.identifier);
    if let Some(bind) = &args.bind {
        builder = builder.webrtc(WebRtcConfig::bound_to(&format!("{bind}:0")));
    }
    let mut mesh = match builder.start().await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("peer id {}; waiting for peers...", mesh.peer_id());
    let code = loop {
        let event = tokio::select! {
            e = mesh.next_event() => e,
            _ = tokio::signal::ctrl_c() => break 0,
        };
        match event {
            None => break 1,
            Some(MeshEvent::PeerConnected(peer)) => {
                eprintln!("peer connected {peer}");
                let Some(path) = &args.send else { continue };
                let options = FileOptions {
                    fast: !args.compat,
                    hash_upfront: args.hash,
                    ..FileOptions::default()
                };
                match mesh.send_file(&peer, FileSource::path(path), options).await {
                    Ok(session) => {
                        let r = progress(session, "sending").await;
                        match r {
                            Ok(()) => break 0,
                            Err(e) => {
                                eprintln!("transfer failed: {e}");
                                break 1;
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("cannot send: {e}");
                        break 1;
                    }
                }
            }
            Some(MeshEvent::File(session)) => {
                let Some(dir) = args.receive.clone() else {
                    continue;
                };
                tokio::spawn(async move {
                    let name = std::path::Path::new(session.name())
                        .file_name()
                        .map(|n| n.to_os_string())
                        .unwrap_or_else(|| session.transfer_id().into());
                    let target = dir.join(name);
                    match progress(session.clone(), "receiving").await {
                        Ok(()) => match session.save_to(&target).await {
                            Ok(()) => eprintln!("saved {}", target.display()),
                            Err(e) => eprintln!("cannot save {}: {e}", target.display()),
                        },
                        Err(e) => eprintln!("transfer failed: {e}"),
                    }
                });
            }
            Some(MeshEvent::TrackerWarning { url, message }) => eprintln!("{url}: {message}"),
            Some(MeshEvent::PeerWarning { peer, message }) => eprintln!("{peer}: {message}"),
            Some(_) => {}
        }
    };
    mesh.stop().await;
    std::process::exit(code);
}
