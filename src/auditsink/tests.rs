//! The pure core against audit events shaped as the API server (1.36) sends them.

use serde_json::{Value, json};

use super::event::{EventList, Seen, records};
use crate::decisions::Kind;

/// A pod CREATE refused by the native engine's check, at level Metadata, as the API
/// server posts it.
fn denied_event() -> Value {
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": "5d6c9a1e-0000-4000-8000-000000000001", "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/shop/pods", "verb": "create",
        "user": {"username": "alice", "groups": ["system:authenticated"]},
        "objectRef": {"resource": "pods", "namespace": "shop", "name": "db-0", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "pods \"db-0\" is forbidden: ValidatingAdmissionPolicy 'enclave-check.eu-user-data' with binding 'enclave-check.eu-user-data' denied request: policy eu-user-data: Pod shop/db-0 is pinned to node virginia-a, outside enclave eu"},
        "requestObject": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "db-0", "namespace": "shop"}, "spec": {"nodeName": "virginia-a"}},
        "annotations": {"authorization.k8s.io/decision": "allow"}
    })
}

fn list(items: Vec<Value>) -> EventList {
    serde_json::from_value(
        json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}),
    )
    .expect("an EventList")
}

fn all(items: Vec<Value>) -> Vec<crate::decisions::Record> {
    list(items).items.iter().flat_map(records).collect()
}

#[test]
fn a_native_refusal_is_a_pod_denied_record_naming_the_engine_policy_and_user() {
    let out = all(vec![denied_event()]);
    assert_eq!(out.len(), 1, "{out:?}");
    let record = &out[0];
    assert_eq!(record.kind, Kind::PodDenied);
    assert_eq!(record.policy.as_deref(), Some("eu-user-data"));
    assert_eq!(record.subject.kind, "Pod");
    assert_eq!(record.subject.namespace.as_deref(), Some("shop"));
    assert_eq!(record.subject.name, "db-0");
    assert_eq!(
        record.message,
        "policy eu-user-data: Pod shop/db-0 is pinned to node virginia-a, outside enclave eu"
    );
    assert_eq!(record.details["engine"], "native");
    assert_eq!(
        record.details["admissionPolicy"],
        "enclave-check.eu-user-data"
    );
    assert_eq!(record.details["user"], "alice");
    assert_eq!(
        record.details["auditID"],
        "5d6c9a1e-0000-4000-8000-000000000001"
    );
}

#[test]
fn refusals_by_other_policies_webhooks_or_rbac_are_not_recorded() {
    let mut other = denied_event();
    other["responseStatus"]["message"] = json!(
        "pods \"db-0\" is forbidden: ValidatingAdmissionPolicy 'company-rules' with binding 'x' denied request: no"
    );
    let mut webhook = denied_event();
    webhook["responseStatus"]["message"] = json!(
        "admission webhook \"pods.eu.policies.enclave.dev\" denied the request: policy eu: no"
    );
    let mut rbac = denied_event();
    rbac["responseStatus"]["message"] =
        json!("pods is forbidden: User \"bob\" cannot create resource \"pods\"");
    // A tenant's own policy named like ours but for webhooks' configurations.
    let mut lookalike = denied_event();
    lookalike["responseStatus"]["message"] =
        json!("ValidatingAdmissionPolicy 'enclave-operator-x' with binding 'x' denied request: no");
    assert!(all(vec![other, webhook, rbac, lookalike]).is_empty());
}

#[test]
fn dry_runs_other_stages_and_successes_without_placement_are_not_recorded() {
    let mut dry = denied_event();
    dry["requestURI"] = json!("/api/v1/namespaces/shop/pods?dryRun=All&fieldManager=kubectl");
    let mut received = denied_event();
    received["stage"] = json!("RequestReceived");
    let mut created = denied_event();
    created["responseStatus"] = json!({"metadata": {}, "code": 201});
    created["responseObject"] = created["requestObject"].clone();
    assert!(all(vec![dry, received, created]).is_empty());
    // `dryRun` only counts as the query's key.
    let mut named = denied_event();
    named["requestURI"] = json!("/api/v1/namespaces/dryRun/pods");
    assert_eq!(all(vec![named]).len(), 1);
}

fn placed_event(request_annotations: Value) -> Value {
    let term = json!({"matchExpressions": [{"key": "node-restriction.kubernetes.io/enclave-site", "operator": "In", "values": ["dublin"]}]});
    json!({
        "auditID": "placed-1", "stage": "ResponseComplete", "verb": "create",
        "requestURI": "/api/v1/namespaces/shop/pods", "user": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "objectRef": {"resource": "pods", "namespace": "shop", "name": "web-x1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {"metadata": {"name": "web-x1", "annotations": request_annotations}, "spec": {"containers": []}},
        "responseObject": {"metadata": {"name": "web-x1", "annotations": {"enclave.dev/policy": "eu-user-data,other"}},
            "spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}}},
        "annotations": {}
    })
}

#[test]
fn a_placement_is_what_the_stored_pod_gained_over_the_sent_one() {
    let out = all(vec![placed_event(json!({}))]);
    let policies: Vec<_> = out
        .iter()
        .map(|r| r.policy.clone().unwrap_or_default())
        .collect();
    assert_eq!(policies, ["eu-user-data", "other"]);
    assert!(out.iter().all(|r| r.kind == Kind::PodPlaced));
    assert_eq!(
        out[0].details["admissionPolicy"],
        "enclave-place.eu-user-data"
    );
    // A name the client wrote itself was not added by admission: not a placement.
    let out = all(vec![placed_event(json!({"enclave.dev/policy": "other"}))]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].policy.as_deref(), Some("eu-user-data"));
    // The annotation without a change of affinity is not a placement either.
    let mut unchanged = placed_event(json!({}));
    unchanged["requestObject"]["spec"] = unchanged["responseObject"]["spec"].clone();
    assert!(all(vec![unchanged]).is_empty());
}

#[test]
fn daemonset_templates_are_placed_too() {
    let mut event = placed_event(json!({}));
    event["objectRef"] =
        json!({"resource": "daemonsets", "apiGroup": "apps", "namespace": "shop", "name": "agent"});
    let sent = event["requestObject"].clone();
    let stored = event["responseObject"].clone();
    event["requestObject"] = json!({"spec": {"template": sent}});
    event["responseObject"] = json!({"spec": {"template": stored}});
    event["verb"] = json!("update");
    event["responseStatus"] = json!({"code": 200});
    let out = all(vec![event.clone()]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].subject.kind, "DaemonSet");
    // A patch's requestObject is the patch: a template it does not name is no placement.
    event["verb"] = json!("patch");
    event["requestObject"] = json!({"spec": {"template": {"spec": {"containers": []}}}});
    assert!(all(vec![event]).is_empty());
}

#[test]
fn audit_mode_findings_come_from_the_validation_failure_annotation() {
    let failure = json!([{"message": "(Audit) would deny: policy eu: Pod shop/db-0 is pinned to virginia-a",
        "policy": "enclave-check.eu", "binding": "enclave-check.eu", "expressionIndex": 2,
        "validationActions": ["Audit", "Warn"]},
        {"message": "someone else's", "policy": "company-rules", "binding": "b", "expressionIndex": 0, "validationActions": ["Audit"]}]);
    let mut event = denied_event();
    event["responseStatus"] = json!({"code": 201});
    event["annotations"] =
        json!({"validation.policy.admission.k8s.io/validation_failure": failure.to_string()});
    let out = all(vec![event]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, Kind::AuditFinding);
    assert_eq!(out[0].policy.as_deref(), Some("eu"));
    assert_eq!(out[0].details["binding"], "enclave-check.eu");
    assert!(out[0].message.starts_with("(Audit) would deny"));
}

#[test]
fn what_an_enclave_webhook_also_decided_is_recorded_once_by_the_webhook() {
    let webhook = json!({"configuration": "enclave-operator-eu-user-data", "webhook": "pods.eu-user-data.policies.enclave.dev", "mutated": true}).to_string();
    let mut placed = placed_event(json!({}));
    placed["annotations"] = json!({"mutation.webhook.admission.k8s.io/round_0_index_0": webhook});
    assert!(all(vec![placed.clone()]).is_empty());
    // Someone else's webhook does not hide the native placement.
    let theirs =
        json!({"configuration": "istio-sidecar-injector", "webhook": "x", "mutated": true})
            .to_string();
    placed["annotations"] = json!({"mutation.webhook.admission.k8s.io/round_0_index_0": theirs});
    assert_eq!(all(vec![placed]).len(), 2);
}

#[test]
fn an_event_sent_again_is_seen_once_and_memory_stays_bounded() {
    let mut seen = Seen::new(2);
    assert!(seen.first("a"));
    assert!(!seen.first("a"));
    assert!(seen.first("b"));
    assert!(seen.first("c"));
    // "a" was forgotten first.
    assert!(seen.first("a"));
    assert!(!seen.first("c"));
    assert!(seen.first(""));
    assert!(seen.first(""));
}

#[test]
fn anything_the_api_server_may_add_or_leave_out_parses() {
    let odd: EventList = serde_json::from_str(
        r#"{"items":[{"stage":"ResponseComplete"},{"objectRef":{"resource":"pods"},"stage":"ResponseComplete","responseStatus":{"code":403,"message":"AdmissionPolicy '"}, "extra": [1,2]}]}"#,
    )
    .expect("parses");
    assert!(odd.items.iter().flat_map(records).next().is_none());
}

#[test]
fn the_local_control_plane_uses_the_generated_audit_policy() {
    assert_eq!(
        include_str!("../../tools/cluster/audit-policy.yaml"),
        super::policy("enclave-system")
    );
}

#[test]
fn a_client_ca_without_a_certificate_is_a_clear_error() {
    use super::server::client_roots;
    assert_eq!(
        client_roots(b"not a certificate").err().as_deref(),
        Some("no certificate in it")
    );
    let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    assert!(client_roots(broken).is_err());
    let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).expect("a certificate");
    assert_eq!(
        client_roots(ca.cert.pem().as_bytes()).map(|r| r.len()),
        Ok(1)
    );
}

#[test]
fn objects_are_read_only_for_what_they_can_record_and_one_odd_object_loses_one_record() {
    // Created by generateName: the subject is named after it, read from the object.
    let mut generated = placed_event(json!({}));
    generated["objectRef"]["name"] = json!("");
    generated["requestObject"]["metadata"] = json!({"generateName": "web-", "annotations": {}});
    let out = all(vec![generated]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|r| r.subject.name == "web-"), "{out:?}");
    // An annotation that is not a string reads as absent, as it always has.
    let mut odd = placed_event(json!({}));
    odd["auditID"] = json!("placed-odd");
    odd["requestObject"]["metadata"]["annotations"] = json!({"enclave.dev/policy": 7});
    assert_eq!(all(vec![odd]).len(), 2);
    // An object that is not one makes no placement record; the batch is still read, and
    // the other event still records.
    let mut odd = placed_event(json!({}));
    odd["auditID"] = json!("placed-odd");
    odd["requestObject"] = json!("not an object");
    let out = all(vec![odd, placed_event(json!({}))]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|r| r.details["auditID"] == "placed-1"));
    // A denial needs no object: it is recorded from the response status alone.
    let mut denied = denied_event();
    denied["requestObject"] = json!("not an object");
    assert_eq!(all(vec![denied]).len(), 1);
}
