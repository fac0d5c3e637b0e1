//! braid benchmark comparison program.
fn main() {}
