//! The report's volume moves, pure: every VolumeMigration with where it stands, what it
//! moved where, who approved it, the manifests' root hashes and the transfer's
//! certificate fingerprints, grouped in progress, done (the source kept until the
//! retention window ends), erased, rolled back, failed.
//!
//! The audit reads the status the operator wrote (only the operator can write it: the
//! chart gives nobody else `volumemigrations/status`); a move is evidence about data
//! that already moved, so there is no decision of the operator's to re-run here, unlike
//! the grants. Findings are what a person must act on or what the record itself
//! contradicts:
//!
//! - a move `Failed`: both volumes are retained and the operator will not go on or back
//!   on its own;
//! - a move `Done` (or `Erasing`) whose `eraseAfter` passed more than [`ERASE_GRACE`]
//!   ago and whose source is not erased: data is still kept outside the enclave after
//!   the window its policy set;
//! - an `Erased` move whose source and destination root hashes differ or are missing:
//!   the operator erases only after both manifests matched, so such a record was not
//!   written by it.
//!
//! A rolled-back move is not a finding: the data stayed where it was, and the claim is
//! reported as outside the enclave by the volume findings, which name the claim's move.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::Serialize;

use crate::crd::{MigrationPhase, VolumeMigration};

/// How long past `eraseAfter` a source may still exist before it is a finding: the
/// erasure runs at the operator's next reconcile after the window, and a deletion
/// through the class's reclaim path takes minutes, not an hour.
pub const ERASE_GRACE: SignedDuration = SignedDuration::from_hours(1);

/// Where a move stands, in the order the report lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum MoveGroup {
    /// Not finished: planned, waiting for approval, copying … restoring, or rolling back
    /// (also a move the operator has not written a status for yet).
    InProgress,
    /// The application runs on the new volume; the source is kept until `eraseAfter`,
    /// or is being erased.
    Done,
    Erased,
    RolledBack,
    Failed,
}

impl MoveGroup {
    pub fn of(phase: Option<MigrationPhase>) -> Self {
        match phase {
            Some(MigrationPhase::Done | MigrationPhase::Erasing) => MoveGroup::Done,
            Some(MigrationPhase::Erased) => MoveGroup::Erased,
            Some(MigrationPhase::RolledBack) => MoveGroup::RolledBack,
            Some(MigrationPhase::Failed) => MoveGroup::Failed,
            _ => MoveGroup::InProgress,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            MoveGroup::InProgress => "In progress",
            MoveGroup::Done => "Done, source kept until erasure",
            MoveGroup::Erased => "Erased",
            MoveGroup::RolledBack => "Rolled back",
            MoveGroup::Failed => "Failed",
        }
    }
}

/// The moves section of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MovesSection {
    /// By group, then creation time, namespace and name.
    pub moves: Vec<MoveLine>,
    /// Moves that are findings.
    pub findings: usize,
}

impl MovesSection {
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }
}

/// One VolumeMigration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveLine {
    pub namespace: String,
    pub name: String,
    pub claim: String,
    pub group: MoveGroup,
    /// `None`: the operator has not written a status yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_volume: Option<String>,
    /// The destination's class: the status's, else the one the spec asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_storage_class: Option<String>,
    /// The source's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_root_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_root_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_certificate_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_certificate_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erase_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why this move is a finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

/// The move a claim's volume finding names: the claim's move still under way, else its
/// latest one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMove {
    pub name: String,
    /// `None`: no status yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

fn time(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

fn created(m: &VolumeMigration) -> Option<Timestamp> {
    m.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Why a move is a finding at `now`, if it is.
pub fn finding(m: &VolumeMigration, now: Timestamp) -> Option<String> {
    let status = m.status.as_ref()?;
    let claim = format!(
        "claim {}/{}",
        m.namespace().unwrap_or_default(),
        m.spec.claim_name
    );
    match status.phase? {
        // Its message (why) is on the move's line beside the finding.
        MigrationPhase::Failed => Some(format!(
            "the move of {claim} failed: both volumes are retained and only a person can decide to retry, roll back or delete it"
        )),
        MigrationPhase::Done | MigrationPhase::Erasing => {
            let erase_after = time(&status.times.erase_after)?;
            let overdue = erase_after
                .checked_add(ERASE_GRACE)
                .is_ok_and(|limit| limit < now);
            (overdue && status.times.erased.is_none()).then(|| {
                format!(
                    "the source volume {} of {claim} is not erased, though its retention window ended at {erase_after}: the data is still kept outside the enclave",
                    status.source_volume.as_deref().unwrap_or("(unnamed)")
                )
            })
        }
        MigrationPhase::Erased => match (&status.source_root_hash, &status.destination_root_hash) {
            (Some(source), Some(destination)) if source == destination => None,
            (source, destination) => Some(format!(
                "the source of {claim} was erased, but the record's root hashes do not show a verified copy (source {}, destination {}): the operator erases only after both manifests match, so this status was not written by it",
                source.as_deref().unwrap_or("none"),
                destination.as_deref().unwrap_or("none")
            )),
        },
        _ => None,
    }
}

/// The section, from every VolumeMigration listed, at `now`; `since` keeps the moves
/// created at or after it.
pub fn section(
    moves: &[VolumeMigration],
    now: Timestamp,
    since: Option<Timestamp>,
) -> MovesSection {
    let mut out = MovesSection::default();
    for m in moves
        .iter()
        .filter(|m| since.is_none_or(|s| created(m).is_some_and(|t| t >= s)))
    {
        let status = m.status.clone().unwrap_or_default();
        let finding = finding(m, now);
        if finding.is_some() {
            out.findings += 1;
        }
        let stamp = |t: &Option<Time>| time(t).map(|t| t.to_string());
        out.moves.push(MoveLine {
            namespace: m.namespace().unwrap_or_default(),
            name: m.name_any(),
            claim: m.spec.claim_name.clone(),
            group: MoveGroup::of(status.phase),
            phase: status.phase.map(|p| p.as_str().to_string()),
            created_at: created(m).map(|t| t.to_string()).unwrap_or_default(),
            source_volume: status.source_volume,
            destination_volume: status.destination_volume,
            destination_storage_class: status
                .destination_storage_class
                .or_else(|| m.spec.storage_class_name.clone()),
            bytes: status.bytes_total,
            approved_by: status.approved_by,
            source_root_hash: status.source_root_hash,
            destination_root_hash: status.destination_root_hash,
            sender_certificate_sha256: status.sender_certificate_sha256,
            receiver_certificate_sha256: status.receiver_certificate_sha256,
            done_at: stamp(&status.times.done),
            erase_after: stamp(&status.times.erase_after),
            erased_at: stamp(&status.times.erased),
            rolled_back_at: stamp(&status.times.rolled_back),
            rolled_back_from: status.rolled_back_from.map(|p| p.as_str().to_string()),
            failed_at: stamp(&status.times.failed),
            rollback_reason: status.rollback_reason,
            message: status.message,
            finding,
        });
    }
    out.moves.sort_by(|a, b| {
        (a.group, &a.created_at, &a.namespace, &a.name).cmp(&(
            b.group,
            &b.created_at,
            &b.namespace,
            &b.name,
        ))
    });
    out
}

/// Each claim's move, by (namespace, claim): the one not finished (the operator runs at
/// most one per claim), else the one created last. All moves, whatever `--since`: the
/// volume finding is about the claim now.
pub fn by_claim(moves: &[VolumeMigration]) -> BTreeMap<(String, String), ClaimMove> {
    let mut chosen: BTreeMap<(String, String), &VolumeMigration> = BTreeMap::new();
    // Not finished first, then the latest, then the name (for the same bytes whatever
    // order the moves were listed in).
    let rank = |m: &VolumeMigration| {
        let phase = m.status.as_ref().and_then(|s| s.phase);
        (
            !phase.is_some_and(MigrationPhase::is_terminal),
            created(m),
            m.name_any(),
        )
    };
    for m in moves {
        let key = (m.namespace().unwrap_or_default(), m.spec.claim_name.clone());
        match chosen.get(&key) {
            Some(current) if rank(current) >= rank(m) => {}
            _ => {
                chosen.insert(key, m);
            }
        }
    }
    chosen
        .into_iter()
        .map(|(key, m)| {
            (
                key,
                ClaimMove {
                    name: m.name_any(),
                    phase: m
                        .status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .map(|p| p.as_str().to_string()),
                },
            )
        })
        .collect()
}

/// A fingerprint's first 16 hex digits, enough to tell certificates apart by eye; the
/// JSON form has them in full.
fn short(fingerprint: &str) -> String {
    match fingerprint.get(..16) {
        Some(head) if fingerprint.len() > 16 => format!("{head}…"),
        _ => fingerprint.to_string(),
    }
}

/// Bytes in binary units, one decimal, as the move's own status words them.
fn size(bytes: i64) -> String {
    crate::volume_move::human_bytes(u64::try_from(bytes).unwrap_or(0))
}

/// The root hashes: once when the two manifests agree, else each side's.
fn root_hashes(m: &MoveLine) -> String {
    match (&m.source_root_hash, &m.destination_root_hash) {
        (Some(s), Some(d)) if s == d => format!("`{s}`"),
        (None, None) => "-".into(),
        (s, d) => format!(
            "source `{}`, destination `{}`",
            s.as_deref().unwrap_or("none"),
            d.as_deref().unwrap_or("none")
        ),
    }
}

/// The times that matter for the move's group.
fn when(m: &MoveLine) -> String {
    let at = |label: &str, t: &Option<String>| t.as_ref().map(|t| format!("{label} {t}"));
    let parts: Vec<String> = match m.group {
        MoveGroup::InProgress => vec![Some(format!("created {}", m.created_at))],
        MoveGroup::Done => vec![at("done", &m.done_at), at("erase after", &m.erase_after)],
        MoveGroup::Erased => vec![at("done", &m.done_at), at("erased", &m.erased_at)],
        MoveGroup::RolledBack => {
            vec![
                at("rolled back", &m.rolled_back_at).map(|t| match &m.rolled_back_from {
                    Some(from) => format!("{t} (from {from})"),
                    None => t,
                }),
            ]
        }
        MoveGroup::Failed => vec![at("failed", &m.failed_at)],
    }
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The Markdown section: one table per group, in the order of [`MoveGroup`].
pub fn markdown(out: &mut String, section: &MovesSection) {
    use super::render::cell;
    use std::fmt::Write;

    let _ = writeln!(out, "\n## Volume moves\n");
    let _ = writeln!(
        out,
        "{} VolumeMigration(s), {} finding(s). Root hashes are the SHA-256 of each side's manifest; certificates are the transfer's, made for the move alone.",
        section.moves.len(),
        section.findings
    );
    let mut group = None;
    for m in &section.moves {
        if group != Some(m.group) {
            group = Some(m.group);
            let count = section.moves.iter().filter(|o| o.group == m.group).count();
            let _ = writeln!(out, "\n### {} ({count})\n", m.group.title());
            let _ = writeln!(
                out,
                "| Move | Claim | Phase | Source → destination (class) | Size | Approved by | Root hash | Certificates (sender, receiver) | When | Reason | Finding |"
            );
            let _ = writeln!(
                out,
                "| --- | --- | --- | --- | ---: | --- | --- | --- | --- | --- | --- |"
            );
        }
        let route = format!(
            "{} → {} ({})",
            m.source_volume.as_deref().unwrap_or("?"),
            m.destination_volume.as_deref().unwrap_or("?"),
            m.destination_storage_class
                .as_deref()
                .unwrap_or("enclave default")
        );
        let certificates = match (&m.sender_certificate_sha256, &m.receiver_certificate_sha256) {
            (None, None) => "-".to_string(),
            (s, r) => format!(
                "`{}`, `{}`",
                s.as_deref().map_or("none".to_string(), short),
                r.as_deref().map_or("none".to_string(), short)
            ),
        };
        // A rollback says why; anything else says what the operator last wrote.
        let reason = m
            .rollback_reason
            .as_deref()
            .or(m.message.as_deref())
            .map_or("-".to_string(), cell);
        let _ = writeln!(
            out,
            "| `{}/{}` | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.namespace,
            m.name,
            m.claim,
            m.phase.as_deref().unwrap_or("(no status yet)"),
            cell(&route),
            m.bytes.map_or("-".to_string(), size),
            m.approved_by.as_deref().map_or("-".to_string(), cell),
            cell(&root_hashes(m)),
            cell(&certificates),
            when(m),
            reason,
            m.finding
                .as_deref()
                .map_or("-".to_string(), |f| format!("**{}**", cell(f))),
        );
    }
}

#[cfg(test)]
mod tests;
