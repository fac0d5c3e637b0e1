//! Session tests over the in-memory [`pair::Pair`] harness.

mod flow;
mod pair;
mod streams;
mod yamux;
