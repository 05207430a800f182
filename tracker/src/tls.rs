//! TLS for wss://: PEM files loaded into a rustls config that can be swapped while running.
//! A reload that fails (missing file, bad PEM, key not matching) keeps the old certificate in
//! force and reports why; new connections pick up a new certificate, open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Loads a rustls server config from PEM files.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A TLS config that can be replaced while the server runs.
#[derive(Debug)]
pub struct ReloadableTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<ServerConfig>, Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadableTls {
    /// Loads the files once; fails if they are not usable.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let cfg = load_server_config(&cert, &key)?;
        let stamp = (mtime(&cert), mtime(&key));
        Ok(ReloadableTls {
            current: RwLock::new((Arc::new(cfg), stamp.0, stamp.1)),
            cert,
            key,
        })
    }

    /// The config for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Reloads the files. With `only_if_changed`, does nothing unless a file's mtime moved.
    /// Returns whether a new config is in force.
    pub fn reload(&self, only_if_changed: bool) -> Result<bool, String> {
        let stamp = (mtime(&self.cert), mtime(&self.key));
        if only_if_changed {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if (cur.1, cur.2) == stamp {
                return Ok(false);
            }
        }
        let cfg = load_server_config(&self.cert, &self.key);
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Remember the stamp even on failure, so a broken file is reported once, not every poll.
        cur.1 = stamp.0;
        cur.2 = stamp.1;
        cur.0 = Arc::new(cfg?);
        Ok(true)
    }
}
