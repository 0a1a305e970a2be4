//! The Mesos source: `GET {url}/master/state` every `poll_interval`.
//!
//! A master that is not the leader says so: its `pid` (`master@IP:PORT`) differs from `leader`.
//! Then the leader is asked instead and remembered, until it fails. Redirects (`307` to
//! `//leader:5050/master/state`, as newer masters answer) are followed by the HTTP client. Several
//! URLs fail over. Errors keep the last good state and retry with backoff.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;
use super::http::{FetchError, HttpClient};
use super::report::{Health, fetch_done};
use super::resolve::Resolver;
use super::{Error, Sink, Urls, decode};
use crate::config::Config;
use crate::model::{ClusterState, UpdateKind};

const SOURCE: &str = "mesos";
const STATE_PATH: &str = "/master/state";
/// Leader hops followed in one poll.
const MAX_HOPS: usize = 2;

/// The leadership fields of a `/master/state` answer.
#[derive(Debug, Default, Deserialize)]
struct Leadership {
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    leader: Option<String>,
}

/// `master@10.0.0.1:5050` → `10.0.0.1:5050`.
fn pid_addr(pid: &str) -> Option<SocketAddr> {
    pid.rsplit_once('@')?.1.parse().ok()
}

/// Runs the Mesos source until `token` is cancelled.
pub async fn run(
    config: Arc<Config>,
    mut sink: Sink,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<(), Error> {
    let cfg = &config.discovery;
    let poller = Poller {
        http: HttpClient::new(cfg),
        urls: Urls::new("discovery.mesos", &cfg.mesos)?,
        resolver: Resolver::new(),
        health: Health::new(SOURCE, "poll"),
        tracker: tracker.clone(),
    };
    let mut leader: Option<String> = None;
    let mut retry = Backoff::default();
    let mut first = true;
    loop {
        let result = tokio::select! {
            _ = token.cancelled() => break,
            r = poller.poll(&mut leader) => r,
        };
        let delay = match result {
            Ok(state) => {
                retry.reset();
                sink.publish(Arc::new(state), UpdateKind::Full);
                cfg.poll_interval
            }
            Err(e) => {
                tracing::debug!(source = SOURCE, error = %e, "poll failed on every URL");
                if first {
                    sink.fall_back_to_state_file();
                }
                retry
                    .next_delay()
                    .min(cfg.poll_interval.max(super::backoff::BASE))
            }
        };
        first = false;
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

struct Poller {
    http: HttpClient,
    urls: Urls,
    resolver: Resolver,
    health: Health,
    tracker: TaskTracker,
}

impl Poller {
    /// One poll: the remembered leader first, then the configured URLs in failover order.
    async fn poll(&self, leader: &mut Option<String>) -> Result<ClusterState, FetchError> {
        let mut last = None;
        let mut candidates: Vec<(Option<usize>, String)> = Vec::new();
        if let Some(l) = leader.take() {
            candidates.push((None, l));
        }
        candidates.extend(self.urls.order().into_iter().map(|(i, u)| (Some(i), u)));
        for (index, base) in candidates {
            match self.from(&base).await {
                Ok((state, answered_by)) => {
                    if let Some(i) = index {
                        self.urls.prefer(i);
                    }
                    *leader = answered_by;
                    let mut state = state;
                    self.resolver.fill_agents(&mut state).await;
                    return Ok(state);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| FetchError::Invalid {
            url: "discovery.mesos".into(),
            detail: "no URL".into(),
        }))
    }

    /// Asks `base`, following the leader it names. Returns the state and, when it came from a
    /// leader other than `base`, that leader's base URL.
    async fn from(&self, base: &str) -> Result<(ClusterState, Option<String>), FetchError> {
        let mut base = base.to_string();
        let mut followed = None;
        for _ in 0..=MAX_HOPS {
            let url = format!("{base}{STATE_PATH}");
            let started = std::time::Instant::now();
            let result = self.fetch_one(&url).await;
            let ok = matches!(result, Ok(Answer::State(_)) | Ok(Answer::Leader(_)));
            fetch_done(SOURCE, ok, started.elapsed());
            match result {
                Ok(Answer::State(state)) => {
                    self.health.success();
                    return Ok((state, followed));
                }
                Ok(Answer::Leader(addr)) => {
                    let next = format!("http://{addr}");
                    tracing::debug!(source = SOURCE, from = %base, leader = %next, "following the leading master");
                    followed = Some(next.clone());
                    base = next;
                }
                Err(e) => {
                    self.health.failure(&e);
                    return Err(e);
                }
            }
        }
        let e = FetchError::Invalid {
            url: base,
            detail: format!("leader still elsewhere after {MAX_HOPS} hops"),
        };
        self.health.failure(&e);
        Err(e)
    }

    async fn fetch_one(&self, url: &str) -> Result<Answer, FetchError> {
        let body = self.http.get(url, "application/json").await?;
        let u = url.to_string();
        let decoded = self
            .tracker
            .spawn_blocking(move || -> Result<Answer, FetchError> {
                let lead: Leadership =
                    serde_json::from_slice(&body).map_err(|e| FetchError::Decode {
                        url: u.clone(),
                        source: decode::DecodeError::Json(e),
                    })?;
                let leader = lead.leader.as_deref().and_then(pid_addr);
                let me = lead.pid.as_deref().and_then(pid_addr);
                match (me, leader) {
                    (_, None) if lead.leader.is_none() => Err(FetchError::Invalid {
                        url: u,
                        detail: "the master knows no leader".into(),
                    }),
                    (Some(me), Some(leader)) if me != leader => Ok(Answer::Leader(leader)),
                    _ => decode::mesos_state(&body)
                        .map(Answer::State)
                        .map_err(|source| FetchError::Decode { url: u, source }),
                }
            })
            .await;
        decoded.unwrap_or_else(|e| {
            Err(FetchError::Invalid {
                url: url.to_string(),
                detail: format!("decoder failed: {e}"),
            })
        })
    }
}

enum Answer {
    State(ClusterState),
    Leader(SocketAddr),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse() {
        assert_eq!(
            pid_addr("master@10.0.7.22:5050"),
            Some("10.0.7.22:5050".parse().unwrap())
        );
        assert_eq!(pid_addr("master@host:5050"), None);
        assert_eq!(pid_addr("nonsense"), None);
    }
}
