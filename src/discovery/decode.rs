//! Decoders: Marathon `/v2/apps?embed=apps.tasks` and Mesos `/master/state` JSON → `ClusterState`.

use crate::model::ClusterState;

/// A response that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("neither a Marathon /v2/apps nor a Mesos /master/state response")]
    UnknownShape,
}

/// Decodes a Marathon `/v2/apps?embed=apps.tasks` response.
pub fn marathon_apps(_body: &[u8]) -> Result<ClusterState, DecodeError> {
    Err(DecodeError::UnknownShape)
}

/// Decodes a Mesos `/master/state` response.
pub fn mesos_state(_body: &[u8]) -> Result<ClusterState, DecodeError> {
    Err(DecodeError::UnknownShape)
}

/// Detects the shape by content and decodes it.
pub fn detect(_body: &[u8]) -> Result<ClusterState, DecodeError> {
    Err(DecodeError::UnknownShape)
}
