//! The `default/kubernetes` Service and its Endpoints and EndpointSlice: how pods (and
//! in-cluster clients such as kube-rs's `Config::incluster`) find the API servers.
//!
//! kube-apiserver keeps these from its lease-based endpoint reconciler; here the leader keeps
//! them equal to the live servers' advertise addresses from the membership records, rewriting
//! them when membership changes and every 30 s anyway (someone may have edited them). The
//! Service is created when missing and otherwise left alone. All servers should listen on the
//! same port (a Service has one target port); the EndpointSlice carries the servers on this
//! leader's port, the Endpoints object one subset per port.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::ControllerError;
use capstan_apiserver::registry::{
    ObjectStore, Part, Registry, RegistryError, ResourceType, WriteOptions,
};
use capstan_cluster::membership::ServerRecord;

/// The service's ClusterIP: the first address of the default service CIDR 10.43.0.0/16.
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";
/// The name (and namespace) of the objects kept here.
const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";
/// Rewrite even without a membership change this often.
const RESYNC: Duration = Duration::from_secs(30);

/// Keeps the objects up to date until membership can no longer be followed.
pub(super) async fn run(
    objects: ObjectStore,
    registry: Arc<Registry>,
    mut servers: watch::Receiver<Vec<ServerRecord>>,
    https_port: u16,
) -> Result<(), ControllerError> {
    loop {
        let current = servers.borrow_and_update().clone();
        // The leader is a live server itself: an empty list only means membership has not
        // been read yet, and writing it would empty the endpoints for a moment.
        if !current.is_empty() {
            reconcile(&objects, &registry, &current, https_port).await?;
        }
        tokio::select! {
            changed = servers.changed() => {
                if changed.is_err() {
                    return Err(ControllerError::WatchEnded("server records"));
                }
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

fn kind(
    registry: &Registry,
    api_version: &str,
    kind: &str,
) -> Result<Arc<ResourceType>, RegistryError> {
    registry
        .catalog()
        .by_kind(api_version, kind)
        .ok_or_else(|| RegistryError::Internal(format!("the catalog has no {api_version} {kind}")))
}

async fn reconcile(
    objects: &ObjectStore,
    registry: &Registry,
    servers: &[ServerRecord],
    https_port: u16,
) -> Result<(), RegistryError> {
    let service = kind(registry, "v1", "Service")?;
    match objects.get(&service, Some(NAMESPACE), NAME).await {
        Ok(_) => {}
        Err(RegistryError::NotFound { .. }) => {
            match objects
                .create(
                    &service,
                    Some(NAMESPACE),
                    service_object(https_port),
                    &WriteOptions::default(),
                )
                .await
            {
                Ok(_) | Err(RegistryError::AlreadyExists { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Err(error) => return Err(error),
    }
    let by_port = addresses_by_port(servers);
    let endpoints = kind(registry, "v1", "Endpoints")?;
    upsert(objects, &endpoints, endpoints_object(&by_port)).await?;
    let slices = kind(registry, "discovery.k8s.io/v1", "EndpointSlice")?;
    let own: Vec<IpAddr> = by_port.get(&https_port).cloned().unwrap_or_default();
    upsert(objects, &slices, endpoint_slice_object(&own, https_port)).await?;
    Ok(())
}

/// The servers' IPv4 addresses, grouped by API port, sorted and without duplicates.
fn addresses_by_port(servers: &[ServerRecord]) -> BTreeMap<u16, Vec<IpAddr>> {
    let mut by_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for server in servers {
        match server.address.parse::<SocketAddr>() {
            Ok(address) if address.is_ipv4() => by_port
                .entry(address.port())
                .or_default()
                .push(address.ip()),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(server = %server.id, address = %server.address, "a server record has an unreadable address")
            }
        }
    }
    for addresses in by_port.values_mut() {
        addresses.sort();
        addresses.dedup();
    }
    by_port
}

fn service_object(https_port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": KUBERNETES_SERVICE_IP,
            "clusterIPs": [KUBERNETES_SERVICE_IP],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": https_port}],
        },
    })
}

fn endpoints_object(by_port: &BTreeMap<u16, Vec<IpAddr>>) -> Value {
    let subsets: Vec<Value> = by_port
        .iter()
        .map(|(port, addresses)| {
            json!({
                "addresses": addresses.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            })
        })
        .collect();
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
    });
    if !subsets.is_empty() {
        object["subsets"] = Value::Array(subsets);
    }
    object
}

fn endpoint_slice_object(addresses: &[IpAddr], port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": NAME,
                "endpointslice.kubernetes.io/managed-by": "capstan",
            },
        },
        "addressType": "IPv4",
        "endpoints": addresses
            .iter()
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
            .collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

/// Makes the stored object carry `desired`'s labels and content (everything but metadata),
/// creating it when missing. An unchanged object is not written.
async fn upsert(
    objects: &ObjectStore,
    kind: &ResourceType,
    desired: Value,
) -> Result<(), RegistryError> {
    let update = objects
        .update(
            kind,
            Some(NAMESPACE),
            NAME,
            Part::Main,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                if let (Some(next), Some(wanted)) = (next.as_object_mut(), desired.as_object()) {
                    next.retain(|field, _| {
                        matches!(field.as_str(), "apiVersion" | "kind" | "metadata")
                    });
                    for (field, value) in wanted {
                        if field != "metadata" {
                            next.insert(field.clone(), value.clone());
                        }
                    }
                }
                let mut fields = meta_mut(&mut next);
                for (label, value) in meta(&desired).labels().into_iter().flatten() {
                    fields.set_label(label, value.clone());
                }
                fields.remove_resource_version();
                Ok(next)
            },
        )
        .await;
    match update {
        Ok(_) => Ok(()),
        Err(RegistryError::NotFound { .. }) => {
            match objects
                .create(kind, Some(NAMESPACE), desired, &WriteOptions::default())
                .await
            {
                Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(()),
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, address: &str) -> ServerRecord {
        ServerRecord {
            id: id.to_string(),
            node_name: id.to_string(),
            address: address.to_string(),
            started_at: String::new(),
            renewed_at: String::new(),
            leader: false,
        }
    }

    #[test]
    fn endpoints_group_servers_by_port() {
        let servers = [
            server("b", "127.0.0.3:6443"),
            server("a", "127.0.0.2:6443"),
            server("c", "127.0.0.4:7443"),
            server("d", "not an address"),
        ];
        let object = endpoints_object(&addresses_by_port(&servers));
        assert_eq!(
            object["subsets"],
            json!([
                {"addresses": [{"ip": "127.0.0.2"}, {"ip": "127.0.0.3"}],
                 "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
                {"addresses": [{"ip": "127.0.0.4"}],
                 "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]},
            ])
        );
    }

    #[test]
    fn the_slice_names_its_service_and_lists_ready_endpoints() {
        let ip: IpAddr = "127.0.0.2".parse().expect("an address");
        let slice = endpoint_slice_object(&[ip], 6443);
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kubernetes"
        );
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.2");
        assert_eq!(slice["ports"][0]["name"], "https");
    }
}
