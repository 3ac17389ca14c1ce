//! Columns of services, endpoints and endpoint slices, following kube-apiserver's
//! `printService`, `formatEndpoints` and `formatDiscoveryEndpoints`.

use serde_json::Value;

use super::{age, cell, computed, format_labels, int, list, or, strings, text};
use crate::registry::kind::Column;

pub(crate) fn service() -> Vec<Column> {
    vec![
        computed(
            "Type",
            "string",
            0,
            "type determines how the Service is exposed.",
            |s| or(text(s, "/spec/type"), "ClusterIP"),
        ),
        computed(
            "Cluster-IP",
            "string",
            0,
            "clusterIP is the IP address of the service and is usually assigned randomly.",
            |s| {
                let first = text(s, "/spec/clusterIPs/0");
                or(
                    if first.is_empty() {
                        text(s, "/spec/clusterIP")
                    } else {
                        first
                    },
                    "<none>",
                )
            },
        ),
        computed(
            "External-IP",
            "string",
            0,
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            service_external_ip,
        ),
        computed(
            "Port(s)",
            "string",
            0,
            "The list of ports that are exposed by this service.",
            service_ports,
        ),
        age(),
        computed(
            "Selector",
            "string",
            1,
            "Route service traffic to pods with label keys and values matching this selector.",
            |s| format_labels(s, "/spec/selector"),
        ),
    ]
}

fn service_external_ip(service: &Value) -> Value {
    let external = strings(service, "/spec/externalIPs");
    match text(service, "/spec/type") {
        "" | "ClusterIP" | "NodePort" => or(&external.join(","), "<none>"),
        "LoadBalancer" => {
            let mut addresses: Vec<String> = list(service, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match text(i, "/ip") {
                    "" => text(i, "/hostname").to_string(),
                    ip => ip.to_string(),
                })
                .filter(|a| !a.is_empty())
                .collect();
            addresses.extend(external);
            or(&addresses.join(","), "<pending>")
        }
        "ExternalName" => cell(text(service, "/spec/externalName")),
        _ => cell("<unknown>"),
    }
}

/// `80/TCP,443:30443/TCP`: port, node port when allocated, protocol.
fn service_ports(service: &Value) -> Value {
    let ports: Vec<String> = list(service, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = or(text(p, "/protocol"), "TCP");
            let protocol = protocol.as_str().unwrap_or("TCP");
            match int(p, "/nodePort") {
                0 => format!("{}/{protocol}", int(p, "/port")),
                node_port => format!("{}:{node_port}/{protocol}", int(p, "/port")),
            }
        })
        .collect();
    or(&ports.join(","), "<none>")
}

pub(crate) fn endpoints() -> Vec<Column> {
    vec![computed(
        "Endpoints",
        "string",
        0,
        "The set of all endpoints is the union of all subsets.",
        endpoints_list,
    )]
}

/// Up to three `ip:port` pairs, then ` + N more...`; `<none>` without subsets.
fn endpoints_list(endpoints: &Value) -> Value {
    const SHOWN: usize = 3;
    let subsets = list(endpoints, "/subsets");
    if subsets.is_empty() {
        return cell("<none>");
    }
    let mut shown = Vec::new();
    let mut total = 0;
    for subset in subsets {
        let addresses: Vec<&str> = list(subset, "/addresses")
            .iter()
            .map(|a| text(a, "/ip"))
            .collect();
        let ports = list(subset, "/ports");
        if ports.is_empty() {
            total += addresses.len();
            shown.extend(addresses.iter().map(|a| a.to_string()));
            continue;
        }
        for port in ports {
            total += addresses.len();
            for address in &addresses {
                let port = int(port, "/port");
                shown.push(if address.contains(':') {
                    format!("[{address}]:{port}")
                } else {
                    format!("{address}:{port}")
                });
            }
        }
    }
    if total > SHOWN {
        shown.truncate(SHOWN);
        return cell(format!("{} + {} more...", shown.join(","), total - SHOWN));
    }
    cell(shown.join(","))
}

pub(crate) fn endpoint_slice() -> Vec<Column> {
    vec![
        computed(
            "AddressType",
            "string",
            0,
            "addressType specifies the type of address carried by this EndpointSlice.",
            |s| cell(text(s, "/addressType")),
        ),
        computed(
            "Ports",
            "string",
            0,
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
            |s| {
                let ports: Vec<String> = list(s, "/ports")
                    .iter()
                    .map(|p| match p.get("port").and_then(Value::as_i64) {
                        Some(port) => port.to_string(),
                        None => or(text(p, "/name"), "*")
                            .as_str()
                            .unwrap_or("*")
                            .to_string(),
                    })
                    .collect();
                first_three(ports)
            },
        ),
        computed(
            "Endpoints",
            "string",
            0,
            "endpoints is a list of unique endpoints in this slice.",
            |s| {
                let addresses = list(s, "/endpoints")
                    .iter()
                    .flat_map(|e| strings(e, "/addresses"))
                    .collect();
                first_three(addresses)
            },
        ),
    ]
}

/// `a,b,c + 2 more...`, `<unset>` when empty.
fn first_three(mut items: Vec<String>) -> Value {
    let total = items.len();
    if total > 3 {
        items.truncate(3);
        return cell(format!("{} + {} more...", items.join(","), total - 3));
    }
    or(&items.join(","), "<unset>")
}
