//! Accepting sockets, TLS, and the HTTP side: `/health`, `/stats.json`, `/metrics`, and the
//! WebSocket upgrade (any path: clients use `/`, `/announce` or anything else).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::Shared;
use crate::config::secs;

type Body = Full<Bytes>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Sockets beyond `max_connections` that may be mid-handshake or serving HTTP before the
/// listener stops accepting outright.
const SOCKET_SLACK: usize = 64;

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    serve_stats: bool,
    serve_ws: bool,
) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((tcp, remote)) => {
                // Only the client-facing listener is capped, so a flood there cannot lock
                // operators out of /health and /metrics on a separate metrics listener.
                if serve_ws {
                    let open = shared.sockets.fetch_add(1, Ordering::Relaxed);
                    if open >= shared.cfg.max_connections + SOCKET_SLACK {
                        shared.sockets.fetch_sub(1, Ordering::Relaxed);
                        shared.metrics.rejected("socket_limit");
                        continue;
                    }
                }
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve_socket(shared.clone(), tcp, remote, serve_stats, serve_ws).await;
                    if serve_ws {
                        shared.sockets.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_socket(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    serve_stats: bool,
    serve_ws: bool,
) {
    let handshake = secs(shared.cfg.handshake_timeout_secs);
    let io: Box<dyn Io> = match (&shared.tls, serve_ws) {
        (Some(tls), true) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    shared.metrics.rejected("tls_handshake");
                    return;
                }
                Err(_) => {
                    shared.metrics.rejected("tls_handshake_timeout");
                    return;
                }
            }
        }
        _ => Box::new(tcp),
    };
    let svc_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(route(shared, remote, serve_stats, serve_ws, req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::trace!(%remote, error = %e, "HTTP connection ended with an error");
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn route(
    shared: Arc<Shared>,
    remote: SocketAddr,
    serve_stats: bool,
    serve_ws: bool,
    req: Request<Incoming>,
) -> Response<Body> {
    if serve_ws && is_upgrade(req.headers()) {
        return upgrade(shared, remote, req);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/health" => {
            if *shared.shutdown.borrow() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                text(StatusCode::OK, "ok\n")
            }
        }
        "/stats.json" if serve_stats => {
            let mut r = Response::new(Full::new(Bytes::from(stats_json(&shared))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        "/metrics" if serve_stats => {
            shared.observe();
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/" if serve_ws => text(
            StatusCode::OK,
            "ghostmesh-tracker: a WebTorrent WebSocket tracker. Point clients at this address with \
             ws:// or wss://. /health, /stats.json and /metrics report its state.\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::UPGRADE, "websocket") && has_token(header::CONNECTION, "upgrade")
}

/// The client's address: the socket peer, or, when that peer is a trusted proxy, the rightmost
/// X-Forwarded-For entry that is not itself a trusted proxy.
pub(super) fn client_ip(remote: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let remote = canonical(remote);
    if !is_trusted(&remote) {
        return remote;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(remote)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn upgrade(shared: Arc<Shared>, remote: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut r = text(StatusCode::BAD_REQUEST, "WebSocket version 13 required\n");
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let cfg = &shared.cfg;
    if !cfg.allowed_origins.is_empty() {
        let ok = match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => cfg.allow_missing_origin,
            Some(o) => cfg
                .allowed_origins
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(o)),
        };
        if !ok {
            shared.metrics.rejected("origin");
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let ip = client_ip(remote.ip(), h, &shared.trusted);
    let slot = match super::conn::Slot::reserve(&shared, ip) {
        Ok(s) => s,
        Err((status, why, msg)) => {
            shared.metrics.rejected(why);
            return text(status, msg);
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => super::conn::run(shared, slot, TokioIo::new(upgraded), ip).await,
            Err(e) => tracing::debug!(%remote, error = %e, "upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hm = r.headers_mut();
    hm.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hm.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hm.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

fn stats_json(shared: &Shared) -> String {
    shared.observe();
    let (st, c) = shared.core_stats();
    let top = shared.lock_core().core.top_swarms(10);
    let m = &shared.metrics;
    let drops: serde_json::Map<String, serde_json::Value> = crate::metrics::Drop::ALL
        .iter()
        .map(|d| (d.as_str().to_string(), m.drops(*d).into()))
        .collect();
    let core_events: serde_json::Map<String, serde_json::Value> =
        crate::metrics::core_counter_pairs(&c)
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
    let kinds = |f: &dyn Fn(&'static str) -> u64, names: &[&'static str]| -> serde_json::Value {
        names
            .iter()
            .map(|n| (n.to_string(), serde_json::Value::from(f(n))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": shared.started.elapsed().as_secs(),
        "connections": shared.ws_count.load(Ordering::Relaxed),
        "swarms": st.swarms,
        "peers": st.peers,
        "seeders": st.seeders,
        "leechers": st.leechers,
        "pending_offers": st.pending_offers,
        "memory": { "rss_bytes": crate::metrics::resident_memory_bytes() },
        "drops": drops,
        "events": core_events,
        "requests": kinds(&|k| m.requests(k), &["announce", "answer", "scrape", "invalid"]),
        "responses": kinds(&|k| m.responses(k), &["announce", "offer", "answer", "scrape", "error"]),
        "rejected_connections": kinds(&|k| m.rejections(k), &["max_connections", "max_connections_per_ip", "origin", "socket_limit", "tls_handshake", "tls_handshake_timeout"]),
        "closed_connections": kinds(&|k| m.closes(k), &["client", "idle", "slow", "too_big", "protocol_error", "shutdown"]),
        "top_swarms": top.iter().map(|(h, c)| serde_json::json!({
            "info_hash": h.to_hex(), "complete": c.complete, "incomplete": c.incomplete, "downloaded": c.downloaded,
        })).collect::<Vec<_>>(),
    });
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.1.1.1"),
        );
        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let outsider: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(outsider, &h, &trusted), outsider);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().expect("ip");
        assert_eq!(
            client_ip(mapped, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
    }
}
