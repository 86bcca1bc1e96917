//! Label selector matching (`metav1.LabelSelector` semantics), used for sites, policy
//! scopes and gateways. Pure, so that every decision built on it is unit-testable.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Does a selector match these labels? matchLabels and every matchExpression must hold.
/// An operator the API does not define, or a requirement with the wrong number of
/// values, matches nothing, so a malformed selector read from the cluster can only
/// narrow a scope, never widen it.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_match
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            // A requirement with the wrong number of values is malformed (the API would
            // reject it in a built-in object): it matches nothing.
            match (req.operator.as_str(), values.is_empty()) {
                ("In", false) => value.is_some_and(|v| values.contains(v)),
                ("NotIn", false) => value.is_none_or(|v| !values.contains(v)),
                ("Exists", true) => value.is_some(),
                ("DoesNotExist", true) => value.is_none(),
                _ => false,
            }
        })
}

/// The label keys a selector reads, in order and without repeats.
pub fn keys(selector: &LabelSelector) -> Vec<String> {
    let mut keys: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        if !keys.contains(&req.key) {
            keys.push(req.key.clone());
        }
    }
    keys
}

/// Renders a selector in the string form `kubectl -l` and list calls accept, or None
/// when it uses an operator that form cannot express.
pub fn to_query(selector: &LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default().join(",");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            "DoesNotExist" => format!("!{}", req.key),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = selector(
            "matchLabels: {site: dublin}\nmatchExpressions:\n- {key: zone, operator: In, values: [a, b]}\n- {key: bad, operator: DoesNotExist}",
        );
        assert!(matches(&s, &labels(&[("site", "dublin"), ("zone", "a")])));
        assert!(!matches(&s, &labels(&[("site", "dublin"), ("zone", "c")])));
        assert!(!matches(
            &s,
            &labels(&[("site", "dublin"), ("zone", "a"), ("bad", "")])
        ));
        assert!(!matches(&s, &labels(&[("site", "norway"), ("zone", "a")])));
    }

    #[test]
    fn not_in_matches_absent_keys_and_unknown_operators_match_nothing() {
        assert!(matches(
            &selector("matchExpressions: [{key: k, operator: NotIn, values: [x]}]"),
            &labels(&[])
        ));
        assert!(!matches(
            &selector("matchExpressions: [{key: k, operator: Gt, values: ['1']}]"),
            &labels(&[("k", "2")])
        ));
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[("a", "b")])));
    }

    #[test]
    fn keys_and_query_cover_both_forms() {
        let s = selector(
            "matchLabels: {a: '1'}\nmatchExpressions: [{key: b, operator: Exists}, {key: a, operator: NotIn, values: ['2', '3']}]",
        );
        assert_eq!(keys(&s), vec!["a", "b"]);
        assert_eq!(to_query(&s).as_deref(), Some("a=1,b,a notin (2,3)"));
    }
}
