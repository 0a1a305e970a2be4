//! VIP label parsing (placeholder).
