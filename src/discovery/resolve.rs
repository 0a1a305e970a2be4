//! Agent hostname resolution for sources that report agents by name (Marathon task `host`).
//!
//! Resolved here, asynchronously (`tokio::net::lookup_host`) with a per-name timeout and a TTL
//! cache (failures cached for a shorter time), and written into `Agent.ip` before the state is
//! published; `Snapshot::build` never resolves. IPv4 answers are preferred, as agents register
//! with their IPv4 address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::model::ClusterState;

/// How long a resolved address is reused.
pub const TTL: Duration = Duration::from_secs(60);
/// How long a failed look-up is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(15);
/// One look-up's limit.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Look-ups in flight at once.
const CONCURRENCY: usize = 16;

#[derive(Debug, Default)]
pub struct Resolver {
    cache: Mutex<HashMap<String, (Option<IpAddr>, Instant)>>,
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// The cached answer for `host`, if fresh (never waits).
    pub fn cached(&self, host: &str) -> Option<IpAddr> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(host)
            .filter(|(_, expires)| *expires > Instant::now())
            .and_then(|(ip, _)| *ip)
    }

    fn fresh(&self, host: &str) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(host)
            .is_some_and(|(_, expires)| *expires > Instant::now())
    }

    /// Resolves `host` (a name, not an IP literal), through the cache.
    pub async fn resolve(&self, host: &str) -> Option<IpAddr> {
        if self.fresh(host) {
            return self.cached(host);
        }
        let answer =
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0u16))).await
            {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    addrs
                        .iter()
                        .find(|ip| ip.is_ipv4())
                        .or(addrs.first())
                        .copied()
                }
                Ok(Err(e)) => {
                    tracing::debug!(host, error = %e, "agent hostname does not resolve");
                    None
                }
                Err(_) => {
                    tracing::debug!(host, "agent hostname look-up timed out");
                    None
                }
            };
        let ttl = if answer.is_some() { TTL } else { NEGATIVE_TTL };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (_, expires)| *expires > Instant::now());
        cache.insert(host.to_string(), (answer, Instant::now() + ttl));
        answer
    }

    /// Fills `ip` of every agent that has a hostname but no IP. An IP-literal hostname is parsed,
    /// never looked up.
    pub async fn fill_agents(&self, state: &mut ClusterState) {
        let wanted: Vec<(String, String)> = state
            .agents
            .values()
            .filter(|a| a.ip.is_none() && !a.hostname.is_empty())
            .map(|a| (a.id.clone(), a.hostname.clone()))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let answers: Vec<(String, Option<IpAddr>)> = futures_util::stream::iter(wanted)
            .map(|(id, host)| async move {
                let ip = match host.parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => self.resolve(&host).await,
                };
                (id, ip)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (id, ip) in answers {
            if let (Some(agent), Some(ip)) = (state.agents.get_mut(&id), ip) {
                agent.ip = Some(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Agent;

    #[tokio::test]
    async fn fills_literal_and_localhost_and_caches() {
        let r = Resolver::new();
        let mut s = ClusterState::default();
        for (id, host) in [("a", "10.1.2.3"), ("b", "localhost"), ("c", "")] {
            s.agents.insert(
                id.into(),
                Agent {
                    id: id.into(),
                    hostname: host.into(),
                    ..Default::default()
                },
            );
        }
        r.fill_agents(&mut s).await;
        assert_eq!(s.agents["a"].ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(s.agents["b"].ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.agents["c"].ip, None);
        assert_eq!(r.cached("localhost"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(r.cached("10.1.2.3"), None, "literals are not cached");
    }
}
