//! braid soak test program.
fn main() {}
