//! The library behind the `braid` command-line tool.
//!
//! [`tunnel`] is `braid server` and `braid client`: TCP port forwarding over one (or a
//! few) multiplexed connections. The binary parses flags into [`tunnel::ServerArgs`] and
//! [`tunnel::ClientArgs`] and runs [`tunnel::Server`] and [`tunnel::Client`]; tests run
//! them in-process the same way.
//!
//! [`bench`] is `braid bench`, the benchmark engine: the workloads, the runner that runs
//! each in a fresh child process, the tables and the plot. The `braid-bench` crate reuses
//! it to run the other Rust multiplexers.

pub mod bench;
pub mod tunnel;
