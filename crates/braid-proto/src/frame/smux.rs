//! smux frames (xtaci/smux v1 and v2).
//!
//! Every frame is an 8-byte little-endian header followed by `length` payload bytes:
//!
//! ```text
//! [0] version u8 | [1] cmd u8 | [2..4] length u16 LE | [4..8] stream id u32 LE | payload
//! ```
//!
//! Decoding validates exactly as Go smux v1.5.57 does: SYN, FIN and NOP carry no payload,
//! UPD carries exactly 8 bytes and exists only in version 2, any other command or a
//! version other than the session's is a protocol error. A SYN payload (a gmux stream
//! name) is accepted only when [`Codec::syn_names`] is set.
//!
//! ```
//! use braid_proto::frame::smux::{Codec, Frame, Version};
//! use bytes::{Bytes, BytesMut};
//!
//! let codec = Codec::new(Version::V2);
//! let mut wire = BytesMut::new();
//! codec.encode(&Frame::Psh { stream_id: 3, data: Bytes::from_static(b"hi") }, &mut wire);
//! assert_eq!(&wire[..], &[2, 2, 2, 0, 3, 0, 0, 0, b'h', b'i']);
//!
//! // Decoding is incremental: a partial frame waits for more bytes.
//! let mut input = BytesMut::from(&wire[..5]);
//! assert_eq!(codec.decode(&mut input).unwrap(), None);
//! input.extend_from_slice(&wire[5..]);
//! let frame = codec.decode(&mut input).unwrap().unwrap();
//! assert_eq!(frame, Frame::Psh { stream_id: 3, data: Bytes::from_static(b"hi") });
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// The largest payload a frame can carry (the length field is a u16).
pub const MAX_PAYLOAD: usize = u16::MAX as usize;
/// Length of an UPD payload: `consumed u32 LE | window u32 LE`.
pub const UPD_LEN: usize = 8;

/// The smux protocol version, the first byte of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// smux v1: no per-stream flow control, only the session receive budget.
    V1 = 1,
    /// smux v2: adds UPD frames and per-stream windows.
    V2 = 2,
}

impl Version {
    /// The version byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A frame command, the second header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    /// Open a stream (`cmdSYN`).
    Syn = 0,
    /// Finish a stream (`cmdFIN`).
    Fin = 1,
    /// Stream data (`cmdPSH`).
    Psh = 2,
    /// Keepalive, no operation (`cmdNOP`).
    Nop = 3,
    /// Window update, v2 only (`cmdUPD`).
    Upd = 4,
}

impl Cmd {
    /// Parses a command byte.
    pub fn from_u8(b: u8) -> Option<Cmd> {
        Some(match b {
            0 => Cmd::Syn,
            1 => Cmd::Fin,
            2 => Cmd::Psh,
            3 => Cmd::Nop,
            4 => Cmd::Upd,
            _ => return None,
        })
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmd::Syn => "SYN",
            Cmd::Fin => "FIN",
            Cmd::Psh => "PSH",
            Cmd::Nop => "NOP",
            Cmd::Upd => "UPD",
        })
    }
}

/// A decoded smux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens `stream_id`. `name` is empty except for gmux named streams.
    Syn {
        /// The new stream's id.
        stream_id: u32,
        /// gmux stream name (raw SYN payload); empty for plain smux.
        name: Bytes,
    },
    /// The sender will write no more on `stream_id`.
    Fin {
        /// The finished stream.
        stream_id: u32,
    },
    /// Data for `stream_id`.
    Psh {
        /// The stream the data belongs to.
        stream_id: u32,
        /// The payload, at most [`MAX_PAYLOAD`] bytes.
        data: Bytes,
    },
    /// Keepalive; Go always sends it on stream 0.
    Nop {
        /// Stream id from the header (0 from Go).
        stream_id: u32,
    },
    /// v2 window update: the receiver has consumed `consumed` bytes in total (wrapping)
    /// and offers a window of `window` bytes.
    Upd {
        /// The stream whose window is updated.
        stream_id: u32,
        /// Total bytes read by the receiver's application, modulo 2^32.
        consumed: u32,
        /// The receiver's window in bytes.
        window: u32,
    },
}

impl Frame {
    /// The frame's command.
    pub fn cmd(&self) -> Cmd {
        match self {
            Frame::Syn { .. } => Cmd::Syn,
            Frame::Fin { .. } => Cmd::Fin,
            Frame::Psh { .. } => Cmd::Psh,
            Frame::Nop { .. } => Cmd::Nop,
            Frame::Upd { .. } => Cmd::Upd,
        }
    }

    /// The frame's stream id.
    pub fn stream_id(&self) -> u32 {
        match *self {
            Frame::Syn { stream_id, .. }
            | Frame::Fin { stream_id }
            | Frame::Psh { stream_id, .. }
            | Frame::Nop { stream_id }
            | Frame::Upd { stream_id, .. } => stream_id,
        }
    }

    /// Number of bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::Syn { name, .. } => name.len(),
                Frame::Psh { data, .. } => data.len(),
                Frame::Upd { .. } => UPD_LEN,
                Frame::Fin { .. } | Frame::Nop { .. } => 0,
            }
    }
}

/// Why the peer's bytes are not a valid smux frame. Each variant names what the peer did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The version byte differs from the session's (smux does not negotiate).
    #[error("peer sent a frame with smux version {got} on a version {expected} session")]
    Version {
        /// The version byte received.
        got: u8,
        /// The session's version.
        expected: u8,
    },
    /// The command byte is not one smux defines.
    #[error("peer sent unknown smux command 0x{cmd:02x} (stream {stream_id})")]
    UnknownCommand {
        /// The command byte received.
        cmd: u8,
        /// The stream id in the header.
        stream_id: u32,
    },
    /// A SYN, FIN or NOP frame announced a payload.
    #[error("peer sent a {cmd} frame with a {length}-byte payload on stream {stream_id}; {cmd} carries none")]
    UnexpectedPayload {
        /// The command.
        cmd: Cmd,
        /// The announced payload length.
        length: u16,
        /// The stream id in the header.
        stream_id: u32,
    },
    /// An UPD frame on a version 1 session.
    #[error("peer sent an UPD frame (stream {stream_id}) on a version 1 session")]
    UpdOnV1 {
        /// The stream id in the header.
        stream_id: u32,
    },
    /// An UPD frame whose payload is not exactly 8 bytes.
    #[error("peer sent an UPD frame with a {length}-byte payload on stream {stream_id}; UPD carries exactly 8")]
    UpdLength {
        /// The announced payload length.
        length: u16,
        /// The stream id in the header.
        stream_id: u32,
    },
}

/// Encodes and decodes smux frames for one session's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// The session's version; frames with another version byte are rejected.
    pub version: Version,
    /// Accept a payload on SYN frames as a gmux stream name (off: a SYN payload is a
    /// protocol error, as in smux v1.5.57).
    pub syn_names: bool,
}

impl Codec {
    /// A codec for `version` with gmux stream names off.
    pub fn new(version: Version) -> Codec {
        Codec {
            version,
            syn_names: false,
        }
    }

    /// Appends a header to `out`.
    pub fn encode_header(&self, cmd: Cmd, length: u16, stream_id: u32, out: &mut impl BufMut) {
        out.put_u8(self.version.as_u8());
        out.put_u8(cmd as u8);
        out.put_u16_le(length);
        out.put_u32_le(stream_id);
    }

    /// Appends `frame` (header and payload) to `out`.
    ///
    /// # Panics
    /// If a payload exceeds [`MAX_PAYLOAD`]; the session never builds such a frame.
    pub fn encode(&self, frame: &Frame, out: &mut impl BufMut) {
        let sid = frame.stream_id();
        match frame {
            Frame::Syn { name, .. } => {
                self.encode_header(Cmd::Syn, payload_len(name), sid, out);
                out.put_slice(name);
            }
            Frame::Psh { data, .. } => {
                self.encode_header(Cmd::Psh, payload_len(data), sid, out);
                out.put_slice(data);
            }
            Frame::Fin { .. } | Frame::Nop { .. } => self.encode_header(frame.cmd(), 0, sid, out),
            Frame::Upd {
                consumed, window, ..
            } => {
                self.encode_header(Cmd::Upd, UPD_LEN as u16, sid, out);
                out.put_u32_le(*consumed);
                out.put_u32_le(*window);
            }
        }
    }

    /// The length, header included, of the frame that starts `buf`, once its header is
    /// there (`None` before). The header is not validated: [`Codec::decode`] does that.
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let length = u16::from_le_bytes([*buf.get(2)?, *buf.get(3)?]);
        (buf.len() >= HEADER_LEN).then_some(HEADER_LEN + length as usize)
    }

    /// Decodes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds less than a whole frame; nothing is consumed
    /// then. The header is validated as soon as its 8 bytes are present, so a bad frame
    /// is reported without waiting for its payload. Payloads are split off `buf` without
    /// copying.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let version = buf[0];
        let cmd_byte = buf[1];
        let length = u16::from_le_bytes([buf[2], buf[3]]);
        let stream_id = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if version != self.version.as_u8() {
            return Err(FrameError::Version {
                got: version,
                expected: self.version.as_u8(),
            });
        }
        let cmd = Cmd::from_u8(cmd_byte).ok_or(FrameError::UnknownCommand {
            cmd: cmd_byte,
            stream_id,
        })?;
        match cmd {
            Cmd::Syn if self.syn_names => {}
            Cmd::Syn | Cmd::Fin | Cmd::Nop if length != 0 => {
                return Err(FrameError::UnexpectedPayload {
                    cmd,
                    length,
                    stream_id,
                })
            }
            Cmd::Upd if self.version == Version::V1 => {
                return Err(FrameError::UpdOnV1 { stream_id });
            }
            Cmd::Upd if length as usize != UPD_LEN => {
                return Err(FrameError::UpdLength { length, stream_id });
            }
            _ => {}
        }
        let total = HEADER_LEN + length as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = super::take_payload(buf, length as usize);
        Ok(Some(match cmd {
            Cmd::Syn => Frame::Syn {
                stream_id,
                name: payload,
            },
            Cmd::Fin => Frame::Fin { stream_id },
            Cmd::Nop => Frame::Nop { stream_id },
            Cmd::Psh => Frame::Psh {
                stream_id,
                data: payload,
            },
            Cmd::Upd => {
                let mut p = &payload[..];
                Frame::Upd {
                    stream_id,
                    consumed: p.get_u32_le(),
                    window: p.get_u32_le(),
                }
            }
        }))
    }
}

fn payload_len(b: &[u8]) -> u16 {
    u16::try_from(b.len()).expect("smux payload longer than 65535 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_is_header_plus_length_field() {
        let psh = [1, 2, 0x10, 0x01, 3, 0, 0, 0];
        assert_eq!(Codec::frame_len(&psh), Some(8 + 0x110));
        assert_eq!(Codec::frame_len(&psh[..7]), None);
        assert_eq!(Codec::frame_len(&[]), None);
    }

    fn encode(codec: Codec, frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        codec.encode(frame, &mut out);
        out
    }

    #[test]
    fn header_layout_is_length_before_stream_id() {
        let v1 = Codec::new(Version::V1);
        let wire = encode(
            v1,
            &Frame::Psh {
                stream_id: 0x0403_0201,
                data: Bytes::from(vec![7u8; 0x0102]),
            },
        );
        assert_eq!(&wire[..8], &[1, 2, 0x02, 0x01, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(wire.len(), 8 + 0x102);
    }

    #[test]
    fn upd_payload_is_consumed_then_window() {
        let v2 = Codec::new(Version::V2);
        let wire = encode(
            v2,
            &Frame::Upd {
                stream_id: 3,
                consumed: 5,
                window: 65536,
            },
        );
        assert_eq!(
            wire,
            [2, 4, 8, 0, 3, 0, 0, 0, 5, 0, 0, 0, 0, 0, 1, 0].to_vec()
        );
    }

    #[test]
    fn rejects_what_go_rejects() {
        let v1 = Codec::new(Version::V1);
        let v2 = Codec::new(Version::V2);
        let cases: Vec<(Codec, Vec<u8>, FrameError)> = vec![
            (
                v1,
                vec![2, 3, 0, 0, 0, 0, 0, 0],
                FrameError::Version {
                    got: 2,
                    expected: 1,
                },
            ),
            (
                v2,
                vec![2, 9, 0, 0, 5, 0, 0, 0],
                FrameError::UnknownCommand {
                    cmd: 9,
                    stream_id: 5,
                },
            ),
            (
                v1,
                vec![1, 3, 1, 0, 0, 0, 0, 0],
                FrameError::UnexpectedPayload {
                    cmd: Cmd::Nop,
                    length: 1,
                    stream_id: 0,
                },
            ),
            (
                v1,
                vec![1, 0, 4, 0, 3, 0, 0, 0],
                FrameError::UnexpectedPayload {
                    cmd: Cmd::Syn,
                    length: 4,
                    stream_id: 3,
                },
            ),
            (
                v2,
                vec![2, 1, 0, 1, 3, 0, 0, 0],
                FrameError::UnexpectedPayload {
                    cmd: Cmd::Fin,
                    length: 256,
                    stream_id: 3,
                },
            ),
            (
                v1,
                vec![1, 4, 8, 0, 3, 0, 0, 0],
                FrameError::UpdOnV1 { stream_id: 3 },
            ),
            (
                v2,
                vec![2, 4, 7, 0, 3, 0, 0, 0],
                FrameError::UpdLength {
                    length: 7,
                    stream_id: 3,
                },
            ),
        ];
        for (codec, bytes, want) in cases {
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(codec.decode(&mut buf), Err(want.clone()), "{bytes:?}");
            // The message names what the peer did.
            assert!(want.to_string().starts_with("peer sent"));
        }
    }

    #[test]
    fn syn_names_are_opt_in() {
        let mut codec = Codec::new(Version::V1);
        let frame = Frame::Syn {
            stream_id: 3,
            name: Bytes::from_static(b"db"),
        };
        let wire = encode(codec, &frame);
        assert_eq!(wire, [1, 0, 2, 0, 3, 0, 0, 0, b'd', b'b'].to_vec());
        assert!(codec.decode(&mut BytesMut::from(&wire[..])).is_err());
        codec.syn_names = true;
        assert_eq!(
            codec.decode(&mut BytesMut::from(&wire[..])),
            Ok(Some(frame))
        );
    }

    #[test]
    fn zero_length_psh_decodes() {
        let v1 = Codec::new(Version::V1);
        let mut buf = BytesMut::from(&[1u8, 2, 0, 0, 3, 0, 0, 0][..]);
        assert_eq!(
            v1.decode(&mut buf),
            Ok(Some(Frame::Psh {
                stream_id: 3,
                data: Bytes::new()
            }))
        );
        assert!(buf.is_empty());
    }
}
