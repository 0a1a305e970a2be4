//! L7 listeners. SKELETON: owned by the server helper.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::model::Snapshots;

/// Runs the L7 edge until `shutdown`.
pub async fn run(
    shared: Arc<Shared>,
    snapshots: Snapshots,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = (shared, snapshots);
    shutdown.cancelled().await;
    Ok(())
}
