//! TLS for the carrier connections: rustls with the ring provider.

use super::Error;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_rustls::rustls::{ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

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

/// The server's TLS acceptor from a PEM certificate chain and its PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let chain = certs(cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Usage(format!("cannot read --tls-key {}: {e}", key.display())))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
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
    pub fn new(ca: Option<&Path>, server_name: &str) -> Result<ClientTls, Error> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
        let config = match ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in certs(path, "--tls-ca")? {
                    roots.add(cert).map_err(|e| {
                        Error::Usage(format!("unusable --tls-ca {}: {e}", path.display()))
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth(),
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| Error::Usage(format!("invalid TLS server name `{server_name}`")))?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
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
