//! What one stream operation does, how it is drawn at random, and the header the
//! opener sends so that the acceptor knows its part.

use rand::rngs::StdRng;
use rand::Rng;
use std::fmt;

/// The kinds of stream operation a worker draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Random-sized data one way or both ways, verified, half-closed, read to EOF.
    Transfer,
    /// One way, with the reader or the writer pacing itself in small steps.
    Slow,
    /// One way; the sender or the receiver resets the stream mid-transfer.
    Reset,
    /// One way; the sender or the receiver drops its handle mid-transfer.
    Drop,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 4] = [OpKind::Transfer, OpKind::Slow, OpKind::Reset, OpKind::Drop];

    /// Short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Transfer => "transfer",
            OpKind::Slow => "slow",
            OpKind::Reset => "reset",
            OpKind::Drop => "drop",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn from_u8(v: u8) -> Option<OpKind> {
        OpKind::ALL.get(usize::from(v)).copied()
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which end of the data direction acts in a [`OpKind::Reset`] or [`OpKind::Drop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// Nobody: transfers run to their end.
    None,
    /// The side that sends the data, after writing `cut` bytes.
    Sender,
    /// The side that receives the data, after reading `cut` bytes.
    Receiver,
}

/// Pacing of a slow reader or writer: `chunk` bytes per step, `pause_us` microseconds
/// between steps. `chunk == 0` means not paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pace {
    /// Bytes per step (0: not paced).
    pub chunk: u32,
    /// Pause after each step, in microseconds.
    pub pause_us: u32,
}

impl Pace {
    /// True if this pace slows anything down.
    pub fn is_paced(self) -> bool {
        self.chunk > 0
    }
}

/// Everything both ends need to know about one stream operation. The opener draws it
/// and sends it as the stream's first bytes ([`HEADER_LEN`] of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// What the operation does.
    pub kind: OpKind,
    /// Seed of the stream's content (both directions) and of its write sizes.
    pub seed: u64,
    /// Data bytes from the opener to the acceptor (after the header).
    pub fwd_len: u64,
    /// Data bytes from the acceptor back to the opener.
    pub back_len: u64,
    /// Who resets or drops (only for [`OpKind::Reset`] and [`OpKind::Drop`], which
    /// send data one way only).
    pub actor: Actor,
    /// The actor acts after writing (sender) or reading (receiver) this many data
    /// bytes; always less than the direction's length.
    pub cut: u64,
    /// Pacing of the data's reader ([`OpKind::Slow`]).
    pub slow_reader: Pace,
    /// Pacing of the data's writer ([`OpKind::Slow`]).
    pub slow_writer: Pace,
}

/// Which end of the stream a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the stream and sent the header.
    Opener,
    /// Accepted the stream.
    Acceptor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Opener => "opener",
            Role::Acceptor => "acceptor",
        })
    }
}

impl Plan {
    /// For one-way kinds: true if the opener sends the data.
    pub fn opener_sends(&self) -> bool {
        self.fwd_len > 0
    }

    /// True if the opener is the one that resets or drops.
    pub fn opener_acts(&self) -> bool {
        match self.actor {
            Actor::None => false,
            Actor::Sender => self.opener_sends(),
            Actor::Receiver => !self.opener_sends(),
        }
    }

    /// True if the acceptor may see the stream end before the whole header: only when
    /// the opener resets before the acceptor has any reason to have read the header (a
    /// reset drops unsent and unread data).
    pub(crate) fn header_may_be_lost(&self) -> bool {
        self.kind == OpKind::Reset
            && self.opener_acts()
            && (self.actor == Actor::Sender || self.cut == 0)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seed={:#018x} fwd={} back={}",
            self.kind, self.seed, self.fwd_len, self.back_len
        )?;
        if self.actor != Actor::None {
            let who = match (self.actor, self.opener_acts()) {
                (Actor::Sender, true) => "opener (sender)",
                (Actor::Sender, false) => "acceptor (sender)",
                (_, true) => "opener (receiver)",
                (_, false) => "acceptor (receiver)",
            };
            write!(f, " actor={who} cut={}", self.cut)?;
        }
        for (name, pace) in [("reader", self.slow_reader), ("writer", self.slow_writer)] {
            if pace.is_paced() {
                write!(f, " slow-{name}={}B/{}us", pace.chunk, pace.pause_us)?;
            }
        }
        Ok(())
    }
}

/// Largest data of a slow operation.
const SLOW_MAX: u64 = 512 * 1024;
/// Slow operations are sized to take about this long at most.
const SLOW_BUDGET_US: u64 = 1_500_000;

/// A size drawn log-uniformly from `min..=max`: as many transfers of a few bytes as of a
/// few KiB or a few MiB.
pub(crate) fn log_size(rng: &mut StdRng, min: u64, max: u64) -> u64 {
    if max <= min {
        return min;
    }
    let lo = ((min + 1) as f64).ln();
    let hi = ((max + 1) as f64).ln();
    let x = rng.gen_range(lo..=hi).exp() as u64;
    x.saturating_sub(1).clamp(min, max)
}

impl Plan {
    /// Draws an operation. `max_len` bounds each direction's data.
    pub(crate) fn random(rng: &mut StdRng, max_len: u64) -> Plan {
        let seed = rng.gen();
        let roll = rng.gen_range(0..100u32);
        let kind = match roll {
            0..=44 => OpKind::Transfer,
            45..=59 => OpKind::Slow,
            60..=79 => OpKind::Reset,
            _ => OpKind::Drop,
        };
        let mut plan = Plan {
            kind,
            seed,
            fwd_len: 0,
            back_len: 0,
            actor: Actor::None,
            cut: 0,
            slow_reader: Pace::default(),
            slow_writer: Pace::default(),
        };
        let forward = rng.gen_bool(0.5);
        match kind {
            OpKind::Transfer => {
                // 40 % forward only, 30 % both ways, 30 % back only.
                let way = rng.gen_range(0..10u32);
                if way < 7 {
                    plan.fwd_len = log_size(rng, 0, max_len);
                }
                if way >= 4 {
                    plan.back_len = log_size(rng, 0, max_len);
                }
            }
            OpKind::Slow => {
                let mut len = log_size(rng, 1024, SLOW_MAX.min(max_len).max(1024));
                let slow_reader = rng.gen_bool(0.6);
                let pace = if slow_reader {
                    Pace {
                        chunk: log_size(rng, 1024, 16 * 1024) as u32,
                        pause_us: rng.gen_range(1000..=3000),
                    }
                } else {
                    Pace {
                        chunk: log_size(rng, 1, 4096) as u32,
                        pause_us: rng.gen_range(1000..=2000),
                    }
                };
                // Timers have a granularity of about a millisecond: count a step as
                // its pause plus a little.
                let steps = SLOW_BUDGET_US / (u64::from(pace.pause_us) + 250);
                len = len.min(steps * u64::from(pace.chunk)).max(1);
                if slow_reader {
                    plan.slow_reader = pace;
                } else {
                    plan.slow_writer = pace;
                }
                if forward {
                    plan.fwd_len = len;
                } else {
                    plan.back_len = len;
                }
            }
            OpKind::Reset | OpKind::Drop => {
                let len = log_size(rng, 1, max_len.max(1));
                plan.cut = if rng.gen_bool(0.5) {
                    rng.gen_range(0..len)
                } else {
                    log_size(rng, 0, len - 1)
                };
                plan.actor = if rng.gen_bool(0.5) {
                    Actor::Sender
                } else {
                    Actor::Receiver
                };
                if forward {
                    plan.fwd_len = len;
                } else {
                    plan.back_len = len;
                }
            }
        }
        plan
    }
}

/// "BRSK": the header's first bytes.
const MAGIC: [u8; 4] = *b"BRSK";
/// Bytes of the header the opener sends before its data.
pub const HEADER_LEN: usize = 56;

impl Plan {
    /// The header: magic, kind, actor, 2 reserved bytes, then seed, lengths and cut as
    /// u64 and the two paces as u32 pairs, all little-endian.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = self.kind.index() as u8;
        h[5] = match self.actor {
            Actor::None => 0,
            Actor::Sender => 1,
            Actor::Receiver => 2,
        };
        let mut at = 8;
        for v in [self.seed, self.fwd_len, self.back_len, self.cut] {
            h[at..at + 8].copy_from_slice(&v.to_le_bytes());
            at += 8;
        }
        for pace in [self.slow_reader, self.slow_writer] {
            for v in [pace.chunk, pace.pause_us] {
                h[at..at + 4].copy_from_slice(&v.to_le_bytes());
                at += 4;
            }
        }
        debug_assert_eq!(at, HEADER_LEN);
        h
    }

    /// Parses a header; `None` if it is not one [`Plan::encode`] can produce.
    pub(crate) fn decode(h: &[u8; HEADER_LEN]) -> Option<Plan> {
        if h[..4] != MAGIC || h[6..8] != [0, 0] {
            return None;
        }
        let kind = OpKind::from_u8(h[4])?;
        let actor = match h[5] {
            0 => Actor::None,
            1 => Actor::Sender,
            2 => Actor::Receiver,
            _ => return None,
        };
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        Some(Plan {
            kind,
            actor,
            seed: u64_at(8),
            fwd_len: u64_at(16),
            back_len: u64_at(24),
            cut: u64_at(32),
            slow_reader: Pace {
                chunk: u32_at(40),
                pause_us: u32_at(44),
            },
            slow_writer: Pace {
                chunk: u32_at(48),
                pause_us: u32_at(52),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plans_round_trip_and_keep_their_rules() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = [0usize; 4];
        for _ in 0..10_000 {
            let plan = Plan::random(&mut rng, 4 << 20);
            seen[plan.kind.index()] += 1;
            assert_eq!(Plan::decode(&plan.encode()), Some(plan));
            assert!(plan.fwd_len <= 4 << 20 && plan.back_len <= 4 << 20);
            match plan.kind {
                OpKind::Transfer => assert_eq!(plan.actor, Actor::None),
                OpKind::Slow => {
                    assert!((plan.fwd_len == 0) != (plan.back_len == 0));
                    assert!(plan.slow_reader.is_paced() != plan.slow_writer.is_paced());
                }
                OpKind::Reset | OpKind::Drop => {
                    assert!((plan.fwd_len == 0) != (plan.back_len == 0));
                    assert!(plan.cut < plan.fwd_len.max(plan.back_len));
                    assert_ne!(plan.actor, Actor::None);
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 1000), "{seen:?}");
    }

    #[test]
    fn bad_headers_are_refused() {
        let plan = Plan::random(&mut StdRng::seed_from_u64(2), 1000);
        let mut h = plan.encode();
        h[0] = b'X';
        assert_eq!(Plan::decode(&h), None);
        let mut h = plan.encode();
        h[4] = 9;
        assert_eq!(Plan::decode(&h), None);
    }

    #[test]
    fn log_sizes_cover_the_range() {
        let mut rng = StdRng::seed_from_u64(3);
        let sizes: Vec<u64> = (0..10_000)
            .map(|_| log_size(&mut rng, 0, 1 << 22))
            .collect();
        assert!(sizes.contains(&0));
        assert!(sizes.iter().any(|&s| s < 100));
        assert!(sizes.iter().any(|&s| s > 1 << 21));
        assert!(sizes.iter().all(|&s| s <= 1 << 22));
    }
}
