//! The Chaperone audit service: HTTP API and web UI over the archive.
