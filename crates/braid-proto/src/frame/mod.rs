//! Wire-exact frame types with encoders and incremental decoders, one module per protocol.

use bytes::{Bytes, BytesMut};

pub mod smux;
pub mod yamux;

/// Received payloads shorter than this are copied into their stream's buffer instead of
/// sharing the read buffer: a shared payload keeps the reader's whole buffer allocated
/// until it is read.
pub const COPY_BELOW: usize = 32 * 1024;

/// Takes `len` payload bytes off the front of `buf` without copying them. The session
/// copies small payloads into its per-stream buffers (see [`COPY_BELOW`]).
pub(crate) fn take_payload(buf: &mut BytesMut, len: usize) -> Bytes {
    buf.split_to(len).freeze()
}
