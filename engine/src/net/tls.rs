//! The consortium CA and mutual-TLS configurations (rustls with the ring provider, TLS 1.3 only).
//!
//! Every connection authenticates both ends with a certificate chained to the one consortium CA;
//! a certificate from any other issuer is refused during the handshake. Identities follow the CN
//! scheme in `identity`. Keys are ECDSA P-256. PEM in and out, so `reckon init` can write files.

use std::io::BufReader;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

use super::identity::{subject_common_name, PeerIdentity};

/// Lifetime of every certificate the consortium CA issues (and of the CA itself).
pub const CERT_VALIDITY_YEARS: i32 = 10;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier configuration rejected: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM input has no certificate")]
    NoCertificate,
    #[error("PEM input has no private key")]
    NoPrivateKey,
    #[error("PEM input is malformed: {0}")]
    Pem(std::io::Error),
    #[error("CA certificate has no subject common name")]
    CaWithoutName,
}

/// The consortium's certificate authority. Keep `key_pem()` offline once the nodes are issued.
pub struct ConsortiumCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams) {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (seconds / 31_556_952) as i32;
    // From the start of last year, so a slightly slow peer clock still accepts a fresh cert.
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + CERT_VALIDITY_YEARS, 1, 1);
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    params
}

/// Makes a new consortium CA named `name` (its CN).
pub fn generate_ca(name: &str) -> Result<ConsortiumCa, TlsError> {
    assert!(!name.is_empty(), "CA name must not be empty");
    let key = KeyPair::generate()?;
    let cert = ca_params(name).self_signed(&key)?;
    let cert_pem = cert.pem();
    Ok(ConsortiumCa {
        cert,
        key,
        cert_pem,
    })
}

impl ConsortiumCa {
    /// Loads a CA written by `generate_ca`. The issuing certificate is rebuilt from the original's
    /// CN and key (same subject and key, so issued certificates chain to the original PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ConsortiumCa, TlsError> {
        let der = first_cert(cert_pem)?;
        let name = subject_common_name(&der).ok_or(TlsError::CaWithoutName)?;
        let key = KeyPair::from_pem(key_pem)?;
        let cert = ca_params(&name).self_signed(&key)?;
        Ok(ConsortiumCa {
            cert,
            key,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The CA certificate every node and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn issue(
        &self,
        identity: PeerIdentity,
        sans: &[String],
        server: bool,
    ) -> Result<IssuedCert, TlsError> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.common_name());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A validator node's certificate: server and client auth (nodes accept and dial). `sans` are the
/// IP addresses and DNS names peers and clients dial it by.
pub fn issue_node_cert(
    ca: &ConsortiumCa,
    validator: u32,
    sans: &[String],
) -> Result<IssuedCert, TlsError> {
    assert!(
        !sans.is_empty(),
        "a node certificate needs at least one IP or DNS name"
    );
    ca.issue(PeerIdentity::Node { validator }, sans, true)
}

/// An institution's client certificate (client auth only).
pub fn issue_client_cert(ca: &ConsortiumCa, institution: u32) -> Result<IssuedCert, TlsError> {
    ca.issue(PeerIdentity::Institution { institution }, &[], false)
}

fn first_cert(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    let mut reader = BufReader::new(pem.as_bytes());
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(cert)) => Ok(cert),
        Some(Err(error)) => Err(TlsError::Pem(error)),
        None => Err(TlsError::NoCertificate),
    }
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut reader = BufReader::new(pem.as_bytes());
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut reader = BufReader::new(pem.as_bytes());
    rustls_pemfile::private_key(&mut reader)
        .map_err(TlsError::Pem)?
        .ok_or(TlsError::NoPrivateKey)
}

fn roots(ca_cert_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(ca_cert_pem)? {
        store.add(cert)?;
    }
    assert!(!store.is_empty());
    Ok(Arc::new(store))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: presents `own`, requires a client certificate chained to the consortium CA.
pub fn server_config(ca_cert_pem: &str, own: &IssuedCert) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca_cert_pem)?, provider()).build()?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&own.cert_pem)?, private_key(&own.key_pem)?)?;
    Ok(Arc::new(config))
}

/// Client side: trusts only the consortium CA and presents `own` as its client certificate.
pub fn client_config(ca_cert_pem: &str, own: &IssuedCert) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_cert_pem)?)
        .with_client_auth_cert(certs(&own.cert_pem)?, private_key(&own.key_pem)?)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certs_carry_the_identity_cn() {
        let ca = generate_ca("Reckon Test Consortium CA").expect("ca");
        let node = issue_node_cert(&ca, 4, &["127.0.0.1".into(), "node4.bank.example".into()])
            .expect("node");
        let client = issue_client_cert(&ca, 9).expect("client");
        let cn = |pem: &str| subject_common_name(&first_cert(pem).expect("cert"));
        assert_eq!(cn(&node.cert_pem).as_deref(), Some("reckon-node-4"));
        assert_eq!(
            cn(&client.cert_pem).as_deref(),
            Some("reckon-institution-9")
        );
        assert_eq!(
            cn(ca.cert_pem()).as_deref(),
            Some("Reckon Test Consortium CA")
        );
        server_config(ca.cert_pem(), &node).expect("server config");
        client_config(ca.cert_pem(), &client).expect("client config");
        assert!(
            !format!("{node:?}").contains("PRIVATE"),
            "Debug must not print keys"
        );
    }

    #[test]
    fn bad_pem_gives_specific_errors() {
        assert!(matches!(roots("not pem"), Err(TlsError::NoCertificate)));
        assert!(matches!(
            private_key("not pem"),
            Err(TlsError::NoPrivateKey)
        ));
        let ca = generate_ca("ca").expect("ca");
        assert!(matches!(
            ConsortiumCa::from_pem(ca.cert_pem(), "junk"),
            Err(TlsError::Rcgen(_))
        ));
    }
}
