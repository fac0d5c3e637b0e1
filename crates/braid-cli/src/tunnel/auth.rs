//! How carrier connections are secured: nothing, TLS (optionally mutual), or a
//! pre-shared key (Noise); and the rule that a server reachable from other hosts must
//! authenticate its clients.

use super::noise::{self, Psk};
use super::tls::{self, ClientTls};
use super::Error;
use braid::{Config, Session, Side};
use std::io;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// What a server requires of its carrier connections.
#[derive(Clone)]
pub enum ServerAuth {
    /// Plain TCP: anyone who can connect is served.
    None,
    /// TLS. Clients are authenticated only with `client_auth` (`--tls-client-ca`).
    Tls {
        /// The configured acceptor.
        acceptor: TlsAcceptor,
        /// Whether clients must present a certificate.
        client_auth: bool,
    },
    /// A pre-shared key (`--psk-file`).
    Psk(Arc<Psk>),
}

impl ServerAuth {
    /// True if clients must prove who they are.
    pub fn authenticates_clients(&self) -> bool {
        match self {
            ServerAuth::None => false,
            ServerAuth::Tls { client_auth, .. } => *client_auth,
            ServerAuth::Psk(_) => true,
        }
    }

    /// A name for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            ServerAuth::None => "none",
            ServerAuth::Tls {
                client_auth: false, ..
            } => "tls",
            ServerAuth::Tls {
                client_auth: true, ..
            } => "mutual-tls",
            ServerAuth::Psk(_) => "psk",
        }
    }

    /// Runs the handshake on `tcp`, within `within`. The error is one line for the log.
    pub async fn handshake(&self, tcp: TcpStream, within: Duration) -> Result<BoxIo, String> {
        let handshake = async {
            Ok::<BoxIo, String>(match self {
                ServerAuth::None => Box::new(tcp),
                ServerAuth::Tls { acceptor, .. } => Box::new(
                    acceptor
                        .accept(tls::buffered(tcp))
                        .await
                        .map_err(|e| format!("TLS handshake failed: {e}"))?,
                ),
                ServerAuth::Psk(psk) => {
                    Box::new(noise::server(tcp, psk).await.map_err(|e| e.to_string())?)
                }
            })
        };
        match tokio::time::timeout(within, handshake).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no complete {} handshake within {within:?} (--handshake-timeout)",
                self.describe()
            )),
        }
    }
}

/// A secured (or plain) carrier connection.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A carrier connection of any kind.
pub type BoxIo = Box<dyn Io>;

/// How a client secures its carrier connections.
#[derive(Clone)]
pub enum ClientAuth {
    /// Plain TCP.
    None,
    /// TLS (with a client certificate if configured).
    Tls(ClientTls),
    /// A pre-shared key (`--psk-file`).
    Psk(Arc<Psk>),
}

impl ClientAuth {
    /// A name for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Tls(_) => "tls",
            ClientAuth::Psk(_) => "psk",
        }
    }

    /// Secures `tcp` and starts a client session over it. The caller bounds the time;
    /// `verdict` bounds the wait for a TLS server's verdict on our certificate.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        config: Config,
        verdict: Duration,
    ) -> io::Result<Session> {
        match self {
            ClientAuth::None => Session::from_tcp(tcp, config, Side::Client),
            ClientAuth::Tls(t) => {
                tcp.set_nodelay(true)?;
                let mut io = t
                    .connector
                    .connect(t.server_name.clone(), tls::buffered(tcp))
                    .await
                    .map_err(|e| match e.get_ref().and_then(|r| r.downcast_ref()) {
                        Some(tls_error) => io::Error::new(e.kind(), tls::refusal_reason(tls_error)),
                        None => e,
                    })?;
                tls::await_verdict(&mut io, verdict).await?;
                Ok(Session::client(io, config)?)
            }
            ClientAuth::Psk(psk) => {
                tcp.set_nodelay(true)?;
                let io = noise::client(tcp, psk).await?;
                Ok(Session::client(io, config)?)
            }
        }
    }
}

/// True if every address `listen` names is a loopback address (only this host can
/// connect).
pub fn is_loopback(listen: &str) -> bool {
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// The refusal to serve `listen` without client authentication.
pub fn open_proxy_error(listen: &str, tls: bool) -> Error {
    let what = if tls {
        "TLS without --tls-client-ca serves any client"
    } else {
        "no authentication is configured"
    };
    Error::Usage(format!(
        "refusing to listen on {listen} unauthenticated ({what}): anyone who can reach it could \
         use the target. Add --psk-file FILE (on both ends), or --tls-client-ca PEM (mutual TLS), \
         or --no-auth if the network is trusted"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1:7000"));
        assert!(is_loopback("[::1]:7000"));
        assert!(!is_loopback("0.0.0.0:7000"));
        assert!(!is_loopback("[::]:7000"));
        assert!(!is_loopback("192.0.2.1:7000"));
        assert!(!is_loopback("not an address"));
    }
}
