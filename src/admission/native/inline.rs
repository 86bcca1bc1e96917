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
//! for a reference (a node or site name may well read `variables.terms`). A variable is
//! never written into the body of a comprehension (`map`, `filter`, `all`, `exists`,
//! `exists_one`) when that would evaluate it once per element instead of once per
//! request: unless it is short and iterates over nothing itself, it stays a variable
//! there (a list built by `map` and indexed by the loop's counter was once inlined into
//! the loop and made the placement check quadratic in the pod's terms).

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

/// The bytes of `expression` outside string literals, with their offsets (a backslash
/// in a literal escapes the byte after it).
fn code(expression: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    expression.bytes().enumerate().filter(move |&(_, b)| {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            return false;
        }
        if b == b'\'' || b == b'"' {
            quote = Some(b);
            return false;
        }
        true
    })
}

/// Calls `found(start, end, name)` for each `variables.<name>` outside string literals,
/// `start..end` spanning the whole reference.
fn references(expression: &str, mut found: impl FnMut(usize, usize, &str)) {
    let bytes = expression.as_bytes();
    let mut next = 0;
    for (i, _) in code(expression) {
        if i < next {
            continue;
        }
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b'.';
        if starts_word && bytes[i..].starts_with(PREFIX.as_bytes()) {
            let name_start = i + PREFIX.len();
            let mut end = name_start;
            while end < bytes.len() && is_ident(bytes[end]) {
                end += 1;
            }
            if end > name_start {
                found(i, end, &expression[name_start..end]);
            }
            next = end;
        }
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

/// The names of CEL's comprehension macros: their arguments are evaluated per element.
const MACROS: [&str; 5] = ["map", "filter", "all", "exists", "exists_one"];

/// Whether `expression` iterates: calls a comprehension macro (a string literal holding
/// `.map(` counts too, which errs on the side of not inlining).
fn iterates(expression: &str) -> bool {
    MACROS
        .iter()
        .any(|m| expression.contains(&format!(".{m}(")))
}

/// The byte ranges of `expression` that are arguments of a comprehension macro call,
/// outside string literals.
fn loop_bodies(expression: &str) -> Vec<(usize, usize)> {
    let bytes = expression.as_bytes();
    let mut open: Vec<(usize, bool)> = Vec::new();
    let mut bodies = Vec::new();
    for (i, b) in code(expression) {
        if b == b'(' {
            let name_start = bytes[..i]
                .iter()
                .rposition(|&c| !is_ident(c))
                .map_or(0, |p| p + 1);
            let is_macro = name_start > 0
                && bytes[name_start - 1] == b'.'
                && MACROS.iter().any(|m| m.as_bytes() == &bytes[name_start..i]);
            open.push((i, is_macro));
        } else if b == b')'
            && let Some((start, true)) = open.pop()
        {
            bodies.push((start, i));
        }
    }
    bodies
}

/// Whether some reference to `variables.<name>` in `expression` lies in a loop body.
fn used_in_loop(expression: &str, name: &str) -> bool {
    let bodies = loop_bodies(expression);
    let mut inside = false;
    references(expression, |start, _, found| {
        inside |= found == name && bodies.iter().any(|&(s, e)| s < start && start < e);
    });
    inside
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
        // Once per element is only as cheap as once per request for a short expression
        // that iterates over nothing.
        let costs_per_element = |v: &Variable, variables: &[Variable], users: &[&mut String]| {
            (v.expression.len() > SHORT || iterates(&v.expression))
                && variables
                    .iter()
                    .map(|u| &u.expression)
                    .chain(users.iter().map(|u| &**u))
                    .any(|u| used_in_loop(u, &v.name))
        };
        let Some(at) = (0..variables.len()).find(|&i| {
            let v = &variables[i];
            (v.expression.len() <= SHORT || uses(&v.name, &variables, users) <= 1)
                && fits(&v.name, v.expression.len(), &variables, users)
                && !costs_per_element(v, &variables, users)
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
    fn what_iterates_is_not_written_into_a_loop_body() {
        let per_site = "variables.terms.map(t, has(t.matchExpressions))";
        let mut check = "lists.range(size(variables.terms)).all(i, variables.inside[i]) && variables.n > 0 && ['a'].exists(s, s == variables.k)".to_string();
        let kept = inline(
            vec![
                var("terms", &format!("object.spec.terms{}", " ".repeat(SHORT))),
                var("inside", per_site),
                var("n", "size(variables.terms)"),
                var("k", "'x'"),
            ],
            &mut [&mut check],
        );
        let kept: Vec<_> = kept.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            kept,
            ["terms", "inside"],
            "the list built by map stays a variable, and so does what it maps over"
        );
        assert_eq!(
            check,
            "lists.range(size(variables.terms)).all(i, variables.inside[i]) && (size(variables.terms)) > 0 && ['a'].exists(s, s == ('x'))"
        );
    }

    #[test]
    fn loop_bodies_are_the_arguments_of_macros_outside_literals() {
        let e = "f(a) && l.map(x, g(x)) && ')'.size() > 0 && m.exists_one(y, y)";
        let bodies: Vec<_> = loop_bodies(e).iter().map(|&(s, t)| &e[s..=t]).collect();
        assert_eq!(bodies, ["(x, g(x))", "(y, y)"]);
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
