//! Certificates of a cluster: one CA, serving certificates for the API (with every name and
//! address clients use in their SANs), client certificates (Kubernetes reads the user from
//! the CN and the groups from O), and the admin kubeconfig that carries one.
//!
//! Keys are ECDSA P-256 (rcgen on ring, the crypto provider of the whole binary). Lifetimes
//! follow K3s: ten years for the CA, one year for leaf certificates, which the server
//! renews. Storing the CA (encrypted, in the datastore, shared by every server) is the
//! cluster bootstrap's job, not this file's.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use capstan_machinery::kubeconfig::{Kubeconfig, Material};

/// How long the cluster CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long serving and client certificates are valid.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// The user name of a node identity is this prefix and the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group of every node identity.
pub const NODES_GROUP: &str = "system:nodes";
/// A node certificate's OU starts with this, followed by the token generation (the datastore
/// revision of the sealed bootstrap data when it was issued; see `cluster::bootstrap`).
pub const TOKEN_GENERATION_UNIT: &str = "capstan:token-generation=";
/// Leaf certificates start an hour in the past, so clocks a little behind still accept them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A certificate failed to generate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A name for a certificate is not a valid DNS name or IP address.
    #[error(
        "certificate name {name:?} is neither a DNS name nor an IP address (check --tls-san and --advertise-address)"
    )]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// Key generation or signing failed.
    #[error("could not {what}: {source}")]
    Crypto {
        /// What was being done.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
}

fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Crypto { what, source }
}

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster's certificate authority.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    cert_pem: String,
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

impl CertificateAuthority {
    /// A new CA named `common_name` (for example `capstan-ca@<unix time>`).
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(crypto("generate the CA key"))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(crypto("self-sign the CA"))?;
        Ok(CertificateAuthority {
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA stored earlier as `cert_pem` and `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(crypto("read the CA key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(crypto("read the CA certificate"))?;
        Ok(CertificateAuthority {
            issuer,
            key_pem: key_pem.to_string(),
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The CA certificate, PEM (what clients trust and agents hash into the join token).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// A serving certificate valid for every one of `names` (DNS names and IP addresses).
    pub fn issue_serving(&self, names: &[String]) -> Result<IssuedCert, CertError> {
        let mut params = CertificateParams::default();
        for name in names {
            // rcgen takes any ASCII as a DNS name; clients judge names by this rule.
            let invalid = || CertError::InvalidName { name: name.clone() };
            rustls_pki_types::ServerName::try_from(name.as_str()).map_err(|_| invalid())?;
            let san = CertificateParams::new(vec![name.clone()]).map_err(|_| invalid())?;
            params.subject_alt_names.extend(san.subject_alt_names);
        }
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, "capstan-server");
        params.distinguished_name = subject;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, "sign a serving certificate")
    }

    /// A client certificate for user `common_name` in groups `organizations`
    /// (`system:masters` makes an administrator).
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[&str],
    ) -> Result<IssuedCert, CertError> {
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        for organization in organizations {
            subject.push(DnType::OrganizationName, *organization);
        }
        subject.push(DnType::CommonName, common_name);
        params.distinguished_name = subject;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, "sign a client certificate")
    }

    /// The client certificate of node `node`: user `system:node:<node>` in group
    /// `system:nodes`, stamped with the cluster token generation it was issued under
    /// ([`TOKEN_GENERATION_UNIT`] in an OU field, which Kubernetes does not read as a group),
    /// so a rotated token retires it.
    pub fn issue_node(&self, node: &str, token_generation: i64) -> Result<IssuedCert, CertError> {
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, NODES_GROUP);
        subject.push(
            DnType::OrganizationalUnitName,
            format!("{TOKEN_GENERATION_UNIT}{token_generation}"),
        );
        subject.push(DnType::CommonName, format!("{NODE_USER_PREFIX}{node}"));
        params.distinguished_name = subject;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, "sign a node certificate")
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        what: &'static str,
    ) -> Result<IssuedCert, CertError> {
        validity(&mut params, LEAF_LIFETIME);
        let key = KeyPair::generate().map_err(crypto("generate a key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(crypto(what))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A kubeconfig for stock kubectl: one cluster at `server` trusting `ca_pem`, one user
/// (`admin`) authenticating with `client`, one context selecting both.
pub fn admin_kubeconfig(server: &str, ca_pem: &str, client: &IssuedCert) -> String {
    Kubeconfig {
        server,
        certificate_authority: Material::Pem(ca_pem),
        client_certificate: Material::Pem(&client.cert_pem),
        client_key: Material::Pem(&client.key_pem),
        cluster: "capstan",
        user: "admin",
        context: "capstan",
    }
    .render()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use std::sync::Arc;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn trusting(ca: &CertificateAuthority) -> Arc<RootCertStore> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        roots.add(der(ca.cert_pem())).unwrap();
        Arc::new(roots)
    }

    #[test]
    fn a_serving_certificate_is_valid_for_its_names_and_no_other() {
        let ca = CertificateAuthority::generate("capstan-ca@test").unwrap();
        let names = ["localhost", "127.0.0.1", "api.example.org"].map(String::from);
        let serving = ca.issue_serving(&names).unwrap();
        let verifier = WebPkiServerVerifier::builder(trusting(&ca))
            .build()
            .unwrap();
        let check = |name: &str| {
            verifier.verify_server_cert(
                &der(&serving.cert_pem),
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        for name in &names {
            assert!(check(name).is_ok(), "{name} must be accepted");
        }
        assert!(check("other.example.org").is_err());
        assert!(check("127.0.0.2").is_err());
        assert!(PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).is_ok());

        let stranger = CertificateAuthority::generate("another-cluster").unwrap();
        let stranger_verifier = WebPkiServerVerifier::builder(trusting(&stranger))
            .build()
            .unwrap();
        let foreign = stranger_verifier.verify_server_cert(
            &der(&serving.cert_pem),
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        );
        assert!(
            foreign.is_err(),
            "another cluster's CA must not vouch for our server"
        );
    }

    #[test]
    fn client_certificates_are_accepted_only_by_their_own_cluster() {
        let ca = CertificateAuthority::generate("capstan-ca@test").unwrap();
        let admin = ca.issue_client("admin", &["system:masters"]).unwrap();
        let ours = WebPkiClientVerifier::builder(trusting(&ca))
            .build()
            .unwrap();
        assert!(
            ours.verify_client_cert(&der(&admin.cert_pem), &[], UnixTime::now())
                .is_ok()
        );
        let stranger = CertificateAuthority::generate("another-cluster").unwrap();
        let theirs = WebPkiClientVerifier::builder(trusting(&stranger))
            .build()
            .unwrap();
        assert!(
            theirs
                .verify_client_cert(&der(&admin.cert_pem), &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn a_name_that_is_neither_dns_nor_ip_is_refused() {
        let ca = CertificateAuthority::generate("capstan-ca@test").unwrap();
        let error = ca
            .issue_serving(&["bad name\u{7}".to_string()])
            .unwrap_err();
        assert!(error.to_string().contains("bad name"), "{error}");
    }

    #[test]
    fn the_admin_kubeconfig_carries_the_server_ca_and_client_pair() {
        use base64::Engine as _;
        let ca = CertificateAuthority::generate("capstan-ca@test").unwrap();
        let admin = ca.issue_client("admin", &["system:masters"]).unwrap();
        let text = admin_kubeconfig("https://127.0.0.1:6443", ca.cert_pem(), &admin);
        let parsed: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let decode = |pointer: &str| {
            let data = parsed.pointer(pointer).and_then(|v| v.as_str()).unwrap();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            parsed
                .pointer("/clusters/0/cluster/server")
                .and_then(|v| v.as_str()),
            Some("https://127.0.0.1:6443")
        );
        assert_eq!(
            decode("/clusters/0/cluster/certificate-authority-data"),
            ca.cert_pem()
        );
        assert_eq!(
            decode("/users/0/user/client-certificate-data"),
            admin.cert_pem
        );
        assert_eq!(decode("/users/0/user/client-key-data"), admin.key_pem);
        assert_eq!(
            parsed.pointer("/current-context").and_then(|v| v.as_str()),
            Some("capstan")
        );
    }
}
