//! yamux frames (hashicorp/yamux).
//!
//! Every frame starts with a 12-byte big-endian header; only Data frames carry a payload:
//!
//! ```text
//! version u8 (0) | type u8 | flags u16 | stream id u32 | length u32
//! ```
//!
//! `length` is the payload length for Data, the window delta for WindowUpdate, the opaque
//! value for Ping and the error code for GoAway. Flags (SYN, ACK, FIN, RST) ride on Data
//! and WindowUpdate frames; on Ping, SYN marks a request and ACK a reply.
//!
//! ```
//! use braid_proto::frame::yamux::{Codec, Flags, Frame};
//! use bytes::BytesMut;
//!
//! let codec = Codec::new(256 * 1024);
//! let mut wire = BytesMut::new();
//! codec.encode(&Frame::WindowUpdate { stream_id: 1, flags: Flags::SYN, delta: 0 }, &mut wire);
//! assert_eq!(&wire[..], &[0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
//! assert_eq!(
//!     codec.decode(&mut wire).unwrap(),
//!     Some(Frame::WindowUpdate { stream_id: 1, flags: Flags::SYN, delta: 0 })
//! );
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 12;
/// The only protocol version.
pub const VERSION: u8 = 0;

/// GoAway code: normal termination.
pub const GO_AWAY_NORMAL: u32 = 0;
/// GoAway code: protocol error.
pub const GO_AWAY_PROTOCOL_ERROR: u32 = 1;
/// GoAway code: internal error.
pub const GO_AWAY_INTERNAL_ERROR: u32 = 2;

/// Frame type, the second header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// Stream data.
    Data = 0,
    /// Stream window update (and flags).
    WindowUpdate = 1,
    /// Ping request or reply.
    Ping = 2,
    /// Session termination.
    GoAway = 3,
}

impl Type {
    fn from_u8(b: u8) -> Option<Type> {
        Some(match b {
            0 => Type::Data,
            1 => Type::WindowUpdate,
            2 => Type::Ping,
            3 => Type::GoAway,
            _ => return None,
        })
    }
}

/// Header flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Opens a stream / marks a ping request.
    pub const SYN: Flags = Flags(0x1);
    /// Acknowledges a stream / marks a ping reply.
    pub const ACK: Flags = Flags(0x2);
    /// Half-closes a stream.
    pub const FIN: Flags = Flags(0x4);
    /// Resets a stream.
    pub const RST: Flags = Flags(0x8);

    /// True if every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Flags::SYN, "SYN"),
            (Flags::ACK, "ACK"),
            (Flags::FIN, "FIN"),
            (Flags::RST, "RST"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, n)| *n)
            .collect();
        if set.is_empty() {
            write!(f, "Flags(0x{:x})", self.0)
        } else {
            write!(f, "{}", set.join("|"))
        }
    }
}

/// A decoded yamux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Data (possibly empty, when it only carries flags).
    Data {
        /// The stream.
        stream_id: u32,
        /// SYN/ACK/FIN/RST.
        flags: Flags,
        /// The payload.
        data: Bytes,
    },
    /// Adds `delta` to the stream's send window (and carries flags).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// SYN/ACK/FIN/RST.
        flags: Flags,
        /// Credit added to the receiver's window as seen by the sender.
        delta: u32,
    },
    /// Ping request (SYN) or reply (ACK).
    Ping {
        /// SYN for a request, ACK for a reply.
        flags: Flags,
        /// Echoed back unchanged.
        opaque: u32,
    },
    /// The sender is going away.
    GoAway {
        /// 0 normal, 1 protocol error, 2 internal error.
        code: u32,
    },
}

/// Why the peer's bytes are not a valid yamux frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The version byte is not 0.
    #[error("peer sent a frame with yamux version {0}; only version 0 exists")]
    Version(u8),
    /// The type byte is not one yamux defines.
    #[error("peer sent unknown yamux frame type 0x{typ:02x} (stream {stream_id})")]
    UnknownType {
        /// The type byte.
        typ: u8,
        /// The stream id in the header.
        stream_id: u32,
    },
    /// A Data frame longer than any window this session grants.
    #[error("peer sent a {length}-byte data frame on stream {stream_id}, larger than any window granted ({max})")]
    DataTooLong {
        /// The announced payload length.
        length: u32,
        /// The stream id in the header.
        stream_id: u32,
        /// The largest window this session grants.
        max: u32,
    },
}

/// Encodes and decodes yamux frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Data frames longer than this are rejected as soon as their header arrives: no
    /// stream's window is ever larger, and it bounds what one frame can make us buffer.
    pub max_data_len: u32,
}

impl Codec {
    /// A codec that accepts data frames of up to `max_data_len` bytes.
    pub fn new(max_data_len: u32) -> Codec {
        Codec { max_data_len }
    }

    /// Appends a header to `out`.
    pub fn encode_header(
        &self,
        typ: Type,
        flags: Flags,
        stream_id: u32,
        length: u32,
        out: &mut impl BufMut,
    ) {
        out.put_u8(VERSION);
        out.put_u8(typ as u8);
        out.put_u16(flags.0);
        out.put_u32(stream_id);
        out.put_u32(length);
    }

    /// Appends `frame` (header and payload) to `out`.
    pub fn encode(&self, frame: &Frame, out: &mut impl BufMut) {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let len = u32::try_from(data.len()).expect("yamux payload longer than 4 GiB");
                self.encode_header(Type::Data, *flags, *stream_id, len, out);
                out.put_slice(data);
            }
            Frame::WindowUpdate {
                stream_id,
                flags,
                delta,
            } => self.encode_header(Type::WindowUpdate, *flags, *stream_id, *delta, out),
            Frame::Ping { flags, opaque } => {
                self.encode_header(Type::Ping, *flags, 0, *opaque, out)
            }
            Frame::GoAway { code } => self.encode_header(Type::GoAway, Flags::NONE, 0, *code, out),
        }
    }

    /// The length, header included, of the frame that starts `buf`, once its header is
    /// there (`None` before). The header is not validated: [`Codec::decode`] does that.
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let header = buf.get(..HEADER_LEN)?;
        if header[1] != Type::Data as u8 {
            return Some(HEADER_LEN);
        }
        let length = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        Some(HEADER_LEN.saturating_add(length as usize))
    }

    /// Decodes one frame from the front of `buf`; `Ok(None)` when `buf` holds less than a
    /// whole frame (nothing is consumed then). The header is validated as soon as it is
    /// complete. Payloads are split off without copying.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut h = &buf[..HEADER_LEN];
        let version = h.get_u8();
        let typ_byte = h.get_u8();
        let flags = Flags(h.get_u16());
        let stream_id = h.get_u32();
        let length = h.get_u32();
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let typ = Type::from_u8(typ_byte).ok_or(FrameError::UnknownType {
            typ: typ_byte,
            stream_id,
        })?;
        if typ != Type::Data {
            buf.advance(HEADER_LEN);
            return Ok(Some(match typ {
                Type::WindowUpdate => Frame::WindowUpdate {
                    stream_id,
                    flags,
                    delta: length,
                },
                Type::Ping => Frame::Ping {
                    flags,
                    opaque: length,
                },
                Type::GoAway => Frame::GoAway { code: length },
                Type::Data => unreachable!(),
            }));
        }
        if length > self.max_data_len {
            return Err(FrameError::DataTooLong {
                length,
                stream_id,
                max: self.max_data_len,
            });
        }
        let total = HEADER_LEN + length as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let data = super::take_payload(buf, length as usize);
        Ok(Some(Frame::Data {
            stream_id,
            flags,
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_counts_a_payload_only_for_data() {
        let data = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0];
        assert_eq!(Codec::frame_len(&data), Some(12 + 256));
        assert_eq!(Codec::frame_len(&data[..11]), None);
        let update = [0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 0, 0];
        assert_eq!(Codec::frame_len(&update), Some(12));
    }

    #[test]
    fn header_is_big_endian() {
        let c = Codec::new(1 << 20);
        let mut out = Vec::new();
        c.encode(
            &Frame::Data {
                stream_id: 0x0102_0304,
                flags: Flags::FIN | Flags::ACK,
                data: Bytes::from_static(b"ab"),
            },
            &mut out,
        );
        assert_eq!(
            out,
            [0, 0, 0, 6, 1, 2, 3, 4, 0, 0, 0, 2, b'a', b'b'].to_vec()
        );
    }

    #[test]
    fn rejects_bad_version_type_and_oversized_data_at_the_header() {
        let c = Codec::new(1000);
        let mut b = BytesMut::from(&[1u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(c.decode(&mut b), Err(FrameError::Version(1)));
        let mut b = BytesMut::from(&[0u8, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(
            c.decode(&mut b),
            Err(FrameError::UnknownType {
                typ: 7,
                stream_id: 1
            })
        );
        let mut b = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0, 3, 0, 0, 3, 233][..]);
        assert_eq!(
            c.decode(&mut b),
            Err(FrameError::DataTooLong {
                length: 1001,
                stream_id: 3,
                max: 1000
            })
        );
        for e in [
            FrameError::Version(1),
            FrameError::UnknownType {
                typ: 7,
                stream_id: 1,
            },
        ] {
            assert!(e.to_string().starts_with("peer sent"));
        }
    }

    #[test]
    fn flags_debug_names_them() {
        assert_eq!(format!("{:?}", Flags::SYN | Flags::FIN), "SYN|FIN");
        assert_eq!(format!("{:?}", Flags(0x30)), "Flags(0x30)");
    }
}
