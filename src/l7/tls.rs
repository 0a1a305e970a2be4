//! Certificates for the TLS listener. SKELETON: owned by the tls helper.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::L7TlsConfig;

#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsError {
    /// The config key (`l7.tls.cert`, `l7.tls.dir`).
    pub key: &'static str,
    pub reason: String,
}

/// The certificate store (cheap to clone).
#[derive(Clone)]
pub struct Certs {}

impl Certs {
    pub fn new(config: &L7TlsConfig) -> Result<Certs, TlsError> {
        let _ = config;
        Ok(Certs {})
    }

    /// Whether a `HAPROXY_{n}_SSL_CERT` file can be served (loads and caches it).
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let _ = path;
        Ok(())
    }

    /// The label certificates now in use (besides `[l7.tls]`'s).
    pub fn set_label_certs(&self, paths: Vec<PathBuf>) {
        let _ = paths;
    }

    /// The rustls configuration of the TLS listener.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        unimplemented!()
    }
}
