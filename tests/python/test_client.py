#!/usr/bin/env python3
"""Drives a Capstan server with the official Python `kubernetes` client.

The Python client is generated from the OpenAPI document and deserialises every response
into typed models, so it catches wire-format mistakes kubectl forgives: a missing field the
model requires, a wrong content type for patches, a watch event that is not one JSON object
per line. Each step prints one line; the first failure stops the run with a traceback.

Usage: test_client.py [KUBECONFIG]   (default: the KUBECONFIG environment variable)
Run by tests/python_client.rs against a server it starts; needs `pip install 'kubernetes>=31'`
(scripts/test installs it).
"""

import json
import os
import queue
import sys
import threading
import time
import uuid

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

# How long the watch thread may take to report an event before the test fails.
EVENT_TIMEOUT_SECONDS = 15


def step(message):
    print(f"==> {message}", flush=True)


def ok(message):
    print(f"    ok: {message}", flush=True)


def load_config():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KUBECONFIG")
    if not path:
        sys.exit("usage: test_client.py KUBECONFIG (or set the KUBECONFIG environment variable)")
    step(f"load kubeconfig {path}")
    config.load_kube_config(config_file=path)
    ok(f"server {client.Configuration.get_default_copy().host}")


def check_namespaces(v1):
    step("list namespaces")
    names = [ns.metadata.name for ns in v1.list_namespace().items]
    assert "default" in names, f"namespace default missing from list: {names}"
    ok(", ".join(names))


def create_namespace(v1, namespace):
    step(f"create namespace {namespace}")
    created = v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    assert created.metadata.name == namespace, f"created namespace is named {created.metadata.name}"
    assert created.metadata.uid, "created namespace has no uid"
    ok(f"uid {created.metadata.uid}")


def config_map(name, data, labels=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        data=data,
    )


def deployment(name):
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="web",
                            image="nginx:1.27",
                            ports=[client.V1ContainerPort(container_port=80)],
                        )
                    ]
                ),
            ),
        ),
    )


def check_config_map_lifecycle(v1, namespace):
    step(f"create ConfigMap {namespace}/settings")
    created = v1.create_namespaced_config_map(
        namespace, config_map("settings", {"color": "blue", "size": "L"}, {"tier": "web"})
    )
    assert created.data == {"color": "blue", "size": "L"}, f"created data is {created.data}"
    assert created.metadata.resource_version, "created ConfigMap has no resourceVersion"
    ok(f"resourceVersion {created.metadata.resource_version}")

    step(f"read ConfigMap {namespace}/settings")
    read = v1.read_namespaced_config_map("settings", namespace)
    assert read.data == {"color": "blue", "size": "L"}, f"read data is {read.data}"
    assert read.metadata.labels == {"tier": "web"}, f"read labels are {read.metadata.labels}"
    ok(f"data {read.data}")

    step(f"patch ConfigMap {namespace}/settings (client's default patch type for a dict)")
    patched = v1.patch_namespaced_config_map(
        "settings", namespace, {"data": {"color": "green", "shape": "round"}}
    )
    expected = {"color": "green", "size": "L", "shape": "round"}
    assert patched.data == expected, f"patched data is {patched.data}, expected {expected}"
    reread = v1.read_namespaced_config_map("settings", namespace).data
    assert reread == expected, f"data read after the patch is {reread}, expected {expected}"
    ok(f"data {patched.data}")

    step(f"patch ConfigMap {namespace}/settings with a JSON patch (a list body)")
    patched = v1.patch_namespaced_config_map(
        "settings", namespace, [{"op": "replace", "path": "/data/size", "value": "XL"}]
    )
    assert patched.data["size"] == "XL", f"data after the JSON patch is {patched.data}"
    ok(f"data {patched.data}")

    step(f"replace ConfigMap {namespace}/settings")
    current = v1.read_namespaced_config_map("settings", namespace)
    current.data = {"only": "this"}
    replaced = v1.replace_namespaced_config_map("settings", namespace, current)
    assert replaced.data == {"only": "this"}, f"replaced data is {replaced.data}"
    assert int(replaced.metadata.resource_version) > int(current.metadata.resource_version), (
        f"resourceVersion did not grow: {current.metadata.resource_version} -> "
        f"{replaced.metadata.resource_version}"
    )
    ok(f"data {replaced.data}, resourceVersion {replaced.metadata.resource_version}")

    step(f"list ConfigMaps in {namespace} with label_selector tier=web")
    v1.create_namespaced_config_map(namespace, config_map("other", {"k": "v"}, {"tier": "db"}))
    names = [
        cm.metadata.name
        for cm in v1.list_namespaced_config_map(namespace, label_selector="tier=web").items
    ]
    assert names == ["settings"], f"label_selector tier=web listed {names}, expected ['settings']"
    names = sorted(
        cm.metadata.name
        for cm in v1.list_namespaced_config_map(namespace, label_selector="tier in (web,db)").items
    )
    assert names == ["other", "settings"], f"label_selector 'tier in (web,db)' listed {names}"
    ok("tier=web -> ['settings'], tier in (web,db) -> ['other', 'settings']")


def check_deployment(apps, namespace):
    step(f"create Deployment {namespace}/web")
    created = apps.create_namespaced_deployment(namespace, deployment("web"))
    assert created.spec.replicas == 2, f"created replicas is {created.spec.replicas}"
    ok(f"uid {created.metadata.uid}")

    step(f"read Deployment {namespace}/web")
    read = apps.read_namespaced_deployment("web", namespace)
    containers = read.spec.template.spec.containers
    assert [c.image for c in containers] == ["nginx:1.27"], f"images are {[c.image for c in containers]}"
    assert read.spec.selector.match_labels == {"app": "web"}, f"selector is {read.spec.selector}"
    ok(f"replicas {read.spec.replicas}, image {containers[0].image}")


def watch_events(v1, namespace, events, ready):
    """Streams ConfigMap events of `namespace` into `events` until the watch times out."""
    try:
        stream = watch.Watch().stream(v1.list_namespaced_config_map, namespace, timeout_seconds=5)
        ready.set()
        for event in stream:
            events.put((event["type"], event["object"].metadata.name, event["object"]))
        events.put(("END", None, None))
    except Exception as error:  # reported by the main thread, which fails the test
        ready.set()
        events.put(("ERROR", None, error))


def wait_for_event(events, kind, name):
    deadline = time.monotonic() + EVENT_TIMEOUT_SECONDS
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind} event for {name} within {EVENT_TIMEOUT_SECONDS}s; saw {seen}")
        try:
            event_type, event_name, obj = events.get(timeout=remaining)
        except queue.Empty:
            continue
        if event_type == "ERROR":
            raise AssertionError(f"the watch failed waiting for {kind} {name}: {obj!r}") from obj
        if event_type == "END":
            raise AssertionError(f"the watch ended before a {kind} event for {name}; saw {seen}")
        seen.append((event_type, event_name))
        if (event_type, event_name) == (kind, name):
            return obj


def check_watch(v1, namespace):
    step(f"watch ConfigMaps in {namespace} while creating, updating and deleting 'watched'")
    events = queue.Queue()
    ready = threading.Event()
    thread = threading.Thread(target=watch_events, args=(v1, namespace, events, ready), daemon=True)
    thread.start()
    ready.wait(EVENT_TIMEOUT_SECONDS)
    # The stream is lazy: give its request a moment to reach the server so no event is missed.
    # A watch without resourceVersion also replays existing objects as ADDED, so earlier
    # events for other names are expected and skipped.
    time.sleep(0.5)

    v1.create_namespaced_config_map(namespace, config_map("watched", {"n": "1"}))
    added = wait_for_event(events, "ADDED", "watched")
    assert added.data == {"n": "1"}, f"ADDED object data is {added.data}"
    ok("ADDED watched")

    v1.patch_namespaced_config_map("watched", namespace, {"data": {"n": "2"}})
    modified = wait_for_event(events, "MODIFIED", "watched")
    assert modified.data == {"n": "2"}, f"MODIFIED object data is {modified.data}"
    ok("MODIFIED watched")

    v1.delete_namespaced_config_map("watched", namespace)
    deleted = wait_for_event(events, "DELETED", "watched")
    assert deleted.metadata.name == "watched", f"DELETED object is {deleted.metadata.name}"
    ok("DELETED watched")

    # timeout_seconds=5 asks the server to end the watch; the stream must then finish cleanly.
    thread.join(EVENT_TIMEOUT_SECONDS)
    assert not thread.is_alive(), "the watch did not end after its timeout_seconds=5"
    leftovers = []
    while not events.empty():
        leftovers.append(events.get_nowait())
    errors = [obj for kind, _, obj in leftovers if kind == "ERROR"]
    assert not errors, f"the watch failed after the events: {errors[0]!r}"
    ok("watch ended after timeout_seconds")


def check_not_found(v1, namespace):
    step(f"read missing ConfigMap {namespace}/missing raises ApiException 404")
    try:
        v1.read_namespaced_config_map("missing", namespace)
    except ApiException as error:
        assert error.status == 404, f"status {error.status}, expected 404: {error.body}"
        status = json.loads(error.body)
        assert (status.get("kind"), status.get("reason"), status.get("code")) == (
            "Status",
            "NotFound",
            404,
        ), f"404 body is not a NotFound Status: {error.body}"
        ok(f"404 {error.reason}: {status.get('message')}")
    else:
        raise AssertionError("reading a missing ConfigMap returned an object instead of 404")


def delete_everything(v1, namespace):
    step(f"delete ConfigMap {namespace}/settings")
    v1.delete_namespaced_config_map("settings", namespace)
    try:
        v1.read_namespaced_config_map("settings", namespace)
    except ApiException as error:
        assert error.status == 404, f"reading a deleted ConfigMap gave {error.status}: {error.body}"
    else:
        raise AssertionError("the ConfigMap can still be read after its delete")
    ok("gone (404)")

    step(f"delete namespace {namespace}")
    v1.delete_namespace(namespace)
    # Namespace deletion may be graceful (phase Terminating, then gone); both are fine.
    try:
        phase = v1.read_namespace(namespace).status.phase
        assert phase == "Terminating", f"namespace still there after delete with phase {phase}"
        ok("Terminating")
    except ApiException as error:
        assert error.status == 404, f"reading a deleted namespace gave {error.status}: {error.body}"
        ok("gone (404)")


def main():
    load_config()
    v1 = client.CoreV1Api()
    apps = client.AppsV1Api()
    namespace = f"py-{uuid.uuid4().hex[:8]}"

    check_namespaces(v1)
    create_namespace(v1, namespace)
    check_config_map_lifecycle(v1, namespace)
    check_deployment(apps, namespace)
    check_watch(v1, namespace)
    check_not_found(v1, namespace)
    delete_everything(v1, namespace)
    print("all Python client checks passed", flush=True)


if __name__ == "__main__":
    main()
