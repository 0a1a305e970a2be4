//! Freshness and failure reporting for the sources: the discovery metrics, and logging that
//! says a thing once (a line when the kind of failure changes, a line when it recovers, `debug`
//! for the retries in between).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::http::{ErrorKind, FetchError};
use crate::metrics::metrics;

/// One failing thing of one source (`marathon` fetch, `marathon` event stream, `mesos` poll, …).
#[derive(Debug)]
pub struct Health {
    source: &'static str,
    what: &'static str,
    last: Mutex<Option<ErrorKind>>,
}

impl Health {
    pub fn new(source: &'static str, what: &'static str) -> Health {
        Health {
            source,
            what,
            last: Mutex::new(None),
        }
    }

    /// Counts a failure in `ferryman_discovery_errors_total` and logs it when its kind differs
    /// from the previous failure's.
    pub fn failure(&self, err: &FetchError) {
        let kind = err.kind();
        metrics()
            .discovery_errors
            .with_label_values(&[self.source, kind.as_str()])
            .inc();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last != Some(kind) {
            tracing::warn!(
                source = self.source,
                what = self.what,
                kind = kind.as_str(),
                error = %err,
                "discovery failing; keeping the last good state and retrying"
            );
            *last = Some(kind);
        } else {
            tracing::debug!(source = self.source, what = self.what, error = %err, "still failing");
        }
    }

    /// Logs the recovery, once, after failures.
    pub fn success(&self) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kind) = last.take() {
            tracing::info!(
                source = self.source,
                what = self.what,
                after = kind.as_str(),
                "discovery recovered"
            );
        }
    }

    /// True while the last outcome was a failure.
    pub fn failing(&self) -> bool {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// Records a fetch attempt's outcome: `fetches_total{result}`, its duration, and the last success
/// time.
pub fn fetch_done(source: &'static str, ok: bool, took: Duration) {
    let m = metrics();
    m.discovery_fetches
        .with_label_values(&[source, if ok { "ok" } else { "error" }])
        .inc();
    m.discovery_fetch_duration
        .with_label_values(&[source])
        .observe(took.as_secs_f64());
    if ok {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        m.discovery_last_success
            .with_label_values(&[source])
            .set(now);
    }
}
