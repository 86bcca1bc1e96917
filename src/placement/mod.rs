//! The affinity algebra: AND an enclave's sites into a pod's required node affinity
//! without letting any of the pod's own terms escape, decide whether a pod can ever be
//! placed inside, and match nodes. Pure: no client, no I/O, no async, so every decision
//! built on it is unit- and property-testable.
//!
//! Node selector terms are ORed; the requirements inside a term are ANDed. "The pod's
//! wishes AND the enclave" is therefore the cross product: for the pod's terms T1..Tn and
//! the site terms S1..Sm, every Ti∧Sj. Appending the sites to one term would let the other
//! terms escape the enclave.
//!
//! Two conventions for an empty term, kept apart on purpose:
//! - the scheduler's: a null or empty `NodeSelectorTerm` in a pod (or a volume) matches
//!   *no* node, and a pod without required node affinity is unconstrained.
//!   [`term_matches_node`] and [`pod_fits_node`] follow it, so the pod terms this module
//!   reasons about are the scheduler's: an empty term of the pod is dropped (it never
//!   matched anything).
//! - the algebra's: a site term is the conjunction of its requirements, so a site whose
//!   label selector is empty (every node) becomes an empty term meaning *every node*. Such
//!   an enclave is implied by every pod, so [`constrain`] never writes an empty term into
//!   a pod.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::core::v1::{
        Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
        PreferredSchedulingTerm,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

const IN: &str = "In";
const NOT_IN: &str = "NotIn";
const EXISTS: &str = "Exists";
const DOES_NOT_EXIST: &str = "DoesNotExist";
const GT: &str = "Gt";
const LT: &str = "Lt";

/// The only field a node selector's `matchFields` may name.
const NODE_NAME_FIELD: &str = "metadata.name";

/// The range the API server accepts for a preferred scheduling term's weight.
const WEIGHTS: std::ops::RangeInclusive<i32> = 1..=100;

/// Why a site's label selector cannot become a node selector term. Both are reported to
/// the user through the DataEnclave, so they name the site by index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Node affinity only knows the label selector operators; anything else cannot be
    /// carried over faithfully.
    #[error(
        "sites[{site}].nodeSelector uses operator {operator:?}; allowed: In, NotIn, Exists, DoesNotExist"
    )]
    UnsupportedOperator { site: usize, operator: String },
    /// In/NotIn without values, or Exists/DoesNotExist with values: the API server would
    /// reject every pod the term was written into.
    #[error(
        "sites[{site}].nodeSelector: operator {operator} on key {key:?} {}",
        values_rule(.operator)
    )]
    InvalidValues {
        site: usize,
        key: String,
        operator: String,
    },
    /// A key or value no node label can have: the selector could never match.
    #[error(
        "sites[{site}].nodeSelector: {what} {text:?} is not a valid label {what} (ASCII letters, digits, '-', '_', '.', at most 63 characters, with an optional DNS-subdomain prefix for keys)"
    )]
    InvalidLabel {
        site: usize,
        what: &'static str,
        text: String,
    },
}

fn values_rule(operator: &str) -> &'static str {
    if matches!(operator, IN | NOT_IN) {
        "needs at least one value"
    } else {
        "takes no values"
    }
}

fn requirement(key: &str, operator: &str, values: Option<Vec<String>>) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values,
    }
}

fn values(req: &NodeSelectorRequirement) -> &[String] {
    req.values.as_deref().unwrap_or_default()
}

fn expressions(term: &NodeSelectorTerm) -> &[NodeSelectorRequirement] {
    term.match_expressions.as_deref().unwrap_or_default()
}

fn fields(term: &NodeSelectorTerm) -> &[NodeSelectorRequirement] {
    term.match_fields.as_deref().unwrap_or_default()
}

/// The scheduler ignores (matches nothing with) a term without any requirement.
fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    expressions(term).is_empty() && fields(term).is_empty()
}

/// Does the requirement carry the number of values its operator needs? The scheduler
/// treats a malformed requirement as a parse error that matches no node.
fn well_formed(req: &NodeSelectorRequirement) -> bool {
    let n = values(req).len();
    match req.operator.as_str() {
        IN | NOT_IN => n > 0,
        EXISTS | DOES_NOT_EXIST => n == 0,
        GT | LT => n == 1,
        _ => false,
    }
}

/// A site's label selector as a node selector term, so that it can be ANDed into node
/// affinity. matchLabels become `In` with one value, in key order so the output is
/// deterministic (the mutation must be reproducible); matchExpressions carry over. An
/// empty selector (every node) yields an empty term. `site` is the site's index, for the
/// error.
pub fn site_term(
    site: usize,
    selector: &LabelSelector,
) -> Result<NodeSelectorTerm, PlacementError> {
    let invalid = |what, text: &str| PlacementError::InvalidLabel {
        site,
        what,
        text: text.to_string(),
    };
    for (key, value) in selector.match_labels.iter().flatten() {
        if !crate::selector::is_label_key(key) {
            return Err(invalid("key", key));
        }
        if !crate::selector::is_label_value(value) {
            return Err(invalid("value", value));
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        if !crate::selector::is_label_key(&expr.key) {
            return Err(invalid("key", &expr.key));
        }
        if let Some(bad) = expr
            .values
            .iter()
            .flatten()
            .find(|v| !crate::selector::is_label_value(v))
        {
            return Err(invalid("value", bad));
        }
    }
    let mut reqs: Vec<NodeSelectorRequirement> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| requirement(k, IN, Some(vec![v.clone()])))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let operator = expr.operator.as_str();
        if !matches!(operator, IN | NOT_IN | EXISTS | DOES_NOT_EXIST) {
            return Err(PlacementError::UnsupportedOperator {
                site,
                operator: operator.to_string(),
            });
        }
        let vals = expr.values.clone().filter(|v| !v.is_empty());
        let req = requirement(&expr.key, operator, vals);
        if !well_formed(&req) {
            return Err(PlacementError::InvalidValues {
                site,
                key: expr.key.clone(),
                operator: operator.to_string(),
            });
        }
        reqs.push(req);
    }
    Ok(NodeSelectorTerm {
        match_expressions: (!reqs.is_empty()).then_some(reqs),
        match_fields: None,
    })
}

/// Every site's term, in site order, so that a site's index is also its term's index
/// (preferences and messages refer to sites by position).
pub fn site_terms(selectors: &[LabelSelector]) -> Result<Vec<NodeSelectorTerm>, PlacementError> {
    selectors
        .iter()
        .enumerate()
        .map(|(i, s)| site_term(i, s))
        .collect()
}

/// Two requirements say the same (values compared as lists; absent values are empty).
/// The native engine's CEL compares exactly so.
fn same_requirement(a: &NodeSelectorRequirement, b: &NodeSelectorRequirement) -> bool {
    a.key == b.key && a.operator == b.operator && values(a) == values(b)
}

/// Two terms say the same, requirement order aside: used to find a preference the pod
/// already has.
fn same_term(a: &NodeSelectorTerm, b: &NodeSelectorTerm) -> bool {
    let covers = |x: &[NodeSelectorRequirement], y: &[NodeSelectorRequirement]| {
        x.iter().all(|r| y.iter().any(|q| same_requirement(r, q)))
    };
    let (ae, be) = (expressions(a), expressions(b));
    let (af, bf) = (fields(a), fields(b));
    ae.len() == be.len()
        && af.len() == bf.len()
        && covers(ae, be)
        && covers(be, ae)
        && covers(af, bf)
        && covers(bf, af)
}

/// The conjunction of two terms: the first term's requirements as they are, then those
/// of the second it does not already have.
fn and(a: &NodeSelectorTerm, b: &NodeSelectorTerm) -> NodeSelectorTerm {
    fn join(
        x: &[NodeSelectorRequirement],
        y: &[NodeSelectorRequirement],
    ) -> Option<Vec<NodeSelectorRequirement>> {
        let mut all: Vec<NodeSelectorRequirement> = x.to_vec();
        all.extend(
            y.iter()
                .filter(|r| !x.iter().any(|have| same_requirement(have, r)))
                .cloned(),
        );
        (!all.is_empty()).then_some(all)
    }
    NodeSelectorTerm {
        match_expressions: join(expressions(a), expressions(b)),
        match_fields: join(fields(a), fields(b)),
    }
}

/// Every Ti∧Sj, site by site (T1∧S1, T2∧S1, …, T1∧S2, …): the only way to AND two ORed
/// lists without letting a Ti escape the sites. Site-major so that the native engine
/// writes it as one `map` per site (`terms.map(t, t∧S1) + terms.map(t, t∧S2) + …`).
///
/// `existing` empty means the pod has no required node affinity (no constraint), so the
/// result is the site terms. Empty terms inside a non-empty `existing` match no node for
/// the scheduler and are dropped, since anything ANDed with them matches nothing too.
/// An empty site term (a site of every node) crossed with no constraint gives an empty
/// term, which the scheduler would read as "no node": [`constrain`] never writes one
/// (such an enclave is implied by every pod), other callers must not either.
pub fn cross_product(
    existing: &[NodeSelectorTerm],
    sites: &[NodeSelectorTerm],
) -> Vec<NodeSelectorTerm> {
    if existing.is_empty() {
        return sites.to_vec();
    }
    let own: Vec<&NodeSelectorTerm> = existing.iter().filter(|t| !is_empty_term(t)).collect();
    sites
        .iter()
        .flat_map(|s| own.iter().map(move |t| and(t, s)))
        .collect()
}

/// The pod's required node selector terms, or None when it has no required node
/// affinity (unconstrained; different from an empty list, which matches nothing).
fn required_terms(spec: &PodSpec) -> Option<&[NodeSelectorTerm]> {
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .map(|r| r.node_selector_terms.as_slice())
}

/// The pod's `spec.nodeSelector` as one term of `In` requirements (key order).
fn node_selector_term(spec: &PodSpec) -> NodeSelectorTerm {
    let reqs: Vec<NodeSelectorRequirement> = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, v)| requirement(k, IN, Some(vec![v.clone()])))
        .collect();
    NodeSelectorTerm {
        match_expressions: (!reqs.is_empty()).then_some(reqs),
        match_fields: None,
    }
}

/// Where the scheduler may put the pod, as ORed conjunctions in the algebra's convention
/// (an empty conjunction is every node): each non-empty required term ANDed with the
/// nodeSelector, or the nodeSelector alone when there is no required affinity. An empty
/// result means the pod fits no node at all.
fn pod_conjunctions(spec: &PodSpec) -> Vec<NodeSelectorTerm> {
    let selector = node_selector_term(spec);
    match required_terms(spec) {
        None => vec![selector],
        Some(terms) => terms
            .iter()
            .filter(|t| !is_empty_term(t))
            .map(|t| and(t, &selector))
            .collect(),
    }
}

/// Does `have` (a requirement the pod already has) imply `want` (a requirement of a
/// site)? Syntactic and sound: true only when every label value satisfying `have`
/// satisfies `want`.
fn implies_requirement(have: &NodeSelectorRequirement, want: &NodeSelectorRequirement) -> bool {
    if have.key != want.key || !well_formed(want) {
        return false;
    }
    if have == want {
        return true;
    }
    let (hv, wv) = (values(have), values(want));
    match (have.operator.as_str(), want.operator.as_str()) {
        (IN, IN) => hv.iter().all(|v| wv.contains(v)),
        (IN | EXISTS | GT | LT, EXISTS) => true,
        (IN, NOT_IN) => hv.iter().all(|v| !wv.contains(v)),
        (NOT_IN, NOT_IN) => wv.iter().all(|v| hv.contains(v)),
        // An absent label satisfies both.
        (DOES_NOT_EXIST, DOES_NOT_EXIST | NOT_IN) => true,
        _ => false,
    }
}

/// Does the conjunction imply the site term: is each of the site's requirements implied
/// by one of the conjunction's? An empty site term (every node) is implied by anything.
fn implies_term(conjunction: &NodeSelectorTerm, site: &NodeSelectorTerm) -> bool {
    let covered = |want: &[NodeSelectorRequirement], have: &[NodeSelectorRequirement]| {
        want.iter()
            .all(|w| have.iter().any(|h| implies_requirement(h, w)))
    };
    covered(expressions(site), expressions(conjunction))
        && covered(fields(site), fields(conjunction))
}

/// Do the pod's own constraints already keep it inside the enclave: does every term the
/// scheduler could use (each required term ANDed with the nodeSelector) imply some site
/// term? Lets the webhook leave such pods alone (idempotence) and lets validation and the
/// controller judge pending pods. Syntactic, so it may say no for a pod that is in fact
/// held inside; constraining that pod is harmless. False when `sites` is empty (no
/// enclave to be inside of).
pub fn implies_enclave(spec: &PodSpec, sites: &[NodeSelectorTerm]) -> bool {
    !sites.is_empty()
        && pod_conjunctions(spec)
            .iter()
            .all(|c| sites.iter().any(|s| implies_term(c, s)))
}

/// The pod's affinity with the enclave ANDed into its required node affinity (the cross
/// product) and the preferred sites added as soft preferences, or None when nothing needs
/// to change: it already implies the enclave and has every preference. That makes the
/// mutation idempotent, as admission webhooks must be (reinvocation, retried requests).
/// Everything else in the affinity (pod affinity, anti-affinity, the pod's own
/// preferences) is kept. A preference already present for the same term is not added
/// again, whatever its weight; empty preference terms are skipped (the scheduler ignores
/// them) and weights are clamped to 1..=100 so the pod stays valid. `sites` empty is a
/// caller error and gives None, never an affinity that matches nothing.
pub fn constrain(
    spec: &PodSpec,
    sites: &[NodeSelectorTerm],
    preferred: &[(NodeSelectorTerm, i32)],
) -> Option<Affinity> {
    if sites.is_empty() {
        return None;
    }
    let mut affinity = spec.affinity.clone().unwrap_or_default();
    let mut changed = false;
    if !implies_enclave(spec, sites) {
        // Not implied, so no site term is empty and every pod term that matters is
        // non-empty: the product has no empty term, and is not empty itself.
        let terms = cross_product(required_terms(spec).unwrap_or_default(), sites);
        debug_assert!(!terms.is_empty() && !terms.iter().any(is_empty_term));
        affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default)
            .required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: terms,
        });
        changed = true;
    }
    for (term, weight) in preferred {
        if is_empty_term(term) {
            continue;
        }
        let node_affinity = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        let present = node_affinity
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .any(|p| same_term(&p.preference, term));
        if !present {
            node_affinity
                .preferred_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new)
                .push(PreferredSchedulingTerm {
                    preference: term.clone(),
                    weight: (*weight).clamp(*WEIGHTS.start(), *WEIGHTS.end()),
                });
            changed = true;
        }
    }
    changed.then_some(affinity)
}

/// An integer label value as both admission engines read it: an optional sign and at
/// most 18 digits (what the native engine's CEL can convert without overflow).
pub fn parse_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Can one label key satisfy the site's and the pod's requirements on it at once? The
/// candidates are the label's absence, the values the site allows (its first `In`),
/// or else the values the pod names (its `In`s); without any `In`, a present value
/// satisfies `Exists`, a finite `NotIn` and integer bounds (unknown counts as yes).
fn key_satisfiable(site: &[&NodeSelectorRequirement], pod: &[&NodeSelectorRequirement]) -> bool {
    let holds = |value: Option<&str>| {
        site.iter()
            .chain(pod)
            .all(|r| requirement_matches(r, value))
    };
    if holds(None) {
        return true;
    }
    if let Some(first) = site.iter().find(|r| r.operator == IN) {
        return values(first).iter().any(|v| holds(Some(v)));
    }
    if pod.iter().any(|r| r.operator == IN) {
        return pod
            .iter()
            .filter(|r| r.operator == IN)
            .flat_map(|r| values(r))
            .any(|v| holds(Some(v)));
    }
    !site.iter().chain(pod).any(|r| {
        !well_formed(r)
            || r.operator == DOES_NOT_EXIST
            || (matches!(r.operator.as_str(), GT | LT) && parse_int(&values(r)[0]).is_none())
    })
}

/// Can some node satisfy both the conjunction and the site, as far as the site's own
/// label keys tell? Each key the site constrains is checked against the conjunction's
/// requirements on that key. Contradictions among the pod's other labels are the
/// scheduler's to find (the controller reports such pods when they stay Pending): this
/// keeps the check sound, cheap, and written the same in CEL.
fn compatible(conjunction: &NodeSelectorTerm, site: &NodeSelectorTerm) -> bool {
    let keys: BTreeSet<&str> = expressions(site).iter().map(|r| r.key.as_str()).collect();
    fn on<'a>(term: &'a NodeSelectorTerm, key: &str) -> Vec<&'a NodeSelectorRequirement> {
        expressions(term).iter().filter(|r| r.key == key).collect()
    }
    keys.iter()
        .all(|key| key_satisfiable(&on(site, key), &on(conjunction, key)))
}

/// Can the conjunction's matchFields let the pod onto an enclave node? The API allows
/// only `metadata.name` with In or NotIn and one value, so `In` pins the pod to one named
/// node: satisfiable only when every `In` names the same node, no `NotIn` excludes it,
/// and it is a node of the enclave. Without `In` the fields exclude a few names only and
/// count as satisfiable. A field the API would refuse matches no node. The node's labels
/// are not checked against the term, so that the native engine (which sees only the
/// enclave's node names) decides exactly the same.
fn fields_allow_enclave(
    conjunction: &NodeSelectorTerm,
    is_enclave_node: &dyn Fn(&str) -> bool,
) -> bool {
    let mut pinned: Option<&str> = None;
    let mut excluded: Vec<&str> = Vec::new();
    for req in fields(conjunction) {
        let [value] = values(req) else { return false };
        if req.key != NODE_NAME_FIELD {
            return false;
        }
        match req.operator.as_str() {
            IN if pinned.is_some_and(|p| p != value) => return false,
            IN => pinned = Some(value),
            NOT_IN => excluded.push(value),
            _ => return false,
        }
    }
    pinned.is_none_or(|node| !excluded.contains(&node) && is_enclave_node(node))
}

/// Can the pod ever be placed in the enclave: is some (required term ∧ nodeSelector)
/// compatible with some site on the site's label keys, with matchFields naming an
/// enclave node? When not, admission denies the pod instead of admitting one that would
/// stay Pending forever (e.g. `nodeSelector` naming a site outside the enclave, or
/// matchFields pinning it to a node outside). Sound: false only when no enclave node can
/// fit; what it does not decide (contradictions among other labels, integer ranges, the
/// labels of a node named by matchFields) counts as satisfiable, and the controller
/// reports such pods when they stay Pending.
pub fn satisfiable_in_enclave(
    spec: &PodSpec,
    sites: &[NodeSelectorTerm],
    is_enclave_node: &dyn Fn(&str) -> bool,
) -> bool {
    pod_conjunctions(spec)
        .iter()
        .any(|c| fields_allow_enclave(c, is_enclave_node) && sites.iter().any(|s| compatible(c, s)))
}

/// The most non-empty required terms of its own a pod may have for admission to judge
/// it, and the most requirements over them: the native engine's CEL walks them once per
/// site label key, and must stay within the API server's cost budget at 32 sites of 16
/// requirements. Far beyond what real pods carry.
pub const MAX_JUDGED_TERMS: usize = 256;
pub const MAX_JUDGED_REQUIREMENTS: usize = 1024;

/// Is the pod's own required affinity small enough to judge? The message says why not.
pub fn judgeable(spec: &PodSpec) -> Result<(), String> {
    let own: Vec<&NodeSelectorTerm> = required_terms(spec)
        .unwrap_or_default()
        .iter()
        .filter(|t| !is_empty_term(t))
        .collect();
    let requirements: usize = own
        .iter()
        .map(|t| expressions(t).len() + fields(t).len())
        .sum();
    if own.len() > MAX_JUDGED_TERMS || requirements > MAX_JUDGED_REQUIREMENTS {
        return Err(format!(
            "its required node affinity has {} terms with {requirements} requirements, more than admission judges ({MAX_JUDGED_TERMS} terms, {MAX_JUDGED_REQUIREMENTS} requirements)",
            own.len()
        ));
    }
    Ok(())
}

/// The most required node selector terms admission writes into one pod (the pod's own
/// terms times the enclave's sites). Beyond it the pod is refused with a message that
/// says why, instead of an object the API server would refuse as too large or a CEL
/// evaluation that would exceed its cost budget. 32 sites × 8 own terms fit. No more
/// than admission judges ([`MAX_JUDGED_TERMS`]).
pub const MAX_PLACED_TERMS: usize = MAX_JUDGED_TERMS;

/// The most requirements (matchExpressions and matchFields, over all terms) admission
/// writes into one pod. No more than admission judges ([`MAX_JUDGED_REQUIREMENTS`]):
/// the final check judges the placed pod, so a placement beyond it would be refused by
/// the very check that follows it. About 100 bytes each, far below the API server's
/// object limit.
pub const MAX_PLACED_REQUIREMENTS: usize = MAX_JUDGED_REQUIREMENTS;

/// How large the cross product of the pod's required terms with the sites would be:
/// (terms, requirements), counted before duplicates are dropped so that both admission
/// engines compute the same figure. Empty pod terms are skipped as [`cross_product`]
/// skips them; a pod without required terms gets one term per site.
pub fn product_size(spec: &PodSpec, sites: &[NodeSelectorTerm]) -> (usize, usize) {
    let site_reqs: usize = sites
        .iter()
        .map(|s| expressions(s).len() + fields(s).len())
        .sum();
    let own: Vec<&NodeSelectorTerm> = required_terms(spec)
        .unwrap_or_default()
        .iter()
        .filter(|t| !is_empty_term(t))
        .collect();
    if required_terms(spec).is_none_or(|t| t.is_empty()) {
        return (sites.len(), site_reqs);
    }
    let own_reqs: usize = own
        .iter()
        .map(|t| expressions(t).len() + fields(t).len())
        .sum();
    (
        own.len() * sites.len(),
        own_reqs * sites.len() + own.len() * site_reqs,
    )
}

/// Would constraining the pod stay within [`MAX_PLACED_TERMS`] and
/// [`MAX_PLACED_REQUIREMENTS`]? The message says what was too large when not.
pub fn within_bounds(spec: &PodSpec, sites: &[NodeSelectorTerm]) -> Result<(), String> {
    let (terms, requirements) = product_size(spec, sites);
    if terms > MAX_PLACED_TERMS {
        return Err(format!(
            "its required node affinity crossed with the enclave's {} sites would need {terms} node selector terms, more than the {MAX_PLACED_TERMS} allowed: use fewer nodeSelectorTerms",
            sites.len()
        ));
    }
    if requirements > MAX_PLACED_REQUIREMENTS {
        return Err(format!(
            "its required node affinity crossed with the enclave's {} sites would need {requirements} requirements, more than the {MAX_PLACED_REQUIREMENTS} allowed: use fewer matchExpressions",
            sites.len()
        ));
    }
    Ok(())
}

/// Does one requirement hold for a label value (None: the node lacks the label)? As the
/// scheduler does: malformed requirements and unknown operators match nothing, Gt/Lt
/// compare integers and fail when either side does not parse.
fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    if !well_formed(req) {
        return false;
    }
    let vals = values(req);
    match req.operator.as_str() {
        IN => value.is_some_and(|v| vals.iter().any(|x| x == v)),
        NOT_IN => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
        EXISTS => value.is_some(),
        DOES_NOT_EXIST => value.is_none(),
        op => {
            let (Some(v), Some(bound)) = (value.and_then(parse_int), parse_int(&vals[0])) else {
                return false;
            };
            if op == GT { v > bound } else { v < bound }
        }
    }
}

/// Does a node (name, labels) satisfy the term, as the scheduler decides it? Used for
/// pods and for PersistentVolume node affinity. An empty term matches no node;
/// matchFields support only `metadata.name` with In/NotIn and one value, as the API
/// allows.
pub fn term_matches_node(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    !is_empty_term(term)
        && expressions(term)
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields(term).iter().all(|r| {
            r.key == NODE_NAME_FIELD
                && matches!(r.operator.as_str(), IN | NOT_IN)
                && values(r).len() == 1
                && requirement_matches(r, Some(node_name))
        })
}

/// Would the scheduler's node constraints let the pod onto this node: every
/// `spec.nodeSelector` label, and (when there is required node affinity) one of its
/// terms. Preferences, taints and resources are not considered.
pub fn pod_fits_node(spec: &PodSpec, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    spec.node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && required_terms(spec).is_none_or(|terms| {
            terms
                .iter()
                .any(|t| term_matches_node(t, node_name, labels))
        })
}

/// The index of the first site whose selector the node matches, or None when the node
/// is outside the enclave. Sites may overlap; the first in site order wins, so the
/// answer is stable.
pub fn site_of_node(sites: &[LabelSelector], labels: &BTreeMap<String, String>) -> Option<usize> {
    sites
        .iter()
        .position(|s| crate::selector::matches(s, labels))
}

#[cfg(test)]
mod tests;
