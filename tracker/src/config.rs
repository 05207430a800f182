//! Configuration: defaults, then a TOML file, then environment variables, then command-line
//! flags. Every key has one name in all three places (`max_offers` in the file,
//! `GHOSTMESH_TRACKER_MAX_OFFERS` in the environment, `--max-offers` on the command line) and
//! is documented once, in [`KEYS`]; `--print-config` prints them all with defaults and meaning.
//! Unknown keys are errors that name the key and where it came from.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::access::AccessMode;
use crate::swarm::CoreConfig;

/// Prefix of environment variables.
pub const ENV_PREFIX: &str = "GHOSTMESH_TRACKER_";

/// Every setting of the tracker. See [`KEYS`] for what each means.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Config {
    pub listen: String,
    pub metrics_listen: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub reload_interval_secs: f64,
    pub trusted_proxies: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allow_missing_origin: bool,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_message_bytes: usize,
    pub max_frame_bytes: usize,
    pub out_queue_messages: usize,
    pub out_queue_bytes: usize,
    pub idle_timeout_secs: f64,
    pub write_timeout_secs: f64,
    pub handshake_timeout_secs: f64,
    pub shutdown_grace_secs: f64,
    pub announce_interval_secs: u64,
    pub peer_timeout_secs: f64,
    pub offer_timeout_secs: f64,
    pub sweep_interval_secs: f64,
    pub max_offers: usize,
    pub max_peers_per_swarm: usize,
    pub max_swarms: usize,
    pub max_swarms_per_connection: usize,
    pub allow_full_scrape: bool,
    pub max_scrape_hashes: usize,
    pub access_list_mode: AccessMode,
    pub access_list_path: String,
    pub log_level: String,
    pub log_format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8000".into(),
            metrics_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            reload_interval_secs: 10.0,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            allow_missing_origin: true,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 64 * 1024,
            out_queue_messages: 64,
            out_queue_bytes: 256 * 1024,
            idle_timeout_secs: 300.0,
            write_timeout_secs: 10.0,
            handshake_timeout_secs: 10.0,
            shutdown_grace_secs: 10.0,
            announce_interval_secs: 120,
            peer_timeout_secs: 240.0,
            offer_timeout_secs: 50.0,
            sweep_interval_secs: 30.0,
            max_offers: 10,
            max_peers_per_swarm: 5000,
            max_swarms: 100_000,
            max_swarms_per_connection: 100,
            allow_full_scrape: true,
            max_scrape_hashes: 256,
            access_list_mode: AccessMode::Off,
            access_list_path: String::new(),
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// The type of a key's value, used to parse flags and environment variables and to check files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Str,
    /// Whole number >= 0.
    Int,
    /// Number of seconds, fractions allowed.
    Secs,
    /// true or false.
    Bool,
    /// List of strings (comma-separated in flags and environment).
    List,
    /// One of the given words.
    Choice(&'static [&'static str]),
}

/// One documented key.
#[derive(Debug)]
pub struct KeyDoc {
    /// Name in the file; flags use dashes, environment variables upper case with the prefix.
    pub key: &'static str,
    /// Value type.
    pub kind: Kind,
    /// What it does.
    pub help: &'static str,
}

const fn k(key: &'static str, kind: Kind, help: &'static str) -> KeyDoc {
    KeyDoc { key, kind, help }
}

/// Every key, in the order `--print-config` shows them.
pub const KEYS: &[KeyDoc] = &[
    k(
        "listen",
        Kind::Str,
        "Address for WebSocket clients (ws://, or wss:// with TLS). Port 0 picks a free port.",
    ),
    k(
        "metrics_listen",
        Kind::Str,
        "Separate address for /stats.json and /metrics; empty serves them on `listen`.",
    ),
    k(
        "tls_cert",
        Kind::Str,
        "PEM certificate chain; with tls_key, the tracker speaks wss:// (reloaded on change and on SIGHUP).",
    ),
    k(
        "tls_key",
        Kind::Str,
        "PEM private key (PKCS#8, PKCS#1 or SEC1) for tls_cert.",
    ),
    k(
        "reload_interval_secs",
        Kind::Secs,
        "How often to check TLS and access-list files for changes; 0 reloads only on SIGHUP.",
    ),
    k(
        "trusted_proxies",
        Kind::List,
        "Proxy addresses or CIDRs whose X-Forwarded-For is believed; others' is ignored.",
    ),
    k(
        "allowed_origins",
        Kind::List,
        "Origins (e.g. https://app.example) allowed to connect; empty allows any.",
    ),
    k(
        "allow_missing_origin",
        Kind::Bool,
        "With allowed_origins set: whether clients sending no Origin (Node, native) may connect.",
    ),
    k(
        "max_connections",
        Kind::Int,
        "WebSocket connections in total; more get HTTP 503.",
    ),
    k(
        "max_connections_per_ip",
        Kind::Int,
        "WebSocket connections per client address; more get HTTP 429.",
    ),
    k(
        "max_message_bytes",
        Kind::Int,
        "Largest message a client may send; larger ones get an error and close code 1009.",
    ),
    k(
        "max_frame_bytes",
        Kind::Int,
        "Largest WebSocket frame a client may send.",
    ),
    k(
        "out_queue_messages",
        Kind::Int,
        "Messages queued per connection. When full, relayed offers are dropped first (queued offers are evicted for replies); drops are counted.",
    ),
    k(
        "out_queue_bytes",
        Kind::Int,
        "Bytes queued per connection, with the same drop policy.",
    ),
    k(
        "idle_timeout_secs",
        Kind::Secs,
        "A connection that sends nothing (not even a ping) for this long is closed.",
    ),
    k(
        "write_timeout_secs",
        Kind::Secs,
        "A connection that cannot take a message for this long is closed as too slow.",
    ),
    k(
        "handshake_timeout_secs",
        Kind::Secs,
        "Time allowed for the TLS handshake and the HTTP upgrade request.",
    ),
    k(
        "shutdown_grace_secs",
        Kind::Secs,
        "On SIGTERM/SIGINT: time to let connections close cleanly before exiting.",
    ),
    k(
        "announce_interval_secs",
        Kind::Int,
        "`interval` told to clients: seconds between their announces.",
    ),
    k(
        "peer_timeout_secs",
        Kind::Secs,
        "A peer that has not announced for this long leaves its swarm (default 2x interval).",
    ),
    k(
        "offer_timeout_secs",
        Kind::Secs,
        "How long an answer to a relayed offer is accepted.",
    ),
    k(
        "sweep_interval_secs",
        Kind::Secs,
        "How often silent peers and expired offers are removed.",
    ),
    k(
        "max_offers",
        Kind::Int,
        "Offers relayed per announce at most (each to a distinct random peer); the rest are dropped.",
    ),
    k(
        "max_peers_per_swarm",
        Kind::Int,
        "Peers in one swarm at most; further announces get an error reply.",
    ),
    k("max_swarms", Kind::Int, "Swarms in total at most."),
    k(
        "max_swarms_per_connection",
        Kind::Int,
        "Swarm memberships (info_hash, peer_id pairs) one connection may hold.",
    ),
    k(
        "allow_full_scrape",
        Kind::Bool,
        "Whether a scrape without info_hash lists every swarm.",
    ),
    k(
        "max_scrape_hashes",
        Kind::Int,
        "info_hashes in one scrape request at most.",
    ),
    k(
        "access_list_mode",
        Kind::Choice(&["off", "allow", "deny"]),
        "off: any info_hash; allow: only those in access_list_path; deny: all but those.",
    ),
    k(
        "access_list_path",
        Kind::Str,
        "File of info_hashes, 40 hex digits a line, # comments (reloaded on change and on SIGHUP).",
    ),
    k(
        "log_level",
        Kind::Str,
        "Log filter: error, warn, info, debug, trace, or a tracing directive like ghostmesh_tracker=debug.",
    ),
    k(
        "log_format",
        Kind::Choice(&["text", "json"]),
        "Log line format on stderr.",
    ),
];

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the tracker.
    Run(Box<Config>),
    /// Print every key with its default and meaning.
    PrintConfig(Box<Config>),
    /// Probe a running tracker's /health (for container HEALTHCHECKs: scratch images have no shell).
    Healthcheck {
        /// URL to GET.
        url: String,
    },
    /// `--help` or `--version`: print this text and exit successfully.
    Info(String),
}

fn flag_name(key: &str) -> String {
    key.replace('_', "-")
}

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase())
}

fn cli() -> clap::Command {
    use clap::{Arg, ArgAction};
    let mut cmd = clap::Command::new("ghostmesh-tracker")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A WebTorrent-compatible WebSocket signalling tracker")
        .after_help(
            "Every option can also be set in the TOML file given by --config (same name, with \
             underscores) or in the environment (GHOSTMESH_TRACKER_ + name in upper case). \
             Precedence: flag > environment > file > default. --print-config lists them all.",
        )
        .arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .value_name("FILE")
                .help("TOML configuration file"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help(
                    "Print every key with its default value and meaning, as a TOML file, and exit",
                ),
        )
        .subcommand(
            clap::Command::new("healthcheck")
                .about("GET a running tracker's /health; exit 0 when it answers 200")
                .arg(Arg::new("url").help(
                    "Health URL. Default: /health where this configuration (--config, \
                     GHOSTMESH_TRACKER_* variables, the flags before `healthcheck`) serves \
                     it: metrics_listen if set, else listen (0.0.0.0 probed as 127.0.0.1)",
                )),
        );
    for kd in KEYS {
        cmd = cmd.arg(
            Arg::new(kd.key)
                .long(flag_name(kd.key))
                .value_name(match kd.kind {
                    Kind::Int => "N",
                    Kind::Secs => "SECS",
                    Kind::Bool => "BOOL",
                    Kind::List => "A,B",
                    _ => "VALUE",
                })
                .help(kd.help),
        );
    }
    cmd
}

/// Parses a flag or environment value according to its key's kind.
fn parse_value(kd: &KeyDoc, raw: &str, origin: &str) -> Result<toml::Value, String> {
    let bad = |what: &str| format!("{origin}: expected {what}, got {raw:?}");
    Ok(match kd.kind {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => toml::Value::Integer(
            raw.trim()
                .parse::<u64>()
                .map_err(|_| bad("a whole number >= 0"))?
                .try_into()
                .map_err(|_| bad("a smaller number"))?,
        ),
        Kind::Secs => {
            let v: f64 = raw.trim().parse().map_err(|_| bad("a number of seconds"))?;
            toml::Value::Float(v)
        }
        Kind::Bool => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("true or false")),
        }),
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Choice(words) => {
            if !words.contains(&raw.trim()) {
                return Err(bad(&format!("one of {}", words.join(", "))));
            }
            toml::Value::String(raw.trim().to_string())
        }
    })
}

/// Checks a value from the file against its key's kind; integers are accepted for seconds.
fn check_file_value(kd: &KeyDoc, v: toml::Value, origin: &str) -> Result<toml::Value, String> {
    let bad = |what: &str| format!("{origin}: key `{}`: expected {what}, got {v}", kd.key);
    match (kd.kind, &v) {
        (Kind::Str, toml::Value::String(_)) => Ok(v),
        (Kind::Int, toml::Value::Integer(i)) if *i >= 0 => Ok(v),
        (Kind::Int, _) => Err(bad("a whole number >= 0")),
        (Kind::Secs, toml::Value::Float(_)) => Ok(v),
        (Kind::Secs, toml::Value::Integer(i)) => Ok(toml::Value::Float(*i as f64)),
        (Kind::Secs, _) => Err(bad("a number of seconds")),
        (Kind::Bool, toml::Value::Boolean(_)) => Ok(v),
        (Kind::Bool, _) => Err(bad("true or false")),
        (Kind::List, toml::Value::Array(a)) if a.iter().all(toml::Value::is_str) => Ok(v),
        (Kind::List, _) => Err(bad("an array of strings")),
        (Kind::Choice(words), toml::Value::String(s)) if words.contains(&s.as_str()) => Ok(v),
        (Kind::Choice(words), _) => Err(bad(&format!("one of {}", words.join(", ")))),
        (Kind::Str, _) => Err(bad("a string")),
    }
}

fn key_doc(key: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|kd| kd.key == key)
}

fn unknown_key(key: &str, origin: &str) -> String {
    let close: Vec<&str> = KEYS
        .iter()
        .map(|kd| kd.key)
        .filter(|k| k.contains(key) || key.contains(k) || shares_words(k, key))
        .collect();
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", close.join(" or "))
    };
    format!("{origin}: unknown key `{key}`{hint}; --print-config lists every key")
}

fn shares_words(a: &str, b: &str) -> bool {
    let wa: Vec<&str> = a.split('_').filter(|w| w.len() > 3).collect();
    b.split('_')
        .filter(|w| w.len() > 3)
        .any(|w| wa.contains(&w))
}

impl Config {
    /// Parses the command line and environment, reading the config file if one is named.
    /// `args` includes the program name; `env` is every environment variable.
    pub fn from_args_env<I, T>(args: I, env: &[(String, String)]) -> Result<Command, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let m = match cli().try_get_matches_from(args) {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
            {
                return Ok(Command::Info(e.render().to_string()));
            }
            Err(e) => return Err(e.render().to_string()),
        };
        // `healthcheck URL` needs no configuration; without a URL the probe goes where the
        // configuration (file, environment, flags) serves /health.
        let derive_health_url = match m.subcommand() {
            Some(("healthcheck", sub)) => match sub.get_one::<String>("url") {
                Some(url) => return Ok(Command::Healthcheck { url: url.clone() }),
                None => true,
            },
            _ => false,
        };
        let mut table = toml::Table::new();
        let file = m.get_one::<String>("config").cloned().or_else(|| {
            env.iter()
                .find(|(k, _)| k == &format!("{ENV_PREFIX}CONFIG"))
                .map(|(_, v)| v.clone())
        });
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read config file {path}: {e}"))?;
            let parsed: toml::Table = text.parse().map_err(|e| format!("{path}: {e}"))?;
            for (key, v) in parsed {
                let kd = key_doc(&key).ok_or_else(|| unknown_key(&key, &path))?;
                table.insert(key, check_file_value(kd, v, &path)?);
            }
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            let key = rest.to_ascii_lowercase();
            let kd = key_doc(&key)
                .ok_or_else(|| unknown_key(&key, &format!("environment variable {name}")))?;
            table.insert(
                key,
                parse_value(kd, raw, &format!("environment variable {name}"))?,
            );
        }
        for kd in KEYS {
            if let Some(raw) = m.get_one::<String>(kd.key) {
                let origin = format!("--{}", flag_name(kd.key));
                table.insert(kd.key.to_string(), parse_value(kd, raw, &origin)?);
            }
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("invalid configuration: {e}"))?;
        if m.get_flag("print-config") {
            return Ok(Command::PrintConfig(Box::new(cfg)));
        }
        cfg.validate()?;
        if derive_health_url {
            return Ok(Command::Healthcheck {
                url: cfg.health_url()?,
            });
        }
        Ok(Command::Run(Box::new(cfg)))
    }

    /// Where this configuration answers plain-HTTP `GET /health`: on `metrics_listen` when set,
    /// else on `listen` unless that serves TLS. A wildcard address is probed on loopback.
    pub fn health_url(&self) -> Result<String, String> {
        let addr = match self.metrics_addr()? {
            Some(a) => a,
            None if !self.tls_cert.is_empty() => {
                return Err(
                    "healthcheck: `listen` serves TLS and metrics_listen is not set, so \
                            no port answers plain-HTTP /health; set metrics_listen or pass the \
                            URL (healthcheck http://HOST:PORT/health)"
                        .into(),
                );
            }
            None => self.listen_addr()?,
        };
        if addr.port() == 0 {
            return Err(format!(
                "healthcheck: the configured address {addr} has port 0 (chosen at start); pass \
                 the URL (healthcheck http://HOST:PORT/health)"
            ));
        }
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        Ok(format!(
            "http://{}/health",
            SocketAddr::new(ip, addr.port())
        ))
    }

    /// Checks values that cannot be checked one by one.
    pub fn validate(&self) -> Result<(), String> {
        self.listen_addr()?;
        self.metrics_addr()?;
        self.trusted_proxy_nets()?;
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err("tls_cert and tls_key must be set together".into());
        }
        if self.access_list_mode != AccessMode::Off && self.access_list_path.is_empty() {
            return Err(format!(
                "access_list_mode = {} needs access_list_path",
                self.access_list_mode
            ));
        }
        for (key, v) in [
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("peer_timeout_secs", self.peer_timeout_secs),
            ("offer_timeout_secs", self.offer_timeout_secs),
            ("sweep_interval_secs", self.sweep_interval_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e9) {
                return Err(format!(
                    "{key} must be a positive number of seconds, got {v}"
                ));
            }
        }
        for (key, v) in [
            ("shutdown_grace_secs", self.shutdown_grace_secs),
            ("reload_interval_secs", self.reload_interval_secs),
        ] {
            if !(v.is_finite() && (0.0..1e9).contains(&v)) {
                return Err(format!(
                    "{key} must be 0 or a positive number of seconds, got {v}"
                ));
            }
        }
        for (key, v) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_message_bytes", self.max_message_bytes),
            ("max_frame_bytes", self.max_frame_bytes),
            ("out_queue_messages", self.out_queue_messages),
            ("out_queue_bytes", self.out_queue_bytes),
            ("max_peers_per_swarm", self.max_peers_per_swarm),
            ("max_swarms", self.max_swarms),
            ("max_swarms_per_connection", self.max_swarms_per_connection),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.announce_interval_secs == 0 {
            return Err("announce_interval_secs must be at least 1".into());
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return Err(format!(
                "log_format must be text or json, got {:?}",
                self.log_format
            ));
        }
        Ok(())
    }

    /// `listen` parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen
            .parse()
            .map_err(|_| format!("listen: expected ADDRESS:PORT, got {:?}", self.listen))
    }

    /// `metrics_listen` parsed; `None` when empty.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|_| {
            format!(
                "metrics_listen: expected ADDRESS:PORT, got {:?}",
                self.metrics_listen
            )
        })
    }

    /// `trusted_proxies` parsed (single addresses become /32 or /128 networks).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("trusted_proxies: {s:?} is not an address or CIDR"))
            })
            .collect()
    }

    /// TLS files, when configured.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        (!self.tls_cert.is_empty())
            .then(|| (PathBuf::from(&self.tls_cert), PathBuf::from(&self.tls_key)))
    }

    /// The swarm core's part of the configuration.
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            announce_interval: Duration::from_secs(self.announce_interval_secs),
            peer_timeout: secs(self.peer_timeout_secs),
            offer_timeout: secs(self.offer_timeout_secs),
            max_offers: self.max_offers,
            max_peers_per_swarm: self.max_peers_per_swarm,
            max_swarms: self.max_swarms,
            max_swarms_per_connection: self.max_swarms_per_connection,
            allow_full_scrape: self.allow_full_scrape,
            max_scrape_hashes: self.max_scrape_hashes,
        }
    }

    /// The configuration as a commented TOML file: every key, its value, and what it means.
    pub fn to_documented_toml(&self) -> String {
        let table = toml::Table::try_from(self).unwrap_or_default();
        let mut out = String::from(
            "# ghostmesh-tracker configuration. Every key can also be given as a flag\n\
             # (--key-name) or an environment variable (GHOSTMESH_TRACKER_KEY_NAME).\n\n",
        );
        for kd in KEYS {
            out.push_str(&format!("# {}\n", kd.help));
            out.push_str(&format!(
                "# flag: --{}   env: {}\n",
                flag_name(kd.key),
                env_name(kd.key)
            ));
            let mut one = toml::Table::new();
            if let Some(v) = table.get(kd.key) {
                one.insert(kd.key.to_string(), v.clone());
            }
            out.push_str(&toml::to_string(&one).unwrap_or_default());
            out.push('\n');
        }
        out
    }
}

/// Seconds as a Duration (validated finite and non-negative beforehand).
pub fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut full = vec!["ghostmesh-tracker"];
        full.extend_from_slice(args);
        match Config::from_args_env(full, &env)? {
            Command::Run(c) | Command::PrintConfig(c) => Ok(*c),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn every_field_is_documented_and_every_documented_key_is_a_field() {
        let table = toml::Table::try_from(Config::default()).expect("serializes");
        for key in table.keys() {
            assert!(key_doc(key).is_some(), "field {key} has no KeyDoc");
        }
        for kd in KEYS {
            assert!(
                table.contains_key(kd.key),
                "KeyDoc {} is not a field",
                kd.key
            );
        }
        let printed = Config::default().to_documented_toml();
        let reparsed: Config =
            toml::from_str(&printed).expect("--print-config output is a valid config");
        assert_eq!(reparsed, Config::default());
    }

    #[test]
    fn precedence_is_flag_over_env_over_file_over_default() {
        let dir = std::env::temp_dir().join(format!("gm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("t.toml");
        std::fs::write(&file, "max_offers = 3\nmax_swarms = 7\nidle_timeout_secs = 2\nallowed_origins = [\"https://a\"]\n")
            .expect("write");
        let f = file.to_str().expect("utf8");
        let c = run(&["--config", f], &[]).expect("ok");
        assert_eq!(
            (c.max_offers, c.max_swarms, c.idle_timeout_secs),
            (3, 7, 2.0)
        );
        assert_eq!(c.allowed_origins, vec!["https://a".to_string()]);
        let c = run(&["--config", f], &[("GHOSTMESH_TRACKER_MAX_OFFERS", "4")]).expect("ok");
        assert_eq!((c.max_offers, c.max_swarms), (4, 7));
        let c = run(
            &["--config", f, "--max-offers", "5"],
            &[("GHOSTMESH_TRACKER_MAX_OFFERS", "4")],
        )
        .expect("ok");
        assert_eq!(c.max_offers, 5);
        std::fs::write(&file, "max_ofers = 3\n").expect("write");
        let e = run(&["--config", f], &[]).expect_err("unknown key");
        assert!(
            e.contains("unknown key `max_ofers`") && e.contains(f),
            "{e}"
        );
        std::fs::write(&file, "max_offers = \"ten\"\n").expect("write");
        let e = run(&["--config", f], &[]).expect_err("wrong type");
        assert!(
            e.contains("`max_offers`") && e.contains("whole number"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = run(&[], &[("GHOSTMESH_TRACKER_MAX_OFERS", "1")]).expect_err("unknown env");
        assert!(e.contains("GHOSTMESH_TRACKER_MAX_OFERS"), "{e}");
        let e = run(&["--max-offers", "x"], &[]).expect_err("bad int");
        assert!(e.contains("--max-offers"), "{e}");
        let e = run(&["--access-list-mode", "allow"], &[]).expect_err("needs path");
        assert!(e.contains("access_list_path"), "{e}");
        let e = run(&["--tls-cert", "a.pem"], &[]).expect_err("needs key");
        assert!(e.contains("tls_key"), "{e}");
        let e = run(&["--trusted-proxies", "10.0.0.0/8,nope"], &[]).expect_err("bad cidr");
        assert!(e.contains("nope"), "{e}");
        assert!(run(&["--bogus-flag", "1"], &[]).is_err());
    }
}
