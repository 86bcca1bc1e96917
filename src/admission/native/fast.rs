//! The native engine's fast paths: the common pod, decided by a few field tests instead
//! of the general placement logic of [`super::cel`].
//!
//! Why: what a native policy costs the API server per pod is mostly how much CEL it
//! evaluates and how often the API server converts the pod to evaluate it (measured
//! with its CPU profile, docs/benchmarks.md). The general expressions mirror
//! [`crate::placement`] for every node affinity Kubernetes accepts; most pods have none,
//! or a few terms that never name the enclave's site label, and most enclaves tell their
//! sites apart by one label (`In` a list of values). For those, both policies have a
//! shortcut that is *sound*: it takes only pods for which it gives exactly what the
//! general expressions give, and leaves every other pod to them.
//!
//! - The placing policy ([`plain_pod`]): a pod whose required terms do not mention the
//!   site label is placed by appending the site requirement to each term, once per site,
//!   the same terms in the same order as the general cross product.
//! - The check ([`settled_pod`]): a pod that plainly stays in the enclave (every term
//!   confines it to one site by an `In` on the site label, no `nodeName`, no host
//!   network, only contained volumes) passes every validation of the check. It is the
//!   check's match condition, negated: the API server then skips the check's
//!   validations and their messages for it, which it otherwise evaluates for every pod
//!   (`messageExpression`s included, each set with its own conversion of the pod).
//!
//! Both are generated only when every site is one `In` requirement on one common key;
//! the bounds keep every pod they take inside what admission judges and places
//! ([`crate::placement::MAX_JUDGED_TERMS`] and the rest), so that the general
//! expressions would not have refused it for its size.

use k8s_openapi::api::{
    admissionregistration::v1::MatchCondition,
    core::v1::{NodeSelectorRequirement, NodeSelectorTerm},
};

use super::cel;
use crate::placement::{
    MAX_JUDGED_REQUIREMENTS, MAX_JUDGED_TERMS, MAX_PLACED_REQUIREMENTS, MAX_PLACED_TERMS,
};

/// The pod's required node selector terms' parent.
const REQUIRED: &str =
    "object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";

/// The enclave's sites when each is one `In` requirement on the same key: the key, and
/// each site's requirement and values.
pub struct SingleKeySites<'a> {
    pub key: &'a str,
    pub requirements: Vec<&'a NodeSelectorRequirement>,
    pub values: Vec<&'a [String]>,
}

/// The sites in the shape the fast paths know, or `None`.
pub fn single_key_sites(sites: &[NodeSelectorTerm]) -> Option<SingleKeySites<'_>> {
    let mut key = None;
    let mut requirements = Vec::new();
    let mut values = Vec::new();
    for site in sites {
        if site.match_fields.as_ref().is_some_and(|f| !f.is_empty()) {
            return None;
        }
        let [req] = site.match_expressions.as_deref()? else {
            return None;
        };
        let vals = req.values.as_deref().unwrap_or_default();
        if req.operator != "In" || vals.is_empty() || key.is_some_and(|k| k != req.key) {
            return None;
        }
        key = Some(req.key.as_str());
        requirements.push(req);
        values.push(vals);
    }
    Some(SingleKeySites {
        key: key?,
        requirements,
        values,
    })
}

/// The pod's required node affinity is present with at least one term, every term
/// with 1 to `per_term` requirements and no field, and at most `terms` terms, each
/// also satisfying `each` (of the term `t`).
fn bounded_terms(terms: usize, per_term: usize, each: &str) -> String {
    format!(
        "has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity) && has({REQUIRED}) && has({REQUIRED}.nodeSelectorTerms) && size({REQUIRED}.nodeSelectorTerms) > 0 && size({REQUIRED}.nodeSelectorTerms) <= {terms} && {REQUIRED}.nodeSelectorTerms.all(t, !has(t.matchFields) && has(t.matchExpressions) && size(t.matchExpressions) > 0 && size(t.matchExpressions) <= {per_term} && {each})"
    )
}

fn node_selector_lacks(key: &str) -> String {
    format!(
        "(!has(object.spec.nodeSelector) || !({} in object.spec.nodeSelector))",
        cel::quote(key)
    )
}

/// The terms of a pod the check may skip: as many as admission judges, with requirements
/// to match.
const SETTLED_TERMS: usize = 64;
const _: () = assert!(SETTLED_TERMS <= MAX_JUDGED_TERMS);

/// A pod the check may skip (see the module): every validation of the check admits it.
///
/// Why each validation admits it: no term is empty and none has fields, so all are
/// judged and within [`MAX_JUDGED_TERMS`] and [`MAX_JUDGED_REQUIREMENTS`]; there is no
/// `nodeName`; each term has exactly one requirement on the site key, an `In` whose
/// values all belong to one site, so the term implies that site (`implied`) and that
/// site accepts the term's first value (`satisfiable`, the node selector not naming the
/// key); no host network; every volume of a contained type (no door, no ephemeral
/// claim).
pub fn settled_pod(sites: &[NodeSelectorTerm]) -> Option<String> {
    let sites = single_key_sites(sites)?;
    let per_term = MAX_JUDGED_REQUIREMENTS / SETTLED_TERMS;
    let key = cel::quote(sites.key);
    let within_one_site: Vec<String> = sites
        .values
        .iter()
        .map(|vals| format!("h.values.all(v, v in {})", cel::strings(vals.iter())))
        .collect();
    let confined = format!(
        "t.matchExpressions.exists_one(h, h.key == {key}) && t.matchExpressions.exists(h, h.key == {key} && h.operator == 'In' && has(h.values) && size(h.values) > 0 && ({}))",
        within_one_site.join(" || ")
    );
    let contained: Vec<String> = crate::admission::doors::CONTAINED
        .iter()
        .map(|field| format!("has(v.{field})"))
        .collect();
    Some(format!(
        "request.kind.kind == 'Pod' && !has(object.spec.nodeName) && !(has(object.spec.hostNetwork) && object.spec.hostNetwork) && {} && {} && (!has(object.spec.volumes) || object.spec.volumes.all(v, {}))",
        node_selector_lacks(sites.key),
        bounded_terms(SETTLED_TERMS, per_term, &confined),
        contained.join(" || ")
    ))
}

/// The match condition that leaves plainly settled pods ([`settled_pod`]) out of the
/// final check of pods: the native check's, and the webhook engine's validating pod
/// webhook's (which then makes no call for them; its verdict would be the same, as
/// `decide::validate` judges as the native check does).
pub fn not_settled(sites: &[NodeSelectorTerm]) -> Option<MatchCondition> {
    settled_pod(sites).map(|settled| MatchCondition {
        name: "not-plainly-settled".into(),
        expression: format!("!({settled})"),
    })
}

/// The largest pods the placing policy's fast path takes, as (terms, requirements per
/// term), for `n` sites: placed, they stay within [`MAX_PLACED_TERMS`] and
/// [`MAX_PLACED_REQUIREMENTS`] (each term is copied once per site with one more
/// requirement).
fn plain_bounds(n: usize) -> Option<(usize, usize)> {
    [(8, 8), (4, 4), (1, 4)]
        .into_iter()
        .find(|&(terms, per_term)| {
            terms * n <= MAX_PLACED_TERMS
                && (terms * per_term + terms) * n <= MAX_PLACED_REQUIREMENTS
        })
}

/// The placing policy's fast path: the condition (over the policy's variable `acts`)
/// and the patch that places the pod as the general patch would.
pub struct PlainPod {
    pub condition: String,
    pub patch: String,
}

/// For a policy of `sites`, adding the literal `preferences` (CEL list, `[]` for none)
/// and annotating the pod with `annotation` = `policy`: a pod (not a template) the
/// policy acts on, without the annotation (no other enclave policy placed it), with no
/// preferred node affinity of its own when there are preferences to add, whose node
/// selector does not name the site key and whose required terms (if any) do not
/// either. The general expressions give that pod: its terms crossed with the sites
/// (each term once per site, site-major, with the site requirement appended, none
/// being there already), or the sites alone; the preferences as they are; and the
/// annotation naming the policy alone.
pub fn plain_pod(
    sites: &[NodeSelectorTerm],
    preferences: &str,
    annotation: &str,
    policy: &str,
) -> Option<PlainPod> {
    let single = single_key_sites(sites)?;
    let (terms, per_term) = plain_bounds(sites.len())?;
    let key = cel::quote(single.key);
    let no_required = format!(
        "(!has(object.spec.affinity) || !has(object.spec.affinity.nodeAffinity) || !has({REQUIRED}))"
    );
    let with_preferences = preferences != "[]";
    let preferred =
        "object.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";
    let condition = format!(
        "request.kind.kind == 'Pod' && variables.acts && !(has(object.metadata.annotations) && {ann} in object.metadata.annotations) && {} && {}({no_required} || ({}))",
        node_selector_lacks(single.key),
        if with_preferences {
            format!(
                "!(has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity) && has({preferred})) && "
            )
        } else {
            String::new()
        },
        bounded_terms(
            terms,
            per_term,
            &format!("!t.matchExpressions.exists(h, h.key == {key})")
        ),
        ann = cel::quote(annotation),
    );
    // The site requirements as the general expressions write them (`site_<j>`).
    let literals: Vec<String> = single
        .requirements
        .iter()
        .map(|req| cel::requirement_literal(req))
        .collect();
    let alone: Vec<String> = literals
        .iter()
        .map(|req| format!("{{'matchExpressions': [{req}]}}"))
        .collect();
    let crossed: Vec<String> = literals
        .iter()
        .map(|req| {
            format!(
                "{REQUIRED}.nodeSelectorTerms.map(t, {{'matchExpressions': dyn(t.matchExpressions + [{req}]), 'matchFields': dyn([])}})"
            )
        })
        .collect();
    let escaped = annotation.replace('~', "~0").replace('/', "~1");
    let me = cel::quote(policy);
    let patch = format!(
        "(!has(object.spec.affinity) ? [JSONPatch{{op: 'add', path: '/spec/affinity', value: {{}}}}] : []) + \
         (!has(object.spec.affinity) || !has(object.spec.affinity.nodeAffinity) ? [JSONPatch{{op: 'add', path: '/spec/affinity/nodeAffinity', value: {{}}}}] : []) + \
         [JSONPatch{{op: 'add', path: '/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution', value: {{'nodeSelectorTerms': {no_required} ? [{}] : {}}}}}] + \
         {}\
         (has(object.metadata.annotations) ? [JSONPatch{{op: 'add', path: '/metadata/annotations/{escaped}', value: {me}}}] : [JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{{ann}: {me}}}}}])",
        alone.join(", "),
        crossed.join(" + "),
        if with_preferences {
            format!(
                "[JSONPatch{{op: 'add', path: '/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution', value: {preferences}}}] + "
            )
        } else {
            String::new()
        },
        ann = cel::quote(annotation),
    );
    Some(PlainPod { condition, patch })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kube::ResourceExt;

    use super::*;
    use crate::admission::native::{self, Facts};
    use crate::scope::{StaticCatalog, resolve_enclave};

    fn term(yaml: &str) -> NodeSelectorTerm {
        serde_yaml::from_str(yaml).expect("fixture")
    }

    fn catalog() -> StaticCatalog {
        StaticCatalog::from_yaml(include_str!("../../../tests/fixtures/catalog.yaml"))
            .expect("fixture parses")
    }

    #[test]
    fn only_sites_told_apart_by_one_label_take_the_fast_paths() {
        let dublin = term("matchExpressions: [{key: site, operator: In, values: [dublin]}]");
        let norway = term("matchExpressions: [{key: site, operator: In, values: [norway, oslo]}]");
        let sites = [dublin.clone(), norway];
        let shape = single_key_sites(&sites).expect("one key");
        assert_eq!(shape.key, "site");
        assert_eq!(shape.values.len(), 2);
        assert_eq!(shape.values[1], ["norway".to_string(), "oslo".to_string()]);
        for other in [
            "matchExpressions: [{key: site, operator: In, values: [x]}, {key: zone, operator: In, values: [y]}]",
            "matchExpressions: [{key: site, operator: NotIn, values: [x]}]",
            "matchExpressions: [{key: region, operator: In, values: [x]}]",
            "matchExpressions: [{key: site, operator: Exists}]",
            "matchExpressions: [{key: site, operator: In, values: [x]}]\nmatchFields: [{key: metadata.name, operator: In, values: [n]}]",
            "matchExpressions: []",
        ] {
            assert!(
                single_key_sites(&[dublin.clone(), term(other)]).is_none(),
                "not the fast paths' shape: {other}"
            );
        }
        assert!(single_key_sites(&[]).is_none(), "no site, nothing to place");
    }

    #[test]
    fn pods_the_placing_fast_path_takes_stay_within_what_admission_places() {
        for n in 1..=400 {
            if let Some((terms, per_term)) = plain_bounds(n) {
                // Placed: each term copied once per site with the site's requirement.
                assert!(terms * n <= MAX_PLACED_TERMS, "{n} sites");
                assert!(
                    (terms * per_term + terms) * n <= MAX_PLACED_REQUIREMENTS,
                    "{n} sites"
                );
                assert!(terms * per_term <= MAX_JUDGED_REQUIREMENTS);
            } else {
                assert!(
                    n > MAX_PLACED_TERMS / 2,
                    "{n} sites lose the fast path early"
                );
            }
        }
        assert_eq!(plain_bounds(2), Some((8, 8)));
        const {
            assert!(
                SETTLED_TERMS * (MAX_JUDGED_REQUIREMENTS / SETTLED_TERMS)
                    <= MAX_JUDGED_REQUIREMENTS
            )
        };
    }

    #[test]
    fn the_fast_paths_are_written_where_they_apply_and_nowhere_else() {
        let catalog = catalog();
        let policy = catalog
            .policies
            .iter()
            .find(|p| p.name_any() == "eu-user-data")
            .expect("the enforcing policy");
        let enclave = resolve_enclave(&catalog, policy).expect("enclave");
        let facts = Facts::default();
        let fast = native::compile(policy, Ok(&enclave), &facts, "enclave-system");
        let general = native::compile_general(policy, Ok(&enclave), &facts, "enclave-system");
        let conditions = |c: &native::Compiled| {
            c.check
                .0
                .spec
                .as_ref()
                .and_then(|s| s.match_conditions.clone())
        };
        let patch = |c: &native::Compiled| {
            let (map, _) = c.mutating.as_ref().expect("enforcing");
            let spec = map.spec.as_ref().expect("spec");
            let mutations = spec.mutations.as_ref().expect("mutations");
            mutations[0]
                .json_patch
                .as_ref()
                .and_then(|p| p.expression.clone())
        };
        let settled = conditions(&fast).expect("the check skips settled pods");
        assert_eq!(settled.len(), 1);
        assert!(settled[0].expression.starts_with("!("));
        assert!(conditions(&general).is_none());
        assert_ne!(
            patch(&fast),
            patch(&general),
            "the placing policy's fast path"
        );
        assert!(
            patch(&fast).is_some_and(|p| p.contains("'/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution', value: [{'weight': dyn(50)")),
            "the policy's preferences, added as the general patch adds them to a pod without any"
        );
        // Sites told apart by two labels: no fast path, the general policies alone.
        let mut wide = catalog.clone();
        let mut enclave_object = (*wide.enclaves["eu"]).clone();
        for site in &mut enclave_object.spec.sites {
            site.node_selector
                .match_labels
                .insert("topology.kubernetes.io/region".into(), "eu".into());
        }
        wide.enclaves.insert("eu".into(), Arc::new(enclave_object));
        let enclave = resolve_enclave(&wide, policy).expect("enclave");
        let fast = native::compile(policy, Ok(&enclave), &facts, "enclave-system");
        let general = native::compile_general(policy, Ok(&enclave), &facts, "enclave-system");
        assert!(conditions(&fast).is_none());
        assert_eq!(patch(&fast), patch(&general));
    }
}
