//! `enclave-operator audit`: a report, for people (Markdown) and machines (JSON), of
//! whether each ResidencyPolicy holds right now — per policy, every pod in scope with
//! its node and site, its volumes with their classes and where they live, the
//! NetworkPolicy reachability verdict, the access exposure through RBAC, a verdict per
//! check (Placement, Volumes, Network, Access), and the head of every decision-log chain
//! the audit observed.
//!
//! - [`collect`] lists the cluster with read-only rights (the chart's `auditor`
//!   ClusterRole: get and list, nothing else), in pages, stripping as it goes.
//! - [`report`] builds the report from a [`crate::catalog::Catalog`], pure, with the
//!   controllers' own decision code, so that the audit and the operator reach the same
//!   verdicts; [`render`] writes it as Markdown or JSON.
//!
//! The same cluster state gives the same bytes: every list is sorted and the one time
//! in the report is its `generatedAt` header field.
//!
//! # Exit code
//!
//! - `0`: all green — every reported policy passes every check and everything was read.
//! - `1`: findings — the report is written in full and says which. A CI job can gate on
//!   the exit code and keep the report as its artifact.
//! - `2`: no report — the cluster could not be read (a kind the audit needs could not
//!   be listed), the arguments are wrong, or the report could not be written.
//!
//! Findings are: pods outside the enclave (also those being moved), claims and enclave
//! StorageClasses that keep data outside, groups of pods NetworkPolicies let reach the
//! outside, RBAC grants to unapproved subjects (built-in system grants are listed, not
//! counted), policies whose enclave cannot be resolved, objects that could not be
//! parsed where a verdict depends on them, policies asked for that do not exist, and
//! decision-log chains whose checkpointed head stopped while their writer runs (the
//! evidence is failing now). An unreadable checkpoints ConfigMap is reported, not a
//! finding: the chain is evidence about the past, not a property of the enclave now.
//! Volume moves ([`moves`]) are findings when they failed, when a source outlives its
//! erasure time by more than an hour, or when an erased move's record shows no verified
//! copy; VolumeMigrations that cannot be listed are an unreadable entry (a finding), and
//! a cluster without the kind has no moves.

pub mod collect;
#[doc(hidden)]
pub mod fixtures;
pub mod grants;
pub mod moves;
pub mod refusals;
pub mod render;
pub mod report;

#[cfg(test)]
mod tests;

use std::{io::Write, path::PathBuf, process::ExitCode};

pub use report::{Observation, Report, build};

/// `enclave-operator audit`.
#[derive(clap::Args, Clone, Debug)]
pub struct AuditArgs {
    /// The operator's namespace: never in any policy's scope; holds the decision log's
    /// checkpoints ConfigMap and its writers' Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "enclave-system")]
    pub namespace: String,
    /// Write the Markdown report to FILE (`-`: stdout). Without --markdown and --json,
    /// the Markdown report goes to stdout.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write the JSON report to FILE (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Report only this policy (repeat for more); by default every ResidencyPolicy.
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Objects per list request: memory grows with the page, not with the cluster.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
    /// A stored decision log to list refusals from (repeat for more files): every
    /// `PodDenied` line, by engine (native and webhook). Verify the files with
    /// `enclave-operator verify-log` first; the audit reads them as given.
    #[arg(long = "decision-log", value_name = "FILE")]
    pub decision_logs: Vec<PathBuf>,
    /// List only the AccessGrants, AccessAnomalies and VolumeMigrations created at or
    /// after this time (RFC 3339, e.g. 2027-01-01T00:00:00Z); by default all of them.
    #[arg(long, value_name = "TIME")]
    pub since: Option<jiff::Timestamp>,
}

/// Exit code 1: the report has findings.
const FINDINGS: u8 = 1;
/// Exit code 2: no report.
const NO_REPORT: u8 = 2;

fn is_stdout(path: &std::path::Path) -> bool {
    path.as_os_str() == "-"
}

/// Where each form goes: (markdown, json); `None` is not written.
fn outputs(args: &AuditArgs) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
    match (&args.markdown, &args.json) {
        (None, None) => Ok((Some(PathBuf::from("-")), None)),
        (Some(m), Some(j)) if is_stdout(m) && is_stdout(j) => {
            Err("--markdown and --json cannot both write to stdout (-)".into())
        }
        (m, j) => Ok((m.clone(), j.clone())),
    }
}

fn write(path: &std::path::Path, text: &str) -> Result<(), String> {
    if is_stdout(path) {
        let mut stdout = std::io::stdout().lock();
        return stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("writing the report to stdout: {e}"));
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

async fn audit(args: &AuditArgs) -> Result<Report, String> {
    // The report's scope is the operator's: its namespace is never in it.
    crate::scope::set_operator_namespace(&args.namespace)?;
    // One TLS crypto provider for the kube client, as `run` installs it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let collected = collect::collect(&client, args.page_size)
        .await
        .map_err(|e| e.to_string())?;
    let chain = collect::chain(&client, &args.namespace).await;
    let observation = Observation {
        generated_at: jiff::Timestamp::now(),
        operator_namespace: args.namespace.clone(),
        chain,
        unreadable: collected.unreadable,
        only_policies: args.policies.clone(),
        since: args.since,
        moves: collected.moves,
    };
    let mut report = build(&collected.catalog, &observation);
    if !args.decision_logs.is_empty() {
        let mut refusals = refusals::Refusals::default();
        for path in &args.decision_logs {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("--decision-log {}: {e}", path.display()))?;
            refusals
                .read(
                    &path.display().to_string(),
                    std::io::BufReader::new(file),
                    &args.policies,
                )
                .map_err(|e| format!("--decision-log {}: {e}", path.display()))?;
        }
        // What was done under each grant: the allowed attempts that name it.
        for grant in &mut report.access.grants {
            grant.uses = Some(refusals.grant_uses.get(&grant.name).copied().unwrap_or(0));
        }
        report.refusals = Some(refusals);
    }
    Ok(report)
}

/// Runs the audit; see the module docs for the exit code.
pub async fn run(args: AuditArgs) -> ExitCode {
    let (markdown, json) = match outputs(&args) {
        Ok(outputs) => outputs,
        Err(message) => {
            eprintln!("audit: {message}");
            return ExitCode::from(NO_REPORT);
        }
    };
    let report = match audit(&args).await {
        Ok(report) => report,
        Err(message) => {
            eprintln!("audit: {message}");
            return ExitCode::from(NO_REPORT);
        }
    };
    if let Some(path) = &json {
        let text = match render::json(&report) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("audit: encoding the JSON report: {error}");
                return ExitCode::from(NO_REPORT);
            }
        };
        if let Err(message) = write(path, &text) {
            eprintln!("audit: {message}");
            return ExitCode::from(NO_REPORT);
        }
    }
    if let Some(path) = &markdown
        && let Err(message) = write(path, &render::markdown(&report))
    {
        eprintln!("audit: {message}");
        return ExitCode::from(NO_REPORT);
    }
    let summary = &report.summary;
    if summary.all_green {
        eprintln!(
            "audit: all green ({} policies, {} pods in scope)",
            summary.policies, summary.pods_in_scope
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "audit: {} finding(s) ({} of {} policies pass)",
            summary.findings, summary.policies_green, summary.policies
        );
        ExitCode::from(FINDINGS)
    }
}
