//! Command-line parsing shared by the echo examples.

use braid::Protocol;

/// Splits the command line into its positional arguments and `--proto smux1|smux2`
/// (smux1 when not given); any other option is an error.
pub fn parse_cli() -> Result<(Vec<String>, Protocol), String> {
    let mut positional = Vec::new();
    let mut protocol = Protocol::SmuxV1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--proto" => {
                protocol = match args.next().as_deref() {
                    Some("smux1") => Protocol::SmuxV1,
                    Some("smux2") => Protocol::SmuxV2,
                    _ => return Err("--proto takes smux1 or smux2".into()),
                }
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ => positional.push(arg),
        }
    }
    Ok((positional, protocol))
}
