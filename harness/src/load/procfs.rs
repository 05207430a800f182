//! What the bench reads about the tracker from outside: its process (RSS, CPU time) through
//! `/proc`, and its own counters through `/stats.json`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Memory and CPU of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS), bytes.
    pub hwm: u64,
    /// utime + stime, in clock ticks (100 per second on Linux).
    pub cpu_ticks: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ; 100 on every mainstream Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `None` when the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): state is field 3,
    // utime 14 and stime 15, i.e. 11 and 12 after the state.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss: kb("VmRSS:")?,
        hwm: kb("VmHWM:").unwrap_or(0),
        cpu_ticks: utime + stime,
    })
}

/// The pid of the process listening on TCP `port` (any local address), found through
/// `/proc/net/tcp{,6}` and the socket links in `/proc/*/fd`. Bounded: one pass over the
/// process table.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT", st 0A is LISTEN, inode is field 9.
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if p == Some(port) && *st == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The tracker's own counters, from `/stats.json` (ours) or from the embedded tracker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerCounters {
    /// Requests by kind.
    pub requests: BTreeMap<String, u64>,
    /// Responses by kind (messages queued for clients).
    pub responses: BTreeMap<String, u64>,
    /// Drops by reason.
    pub drops: BTreeMap<String, u64>,
    /// Open WebSocket connections.
    pub connections: u64,
    /// RSS the tracker reports for itself.
    pub rss_bytes: Option<u64>,
}

impl ServerCounters {
    /// Parses a `/stats.json` body.
    pub fn from_stats_json(body: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("stats.json: {e}"))?;
        let map = |key: &str| -> BTreeMap<String, u64> {
            v.get(key)
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        if v.get("responses").is_none() {
            return Err("stats.json has no \"responses\" object".into());
        }
        Ok(ServerCounters {
            requests: map("requests"),
            responses: map("responses"),
            drops: map("drops"),
            connections: v.get("connections").and_then(|c| c.as_u64()).unwrap_or(0),
            rss_bytes: v
                .get("memory")
                .and_then(|m| m.get("rss_bytes"))
                .and_then(|r| r.as_u64()),
        })
    }

    /// `self - earlier` for every counter (gauges keep `self`'s value).
    pub fn since(&self, earlier: &ServerCounters) -> ServerCounters {
        let d = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*b.get(k).unwrap_or(&0))))
                .collect()
        };
        ServerCounters {
            requests: d(&self.requests, &earlier.requests),
            responses: d(&self.responses, &earlier.responses),
            drops: d(&self.drops, &earlier.drops),
            connections: self.connections,
            rss_bytes: self.rss_bytes,
        }
    }

    /// Sum of a map.
    pub fn total(m: &BTreeMap<String, u64>) -> u64 {
        m.values().sum()
    }
}

/// `GET http://addr/path` with a 2 s deadline and a 4 MiB cap; returns the body of a 200.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<String, String> {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        (&mut s)
            .take(4 << 20)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| "not an HTTP response".to_string())?;
        let status = head.lines().next().unwrap_or("");
        if !status.contains(" 200") {
            return Err(format!("HTTP status: {status}"));
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), go)
        .await
        .map_err(|_| format!("GET http://{addr}{path}: no answer within 2 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_sample() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss > 0);
        assert!(s.hwm >= s.rss / 2);
    }

    #[test]
    fn stats_json_parses_and_subtracts() {
        let a = ServerCounters::from_stats_json(
            r#"{"connections":3,"responses":{"announce":10,"offer":5},"requests":{"announce":10},"drops":{"offer_queue_full":1},"memory":{"rss_bytes":1000}}"#,
        )
        .expect("parses");
        let b = ServerCounters::from_stats_json(
            r#"{"connections":4,"responses":{"announce":15,"offer":9},"requests":{"announce":16},"drops":{"offer_queue_full":1},"memory":{"rss_bytes":2000}}"#,
        )
        .expect("parses");
        let d = b.since(&a);
        assert_eq!(d.responses["announce"], 5);
        assert_eq!(d.responses["offer"], 4);
        assert_eq!(d.drops["offer_queue_full"], 0);
        assert_eq!(d.rss_bytes, Some(2000));
        assert!(ServerCounters::from_stats_json("{}").is_err());
    }
}
