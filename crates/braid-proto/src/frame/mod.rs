//! Wire-exact frame types with encoders and incremental decoders, one module per protocol.

pub mod smux;
pub mod yamux;
