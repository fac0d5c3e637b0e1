//! braid: the tokio and blocking APIs over [`braid_proto`] (in progress).

pub use braid_proto::{Config, Protocol, Side};
