//! Terminal replay, re-execution against a target, and session diff.
