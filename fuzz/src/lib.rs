//! The fuzz targets' checks live in the `braid-fuzz-harness` workspace crate, so that
//! `cargo test` there replays the corpus and runs the model through the same code on
//! stable Rust; the targets call them through this re-export.

pub use braid_fuzz_harness::*;
