//! Strategic merge patches come from any client (`kubectl apply`, `kubectl patch`). The
//! input is two JSON documents one after the other: the object, then the patch. The
//! object's `kind` picks the built-in schema the API server would use, so list merging by
//! key (containers, ports, volumes…) is exercised; other kinds merge without a schema.
#![no_main]

use capstan_patch::{SchemaRef, strategic_merge_patch};
use capstan_apiserver::registry::schema::builtin_definitions;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn definition(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "io.k8s.api.core.v1.Pod",
        "Deployment" => "io.k8s.api.apps.v1.Deployment",
        "Service" => "io.k8s.api.core.v1.Service",
        "ConfigMap" => "io.k8s.api.core.v1.ConfigMap",
        "Node" => "io.k8s.api.core.v1.Node",
        "StatefulSet" => "io.k8s.api.apps.v1.StatefulSet",
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut documents = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(target)), Some(Ok(patch))) = (documents.next(), documents.next()) else {
        return;
    };
    let schema = match target
        .get("kind")
        .and_then(Value::as_str)
        .and_then(definition)
    {
        Some(name) => SchemaRef::definition(builtin_definitions(), name),
        None => SchemaRef::none(),
    };
    let _ = strategic_merge_patch(&target, &patch, schema);
});
