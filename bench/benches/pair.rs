//! criterion benchmark (to be written).
fn main() {}
