//! `ghostmesh-tracker`: run a WebTorrent WebSocket tracker.
//!
//! Prints one line to stdout once listening (`ghostmesh-tracker listening on ws://ADDR`), so
//! scripts can start it on port 0 and read the address; logs go to stderr.
//! SIGTERM/SIGINT: graceful shutdown. SIGHUP: reload TLS files and the access list.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use ghostmesh_tracker::config::Command;
use ghostmesh_tracker::{Config, Tracker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cmd = match Config::from_args_env(std::env::args_os(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ghostmesh-tracker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghostmesh-tracker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cmd {
        Command::PrintConfig(cfg) => {
            print!("{}", cfg.to_documented_toml());
            ExitCode::SUCCESS
        }
        Command::Healthcheck { url } => rt.block_on(healthcheck(&url)),
        Command::Info(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Run(cfg) => {
            if let Err(e) = init_logging(&cfg) {
                eprintln!("ghostmesh-tracker: {e}");
                return ExitCode::from(2);
            }
            rt.block_on(run(*cfg))
        }
    }
}

fn init_logging(cfg: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .map_err(|e| format!("log_level {:?}: {e}", cfg.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let r = if cfg.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    r.map_err(|e| format!("logging: {e}"))
}

async fn run(cfg: Config) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            eprintln!("ghostmesh-tracker: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let tracker = match Tracker::start(cfg).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ghostmesh-tracker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ghostmesh-tracker listening on {}", tracker.ws_url());
    let _ = out.flush();
    drop(out);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                tracker.reload();
            }
        }
    }
    tracing::info!("signal received: shutting down");
    tracker.shutdown().await;
    ExitCode::SUCCESS
}

/// GET `url` (plain http only) and succeed on status 200. Used as the container HEALTHCHECK.
async fn healthcheck(url: &str) -> ExitCode {
    match probe(url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).to_string();
        if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(format!(
                "{url} answered {:?}",
                head.lines().next().unwrap_or("")
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("{url}: no answer within 5 s"))?
}
