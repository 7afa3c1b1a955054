//! The Chaperone archive: spool, Parquet segments, manifests, and the read side.
