//! The `braid` command-line tool (tunnel and bench arrive with their issues).

fn main() {
    eprintln!(
        "braid {}: the tunnel and bench commands are not built yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
