//! The pure core: the API server's audit events in, decision records out.
//!
//! The API server decides alone with the native engine; what it decided reaches the
//! operator only as audit events. Of every event the policy ([`super::policy`]) sends,
//! only what one of the operator's own admission policies (`enclave-…`) decided becomes
//! a record:
//!
//! - **Refused** ([`Kind::PodDenied`]): a response status of 400 or more whose message
//!   is the API server's own for a denial by `ValidatingAdmissionPolicy 'enclave-…'`
//!   (a Deny action publishes no audit annotation, only this message).
//! - **Audit findings** ([`Kind::AuditFinding`]): the
//!   `validation.policy.admission.k8s.io/validation_failure` annotation the API server
//!   adds for an `Audit` validation action (k8s.io/apiserver
//!   `pkg/admission/plugin/policy/validating/dispatcher.go`), one per failure naming an
//!   `enclave-…` policy.
//! - **Placed** ([`Kind::PodPlaced`]): a MutatingAdmissionPolicy publishes no annotation
//!   at all, so a placement is observed by comparing the object as the client sent it
//!   (`requestObject`) with the object as stored (`responseObject`, level
//!   RequestResponse): the node affinity changed and the `enclave.dev/policy` annotation
//!   gained the names of the policies that placed it. Names the client wrote itself are
//!   not gained, so a tenant can hide nothing it did not do and add no placement that
//!   the API server did not make.
//!
//! Not recorded: dry-run requests (nothing was created; the webhooks skip them too),
//! events of other stages, and what the operator's webhooks also decided — an event
//! whose annotations show an `enclave-operator-…` mutating webhook took part was
//! recorded by that webhook, so its placements and Audit findings are not recorded
//! twice (a denial cannot be: the first refusal ends admission, and one by a webhook
//! does not name a ValidatingAdmissionPolicy). Warnings (`Warn` action) never reach
//! audit events.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use crate::{
    decisions::{Kind, Record, Subject},
    names::POLICY_ANNOTATION,
};

/// The annotation the API server adds for a failed validation whose action is `Audit`.
pub const VALIDATION_FAILURE: &str = "validation.policy.admission.k8s.io/validation_failure";

/// The prefix of the annotation the API server adds for every mutating webhook it
/// called (`{"configuration": …, "webhook": …, "mutated": …}`).
pub const WEBHOOK_MUTATION: &str = "mutation.webhook.admission.k8s.io/";

/// The prefix of every admission object the operator writes for the native engine
/// (`enclave-place.`, `enclave-check.`, …) and of its webhook configurations
/// (`enclave-operator-`).
const NATIVE_PREFIX: &str = "enclave-";
const WEBHOOK_PREFIX: &str = "enclave-operator-";

/// `audit.k8s.io/v1` EventList, as much of it as the records need. Every field is
/// optional: a field missing from an event leaves that event without a record, never
/// the list unread.
#[derive(Debug, Default, Deserialize)]
pub struct EventList {
    #[serde(default)]
    pub items: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Event {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    pub verb: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub user: User,
    pub object_ref: Option<ObjectRef>,
    pub response_status: Option<Status>,
    /// The objects, kept as the API server wrote them and read ([`ObjectView`]) only
    /// for an event that can make a record: the policy sends every pod create of the
    /// cluster, in scope or not, dry runs included, each pod twice.
    pub request_object: Option<Box<RawValue>>,
    pub response_object: Option<Box<RawValue>>,
    pub annotations: BTreeMap<String, String>,
}

/// What the records read of an object an event carries (a pod, or a DaemonSet and its
/// pod template); every other field is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ObjectView {
    metadata: MetaView,
    spec: SpecView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct MetaView {
    generate_name: Option<String>,
    /// Values as JSON: one that is not a string reads as absent, not as an unreadable
    /// object.
    annotations: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SpecView {
    affinity: Option<AffinityView>,
    template: Option<Box<ObjectView>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AffinityView {
    node_affinity: Option<Value>,
}

/// An object of the event, read; `None` when absent or not an object of that shape
/// (the event then makes no placement record, as one without the object).
fn view(raw: Option<&RawValue>) -> Option<ObjectView> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct User {
    pub username: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectRef {
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    pub api_group: String,
    pub subresource: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub code: i64,
    pub message: String,
}

/// One entry of the [`VALIDATION_FAILURE`] annotation's list.
#[derive(Debug, Deserialize)]
struct ValidationFailure {
    #[serde(default)]
    message: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    binding: String,
}

/// One entry of a [`WEBHOOK_MUTATION`] annotation.
#[derive(Debug, Deserialize)]
struct WebhookCall {
    #[serde(default)]
    configuration: String,
}

/// The ResidencyPolicy an admission object was written for: `enclave-check.eu` → `eu`.
/// Long names are shortened with a hash ([`crate::names::bounded`]) and are kept whole.
fn residency_policy(admission_policy: &str) -> String {
    admission_policy
        .strip_prefix(NATIVE_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .map_or(admission_policy, |(_, policy)| policy)
        .to_string()
}

/// The kind of object a resource holds, as records name it.
fn kind_of(resource: &str) -> String {
    match resource {
        "pods" => "Pod",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "replicasets" => "ReplicaSet",
        "daemonsets" => "DaemonSet",
        "jobs" => "Job",
        "cronjobs" => "CronJob",
        other => other,
    }
    .to_string()
}

/// `dryRun` in the request's query: the API server decided but changed nothing.
fn dry_run(uri: &str) -> bool {
    uri.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("dryRun"))
    })
}

/// The admission policy and message of a refusal by one of the operator's native
/// policies, from the API server's message
/// (`… ValidatingAdmissionPolicy 'NAME' with binding 'B' denied request: MESSAGE`).
fn native_denial(message: &str) -> Option<(&str, &str)> {
    const MARK: &str = "AdmissionPolicy '";
    let start = message.find(MARK)? + MARK.len();
    let rest = message.get(start..)?;
    let (name, rest) = rest.split_once('\'')?;
    if !name.starts_with(NATIVE_PREFIX) || name.starts_with(WEBHOOK_PREFIX) {
        return None;
    }
    let reason = rest
        .split_once("denied request: ")
        .map_or(message, |(_, reason)| reason);
    Some((name, reason))
}

/// Did one of the operator's webhooks see this request? Then it recorded it.
fn webhook_took_part(annotations: &BTreeMap<String, String>) -> bool {
    annotations.iter().any(|(key, value)| {
        key.starts_with(WEBHOOK_MUTATION)
            && serde_json::from_str::<WebhookCall>(value)
                .is_ok_and(|call| call.configuration.starts_with(WEBHOOK_PREFIX))
    })
}

/// The pod a request creates: the object itself, or a DaemonSet's template.
fn pod_of<'a>(resource: &str, object: &'a ObjectView) -> Option<&'a ObjectView> {
    match resource {
        "pods" => Some(object),
        "daemonsets" => object.spec.template.as_deref(),
        _ => None,
    }
}

/// The enforcing policies the pod's `enclave.dev/policy` annotation lists.
fn annotated(pod: &ObjectView) -> BTreeSet<String> {
    pod.metadata
        .annotations
        .get(POLICY_ANNOTATION)
        .and_then(Value::as_str)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn node_affinity(pod: &ObjectView) -> Option<&Value> {
    pod.spec.affinity.as_ref()?.node_affinity.as_ref()
}

/// The policies that placed the created pod: the node affinity differs between what
/// the client sent and what was stored, and these names were added to the annotation.
fn placed_by(resource: &str, sent: Option<&ObjectView>, event: &Event) -> BTreeSet<String> {
    let stored = view(event.response_object.as_deref());
    let (Some(sent), Some(stored)) = (
        sent.and_then(|o| pod_of(resource, o)),
        stored.as_ref().and_then(|o| pod_of(resource, o)),
    ) else {
        return BTreeSet::new();
    };
    if node_affinity(sent) == node_affinity(stored) {
        return BTreeSet::new();
    }
    let before = annotated(sent);
    annotated(stored)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect()
}

/// The records of one event (none for most: only what an enclave policy decided).
pub fn records(event: &Event) -> Vec<Record> {
    let Some(object) = &event.object_ref else {
        return Vec::new();
    };
    if event.stage != "ResponseComplete" || dry_run(&event.request_uri) {
        return Vec::new();
    }
    // Pods are placed at CREATE; DaemonSet templates at CREATE and UPDATE. A patch's
    // requestObject is the patch, not the object: nothing to compare the stored one
    // with, so a DaemonSet placed by a patch is not recorded (see docs/design.md).
    let written = matches!(event.verb.as_str(), "create" | "update")
        && event
            .response_status
            .as_ref()
            .is_some_and(|s| (200..300).contains(&s.code));
    let sent = (written || object.name.is_empty())
        .then(|| view(event.request_object.as_deref()))
        .flatten();
    let name = if object.name.is_empty() {
        sent.as_ref()
            .and_then(|o| o.metadata.generate_name.as_deref())
            .unwrap_or_default()
    } else {
        &object.name
    };
    let mut kind = kind_of(&object.resource);
    if !object.subresource.is_empty() {
        kind = format!("{kind}/{}", object.subresource);
    }
    let subject = Subject::new(&kind, object.namespace.as_deref(), name);
    let record = |kind: Kind, policy: &str, message: String, admission_policy: &str| {
        Record::new(kind, Some(policy), subject.clone(), message)
            .with("engine", "native")
            .with("admissionPolicy", admission_policy)
            .with("operation", event.verb.clone())
            .with("user", event.user.username.clone())
            .with("auditID", event.audit_id.clone())
    };
    let mut out = Vec::new();
    if let Some(status) = &event.response_status
        && status.code >= 400
        && let Some((admission_policy, reason)) = native_denial(&status.message)
    {
        out.push(record(
            Kind::PodDenied,
            &residency_policy(admission_policy),
            reason.to_string(),
            admission_policy,
        ));
    }
    if webhook_took_part(&event.annotations) {
        return out;
    }
    if let Some(value) = event.annotations.get(VALIDATION_FAILURE) {
        let failures: Vec<ValidationFailure> = serde_json::from_str(value).unwrap_or_default();
        for failure in failures
            .iter()
            .filter(|f| f.policy.starts_with(NATIVE_PREFIX))
        {
            out.push(
                record(
                    Kind::AuditFinding,
                    &residency_policy(&failure.policy),
                    failure.message.clone(),
                    &failure.policy,
                )
                .with("binding", failure.binding.clone()),
            );
        }
    }
    if written {
        for policy in placed_by(&object.resource, sent.as_ref(), event) {
            let admission_policy = crate::admission::native::object_name("place", &policy);
            out.push(record(
                Kind::PodPlaced,
                &policy,
                format!("{kind} placed in the enclave of policy {policy}"),
                &admission_policy,
            ));
        }
    }
    out
}

/// The audit IDs seen lately, so that an event the API server sends again (its batch
/// backend retries a batch that failed part-way) is recorded once. Bounded: the oldest
/// ID is forgotten first.
pub struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
    capacity: usize,
}

impl Seen {
    pub fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            ids: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `id` is offered (empty IDs always count as new).
    pub fn first(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.ids.insert(id.to_string());
        true
    }
}
