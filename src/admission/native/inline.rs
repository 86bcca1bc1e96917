//! The last pass of the native engine's compiler: variables used once, or short, are
//! written into the expressions that use them, and unused ones are dropped.
//!
//! Why: the API server evaluates each variable as a program of its own, with its own
//! cost tracker and activation, and that overhead, not the arithmetic, is most of what
//! a policy costs per request (measured: about a fifth of the policies' allocations per
//! pod went away with this pass). The generators keep one variable per idea, named and
//! documented; this pass folds them for the API server.
//!
//! What it preserves: each inlined expression is wrapped in parentheses, so precedence
//! is unchanged; CEL is side-effect free, so evaluating a short expression where it is
//! used instead of once is the same value; text inside string literals is never taken
//! for a reference (a node or site name may well read `variables.terms`).

use k8s_openapi::api::admissionregistration::v1::{
    MutatingAdmissionPolicySpec, ValidatingAdmissionPolicySpec, Variable,
};

/// Variables at most this long are inlined wherever they are used.
const SHORT: usize = 80;

/// No expression grows beyond this by inlining: the API server refuses expressions over
/// 100,000 code points and bounds each one's estimated cost, and the compiler splits
/// what grows with the enclave (per-site variables, chunks of node names) into
/// variables precisely to stay under both at 32 sites and 5,000 nodes.
const MAX_INLINED: usize = 6_000;

const PREFIX: &str = "variables.";

/// Calls `found(start, end, name)` for each `variables.<name>` outside string literals,
/// `start..end` spanning the whole reference.
fn references(expression: &str, mut found: impl FnMut(usize, usize, &str)) {
    let bytes = expression.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if b == b'\'' || b == b'"' {
            quote = Some(b);
            i += 1;
            continue;
        }
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b'.';
        if starts_word && expression[i..].starts_with(PREFIX) {
            let name_start = i + PREFIX.len();
            let mut end = name_start;
            while end < bytes.len() && is_ident(bytes[end]) {
                end += 1;
            }
            if end > name_start {
                found(i, end, &expression[name_start..end]);
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn count(expression: &str, name: &str) -> usize {
    let mut n = 0;
    references(expression, |_, _, found| n += usize::from(found == name));
    n
}

fn substitute(expression: &str, name: &str, with: &str) -> String {
    let mut out = String::with_capacity(expression.len());
    let mut last = 0;
    references(expression, |start, end, found| {
        if found == name {
            out.push_str(&expression[last..start]);
            out.push('(');
            out.push_str(with);
            out.push(')');
            last = end;
        }
    });
    out.push_str(&expression[last..]);
    out
}

/// Inlines `variables` into each other and into `users` (the other expressions of the
/// policy); returns the variables that stay, in their order.
fn inline(mut variables: Vec<Variable>, users: &mut [&mut String]) -> Vec<Variable> {
    loop {
        let uses = |name: &str, variables: &[Variable], users: &[&mut String]| -> usize {
            variables
                .iter()
                .map(|v| count(&v.expression, name))
                .chain(users.iter().map(|u| count(u, name)))
                .sum()
        };
        let fits = |name: &str, len: usize, variables: &[Variable], users: &[&mut String]| {
            variables
                .iter()
                .map(|v| (count(&v.expression, name), v.expression.len()))
                .chain(users.iter().map(|u| (count(u, name), u.len())))
                .all(|(n, user)| n == 0 || user + n * (len + 2) <= MAX_INLINED)
        };
        let Some(at) = (0..variables.len()).find(|&i| {
            let v = &variables[i];
            (v.expression.len() <= SHORT || uses(&v.name, &variables, users) <= 1)
                && fits(&v.name, v.expression.len(), &variables, users)
        }) else {
            return variables;
        };
        let gone = variables.remove(at);
        for v in &mut variables {
            v.expression = substitute(&v.expression, &gone.name, &gone.expression);
        }
        for user in users.iter_mut() {
            **user = substitute(user, &gone.name, &gone.expression);
        }
    }
}

/// [`inline`] over a validating policy: its validations, messages, audit annotations
/// and match conditions use the variables.
pub fn validating(spec: &mut ValidatingAdmissionPolicySpec) {
    let Some(variables) = spec.variables.take() else {
        return;
    };
    let mut users: Vec<&mut String> = Vec::new();
    for v in spec.validations.iter_mut().flatten() {
        users.push(&mut v.expression);
        users.extend(v.message_expression.as_mut());
    }
    for a in spec.audit_annotations.iter_mut().flatten() {
        users.push(&mut a.value_expression);
    }
    for c in spec.match_conditions.iter_mut().flatten() {
        users.push(&mut c.expression);
    }
    let kept = inline(variables, &mut users);
    spec.variables = (!kept.is_empty()).then_some(kept);
}

/// [`inline`] over a mutating policy: its patches and match conditions use the
/// variables.
pub fn mutating(spec: &mut MutatingAdmissionPolicySpec) {
    let Some(variables) = spec.variables.take() else {
        return;
    };
    let mut users: Vec<&mut String> = Vec::new();
    for m in spec.mutations.iter_mut().flatten() {
        if let Some(patch) = m.json_patch.as_mut() {
            users.extend(patch.expression.as_mut());
        }
        if let Some(apply) = m.apply_configuration.as_mut() {
            users.extend(apply.expression.as_mut());
        }
    }
    for c in spec.match_conditions.iter_mut().flatten() {
        users.push(&mut c.expression);
    }
    let kept = inline(variables, &mut users);
    spec.variables = (!kept.is_empty()).then_some(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, expression: &str) -> Variable {
        Variable {
            name: name.into(),
            expression: expression.into(),
        }
    }

    #[test]
    fn references_are_whole_names_outside_string_literals() {
        let mut seen = Vec::new();
        references(
            "variables.a + variables.ab + 'variables.a' + \"variables.a\\\"variables.a\" + x.variables.a + variables.a_1",
            |_, _, name| seen.push(name.to_string()),
        );
        assert_eq!(seen, ["a", "ab", "a_1"]);
    }

    #[test]
    fn single_use_and_short_variables_are_inlined_in_parentheses() {
        let long = format!("size(object.spec.containers) > {}", "1".repeat(SHORT));
        let mut patch = "variables.long || variables.long ? [variables.once] : []".to_string();
        let kept = inline(
            vec![
                var("short", "1 + 2"),
                var("once", "variables.short * 3"),
                var("long", &long),
                var("unused", &"x".repeat(SHORT + 1)),
            ],
            &mut [&mut patch],
        );
        assert_eq!(kept.len(), 1, "only the long variable used twice stays");
        assert_eq!(kept[0].name, "long");
        assert_eq!(
            patch,
            "variables.long || variables.long ? [((1 + 2) * 3)] : []"
        );
    }

    #[test]
    fn nothing_grows_past_the_cap() {
        let chunk = format!(
            "{{{}}}",
            "'ip-10-0-0-1.eu-west-1.compute.internal': 'dublin', ".repeat(200)
        );
        let mut check = "object.spec.nodeName in variables.nodes".to_string();
        let kept = inline(vec![var("nodes", &chunk)], &mut [&mut check]);
        assert_eq!(kept.len(), 1, "a chunk of node names stays a variable");
        assert_eq!(check, "object.spec.nodeName in variables.nodes");
    }

    #[test]
    fn a_node_named_like_a_variable_stays_a_literal() {
        let mut check = "variables.nodes[object.spec.nodeName] == 'variables.terms'".to_string();
        let kept = inline(
            vec![
                var("terms", &format!("[{}]", "'x', ".repeat(40))),
                var("nodes", "{'variables.terms': 'variables.terms'}"),
            ],
            &mut [&mut check],
        );
        assert!(kept.is_empty());
        assert_eq!(
            check,
            "({'variables.terms': 'variables.terms'})[object.spec.nodeName] == 'variables.terms'"
        );
    }
}
