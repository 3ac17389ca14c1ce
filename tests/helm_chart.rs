//! The Helm chart `helm/capstan` renders to valid Kubernetes objects (must-show 6). No `helm`
//! binary can be installed here (not in Debian's archive, and Go here is too old to build it),
//! so the templates keep to a small subset of Go templates that `tests/helm/render.rs`
//! renders; helm/README.md says so. The checks read the objects as a user would apply them.

mod helm {
    pub mod render;
}

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/capstan")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("chart file reads");
    serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Deep-merges `overrides` into `base` (what `--set`/`-f` do).
fn merge(base: &mut Value, overrides: &Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(overrides)) => {
            for (key, value) in overrides {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, value) => *base = value.clone(),
    }
}

/// Renders every template with values.yaml plus `overrides`, like
/// `helm template demo helm/capstan -n lab`: the manifests (parsed) and NOTES.txt.
fn render(overrides: Value) -> Result<(Vec<Value>, String), String> {
    let mut values = yaml(&chart().join("values.yaml"));
    merge(&mut values, &overrides);
    let chart_yaml = yaml(&chart().join("Chart.yaml"));
    let root = json!({
        "Values": values,
        "Release": {"Name": "demo", "Namespace": "lab", "Service": "Helm"},
        "Chart": {
            "Name": chart_yaml["name"],
            "Version": chart_yaml["version"],
            "AppVersion": chart_yaml["appVersion"],
        },
    });
    let templates = chart().join("templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&templates)
        .expect("templates folder")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    let read = |path: &Path| std::fs::read_to_string(path).expect("template reads");
    let helpers: Vec<String> = files
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "tpl"))
        .map(|path| read(path))
        .collect();
    let helper_refs: Vec<&str> = helpers.iter().map(String::as_str).collect();
    let mut renderer = helm::render::Renderer::new(&helper_refs)?;
    let mut objects = Vec::new();
    let mut notes = String::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let output = renderer
            .render(&read(path), &root)
            .map_err(|error| format!("{name}: {error}"))?;
        if name == "NOTES.txt" {
            notes = output;
            continue;
        }
        if !name.ends_with(".yaml") {
            continue;
        }
        for document in output.split("\n---") {
            if document
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                continue;
            }
            let object: Value = serde_saphyr::from_str(document)
                .map_err(|error| format!("{name} renders invalid YAML: {error}\n{document}"))?;
            objects.push(object);
        }
    }
    Ok((objects, notes))
}

/// `ci/test-values.yaml`: the token and the datastore endpoint, which the chart requires.
fn required_values() -> Value {
    yaml(&chart().join("ci/test-values.yaml"))
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .expect("args is a list")
        .iter()
        .map(|arg| arg.as_str().expect("args are strings").to_string())
        .collect()
}

fn secret_ref<'a>(objects: &'a [Value], variable: &str) -> &'a Value {
    container(objects)["env"]
        .as_array()
        .expect("env is a list")
        .iter()
        .find(|env| env["name"] == variable)
        .map(|env| &env["valueFrom"]["secretKeyRef"])
        .unwrap_or_else(|| panic!("no env {variable}"))
}

#[test]
fn the_default_chart_renders_valid_objects() {
    let (objects, notes) = render(required_values()).expect("chart renders");
    for object in &objects {
        assert!(object["apiVersion"].is_string(), "apiVersion: {object}");
        assert!(object["kind"].is_string(), "kind: {object}");
        let name = object["metadata"]["name"].as_str().expect("metadata.name");
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "invalid name {name}"
        );
        assert_eq!(object["metadata"]["namespace"], "lab", "{object}");
    }
    let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Secret",
            "Service",
            "ServiceAccount"
        ]
    );

    let deployment = find(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2, "two servers by default");
    let pod = &deployment["spec"]["template"];
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    for (key, value) in selector.as_object().expect("selector labels") {
        assert_eq!(
            &pod["metadata"]["labels"][key], value,
            "pods match the selector"
        );
        assert_eq!(&find(&objects, "Service")["spec"]["selector"][key], value);
        assert_eq!(
            &find(&objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"][key],
            value
        );
    }
    assert_eq!(pod["spec"]["enableServiceLinks"], false);
    assert_eq!(pod["spec"]["serviceAccountName"], "demo-capstan");
    assert!(
        pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .is_array(),
        "soft anti-affinity by default"
    );

    let args = args(&objects);
    assert_eq!(args[0], "server");
    for expected in [
        "--advertise-address=$(POD_IP)",
        "--tls-san=demo-capstan",
        "--tls-san=demo-capstan.lab.svc",
        "--tls-san=demo-capstan.lab.svc.cluster.local",
    ] {
        assert!(
            args.iter().any(|arg| arg == expected),
            "{expected} in {args:?}"
        );
    }
    let datastore = secret_ref(&objects, "CAPSTAN_DATASTORE_ENDPOINT");
    assert_eq!(datastore["name"], "demo-capstan-datastore");
    assert_eq!(datastore["key"], "endpoint");
    assert_eq!(
        secret_ref(&objects, "CAPSTAN_TOKEN")["name"],
        "demo-capstan-token"
    );
    assert!(
        !args
            .iter()
            .any(|arg| arg.contains("postgres://") || arg.contains("lab-token")),
        "secrets stay off the command line: {args:?}"
    );
    let secrets: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Secret").collect();
    assert!(
        secrets
            .iter()
            .any(|s| s["stringData"]["endpoint"] == "postgres://capstan:pw@db:5432/capstan")
    );
    assert!(
        secrets
            .iter()
            .any(|s| s["stringData"]["token"] == "lab-token")
    );

    let container = container(&objects);
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path);
        assert_eq!(get["scheme"], "HTTPS");
        assert_eq!(get["port"], "https");
    }
    assert_eq!(container["ports"][0]["containerPort"], 6443);
    assert_eq!(
        container["image"], "capstan/capstan:0.1.0",
        "tag defaults to appVersion"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["resources"]["requests"]["memory"], "256Mi");

    let service = find(&objects, "Service");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["port"], 6443);
    assert_eq!(
        find(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    assert!(
        notes.contains("https://demo-capstan.lab.svc:6443"),
        "{notes}"
    );
}

#[test]
fn existing_secrets_node_port_and_more_servers() {
    let (objects, _) = render(json!({
        "replicaCount": 3,
        "token": {"existingSecret": "my-token", "secretKey": "t"},
        "datastore": {"existingSecret": "my-db", "secretKey": "url"},
        "service": {"type": "NodePort", "nodePort": 30443, "clusterIP": "10.43.0.50"},
        "tlsSan": ["capstan.example.com"],
        "podAntiAffinity": "hard",
        "podDisruptionBudget": {"enabled": false},
        "serviceAccount": {"create": false},
        "extraArgs": ["--disable=priority-classes"],
    }))
    .expect("chart renders");
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "existing secrets are used"
    );
    assert!(!objects.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
    assert!(!objects.iter().any(|o| o["kind"] == "ServiceAccount"));
    assert_eq!(find(&objects, "Deployment")["spec"]["replicas"], 3);
    assert_eq!(
        secret_ref(&objects, "CAPSTAN_TOKEN"),
        &json!({"name": "my-token", "key": "t"})
    );
    assert_eq!(
        secret_ref(&objects, "CAPSTAN_DATASTORE_ENDPOINT"),
        &json!({"name": "my-db", "key": "url"})
    );
    let service = find(&objects, "Service");
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["clusterIP"], "10.43.0.50");
    assert_eq!(service["spec"]["ports"][0]["nodePort"], 30443);
    let args = args(&objects);
    for expected in [
        "--tls-san=10.43.0.50",
        "--tls-san=capstan.example.com",
        "--disable=priority-classes",
    ] {
        assert!(
            args.iter().any(|arg| arg == expected),
            "{expected} in {args:?}"
        );
    }
    let pod = &find(&objects, "Deployment")["spec"]["template"]["spec"];
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_array()
    );
    assert_eq!(pod["serviceAccountName"], "default");
}

#[test]
fn a_missing_token_or_endpoint_fails_with_the_value_to_set() {
    let error =
        render(json!({"datastore": {"endpoint": "postgres://db/c"}})).expect_err("no token fails");
    assert!(error.contains("token.value"), "{error}");
    let error = render(json!({"token": {"value": "t"}})).expect_err("no endpoint fails");
    assert!(error.contains("datastore.endpoint"), "{error}");
}

#[test]
fn every_value_is_documented() {
    let text = std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml");
    // Free-form Kubernetes objects are documented as a whole, by the comment on their key.
    let free_form = ["resources", "podSecurityContext", "securityContext"];
    let mut previous = "";
    let mut parent = "";
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let key = line.trim_start().split(':').next().unwrap_or_default();
        let is_key = line
            .trim_start()
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && line.contains(':');
        if is_key && indent == 0 {
            parent = key;
        }
        if is_key && (indent == 0 || (indent == 2 && !free_form.contains(&parent))) {
            assert!(
                previous.trim_start().starts_with('#'),
                "values.yaml: `{key}` has no comment above it"
            );
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
}
