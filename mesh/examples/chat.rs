//! A terminal chat over a GhostMesh/P2PT swarm.
//!
//! ```sh
//! cargo run -p ghostmesh-tracker -- --listen 127.0.0.1:8000          # terminal 1
//! cargo run -p ghostmesh --example chat -- --tracker ws://127.0.0.1:8000 --identifier room
//! cargo run -p ghostmesh --example chat -- --tracker ws://127.0.0.1:8000 --identifier room
//! ```
//!
//! Prints `peer connected <id>`, `peer closed <id>` and `<id>: <text>` lines on stdout; every
//! line typed on stdin goes to every connected peer. Incoming messages are answered with `"ok"`
//! (so a P2PT peer's `send()` promise resolves). End of input (Ctrl-D) or Ctrl-C leaves the
//! swarm cleanly.
//!
//! Flags: `--tracker URL` (repeatable, required), `--identifier NAME` (required),
//! `--bind ADDR` (bind WebRTC to this address, e.g. `127.0.0.1`; default: all interfaces),
//! `--reply ok|echo` (answer with `"ok"` (default) or with the message itself),
//! `--request-timeout SECS` (default 30), `--json` (machine mode, below).
//!
//! Machine mode (`--json`, used by `interop/rust-p2pt.mjs`): one JSON object per stdout line:
//! `{"event":"ready","id":ME}`, `{"event":"tracker","url":U}`, `{"event":"warning","url":U,
//! "message":M}`, `{"event":"peer","id":ID}`, `{"event":"closed","id":ID}`,
//! `{"event":"msg","from":ID,"payload":P}`, `{"event":"response","to":ID,"payload":P}`,
//! `{"event":"error","to":ID,"error":E}`, `{"event":"stopped"}`. Commands on stdin, one per
//! line: `{"send":{"to":ID,"payload":P}}`. A string `P` travels as text, anything else as JSON
//! (`o:1`), as P2PT does.
//!
//! Limitation: [`Mesh::send`] borrows the mesh until its response arrives and
//! [`Mesh::next_event`] needs it mutably, so one task cannot wait for a response and read
//! events at the same time. Machine mode therefore waits for each response before reading the
//! next event or command (events stay queued meanwhile; fine for the lock-step interop script).
//! Human mode sends with [`Mesh::send_no_reply`] and neither shows nor answers a message that is
//! exactly `"ok"` (another chat's acknowledgement; answering it would ping-pong forever).

use std::io::{BufRead, Write};
use std::time::Duration;

use ghostmesh::mesh::{Mesh, MeshEvent};
use ghostmesh::transport::webrtc::WebRtcConfig;
use ghostmesh::wire::Payload;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Debug)]
struct Args {
    trackers: Vec<String>,
    identifier: String,
    bind: Option<String>,
    echo: bool,
    json: bool,
    request_timeout: Duration,
}

const USAGE: &str = "usage: chat --tracker URL [--tracker URL ...] --identifier NAME \
                     [--bind ADDR] [--reply ok|echo] [--request-timeout SECS] [--json]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        trackers: Vec::new(),
        identifier: String::new(),
        bind: None,
        echo: false,
        json: false,
        request_timeout: Duration::from_secs(30),
    };
    let mut identifier = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--tracker" => args.trackers.push(value("--tracker")?),
            "--identifier" => identifier = Some(value("--identifier")?),
            "--bind" => args.bind = Some(value("--bind")?),
            "--reply" => match value("--reply")?.as_str() {
                "ok" => args.echo = false,
                "echo" => args.echo = true,
                other => return Err(format!("--reply: expected ok or echo, got {other}")),
            },
            "--request-timeout" => {
                let secs: u64 = value("--request-timeout")?
                    .parse()
                    .map_err(|e| format!("--request-timeout: {e}"))?;
                args.request_timeout = Duration::from_secs(secs);
            }
            "--json" => args.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    args.identifier = identifier.ok_or("--identifier is required")?;
    if args.trackers.is_empty() {
        return Err("--tracker is required".into());
    }
    Ok(args)
}

/// One machine-mode line on stdout, flushed at once.
fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn payload_to_json(payload: &Payload) -> Value {
    match payload {
        Payload::Text(text) => Value::String(text.clone()),
        Payload::Json(value) => value.clone(),
    }
}

fn json_to_payload(value: Value) -> Payload {
    match value {
        Value::String(text) => Payload::Text(text),
        other => Payload::Json(other),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("chat: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    // `--bind 127.0.0.1` or `--bind 127.0.0.1:0` (an IP without a port gets port 0).
    let webrtc = match &args.bind {
        Some(addr) if addr.parse::<std::net::SocketAddr>().is_ok() => WebRtcConfig::bound_to(addr),
        Some(addr) if addr.contains(':') => WebRtcConfig::bound_to(&format!("[{addr}]:0")),
        Some(addr) => WebRtcConfig::bound_to(&format!("{addr}:0")),
        None => WebRtcConfig::default(),
    };
    let mut mesh = match Mesh::builder(args.trackers.clone(), &args.identifier)
        .webrtc(webrtc)
        .request_timeout(args.request_timeout)
        .start()
        .await
    {
        Ok(mesh) => mesh,
        Err(e) => {
            eprintln!("chat: cannot start: {e}");
            std::process::exit(1);
        }
    };
    if args.json {
        emit(json!({"event": "ready", "id": mesh.peer_id()}));
    } else {
        say(&format!("me {}", mesh.peer_id()));
    }

    // Tokio has no `io-std` feature here: read stdin on a plain thread.
    let (lines_tx, mut lines) = mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
        // Dropping the sender tells the main loop about end of input.
    });

    let mut peers: Vec<String> = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            line = lines.recv() => {
                let Some(line) = line else { break };
                if args.json {
                    command(&mesh, &line).await;
                } else if !line.trim().is_empty() {
                    for peer in &peers {
                        if let Err(e) = mesh.send_no_reply(peer, Payload::Text(line.clone())).await {
                            eprintln!("chat: send to {peer} failed: {e}");
                        }
                    }
                    if peers.is_empty() {
                        eprintln!("chat: nobody connected yet");
                    }
                }
            }
            event = mesh.next_event() => {
                let Some(event) = event else { break };
                match event {
                    MeshEvent::PeerConnected(id) => {
                        if args.json {
                            emit(json!({"event": "peer", "id": id}));
                        } else {
                            say(&format!("peer connected {id}"));
                        }
                        peers.push(id);
                    }
                    MeshEvent::PeerClosed(id) => {
                        if args.json {
                            emit(json!({"event": "closed", "id": id}));
                        } else {
                            say(&format!("peer closed {id}"));
                        }
                        peers.retain(|p| p != &id);
                    }
                    MeshEvent::Message { peer, payload, handle } => {
                        if args.json {
                            emit(json!({"event": "msg", "from": peer, "payload": payload_to_json(&payload)}));
                        } else if payload == Payload::Text("ok".into()) {
                            // Another chat's answer to our send_no_reply: neither shown nor answered.
                            continue;
                        } else {
                            say(&format!("{peer}: {}", payload.msg_text()));
                        }
                        let reply = if args.echo { payload } else { Payload::Text("ok".into()) };
                        if mesh.respond(handle, reply).await.is_err() {
                            eprintln!("chat: cannot respond to {peer}");
                        }
                    }
                    MeshEvent::TrackerConnected { url } => {
                        if args.json {
                            emit(json!({"event": "tracker", "url": url}));
                        } else {
                            eprintln!("chat: tracker {url} connected");
                        }
                    }
                    MeshEvent::TrackerWarning { url, message } => {
                        if args.json {
                            emit(json!({"event": "warning", "url": url, "message": message}));
                        } else {
                            eprintln!("chat: tracker {url}: {message}");
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    mesh.stop().await;
    if args.json {
        emit(json!({"event": "stopped"}));
    }
    // The stdin thread may still block in read(); do not wait for it.
    std::process::exit(0);
}

/// Runs one machine-mode command line.
async fn command(mesh: &Mesh, line: &str) {
    let parsed: Result<Value, _> = serde_json::from_str(line);
    let Some(send) = parsed
        .ok()
        .and_then(|mut v| v.get_mut("send").map(Value::take))
    else {
        emit(json!({"event": "error", "error": format!("bad command: {line}")}));
        return;
    };
    let (Some(to), Some(payload)) = (
        send.get("to").and_then(Value::as_str).map(str::to_owned),
        send.get("payload").cloned(),
    ) else {
        emit(json!({"event": "error", "error": "send needs \"to\" and \"payload\""}));
        return;
    };
    match mesh.send(&to, json_to_payload(payload)).await {
        Ok(response) => {
            emit(json!({"event": "response", "to": to, "payload": payload_to_json(&response)}))
        }
        Err(e) => emit(json!({"event": "error", "to": to, "error": e.to_string()})),
    }
}
