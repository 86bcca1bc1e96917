//! The report as Markdown, for people, and as JSON, for machines. Both are functions of
//! the [`Report`] alone, so the same report always renders to the same bytes.

use std::fmt::Write;

use super::report::{
    ChainObservation, Check, PodReport, PolicyReport, Report, Unreadable, Verdict,
};
use crate::crd::{Enforcement, ExposureHolder, NetworkIsolation};

/// The JSON form: the report's fields, pretty-printed, with a final newline.
pub fn json(report: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(report).map(|mut text| {
        text.push('\n');
        text
    })
}

/// Text safe in a Markdown table cell: no line breaks, pipes escaped.
pub(super) fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// Text safe on one line of a list item.
pub(super) fn line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn verdict(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "**FAIL**",
        Verdict::Unknown => "**UNKNOWN**",
        Verdict::NotApplicable => "n/a",
    }
}

fn check_cell(check: &Check) -> String {
    match (check.verdict, check.findings) {
        (Verdict::Fail, n) if n > 0 => format!("**FAIL** ({n})"),
        (v, _) => verdict(v).to_string(),
    }
}

fn enforcement(e: Enforcement) -> &'static str {
    match e {
        Enforcement::Enforce => "Enforce",
        Enforcement::Audit => "Audit",
    }
}

fn isolation(i: NetworkIsolation) -> &'static str {
    match i {
        NetworkIsolation::Enclave => "Enclave",
        NetworkIsolation::None => "None",
    }
}

fn unreadable_line(out: &mut String, u: &Unreadable) {
    let name = match &u.namespace {
        Some(ns) => format!("{ns}/{}", u.name),
        None => u.name.clone(),
    };
    let _ = writeln!(out, "- {} `{name}`: {}", u.kind, line(&u.error));
}

/// The Markdown form: a summary table first, the chain heads, then one section per
/// policy with its checks, pods and findings.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let summary = &report.summary;
    let _ = writeln!(out, "# Enclave audit report\n");
    let _ = writeln!(out, "- Generated at: {}", report.generated_at);
    let _ = writeln!(out, "- Operator namespace: `{}`", report.operator_namespace);
    let result = if summary.all_green {
        "**all green**".to_string()
    } else {
        format!("**{} finding(s)**", summary.findings)
    };
    let _ = writeln!(
        out,
        "- Result: {result} — {} of {} policies pass, {} pod(s) in scope",
        summary.policies_green, summary.policies, summary.pods_in_scope
    );
    if summary.host_access_namespaces > 0 {
        let _ = writeln!(
            out,
            "- {} namespace(s) may take host access on the enclaves' nodes (listed below, not findings)",
            summary.host_access_namespaces
        );
    }
    if summary.unreadable_out_of_scope > 0 {
        let _ = writeln!(
            out,
            "- {} namespaced object(s) outside every reported scope could not be read (no verdict depends on them)",
            summary.unreadable_out_of_scope
        );
    }

    let _ = writeln!(out, "\n## Summary\n");
    if report.policies.is_empty() {
        let _ = writeln!(out, "No ResidencyPolicy to report.");
    } else {
        let _ = writeln!(
            out,
            "| Policy | Enclave | Mode | Pods | Placement | Volumes | Network | Access | Findings |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | --- | ---: | --- | --- | --- | --- | ---: |"
        );
        for policy in &report.policies {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} | {} | {} | {} | {} | {} |",
                policy.name,
                policy.enclave,
                enforcement(policy.enforcement),
                policy.pods.len(),
                check_cell(&policy.checks.placement),
                check_cell(&policy.checks.volumes),
                check_cell(&policy.checks.network),
                check_cell(&policy.checks.access),
                policy.findings
            );
        }
    }
    if !report.missing_policies.is_empty() {
        let _ = writeln!(
            out,
            "\nPolicies asked for that do not exist (each a finding):\n"
        );
        for name in &report.missing_policies {
            let _ = writeln!(out, "- `{name}`");
        }
    }
    if !report.unreadable.is_empty() {
        let _ = writeln!(
            out,
            "\nCluster-scoped objects that could not be read (each a finding):\n"
        );
        for u in &report.unreadable {
            unreadable_line(&mut out, u);
        }
    }

    let _ = writeln!(out, "\n## Decision log chain heads\n");
    match &report.chain {
        ChainObservation::Read {
            config_map,
            heads,
            problems,
            writers,
            stalled,
        } => {
            let _ = writeln!(
                out,
                "From ConfigMap `{}/{config_map}`; hold these against the stored decision log with `enclave-operator verify-log`.\n",
                report.operator_namespace
            );
            for stall in stalled {
                let _ = writeln!(out, "- **Stalled (a finding):** {}", line(stall));
            }
            if !stalled.is_empty() {
                let _ = writeln!(out);
            }
            if heads.is_empty() {
                let _ = writeln!(out, "No chain has a checkpoint.");
            } else {
                let _ = writeln!(
                    out,
                    "| Chain | Seq | Hash | Time | Checkpoints kept | Writer |"
                );
                let _ = writeln!(out, "| --- | ---: | --- | --- | ---: | --- |");
                for head in heads {
                    let writer = writers.iter().find(|w| w.key == head.chain);
                    let state = match (&head.retired, writer) {
                        (Some(at), _) => format!("retired {at}"),
                        (None, Some(w))
                            if report
                                .generated_at
                                .parse::<jiff::Timestamp>()
                                .is_ok_and(|t| w.live(t)) =>
                        {
                            format!("runs: {}", cell(w.holder.as_deref().unwrap_or("")))
                        }
                        (None, Some(_)) => "gone, not yet retired".to_string(),
                        (None, None) => "no Lease".to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | `{}` | {} | {} | {} |",
                        cell(&head.chain),
                        head.head.seq,
                        head.head.hash,
                        head.head.time,
                        head.checkpoints,
                        state
                    );
                }
            }
            for problem in problems {
                let _ = writeln!(out, "- {}", line(problem));
            }
        }
        ChainObservation::Absent { config_map } => {
            let _ = writeln!(
                out,
                "ConfigMap `{}/{config_map}` does not exist: no operator has checkpointed a decision log there.",
                report.operator_namespace
            );
        }
        ChainObservation::Unreadable { config_map, reason } => {
            let _ = writeln!(
                out,
                "ConfigMap `{}/{config_map}` could not be read: {}",
                report.operator_namespace,
                line(reason)
            );
        }
    }

    if let Some(refusals) = &report.refusals {
        refusals_section(&mut out, refusals);
    }
    if !report.access.is_empty() {
        access_section(&mut out, &report.access);
    }
    if !report.moves.is_empty() {
        super::moves::markdown(&mut out, &report.moves);
    }
    host_access_section(&mut out, &report.host_access);
    for policy in &report.policies {
        policy_section(&mut out, policy);
    }
    out
}

/// The namespaces whose pods may take host access on each enclave's nodes: listed,
/// not findings (see [`Report::host_access`]).
fn host_access_section(out: &mut String, enclaves: &[super::report::EnclaveHostAccess]) {
    if enclaves.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Host access on the enclaves' nodes\n");
    let _ = writeln!(
        out,
        "Pods with `hostPath` volumes, privileged containers, host namespaces or added capabilities read what a node holds, the enclave's pods' data included. Pod Security Admission refuses them where a namespace enforces `baseline` or above (`{}`). Not findings: the API server's default level and its exemptions are not visible here.\n",
        crate::access::host::ENFORCE_LABEL
    );
    for enclave in enclaves {
        if enclave.namespaces.is_empty() {
            let _ = writeln!(
                out,
                "- `{}`: every namespace whose pods may run on its nodes refuses host access",
                enclave.enclave
            );
        } else {
            let names: Vec<String> = enclave
                .namespaces
                .iter()
                .map(|n| format!("`{n}`"))
                .collect();
            let _ = writeln!(
                out,
                "- `{}`: {} namespace(s) do not refuse host access: {}",
                enclave.enclave,
                enclave.namespaces.len(),
                names.join(", ")
            );
        }
    }
}

/// The access grants (who asked, who approved, what was done under them) and the
/// anomalies.
fn access_section(out: &mut String, access: &super::grants::AccessSection) {
    let _ = writeln!(out, "\n## Access grants\n");
    if access.grants.is_empty() {
        let _ = writeln!(out, "No AccessGrant.");
    } else {
        let _ = writeln!(
            out,
            "| Grant | Enclave | Requester | Verbs | Where | Reason | State | Approved by | Until | Uses | Finding |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | ---: | --- |"
        );
        for g in &access.grants {
            let place = if g.pods.is_empty() {
                g.namespaces.join(", ")
            } else {
                format!("{} ({})", g.namespaces.join(", "), g.pods.join(", "))
            };
            let approved = match (&g.approved_by, g.break_glass) {
                (Some(by), true) => format!(
                    "break-glass by {by}{}",
                    g.reviewed_by
                        .as_ref()
                        .map(|r| format!(", acknowledged by {r}"))
                        .unwrap_or_default()
                ),
                (Some(by), false) => by.clone(),
                (None, _) => "-".into(),
            };
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                g.name,
                g.enclave,
                cell(&g.requester),
                g.verbs.join(", "),
                cell(&place),
                cell(&format!(
                    "{}{}",
                    g.reason,
                    g.ticket
                        .as_ref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                )),
                g.state,
                cell(&approved),
                g.expires_at.as_deref().unwrap_or("-"),
                g.uses.map_or("-".to_string(), |u| u.to_string()),
                g.finding.as_deref().map_or("-".to_string(), cell),
            );
        }
    }
    if !access.anomalies.is_empty() {
        let _ = writeln!(out, "\n## Access anomalies\n");
        let _ = writeln!(
            out,
            "| Raised | Enclave | Subject | Reasons | Denied attempts | Lockout |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | ---: | --- |");
        for a in &access.anomalies {
            let lockout = match (a.lockout, a.locked_out) {
                (true, true) => "in force",
                (true, false) => "cleared",
                (false, _) => "-",
            };
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} in {} s | {lockout} |",
                a.raised_at,
                a.enclave,
                cell(&a.user),
                a.reasons.join(", "),
                a.denied_attempts,
                a.window_seconds,
            );
        }
    }
}

/// The refusals of the decision logs given, by engine, then one line each.
fn refusals_section(out: &mut String, refusals: &super::refusals::Refusals) {
    let _ = writeln!(
        out,
        "
## Refusals in the decision log
"
    );
    let files: Vec<String> = refusals.files.iter().map(|f| format!("`{f}`")).collect();
    let _ = writeln!(
        out,
        "From {} ({} records), read as given: `enclave-operator verify-log` proves them complete against the checkpoints above.
",
        files.join(", "),
        refusals.records
    );
    if refusals.by_engine.is_empty() {
        let _ = writeln!(out, "No refusal.");
        return;
    }
    let _ = writeln!(
        out,
        "| engine | refusals |
| --- | --- |"
    );
    for (engine, count) in &refusals.by_engine {
        let _ = writeln!(out, "| {engine} | {count} |");
    }
    let _ = writeln!(out);
    for r in &refusals.refused {
        let user = r
            .user
            .as_deref()
            .map(|u| format!(" by `{u}`"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {} `{}`{user} ({}, policy `{}`, {} #{}): {}",
            r.time,
            r.object,
            r.engine,
            r.policy.as_deref().unwrap_or("-"),
            r.chain,
            r.seq,
            line(&r.message)
        );
    }
    if refusals.not_listed > 0 {
        let _ = writeln!(out, "- … and {} more, not listed", refusals.not_listed);
    }
}

fn policy_section(out: &mut String, policy: &PolicyReport) {
    let result = match policy.verdict {
        Verdict::Pass => "pass".to_string(),
        v => format!("{}, {} finding(s)", verdict(v), policy.findings),
    };
    let _ = writeln!(out, "\n## Policy `{}`: {result}\n", policy.name);
    match &policy.enclave_problem {
        Some(problem) => {
            let _ = writeln!(
                out,
                "DataEnclave `{}` cannot be used: {}. Nothing in scope could be judged.",
                policy.enclave,
                line(problem)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "DataEnclave `{}` ({}; sites: {}), enforcement {}, network isolation {}.",
                policy.enclave,
                policy.jurisdiction.as_deref().unwrap_or_default(),
                policy.sites.join(", "),
                enforcement(policy.enforcement),
                isolation(policy.network_isolation)
            );
        }
    }
    let namespaces: Vec<String> = policy.namespaces.iter().map(|n| format!("`{n}`")).collect();
    let _ = writeln!(
        out,
        "Namespaces in scope: {}.\n",
        if namespaces.is_empty() {
            "none".to_string()
        } else {
            namespaces.join(", ")
        }
    );

    let _ = writeln!(out, "| Check | Verdict | Summary |");
    let _ = writeln!(out, "| --- | --- | --- |");
    for (name, check) in [
        ("Placement", &policy.checks.placement),
        ("Volumes", &policy.checks.volumes),
        ("Network", &policy.checks.network),
        ("Access", &policy.checks.access),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            check_cell(check),
            cell(&check.summary)
        );
    }

    if !policy.pods.is_empty() {
        let _ = writeln!(out, "\n### Pods ({})\n", policy.pods.len());
        let _ = writeln!(
            out,
            "| Pod | Node | Site | Placement | Volumes (claim → volume, class) | Network |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        for pod in &policy.pods {
            pod_row(out, pod);
        }
    }

    if !policy.placement_findings.is_empty() {
        let _ = writeln!(out, "\n### Placement findings\n");
        for v in &policy.placement_findings {
            let _ = writeln!(
                out,
                "- Pod `{}/{}`: {} — {}",
                v.namespace.as_deref().unwrap_or_default(),
                v.name,
                v.reason,
                line(&v.message)
            );
        }
    }
    if !policy.volume_findings.is_empty() {
        let _ = writeln!(out, "\n### Volume findings\n");
        for v in &policy.volume_findings {
            let name = match &v.namespace {
                Some(ns) => format!("{ns}/{}", v.name),
                None => v.name.clone(),
            };
            let moved = v
                .volume_move
                .as_ref()
                .map(|m| {
                    format!(
                        " — move: `{}` ({})",
                        m.name,
                        m.phase.as_deref().unwrap_or("no status yet")
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- {} `{name}`: {} — {}{moved}",
                v.kind,
                v.reason,
                line(&v.message)
            );
        }
    }
    let leaking: Vec<_> = policy
        .network_groups
        .iter()
        .filter(|g| !g.leaks.is_empty())
        .collect();
    if !leaking.is_empty() {
        let _ = writeln!(out, "\n### Network leaks\n");
        for group in leaking {
            let selected = if group.selected_by.is_empty() {
                "no NetworkPolicy".to_string()
            } else {
                group
                    .selected_by
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "- {} pod(s) in `{}` like `{}`, selected by {selected}:",
                group.pods, group.namespace, group.representative_pod
            );
            for leak in &group.leaks {
                let _ = writeln!(out, "  - {}", line(leak));
            }
            if group.leaks_left_out > 0 {
                let _ = writeln!(out, "  - and {} more", group.leaks_left_out);
            }
        }
    }
    if !policy.exposures.is_empty() {
        let _ = writeln!(out, "\n### Access exposures\n");
        for e in &policy.exposures {
            let acting = if e.acts_as.is_empty() {
                String::new()
            } else {
                format!(", acting as approved {}", e.acts_as.join(", "))
            };
            let _ = writeln!(
                out,
                "- {}{} gives {} {} via {} in {}{acting}",
                match e.holder {
                    ExposureHolder::Unapproved => "",
                    ExposureHolder::Node => "(node credentials) ",
                    ExposureHolder::BuiltIn => "(built-in) ",
                },
                e.binding,
                e.subject,
                e.grants.join(", "),
                e.role,
                e.applies_to
            );
        }
    }
    if !policy.unreadable.is_empty() {
        let _ = writeln!(out, "\n### Objects in scope that could not be read\n");
        for u in &policy.unreadable {
            unreadable_line(out, u);
        }
    }
}

fn pod_row(out: &mut String, pod: &PodReport) {
    let node = pod.node.as_deref().unwrap_or("(pending)");
    let site = match (&pod.node, &pod.site) {
        (_, Some(site)) => site.as_str(),
        (Some(_), None) => "**outside**",
        (None, None) => "—",
    };
    let placement = match (&pod.placement.verdict, &pod.placement.reason) {
        (Verdict::Pass, _) => "inside".to_string(),
        (v, Some(reason)) => format!("{}: {reason}", verdict(*v)),
        (v, None) => verdict(*v).to_string(),
    };
    let volumes: Vec<String> = pod
        .volumes
        .iter()
        .map(|v| {
            let target = v.volume.as_deref().unwrap_or("unbound");
            let class = v.storage_class.as_deref().unwrap_or("no class");
            let judged = match v.verdict {
                Verdict::Pass => "inside".to_string(),
                other => verdict(other).to_string(),
            };
            cell(&format!("{} → {target} ({class}): {judged}", v.claim))
        })
        .collect();
    let network = match pod.network {
        Verdict::Pass => "fenced",
        Verdict::Fail => "**leaks**",
        Verdict::Unknown => "**UNKNOWN**",
        Verdict::NotApplicable => "n/a",
    };
    let _ = writeln!(
        out,
        "| `{}/{}` | {} | {site} | {} | {} | {network} |",
        pod.namespace,
        pod.name,
        cell(node),
        cell(&placement),
        if volumes.is_empty() {
            "—".to_string()
        } else {
            volumes.join("<br>")
        }
    );
}
