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

/// The conjunction of two terms: both lists concatenated, exact repeats dropped (they
/// change nothing and would only make the pod harder to read).
fn and(a: &NodeSelectorTerm, b: &NodeSelectorTerm) -> NodeSelectorTerm {
    fn join(
        x: &[NodeSelectorRequirement],
        y: &[NodeSelectorRequirement],
    ) -> Option<Vec<NodeSelectorRequirement>> {
        let mut all: Vec<NodeSelectorRequirement> = Vec::with_capacity(x.len() + y.len());
        for req in x.iter().chain(y) {
            if !all.contains(req) {
                all.push(req.clone());
            }
        }
        (!all.is_empty()).then_some(all)
    }
    NodeSelectorTerm {
        match_expressions: join(expressions(a), expressions(b)),
        match_fields: join(fields(a), fields(b)),
    }
}

/// Every Ti∧Sj, in order (T1∧S1, T1∧S2, …, T2∧S1, …), exact duplicates dropped: the only
/// way to AND two ORed lists without letting a Ti escape the sites.
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
    let mut out: Vec<NodeSelectorTerm> = Vec::with_capacity(existing.len().max(1) * sites.len());
    let mut push = |term: NodeSelectorTerm| {
        if !out.contains(&term) {
            out.push(term);
        }
    };
    if existing.is_empty() {
        sites.iter().cloned().for_each(&mut push);
    } else {
        for t in existing.iter().filter(|t| !is_empty_term(t)) {
            for s in sites {
                push(and(t, s));
            }
        }
    }
    out
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
            .any(|p| p.preference == *term);
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

/// What one label key must satisfy within a conjunction, collected from all of that
/// key's requirements.
#[derive(Default)]
struct KeyConstraint<'a> {
    /// Intersection of the `In` sets, if any.
    allowed: Option<BTreeSet<&'a str>>,
    excluded: BTreeSet<&'a str>,
    must_exist: bool,
    must_not_exist: bool,
    /// Strict integer bounds from Gt / Lt.
    above: Option<i64>,
    below: Option<i64>,
    /// A requirement the scheduler cannot parse: the term matches no node.
    broken: bool,
}

impl<'a> KeyConstraint<'a> {
    fn add(&mut self, req: &'a NodeSelectorRequirement) {
        if !well_formed(req) {
            self.broken = true;
            return;
        }
        let vals = values(req);
        match req.operator.as_str() {
            IN => {
                self.must_exist = true;
                let set: BTreeSet<&str> = vals.iter().map(String::as_str).collect();
                self.allowed = Some(match self.allowed.take() {
                    None => set,
                    Some(prev) => prev.intersection(&set).copied().collect(),
                });
            }
            NOT_IN => self.excluded.extend(vals.iter().map(String::as_str)),
            EXISTS => self.must_exist = true,
            DOES_NOT_EXIST => self.must_not_exist = true,
            op => {
                self.must_exist = true;
                match vals[0].parse::<i64>() {
                    Err(_) => self.broken = true,
                    Ok(bound) if op == GT => {
                        self.above = Some(self.above.map_or(bound, |a| a.max(bound)))
                    }
                    Ok(bound) => self.below = Some(self.below.map_or(bound, |b| b.min(bound))),
                }
            }
        }
    }

    fn in_range(&self, v: i64) -> bool {
        self.above.is_none_or(|a| v > a) && self.below.is_none_or(|b| v < b)
    }

    fn bounded(&self) -> bool {
        self.above.is_some() || self.below.is_some()
    }

    /// Can some label value (or its absence) satisfy everything?
    fn satisfiable(&self) -> bool {
        if self.broken || (self.must_exist && self.must_not_exist) {
            return false;
        }
        if let Some(allowed) = &self.allowed {
            return allowed.iter().any(|v| {
                !self.excluded.contains(v)
                    && (!self.bounded() || v.parse::<i64>().is_ok_and(|n| self.in_range(n)))
            });
        }
        // Gt/Lt without In: is there an integer strictly between the bounds? (Whether
        // NotIn excludes all of them is not checked: unknown counts as satisfiable.)
        let low = match self.above {
            None => Some(i64::MIN),
            Some(a) => a.checked_add(1),
        };
        let high = match self.below {
            None => Some(i64::MAX),
            Some(b) => b.checked_sub(1),
        };
        matches!((low, high), (Some(l), Some(h)) if l <= h)
    }
}

/// Can any node satisfy the conjunction? Detects, per key: disjoint `In` sets, `In`
/// values all excluded by `NotIn` or outside Gt/Lt bounds, `In`/`Exists`/Gt/Lt with
/// `DoesNotExist`, Gt/Lt bounds with no integer between them, and requirements the
/// scheduler cannot parse. matchFields count as satisfiable (unknown).
fn consistent(conjunction: &NodeSelectorTerm) -> bool {
    let mut by_key: BTreeMap<&str, KeyConstraint> = BTreeMap::new();
    for req in expressions(conjunction) {
        by_key.entry(req.key.as_str()).or_default().add(req);
    }
    by_key.values().all(KeyConstraint::satisfiable)
}

/// Can the pod ever be placed in the enclave: is some (required term ∧ nodeSelector ∧
/// site term) free of contradictions? When not, the webhook denies the pod instead of
/// admitting one that would stay Pending forever (e.g. `nodeSelector` naming a site
/// outside the enclave). Sound: false only when no node can fit; unknown (Gt/Lt against
/// NotIn, matchFields) counts as satisfiable.
pub fn satisfiable_in_enclave(spec: &PodSpec, sites: &[NodeSelectorTerm]) -> bool {
    pod_conjunctions(spec)
        .iter()
        .any(|c| sites.iter().any(|s| consistent(&and(c, s))))
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
            let (Some(v), Ok(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                vals[0].parse::<i64>(),
            ) else {
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
