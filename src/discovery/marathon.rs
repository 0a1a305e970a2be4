//! The Marathon source: `GET /v2/apps?embed=apps.tasks&embed=apps.readiness` for the full state,
//! and the `/v2/events` SSE stream for changes.
//!
//! `status_update_event` and `health_status_changed_event` are applied at once as patches to the
//! last state (see [`super::events`]); every event also schedules one coalesced, jittered full
//! re-fetch (200–700 ms after the first event of a burst, one more if events arrive while a
//! fetch is in flight), so a burst of a thousand events costs a handful of fetches. A stream that
//! is silent for `resync_after`, breaks or reconnects also causes a re-fetch. Several URLs fail
//! over and stick with the one that works. The main loop owns the publisher; the stream reader is
//! a tracked task that sends parsed events over a channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::{self, Backoff};
use super::events::{self, Effect, MarathonEvent};
use super::http::{FetchError, HttpClient};
use super::report::{Health, fetch_done};
use super::resolve::Resolver;
use super::sse::SseParser;
use super::{Error, Sink, Urls, decode};
use crate::config::Config;
use crate::metrics::metrics;
use crate::model::{ClusterState, Outcome, Snapshots, UpdateKind};

const SOURCE: &str = "marathon";
const APPS_PATH: &str = "/v2/apps?embed=apps.tasks&embed=apps.readiness";
/// Largest single SSE event (an `api_post_event` carries a whole app definition).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Events applied per batch before the loop looks at its other work.
const MAX_BATCH: usize = 4096;

fn events_path() -> String {
    let filter: Vec<String> = events::SUBSCRIBED
        .iter()
        .map(|t| format!("event_type={t}"))
        .collect();
    format!("/v2/events?{}", filter.join("&"))
}

/// What the stream task tells the main loop.
#[derive(Debug)]
enum StreamMsg {
    /// Connected (events may have been missed before): re-fetch.
    Connected,
    /// Events from one chunk; `None` for an event that did not parse.
    Events(Vec<Option<MarathonEvent>>),
    /// A keepalive comment: the stream is alive.
    Alive,
    /// The stream broke; the task reconnects with backoff.
    Broken,
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<ClusterState, FetchError>> + Send>>;

/// Runs the Marathon source until `token` is cancelled.
pub async fn run(
    config: Arc<Config>,
    mut sink: Sink,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<(), Error> {
    let cfg = &config.discovery;
    let urls = Arc::new(Urls::new("discovery.marathon", &cfg.marathon)?);
    let http = HttpClient::new(cfg);
    let fetcher = Arc::new(Fetcher {
        published: sink.snapshots(),
        http: http.clone(),
        urls: urls.clone(),
        resolver: Arc::new(Resolver::new()),
        health: Health::new(SOURCE, "fetch"),
        tracker: tracker.clone(),
    });
    let (tx, mut rx) = mpsc::channel(256);
    tracker.spawn(stream_task(http, urls, tx, token.clone()));

    let resync = cfg.resync_after;
    let mut next_fetch: Option<Instant> = Some(Instant::now());
    let mut inflight: Option<FetchFuture> = None;
    let mut again = false;
    let mut first = true;
    let mut retry = Backoff::default();
    let mut silence = Instant::now() + resync;

    loop {
        let fetching = inflight.is_some();
        let wake = next_fetch.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            result = poll_fetch(&mut inflight), if fetching => {
                inflight = None;
                let now = Instant::now();
                match result {
                    Ok(state) => {
                        retry.reset();
                        if sink.publish(Arc::new(state), UpdateKind::Full) == Outcome::Held {
                            // Held by the shrink guard: a second answer soon confirms or refutes.
                            again = true;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(source = SOURCE, error = %e, "full fetch failed on every URL");
                        if first {
                            sink.fall_back_to_state_file();
                        }
                        if !again {
                            next_fetch = Some(now + retry.next_delay());
                        }
                    }
                }
                first = false;
                if std::mem::take(&mut again) {
                    next_fetch = Some(now + backoff::coalesce_delay());
                }
            }
            _ = tokio::time::sleep_until(wake), if !fetching && next_fetch.is_some() => {
                next_fetch = None;
                inflight = Some(spawn_fetch(tracker, fetcher.clone(), token.clone()));
            }
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    // The stream task also stops on shutdown, possibly while this select was
                    // already past its cancellation branch.
                    if token.is_cancelled() {
                        break;
                    }
                    return Err(Error::TaskEnded { what: "marathon event stream" });
                };
                let mut batch = vec![msg];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                silence = Instant::now() + resync;
                if handle_batch(&mut sink, &fetcher.resolver, batch) {
                    schedule(&mut next_fetch, &mut again, fetching);
                }
            }
            _ = tokio::time::sleep_until(silence) => {
                tracing::debug!(source = SOURCE, "event stream silent; re-fetching");
                silence = Instant::now() + resync;
                schedule(&mut next_fetch, &mut again, fetching);
            }
        }
    }
    Ok(())
}

/// Runs one full fetch as its own task, so that receiving and collecting a large answer never
/// delays the loop's events; the loop only awaits the result.
fn spawn_fetch(
    tracker: &TaskTracker,
    fetcher: Arc<Fetcher>,
    token: CancellationToken,
) -> FetchFuture {
    let handle = tracker.spawn(async move {
        tokio::select! {
            _ = token.cancelled() => None,
            r = fetcher.fetch() => Some(r),
        }
    });
    Box::pin(async move {
        match handle.await {
            Ok(Some(result)) => result,
            Ok(None) => Err(FetchError::Invalid {
                url: "discovery.marathon".into(),
                detail: "cancelled by shutdown".into(),
            }),
            Err(e) => Err(FetchError::Invalid {
                url: "discovery.marathon".into(),
                detail: format!("fetch task failed: {e}"),
            }),
        }
    })
}

/// Awaits the fetch in flight (only polled when there is one).
async fn poll_fetch(inflight: &mut Option<FetchFuture>) -> Result<ClusterState, FetchError> {
    match inflight.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Schedules a coalesced re-fetch: one soon (jittered) unless one is already due soon; if a
/// fetch is in flight, one more after it.
fn schedule(next_fetch: &mut Option<Instant>, again: &mut bool, fetching: bool) {
    if fetching {
        *again = true;
        return;
    }
    let now = Instant::now();
    *next_fetch = Some(match *next_fetch {
        Some(t) if t <= now + backoff::COALESCE_MAX => t,
        _ => now + backoff::coalesce_delay(),
    });
}

/// Applies a batch of stream messages as one patch. Returns whether a re-fetch is due.
fn handle_batch(sink: &mut Sink, resolver: &Resolver, batch: Vec<StreamMsg>) -> bool {
    let mut refetch = false;
    let mut state = sink.last_state();
    let mut changed = false;
    let resolve = |h: &str| resolver.cached(h);
    for msg in batch {
        match msg {
            StreamMsg::Alive => {}
            StreamMsg::Connected | StreamMsg::Broken => refetch = true,
            StreamMsg::Events(evs) => {
                for ev in evs {
                    refetch = true;
                    let Some(ev) = ev else {
                        metrics().sse_events.with_label_values(&["unparsed"]).inc();
                        continue;
                    };
                    metrics()
                        .sse_events
                        .with_label_values(&[ev.metric_label()])
                        .inc();
                    let effect = events::apply(&mut state, &ev, &resolve);
                    if let MarathonEvent::StatusUpdate(su) = &ev {
                        tracing::debug!(
                            source = SOURCE,
                            task_id = %su.task_id,
                            app_id = su.app_id.as_deref().unwrap_or("-"),
                            status = %su.task_status,
                            ?effect,
                            "status update"
                        );
                    }
                    changed |= effect == Effect::Changed;
                }
            }
        }
    }
    if changed {
        sink.publish(state, UpdateKind::Patch);
    }
    refetch
}

// === impl Fetcher ===

struct Fetcher {
    /// Full answers are rebased onto the published state before they reach the loop.
    published: Snapshots,
    http: HttpClient,
    urls: Arc<Urls>,
    resolver: Arc<Resolver>,
    health: Health,
    tracker: TaskTracker,
}

impl Fetcher {
    /// One full fetch: each URL in failover order until one answers with a decodable state.
    async fn fetch(self: Arc<Self>) -> Result<ClusterState, FetchError> {
        let mut last = None;
        for (i, base) in self.urls.order() {
            let url = format!("{base}{APPS_PATH}");
            let started = std::time::Instant::now();
            let result = self.fetch_one(&url).await;
            fetch_done(SOURCE, result.is_ok(), started.elapsed());
            match result {
                Ok(mut state) => {
                    self.health.success();
                    self.urls.prefer(i);
                    self.resolver.fill_agents(&mut state).await;
                    return Ok(state);
                }
                Err(e) => {
                    self.health.failure(&e);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| FetchError::Invalid {
            url: "discovery.marathon".into(),
            detail: "no URL".into(),
        }))
    }

    async fn fetch_one(&self, url: &str) -> Result<ClusterState, FetchError> {
        let body = self.http.get(url, "application/json").await?;
        // Decoded and rebased off the loop: the answer shares every unchanged task and tree
        // node with the published state, so the loop's comparison and build are cheap.
        let base = self.published.load().state.clone();
        let decoded = self
            .tracker
            .spawn_blocking(move || {
                let state = decode::marathon_apps(&body)?;
                drop(body);
                Ok(state.shared_with(&base))
            })
            .await;
        match decoded {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(source)) => Err(FetchError::Decode {
                url: url.to_string(),
                source,
            }),
            Err(e) => Err(FetchError::Invalid {
                url: url.to_string(),
                detail: format!("decoder failed: {e}"),
            }),
        }
    }
}

// === stream task ===

/// Keeps one `/v2/events` stream open, reconnecting with backoff, failing over across URLs.
async fn stream_task(
    http: HttpClient,
    urls: Arc<Urls>,
    tx: mpsc::Sender<StreamMsg>,
    token: CancellationToken,
) {
    let health = Health::new(SOURCE, "event stream");
    let mut retry = Backoff::default();
    let path = events_path();
    loop {
        for (i, base) in urls.order() {
            let url = format!("{base}{path}");
            let opened = tokio::select! {
                _ = token.cancelled() => return,
                r = http.open_stream(&url, "text/event-stream") => r,
            };
            let body = match opened {
                Ok(b) => b,
                Err(e) => {
                    health.failure(&e);
                    continue;
                }
            };
            health.success();
            urls.prefer(i);
            tracing::debug!(source = SOURCE, url = %url, "event stream connected");
            if tx.send(StreamMsg::Connected).await.is_err() {
                return;
            }
            match read_stream(body, &url, &tx, &token).await {
                StreamEnd::Stop => return,
                StreamEnd::Broken { error, delivered } => {
                    health.failure(&error);
                    if delivered {
                        retry.reset();
                    }
                    if tx.send(StreamMsg::Broken).await.is_err() {
                        return;
                    }
                }
            }
            break;
        }
        let delay = retry.next_delay();
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

enum StreamEnd {
    /// Shutdown, or the main loop is gone.
    Stop,
    Broken {
        error: FetchError,
        delivered: bool,
    },
}

async fn read_stream(
    mut body: Incoming,
    url: &str,
    tx: &mpsc::Sender<StreamMsg>,
    token: &CancellationToken,
) -> StreamEnd {
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut delivered = false;
    let broken = |detail: String, delivered| StreamEnd::Broken {
        error: FetchError::Stream {
            url: url.to_string(),
            detail,
        },
        delivered,
    };
    loop {
        let frame = tokio::select! {
            _ = token.cancelled() => return StreamEnd::Stop,
            f = body.frame() => f,
        };
        let data = match frame {
            None => return broken("closed by the server".into(), delivered),
            Some(Err(e)) => return broken(super::http::error_chain(&e), delivered),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
        };
        let comments_before = parser.comments();
        let mut out = Vec::new();
        if let Err(e) = parser.push(&data, &mut out) {
            return broken(e.to_string(), delivered);
        }
        let msg = if out.is_empty() {
            if parser.comments() == comments_before {
                continue;
            }
            StreamMsg::Alive
        } else {
            delivered = true;
            let evs = out
                .iter()
                .map(|e| match events::parse(e) {
                    Ok(ev) => Some(ev),
                    Err(err) => {
                        tracing::debug!(source = SOURCE, error = %err, event = %e.event, "unparsable event; re-fetching instead");
                        None
                    }
                })
                .collect();
            StreamMsg::Events(evs)
        };
        if tx.send(msg).await.is_err() {
            return StreamEnd::Stop;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_path_filters_the_subscribed_types() {
        assert_eq!(
            events_path(),
            "/v2/events?event_type=status_update_event&event_type=health_status_changed_event&event_type=api_post_event"
        );
    }
}
