//! The side-door rules ([`crate::admission::doors`]) and the claim rules
//! ([`crate::volumes::Storage::claim_outside`]) as CEL, for the native engine. Kept in
//! validations and variables of their own (all named `door…` or `claim…`), so that
//! they read apart from the placement checks they are compiled next to.
//!
//! Every message is built from the same Rust function the webhook engine calls, with
//! placeholders replaced by CEL expressions ([`template`]), so that both engines say
//! the same words.

use k8s_openapi::api::admissionregistration::v1::Variable;

use super::cel;
use crate::{
    admission::doors,
    crd::{InlineVolumeType, PodSecurity},
    scope::ResolvedEnclave,
    volumes::{self, BETA_CLASS_ANNOTATION, ClassSource},
};

/// A placeholder for the `i`th CEL expression of a [`template`]: a control character no
/// message contains.
fn slot(i: usize) -> String {
    format!("\u{1}{i}\u{1}")
}

/// `text` as a CEL string expression, with each `slot(i)` replaced by `exprs[i]` (a
/// CEL string expression).
pub fn template(text: &str, exprs: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = text;
    loop {
        let next = exprs
            .iter()
            .enumerate()
            .filter_map(|(i, _)| rest.find(&slot(i)).map(|at| (at, i)))
            .min();
        match next {
            Some((at, i)) => {
                if at > 0 {
                    parts.push(cel::quote(&rest[..at]));
                }
                parts.push(format!("({})", exprs[i]));
                rest = &rest[at + slot(i).len()..];
            }
            None => {
                if !rest.is_empty() || parts.is_empty() {
                    parts.push(cel::quote(rest));
                }
                break;
            }
        }
    }
    parts.join(" + ")
}

/// The kind of volume `v` as a CEL string: a door type's field, `csi`, `ephemeral`,
/// `contained` or `unknown`, looked for in the order of [`doors::kind`].
fn kind_of(v: &str) -> String {
    let mut cases: Vec<(String, String)> = InlineVolumeType::ALL
        .iter()
        .map(|t| (format!("has({v}.{})", t.field()), cel::quote(t.field())))
        .collect();
    cases.push((format!("has({v}.csi)"), "'csi'".into()));
    cases.push((format!("has({v}.ephemeral)"), "'ephemeral'".into()));
    let contained: Vec<String> = doors::CONTAINED
        .iter()
        .map(|field| format!("has({v}.{field})"))
        .collect();
    cases.push((
        format!("({})", contained.join(" || ")),
        "'contained'".into(),
    ));
    let mut expression = "'unknown'".to_string();
    for (condition, value) in cases.into_iter().rev() {
        expression = format!("{condition} ? {value} : ({expression})");
    }
    expression
}

/// The variable saying every volume of the pod is of a contained type (no door, no
/// CSI, no ephemeral claim): what the checks of volumes look at first.
pub const DOORS_CONTAINED: &str = "doorsContained";

/// The variables and validations refusing a pod's side doors: host network, and
/// inline volumes the enclave's `spec.podSecurity` does not allow. `subject` is the CEL
/// naming the pod as the webhook does; `tail` ends every message.
pub fn pod_doors(
    policy: &str,
    enclave: &ResolvedEnclave,
    subject: &str,
) -> (Vec<Variable>, Vec<(String, String)>) {
    let allowed: &PodSecurity = &enclave.enclave.spec.pod_security;
    let head = format!(
        "{} + {subject} + ': '",
        cel::quote(&format!("policy {policy}: "))
    );
    let tail = cel::quote(&format!(
        "; DataEnclave {} keeps the data of pods in its scope behind its fence and on its storage",
        enclave.name()
    ));
    let variables = vec![
        Variable {
            name: "doorVolumes".into(),
            expression: "has(object.spec.volumes) ? object.spec.volumes : []".into(),
        },
        // Every volume of a type that reaches nothing by itself: the common case, and
        // nothing else to look at. A validating policy sees the pod after the API
        // server's own validation, which allows one type per volume, so a volume with
        // a contained type has no other.
        Variable {
            name: DOORS_CONTAINED.into(),
            expression: format!(
                "variables.doorVolumes.all(v, {})",
                doors::CONTAINED
                    .iter()
                    .map(|field| format!("has(v.{field})"))
                    .collect::<Vec<_>>()
                    .join(" || ")
            ),
        },
        Variable {
            name: "doorKinds".into(),
            expression: format!("variables.doorVolumes.map(v, {})", kind_of("v")),
        },
        Variable {
            name: "doorRefused".into(),
            expression: {
                let mut fine: Vec<String> = vec!["'contained'".into(), "'ephemeral'".into()];
                fine.extend(
                    allowed
                        .allowed_volume_types
                        .iter()
                        .map(|t| cel::quote(t.field())),
                );
                format!(
                    "lists.range(size(variables.doorKinds)).filter(i, !(variables.doorKinds[i] in [{}] || (variables.doorKinds[i] == 'csi' && variables.doorVolumes[i].csi.driver in {})))",
                    fine.join(", "),
                    cel::strings(&allowed.allowed_csi_drivers)
                )
            },
        },
    ];
    let mut checks = Vec::new();
    if !allowed.allow_host_network {
        checks.push((
            "!(has(object.spec.hostNetwork) && object.spec.hostNetwork)".to_string(),
            format!("{head} + {} + {tail}", cel::quote(doors::HOST_NETWORK)),
        ));
    }
    let i = "variables.doorRefused[0]";
    let at = format!("'spec.volumes[' + string({i}) + ']'");
    let name = format!("variables.doorVolumes[{i}].name");
    let kind = format!("variables.doorKinds[{i}]");
    let driver = format!("variables.doorVolumes[{i}].csi.driver");
    let (a, n, x) = (slot(0), slot(1), slot(2));
    let why = format!(
        "{kind} == 'unknown' ? {} : ({kind} == 'csi' ? {} : {})",
        template(&doors::unknown_message(&a, &n), &[&at, &name]),
        template(
            &doors::csi_message(&a, &n, &x, allowed),
            &[&at, &name, &driver]
        ),
        template(
            &doors::door_message(&a, &n, &x, allowed),
            &[&at, &name, &kind]
        ),
    );
    checks.push((
        format!("variables.{DOORS_CONTAINED} || size(variables.doorRefused) == 0"),
        format!("{head} + ({why}) + {tail}"),
    ));
    (variables, checks)
}

/// The CEL judging the claims in the list variable `claims` (maps of `name`,
/// `annotations` and `spec`) as [`volumes::Storage::claim_outside`] does, with the
/// enclave's volumes in `volume_chunks` variables of [`super::VOLUMES`]. Returns the
/// variable holding the claims outside (named `<claims>Outside`) and the CEL string
/// saying why the first of them is.
pub fn claims_outside(
    claims: &str,
    classes: &[String],
    default_class: Option<&str>,
    volume_chunks: usize,
) -> (Variable, String) {
    let beta = cel::quote(BETA_CLASS_ANNOTATION);
    let allowed = volumes::allowed_classes(classes);
    let in_classes = cel::strings(classes);
    let in_volumes = cel::in_map("c.spec.volumeName", super::VOLUMES, volume_chunks);
    let default_inside = default_class.is_some_and(|d| classes.iter().any(|c| c == d));
    let outside = Variable {
        name: format!("{claims}Outside"),
        expression: format!(
            "variables.{claims}.filter(c, ({beta} in c.annotations && has(c.spec.storageClassName) && c.annotations[{beta}] != c.spec.storageClassName) || (has(c.spec.volumeName) && c.spec.volumeName != '' ? !{in_volumes} : ({beta} in c.annotations ? !(c.annotations[{beta}] in {in_classes}) : (has(c.spec.storageClassName) ? !(c.spec.storageClassName in {in_classes}) : {}))))",
            !default_inside
        ),
    };
    let o = format!("variables.{claims}Outside[0]");
    let annotated = format!("{o}.annotations[{beta}]");
    let field = format!("{o}.spec.storageClassName");
    let (a, b) = (slot(0), slot(1));
    let default_why = match default_class {
        Some(class) => cel::quote(&volumes::class_outside(
            class,
            ClassSource::Default,
            &allowed,
        )),
        None => cel::quote(&volumes::no_class(&allowed)),
    };
    // In parentheses: it is concatenated into messages, and `+` binds before `?:`.
    let why = format!(
        "(({beta} in {o}.annotations && has({field}) && {annotated} != {field}) ? {} : ((has({o}.spec.volumeName) && {o}.spec.volumeName != '') ? 'it names PersistentVolume ' + {o}.spec.volumeName + ', which is not a volume of the enclave (or does not exist)' : ({beta} in {o}.annotations ? {} : (has({field}) ? {} : {default_why}))))",
        template(&volumes::disagreement(&a, &b), &[&annotated, &field]),
        template(
            &volumes::class_outside(&a, ClassSource::Annotation, &allowed),
            &[&annotated]
        ),
        template(
            &volumes::class_outside(&a, ClassSource::Field, &allowed),
            &[&field]
        ),
    );
    (outside, why)
}

/// The claims of a pod's generic ephemeral volumes, as the list [`claims_outside`]
/// reads, named as the webhook names them (`spec.volumes[i].ephemeral (volume v)`).
/// Reads the `doorVolumes` and `doorKinds` of [`pod_doors`].
pub const EPHEMERAL_CLAIMS: &str = "lists.range(size(variables.doorKinds)).filter(i, variables.doorKinds[i] == 'ephemeral').map(i, {'name': dyn('spec.volumes[' + string(i) + '].ephemeral (volume ' + variables.doorVolumes[i].name + ')'), 'annotations': dyn(has(variables.doorVolumes[i].ephemeral.volumeClaimTemplate) && has(variables.doorVolumes[i].ephemeral.volumeClaimTemplate.metadata) && has(variables.doorVolumes[i].ephemeral.volumeClaimTemplate.metadata.annotations) ? variables.doorVolumes[i].ephemeral.volumeClaimTemplate.metadata.annotations : {}), 'spec': has(variables.doorVolumes[i].ephemeral.volumeClaimTemplate) ? dyn(variables.doorVolumes[i].ephemeral.volumeClaimTemplate.spec) : dyn({})})";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_splice_expressions_into_quoted_text() {
        assert_eq!(
            template(&format!("a {} b '{}'", slot(0), slot(1)), &["x", "y"]),
            "'a ' + (x) + ' b \\'' + (y) + '\\''"
        );
        assert_eq!(template("plain", &[]), "'plain'");
        assert_eq!(template(&slot(0), &["x"]), "(x)");
    }

    #[test]
    fn every_door_type_is_looked_for_in_the_webhooks_order() {
        let cel = kind_of("v");
        let mut last = 0;
        for t in InlineVolumeType::ALL {
            let at = cel
                .find(&format!("has(v.{})", t.field()))
                .unwrap_or_else(|| panic!("{} missing", t.field()));
            assert!(at >= last, "{} out of order", t.field());
            last = at;
        }
        assert!(cel.find("has(v.csi)").is_some_and(|at| at > last));
        assert!(cel.contains("'unknown'"));
    }
}
