//! Discovery sources (placeholder).

pub mod decode;
