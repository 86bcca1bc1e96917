use super::*;
use proptest::prelude::*;

const SITE: &str = "node-restriction.kubernetes.io/enclave-site";
const ZONE: &str = "topology.kubernetes.io/zone";

fn spec(yaml: &str) -> PodSpec {
    serde_yaml::from_str(yaml).expect("pod spec fixture parses")
}

fn selector(yaml: &str) -> LabelSelector {
    serde_yaml::from_str(yaml).expect("selector fixture parses")
}

fn terms(yaml: &str) -> Vec<NodeSelectorTerm> {
    serde_yaml::from_str(yaml).expect("terms fixture parses")
}

fn affinity(yaml: &str) -> Affinity {
    serde_yaml::from_str(yaml).expect("affinity fixture parses")
}

fn site_selectors() -> Vec<LabelSelector> {
    vec![
        selector(&format!("matchLabels: {{{SITE}: dublin}}")),
        selector(&format!("matchLabels: {{{SITE}: norway}}")),
    ]
}

fn enclave() -> Vec<NodeSelectorTerm> {
    site_terms(&site_selectors()).expect("valid sites")
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
        .expect("required node affinity")
        .node_selector_terms
}

fn with_affinity(spec: &PodSpec, affinity: Option<Affinity>) -> PodSpec {
    let mut spec = spec.clone();
    if let Some(affinity) = affinity {
        spec.affinity = Some(affinity);
    }
    spec
}

#[test]
fn no_affinity_gets_one_term_per_site() {
    let constrained = constrain(&spec("containers: []"), &enclave(), &[]).expect("changed");
    assert_eq!(
        constrained,
        affinity(&format!(
            "
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
    - matchExpressions: [{{key: {SITE}, operator: In, values: [dublin]}}]
    - matchExpressions: [{{key: {SITE}, operator: In, values: [norway]}}]
"
        ))
    );
}

#[test]
fn two_ored_terms_cross_two_sites_into_four_and_keep_the_rest() {
    let pod = spec(&format!(
        "
containers: []
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions: [{{key: {ZONE}, operator: In, values: [eu-west-1a]}}]
      - matchExpressions: [{{key: {ZONE}, operator: In, values: [us-east-1a]}}]
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 7
      preference: {{matchExpressions: [{{key: disk, operator: In, values: [ssd]}}]}}
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
    - {{topologyKey: {ZONE}, labelSelector: {{matchLabels: {{app: db}}}}}}
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
    - {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: x}}}}}}
"
    ));
    let constrained = constrain(&pod, &enclave(), &[]).expect("changed");
    let t = |zone: &str, site: &str| {
        format!(
            "- matchExpressions: [{{key: {ZONE}, operator: In, values: [{zone}]}}, {{key: {SITE}, operator: In, values: [{site}]}}]\n"
        )
    };
    // Site by site: what the native engine writes as one map per site.
    let expected = terms(
        &[
            t("eu-west-1a", "dublin"),
            t("us-east-1a", "dublin"),
            t("eu-west-1a", "norway"),
            t("us-east-1a", "norway"),
        ]
        .concat(),
    );
    assert_eq!(required(&constrained), expected.as_slice());
    let original = pod.affinity.as_ref().expect("affinity");
    assert_eq!(constrained.pod_affinity, original.pod_affinity);
    assert_eq!(constrained.pod_anti_affinity, original.pod_anti_affinity);
    assert_eq!(
        constrained.node_affinity.as_ref().and_then(|n| n
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()),
        original.node_affinity.as_ref().and_then(|n| n
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()),
    );
    let constrained_pod = with_affinity(&pod, Some(constrained));
    // Neither of the pod's own terms escapes the enclave, and neither is lost.
    assert!(pod_fits_node(
        &constrained_pod,
        "n",
        &labels(&[(ZONE, "us-east-1a"), (SITE, "norway")])
    ));
    assert!(!pod_fits_node(
        &constrained_pod,
        "n",
        &labels(&[(ZONE, "us-east-1a"), (SITE, "virginia")])
    ));
    assert!(!pod_fits_node(
        &constrained_pod,
        "n",
        &labels(&[(ZONE, "us-east-1b"), (SITE, "dublin")])
    ));
}

#[test]
fn appending_to_one_term_would_let_the_other_escape() {
    // The bug the cross product exists to avoid, pinned down: T1∧S ∨ T2 admits T2 nodes
    // outside the enclave.
    let pod = spec(&format!(
        "
containers: []
affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [
  {{matchExpressions: [{{key: {ZONE}, operator: In, values: [a]}}]}},
  {{matchExpressions: [{{key: {ZONE}, operator: In, values: [b]}}]}}]}}}}}}
"
    ));
    let outside = labels(&[(ZONE, "b"), (SITE, "virginia")]);
    let mut naive = pod.clone();
    if let Some(t) = naive
        .affinity
        .as_mut()
        .and_then(|a| a.node_affinity.as_mut())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_mut()
        })
    {
        t.node_selector_terms[0] = and(&t.node_selector_terms[0], &enclave()[0]);
    }
    assert!(pod_fits_node(&naive, "n", &outside));
    let constrained = with_affinity(&pod, constrain(&pod, &enclave(), &[]));
    assert!(!pod_fits_node(&constrained, "n", &outside));
}

#[test]
fn constraining_twice_is_constraining_once() {
    let pod = spec(&format!(
        "
containers: []
nodeSelector: {{{ZONE}: eu-west-1a}}
affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [
  {{matchExpressions: [{{key: tier, operator: NotIn, values: [gpu]}}]}},
  {{matchExpressions: [{{key: tier, operator: Exists}}]}}]}}}}}}
"
    ));
    let preferred = vec![(enclave()[1].clone(), 50)];
    let once = with_affinity(&pod, constrain(&pod, &enclave(), &preferred));
    assert_ne!(once, pod);
    assert_eq!(constrain(&once, &enclave(), &preferred), None);
    assert!(implies_enclave(&once, &enclave()));
}

#[test]
fn a_pod_already_inside_is_left_alone() {
    let on_dublin = spec(&format!(
        "containers: []\nnodeSelector: {{{SITE}: dublin, {ZONE}: eu-west-1a}}"
    ));
    assert!(implies_enclave(&on_dublin, &enclave()));
    assert_eq!(constrain(&on_dublin, &enclave(), &[]), None);
    let by_affinity = spec(&format!(
        "
containers: []
affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [
  {{matchExpressions: [{{key: {SITE}, operator: In, values: [dublin]}}]}},
  {{matchExpressions: [{{key: {SITE}, operator: In, values: [norway]}}, {{key: {ZONE}, operator: Exists}}]}}]}}}}}}
"
    ));
    assert_eq!(constrain(&by_affinity, &enclave(), &[]), None);
    // One term inside and one outside: not implied.
    let half = spec(&format!(
        "
containers: []
affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [
  {{matchExpressions: [{{key: {SITE}, operator: In, values: [dublin]}}]}},
  {{matchExpressions: [{{key: {ZONE}, operator: Exists}}]}}]}}}}}}
"
    ));
    assert!(!implies_enclave(&half, &enclave()));
}

#[test]
fn implication_follows_the_operator_rules() {
    let r = |op: &str, vals: &[&str]| {
        requirement(
            "k",
            op,
            (!vals.is_empty()).then(|| vals.iter().map(|v| v.to_string()).collect()),
        )
    };
    let yes = [
        (r(IN, &["a"]), r(IN, &["a", "b"])),
        (r(IN, &["a"]), r(EXISTS, &[])),
        (r(EXISTS, &[]), r(EXISTS, &[])),
        (r(NOT_IN, &["a", "b"]), r(NOT_IN, &["a"])),
        (r(IN, &["c"]), r(NOT_IN, &["a", "b"])),
        (r(DOES_NOT_EXIST, &[]), r(DOES_NOT_EXIST, &[])),
        (r(DOES_NOT_EXIST, &[]), r(NOT_IN, &["a"])),
    ];
    for (have, want) in &yes {
        assert!(implies_requirement(have, want), "{have:?} ⇒ {want:?}");
    }
    let no = [
        (r(IN, &["a", "c"]), r(IN, &["a", "b"])),
        (r(NOT_IN, &["a"]), r(EXISTS, &[])),
        (r(NOT_IN, &["a"]), r(NOT_IN, &["a", "b"])),
        (r(IN, &["a"]), r(NOT_IN, &["a"])),
        (r(EXISTS, &[]), r(IN, &["a"])),
        (r(DOES_NOT_EXIST, &[]), r(EXISTS, &[])),
        (r(IN, &["a"]), r(NOT_IN, &[])),
    ];
    for (have, want) in &no {
        assert!(!implies_requirement(have, want), "{have:?} ⇏ {want:?}");
    }
    let mut other_key = r(IN, &["a"]);
    other_key.key = "other".into();
    assert!(!implies_requirement(&other_key, &r(IN, &["a"])));
}

#[test]
fn satisfiability_detects_each_contradiction() {
    let sites = enclave();
    let virginia = spec(&format!(
        "containers: []\nnodeSelector: {{{SITE}: virginia}}"
    ));
    assert!(!satisfiable_in_enclave(&virginia, &sites, &|_| true));
    let zone = spec(&format!(
        "containers: []\nnodeSelector: {{{ZONE}: eu-west-1b}}"
    ));
    assert!(satisfiable_in_enclave(&zone, &sites, &|_| true));
    let pod = |exprs: &str| {
        spec(&format!(
            "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: {exprs}}}]}}}}}}"
        ))
    };
    let unsat = [
        format!("[{{key: {SITE}, operator: NotIn, values: [dublin, norway]}}]"),
        format!("[{{key: {SITE}, operator: DoesNotExist}}]"),
        format!("[{{key: {SITE}, operator: In, values: [virginia, ohio]}}]"),
        // No site name is an integer.
        format!("[{{key: {SITE}, operator: Gt, values: ['5']}}]"),
    ];
    for exprs in &unsat {
        assert!(
            !satisfiable_in_enclave(&pod(exprs), &sites, &|_| true),
            "{exprs}"
        );
    }
    let sat = [
        format!("[{{key: {SITE}, operator: NotIn, values: [dublin]}}]"),
        format!("[{{key: {SITE}, operator: In, values: [virginia, norway]}}]"),
        format!("[{{key: {SITE}, operator: Exists}}]"),
        format!("[{{key: {ZONE}, operator: Gt, values: ['5']}}]"),
        format!(
            "[{{key: {ZONE}, operator: Gt, values: ['1']}}, {{key: {ZONE}, operator: Lt, values: ['3']}}]"
        ),
    ];
    for exprs in &sat {
        assert!(
            satisfiable_in_enclave(&pod(exprs), &sites, &|_| true),
            "{exprs}"
        );
    }
    // A site given by label presence: DoesNotExist contradicts Exists; In of the enclave's
    // and NotIn of all of them contradict.
    let present = site_terms(&[selector(&format!(
        "matchExpressions: [{{key: {SITE}, operator: Exists}}]"
    ))])
    .expect("valid");
    assert!(!satisfiable_in_enclave(
        &pod(&format!("[{{key: {SITE}, operator: DoesNotExist}}]")),
        &present,
        &|_| true
    ));
    // Contradictions on the site's own key are found, whatever their form.
    let contradictions = [
        format!(
            "[{{key: {SITE}, operator: In, values: [a]}}, {{key: {SITE}, operator: In, values: [b]}}]"
        ),
        format!(
            "[{{key: {SITE}, operator: In, values: [a, b]}}, {{key: {SITE}, operator: NotIn, values: [b, a]}}]"
        ),
        format!(
            "[{{key: {SITE}, operator: In, values: ['1', x]}}, {{key: {SITE}, operator: Gt, values: ['2']}}]"
        ),
        format!("[{{key: {SITE}, operator: Gt, values: [x]}}]"),
    ];
    for exprs in &contradictions {
        assert!(
            !satisfiable_in_enclave(&pod(exprs), &present, &|_| true),
            "{exprs}"
        );
    }
    // Contradictions among the pod's other labels are the scheduler's to find (and the
    // controller's to report): admission judges the site's keys only, as CEL can.
    for exprs in [
        format!(
            "[{{key: {ZONE}, operator: In, values: [a]}}, {{key: {ZONE}, operator: DoesNotExist}}]"
        ),
        format!(
            "[{{key: {ZONE}, operator: Gt, values: ['2']}}, {{key: {ZONE}, operator: Lt, values: ['3']}}]"
        ),
    ] {
        assert!(
            satisfiable_in_enclave(&pod(&exprs), &present, &|_| true),
            "{exprs}"
        );
    }
    // matchFields pin the pod to a named node: satisfiable only when it is an enclave node.
    let pinned = |fields: &str| {
        spec(&format!(
            "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchFields: {fields}}}]}}}}}}"
        ))
    };
    let inside = |name: &str| name == "dublin-a";
    let to = |node: &str| {
        pinned(&format!(
            "[{{key: metadata.name, operator: In, values: [{node}]}}]"
        ))
    };
    assert!(satisfiable_in_enclave(&to("dublin-a"), &sites, &inside));
    assert!(!satisfiable_in_enclave(&to("virginia-a"), &sites, &inside));
    assert!(
        !satisfiable_in_enclave(
            &pinned(
                "[{key: metadata.name, operator: In, values: [dublin-a]}, {key: metadata.name, operator: In, values: [dublin-b]}]"
            ),
            &sites,
            &|_| true
        ),
        "two different pins contradict"
    );
    assert!(!satisfiable_in_enclave(
        &pinned(
            "[{key: metadata.name, operator: In, values: [dublin-a]}, {key: metadata.name, operator: NotIn, values: [dublin-a]}]"
        ),
        &sites,
        &inside
    ));
    assert!(
        satisfiable_in_enclave(
            &pinned("[{key: metadata.name, operator: NotIn, values: [dublin-a]}]"),
            &sites,
            &|_| false
        ),
        "NotIn alone excludes one node, not the enclave"
    );
    // One contradictory term does not sink the others.
    let two = spec(&format!(
        "
containers: []
affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [
  {{matchExpressions: [{{key: {SITE}, operator: In, values: [virginia]}}]}},
  {{matchExpressions: [{{key: {ZONE}, operator: Exists}}]}}]}}}}}}
"
    ));
    assert!(satisfiable_in_enclave(&two, &sites, &|_| true));
}

#[test]
fn the_product_is_bounded_and_counted_as_both_engines_count_it() {
    let sites = enclave();
    assert_eq!(product_size(&spec("containers: []"), &sites), (2, 2));
    let two = spec(&format!(
        "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: [{{key: {ZONE}, operator: Exists}}, {{key: a, operator: Exists}}]}}, {{}}, {{matchExpressions: [{{key: {ZONE}, operator: Exists}}]}}]}}}}}}"
    ));
    // Two non-empty terms (3 requirements) × 2 sites of 1 requirement each.
    assert_eq!(product_size(&two, &sites), (4, 3 * 2 + 2 * 2));
    assert!(within_bounds(&two, &sites).is_ok());
    let many_terms: String = (0..200)
        .map(|i| format!("{{matchExpressions: [{{key: k{i}, operator: Exists}}]}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let wide = spec(&format!(
        "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{many_terms}]}}}}}}"
    ));
    let refused = within_bounds(&wide, &sites).expect_err("400 terms");
    assert!(
        refused.contains("400 node selector terms") && refused.contains("256"),
        "{refused}"
    );
    let many_reqs: String = (0..600)
        .map(|i| format!("{{key: k{i}, operator: Exists}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let deep = spec(&format!(
        "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: [{many_reqs}]}}]}}}}}}"
    ));
    let refused = within_bounds(&deep, &sites).expect_err("1202 requirements");
    assert!(refused.contains("requirements"), "{refused}");
}

#[test]
fn site_expressions_carry_over_in_a_deterministic_order() {
    let sel = selector(
        "
matchLabels: {zone: b, region: eu}
matchExpressions:
- {key: tier, operator: NotIn, values: [gpu, arm]}
- {key: legacy, operator: DoesNotExist}
",
    );
    let expected = terms(
        "
- matchExpressions:
  - {key: region, operator: In, values: [eu]}
  - {key: zone, operator: In, values: [b]}
  - {key: tier, operator: NotIn, values: [gpu, arm]}
  - {key: legacy, operator: DoesNotExist}
",
    );
    assert_eq!(site_term(0, &sel).expect("valid"), expected[0]);
}

#[test]
fn an_empty_site_selector_is_every_node() {
    let all = site_term(0, &LabelSelector::default()).expect("valid");
    assert_eq!(all, NodeSelectorTerm::default());
    let sites = vec![enclave()[0].clone(), all];
    let anywhere = spec("containers: []");
    assert!(implies_enclave(&anywhere, &sites));
    assert!(satisfiable_in_enclave(&anywhere, &sites, &|_| true));
    assert_eq!(
        constrain(&anywhere, &sites, &[]),
        None,
        "never writes an empty term"
    );
    assert!(crate::selector::matches(
        &LabelSelector::default(),
        &labels(&[])
    ));
}

#[test]
fn bad_site_selectors_are_named() {
    let gt = selector("matchExpressions: [{key: a, operator: Gt, values: ['1']}]");
    let error = site_terms(&[site_selectors()[0].clone(), gt])
        .expect_err("Gt is not a label selector operator");
    assert_eq!(
        error.to_string(),
        "sites[1].nodeSelector uses operator \"Gt\"; allowed: In, NotIn, Exists, DoesNotExist"
    );
    assert_eq!(
        error,
        PlacementError::UnsupportedOperator {
            site: 1,
            operator: "Gt".into()
        }
    );
    let no_values = selector("matchExpressions: [{key: a, operator: In, values: []}]");
    assert_eq!(
        site_term(2, &no_values)
            .expect_err("In needs values")
            .to_string(),
        "sites[2].nodeSelector: operator In on key \"a\" needs at least one value"
    );
    let with_values = selector("matchExpressions: [{key: a, operator: Exists, values: [x]}]");
    assert_eq!(
        site_term(0, &with_values)
            .expect_err("Exists takes none")
            .to_string(),
        "sites[0].nodeSelector: operator Exists on key \"a\" takes no values"
    );
}

#[test]
fn empty_pod_terms_match_nothing_and_do_not_widen_the_pod() {
    let pod = spec(&format!(
        "
containers: []
affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [
  {{}},
  {{matchExpressions: [{{key: {ZONE}, operator: In, values: [a]}}]}}]}}}}}}
"
    ));
    assert!(!pod_fits_node(
        &pod,
        "n",
        &labels(&[(ZONE, "b"), (SITE, "dublin")])
    ));
    let constrained = constrain(&pod, &enclave(), &[]).expect("changed");
    assert_eq!(
        required(&constrained),
        cross_product(
            &terms(&format!(
                "[{{matchExpressions: [{{key: {ZONE}, operator: In, values: [a]}}]}}]"
            )),
            &enclave()
        )
        .as_slice()
    );
    let constrained = with_affinity(&pod, Some(constrained));
    assert!(!pod_fits_node(
        &constrained,
        "n",
        &labels(&[(ZONE, "b"), (SITE, "dublin")])
    ));
    // Only empty terms: the pod fits nowhere, is left as it is, and is unsatisfiable.
    let nowhere = spec(
        "containers: []\naffinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{}]}}}",
    );
    assert_eq!(constrain(&nowhere, &enclave(), &[]), None);
    assert!(!satisfiable_in_enclave(&nowhere, &enclave(), &|_| true));
    assert!(!pod_fits_node(&nowhere, "n", &labels(&[(SITE, "dublin")])));
}

#[test]
fn no_sites_is_no_enclave() {
    let pod = spec("containers: []");
    assert_eq!(constrain(&pod, &[], &[]), None);
    assert!(!implies_enclave(&pod, &[]));
    assert!(!satisfiable_in_enclave(&pod, &[], &|_| true));
    assert!(cross_product(&[], &[]).is_empty());
}

#[test]
fn preferences_are_added_once_clamped_and_after_the_pods_own() {
    let pod = spec(&format!(
        "
containers: []
nodeSelector: {{{SITE}: dublin}}
affinity:
  nodeAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 3
      preference: {{matchExpressions: [{{key: {SITE}, operator: In, values: [norway]}}]}}
    - weight: 9
      preference: {{matchExpressions: [{{key: disk, operator: In, values: [ssd]}}]}}
"
    ));
    let sites = enclave();
    let preferred = vec![
        (sites[1].clone(), 80),  // present with another weight: kept as it is
        (sites[0].clone(), 500), // clamped
        (sites[0].clone(), 20),  // repeated: once
        (NodeSelectorTerm::default(), 10), // no-op for the scheduler: skipped
    ];
    let constrained = constrain(&pod, &sites, &preferred).expect("changed");
    let node_affinity = constrained.node_affinity.as_ref().expect("node affinity");
    assert_eq!(
        node_affinity.required_during_scheduling_ignored_during_execution, None,
        "nodeSelector already implies"
    );
    let weights: Vec<i32> = node_affinity
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten()
        .map(|p| p.weight)
        .collect();
    assert_eq!(weights, [3, 9, 100]);
    let again = with_affinity(&pod, Some(constrained));
    assert_eq!(constrain(&again, &sites, &preferred), None);
    // Only empty preferences and already inside: nothing to do, and no empty list appears.
    assert_eq!(
        constrain(&pod, &sites, &[(NodeSelectorTerm::default(), 5)]),
        None
    );
}

#[test]
fn terms_match_nodes_as_the_scheduler_does() {
    let node = labels(&[("cpus", "8"), ("zone", "a"), ("odd", "x7")]);
    let one = |yaml: &str| terms(&format!("[{yaml}]")).remove(0);
    let cases = [
        (
            "{matchExpressions: [{key: cpus, operator: Gt, values: ['4']}]}",
            true,
        ),
        (
            "{matchExpressions: [{key: cpus, operator: Gt, values: ['8']}]}",
            false,
        ),
        (
            "{matchExpressions: [{key: cpus, operator: Lt, values: ['16']}]}",
            true,
        ),
        (
            "{matchExpressions: [{key: odd, operator: Lt, values: ['16']}]}",
            false,
        ),
        (
            "{matchExpressions: [{key: missing, operator: Lt, values: ['16']}]}",
            false,
        ),
        (
            "{matchExpressions: [{key: cpus, operator: Gt, values: [four]}]}",
            false,
        ),
        (
            "{matchExpressions: [{key: zone, operator: In, values: [a, b]}, {key: gpu, operator: DoesNotExist}]}",
            true,
        ),
        (
            "{matchExpressions: [{key: zone, operator: NotIn, values: [a]}]}",
            false,
        ),
        (
            "{matchExpressions: [{key: gpu, operator: NotIn, values: [a]}]}",
            true,
        ),
        ("{matchExpressions: [{key: zone, operator: Exists}]}", true),
        (
            "{matchExpressions: [{key: zone, operator: Exists, values: [a]}]}",
            false,
        ),
        (
            "{matchExpressions: [{key: zone, operator: Equals, values: [a]}]}",
            false,
        ),
        (
            "{matchFields: [{key: metadata.name, operator: In, values: [n1]}]}",
            true,
        ),
        (
            "{matchFields: [{key: metadata.name, operator: NotIn, values: [n1]}]}",
            false,
        ),
        (
            "{matchFields: [{key: metadata.name, operator: NotIn, values: [n2]}]}",
            true,
        ),
        (
            "{matchFields: [{key: metadata.uid, operator: NotIn, values: [n2]}]}",
            false,
        ),
        (
            "{matchFields: [{key: metadata.name, operator: In, values: [n1]}], matchExpressions: [{key: zone, operator: In, values: [b]}]}",
            false,
        ),
        ("{}", false),
        ("{matchExpressions: [], matchFields: []}", false),
    ];
    for (yaml, expected) in cases {
        assert_eq!(
            term_matches_node(&one(yaml), "n1", &node),
            expected,
            "{yaml}"
        );
    }
}

#[test]
fn a_pod_fits_when_its_node_selector_and_one_term_hold() {
    let pod = spec(
        "
containers: []
nodeSelector: {disk: ssd}
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [
  {matchExpressions: [{key: zone, operator: In, values: [a]}]},
  {matchFields: [{key: metadata.name, operator: In, values: [n9]}]}]}}}
",
    );
    assert!(pod_fits_node(
        &pod,
        "n1",
        &labels(&[("disk", "ssd"), ("zone", "a")])
    ));
    assert!(pod_fits_node(
        &pod,
        "n9",
        &labels(&[("disk", "ssd"), ("zone", "b")])
    ));
    assert!(!pod_fits_node(
        &pod,
        "n1",
        &labels(&[("disk", "ssd"), ("zone", "b")])
    ));
    assert!(!pod_fits_node(
        &pod,
        "n9",
        &labels(&[("disk", "hdd"), ("zone", "a")])
    ));
    assert!(pod_fits_node(&spec("containers: []"), "n", &labels(&[])));
}

#[test]
fn nodes_belong_to_sites_by_label_selector() {
    let sites = vec![
        selector("matchLabels: {site: dublin}"),
        selector("matchExpressions: [{key: site, operator: In, values: [dublin, cork]}]"),
        selector(
            "matchExpressions: [{key: site, operator: NotIn, values: [virginia]}, {key: gpu, operator: DoesNotExist}]",
        ),
    ];
    assert_eq!(
        site_of_node(&sites, &labels(&[("site", "dublin")])),
        Some(0)
    );
    assert_eq!(site_of_node(&sites, &labels(&[("site", "cork")])), Some(1));
    assert_eq!(site_of_node(&sites, &labels(&[])), Some(2));
    assert_eq!(site_of_node(&sites, &labels(&[("site", "virginia")])), None);
    assert_eq!(
        site_of_node(&sites, &labels(&[("site", "oslo"), ("gpu", "1")])),
        None
    );
    assert!(!crate::selector::matches(
        &selector("matchExpressions: [{key: site, operator: Gt, values: ['1']}]"),
        &labels(&[("site", "2")])
    ));
    assert!(!crate::selector::matches(
        &selector("matchExpressions: [{key: site, operator: NotIn, values: []}]"),
        &labels(&[])
    ));
    assert!(crate::selector::matches(
        &selector("matchExpressions: [{key: site, operator: Exists}]"),
        &labels(&[("site", "")])
    ));
}

// Property tests over small alphabets, so that keys, values and node names collide often.
const KEYS: &[&str] = &["site", "zone", "tier"];
const VALUES: &[&str] = &["a", "b", "1", "5"];
const BOUNDS: &[&str] = &["0", "1", "3", "5"];
const NODES: &[&str] = &["n1", "n2"];

fn pick(alphabet: &'static [&'static str]) -> impl Strategy<Value = String> {
    (0..alphabet.len()).prop_map(move |i| alphabet[i].to_string())
}

fn some_values() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(pick(VALUES), 1..3)
}

/// Any well-formed node selector requirement, Gt/Lt included.
fn arb_requirement() -> impl Strategy<Value = NodeSelectorRequirement> {
    prop_oneof![
        (pick(KEYS), some_values()).prop_map(|(k, v)| requirement(&k, IN, Some(v))),
        (pick(KEYS), some_values()).prop_map(|(k, v)| requirement(&k, NOT_IN, Some(v))),
        pick(KEYS).prop_map(|k| requirement(&k, EXISTS, None)),
        pick(KEYS).prop_map(|k| requirement(&k, DOES_NOT_EXIST, None)),
        (pick(KEYS), pick(BOUNDS)).prop_map(|(k, b)| requirement(&k, GT, Some(vec![b]))),
        (pick(KEYS), pick(BOUNDS)).prop_map(|(k, b)| requirement(&k, LT, Some(vec![b]))),
    ]
}

fn arb_field() -> impl Strategy<Value = NodeSelectorRequirement> {
    (prop::bool::ANY, pick(NODES)).prop_map(|(is_in, n)| {
        requirement(
            NODE_NAME_FIELD,
            if is_in { IN } else { NOT_IN },
            Some(vec![n]),
        )
    })
}

/// A pod's term, possibly empty (which the scheduler matches with nothing).
fn arb_term() -> impl Strategy<Value = NodeSelectorTerm> {
    (
        proptest::collection::vec(arb_requirement(), 0..4),
        proptest::collection::vec(arb_field(), 0..2),
    )
        .prop_map(|(exprs, fields)| NodeSelectorTerm {
            match_expressions: (!exprs.is_empty()).then_some(exprs),
            match_fields: (!fields.is_empty()).then_some(fields),
        })
}

fn arb_spec() -> impl Strategy<Value = PodSpec> {
    (
        proptest::option::weighted(0.8, proptest::collection::vec(arb_term(), 0..4)),
        proptest::collection::btree_map(pick(KEYS), pick(VALUES), 0..3),
        proptest::option::of(proptest::collection::vec((arb_term(), 1..=100i32), 0..2)),
        prop::bool::ANY,
    )
        .prop_map(|(required, node_selector, preferred, anti)| {
            let node_affinity = (required.is_some() || preferred.is_some()).then(|| NodeAffinity {
                required_during_scheduling_ignored_during_execution: required.map(
                    |node_selector_terms| NodeSelector {
                        node_selector_terms,
                    },
                ),
                preferred_during_scheduling_ignored_during_execution: preferred.map(|p| {
                    p.into_iter()
                        .map(|(preference, weight)| PreferredSchedulingTerm { preference, weight })
                        .collect()
                }),
            });
            let pod_anti_affinity = anti.then(|| {
                serde_yaml::from_str(
                    "requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: zone}]",
                )
                .expect("anti-affinity")
            });
            PodSpec {
                affinity: (node_affinity.is_some() || pod_anti_affinity.is_some()).then(|| {
                    Affinity {
                        node_affinity,
                        pod_anti_affinity,
                        ..Default::default()
                    }
                }),
                node_selector: (!node_selector.is_empty()).then_some(node_selector),
                ..Default::default()
            }
        })
}

fn arb_site_selector() -> impl Strategy<Value = LabelSelector> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    let expr = prop_oneof![
        (pick(KEYS), some_values()).prop_map(|(k, v)| (k, IN, Some(v))),
        (pick(KEYS), some_values()).prop_map(|(k, v)| (k, NOT_IN, Some(v))),
        pick(KEYS).prop_map(|k| (k, EXISTS, None)),
        pick(KEYS).prop_map(|k| (k, DOES_NOT_EXIST, None)),
    ]
    .prop_map(|(key, op, values)| LabelSelectorRequirement {
        key,
        operator: op.to_string(),
        values,
    });
    (
        proptest::collection::btree_map(pick(KEYS), pick(VALUES), 0..3),
        proptest::collection::vec(expr, 0..3),
    )
        .prop_map(|(labels, exprs)| LabelSelector {
            match_labels: (!labels.is_empty()).then_some(labels),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
}

fn arb_sites() -> impl Strategy<Value = Vec<LabelSelector>> {
    proptest::collection::vec(arb_site_selector(), 1..4)
}

/// Preferred sites as (site index, weight), weights possibly out of range.
fn arb_preferred() -> impl Strategy<Value = Vec<(usize, i32)>> {
    proptest::collection::vec((0..3usize, -5..120i32), 0..3)
}

fn preferences(
    terms: &[NodeSelectorTerm],
    preferred: &[(usize, i32)],
) -> Vec<(NodeSelectorTerm, i32)> {
    preferred
        .iter()
        .filter_map(|(i, w)| Some((terms.get(*i)?.clone(), *w)))
        .collect()
}

fn arb_nodes() -> impl Strategy<Value = Vec<(String, BTreeMap<String, String>)>> {
    proptest::collection::vec(
        (
            pick(NODES),
            proptest::collection::btree_map(pick(KEYS), pick(VALUES), 0..=KEYS.len()),
        ),
        1..10,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_node_fits_the_constrained_pod_iff_it_fits_the_pod_and_a_site(
        spec in arb_spec(), selectors in arb_sites(), preferred in arb_preferred(), nodes in arb_nodes(),
    ) {
        let sites = site_terms(&selectors).expect("generated selectors are valid");
        let constrained = with_affinity(&spec, constrain(&spec, &sites, &preferences(&sites, &preferred)));
        for (name, labels) in &nodes {
            let expected = pod_fits_node(&spec, name, labels) && site_of_node(&selectors, labels).is_some();
            prop_assert_eq!(pod_fits_node(&constrained, name, labels), expected, "node {} {:?}", name, labels);
        }
    }

    #[test]
    fn constraining_is_idempotent_and_keeps_the_rest(
        spec in arb_spec(), selectors in arb_sites(), preferred in arb_preferred(),
    ) {
        let sites = site_terms(&selectors).expect("generated selectors are valid");
        let preferred = preferences(&sites, &preferred);
        let result = constrain(&spec, &sites, &preferred);
        let once = with_affinity(&spec, result.clone());
        prop_assert_eq!(constrain(&once, &sites, &preferred), None);
        prop_assert!(implies_enclave(&once, &sites));
        if let Some(affinity) = result {
            let before = spec.affinity.clone().unwrap_or_default();
            prop_assert_eq!(&affinity.pod_affinity, &before.pod_affinity);
            prop_assert_eq!(&affinity.pod_anti_affinity, &before.pod_anti_affinity);
            let own: Vec<PreferredSchedulingTerm> = before.node_affinity.as_ref()
                .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
            let now = affinity.node_affinity.as_ref().expect("node affinity")
                .preferred_during_scheduling_ignored_during_execution.clone().unwrap_or_default();
            prop_assert_eq!(&now[..own.len()], own.as_slice());
            prop_assert!(now.iter().all(|p| WEIGHTS.contains(&p.weight) || own.contains(p)));
            if let Some(required) = required_terms(&once) {
                prop_assert!(!required.is_empty() || required_terms(&spec) == Some(required));
                prop_assert!(required_terms(&spec) == Some(required) || !required.iter().any(is_empty_term));
            }
        }
    }

    #[test]
    fn unsatisfiable_means_no_node_fits(
        spec in arb_spec(), selectors in arb_sites(), nodes in arb_nodes(),
    ) {
        let sites = site_terms(&selectors).expect("generated selectors are valid");
        let inside = |name: &str| nodes.iter().any(|(n, l)| n == name && site_of_node(&selectors, l).is_some());
        if !satisfiable_in_enclave(&spec, &sites, &inside) {
            let constrained = with_affinity(&spec, constrain(&spec, &sites, &[]));
            for (name, labels) in &nodes {
                prop_assert!(!pod_fits_node(&constrained, name, labels), "node {} {:?} fits a pod judged unsatisfiable", name, labels);
                prop_assert!(!(pod_fits_node(&spec, name, labels) && site_of_node(&selectors, labels).is_some()));
            }
        }
    }

    #[test]
    fn implied_means_every_fitting_node_is_inside(
        spec in arb_spec(), selectors in arb_sites(), nodes in arb_nodes(),
    ) {
        let sites = site_terms(&selectors).expect("generated selectors are valid");
        if implies_enclave(&spec, &sites) {
            for (name, labels) in &nodes {
                prop_assert!(!pod_fits_node(&spec, name, labels) || site_of_node(&selectors, labels).is_some(), "node {} {:?}", name, labels);
            }
        }
    }

    #[test]
    fn a_site_term_selects_what_its_selector_selects(
        selector in arb_site_selector(), nodes in arb_nodes(),
    ) {
        let term = site_term(0, &selector).expect("generated selectors are valid");
        for (name, labels) in &nodes {
            // The algebra's convention: an empty site term is every node.
            let in_term = is_empty_term(&term) || term_matches_node(&term, name, labels);
            prop_assert_eq!(in_term, crate::selector::matches(&selector, labels));
        }
    }
}
