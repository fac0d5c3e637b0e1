//! TLS for the carrier connections: rustls with the ring provider.

use super::Error;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_rustls::rustls::{AlertDescription, ProtocolVersion, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

// rustls 0.23.48 deprecates ring's provider (no post-quantum key exchange); the
// aws-lc-rs one would need cmake and nasm to build.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::Usage(format!("cannot read {flag} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no CERTIFICATE in it"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Usage(format!("cannot read --tls-key {}: {e}", path.display())))
}

fn roots(path: &Path, flag: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path, flag)? {
        roots
            .add(cert)
            .map_err(|e| Error::Usage(format!("unusable {flag} {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The server's TLS acceptor from a PEM certificate chain and its PEM private key.
/// With `client_ca` (mutual TLS), clients must present a certificate signed by one of
/// the CAs in that PEM file.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, Error> {
    let chain = certs(cert, "--tls-cert")?;
    let key = private_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "--tls-client-ca")?),
                provider(),
            )
            .build()
            .map_err(|e| Error::Usage(format!("unusable --tls-client-ca {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| Error::Usage(format!("unusable --tls-cert/--tls-key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client's TLS settings: a connector and the name the certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    /// Makes TLS connections.
    pub connector: TlsConnector,
    /// The name checked against the server's certificate (and sent as SNI).
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// Trusts the CAs in the PEM file `ca`, or, with `None`, any certificate at all.
    /// With `identity` (certificate chain, private key), presents that certificate to
    /// servers that ask for one (mutual TLS).
    pub fn new(
        ca: Option<&Path>,
        server_name: &str,
        identity: Option<(&Path, &Path)>,
    ) -> Result<ClientTls, Error> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
        let builder = match ca {
            Some(path) => builder.with_root_certificates(roots(path, "--tls-ca")?),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider()))),
        };
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(certs(cert, "--tls-cert")?, private_key(key)?)
                .map_err(|e| Error::Usage(format!("unusable --tls-cert/--tls-key: {e}")))?,
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| Error::Usage(format!("invalid TLS server name `{server_name}`")))?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// How much of the socket a TLS connection reads at once.
const READ_BUFFER: usize = 64 * 1024;

/// The socket under a TLS connection, read through a buffer: rustls reads its input
/// 4 KiB at a time, so a TLS carrier made 16 times the read calls of a plain one.
pub type BufferedTcp = tokio::io::BufReader<TcpStream>;

/// `tcp` read through a buffer, for TLS.
pub fn buffered(tcp: TcpStream) -> BufferedTcp {
    tokio::io::BufReader::with_capacity(READ_BUFFER, tcp)
}

/// After a TLS 1.3 handshake, waits (up to `within`) for the server's verdict on our
/// certificate: in TLS 1.3 the client finishes first and a server that refuses the
/// client's certificate says so only afterwards, with an alert. The session tickets a
/// server sends once it accepted the client (rustls and Go do) end the wait early; a
/// server that sends none costs `within`.
pub async fn await_verdict(
    tls: &mut tokio_rustls::client::TlsStream<BufferedTcp>,
    within: Duration,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (tcp, conn) = tls.get_mut();
        if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3)
            || conn.tls13_tickets_received() > 0
        {
            return Ok(());
        }
        // What the buffer holds already needs no wait.
        if tcp.buffer().is_empty() {
            match tokio::time::timeout_at(deadline, tcp.get_ref().readable()).await {
                Err(_) => return Ok(()),
                Ok(ready) => ready?,
            }
        }
        match conn.read_tls(&mut TryRead(tcp)) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the server closed the connection right after the TLS handshake",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if let Err(e) = conn.process_new_packets() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                refusal_reason(&e),
            ));
        }
    }
}

/// A one-line reason for a TLS failure, naming the likely fix for refused client
/// certificates.
pub fn refusal_reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate: add --tls-cert and --tls-key".into()
        }
        rustls::Error::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied),
        ) => format!(
            "the server refused our client certificate ({a:?}): --tls-cert must be signed by a CA in the server's --tls-client-ca"
        ),
        e => format!("TLS: {e}"),
    }
}

/// `std::io::Read` over a buffered non-blocking tokio socket: what its buffer holds,
/// then what the socket has.
struct TryRead<'a>(&'a mut BufferedTcp);

impl std::io::Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let held = self.0.buffer();
        if held.is_empty() {
            return self.0.get_ref().try_read(buf);
        }
        let n = held.len().min(buf.len());
        buf[..n].copy_from_slice(&held[..n]);
        tokio::io::AsyncBufRead::consume(std::pin::Pin::new(&mut *self.0), n);
        Ok(n)
    }
}

/// `--tls-insecure-skip-verify`: accepts any certificate (signatures are still checked,
/// so the handshake is consistent, but anyone can be the server).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// What the buffer read ahead (during the handshake) is read first, then the socket.
    #[tokio::test]
    async fn try_read_takes_the_buffer_before_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sent, got) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut peer, mut tcp) = (sent.unwrap(), buffered(got.unwrap().0));
        peer.write_all(b"0123456789").await.unwrap();
        // All ten bytes in the socket, then one fill takes them into the buffer.
        let mut peek = [0u8; 10];
        while tcp.get_ref().peek(&mut peek).await.unwrap() < 10 {}
        assert_eq!(tcp.fill_buf().await.unwrap().len(), 10);
        let mut out = [0u8; 4];
        assert_eq!(TryRead(&mut tcp).read(&mut out).unwrap(), 4);
        assert_eq!(&out, b"0123");
        let mut out = [0u8; 16];
        assert_eq!(TryRead(&mut tcp).read(&mut out).unwrap(), 6);
        assert_eq!(&out[..6], b"456789");
        let err = TryRead(&mut tcp).read(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        peer.write_all(b"ab").await.unwrap();
        tcp.get_ref().readable().await.unwrap();
        assert_eq!(TryRead(&mut tcp).read(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"ab");
    }
}
