//! KCP over UDP with kcp-go's datagram layer: a byte stream that `braid::Session` runs
//! over unchanged, interoperable with kcptun (Debian's 20210922, kcp-go 5.6.1).
//!
//! ```text
//!  braid::Session ─ [CompStream: snappy framing] ─ KcpStream ─ Conn (KCP ARQ) ─ Codec ─ UDP
//!                                                                 FEC, nonce+CRC32, cipher
//! ```
//!
//! - [`dial`] opens a client session from its own UDP socket (random conversation id).
//! - [`KcpListener`] accepts sessions keyed by source address, as kcp-go's listener.
//! - [`CompStream`] adds kcptun's snappy compression (on unless `--nocomp`).
//! - [`Config`] holds kcptun's `--mode --mtu --sndwnd --rcvwnd --datashard
//!   --parityshard --crypt --key` with its defaults.
//!
//! # Why the `kcp` crate, not a sans-IO KCP of our own
//! The ARQ (segments, RTO, fast retransmit, windows, congestion) is the part where a
//! byte-exact match with kcp-go's behaviour matters most and where a rewrite would be
//! longest to validate. The `kcp` crate is a faithful port of the C ikcp that kcp-go
//! also ports, already sans-IO (packets out through a `Write`, time in as a millisecond
//! argument, `check()` for the next deadline), and it interoperates with kcptun. So
//! [`Conn`] wraps it in braid-proto's style: datagrams and a clock in, datagrams and
//! bytes out, no socket and no `Instant::now()`, which is what lets the tests run the
//! ARQ on a virtual clock over a simulated network with loss and reordering.
//!
//! Its cost: like ikcp it computes sequence and time differences with plain `i32`
//! subtraction, which a hostile peer can make overflow. Release builds wrap (C's
//! behaviour, what the code expects); the workspace builds it with overflow checks off
//! in debug builds too (`[profile.dev.package.kcp]`), so a peer cannot panic a debug
//! build either (a project depending on braid-kcp should add the same two lines to its
//! own workspace's `Cargo.toml`: profiles apply from the root only). Its queues are bounded by the windows we set, and writes are held back
//! while `sndwnd` packets wait (kcp-go's rule), so memory per session is bounded.
//!
//! # ARQ rules kcp-go changed, applied around the crate
//! kcp-go's KCP differs from ikcp in ways that matter under loss; [`Conn`] applies the
//! ones it can from outside: each ACK segment counts towards fast retransmission (the
//! crate counts once per packet), a packet that acknowledges data flushes at once
//! (ACK-clocked sending, not interval-clocked), the clock is fresh for RTT samples and
//! new segments, and writes wait while either window is full. Not applied (inside the
//! crate): kcp-go's early retransmit, its additive RTO back-off, and its `update`
//! scheduled at the nearest RTO.
//!
//! # Not done as kcp-go does
//! - An unknown `--crypt` is an error (kcp-go silently uses aes); `tea` and `xtea`
//!   are refused by name (no well-kept crate).
//! - A session whose peer sends nothing valid for `dead_after` (5 s) while data waits
//!   ends with an error saying what to check (kcp-go waits for smux's 30 s timeout).
//! - With FEC off here, the peer's parity is used once its shard counts are learnt
//!   from its packets (kcp-go starts from a 1/1 guess and may rebuild garbage before).

mod codec;
mod comp;
mod config;
mod conn;
mod crypt;
mod fec;
mod listener;
mod stream;

pub use codec::{
    first_conv_of, Codec, CodecStats, Counters, DecodeError, CRYPT_HEADER, MAX_DATAGRAM,
};
pub use comp::{with_compression, CompStream, Duplex};
pub use config::{Config, Mode};
pub use conn::Conn;
pub use crypt::{derive_key, Crypt, CryptError, DEFAULT_KEY, SUPPORTED as SUPPORTED_CIPHERS};
pub use listener::{KcpListener, ListenerStats};
pub use stream::{dial, KcpStream, StatsHandle};
