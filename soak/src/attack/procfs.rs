//! What the server process costs, read from /proc: RSS, peak RSS, open fds, CPU time,
//! and whether it still holds a given TCP connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS since the process started), bytes.
    pub hwm: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// utime + stime, seconds.
    pub cpu: f64,
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/PID/status`, `/proc/PID/stat` and counts `/proc/PID/fd`; `None` once the
/// process is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        rss: status_kib(&status, "VmRSS:")? * 1024,
        hwm: status_kib(&status, "VmHWM:")? * 1024,
        fds,
        cpu: ticks as f64 / clock_ticks(),
    })
}

/// Peaks seen by a [`Sampler`], and the latest RSS (for the memory guard).
#[derive(Debug, Default)]
pub struct Peaks {
    /// Highest VmRSS seen, bytes.
    pub rss: AtomicU64,
    /// Highest fd count seen.
    pub fds: AtomicU64,
    /// Latest VmRSS, bytes.
    pub current_rss: AtomicU64,
}

/// Samples a process every `every` until dropped.
pub struct Sampler {
    /// What it saw.
    pub peaks: Arc<Peaks>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let peaks = Arc::new(Peaks::default());
        let p = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(s) = tokio::task::spawn_blocking(move || sample(pid))
                    .await
                    .ok()
                    .flatten()
                else {
                    return;
                };
                p.rss.fetch_max(s.rss, Ordering::Relaxed);
                p.fds.fetch_max(s.fds, Ordering::Relaxed);
                p.current_rss.store(s.rss, Ordering::Relaxed);
            }
        });
        Sampler { peaks, task }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// State of the TCP socket `local` -> `remote` in `/proc/net/tcp`, as seen from the end
/// that owns `local`: `Some(true)` while a process holds it (inode set), `Some(false)`
/// once it is orphaned (closed by its process, the kernel still flushing), `None` when
/// no such socket exists.
pub fn tcp_held(local: SocketAddr, remote: SocketAddr) -> Option<bool> {
    tcp_row(local, remote, |f| Some(f[9] != "0"))
}

/// Reads `/proc/net/tcp` and gives the fields of the row of our socket `local` ->
/// `remote` (IPv4 only) to `read`.
fn tcp_row<T>(
    local: SocketAddr,
    remote: SocketAddr,
    read: impl Fn(&[&str]) -> Option<T>,
) -> Option<T> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: SocketAddr| -> Option<String> {
        let SocketAddr::V4(v4) = a else { return None };
        let ip = u32::from_ne_bytes(v4.ip().octets());
        Some(format!("{ip:08X}:{:04X}", v4.port()))
    };
    let (l, r) = (hex(local)?, hex(remote)?);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[1] == l && f[2] == r {
            return read(&f);
        }
    }
    None
}

/// Bytes waiting unread in the receive queue of our socket `local` -> `remote`.
pub fn tcp_rx_queue(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    tcp_queues(local, remote).map(|q| q.1)
}

/// Bytes our socket `local` -> `remote` has not yet had taken by the peer (sent but not
/// acknowledged, or not sent yet).
pub fn tcp_tx_queue(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    tcp_queues(local, remote).map(|q| q.0)
}

fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    tcp_row(local, remote, |f| {
        let (tx, rx) = f[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss > 0 && s.hwm >= s.rss && s.fds >= 3);
    }

    #[test]
    fn sees_a_loopback_connection_and_its_close() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let (local, remote) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
        assert_eq!(tcp_held(local, remote), Some(true));
        std::io::Write::write_all(&mut &s, b"abc").unwrap();
        let mut rx = None;
        for _ in 0..100 {
            rx = tcp_rx_queue(remote, local);
            if rx == Some(3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(rx, Some(3));
        drop(s);
        assert_ne!(tcp_held(local, remote), Some(true));
        drop(c);
    }
}
