//! Session tests over the in-memory [`pair::Pair`] harness.

mod bounds;
mod features;
mod flow;
mod pair;
mod streams;
mod yamux;
