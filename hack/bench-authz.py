#!/usr/bin/env python3
"""The authorizer through the API server: p50/p99 of SubjectAccessReviews the API server
answers with the operator's webhook (a covered request: an unapproved user reading an
enclave pod's logs, a new pod name each time so that the API server's cache never
answers) side by side, interleaved, with reviews it answers without asking the operator
(the same user getting the pod itself, which matchConditions keep from the webhook).

    hack/bench-authz.py CLUSTER_DIR NAMESPACE [N]

Needs the local control plane (admin certificate in CLUSTER_DIR/pki) with an operator
answering the authorizer, and NAMESPACE covered by an enforcing policy.
"""
import http.client
import json
import ssl
import sys
import time

cluster, namespace = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
ports = dict(line.strip().split("=", 1) for line in open(f"{cluster}/ports.env") if "=" in line)
context = ssl.create_default_context(cafile=f"{cluster}/pki/ca.crt")
context.load_cert_chain(f"{cluster}/pki/admin.crt", f"{cluster}/pki/admin.key")
connection = http.client.HTTPSConnection("127.0.0.1", int(ports["APISERVER_PORT"]), context=context)


def review(subresource, name):
    body = json.dumps({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "bench-viewer",
            "groups": ["system:authenticated"],
            "resourceAttributes": {"namespace": namespace, "verb": "get", "resource": "pods",
                                   "subresource": subresource, "name": name},
        },
    })
    started = time.perf_counter()
    connection.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body,
                       {"Content-Type": "application/json"})
    answer = json.loads(connection.getresponse().read())
    elapsed = time.perf_counter() - started
    return elapsed, answer.get("status", {})


# Warm up the connection and both paths.
for i in range(50):
    review("log", f"warm-{i}")
    review("", f"warm-{i}")
covered, uncovered = [], []
for i in range(n):
    t, status = review("log", f"bench-{time.time_ns()}-{i}")
    assert status.get("denied") is True and "enclave-operator" in status.get("reason", ""), status
    covered.append(t)
    t, status = review("", f"bench-{time.time_ns()}-{i}")
    assert not status.get("denied"), status
    uncovered.append(t)


def pct(samples, q):
    samples = sorted(samples)
    return samples[int((len(samples) - 1) * q)] * 1000


print(f"{n} reviews each, interleaved, one keep-alive connection")
print(f"{'':28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
for label, samples in (("covered (asks the operator)", covered), ("not sent to the operator", uncovered)):
    print(f"{label:28} {pct(samples, .5):8.3f} {pct(samples, .9):8.3f} {pct(samples, .99):8.3f}")
print(f"{'increment':28} {pct(covered, .5) - pct(uncovered, .5):8.3f} {pct(covered, .9) - pct(uncovered, .9):8.3f} {pct(covered, .99) - pct(uncovered, .99):8.3f}")
