//! The cluster-wide settings (CIDRs, cluster domain, disabled components), stored in plain
//! JSON at [`SETTINGS_KEY`]: the first server records its own, every later one compares
//! and refuses to start, naming each setting that differs. Only `--disable` may change,
//! on a restart while no other server runs.

use serde::{Deserialize, Serialize};

use super::{BootstrapError, SETTINGS_KEY};
use crate::membership;
use capstan_datastore::{KeyRange, ListRequest, Store, WriteOutcome};

/// One cluster-wide setting that differs between this server and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDifference {
    /// The flag naming it, e.g. `service-cidr`.
    pub setting: &'static str,
    /// This server's value.
    pub this_server: String,
    /// The cluster's value.
    pub cluster: String,
}

impl std::fmt::Display for SettingDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |value: &str| {
            if value.is_empty() {
                "(none)".to_string()
            } else {
                format!("{value:?}")
            }
        };
        write!(
            f,
            "--{} is {} on this server but {} in the cluster",
            self.setting,
            shown(&self.this_server),
            shown(&self.cluster)
        )
    }
}

/// The settings every server of one cluster must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSettings {
    /// Pod network (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// Service network (`--service-cidr`).
    pub service_cidr: String,
    /// DNS domain of the cluster (`--cluster-domain`).
    pub cluster_domain: String,
    /// Bundled components not deployed (`--disable`), sorted, without duplicates.
    pub disable: Vec<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings::new("10.42.0.0/16", "10.43.0.0/16", "cluster.local", &[])
    }
}

impl ClusterSettings {
    /// The settings, normalized (trimmed, lower-case domain, `disable` sorted and deduplicated)
    /// so the same configuration written differently compares equal.
    pub fn new(
        cluster_cidr: &str,
        service_cidr: &str,
        cluster_domain: &str,
        disable: &[String],
    ) -> ClusterSettings {
        let mut disable: Vec<String> = disable
            .iter()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .collect();
        disable.sort();
        disable.dedup();
        let cidrs = |text: &str| {
            text.split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(",")
        };
        ClusterSettings {
            cluster_cidr: cidrs(cluster_cidr),
            service_cidr: cidrs(service_cidr),
            cluster_domain: cluster_domain
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            disable,
        }
    }

    /// Checks the CIDRs (`address/prefix`, comma-separated for dual stack) and the domain.
    pub fn validate(&self) -> Result<(), BootstrapError> {
        for (setting, value) in [
            ("cluster-cidr", &self.cluster_cidr),
            ("service-cidr", &self.service_cidr),
        ] {
            let invalid = |reason: &str| BootstrapError::InvalidSetting {
                setting,
                value: value.clone(),
                reason: reason.to_string(),
            };
            if value.is_empty() {
                return Err(invalid("must not be empty"));
            }
            for cidr in value.split(',') {
                let (address, prefix) = cidr
                    .split_once('/')
                    .ok_or_else(|| invalid("expected ADDRESS/PREFIX, e.g. 10.43.0.0/16"))?;
                let address: std::net::IpAddr = address
                    .parse()
                    .map_err(|_| invalid("the address is not an IP address"))?;
                let bits = if address.is_ipv4() { 32 } else { 128 };
                match prefix.parse::<u8>() {
                    Ok(prefix) if prefix <= bits => {}
                    _ => return Err(invalid("the prefix length is out of range")),
                }
            }
        }
        let domain_ok = !self.cluster_domain.is_empty()
            && self.cluster_domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return Err(BootstrapError::InvalidSetting {
                setting: "cluster-domain",
                value: self.cluster_domain.clone(),
                reason: "expected a DNS domain such as cluster.local".to_string(),
            });
        }
        Ok(())
    }

    /// Each setting where `self` (this server) differs from `cluster`.
    pub fn differences(&self, cluster: &ClusterSettings) -> Vec<SettingDifference> {
        let mut differences = Vec::new();
        let mut compare = |setting, ours: String, theirs: String| {
            if ours != theirs {
                differences.push(SettingDifference {
                    setting,
                    this_server: ours,
                    cluster: theirs,
                });
            }
        };
        compare(
            "cluster-cidr",
            self.cluster_cidr.clone(),
            cluster.cluster_cidr.clone(),
        );
        compare(
            "service-cidr",
            self.service_cidr.clone(),
            cluster.service_cidr.clone(),
        );
        compare(
            "cluster-domain",
            self.cluster_domain.clone(),
            cluster.cluster_domain.clone(),
        );
        compare("disable", self.disable.join(","), cluster.disable.join(","));
        differences
    }
}

/// Records `settings` as the cluster's if none are recorded, else compares.
pub(super) async fn reconcile_settings(
    store: &Store,
    settings: &ClusterSettings,
) -> Result<(), BootstrapError> {
    loop {
        if let Some(stored) = store.get(SETTINGS_KEY).await? {
            let cluster: ClusterSettings =
                serde_json::from_slice(&stored.value).map_err(|error| BootstrapError::Corrupt {
                    key: SETTINGS_KEY,
                    reason: error.to_string(),
                })?;
            let differences = settings.differences(&cluster);
            if differences.is_empty() {
                return Ok(());
            }
            // `--disable` may change on a restart, as K3s users expect, as long as no other
            // server is running with the old list; the networks and domain never change.
            let only_disable = differences.iter().all(|d| d.setting == "disable");
            if !only_disable || other_servers_live(store).await? {
                return Err(BootstrapError::SettingsMismatch { differences });
            }
            let value = serde_json::to_vec(settings)
                .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))?;
            if let WriteOutcome::Applied { .. } = store
                .update(SETTINGS_KEY, value, stored.mod_revision)
                .await?
            {
                tracing::warn!(
                    from = %cluster.disable.join(","),
                    to = %settings.disable.join(","),
                    "no other server is running: the cluster's --disable list changes to this server's"
                );
                return Ok(());
            }
            // Someone else changed the settings meanwhile: compare again.
            continue;
        }
        let value = serde_json::to_vec(settings)
            .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))?;
        if let WriteOutcome::Applied { .. } = store.create(SETTINGS_KEY, value).await? {
            return Ok(());
        }
        // Another server recorded its settings first: compare with those.
    }
}

/// Whether any server's membership record is still fresh (this server has none yet).
async fn other_servers_live(store: &Store) -> Result<bool, BootstrapError> {
    let page = store
        .list(&ListRequest {
            range: KeyRange::prefix(membership::SERVERS_PREFIX),
            revision: None,
            limit: 0,
        })
        .await?;
    let records: Vec<membership::ServerRecord> = page
        .items
        .iter()
        .filter_map(|item| serde_json::from_slice(&item.value).ok())
        .collect();
    Ok(!membership::live_servers(&records, std::time::SystemTime::now()).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_compare_normalized_and_name_each_difference() {
        let ours = ClusterSettings::new(
            "10.42.0.0/16",
            " 10.44.0.0/16 ",
            "Cluster.Local.",
            &["traefik".into(), "coredns".into(), "traefik".into()],
        );
        assert_eq!(ours.cluster_domain, "cluster.local");
        assert_eq!(ours.disable, ["coredns", "traefik"]);
        assert!(ours.validate().is_ok());
        let cluster = ClusterSettings::default();
        let differences = ours.differences(&cluster);
        let settings: Vec<_> = differences.iter().map(|d| d.setting).collect();
        assert_eq!(settings, ["service-cidr", "disable"]);
        let message = BootstrapError::SettingsMismatch { differences }.to_string();
        assert!(message.contains("--service-cidr"), "{message}");
        assert!(
            message.contains("10.44.0.0/16") && message.contains("10.43.0.0/16"),
            "{message}"
        );
    }

    #[test]
    fn malformed_settings_are_refused() {
        for (cluster_cidr, service_cidr, domain) in [
            ("10.42.0.0", "10.43.0.0/16", "cluster.local"),
            ("10.42.0.0/16", "10.43.0.0/33", "cluster.local"),
            ("10.42.0.0/16", "fd00::/129", "cluster.local"),
            ("10.42.0.0/16", "10.43.0.0/16", "bad domain"),
        ] {
            let settings = ClusterSettings::new(cluster_cidr, service_cidr, domain, &[]);
            assert!(settings.validate().is_err(), "{settings:?}");
        }
        let dual = ClusterSettings::new("10.42.0.0/16,fd00:42::/56", "10.43.0.0/16", "c.l", &[]);
        assert!(dual.validate().is_ok());
    }
}
