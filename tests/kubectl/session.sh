#!/usr/bin/env bash
# A scripted kubectl session against a running capstan server: the commands a user types,
# each checked for what the user would see. Run by tests/kubectl.rs with
#   KUBECTL=<kubectl binary> KUBECONFIG=<admin kubeconfig> WORK=<scratch dir>
# for every kubectl version under test. Any error ends the session (set -e), and the last
# "step:" line printed says where.
set -euo pipefail
: "${KUBECTL:?set KUBECTL to the kubectl binary}" "${KUBECONFIG:?set KUBECONFIG}" "${WORK:?set WORK}"
k() { "$KUBECTL" "$@"; }
step() { echo "step: $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
# `cmd | grep -q` would fail under pipefail when grep exits early and kubectl gets SIGPIPE,
# so every check reads the whole output first.
output_has() { local pattern=$1 out; shift; out=$("$@") && grep -q -e "$pattern" <<<"$out"; }
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }
ns="session-$RANDOM"

step "api-resources lists built-in kinds"
k api-resources > "$WORK/resources.txt"
grep -q '^deployments ' "$WORK/resources.txt" || fail "deployments missing from api-resources"
grep -q '^configmaps ' "$WORK/resources.txt" || fail "configmaps missing"

step "create namespace and configmap"
k create namespace "$ns"
k create configmap cfg --from-literal=a=b -n "$ns"
expect_eq "$(k get configmap cfg -n "$ns" -o jsonpath='{.data.a}')" "b" "configmap data"

step "apply a deployment, then apply it again with one container renamed and one removed"
cat > "$WORK/deploy-v1.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: $ns
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
      - name: sidecar
        image: busybox
        command: ["sleep", "3600"]
      - name: logger
        image: busybox
YAML
sed -e 's/name: sidecar/name: helper/' -e '/name: logger/,$d' "$WORK/deploy-v1.yaml" > "$WORK/deploy-v2.yaml"
k apply -f "$WORK/deploy-v1.yaml"
expect_eq "$(k get deploy web -n "$ns" -o jsonpath='{.spec.template.spec.containers[*].name}')" "nginx sidecar logger" "first apply"
k apply -f "$WORK/deploy-v2.yaml"
expect_eq "$(k get deploy web -n "$ns" -o jsonpath='{.spec.template.spec.containers[*].name}')" "nginx helper" "second apply"

step "get, -o yaml, -o wide"
output_has '^web ' k get deploy -n "$ns" || fail "get deploy shows no web row"
output_has 'kind: Deployment' k get deploy web -n "$ns" -o yaml || fail "-o yaml"
output_has 'nginx,helper' k get deploy -n "$ns" -o wide || fail "-o wide lacks the CONTAINERS column"
pods=$(k get pods -n "$ns" 2>&1) && grep -q 'No resources found' <<<"$pods" || fail "empty pod list: $pods"

step "describe"
output_has '^Name: *web' k describe deploy web -n "$ns" || fail "describe deploy"
output_has "^Namespace: *$ns" k describe configmap cfg -n "$ns" || fail "describe configmap"

step "label and annotate"
k label configmap cfg -n "$ns" env=prod
k annotate configmap cfg -n "$ns" note=hello
output_has 'configmap/cfg' k get configmap -n "$ns" -l env=prod -o name || fail "label selector"
expect_eq "$(k get configmap cfg -n "$ns" -o jsonpath='{.metadata.annotations.note}')" "hello" "annotation"
k label configmap cfg -n "$ns" env-
expect_eq "$(k get configmap -n "$ns" -l env=prod -o name)" "" "label removed"

step "patch: merge, json, strategic"
k patch configmap cfg -n "$ns" --type=merge -p '{"data":{"m":"1"}}'
k patch configmap cfg -n "$ns" --type=json -p '[{"op":"add","path":"/data/j","value":"2"}]'
k patch deploy web -n "$ns" --type=strategic -p '{"spec":{"template":{"spec":{"containers":[{"name":"helper","image":"alpine"}]}}}}'
expect_eq "$(k get configmap cfg -n "$ns" -o jsonpath='{.data.m}{.data.j}')" "12" "merge and json patch"
expect_eq "$(k get deploy web -n "$ns" -o jsonpath='{.spec.template.spec.containers[*].image}')" "nginx:1.25 alpine" "strategic patch merges by name"
if k patch configmap cfg -n "$ns" --type=json -p '[{"op":"test","path":"/data/a","value":"nope"}]' 2>/dev/null; then
  fail "a failing json-patch test op was accepted"
fi

step "scale"
k scale deploy web -n "$ns" --replicas=5
expect_eq "$(k get deploy web -n "$ns" -o jsonpath='{.spec.replicas}')" "5" "scale"

step "edit via KUBE_EDITOR"
KUBE_EDITOR="sed -i -e s/alpine/alpine:3.20/" k edit deploy web -n "$ns"
expect_eq "$(k get deploy web -n "$ns" -o jsonpath='{.spec.template.spec.containers[1].image}')" "alpine:3.20" "edit"

step "get -w sees a create and a delete"
( timeout 6 "$KUBECTL" get configmaps -n "$ns" -w > "$WORK/watch.txt" 2>&1 || true ) &
watcher=$!
sleep 1.5
k create configmap watched -n "$ns" --from-literal=x=y
k delete configmap watched -n "$ns"
wait "$watcher"
[ "$(grep -c '^watched ' "$WORK/watch.txt")" -ge 2 ] || fail "get -w saw: $(cat "$WORK/watch.txt")"

step "explain"
output_has 'replicas' k explain deployment.spec.replicas || fail "explain"

step "delete with wait, then delete the namespace"
k delete deploy web -n "$ns" --wait
if k get deploy web -n "$ns" 2>/dev/null; then fail "deployment still there"; fi
k delete namespace "$ns" --wait --timeout=60s
if k get namespace "$ns" 2>/dev/null; then fail "namespace still there"; fi
echo "session passed"
