//! Blocking API (in progress).
