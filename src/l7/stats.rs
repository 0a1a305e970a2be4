//! Per-backend L7 statistics: Prometheus families in `/metrics` and HAProxy's CSV for
//! `/haproxy?stats;csv` (Marathon-LB's `zdd.py` reads it). SKELETON: owned by the stats helper.

use std::sync::Arc;

use super::Table;

/// The process's L7 statistics (cheap to clone).
#[derive(Clone, Default)]
pub struct Stats {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {}

/// Counters of one Marathon-LB backend (by name), kept across route tables.
#[derive(Default)]
pub struct BackendStats {}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    /// The statistics of backend `name`, created on first use and kept across tables.
    pub fn backend(&self, name: &str) -> Arc<BackendStats> {
        let _ = (name, &self.inner);
        Arc::new(BackendStats::default())
    }

    /// The table now served (rows of the CSV; backends no longer in it are dropped).
    pub fn publish(&self, table: &Arc<Table>) {
        let _ = table;
    }

    /// HAProxy's `show stat` CSV of the served backends.
    pub fn csv(&self) -> String {
        String::new()
    }
}
