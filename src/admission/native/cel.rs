//! The CEL the native engine evaluates inside the API server, generated from an
//! enclave's site terms. Every expression mirrors a function of [`crate::placement`]
//! exactly — same candidates, same order, same bounds — so that both admission engines
//! decide the same (a differential test holds them together):
//!
//! | CEL variable | Rust |
//! | --- | --- |
//! | `implied` | [`placement::implies_enclave`] |
//! | `satisfiable` | [`placement::satisfiable_in_enclave`] |
//! | `judgeable` | [`placement::judgeable`] |
//! | `withinBounds` | [`placement::within_bounds`] |
//! | `newTerms` | [`placement::cross_product`] |
//! | `missing` | the preferences [`placement::constrain`] adds |
//!
//! The sites are known when the policy is written, so each site becomes its own
//! variables (`site_j`, `implied_j`, `sat_j`, `cross_j`): no expression grows with the
//! number of sites, which keeps every one of them far below the CEL parser's size limit
//! and their cost per evaluation bounded by the pod's own size, which [`judgeable`]
//! bounds first. No typed object constructors are needed (they do not compile in
//! variables): site requirements are `dyn` maps, and everything read from the object is
//! compared field by field.
//!
//! [`judgeable`]: placement::judgeable

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::Variable;
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::placement;

/// A CEL string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL list of string literals.
pub fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn values(req: &NodeSelectorRequirement) -> &[String] {
    req.values.as_deref().unwrap_or_default()
}

fn expressions(term: &NodeSelectorTerm) -> &[NodeSelectorRequirement] {
    term.match_expressions.as_deref().unwrap_or_default()
}

fn var(name: impl Into<String>, expression: impl Into<String>) -> Variable {
    Variable {
        name: name.into(),
        expression: expression.into(),
    }
}

/// A site requirement as a `dyn` map, so that lists of them are homogeneous.
pub(super) fn requirement_literal(req: &NodeSelectorRequirement) -> String {
    let mut fields = vec![
        format!("'key': dyn({})", quote(&req.key)),
        format!("'operator': dyn({})", quote(&req.operator)),
    ];
    if !values(req).is_empty() {
        fields.push(format!("'values': dyn({})", strings(values(req))));
    }
    format!("{{{}}}", fields.join(", "))
}

/// `variables.ns` implies the site requirement (nodeSelector entries are `In` with one
/// value).
fn ns_implies(want: &NodeSelectorRequirement) -> String {
    let key = quote(&want.key);
    let vals = strings(values(want));
    match want.operator.as_str() {
        "In" => format!("({key} in variables.ns && variables.ns[{key}] in {vals})"),
        "NotIn" => format!("({key} in variables.ns && !(variables.ns[{key}] in {vals}))"),
        "Exists" => format!("({key} in variables.ns)"),
        _ => "false".into(),
    }
}

/// A requirement `h` of the pod implies the site requirement `want`
/// (`placement::implies_requirement`).
fn req_implies(want: &NodeSelectorRequirement) -> String {
    let key = quote(&want.key);
    let vals = strings(values(want));
    let hv = "(has(h.values) ? h.values : [])";
    match want.operator.as_str() {
        "In" => format!("h.key == {key} && h.operator == 'In' && {hv}.all(v, v in {vals})"),
        "NotIn" => format!(
            "h.key == {key} && ((h.operator == 'In' && {hv}.all(v, !(v in {vals}))) || (h.operator == 'NotIn' && {vals}.all(w, w in {hv})) || h.operator == 'DoesNotExist')"
        ),
        "Exists" => format!(
            "h.key == {key} && (h.operator == 'In' || h.operator == 'Exists' || h.operator == 'Gt' || h.operator == 'Lt')"
        ),
        _ => format!("h.key == {key} && h.operator == 'DoesNotExist'"),
    }
}

/// The conjunction (term `t` when `with_term`, and the nodeSelector) implies the site.
fn implies_site(site: &NodeSelectorTerm, with_term: bool) -> String {
    let parts: Vec<String> = expressions(site)
        .iter()
        .map(|want| {
            if with_term {
                format!(
                    "({} || (has(t.matchExpressions) && t.matchExpressions.exists(h, {})))",
                    ns_implies(want),
                    req_implies(want)
                )
            } else {
                ns_implies(want)
            }
        })
        .collect();
    if parts.is_empty() {
        "true".into()
    } else {
        parts.join(" && ")
    }
}

const INT: &str = "^[-+]?[0-9]{1,18}$";

/// `placement::requirement_matches(r, Some(V))` with `V` a CEL string expression.
fn matches_value(r: &str, v: &str) -> String {
    format!(
        "(({r}.operator == 'In' && has({r}.values) && {v} in {r}.values) || ({r}.operator == 'NotIn' && has({r}.values) && !({v} in {r}.values)) || ({r}.operator == 'Exists' && !has({r}.values)) || (({r}.operator == 'Gt' || {r}.operator == 'Lt') && has({r}.values) && size({r}.values) == 1 && {v}.matches('{INT}') && {r}.values[0].matches('{INT}') && ({r}.operator == 'Gt' ? int({v}) > int({r}.values[0]) : int({v}) < int({r}.values[0]))))"
    )
}

/// `placement::requirement_matches(r, None)`.
fn matches_absent(r: &str) -> String {
    format!(
        "(({r}.operator == 'NotIn' && has({r}.values)) || ({r}.operator == 'DoesNotExist' && !has({r}.values)))"
    )
}

fn well_formed(r: &str) -> String {
    format!(
        "((({r}.operator == 'In' || {r}.operator == 'NotIn') && has({r}.values)) || (({r}.operator == 'Exists' || {r}.operator == 'DoesNotExist') && !has({r}.values)) || (({r}.operator == 'Gt' || {r}.operator == 'Lt') && has({r}.values) && size({r}.values) == 1))"
    )
}

/// A site requirement accepts the value (`Some`) or the label's absence (`None`):
/// evaluated here, the site is known.
fn site_accepts(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let vals = values(req);
    match (req.operator.as_str(), value) {
        ("In", Some(v)) => vals.iter().any(|x| x == v),
        ("NotIn", Some(v)) => !vals.iter().any(|x| x == v),
        ("NotIn", None) | ("DoesNotExist", None) | ("Exists", Some(_)) => true,
        _ => false,
    }
}

/// The site requirements accept the CEL string `v` (for values only known at admission).
fn site_accepts_cel(site: &[&NodeSelectorRequirement], v: &str) -> String {
    let parts: Vec<String> = site
        .iter()
        .map(|r| match r.operator.as_str() {
            "In" => format!("{v} in {}", strings(values(r))),
            "NotIn" => format!("!({v} in {})", strings(values(r))),
            "Exists" => "true".into(),
            _ => "false".into(),
        })
        .collect();
    if parts.is_empty() {
        "true".into()
    } else {
        parts.join(" && ")
    }
}

/// `placement::key_satisfiable` for one key of the site, against the pod's
/// requirements on that key (term `t` when `with_term`) and the nodeSelector.
fn key_satisfiable(key: &str, site: &[&NodeSelectorRequirement], with_term: bool) -> String {
    let k = quote(key);
    let pod = if with_term {
        format!("(has(t.matchExpressions) ? t.matchExpressions : []).filter(r, r.key == {k})")
    } else {
        "[]".into()
    };
    let ns_has = format!("({k} in variables.ns)");
    let holds = |v: &str, with_site: bool| {
        let site_part = if with_site {
            site_accepts_cel(site, v)
        } else {
            "true".into()
        };
        format!(
            "({site_part} && (!{ns_has} || variables.ns[{k}] == {v}) && {pod}.all(r, {}))",
            matches_value("r", v)
        )
    };
    let site_absent = site.iter().all(|r| site_accepts(r, None));
    let absent = if site_absent {
        format!("(!{ns_has} && {pod}.all(r, {}))", matches_absent("r"))
    } else {
        "false".into()
    };
    if let Some(first) = site.iter().find(|r| r.operator == "In") {
        // Candidates: the site's values, those the site itself accepts (known now).
        let candidates: Vec<&String> = values(first)
            .iter()
            .filter(|v| site.iter().all(|r| site_accepts(r, Some(v))))
            .collect();
        return format!(
            "({absent} || {}.exists(v, {}))",
            strings(candidates),
            holds("v", false)
        );
    }
    let site_free = !site.iter().any(|r| r.operator == "DoesNotExist");
    let free = if site_free {
        format!(
            "!{pod}.exists(r, !{} || r.operator == 'DoesNotExist' || ((r.operator == 'Gt' || r.operator == 'Lt') && !r.values[0].matches('{INT}')))",
            well_formed("r")
        )
    } else {
        "false".into()
    };
    format!(
        "({absent} || (({ns_has} || {pod}.exists(r, r.operator == 'In')) ? (({ns_has} && {}) || {pod}.exists(r, r.operator == 'In' && has(r.values) && r.values.exists(v, {}))) : {free}))",
        holds(&format!("variables.ns[{k}]"), true),
        holds("v", true)
    )
}

/// `placement::compatible` of the conjunction with one site: every key the site
/// constrains is satisfiable.
fn site_compatible(site: &NodeSelectorTerm, with_term: bool) -> String {
    let keys: BTreeSet<&str> = expressions(site).iter().map(|r| r.key.as_str()).collect();
    let parts: Vec<String> = keys
        .iter()
        .map(|key| {
            let on: Vec<&NodeSelectorRequirement> =
                expressions(site).iter().filter(|r| r.key == *key).collect();
            key_satisfiable(key, &on, with_term)
        })
        .collect();
    if parts.is_empty() {
        "true".into()
    } else {
        parts.join(" && ")
    }
}

/// The CEL parser refuses expressions over 100,000 code points: literals larger than
/// this are split over several variables.
const MAX_LITERAL_CHARS: usize = 90_000;

/// A CEL map literal of `entries` as variables `{name}_0`, `{name}_1`, …, each below the
/// parser's size limit. Maps, not lists: `in` on a map is one lookup, and the API
/// server's cost estimate knows it.
pub fn map_variables<'a>(
    name: &str,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<Variable> {
    let mut chunks: Vec<Vec<String>> = vec![Vec::new()];
    let mut size = 0;
    for (key, value) in entries {
        let entry = format!("{}: {}", quote(key), quote(value));
        if size + entry.chars().count() + 2 > MAX_LITERAL_CHARS && size > 0 {
            chunks.push(Vec::new());
            size = 0;
        }
        size += entry.chars().count() + 2;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(entry);
        }
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| var(format!("{name}_{i}"), format!("{{{}}}", chunk.join(", "))))
        .collect()
}

/// `key in` the map that [`map_variables`] split into `chunks` variables.
pub fn in_map(key: &str, name: &str, chunks: usize) -> String {
    if chunks == 0 {
        return "false".into();
    }
    let tests: Vec<String> = (0..chunks)
        .map(|i| format!("{key} in variables.{name}_{i}"))
        .collect();
    format!("({})", tests.join(" || "))
}

/// The variables that hold the enclave's node names (`enclaveNodes_<i>`).
pub const NODES: &str = "enclaveNodes";

/// `placement::fields_allow_enclave` of term `t`, with the enclave's node names in
/// `node_chunks` variables of [`NODES`].
pub fn fields_allow_enclave(node_chunks: usize) -> String {
    let named = "t.matchFields.filter(g, g.operator == 'In')[0].values[0]";
    format!(
        "(has(t.matchFields) ? t.matchFields : []).all(f, f.key == 'metadata.name' && has(f.values) && size(f.values) == 1 && (f.operator == 'In' || f.operator == 'NotIn')) && (!(has(t.matchFields) ? t.matchFields : []).exists(f, f.operator == 'In') || ((has(t.matchFields) ? t.matchFields : []).filter(f, f.operator == 'In').all(f, f.values[0] == {named}) && !(has(t.matchFields) ? t.matchFields : []).exists(f, f.operator == 'NotIn' && f.values[0] == {named}) && {}))",
        in_map(named, NODES, node_chunks)
    )
}

/// The variables that read the pod's placement from `spec_expr` (the pod's spec, or a
/// template's), in dependency order. With the enclave's `nodes` (name → site), also
/// the nodes themselves (first, as [`NODES`] variables) and the satisfiability
/// variables, which read them.
pub fn placement_variables(
    spec_expr: &str,
    sites: &[NodeSelectorTerm],
    nodes: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<Variable> {
    let node_vars = nodes.map(|nodes| map_variables(NODES, nodes));
    let node_chunks = node_vars.as_ref().map_or(0, Vec::len);
    let n = sites.len();
    let site_reqs: usize = sites.iter().map(|s| expressions(s).len()).sum();
    let required =
        "variables.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";
    let mut vars = node_vars.unwrap_or_default();
    vars.extend([
        var("spec", spec_expr),
        var(
            "ns",
            "has(variables.spec.nodeSelector) ? variables.spec.nodeSelector : {}",
        ),
        var(
            "hasReq",
            "has(variables.spec.affinity) && has(variables.spec.affinity.nodeAffinity) && has(variables.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution)",
        ),
        var(
            "rawTerms",
            format!(
                "variables.hasReq && has({required}.nodeSelectorTerms) ? size({required}.nodeSelectorTerms) : 0"
            ),
        ),
        var(
            "terms",
            format!(
                "variables.rawTerms > 0 ? {required}.nodeSelectorTerms.filter(t, (has(t.matchExpressions) && size(t.matchExpressions) > 0) || (has(t.matchFields) && size(t.matchFields) > 0)) : []"
            ),
        ),
        var(
            "ownReqs",
            "variables.terms.map(t, (has(t.matchExpressions) ? size(t.matchExpressions) : 0) + (has(t.matchFields) ? size(t.matchFields) : 0)).sum()",
        ),
        var(
            "judgeable",
            format!(
                "size(variables.terms) <= {} && variables.ownReqs <= {}",
                placement::MAX_JUDGED_TERMS,
                placement::MAX_JUDGED_REQUIREMENTS
            ),
        ),
        var(
            "productTerms",
            format!("variables.rawTerms == 0 ? {n} : size(variables.terms) * {n}"),
        ),
        var(
            "productReqs",
            format!(
                "variables.rawTerms == 0 ? {site_reqs} : variables.ownReqs * {n} + size(variables.terms) * {site_reqs}"
            ),
        ),
        var(
            "withinBounds",
            format!(
                "variables.productTerms <= {} && variables.productReqs <= {}",
                placement::MAX_PLACED_TERMS,
                placement::MAX_PLACED_REQUIREMENTS
            ),
        ),
    ]);
    for (j, site) in sites.iter().enumerate() {
        let literals: Vec<String> = expressions(site).iter().map(requirement_literal).collect();
        vars.push(var(
            format!("site_{j}"),
            format!("[{}]", literals.join(", ")),
        ));
        vars.push(var(
            format!("implied_{j}"),
            format!(
                "variables.judgeable ? variables.terms.map(t, {}) : []",
                implies_site(site, true)
            ),
        ));
        vars.push(var(format!("impliedNs_{j}"), implies_site(site, false)));
    }
    let any_site = |prefix: &str| -> String {
        (0..n)
            .map(|j| format!("variables.{prefix}_{j}[i]"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    let any_ns = |prefix: &str| -> String {
        (0..n)
            .map(|j| format!("variables.{prefix}_{j}"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    vars.push(var(
        "implied",
        if n == 0 {
            "false".into()
        } else {
            format!(
                "!variables.judgeable ? false : (variables.hasReq ? lists.range(size(variables.terms)).all(i, {}) : ({}))",
                any_site("implied"),
                any_ns("impliedNs")
            )
        },
    ));
    if nodes.is_some() {
        vars.push(var(
            "fieldsOk",
            format!(
                "variables.judgeable ? variables.terms.map(t, {}) : []",
                fields_allow_enclave(node_chunks)
            ),
        ));
        for (j, site) in sites.iter().enumerate() {
            vars.push(var(
                format!("sat_{j}"),
                format!(
                    "variables.judgeable ? variables.terms.map(t, {}) : []",
                    site_compatible(site, true)
                ),
            ));
            vars.push(var(format!("satNs_{j}"), site_compatible(site, false)));
        }
        vars.push(var(
            "satisfiable",
            if n == 0 {
                "false".into()
            } else {
                format!(
                    "!variables.judgeable ? false : (variables.hasReq ? lists.range(size(variables.terms)).exists(i, variables.fieldsOk[i] && ({})) : ({}))",
                    any_site("sat"),
                    any_ns("satNs")
                )
            },
        ));
    }
    vars
}

/// The cross product and the missing preferences (mutation only), after
/// [`placement_variables`].
pub fn mutation_variables(
    sites: &[NodeSelectorTerm],
    preferred: &[(NodeSelectorTerm, i32)],
) -> Vec<Variable> {
    let n = sites.len();
    let mut vars = Vec::new();
    let same = "h.key == w.key && h.operator == w.operator && (has(h.values) ? h.values : []) == (has(w.values) ? w.values : [])";
    for j in 0..n {
        vars.push(var(
            format!("cross_{j}"),
            format!(
                "variables.terms.map(t, {{'matchExpressions': dyn((has(t.matchExpressions) ? t.matchExpressions : []) + variables.site_{j}.filter(w, !(has(t.matchExpressions) && t.matchExpressions.exists(h, {same})))), 'matchFields': dyn(has(t.matchFields) ? t.matchFields : [])}})"
            ),
        ));
    }
    let site_terms: Vec<String> = (0..n)
        .map(|j| format!("{{'matchExpressions': variables.site_{j}}}"))
        .collect();
    let crossed: Vec<String> = (0..n).map(|j| format!("variables.cross_{j}")).collect();
    vars.push(var(
        "newTerms",
        format!(
            "variables.rawTerms == 0 ? [{}] : {}",
            site_terms.join(", "),
            if crossed.is_empty() {
                "[]".into()
            } else {
                crossed.join(" + ")
            }
        ),
    ));
    let literal = preference_literal(preferred);
    let preferred_path =
        "variables.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";
    let has_preferred = format!(
        "has(variables.spec.affinity) && has(variables.spec.affinity.nodeAffinity) && has({preferred_path})"
    );
    // Same term as the pod's preference e: same requirements in any order, no fields.
    let same_term = "(has(e.preference.matchFields) ? size(e.preference.matchFields) : 0) == 0 && size(has(e.preference.matchExpressions) ? e.preference.matchExpressions : []) == size(p.preference.matchExpressions) && (has(e.preference.matchExpressions) ? e.preference.matchExpressions : []).all(h, p.preference.matchExpressions.exists(w, h.key == w.key && h.operator == w.operator && (has(h.values) ? h.values : []) == (has(w.values) ? w.values : []))) && p.preference.matchExpressions.all(w, (has(e.preference.matchExpressions) ? e.preference.matchExpressions : []).exists(h, h.key == w.key && h.operator == w.operator && (has(h.values) ? h.values : []) == (has(w.values) ? w.values : [])))";
    // A pod without preferences (most of them) gets the literal list as it is: a list
    // of literals only is folded into a constant when the policy is compiled, while the
    // filter over it is evaluated, literals and all, on every request (half a
    // millisecond of API server CPU per pod, measured).
    vars.push(var(
        "missing",
        if literal == "[]" {
            "[]".to_string()
        } else {
            format!(
                "!({has_preferred}) ? {literal} : {literal}.filter(p, !{preferred_path}.exists(e, {same_term}))"
            )
        },
    ));
    vars
}

/// The policy's preferred site terms as a CEL list literal (`[]` for none): the first
/// occurrence of each site term only, since constrain() skips a term already present,
/// including one it added a moment before.
pub fn preference_literal(preferred: &[(NodeSelectorTerm, i32)]) -> String {
    let mut seen: Vec<&NodeSelectorTerm> = Vec::new();
    let mut literals = Vec::new();
    for (term, weight) in preferred {
        if expressions(term).is_empty() || seen.contains(&term) {
            continue;
        }
        seen.push(term);
        let reqs: Vec<String> = expressions(term).iter().map(requirement_literal).collect();
        literals.push(format!(
            "{{'weight': dyn({}), 'preference': dyn({{'matchExpressions': [{}]}})}}",
            (*weight).clamp(1, 100),
            reqs.join(", ")
        ));
    }
    format!("[{}]", literals.join(", "))
}

/// The pod selector of a policy over the labels expression `labels`, as a CEL
/// condition (matchLabels and matchExpressions ANDed, as `metav1.LabelSelector`).
pub fn selector_condition(selector: &crate::crd::Selector, labels: &str) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| {
            format!(
                "({k} in {labels} && {labels}[{k}] == {v})",
                k = quote(k),
                v = quote(v)
            )
        })
        .collect();
    for r in &selector.match_expressions {
        let k = quote(&r.key);
        let vals = strings(&r.values);
        parts.push(match r.operator {
            crate::crd::SelectorOperator::In => {
                format!("({k} in {labels} && {labels}[{k}] in {vals})")
            }
            crate::crd::SelectorOperator::NotIn => {
                format!("(!({k} in {labels}) || !({labels}[{k}] in {vals}))")
            }
            crate::crd::SelectorOperator::Exists => format!("({k} in {labels})"),
            crate::crd::SelectorOperator::DoesNotExist => format!("!({k} in {labels})"),
        });
    }
    if parts.is_empty() {
        "true".into()
    } else {
        parts.join(" && ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(yaml: &str) -> NodeSelectorTerm {
        serde_yaml::from_str(yaml).expect("fixture")
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("it's a \\ test"), "'it\\'s a \\\\ test'");
        assert_eq!(
            strings(&["a".to_string(), "b'".to_string()]),
            "['a', 'b\\'']"
        );
    }

    #[test]
    fn one_variable_per_site_keeps_expressions_small_at_32_sites_of_16_requirements() {
        let site = |i: usize| {
            let reqs: Vec<String> = (0..16)
                .map(|k| {
                    format!(
                        "{{key: {}/k{k}-{i}, operator: In, values: ['{}']}}",
                        "x".repeat(250),
                        "v".repeat(63)
                    )
                })
                .collect();
            term(&format!("matchExpressions: [{}]", reqs.join(", ")))
        };
        let sites: Vec<NodeSelectorTerm> = (0..32).map(site).collect();
        let nodes = std::collections::BTreeMap::from([("n".to_string(), "s".to_string())]);
        let mut vars = placement_variables("object.spec", &sites, Some(&nodes));
        vars.extend(mutation_variables(&sites, &[(sites[0].clone(), 50)]));
        let largest = vars
            .iter()
            .map(|v| v.expression.chars().count())
            .max()
            .unwrap_or(0);
        // The CEL parser refuses expressions over 100,000 code points.
        assert!(
            largest < 100_000,
            "largest expression: {largest} code points"
        );
    }

    #[test]
    fn site_acceptance_is_decided_when_the_site_is_known() {
        let site = term(
            "matchExpressions: [{key: s, operator: In, values: [a, b]}, {key: s, operator: NotIn, values: [b]}]",
        );
        let on: Vec<&NodeSelectorRequirement> = site.match_expressions.iter().flatten().collect();
        let cel = key_satisfiable("s", &on, true);
        assert!(
            cel.contains("['a'].exists(v,"),
            "b is excluded by the site itself: {cel}"
        );
    }

    #[test]
    fn large_literals_are_split_below_the_parser_limit() {
        let nodes: std::collections::BTreeMap<String, String> = (0..5000)
            .map(|i| {
                (
                    format!("ip-10-0-{}-{}.eu-west-1.compute.internal", i / 256, i % 256),
                    "dublin".to_string(),
                )
            })
            .collect();
        let vars = map_variables(NODES, &nodes);
        assert!(vars.len() > 1, "5,000 names do not fit one expression");
        assert!(vars.iter().all(|v| v.expression.chars().count() < 100_000));
        let entries: usize = vars
            .iter()
            .map(|v| v.expression.matches(": 'dublin'").count())
            .sum();
        assert_eq!(entries, 5000, "every node in exactly one chunk");
        assert_eq!(vars[0].name, "enclaveNodes_0");
        assert_eq!(
            in_map("x", NODES, 2),
            "(x in variables.enclaveNodes_0 || x in variables.enclaveNodes_1)"
        );
        assert_eq!(in_map("x", NODES, 0), "false");
        // No nodes: one empty map, so that the checks still compile.
        let empty = map_variables(NODES, &std::collections::BTreeMap::new());
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].expression, "{}");
    }
}
