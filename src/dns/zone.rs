//! `Records` → `Zone`: every answer pre-encoded in wire format, looked up by lowercased name.
