//! Placeholder: the diff sync (being written).
