//! The webhook's TLS material, shared by every replica through one Secret in the
//! operator's namespace, or read from files a cert-manager Certificate mounts.
//!
//! Every replica must serve with a certificate the API server trusts through the one
//! caBundle in the admission configurations: with a CA per process, the second replica
//! (or a rolling update's new pod) would overwrite the first one's caBundle and every
//! in-scope request routed to the other would fail with "certificate signed by unknown
//! authority". So the CA and the serving certificate live in a Secret: the first replica
//! creates it, the others read it, every replica watches it and reloads on change.
//! Renewal needs no leader: writes carry the Secret's resourceVersion, a replica that
//! loses the race re-reads and uses the winner's.
//!
//! Rotation is planned by the pure [`plan`]: the serving certificate is renewed at two
//! thirds of its life; a CA near its end is replaced in two phases — first the new CA is
//! added to the bundle (the old serving certificate stays valid and trusted), and only
//! after [`PROPAGATION`] is a serving certificate issued by the new CA — so that the API
//! server never meets a certificate it does not trust yet.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

/// PEM material for the webhook server and its clients.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The serving certificate (leaf first).
    pub cert_pem: String,
    /// Its private key. Never logged.
    pub key_pem: String,
    /// What the API server must trust: goes into `clientConfig.caBundle`.
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
    #[error("the webhook certificate or key is not usable: {0}")]
    Unusable(String),
    #[error("the webhook Secret {0} is incomplete: {1}")]
    Incomplete(String, String),
}

/// How long a serving certificate is valid; renewed at two thirds of it.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a CA is valid; replaced at two thirds of it.
pub const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a new CA sits in the caBundle before a serving certificate it issued is used.
pub const PROPAGATION: Duration = Duration::from_secs(600);

const CA_NAME: &str = "enclave-operator webhook CA";

/// Annotations of the Secret that say when things were made and expire.
const HOSTS: &str = "enclave.dev/hosts";
const CA_NOT_AFTER: &str = "enclave.dev/ca-not-after";
const CA_CREATED: &str = "enclave.dev/ca-created";
const LEAF_NOT_AFTER: &str = "enclave.dev/tls-not-after";
const LEAF_CREATED: &str = "enclave.dev/tls-created";
const PREVIOUS_CA_NOT_AFTER: &str = "enclave.dev/previous-ca-not-after";
const LEAF_ISSUER: &str = "enclave.dev/tls-issuer";

/// What the shared Secret holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Stored {
    pub ca_cert: String,
    pub ca_key: String,
    /// A CA being replaced, still trusted until it expires.
    pub previous_ca: Option<(String, Timestamp)>,
    pub ca_created: Timestamp,
    pub ca_not_after: Timestamp,
    pub leaf_cert: String,
    pub leaf_key: String,
    pub leaf_created: Timestamp,
    pub leaf_not_after: Timestamp,
    /// [`crate::names::short_hash`] of the CA certificate that issued the leaf.
    pub leaf_issuer: String,
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("hosts", &self.hosts)
            .field("ca_not_after", &self.ca_not_after)
            .field("leaf_not_after", &self.leaf_not_after)
            .finish_non_exhaustive()
    }
}

impl Stored {
    /// What the server serves and the API server trusts.
    pub fn bundle(&self) -> Bundle {
        let mut ca_pem = self.ca_cert.clone();
        if let Some((previous, _)) = &self.previous_ca {
            ca_pem.push_str(previous);
        }
        Bundle {
            cert_pem: self.leaf_cert.clone(),
            key_pem: self.leaf_key.clone(),
            ca_pem,
        }
    }
}

fn ca_params(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

fn offset(ts: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ts.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn after(now: Timestamp, validity: Duration) -> Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(validity).unwrap_or_default())
        .unwrap_or(now)
}

/// Clocks of the API server and the operator may differ a little.
fn backdated(now: Timestamp) -> Timestamp {
    now.checked_sub(jiff::SignedDuration::from_mins(5))
        .unwrap_or(now)
}

/// A new CA valid from `now`.
fn new_ca(now: Timestamp) -> Result<(String, String, Timestamp), Error> {
    let not_after = after(now, CA_VALIDITY);
    let key = KeyPair::generate()?;
    let params = ca_params(offset(backdated(now)), offset(not_after))?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// A serving certificate for `hosts` issued by the CA whose key is `ca_key`.
fn issue(
    ca_key: &str,
    hosts: &[String],
    now: Timestamp,
) -> Result<(String, String, Timestamp), Error> {
    let not_after = after(now, LEAF_VALIDITY);
    let ca_key = KeyPair::from_pem(ca_key)?;
    // We made the CA with these parameters, so they name it exactly.
    let issuer = Issuer::new(ca_params(offset(now), offset(not_after))?, ca_key);
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
    params.not_before = offset(backdated(now));
    params.not_after = offset(not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// What to do with the shared material.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// It is current: serve it.
    Keep,
    /// Write this (create the Secret, or update it at the version read).
    Write(Box<Stored>),
}

fn due(created: Timestamp, not_after: Timestamp, now: Timestamp) -> bool {
    let life = not_after.as_second() - created.as_second();
    now.as_second() >= created.as_second() + life * 2 / 3
}

/// Decides what the shared material should become at `now` for `hosts`. Pure.
pub fn plan(current: Option<&Stored>, hosts: &[String], now: Timestamp) -> Result<Plan, Error> {
    let Some(current) = current else {
        let (ca_cert, ca_key, ca_not_after) = new_ca(now)?;
        let (leaf_cert, leaf_key, leaf_not_after) = issue(&ca_key, hosts, now)?;
        let ca_cert_for_issuer = ca_cert.clone();
        return Ok(Plan::Write(Box::new(Stored {
            ca_cert,
            ca_key,
            previous_ca: None,
            ca_created: now,
            ca_not_after,
            leaf_cert,
            leaf_key,
            leaf_created: now,
            leaf_not_after,
            leaf_issuer: crate::names::short_hash(&ca_cert_for_issuer),
            hosts: hosts.to_vec(),
        })));
    };
    let mut next = current.clone();
    // Phase 1 of a CA rotation: trust the new CA alongside the old one.
    if current.previous_ca.is_none() && due(current.ca_created, current.ca_not_after, now) {
        let (ca_cert, ca_key, ca_not_after) = new_ca(now)?;
        next.previous_ca = Some((current.ca_cert.clone(), current.ca_not_after));
        next.ca_cert = ca_cert;
        next.ca_key = ca_key;
        next.ca_created = now;
        next.ca_not_after = ca_not_after;
        return Ok(Plan::Write(Box::new(next)));
    }
    // An old CA is dropped once it expired: nothing it issued is served any more.
    if next
        .previous_ca
        .as_ref()
        .is_some_and(|(_, not_after)| *not_after <= now)
    {
        next.previous_ca = None;
    }
    let covers = hosts.iter().all(|h| current.hosts.contains(h));
    let issued_by_old_ca = current.leaf_issuer != crate::names::short_hash(&current.ca_cert);
    let new_ca_propagated =
        now.as_second() >= current.ca_created.as_second() + PROPAGATION.as_secs() as i64;
    let renew = !covers
        || due(current.leaf_created, current.leaf_not_after, now)
        // Phase 2: serve a certificate of the new CA once every API server trusts it.
        || (issued_by_old_ca && new_ca_propagated);
    if renew {
        let mut all_hosts = current.hosts.clone();
        for host in hosts {
            if !all_hosts.contains(host) {
                all_hosts.push(host.clone());
            }
        }
        let (leaf_cert, leaf_key, leaf_not_after) = issue(&next.ca_key, &all_hosts, now)?;
        next.leaf_cert = leaf_cert;
        next.leaf_key = leaf_key;
        next.leaf_created = now;
        next.leaf_not_after = leaf_not_after;
        next.leaf_issuer = crate::names::short_hash(&next.ca_cert);
        next.hosts = all_hosts;
    }
    Ok(if next == *current {
        Plan::Keep
    } else {
        Plan::Write(Box::new(next))
    })
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// Reads the shared material from its Secret.
pub fn from_secret(secret: &Secret) -> Result<Stored, Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let incomplete = |what: &str| Error::Incomplete(name.clone(), what.to_string());
    let data = secret.data.as_ref().ok_or_else(|| incomplete("no data"))?;
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let time = |key: &str| -> Result<Timestamp, Error> {
        annotations
            .get(key)
            .and_then(|v| v.parse::<Timestamp>().ok())
            .ok_or_else(|| incomplete(key))
    };
    let field = |key: &str| text(data, key).ok_or_else(|| incomplete(key));
    let previous_ca = match (
        text(data, "previous-ca.crt"),
        annotations.get(PREVIOUS_CA_NOT_AFTER),
    ) {
        (Some(pem), Some(at)) => at.parse::<Timestamp>().ok().map(|at| (pem, at)),
        _ => None,
    };
    Ok(Stored {
        ca_cert: field("current-ca.crt")?,
        ca_key: field("ca.key")?,
        previous_ca,
        ca_created: time(CA_CREATED)?,
        ca_not_after: time(CA_NOT_AFTER)?,
        leaf_cert: field("tls.crt")?,
        leaf_key: field("tls.key")?,
        leaf_created: time(LEAF_CREATED)?,
        leaf_not_after: time(LEAF_NOT_AFTER)?,
        leaf_issuer: annotations.get(LEAF_ISSUER).cloned().unwrap_or_default(),
        hosts: annotations
            .get(HOSTS)
            .map(|h| {
                h.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The Secret holding `stored` (name and namespace set by the caller). `ca.crt` is the
/// bundle to trust, so that the Secret can also be mounted like a cert-manager one.
pub fn to_secret(stored: &Stored, metadata: ObjectMeta) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        ("ca.crt".to_string(), bytes(&stored.bundle().ca_pem)),
        ("current-ca.crt".to_string(), bytes(&stored.ca_cert)),
        ("ca.key".to_string(), bytes(&stored.ca_key)),
        ("tls.crt".to_string(), bytes(&stored.leaf_cert)),
        ("tls.key".to_string(), bytes(&stored.leaf_key)),
    ]);
    let mut annotations = metadata.annotations.clone().unwrap_or_default();
    annotations.insert(HOSTS.into(), stored.hosts.join(","));
    annotations.insert(CA_CREATED.into(), stored.ca_created.to_string());
    annotations.insert(CA_NOT_AFTER.into(), stored.ca_not_after.to_string());
    annotations.insert(LEAF_CREATED.into(), stored.leaf_created.to_string());
    annotations.insert(LEAF_NOT_AFTER.into(), stored.leaf_not_after.to_string());
    annotations.insert(LEAF_ISSUER.into(), stored.leaf_issuer.clone());
    annotations.remove(PREVIOUS_CA_NOT_AFTER);
    if let Some((pem, not_after)) = &stored.previous_ca {
        data.insert("previous-ca.crt".into(), bytes(pem));
        annotations.insert(PREVIOUS_CA_NOT_AFTER.into(), not_after.to_string());
    }
    Secret {
        metadata: ObjectMeta {
            annotations: Some(annotations),
            ..metadata
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
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

/// The serving certificate and key in the form rustls serves.
pub fn certified_key(bundle: &Bundle) -> Result<rustls::sign::CertifiedKey, Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Unusable(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Unusable("no certificate in tls.crt".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())
        .map_err(|e| Error::Unusable(format!("key: {e}")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Error::Unusable(format!("key: {e}")))?;
    Ok(rustls::sign::CertifiedKey::new(certs, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid")
    }

    fn hosts() -> Vec<String> {
        vec![
            "127.0.0.1".into(),
            "enclave-operator.enclave-system.svc".into(),
        ]
    }

    fn written(plan: Plan) -> Stored {
        match plan {
            Plan::Write(stored) => *stored,
            Plan::Keep => panic!("expected a write"),
        }
    }

    #[test]
    fn first_replica_creates_and_the_rest_keep_it() {
        let stored = written(plan(None, &hosts(), at(0)).expect("plan"));
        assert!(stored.leaf_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            certified_key(&stored.bundle()).is_ok(),
            "rustls can serve it"
        );
        assert!(
            !format!("{stored:?}").contains("PRIVATE KEY"),
            "keys never reach logs"
        );
        assert_eq!(
            plan(Some(&stored), &hosts(), at(60)).expect("plan"),
            Plan::Keep
        );
        // The Secret round-trips.
        let secret = to_secret(&stored, ObjectMeta::default());
        assert_eq!(from_secret(&secret).expect("parses"), stored);
    }

    #[test]
    fn the_leaf_renews_at_two_thirds_and_for_new_hosts() {
        let stored = written(plan(None, &hosts(), at(0)).expect("plan"));
        let day = 24 * 3600;
        assert_eq!(
            plan(Some(&stored), &hosts(), at(19 * day)).expect("plan"),
            Plan::Keep
        );
        let renewed = written(plan(Some(&stored), &hosts(), at(21 * day)).expect("plan"));
        assert_ne!(renewed.leaf_cert, stored.leaf_cert);
        assert_eq!(
            renewed.ca_cert, stored.ca_cert,
            "same CA: the caBundle does not change"
        );
        let more = [hosts(), vec!["10.0.0.7".to_string()]].concat();
        let widened = written(plan(Some(&stored), &more, at(60)).expect("plan"));
        assert!(widened.hosts.contains(&"10.0.0.7".to_string()));
        assert!(
            widened.hosts.contains(&"127.0.0.1".to_string()),
            "other replicas' hosts stay"
        );
    }

    #[test]
    fn a_ca_is_replaced_in_two_phases() {
        let day = 24 * 3600;
        let stored = written(plan(None, &hosts(), at(0)).expect("plan"));
        // Keep the leaf fresh so only the CA is due.
        let mut fresh = stored.clone();
        fresh.leaf_created = at(250 * day);
        fresh.leaf_not_after = at(280 * day);
        let phase1 = written(plan(Some(&fresh), &hosts(), at(250 * day)).expect("plan"));
        assert_ne!(phase1.ca_cert, fresh.ca_cert);
        assert_eq!(
            phase1.leaf_cert, fresh.leaf_cert,
            "the old leaf is served meanwhile"
        );
        let bundle = phase1.bundle().ca_pem;
        assert!(
            bundle.contains(&phase1.ca_cert) && bundle.contains(&fresh.ca_cert),
            "both trusted"
        );
        assert_eq!(
            plan(Some(&phase1), &hosts(), at(250 * day + 60)).expect("plan"),
            Plan::Keep
        );
        let phase2 = written(plan(Some(&phase1), &hosts(), at(250 * day + 700)).expect("plan"));
        assert_ne!(
            phase2.leaf_cert, phase1.leaf_cert,
            "a leaf of the new CA once propagated"
        );
        assert!(
            phase2.previous_ca.is_some(),
            "the old CA stays trusted until it expires"
        );
        let dropped = written(plan(Some(&phase2), &hosts(), at(366 * day)).expect("plan"));
        assert!(dropped.previous_ca.is_none());
    }
}
