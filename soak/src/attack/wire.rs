//! Frames written by hand, as a hostile peer would: smux v1 and yamux headers
//! (layouts from the protocol references; no braid code involved).

/// yamux frame types.
pub const Y_DATA: u8 = 0;
/// yamux WindowUpdate.
pub const Y_WINDOW: u8 = 1;
/// yamux Ping.
pub const Y_PING: u8 = 2;
/// yamux flag SYN.
pub const F_SYN: u16 = 0x1;
/// yamux flag ACK.
pub const F_ACK: u16 = 0x2;
/// yamux flag FIN.
pub const F_FIN: u16 = 0x4;
/// yamux flag RST.
pub const F_RST: u16 = 0x8;
/// Length of a yamux header.
pub const Y_HEADER: usize = 12;

/// Appends a yamux header: version 0, then type, flags, stream id and length, all
/// big-endian.
pub fn yamux(out: &mut Vec<u8>, kind: u8, flags: u16, id: u32, length: u32) {
    out.push(0);
    out.push(kind);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// Appends a yamux data frame carrying `payload`.
pub fn yamux_data(out: &mut Vec<u8>, id: u32, payload: &[u8]) {
    yamux(out, Y_DATA, 0, id, payload.len() as u32);
    out.extend_from_slice(payload);
}

/// A yamux header read back from what braid sends.
#[derive(Debug, Clone, Copy)]
pub struct YamuxHeader {
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u16,
    /// Stream id.
    pub id: u32,
    /// Length field (payload length for data frames).
    pub length: u32,
}

/// Parses a 12-byte yamux header.
pub fn parse_yamux(h: &[u8; Y_HEADER]) -> YamuxHeader {
    YamuxHeader {
        kind: h[1],
        flags: u16::from_be_bytes([h[2], h[3]]),
        id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        length: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    }
}

/// smux commands.
pub const S_SYN: u8 = 0;
/// smux PSH (data).
pub const S_PSH: u8 = 2;

/// Appends an smux header: version, command, then length (u16) and stream id (u32),
/// little-endian, followed by `payload`.
pub fn smux(out: &mut Vec<u8>, version: u8, cmd: u8, id: u32, payload: &[u8]) {
    out.push(version);
    out.push(cmd);
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_references() {
        let mut y = Vec::new();
        yamux(&mut y, Y_WINDOW, F_SYN, 3, 0x0102_0304);
        assert_eq!(y, [0, 1, 0, 1, 0, 0, 0, 3, 1, 2, 3, 4]);
        let h = parse_yamux(y.as_slice().try_into().unwrap());
        assert_eq!((h.kind, h.flags, h.id, h.length), (1, 1, 3, 0x0102_0304));
        let mut s = Vec::new();
        smux(&mut s, 1, S_PSH, 3, b"x");
        assert_eq!(s, [1, 2, 1, 0, 3, 0, 0, 0, b'x']);
    }
}
