//! AdmissionReview in and out: a lean decoding of the request (the object is parsed
//! straight into the few fields decisions read; containers and the old object are
//! skipped), one handler per kind of object, and the response with its JSON patch
//! encoded as the API server expects it (base64 in a JSON string).
//!
//! Patches touch only what admission owns — the required node affinity, the added
//! preferences and the policy annotation — so fields this build does not know are
//! never dropped, and the result equals what the native engine's JSONPatch produces.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::{Affinity, NodeSelectorTerm, PodSpec, Volume};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::{
    Handler,
    decide::{self, Decision, Outcome, PodView, Subject},
};
use crate::{names::POLICY_ANNOTATION, scope::Catalog};

/// The group every node identity is in.
pub const NODES_GROUP: &str = "system:nodes";

/// The user name prefix of node identities: `system:node:<node name>`.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Is this request a kubelet creating the mirror pod of a static pod on its own node?
/// Only what a kubelet alone can be counts: the user `system:node:<name>` in the group
/// `system:nodes` (the identity NodeRestriction recognises and holds to mirror pods
/// bound to that node), with the pod bound to `<name>`. The group alone is not enough:
/// anyone allowed to impersonate groups can claim `system:nodes` under another user
/// name, and NodeRestriction then holds them to nothing. Never an annotation a tenant
/// can write.
pub fn is_own_mirror_pod(user: &UserInfo, node_name: Option<&str>) -> bool {
    user.groups.iter().any(|g| g == NODES_GROUP)
        && user
            .username
            .strip_prefix(NODE_USER_PREFIX)
            .is_some_and(|node| !node.is_empty() && Some(node) == node_name)
}

/// An incoming AdmissionReview.
#[derive(Deserialize)]
pub struct ReviewIn<'a> {
    #[serde(borrow, default)]
    pub request: Option<Request<'a>>,
}

/// The group, version and kind of the object under review.
#[derive(Deserialize, Default, Debug, Clone)]
pub struct Gvk {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// Who made the request, as the API server authenticated them.
#[derive(Deserialize, Default, Debug, Clone)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The request of an AdmissionReview, as far as decisions read it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    pub uid: String,
    #[serde(default)]
    pub kind: Gvk,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub user_info: UserInfo,
    /// Parsed by the handler into the type it needs.
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    /// The object before an UPDATE, kept raw: only the scope guard reads it.
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: bool,
}

/// The outgoing AdmissionReview.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: Response,
}

/// The response of an AdmissionReview.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Base64 of the JSON patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a request was refused.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

impl ReviewOut {
    fn new(response: Response) -> Self {
        Self {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response,
        }
    }

    /// A refusal of a review that could not be decided (it does not parse, or lacks
    /// what its operation needs): in-scope requests fail closed.
    pub fn refuse(uid: &str, message: impl Into<String>) -> Self {
        Self::new(Response {
            uid: uid.to_string(),
            allowed: false,
            status: Some(Status {
                code: 400,
                message: message.into(),
            }),
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        })
    }

    /// The JSON patch of the response, decoded (for tests and benchmarks).
    pub fn patch_ops(&self) -> Option<Vec<Value>> {
        let encoded = self.response.patch.as_ref()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A decision on one request and what to record of it.
pub struct Answer {
    pub review: ReviewOut,
    pub decision: Decision,
}

fn answer(request: &Request, decision: Decision, patch: Option<Vec<Value>>) -> Answer {
    let mut response = Response {
        uid: request.uid.clone(),
        allowed: true,
        status: None,
        patch: None,
        patch_type: None,
        warnings: decision.warnings.clone(),
    };
    match &decision.outcome {
        Outcome::Deny(message) => {
            response.allowed = false;
            response.status = Some(Status {
                code: 403,
                message: message.clone(),
            });
        }
        Outcome::Place(_) => {
            if let Some(ops) = patch
                && let Ok(bytes) = serde_json::to_vec(&ops)
            {
                response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                response.patch_type = Some("JSONPatch");
            }
        }
        Outcome::Allow => {}
    }
    Answer {
        review: ReviewOut::new(response),
        decision,
    }
}

fn allow(request: &Request) -> Answer {
    answer(request, Decision::default(), None)
}

fn refuse(request: &Request, message: String) -> Answer {
    Answer {
        review: ReviewOut::refuse(&request.uid, message.clone()),
        decision: Decision {
            outcome: Outcome::Deny(message),
            ..Decision::default()
        },
    }
}

/// Metadata as decisions read it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl Meta {
    /// The pods of a workload's template as decisions see them: named after the
    /// workload, with the template's labels and annotations.
    fn of_template(workload: Option<Meta>, template: Option<Meta>) -> Self {
        let template = template.unwrap_or_default();
        Self {
            name: workload.and_then(|m| m.name),
            generate_name: None,
            labels: template.labels,
            annotations: template.annotations,
        }
    }
}

/// The fields of a pod spec decisions read: placement, and the side doors (host network,
/// volumes); the rest (containers, …) is skipped.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PlacementSpec {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    affinity: Option<Affinity>,
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default)]
    volumes: Option<Vec<Volume>>,
}

impl PlacementSpec {
    fn into_pod_spec(self) -> PodSpec {
        PodSpec {
            node_name: self.node_name,
            node_selector: self.node_selector,
            affinity: self.affinity,
            host_network: self.host_network,
            volumes: self.volumes,
            ..PodSpec::default()
        }
    }
}

#[derive(Deserialize, Default)]
struct PodLike {
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default)]
    spec: PlacementSpec,
}

#[derive(Deserialize, Default)]
struct TemplateSpec {
    #[serde(default)]
    template: Option<PodLike>,
    #[serde(default, rename = "jobTemplate")]
    job_template: Option<Box<JobTemplate>>,
}

#[derive(Deserialize, Default)]
struct JobTemplate {
    #[serde(default)]
    spec: TemplateSpec,
}

#[derive(Deserialize, Default)]
struct Workload {
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default)]
    spec: TemplateSpec,
}

fn empty() -> &'static BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    &EMPTY
}

/// Where a pod-like object keeps its spec and metadata, as JSON pointers.
struct Paths {
    spec: &'static str,
    metadata: &'static str,
}

const POD_PATHS: Paths = Paths {
    spec: "/spec",
    metadata: "/metadata",
};
const TEMPLATE_PATHS: Paths = Paths {
    spec: "/spec/template/spec",
    metadata: "/spec/template/metadata",
};

/// A JSON pointer segment: `~` and `/` escaped (RFC 6901).
fn segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn add(path: String, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// The JSON patch from the original placement to the decided one: only the node
/// affinity's required terms, the preferences added after the pod's own, and the
/// annotation. `add` replaces an existing member (RFC 6902), so the required terms are
/// one operation whether or not the pod had any.
fn placement_patch(
    paths: &Paths,
    original: &PodSpec,
    had_metadata: bool,
    had_annotations: bool,
    placement: &decide::Placement,
) -> Result<Vec<Value>, serde_json::Error> {
    let mut ops = Vec::new();
    let new = placement.affinity.node_affinity.clone().unwrap_or_default();
    let affinity_path = format!("{}/affinity", paths.spec);
    match original.affinity.as_ref() {
        None => ops.push(add(
            affinity_path,
            serde_json::to_value(&placement.affinity)?,
        )),
        Some(old) => match old.node_affinity.as_ref() {
            None => ops.push(add(
                format!("{affinity_path}/nodeAffinity"),
                serde_json::to_value(&new)?,
            )),
            Some(old) => {
                let base = format!("{affinity_path}/nodeAffinity");
                if new.required_during_scheduling_ignored_during_execution
                    != old.required_during_scheduling_ignored_during_execution
                    && let Some(required) = &new.required_during_scheduling_ignored_during_execution
                {
                    ops.push(add(
                        format!("{base}/requiredDuringSchedulingIgnoredDuringExecution"),
                        serde_json::to_value(required)?,
                    ));
                }
                let before = old
                    .preferred_during_scheduling_ignored_during_execution
                    .as_deref()
                    .unwrap_or_default();
                let after = new
                    .preferred_during_scheduling_ignored_during_execution
                    .as_deref()
                    .unwrap_or_default();
                let path = format!("{base}/preferredDuringSchedulingIgnoredDuringExecution");
                if after.len() > before.len() {
                    if old
                        .preferred_during_scheduling_ignored_during_execution
                        .is_none()
                    {
                        ops.push(add(path, serde_json::to_value(after)?));
                    } else {
                        for preference in &after[before.len()..] {
                            ops.push(add(format!("{path}/-"), serde_json::to_value(preference)?));
                        }
                    }
                }
            }
        },
    }
    let annotation = Value::String(placement.annotation.clone());
    ops.push(if !had_metadata {
        add(
            paths.metadata.to_string(),
            json!({"annotations": {POLICY_ANNOTATION: annotation}}),
        )
    } else if !had_annotations {
        add(
            format!("{}/annotations", paths.metadata),
            json!({POLICY_ANNOTATION: annotation}),
        )
    } else {
        add(
            format!(
                "{}/annotations/{}",
                paths.metadata,
                segment(POLICY_ANNOTATION)
            ),
            annotation,
        )
    });
    Ok(ops)
}

/// Runs a pod-like decision and builds its patch.
#[allow(clippy::too_many_arguments)] // one call site per kind of object
fn decide_pod_like<C: Catalog>(
    request: &Request,
    catalog: &C,
    subject: Subject,
    meta: &Meta,
    had_metadata: bool,
    spec: PlacementSpec,
    paths: &Paths,
    decider: fn(&C, &PodView) -> Decision,
) -> Answer {
    let spec = spec.into_pod_spec();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let name = meta
        .name
        .as_deref()
        .or(meta.generate_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(request.name.as_str());
    let view = PodView {
        subject,
        namespace,
        name,
        labels: meta.labels.as_ref().unwrap_or(empty()),
        annotations: meta.annotations.as_ref().unwrap_or(empty()),
        spec: &spec,
    };
    let decision = decider(catalog, &view);
    let patch = match &decision.outcome {
        Outcome::Place(placement) => match placement_patch(
            paths,
            &spec,
            had_metadata,
            meta.annotations.is_some(),
            placement,
        ) {
            Ok(ops) => Some(ops),
            Err(error) => {
                return refuse(
                    request,
                    format!("enclave-operator could not encode its patch: {error}"),
                );
            }
        },
        _ => None,
    };
    answer(request, decision, patch)
}

/// The kinds whose pod template workload warnings read, by the kind the API server names.
fn template_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "Deployment",
        "StatefulSet" => "StatefulSet",
        "ReplicaSet" => "ReplicaSet",
        "DaemonSet" => "DaemonSet",
        "Job" => "Job",
        "CronJob" => "CronJob",
        "ReplicationController" => "ReplicationController",
        _ => return None,
    })
}

fn decide_access<C: Catalog>(_: Handler, catalog: &C, request: &Request) -> Answer {
    let view = decide::AccessView {
        namespace: request.namespace.as_deref().unwrap_or_default(),
        pod: &request.name,
        subresource: request.sub_resource.as_deref().unwrap_or_default(),
        user: &request.user_info.username,
        groups: &request.user_info.groups,
        now: jiff::Timestamp::now(),
    };
    answer(request, decide::access(catalog, &view), None)
}

/// The scope guard on a pod CREATE or UPDATE: the labels before and after, the
/// placement and the volumes.
fn decide_scope<C: Catalog>(catalog: &C, request: &Request, object: &RawValue) -> Answer {
    use k8s_openapi::api::core::v1::Pod;
    // A kubelet creating its mirror pod is not a tenant's request (and a static pod
    // cannot mount a claim).
    if request.user_info.groups.iter().any(|g| g == NODES_GROUP) {
        return allow(request);
    }
    let pod: Pod = match serde_json::from_str(object.get()) {
        Ok(pod) => pod,
        Err(e) => return refuse(request, format!("the pod does not parse: {e}")),
    };
    let old_labels = if request.operation == "UPDATE" {
        let Some(old) = request.old_object else {
            return refuse(
                request,
                "enclave-operator: a pod UPDATE review without the old object cannot be decided"
                    .to_string(),
            );
        };
        let old: PodLike = match serde_json::from_str(old.get()) {
            Ok(old) => old,
            Err(e) => return refuse(request, format!("the old pod does not parse: {e}")),
        };
        Some(old.metadata.and_then(|m| m.labels).unwrap_or_default())
    } else {
        None
    };
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(request.name.as_str());
    let spec = pod.spec.clone().unwrap_or_default();
    let view = super::scope_guard::ScopeView {
        namespace: request.namespace.as_deref().unwrap_or_default(),
        name,
        labels: pod.metadata.labels.as_ref().unwrap_or(empty()),
        old_labels: old_labels.as_ref(),
        spec: &spec,
    };
    answer(request, super::scope_guard::decide(catalog, &view), None)
}

/// What an attempt to reach into a pod asked for, for the record: the container and,
/// for exec, the command — with values that look like secrets redacted.
pub fn access_details(request: &Request) -> (Option<String>, Option<Vec<String>>) {
    #[derive(Deserialize, Default)]
    struct Options {
        #[serde(default)]
        container: Option<String>,
        #[serde(default)]
        command: Option<Vec<String>>,
    }
    let options: Options = request
        .object
        .and_then(|o| serde_json::from_str(o.get()).ok())
        .unwrap_or_default();
    (options.container, options.command.map(|c| redact(&c)))
}

/// Arguments that carry a secret on the command line are recorded without it: the
/// value after `-p`, `--password`, `--token` and the like, and the value part of
/// `NAME=value` pairs whose name mentions a password, secret, token or key.
pub fn redact(command: &[String]) -> Vec<String> {
    const SENSITIVE: &[&str] = &["pass", "secret", "token", "key", "credential", "auth"];
    let sensitive = |text: &str| {
        let lower = text.to_ascii_lowercase();
        SENSITIVE.iter().any(|s| lower.contains(s))
    };
    let mut out = Vec::with_capacity(command.len());
    let mut hide_next = false;
    for arg in command {
        if hide_next {
            out.push("<redacted>".to_string());
            hide_next = false;
            continue;
        }
        if let Some((name, _)) = arg.split_once('=')
            && sensitive(name)
        {
            out.push(format!("{name}=<redacted>"));
        } else if arg.starts_with("-p") && arg.len() > 2 && !arg.starts_with("--") {
            out.push("-p<redacted>".to_string());
        } else if arg == "-p" || (arg.starts_with('-') && sensitive(arg)) {
            out.push(arg.clone());
            hide_next = true;
        } else {
            out.push(arg.clone());
        }
    }
    out
}

/// Decides one request with the entry's handler.
pub fn decide<C: Catalog>(handler: Handler, catalog: &C, request: &Request) -> Answer {
    let creating = request.operation == "CREATE";
    let updating = request.operation == "UPDATE";
    if handler == Handler::GateAccess {
        return match request.operation.as_str() {
            "CONNECT" | "UPDATE" => decide_access(handler, catalog, request),
            _ => allow(request),
        };
    }
    if !(creating || updating) {
        return allow(request);
    }
    let Some(object) = request.object else {
        return refuse(
            request,
            format!(
                "enclave-operator: a {} review of {} without an object cannot be decided",
                request.operation, request.kind.kind
            ),
        );
    };
    match handler {
        Handler::MutatePod | Handler::ValidatePod => {
            // Placement is immutable once a pod exists: only creation is decided.
            if !creating {
                return allow(request);
            }
            let pod: PodLike = match serde_json::from_str(object.get()) {
                Ok(pod) => pod,
                Err(e) => return refuse(request, format!("the pod does not parse: {e}")),
            };
            // The operator's probe of the native engine during an engine switch: it must
            // reach the admission policies behind these webhooks. A dry run is never
            // stored, so letting it through admits nothing.
            if super::probe::passes_webhooks(
                request.dry_run,
                pod.metadata.as_ref().and_then(|m| m.annotations.as_ref()),
            ) {
                return allow(request);
            }
            // A kubelet creating its own mirror pod is not a tenant's request.
            if is_own_mirror_pod(&request.user_info, pod.spec.node_name.as_deref()) {
                return allow(request);
            }
            let decider = if handler == Handler::MutatePod {
                decide::mutate::<C>
            } else {
                decide::validate::<C>
            };
            decide_pod_like(
                request,
                catalog,
                Subject::Pod,
                pod.metadata.as_ref().unwrap_or(&Meta::default()),
                true,
                pod.spec,
                &POD_PATHS,
                decider,
            )
        }
        Handler::MutateDaemonSet => {
            let daemonset: Workload = match serde_json::from_str(object.get()) {
                Ok(daemonset) => daemonset,
                Err(e) => return refuse(request, format!("the DaemonSet does not parse: {e}")),
            };
            let Some(template) = daemonset.spec.template else {
                return allow(request);
            };
            // The template changes on CREATE and UPDATE: the DaemonSet controller creates
            // pods from it, and a template that targets outside nodes leaves them pending.
            let had_metadata = template.metadata.is_some();
            let meta = Meta::of_template(daemonset.metadata, template.metadata);
            decide_pod_like(
                request,
                catalog,
                Subject::Template("DaemonSet"),
                &meta,
                had_metadata,
                template.spec,
                &TEMPLATE_PATHS,
                decide::mutate::<C>,
            )
        }
        Handler::GateAccess => decide_access(handler, catalog, request),
        Handler::GuardScope => decide_scope(catalog, request, object),
        Handler::ValidateVolumes => {
            #[derive(Deserialize, Default)]
            struct Template {
                #[serde(default)]
                metadata: Option<Meta>,
                #[serde(default)]
                spec: k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
            }
            #[derive(Deserialize, Default)]
            #[serde(rename_all = "camelCase")]
            struct Claims {
                #[serde(default)]
                metadata: Option<Meta>,
                #[serde(default)]
                spec: serde_json::Map<String, Value>,
            }
            let parsed: Claims = match serde_json::from_str(object.get()) {
                Ok(parsed) => parsed,
                Err(e) => {
                    return refuse(
                        request,
                        format!("the {} does not parse: {e}", request.kind.kind),
                    );
                }
            };
            let name = parsed
                .metadata
                .as_ref()
                .and_then(|m| m.name.clone().or(m.generate_name.clone()))
                .unwrap_or_else(|| request.name.clone());
            let claims = match request.kind.kind.as_str() {
                "PersistentVolumeClaim" => {
                    match serde_json::from_value(Value::Object(parsed.spec)) {
                        Ok(spec) => vec![decide::Claim {
                            name: name.clone(),
                            annotations: parsed
                                .metadata
                                .and_then(|m| m.annotations)
                                .unwrap_or_default(),
                            spec,
                        }],
                        Err(e) => return refuse(request, format!("the claim does not parse: {e}")),
                    }
                }
                "StatefulSet" => {
                    let templates: Vec<Template> = match parsed
                        .spec
                        .get("volumeClaimTemplates")
                        .map(|t| serde_json::from_value(t.clone()))
                        .transpose()
                    {
                        Ok(templates) => templates.unwrap_or_default(),
                        Err(e) => {
                            return refuse(
                                request,
                                format!("the StatefulSet's claim templates do not parse: {e}"),
                            );
                        }
                    };
                    templates
                        .into_iter()
                        .map(|t| {
                            let meta = t.metadata.unwrap_or_default();
                            decide::Claim {
                                name: meta.name.unwrap_or_default(),
                                annotations: meta.annotations.unwrap_or_default(),
                                spec: t.spec,
                            }
                        })
                        .collect()
                }
                _ => return allow(request),
            };
            let view = decide::ClaimsView {
                kind: if request.kind.kind == "StatefulSet" {
                    "StatefulSet"
                } else {
                    "PersistentVolumeClaim"
                },
                namespace: request.namespace.as_deref().unwrap_or_default(),
                name: &name,
                claims,
            };
            answer(request, decide::volumes(catalog, &view), None)
        }
        Handler::WarnWorkload => {
            let Some(kind) = template_kind(&request.kind.kind) else {
                return allow(request);
            };
            let workload: Workload = match serde_json::from_str(object.get()) {
                Ok(workload) => workload,
                // Warnings only: an object we cannot read is not ours to refuse.
                Err(_) => return allow(request),
            };
            let template = match kind {
                "CronJob" => workload.spec.job_template.and_then(|j| j.spec.template),
                _ => workload.spec.template,
            };
            let Some(template) = template else {
                return allow(request);
            };
            let meta = Meta::of_template(workload.metadata, template.metadata);
            decide_pod_like(
                request,
                catalog,
                Subject::Template(kind),
                &meta,
                true,
                template.spec,
                &TEMPLATE_PATHS,
                decide::warn_workload::<C>,
            )
        }
    }
}

/// The placed terms of a patched pod, for tests: applies the patch to `object`.
pub fn apply_patch(object: &mut Value, ops: &[Value]) -> Result<(), String> {
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops.to_vec())).map_err(|e| e.to_string())?;
    json_patch::patch(object, &patch).map_err(|e| e.to_string())
}

/// The required node selector terms of a pod object, for tests and benchmarks.
pub fn required_terms(pod: &Value) -> Vec<NodeSelectorTerm> {
    pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod redaction {
    #[test]
    fn secrets_on_the_command_line_are_not_recorded() {
        let command: Vec<String> = [
            "mysql",
            "-uroot",
            "-phunter2",
            "--password",
            "x",
            "TOKEN=abc",
            "ls",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            super::redact(&command),
            [
                "mysql",
                "-uroot",
                "-p<redacted>",
                "--password",
                "<redacted>",
                "TOKEN=<redacted>",
                "ls"
            ]
        );
    }
}

#[cfg(test)]
mod fuzz_smoke {
    //! A bounded run of what `make fuzz` does for millions of inputs (coverage-guided,
    //! outside `make test`): arbitrary bytes, and the fixture review with parts replaced
    //! by arbitrary JSON, through every handler — never a panic, always an answer for
    //! the review's uid.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::{admission::ENTRIES, scope::StaticCatalog};

    const REVIEW: &str = include_str!("../../tests/fixtures/pod-review.json");

    fn catalog() -> StaticCatalog {
        StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
            .expect("fixture")
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9./ -]{0,12}".prop_map(Value::String),
            Just(Value::String("In".into())),
            Just(Value::String("metadata.name".into())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every JSON pointer of a value.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    pointers(
                        v,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    fn check(bytes: &[u8], catalog: &StaticCatalog) -> Result<(), TestCaseError> {
        if let Ok(ReviewIn {
            request: Some(request),
        }) = serde_json::from_slice::<ReviewIn>(bytes)
        {
            for entry in ENTRIES {
                let answer = decide(entry.handler, catalog, &request);
                prop_assert_eq!(&answer.review.response.uid, &request.uid);
                prop_assert!(serde_json::to_vec(&answer.review).is_ok());
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&bytes, &catalog())?;
        }

        #[test]
        fn mutated_reviews_never_panic(picks in prop::collection::vec((any::<prop::sample::Index>(), arbitrary_json()), 1..4)) {
            let mut review: Value = serde_json::from_str(REVIEW).expect("fixture");
            for (index, replacement) in picks {
                let mut all = Vec::new();
                pointers(&review, String::new(), &mut all);
                let at = index.get(&all).clone();
                if at.is_empty() {
                    continue;
                }
                if let Some(slot) = review.pointer_mut(&at) {
                    *slot = replacement;
                }
            }
            check(review.to_string().as_bytes(), &catalog())?;
        }
    }
}
