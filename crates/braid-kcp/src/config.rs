//! Transport settings, named and defaulted as kcptun's flags.

use crate::codec::Counters;
use crate::crypt::Crypt;
use std::sync::Arc;
use std::time::Duration;

/// kcptun's `--mode`: KCP's (nodelay, interval ms, fast resend, no congestion control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// nodelay 1, interval 10 ms, resend 2, nc 1.
    Fast3,
    /// nodelay 1, interval 20 ms, resend 2, nc 1.
    Fast2,
    /// nodelay 0, interval 30 ms, resend 2, nc 1 (kcptun's default).
    Fast,
    /// nodelay 0, interval 40 ms, resend 2, nc 1.
    Normal,
    /// The values given (kcptun's hidden `--nodelay --interval --resend --nc`; its
    /// defaults are 0, 50, 0, 0).
    Manual {
        /// nodelay mode (shorter minimum RTO, slower RTO growth).
        nodelay: bool,
        /// Update interval in ms (10..=5000).
        interval: u32,
        /// Fast retransmit after this many later ACKs (0: off).
        resend: u32,
        /// No congestion control.
        nc: bool,
    },
}

impl Mode {
    /// The mode a kcptun `--mode` name selects (`manual` with kcptun's defaults).
    pub fn parse(name: &str) -> Option<Mode> {
        Some(match name {
            "fast3" => Mode::Fast3,
            "fast2" => Mode::Fast2,
            "fast" => Mode::Fast,
            "normal" => Mode::Normal,
            "manual" => Mode::Manual {
                nodelay: false,
                interval: 50,
                resend: 0,
                nc: false,
            },
            _ => return None,
        })
    }

    /// (nodelay, interval ms, resend, nc).
    pub fn params(self) -> (bool, u32, u32, bool) {
        match self {
            Mode::Fast3 => (true, 10, 2, true),
            Mode::Fast2 => (true, 20, 2, true),
            Mode::Fast => (false, 30, 2, true),
            Mode::Normal => (false, 40, 2, true),
            Mode::Manual {
                nodelay,
                interval,
                resend,
                nc,
            } => (nodelay, interval, resend, nc),
        }
    }
}

/// Settings of a KCP session (and of a listener's sessions).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// KCP timing (`--mode`).
    pub mode: Mode,
    /// Largest datagram sent, all headers included (`--mtu`, 1350; at most 1500).
    pub mtu: usize,
    /// Send window in packets (`--sndwnd`: client 128, server 1024).
    pub sndwnd: u16,
    /// Receive window in packets (`--rcvwnd`: client 512, server 1024).
    pub rcvwnd: u16,
    /// FEC data shards (`--datashard`, 10); FEC is on iff both counts are positive.
    pub data_shards: usize,
    /// FEC parity shards (`--parityshard`, 3).
    pub parity_shards: usize,
    /// Datagram cipher (`--crypt` and `--key`, default aes with kcptun's default key).
    pub crypt: Crypt,
    /// A session whose peer sends nothing valid for this long while data waits for its
    /// acknowledgement is dead (kcp-go has no such check; smux notices after 30 s).
    pub dead_after: Duration,
    /// A session that receives nothing valid for this long ends (idle expiry).
    pub idle_timeout: Duration,
    /// Listener: most sessions at once; datagrams that would open more are dropped.
    pub max_sessions: usize,
    /// Listener: sessions created but not yet accepted.
    pub accept_backlog: usize,
    /// UDP socket send and receive buffer size in bytes (`--sockbuf`, 4 MiB; the kernel
    /// may cap it at net.core.wmem_max / rmem_max).
    pub sockbuf: usize,
    /// DSCP of sent datagrams (`--dscp`, 0..=63): the IPv4 TOS byte or IPv6 traffic
    /// class is `dscp << 2`.
    pub dscp: u8,
    /// Datagram-layer totals of every session made with this configuration (or a
    /// clone of it): checksum failures, parity, FEC recoveries.
    pub counters: Arc<Counters>,
}

impl Config {
    /// kcptun-client's defaults.
    pub fn client() -> Config {
        Config {
            mode: Mode::Fast,
            mtu: 1350,
            sndwnd: 128,
            rcvwnd: 512,
            data_shards: 10,
            parity_shards: 3,
            crypt: Crypt::new("aes", crate::crypt::DEFAULT_KEY).expect("aes is supported"),
            dead_after: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_sessions: 1024,
            accept_backlog: 128,
            sockbuf: 4 << 20,
            dscp: 0,
            counters: Arc::default(),
        }
    }

    /// kcptun-server's defaults.
    pub fn server() -> Config {
        Config {
            sndwnd: 1024,
            rcvwnd: 1024,
            ..Config::client()
        }
    }

    /// Checks the values, with a message naming the kcptun flag.
    pub fn validate(&self) -> Result<(), String> {
        let overhead = crate::codec::CRYPT_HEADER + crate::fec::FEC_OVERHEAD + 24;
        if self.mtu < overhead + 26 || self.mtu > crate::codec::MAX_DATAGRAM {
            return Err(format!(
                "invalid --mtu {}: allowed {}..={}",
                self.mtu,
                overhead + 26,
                crate::codec::MAX_DATAGRAM
            ));
        }
        if self.sndwnd == 0 || self.rcvwnd == 0 {
            return Err("--sndwnd and --rcvwnd must be > 0".into());
        }
        if self.data_shards + self.parity_shards > 256
            || (self.data_shards > 0 && self.parity_shards > 0 && self.data_shards > 255)
        {
            return Err(format!(
                "invalid --datashard {} --parityshard {}: at most 256 shards in all",
                self.data_shards, self.parity_shards
            ));
        }
        if let Mode::Manual { interval, .. } = self.mode {
            if !(10..=5000).contains(&interval) {
                return Err(format!("invalid --interval {interval}: allowed 10..=5000"));
            }
        }
        if self.dscp > 63 {
            return Err(format!("invalid --dscp {}: allowed 0..=63", self.dscp));
        }
        if self.sockbuf == 0 {
            return Err("invalid --sockbuf 0: must be > 0".into());
        }
        if self.max_sessions == 0 || self.accept_backlog == 0 {
            return Err("max_sessions and accept_backlog must be > 0".into());
        }
        Ok(())
    }
}
