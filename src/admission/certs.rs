//! The webhook's TLS: by default a CA and a serving certificate generated in memory and
//! rotated before they expire (the CA goes into the webhook configurations' caBundle);
//! or files mounted from a Secret that cert-manager keeps current.

use std::{path::PathBuf, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

/// PEM material for the webhook server and its clients.
#[derive(Clone)]
pub struct Bundle {
    /// The serving certificate (leaf first).
    pub cert_pem: String,
    /// Its private key. Never logged.
    pub key_pem: String,
    /// The CA the API server must trust: goes into `clientConfig.caBundle`.
    pub ca_pem: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not generate the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How long generated certificates are valid. Rotation happens at two thirds of it.
pub const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// When to rotate a certificate generated now.
pub fn rotation_due(validity: Duration) -> Duration {
    validity * 2 / 3
}

/// A fresh CA and a serving certificate for `hosts` (DNS names or IP addresses).
pub fn generate(hosts: &[String], validity: Duration) -> Result<Bundle, Error> {
    let now = OffsetDateTime::now_utc();
    // Clocks of the API server and the operator may differ a little.
    let not_before = now - time::Duration::minutes(5);
    let not_after = now + time::Duration::try_from(validity).unwrap_or(time::Duration::days(30));

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "enclave-operator webhook CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts
            .first()
            .map(String::as_str)
            .unwrap_or("enclave-operator"),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Bundle {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca.pem(),
    })
}

/// Files mounted from a Secret (for example one cert-manager issues): `tls.crt`,
/// `tls.key` and `ca.crt` in `dir`.
pub fn read_dir(dir: &std::path::Path) -> Result<Bundle, Error> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
    };
    Ok(Bundle {
        cert_pem: read("tls.crt")?,
        key_pem: read("tls.key")?,
        ca_pem: read("ca.crt")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bundle_is_pem_and_rotates_before_expiry() {
        let bundle = generate(
            &[
                "127.0.0.1".into(),
                "enclave-operator.enclave-system.svc".into(),
            ],
            VALIDITY,
        )
        .expect("generate");
        assert!(bundle.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.key_pem.contains("PRIVATE KEY"));
        assert_ne!(bundle.cert_pem, bundle.ca_pem);
        assert!(
            !format!("{bundle:?}").contains("PRIVATE KEY"),
            "keys never reach logs"
        );
        assert!(rotation_due(VALIDITY) < VALIDITY);
    }
}
