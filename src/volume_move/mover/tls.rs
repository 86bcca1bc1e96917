//! The mover's mutual TLS: both sides trust only the move's own CA (`ca.crt`), whose key
//! nobody holds after the two certificates were signed, so only this move's sender and
//! receiver can complete a handshake with each other. TLS 1.3 only.

use std::{path::Path, sync::Arc, time::Duration};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// A TCP connection that does not finish its handshake in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| format!("--credentials: cannot read {}: {e}", path.display()))
}

fn certificates(dir: &Path, name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(dir, name)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--credentials: {name} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("--credentials: {name} holds no certificate"));
    }
    Ok(certs)
}

fn roots(dir: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(dir, "ca.crt")? {
        roots
            .add(cert)
            .map_err(|e| format!("--credentials: ca.crt is not a CA certificate: {e}"))?;
    }
    Ok(roots)
}

fn key(dir: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(&read(dir, "tls.key")?)
        .map_err(|e| format!("--credentials: tls.key is not a PEM private key: {e}"))
}

/// The receiver's TLS: presents `tls.crt`, and requires a client certificate that
/// chains to `ca.crt` (the handshake fails for any other client, or none).
pub fn server_config(dir: &Path) -> Result<ServerConfig, String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(dir)?), provider())
        .build()
        .map_err(|e| format!("--credentials: ca.crt: {e}"))?;
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(dir, "tls.crt")?, key(dir)?)
        .map_err(|e| format!("--credentials: tls.crt and tls.key: {e}"))
}

/// The sender's TLS: trusts only `ca.crt`, presents `tls.crt` as its client certificate.
pub fn client_config(dir: &Path) -> Result<ClientConfig, String> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(dir)?)
        .with_client_auth_cert(certificates(dir, "tls.crt")?, key(dir)?)
        .map_err(|e| format!("--credentials: tls.crt and tls.key: {e}"))
}

/// The sender's progress server ([`super::progress`]): presents `tls.crt` (which names
/// the sender and allows server use), asks no client certificate (the counters are not
/// secret).
pub fn progress_server_config(dir: &Path) -> Result<ServerConfig, String> {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certificates(dir, "tls.crt")?, key(dir)?)
        .map_err(|e| format!("--credentials: tls.crt and tls.key: {e}"))
}

/// The operator's side of [`progress_server_config`]: trusts only the move's CA.
pub fn progress_client_config(ca_pem: &[u8]) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("ca.crt is not PEM certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca.crt is not a CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca.crt holds no certificate".into());
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Accepts connections until one completes the handshake; the others (a port scanner,
/// a stray pod, a certificate of another CA, no certificate) are logged and dropped.
pub async fn accept_one(
    listener: &TcpListener,
    config: ServerConfig,
) -> Result<server::TlsStream<TcpStream>, String> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = listener
            .accept()
            .await
            .map_err(|e| format!("accepting a connection: {e}"))?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                tracing::info!(%peer, "sender authenticated");
                return Ok(stream);
            }
            Ok(Err(error)) => {
                tracing::warn!(%peer, %error, "refused a connection: TLS handshake failed")
            }
            Err(_) => tracing::warn!(%peer, "refused a connection: no TLS handshake in 10 s"),
        }
    }
}

/// Connects to the receiver, retrying (it may start after the sender) until `timeout`.
pub async fn connect(
    address: &str,
    server_name: &str,
    config: ClientConfig,
    timeout: Duration,
) -> Result<client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("--server-name {server_name:?}: {e}"))?;
    let connector = TlsConnector::from(Arc::new(config));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| format!("connecting to {address}: {e}"))?;
            tcp.set_nodelay(true).ok();
            tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| format!("TLS handshake with {address}: no answer in 10 s"))?
                .map_err(|e| format!("TLS handshake with {address}: {e}"))
        };
        let error = match attempt.await {
            Ok(stream) => return Ok(stream),
            Err(error) => error,
        };
        if tokio::time::Instant::now() + Duration::from_secs(1) >= deadline {
            return Err(format!(
                "{error} (gave up after --connect-timeout {} s)",
                timeout.as_secs()
            ));
        }
        tracing::info!(%error, "receiver not reachable yet, retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
