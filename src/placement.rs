//! The affinity algebra: AND an enclave's sites into a pod's required node affinity
//! without letting any of the pod's own terms escape, decide whether a pod can ever be
//! placed inside, and match nodes. Pure: no client, no I/O.
//!
//! Node selector terms are ORed; the requirements inside a term are ANDed. "The pod's
//! wishes AND the enclave" is therefore the cross product: for existing terms T1..Tn and
//! site terms S1..Sm, every Ti∧Sj. Appending the sites to one term would let the other
//! terms escape the enclave.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
        PreferredSchedulingTerm,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error(
        "sites[{site}].nodeSelector uses operator {operator:?}; allowed: In, NotIn, Exists, DoesNotExist"
    )]
    UnsupportedOperator { site: usize, operator: String },
}

fn requirement(key: &str, operator: &str, values: Option<Vec<String>>) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values,
    }
}

/// A site's label selector as a node selector term: matchLabels become `In` with one
/// value (in key order, so the output is deterministic); matchExpressions carry over.
pub fn site_term(
    site: usize,
    selector: &LabelSelector,
) -> Result<NodeSelectorTerm, PlacementError> {
    let mut expressions: Vec<NodeSelectorRequirement> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| requirement(k, "In", Some(vec![v.clone()])))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        match req.operator.as_str() {
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {
                expressions.push(requirement(&req.key, &req.operator, req.values.clone()))
            }
            other => {
                return Err(PlacementError::UnsupportedOperator {
                    site,
                    operator: other.to_string(),
                });
            }
        }
    }
    Ok(NodeSelectorTerm {
        match_expressions: (!expressions.is_empty()).then_some(expressions),
        match_fields: None,
    })
}

/// Every site's term, in site order.
pub fn site_terms(selectors: &[LabelSelector]) -> Result<Vec<NodeSelectorTerm>, PlacementError> {
    selectors
        .iter()
        .enumerate()
        .map(|(i, s)| site_term(i, s))
        .collect()
}

fn and(a: &NodeSelectorTerm, b: &NodeSelectorTerm) -> NodeSelectorTerm {
    let join = |x: &Option<Vec<NodeSelectorRequirement>>,
                y: &Option<Vec<NodeSelectorRequirement>>| {
        let mut all: Vec<NodeSelectorRequirement> = x.iter().flatten().cloned().collect();
        for req in y.iter().flatten() {
            if !all.contains(req) {
                all.push(req.clone());
            }
        }
        (!all.is_empty()).then_some(all)
    };
    NodeSelectorTerm {
        match_expressions: join(&a.match_expressions, &b.match_expressions),
        match_fields: join(&a.match_fields, &b.match_fields),
    }
}

/// Every Ti∧Sj. No existing terms counts as one empty term (no constraint).
pub fn cross_product(
    existing: &[NodeSelectorTerm],
    sites: &[NodeSelectorTerm],
) -> Vec<NodeSelectorTerm> {
    let empty = [NodeSelectorTerm::default()];
    let existing = if existing.is_empty() {
        &empty[..]
    } else {
        existing
    };
    existing
        .iter()
        .flat_map(|t| sites.iter().map(move |s| and(t, s)))
        .collect()
}

fn required_terms(spec: &PodSpec) -> &[NodeSelectorTerm] {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default()
}

/// The pod's `spec.nodeSelector` as requirements, ANDed into every term.
fn node_selector_requirements(spec: &PodSpec) -> Vec<NodeSelectorRequirement> {
    spec.node_selector
        .iter()
        .flatten()
        .map(|(k, v)| requirement(k, "In", Some(vec![v.clone()])))
        .collect()
}

/// The pod's effective terms: its required terms (or one empty term), each ANDed with
/// its nodeSelector.
fn effective_terms(spec: &PodSpec) -> Vec<NodeSelectorTerm> {
    let selector = NodeSelectorTerm {
        match_expressions: Some(node_selector_requirements(spec)),
        match_fields: None,
    };
    let terms = required_terms(spec);
    if terms.is_empty() {
        vec![and(&NodeSelectorTerm::default(), &selector)]
    } else {
        terms.iter().map(|t| and(t, &selector)).collect()
    }
}

fn values(req: &NodeSelectorRequirement) -> &[String] {
    req.values.as_deref().unwrap_or_default()
}

/// Does requirement `have` (of a term) imply requirement `want` (of a site) on the same key?
fn implies_requirement(have: &NodeSelectorRequirement, want: &NodeSelectorRequirement) -> bool {
    if have.key != want.key {
        return false;
    }
    match (have.operator.as_str(), want.operator.as_str()) {
        ("In", "In") => values(have).iter().all(|v| values(want).contains(v)),
        ("In" | "Exists", "Exists") => true,
        ("In", "NotIn") => values(have).iter().all(|v| !values(want).contains(v)),
        ("NotIn", "NotIn") => values(want).iter().all(|v| values(have).contains(v)),
        ("DoesNotExist", "DoesNotExist") => true,
        ("DoesNotExist", "NotIn") => true,
        _ => false,
    }
}

fn term_implies(term: &NodeSelectorTerm, site: &NodeSelectorTerm) -> bool {
    site.match_expressions.iter().flatten().all(|want| {
        term.match_expressions
            .iter()
            .flatten()
            .any(|have| implies_requirement(have, want))
    }) && site.match_fields.is_none()
}

/// Do the pod's constraints already keep it inside the enclave: does every effective term
/// imply some site term? (Syntactic, so it may say no for a term that is in fact inside;
/// constraining such a pod again is harmless.)
pub fn implies_enclave(spec: &PodSpec, sites: &[NodeSelectorTerm]) -> bool {
    !sites.is_empty()
        && effective_terms(spec)
            .iter()
            .all(|t| sites.iter().any(|s| term_implies(t, s)))
}

/// Can any node satisfy this term? Detects, per key: disjoint `In` sets; `In` or
/// `Exists` with `DoesNotExist`; an `In` set fully excluded by `NotIn`. Gt, Lt and
/// matchFields count as satisfiable.
fn consistent(term: &NodeSelectorTerm) -> bool {
    let mut by_key: BTreeMap<&str, Vec<&NodeSelectorRequirement>> = BTreeMap::new();
    for req in term.match_expressions.iter().flatten() {
        by_key.entry(req.key.as_str()).or_default().push(req);
    }
    by_key.values().all(|reqs| {
        let mut allowed: Option<Vec<&String>> = None;
        let mut must_exist = false;
        let mut must_not_exist = false;
        let mut excluded: Vec<&String> = Vec::new();
        for req in reqs {
            match req.operator.as_str() {
                "In" => {
                    must_exist = true;
                    let set: Vec<&String> = values(req).iter().collect();
                    allowed = Some(match allowed {
                        None => set,
                        Some(prev) => prev.into_iter().filter(|v| set.contains(v)).collect(),
                    });
                }
                "Exists" | "Gt" | "Lt" => must_exist = true,
                "DoesNotExist" => must_not_exist = true,
                "NotIn" => excluded.extend(values(req)),
                _ => {}
            }
        }
        if must_exist && must_not_exist {
            return false;
        }
        allowed.is_none_or(|set| set.iter().any(|v| !excluded.contains(v)))
    })
}

/// Can the pod ever be placed in the enclave: is some Ti∧nodeSelector∧Sj consistent?
pub fn satisfiable_in_enclave(spec: &PodSpec, sites: &[NodeSelectorTerm]) -> bool {
    effective_terms(spec)
        .iter()
        .any(|t| sites.iter().any(|s| consistent(&and(t, s))))
}

/// The pod's affinity with the enclave ANDed into its required node affinity and the
/// preferred sites added, or None when it already implies the enclave and has every
/// preference (idempotent: constraining a constrained pod changes nothing). Everything
/// else in the affinity (pod affinity, anti-affinity, own preferences) is kept.
pub fn constrain(
    spec: &PodSpec,
    sites: &[NodeSelectorTerm],
    preferred: &[(NodeSelectorTerm, i32)],
) -> Option<Affinity> {
    if sites.is_empty() {
        return None;
    }
    let mut affinity = spec.affinity.clone().unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let mut changed = false;
    if !implies_enclave(spec, sites) {
        let terms = cross_product(required_terms(spec), sites);
        node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: terms,
        });
        changed = true;
    }
    let existing = node_affinity
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new);
    for (term, weight) in preferred {
        let wanted = PreferredSchedulingTerm {
            preference: term.clone(),
            weight: *weight,
        };
        if !existing.contains(&wanted) {
            existing.push(wanted);
            changed = true;
        }
    }
    if existing.is_empty() {
        node_affinity.preferred_during_scheduling_ignored_during_execution = None;
    }
    changed.then_some(affinity)
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let vals = values(req);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| vals.contains(v)),
        "NotIn" => value.is_none_or(|v| !vals.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                vals.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Does a node (name, labels) satisfy the term? matchFields supports `metadata.name`,
/// the only field the API allows.
pub fn term_matches_node(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let name = node_name.to_string();
    term.match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, labels.get(&r.key)))
        && term
            .match_fields
            .iter()
            .flatten()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
}

/// Would the scheduler's node constraints (nodeSelector and required node affinity)
/// let the pod onto this node?
pub fn pod_fits_node(spec: &PodSpec, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    effective_terms(spec)
        .iter()
        .any(|t| term_matches_node(t, node_name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SITE: &str = "node-restriction.kubernetes.io/enclave-site";
    const ZONE: &str = "topology.kubernetes.io/zone";

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn enclave() -> Vec<NodeSelectorTerm> {
        let dublin: LabelSelector =
            serde_yaml::from_str(&format!("matchLabels: {{{SITE}: dublin}}")).expect("selector");
        let norway: LabelSelector =
            serde_yaml::from_str(&format!("matchLabels: {{{SITE}: norway}}")).expect("selector");
        site_terms(&[dublin, norway]).expect("valid sites")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn required(affinity: &Affinity) -> &[NodeSelectorTerm] {
        &affinity
            .node_affinity
            .as_ref()
            .expect("node affinity")
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("required")
            .node_selector_terms
    }

    #[test]
    fn no_affinity_gets_one_term_per_site() {
        let affinity = constrain(&spec("containers: []"), &enclave(), &[]).expect("changed");
        assert_eq!(required(&affinity), enclave().as_slice());
    }

    #[test]
    fn two_ored_terms_cross_two_sites_into_four() {
        let pod = spec(&format!(
            "containers: []\naffinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n      - matchExpressions: [{{key: {ZONE}, operator: In, values: [eu-west-1a]}}]\n      - matchExpressions: [{{key: {ZONE}, operator: In, values: [us-east-1a]}}]\n  podAntiAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution: [{{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: x}}}}}}]"
        ));
        let affinity = constrain(&pod, &enclave(), &[]).expect("changed");
        let terms = required(&affinity);
        assert_eq!(terms.len(), 4);
        let render = |t: &NodeSelectorTerm| {
            t.match_expressions
                .iter()
                .flatten()
                .map(|r| format!("{}={}", r.key, values(r).join("|")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let rendered: Vec<String> = terms.iter().map(render).collect();
        assert_eq!(
            rendered,
            [
                format!("{ZONE}=eu-west-1a,{SITE}=dublin"),
                format!("{ZONE}=eu-west-1a,{SITE}=norway"),
                format!("{ZONE}=us-east-1a,{SITE}=dublin"),
                format!("{ZONE}=us-east-1a,{SITE}=norway"),
            ]
        );
        assert!(
            affinity.pod_anti_affinity.is_some(),
            "the rest of the affinity is kept"
        );
        // Each of the pod's own terms still holds: no term escapes, none is lost.
        let eu_b_us = labels(&[(ZONE, "us-east-1a"), (SITE, "dublin")]);
        assert!(terms.iter().any(|t| term_matches_node(t, "n", &eu_b_us)));
        assert!(!terms.iter().any(|t| term_matches_node(
            t,
            "n",
            &labels(&[(ZONE, "us-east-1a"), (SITE, "virginia")])
        )));
    }

    #[test]
    fn constraining_is_idempotent_and_respects_existing_placement() {
        let pod = spec("containers: []");
        let mut constrained = pod.clone();
        let preferred = vec![(enclave()[1].clone(), 50)];
        constrained.affinity = constrain(&pod, &enclave(), &preferred);
        assert_eq!(constrain(&constrained, &enclave(), &preferred), None);
        let on_dublin = spec(&format!("containers: []\nnodeSelector: {{{SITE}: dublin}}"));
        assert_eq!(
            constrain(&on_dublin, &enclave(), &[]),
            None,
            "a nodeSelector inside the enclave already implies it"
        );
    }

    #[test]
    fn node_selector_outside_is_unsatisfiable_and_inside_is_fine() {
        assert!(!satisfiable_in_enclave(
            &spec(&format!(
                "containers: []\nnodeSelector: {{{SITE}: virginia}}"
            )),
            &enclave()
        ));
        assert!(satisfiable_in_enclave(
            &spec(&format!(
                "containers: []\nnodeSelector: {{{ZONE}: eu-west-1b}}"
            )),
            &enclave()
        ));
        let not_in = spec(&format!(
            "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: [{{key: {SITE}, operator: NotIn, values: [dublin, norway]}}]}}]}}}}}}"
        ));
        assert!(!satisfiable_in_enclave(&not_in, &enclave()));
    }

    #[test]
    fn site_expressions_carry_over_and_bad_operators_are_named() {
        let selector: LabelSelector =
            serde_yaml::from_str("matchExpressions: [{key: a, operator: NotIn, values: [x]}]")
                .expect("selector");
        let term = site_term(0, &selector).expect("valid");
        assert_eq!(
            term.match_expressions.expect("expressions")[0].operator,
            "NotIn"
        );
        let bad: LabelSelector =
            serde_yaml::from_str("matchExpressions: [{key: a, operator: Gt, values: ['1']}]")
                .expect("selector");
        let error = site_terms(&[selector, bad]).expect_err("Gt is not a label selector operator");
        assert_eq!(
            error.to_string(),
            "sites[1].nodeSelector uses operator \"Gt\"; allowed: In, NotIn, Exists, DoesNotExist"
        );
    }

    // Property tests over a small alphabet, so that keys and values collide often.
    const KEYS: &[&str] = &["site", "zone", "tier"];
    const VALUES: &[&str] = &["a", "b", "c"];

    fn arb_requirement() -> impl Strategy<Value = NodeSelectorRequirement> {
        (
            0..KEYS.len(),
            0..4usize,
            proptest::collection::vec(0..VALUES.len(), 1..3),
        )
            .prop_map(|(k, op, vals)| {
                let operator = ["In", "NotIn", "Exists", "DoesNotExist"][op];
                let values = matches!(operator, "In" | "NotIn")
                    .then(|| vals.iter().map(|v| VALUES[*v].to_string()).collect());
                requirement(KEYS[k], operator, values)
            })
    }

    fn arb_term() -> impl Strategy<Value = NodeSelectorTerm> {
        proptest::collection::vec(arb_requirement(), 0..3).prop_map(|reqs| NodeSelectorTerm {
            match_expressions: (!reqs.is_empty()).then_some(reqs),
            match_fields: None,
        })
    }

    fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map(0..KEYS.len(), 0..VALUES.len(), 0..KEYS.len()).prop_map(
            |m| {
                m.into_iter()
                    .map(|(k, v)| (KEYS[k].to_string(), VALUES[v].to_string()))
                    .collect()
            },
        )
    }

    fn arb_spec() -> impl Strategy<Value = PodSpec> {
        (
            proptest::collection::vec(arb_term(), 0..3),
            proptest::option::of((0..KEYS.len(), 0..VALUES.len())),
        )
            .prop_map(|(terms, selector)| {
                let mut spec = PodSpec::default();
                if !terms.is_empty() {
                    spec.affinity = Some(Affinity {
                        node_affinity: Some(NodeAffinity {
                            required_during_scheduling_ignored_during_execution: Some(
                                NodeSelector {
                                    node_selector_terms: terms,
                                },
                            ),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
                spec.node_selector =
                    selector.map(|(k, v)| [(KEYS[k].to_string(), VALUES[v].to_string())].into());
                spec
            })
    }

    fn arb_sites() -> impl Strategy<Value = Vec<NodeSelectorTerm>> {
        proptest::collection::vec(arb_term(), 1..3)
    }

    fn with_affinity(spec: &PodSpec, affinity: Option<Affinity>) -> PodSpec {
        let mut spec = spec.clone();
        if let Some(affinity) = affinity {
            spec.affinity = Some(affinity);
        }
        spec
    }

    proptest! {
        #[test]
        fn a_node_fits_the_constrained_pod_iff_it_fits_the_pod_and_a_site(spec in arb_spec(), sites in arb_sites(), nodes in proptest::collection::vec(arb_labels(), 1..8)) {
            let constrained = with_affinity(&spec, constrain(&spec, &sites, &[]));
            for labels in &nodes {
                let expected = pod_fits_node(&spec, "n", labels) && sites.iter().any(|s| term_matches_node(s, "n", labels));
                prop_assert_eq!(pod_fits_node(&constrained, "n", labels), expected, "labels {:?}", labels);
            }
        }

        #[test]
        fn constraining_twice_changes_nothing(spec in arb_spec(), sites in arb_sites()) {
            let once = with_affinity(&spec, constrain(&spec, &sites, &[]));
            prop_assert_eq!(constrain(&once, &sites, &[]), None);
        }

        #[test]
        fn unsatisfiable_means_no_node_fits(spec in arb_spec(), sites in arb_sites(), nodes in proptest::collection::vec(arb_labels(), 1..8)) {
            if !satisfiable_in_enclave(&spec, &sites) {
                let constrained = with_affinity(&spec, constrain(&spec, &sites, &[]));
                for labels in &nodes {
                    prop_assert!(!pod_fits_node(&constrained, "n", labels), "labels {:?} fit a pod judged unsatisfiable", labels);
                }
            }
        }
    }
}
