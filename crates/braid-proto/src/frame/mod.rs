//! Wire-exact frame types with encoders and incremental decoders, one module per protocol.

use bytes::{Buf, Bytes, BytesMut};

pub mod smux;
pub mod yamux;

/// Payloads shorter than this are copied out of the read buffer instead of sharing it.
/// A shared payload keeps the reader's whole buffer (often 256 KiB) allocated until it is
/// read, so a peer sending tiny frames in separate reads could make a few bytes of budget
/// hold a buffer each; copying them bounds that overhead to the buffer size over this.
pub const COPY_BELOW: usize = 32 * 1024;

/// Takes `len` payload bytes off the front of `buf`: a copy when small, else a zero-copy
/// split (see [`COPY_BELOW`]).
pub(crate) fn take_payload(buf: &mut BytesMut, len: usize) -> Bytes {
    if len < COPY_BELOW {
        let p = Bytes::copy_from_slice(&buf[..len]);
        buf.advance(len);
        p
    } else {
        buf.split_to(len).freeze()
    }
}
