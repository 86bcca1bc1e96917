#!/usr/bin/env python3
"""What one in-scope pod CREATE costs the API server's policy plugins, from its own
profiles: the native engine's MutatingAdmissionPolicy and ValidatingAdmissionPolicy
plugins and the whole create handler, in bytes and objects allocated per request (a
heap-profile delta over N dry-run CREATEs). Allocations are counted, not timed, so the
figures hold on a busy machine, where latency does not; they are what the engine's
optimisations in docs/benchmarks.md are measured with.

usage: bench-native-profile.py KUBECONFIG_JSON N NAMESPACE...   (run by bench-native-profile.sh,
which passes `kubectl config view --raw --minify -o json`)
"""
import base64, http.client, json, os, ssl, subprocess, sys, tempfile

kubeconfig, n, namespaces = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
config = json.load(open(kubeconfig))
cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
tmp = tempfile.mkdtemp()
def write(name, b64):
    path = os.path.join(tmp, name)
    open(path, "wb").write(base64.b64decode(b64))
    return path
ctx = ssl.create_default_context(cafile=write("ca", cluster["certificate-authority-data"]))
ctx.load_cert_chain(write("crt", user["client-certificate-data"]), write("key", user["client-key-data"]))
host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
conn = http.client.HTTPSConnection(host, int(port), context=ctx)

# The benchmark's pod (benches/e2e.rs): one container, a required zone affinity.
POD = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench", "labels": {"app": "bench"}},
    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a", "eu-north-1a"]}]}]}}}}})

def get(path):
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        sys.exit(f"GET {path}: {response.status} {body[:200]!r}")
    return body

def creates(namespace, count):
    for _ in range(count):
        conn.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", POD, {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 201:
            sys.exit(f"{namespace}: {response.status} {body[:300]!r}")

PLUGINS = (("mutating policies", "policy/mutating.(*Plugin).Admit"),
           ("validating policies", "policy/validating.(*Plugin).Validate"),
           ("whole create", "createHandler.func1.2"))

def per_request(before, after, index):
    top = subprocess.run(["go", "tool", "pprof", f"-sample_index={index}", "-top", "-cum", "-base", before, after],
                         check=True, capture_output=True, text=True).stdout
    units = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1))
    def value(v):
        for unit, m in units:
            if v.endswith(unit):
                return float(v[:-len(unit)]) * m
        return float(v)
    found = {}
    for line in top.splitlines():
        fields = line.split()
        for label, suffix in PLUGINS:
            if len(fields) >= 6 and fields[-1].endswith(suffix):
                found[label] = value(fields[3]) / n
    return found

print(f"| namespace | {' | '.join(f'{label} (kB, objects)' for label, _ in PLUGINS)} |")
print(f"| --- |{' --- |' * len(PLUGINS)}")
for namespace in namespaces:
    creates(namespace, 50)  # warm: compiled policies, caches
    before, after = os.path.join(tmp, "before"), os.path.join(tmp, "after")
    open(before, "wb").write(get("/debug/pprof/allocs"))
    creates(namespace, n)
    open(after, "wb").write(get("/debug/pprof/allocs"))
    space, objects = per_request(before, after, "alloc_space"), per_request(before, after, "alloc_objects")
    cells = [f"{space.get(label, 0) / 1000:.0f} kB, {objects.get(label, 0):.0f}" for label, _ in PLUGINS]
    print(f"| {namespace} | {' | '.join(cells)} |")
