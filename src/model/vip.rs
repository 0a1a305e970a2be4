//! Named VIP allocation (placeholder).
