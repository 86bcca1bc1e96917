//! Label selector matching (`metav1.LabelSelector` semantics), used for sites, policy
//! scopes and gateways. Pure, so that every decision built on it is unit-testable.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::crd::Selector;

/// The two halves of a label selector, whichever type holds them: the API's
/// `metav1.LabelSelector` (in webhook configurations and fixtures) or the bounded
/// [`Selector`] of our resources. One matching implementation serves both.
pub trait LabelQuery {
    /// `matchLabels` as (key, value).
    fn labels(&self) -> impl Iterator<Item = (&str, &str)>;
    /// `matchExpressions` as (key, operator, values).
    fn expressions(&self) -> impl Iterator<Item = (&str, &str, &[String])>;
}

impl LabelQuery for LabelSelector {
    fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn expressions(&self) -> impl Iterator<Item = (&str, &str, &[String])> {
        self.match_expressions.iter().flatten().map(|r| {
            (
                r.key.as_str(),
                r.operator.as_str(),
                r.values.as_deref().unwrap_or_default(),
            )
        })
    }
}

impl LabelQuery for Selector {
    fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.match_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn expressions(&self) -> impl Iterator<Item = (&str, &str, &[String])> {
        self.match_expressions
            .iter()
            .map(|r| (r.key.as_str(), r.operator.as_str(), r.values.as_slice()))
    }
}

/// Does a selector match these labels? matchLabels and every matchExpression must hold.
/// An operator the API does not define, or a requirement with the wrong number of
/// values, matches nothing, so a malformed selector read from the cluster can only
/// narrow a scope, never widen it.
pub fn matches(selector: &impl LabelQuery, labels: &BTreeMap<String, String>) -> bool {
    selector
        .labels()
        .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
        && selector.expressions().all(|(key, operator, values)| {
            let value = labels.get(key);
            match (operator, values.is_empty()) {
                ("In", false) => value.is_some_and(|v| values.contains(v)),
                ("NotIn", false) => value.is_none_or(|v| !values.contains(v)),
                ("Exists", true) => value.is_some(),
                ("DoesNotExist", true) => value.is_none(),
                _ => false,
            }
        })
}

/// Is `key` a label key as Kubernetes validates one: an optional DNS-subdomain prefix
/// (at most 253 characters) and `/`, then a name of 1 to 63 ASCII alphanumerics, `-`,
/// `_` or `.`, beginning and ending with an alphanumeric?
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let dns_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(dns_label)) && is_label_name(name)
}

/// Is `value` a label value: empty, or a label name?
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}

fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The label keys a selector reads, in order and without repeats.
pub fn keys(selector: &impl LabelQuery) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in selector
        .labels()
        .map(|(k, _)| k)
        .chain(selector.expressions().map(|(k, _, _)| k))
    {
        if !keys.iter().any(|known| known == key) {
            keys.push(key.to_string());
        }
    }
    keys
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
    fn label_syntax_is_kubernetes_syntax() {
        for good in [
            "site",
            "node-restriction.kubernetes.io/enclave-site",
            "a.b/C_d.e-f",
            "x",
        ] {
            assert!(is_label_key(good), "{good}");
        }
        for bad in [
            "",
            "sité",
            "-a",
            "a-",
            "A.B/c",
            "/a",
            "a/",
            "a/b/c",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(!is_label_key(bad), "{bad}");
        }
        assert!(is_label_value("") && is_label_value("eu-west-1a") && !is_label_value("dublín"));
    }

    #[test]
    fn keys_and_query_cover_both_forms() {
        let s = selector(
            "matchLabels: {a: '1'}\nmatchExpressions: [{key: b, operator: Exists}, {key: a, operator: NotIn, values: ['2', '3']}]",
        );
        assert_eq!(keys(&s), vec!["a", "b"]);
    }
}
