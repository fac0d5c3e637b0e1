//! The `braid server` under attack: a child process started per attack (so that its
//! peak RSS is that attack's), or one the user started (`--addr`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server to attack.
pub struct Server {
    /// Where it accepts carrier connections.
    pub addr: SocketAddr,
    /// Its process id, when known (stats need it).
    pub pid: Option<u32>,
    child: Option<Child>,
    /// The last lines it logged (kept for the report).
    log: Arc<Mutex<Vec<String>>>,
}

/// Log lines kept per server.
const LOG_KEEP: usize = 5;

impl Server {
    /// Starts `bin server --listen 127.0.0.1:0 --target TARGET ARGS...` and waits for its
    /// `listening on ADDR` line.
    pub async fn spawn(bin: &Path, target: SocketAddr, args: &[String]) -> Result<Server, String> {
        let mut child = Command::new(bin)
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--target", &target.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        // Drain stderr (a flood can make it log a lot): keep only the last lines.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = keep.lock().unwrap();
                if log.len() == LOG_KEEP {
                    log.remove(0);
                }
                log.push(line);
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "the server printed nothing within 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        let Some(first) = first else {
            let status = child.wait().await.map_err(|e| e.to_string())?;
            let log = log.lock().unwrap().join(" | ");
            return Err(format!("the server exited ({status}): {log}"));
        };
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| format!("unexpected first line from the server: {first:?}"))?;
        // Keep reading stdout so that the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            addr,
            pid: child.id(),
            child: Some(child),
            log,
        })
    }

    /// A server someone else runs.
    pub fn external(addr: SocketAddr, pid: Option<u32>) -> Server {
        Server {
            addr,
            pid,
            child: None,
            log: Arc::default(),
        }
    }

    /// Whether the process (when we started it) is still running.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The last lines of its log.
    pub fn last_log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Kills the process we started (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// Whether `bin server --help` lists `flag`.
pub async fn supports(bin: &Path, flag: &str) -> bool {
    match Command::new(bin).args(["server", "--help"]).output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).contains(flag),
        Err(_) => false,
    }
}

/// A self-signed certificate for `localhost`, written as PEM files into a fresh
/// directory: (certificate, key, the certificate in DER for the client's roots).
pub fn write_cert(dir: &Path) -> Result<(PathBuf, PathBuf, Vec<u8>), String> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, ck.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok((cert, key, ck.cert.der().to_vec()))
}
