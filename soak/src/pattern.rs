//! Deterministic stream content. Every byte follows from a key (derived from the
//! stream's seed and the direction) and its offset, so a receiver can check any chunk on
//! its own, and a mismatch names the exact offset.

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijective 64-bit mix.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The direction of data on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the side that opened the stream to the side that accepted it.
    Forward,
    /// From the accepting side back to the opener.
    Back,
}

/// The content key of one direction of a stream.
pub(crate) fn key(seed: u64, dir: Dir) -> u64 {
    let tag = match dir {
        Dir::Forward => 0x464F_5257_4152_4400, // "FORWARD"
        Dir::Back => 0x4241_434B_0000_0000,    // "BACK"
    };
    mix(seed ^ tag)
}

fn word(key: u64, index: u64) -> [u8; 8] {
    mix(key.wrapping_add(index.wrapping_mul(GAMMA))).to_le_bytes()
}

/// Fills `buf` with the content at `offset..offset + buf.len()`.
pub(crate) fn fill(key: u64, offset: u64, buf: &mut [u8]) {
    let mut off = offset;
    let mut rest = buf;
    // Up to the next multiple of 8, then whole words, then the tail.
    let head = ((8 - off % 8) % 8).min(rest.len() as u64) as usize;
    if head > 0 {
        let w = word(key, off / 8);
        let start = (off % 8) as usize;
        rest[..head].copy_from_slice(&w[start..start + head]);
        rest = &mut rest[head..];
        off += head as u64;
    }
    let mut index = off / 8;
    let mut chunks = rest.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(key, index));
        index += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&word(key, index)[..n]);
    }
}

/// A received byte that differs from the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// Offset of the first differing byte in the direction's data.
    pub offset: u64,
    /// The byte received.
    pub got: u8,
    /// The byte the content has there.
    pub expected: u8,
}

/// Checks `data`, received at `offset`, against the content. `scratch` is reused to
/// hold the expected bytes.
pub(crate) fn verify(
    key: u64,
    offset: u64,
    data: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), Mismatch> {
    scratch.resize(data.len(), 0);
    fill(key, offset, scratch);
    if scratch[..] == data[..] {
        return Ok(());
    }
    let i = scratch
        .iter()
        .zip(data)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    Err(Mismatch {
        offset: offset + i as u64,
        got: data[i],
        expected: scratch[i],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_gives_the_same_bytes() {
        let k = key(42, Dir::Forward);
        let mut whole = vec![0u8; 1000];
        fill(k, 0, &mut whole);
        for split in [0, 1, 3, 7, 8, 9, 500, 999, 1000] {
            let mut a = vec![0u8; split];
            let mut b = vec![0u8; 1000 - split];
            fill(k, 0, &mut a);
            fill(k, split as u64, &mut b);
            a.extend_from_slice(&b);
            assert_eq!(a, whole, "split at {split}");
        }
        let mut odd = vec![0u8; 5];
        fill(k, 13, &mut odd);
        assert_eq!(odd, whole[13..18]);
    }

    #[test]
    fn directions_and_seeds_differ() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        fill(key(1, Dir::Forward), 0, &mut a);
        fill(key(1, Dir::Back), 0, &mut b);
        assert_ne!(a, b);
        fill(key(2, Dir::Forward), 0, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn verify_names_the_first_wrong_byte() {
        let k = key(7, Dir::Back);
        let mut data = vec![0u8; 100];
        fill(k, 50, &mut data);
        let mut scratch = Vec::new();
        assert_eq!(verify(k, 50, &data, &mut scratch), Ok(()));
        data[30] ^= 0xFF;
        let m = verify(k, 50, &data, &mut scratch).unwrap_err();
        assert_eq!(m.offset, 80);
        assert_eq!(m.got ^ 0xFF, m.expected);
        // Data placed at the wrong offset is caught too.
        fill(k, 0, &mut data);
        assert!(verify(k, 1, &data, &mut scratch).is_err());
    }
}
