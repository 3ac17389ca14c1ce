//! Kubeconfig files, as stock kubectl and client-go read them: the one renderer behind the
//! admin kubeconfig a server writes (`pki`) and the node kubeconfig an agent writes for its
//! local clients (`agent`).
//!
//! A Capstan kubeconfig always holds one cluster, one user and one context selecting both,
//! made current. The text is serialized by serde-saphyr rather than formatted by hand, so a
//! server URL or a path that YAML would misread (`yes`, `a: b`, ` #`) comes out quoted,
//! and everything else stays plain and readable (`server: https://127.0.0.1:6443`).

use std::fmt;

use base64::Engine as _;
use serde::Serialize;

/// Where a certificate, or a key, of a kubeconfig comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Material<'a> {
    /// PEM text, carried inline (base64) in the `…-data` field.
    Pem(&'a str),
    /// A file the client reads, named in the field without `-data`.
    File(&'a str),
}

impl fmt::Debug for Material<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Keys are PEM too: never print one.
            Material::Pem(_) => f.write_str("Pem(<redacted>)"),
            Material::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// One cluster at `server` trusting `certificate_authority`, one user authenticating with
/// a client certificate and key, and one context (the current one) selecting both.
#[derive(Debug, Clone)]
pub struct Kubeconfig<'a> {
    /// The API server's URL, `https://host:port`.
    pub server: &'a str,
    /// The CA bundle the client verifies the server with.
    pub certificate_authority: Material<'a>,
    /// The client certificate.
    pub client_certificate: Material<'a>,
    /// Its private key.
    pub client_key: Material<'a>,
    /// The name of the cluster entry.
    pub cluster: &'a str,
    /// The name of the user entry.
    pub user: &'a str,
    /// The name of the context entry.
    pub context: &'a str,
}

impl Kubeconfig<'_> {
    /// The kubeconfig as YAML text.
    pub fn render(&self) -> String {
        let file = File {
            api_version: "v1",
            kind: "Config",
            clusters: [Named {
                name: self.cluster,
                cluster: Some(ClusterEntry {
                    server: self.server,
                    certificate_authority: self.certificate_authority.file(),
                    certificate_authority_data: self.certificate_authority.data(),
                }),
                user: None,
                context: None,
            }],
            users: [Named {
                name: self.user,
                cluster: None,
                user: Some(UserEntry {
                    client_certificate: self.client_certificate.file(),
                    client_certificate_data: self.client_certificate.data(),
                    client_key: self.client_key.file(),
                    client_key_data: self.client_key.data(),
                }),
                context: None,
            }],
            contexts: [Named {
                name: self.context,
                cluster: None,
                user: None,
                context: Some(ContextEntry {
                    cluster: self.cluster,
                    user: self.user,
                }),
            }],
            current_context: self.context,
        };
        let mut options = serde_saphyr::SerializerOptions::default();
        // Base64 on one line: a folded block (`>-`) is valid YAML, but not what people (or
        // `grep`) expect of a kubeconfig.
        options.prefer_block_scalars = false;
        serde_saphyr::to_string_with_options(&file, options)
            .expect("a kubeconfig holds only strings, which YAML can always represent")
    }
}

impl Material<'_> {
    fn data(&self) -> Option<String> {
        match self {
            Material::Pem(pem) => Some(base64::engine::general_purpose::STANDARD.encode(pem)),
            Material::File(_) => None,
        }
    }

    fn file(&self) -> Option<&str> {
        match self {
            Material::Pem(_) => None,
            Material::File(path) => Some(path),
        }
    }
}

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [Named<'a>; 1],
    users: [Named<'a>; 1],
    contexts: [Named<'a>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
}

/// An entry of `clusters`, `users` or `contexts`: a name and exactly one of the three.
#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<ContextEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry<'a> {
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfTCCASOgAwIBAgIUaLKmesmjUUstgGP\n-----END CERTIFICATE-----\n";
    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBgDCCASagAwIBAgIUHc3bT\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n";

    fn inline(server: &str) -> Kubeconfig<'_> {
        Kubeconfig {
            server,
            certificate_authority: Material::Pem(CA),
            client_certificate: Material::Pem(CERT),
            client_key: Material::Pem(KEY),
            cluster: "capstan",
            user: "node",
            context: "capstan",
        }
    }

    fn parse(text: &str) -> Value {
        serde_saphyr::from_str(text).expect("the kubeconfig is YAML")
    }

    fn text_at<'v>(parsed: &'v Value, pointer: &str) -> &'v str {
        parsed
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} is a string in {parsed}"))
    }

    fn decoded(parsed: &Value, pointer: &str) -> String {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text_at(parsed, pointer))
            .expect("base64");
        String::from_utf8(bytes).expect("PEM is text")
    }

    #[test]
    fn inline_material_is_base64_in_the_data_fields_and_one_context_selects_all() {
        let text = inline("https://127.0.0.1:6444").render();
        assert!(
            text.contains("server: https://127.0.0.1:6444\n"),
            "a plain URL stays plain: {text}"
        );
        let ca_data = base64::engine::general_purpose::STANDARD.encode(CA);
        assert!(
            text.contains(&format!("certificate-authority-data: {ca_data}\n")),
            "base64 on one line: {text}"
        );
        let parsed = parse(&text);
        assert_eq!(text_at(&parsed, "/apiVersion"), "v1");
        assert_eq!(text_at(&parsed, "/kind"), "Config");
        assert_eq!(text_at(&parsed, "/clusters/0/name"), "capstan");
        assert_eq!(
            decoded(&parsed, "/clusters/0/cluster/certificate-authority-data"),
            CA
        );
        assert_eq!(text_at(&parsed, "/users/0/name"), "node");
        assert_eq!(
            decoded(&parsed, "/users/0/user/client-certificate-data"),
            CERT
        );
        assert_eq!(decoded(&parsed, "/users/0/user/client-key-data"), KEY);
        assert_eq!(text_at(&parsed, "/contexts/0/context/cluster"), "capstan");
        assert_eq!(text_at(&parsed, "/contexts/0/context/user"), "node");
        assert_eq!(text_at(&parsed, "/current-context"), "capstan");
        assert!(
            parsed
                .pointer("/clusters/0/cluster/certificate-authority")
                .is_none()
        );
        assert!(parsed.pointer("/users/0/user/client-key").is_none());
    }

    #[test]
    fn urls_and_paths_yaml_would_misread_come_back_unchanged() {
        for server in [
            "yes",
            "https://h:1/a: b",
            "https://h:1/x #not a comment",
            "'quoted'",
        ] {
            let parsed = parse(&inline(server).render());
            assert_eq!(text_at(&parsed, "/clusters/0/cluster/server"), server);
        }
        let config = Kubeconfig {
            certificate_authority: Material::File("/etc/capstan/ca: bundle.crt"),
            client_certificate: Material::File("/var/lib/capstan/client.crt"),
            client_key: Material::File("null"),
            ..inline("https://[::1]:6443")
        };
        let text = config.render();
        let parsed = parse(&text);
        assert_eq!(
            text_at(&parsed, "/clusters/0/cluster/server"),
            "https://[::1]:6443"
        );
        assert_eq!(
            text_at(&parsed, "/clusters/0/cluster/certificate-authority"),
            "/etc/capstan/ca: bundle.crt"
        );
        assert_eq!(
            text_at(&parsed, "/users/0/user/client-certificate"),
            "/var/lib/capstan/client.crt"
        );
        assert_eq!(text_at(&parsed, "/users/0/user/client-key"), "null");
        assert!(
            !text.contains("-data"),
            "files are named, not inlined: {text}"
        );
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let shown = format!("{:?}", inline("https://127.0.0.1:6443"));
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("127.0.0.1:6443"), "{shown}");
    }
}
