//! The moves section from a fixture (`testdata/moves.yaml`): every move listed in its
//! group, each finding raised by its own rule (and only by it), and the claim's volume
//! finding naming its move.

use std::sync::Arc;

use jiff::Timestamp;

use super::*;
use crate::{
    access::rbac::RbacObjects,
    audit::{fixtures, render, report::build},
    catalog::StaticCatalog,
};

const OPERATOR_NAMESPACE: &str = "enclave-system";

fn moves() -> Vec<VolumeMigration> {
    serde_yaml::from_str(include_str!("../testdata/moves.yaml")).expect("fixture")
}

/// The report's time (audit::fixtures::observation).
fn now() -> Timestamp {
    fixtures::observation(OPERATOR_NAMESPACE).generated_at
}

fn line<'a>(section: &'a MovesSection, name: &str) -> &'a MoveLine {
    section
        .moves
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("move {name} missing from {section:#?}"))
}

fn findings(section: &MovesSection) -> Vec<&str> {
    section
        .moves
        .iter()
        .filter(|m| m.finding.is_some())
        .map(|m| m.name.as_str())
        .collect()
}

#[test]
fn every_move_is_listed_in_its_group() {
    let section = section(&moves(), now(), None);
    let order: Vec<(MoveGroup, &str)> = section
        .moves
        .iter()
        .map(|m| (m.group, m.name.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (MoveGroup::InProgress, "scratch-move"),
            (MoveGroup::InProgress, "new"),
            (MoveGroup::Done, "db-0"),
            (MoveGroup::Done, "db-1"),
            (MoveGroup::Erased, "logs"),
            (MoveGroup::Erased, "cache"),
            (MoveGroup::RolledBack, "web"),
            (MoveGroup::RolledBack, "scratch-first"),
            (MoveGroup::Failed, "queue"),
        ]
    );
    let copying = line(&section, "scratch-move");
    assert_eq!(copying.phase.as_deref(), Some("Copying"));
    assert_eq!(copying.approved_by.as_deref(), Some("carol"));
    assert_eq!(copying.bytes, Some(10_737_418_240));
    assert_eq!(
        copying.destination_storage_class.as_deref(),
        Some("eu-dublin-ssd")
    );
    // No status yet: no phase, and the class the spec asks for (none here).
    let new = line(&section, "new");
    assert_eq!((new.phase.as_deref(), new.finding.as_deref()), (None, None));
    let web = line(&section, "web");
    assert_eq!(web.rolled_back_from.as_deref(), Some("Verifying"));
    assert!(
        web.rollback_reason
            .as_deref()
            .is_some_and(|r| r.contains("1 file differs"))
    );
    assert_eq!(section.findings, 3);
    assert_eq!(findings(&section), ["db-1", "cache", "queue"]);
}

/// A Failed move waits for a person with both volumes retained.
#[test]
fn a_failed_move_is_a_finding() {
    let section = section(&moves(), now(), None);
    let queue = line(&section, "queue");
    let finding = queue.finding.as_deref().expect("a finding");
    assert!(finding.contains("claim shop/queue failed"), "{finding}");
    assert!(
        queue
            .message
            .as_deref()
            .is_some_and(|m| m.contains("bound elsewhere"))
    );
    assert!(finding.contains("only a person can decide"), "{finding}");
    assert_eq!(queue.failed_at.as_deref(), Some("2027-01-13T02:00:00Z"));
}

/// `db-1`'s window ended 1 h 30 min before the report: its source should be gone. `db-0`'s
/// ended 30 min before: within the grace. The same move an hour later is a finding.
#[test]
fn a_source_kept_an_hour_past_its_erasure_time_is_a_finding() {
    let all = moves();
    let section = section(&all, now(), None);
    let finding = line(&section, "db-1")
        .finding
        .as_deref()
        .expect("a finding");
    assert!(
        finding.contains("source volume pv-us-db-1 of claim shop/data-db-1 is not erased"),
        "{finding}"
    );
    assert!(finding.contains("2027-01-15T06:30:00Z"), "{finding}");
    assert_eq!(line(&section, "db-0").finding, None);
    let later = now() + SignedDuration::from_mins(31);
    assert!(
        line(&super::section(&all, later, None), "db-0")
            .finding
            .is_some()
    );
    // Being erased, and still there after the grace: the same.
    let mut erasing = all.clone();
    for m in &mut erasing {
        if let Some(status) = m
            .status
            .as_mut()
            .filter(|_| m.metadata.name.as_deref() == Some("db-1"))
        {
            status.phase = Some(MigrationPhase::Erasing);
        }
    }
    assert!(
        line(&super::section(&erasing, now(), None), "db-1")
            .finding
            .is_some()
    );
}

/// The operator erases only after both manifests matched: an Erased record with
/// different (or missing) root hashes is not its doing.
#[test]
fn an_erased_move_whose_root_hashes_differ_is_a_finding() {
    let mut all = moves();
    let section = section(&all, now(), None);
    let finding = line(&section, "cache")
        .finding
        .as_deref()
        .expect("a finding");
    assert!(finding.contains("source dddd"), "{finding}");
    assert!(finding.contains("destination eeee"), "{finding}");
    assert_eq!(line(&section, "logs").finding, None);
    // Without a destination hash at all: the same.
    for m in &mut all {
        if m.metadata.name.as_deref() == Some("logs")
            && let Some(status) = m.status.as_mut()
        {
            status.destination_root_hash = None;
        }
    }
    let finding = line(&super::section(&all, now(), None), "logs")
        .finding
        .clone()
        .expect("a finding");
    assert!(finding.contains("destination none"), "{finding}");
}

#[test]
fn a_rolled_back_move_is_not_a_finding() {
    let section = section(&moves(), now(), None);
    for name in ["web", "scratch-first"] {
        assert_eq!(line(&section, name).finding, None, "{name}");
    }
}

#[test]
fn since_leaves_out_moves_created_before_it() {
    let since: Timestamp = "2027-01-10T00:00:00Z".parse().expect("time");
    let section = section(&moves(), now(), Some(since));
    let names: Vec<&str> = section.moves.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "scratch-move",
            "new",
            "db-0",
            "db-1",
            "web",
            "scratch-first",
            "queue"
        ]
    );
    // `cache` (created 2027-01-01) is left out, with its finding.
    assert_eq!(section.findings, 2);
}

/// The compliant enclave of the report's tests with the claim `api/scratch` on a class
/// outside the enclave (the one `scratch-move` is moving).
fn catalog_with_claim_outside() -> StaticCatalog {
    let mut catalog =
        StaticCatalog::from_yaml(include_str!("../testdata/compliant.yaml")).expect("fixture");
    catalog.rbac = RbacObjects::from_yaml(include_str!("../testdata/rbac.yaml")).expect("rbac");
    fixtures::add_operator_fence(&mut catalog, OPERATOR_NAMESPACE);
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_yaml::from_str(
        "metadata: {name: scratch, namespace: api}\nspec: {storageClassName: us-east-ssd}\n",
    )
    .expect("claim");
    catalog
        .claims
        .insert(("api".into(), "scratch".into()), Arc::new(claim));
    catalog
}

#[test]
fn the_report_lists_the_moves_counts_their_findings_and_names_a_claims_move() {
    let catalog = catalog_with_claim_outside();
    let mut observation = fixtures::observation(OPERATOR_NAMESPACE);
    observation.moves = moves();
    let report = build(&catalog, &observation);
    // The claim outside, and the three moves.
    assert_eq!(report.summary.findings, 4);
    assert_eq!(report.moves.findings, 3);
    let volume = &report.policies[0].volume_findings[0];
    assert_eq!(volume.name, "scratch");
    assert_eq!(
        volume.volume_move,
        Some(ClaimMove {
            name: "scratch-move".into(),
            phase: Some("Copying".into())
        })
    );

    let markdown = render::markdown(&report);
    assert!(
        markdown.contains("— move: `scratch-move` (Copying)"),
        "{markdown}"
    );
    let headings: Vec<&str> = markdown
        .lines()
        .filter(|l| l.starts_with("### ") && l.contains('('))
        .filter(|l| !l.starts_with("### Pods"))
        .collect();
    assert_eq!(
        headings,
        [
            "### In progress (2)",
            "### Done, source kept until erasure (2)",
            "### Erased (2)",
            "### Rolled back (2)",
            "### Failed (1)"
        ]
    );
    assert!(markdown.contains("## Volume moves"), "{markdown}");
    // Certificates short in Markdown, full in JSON; equal root hashes shown once.
    assert!(markdown.contains("`1111111111111111…`, `2222222222222222…`"));
    assert!(!markdown.contains(&"1".repeat(64)));
    let db0 = markdown
        .lines()
        .find(|l| l.starts_with("| `shop/db-0`"))
        .expect("db-0's row");
    assert_eq!(db0.matches("aaaa0000").count(), 1, "{db0}");
    assert!(db0.contains("1.0 MiB"), "{db0}");
    assert!(db0.contains("erase after 2027-01-15T07:30:00Z"), "{db0}");
    let cache = markdown
        .lines()
        .find(|l| l.starts_with("| `shop/cache`"))
        .expect("cache's row");
    assert!(cache.contains("source `dddd"), "{cache}");

    let json: serde_json::Value =
        serde_json::from_str(&render::json(&report).expect("json")).expect("parses");
    assert_eq!(
        json["policies"][0]["volumeFindings"][0]["move"],
        serde_json::json!({"name": "scratch-move", "phase": "Copying"})
    );
    assert_eq!(
        json["policies"][0]["volumeFindings"][0]["reason"],
        "ClaimOutsideEnclave"
    );
    let copying = &json["moves"]["moves"][0];
    assert_eq!(copying["name"], "scratch-move");
    assert_eq!(copying["group"], "InProgress");
    assert_eq!(copying["senderCertificateSha256"], "1".repeat(64));
    assert_eq!(json["moves"]["findings"], 3);
}

#[test]
fn moves_that_need_nothing_leave_the_report_green() {
    let mut catalog =
        StaticCatalog::from_yaml(include_str!("../testdata/compliant.yaml")).expect("fixture");
    catalog.rbac = RbacObjects::from_yaml(include_str!("../testdata/rbac.yaml")).expect("rbac");
    fixtures::add_operator_fence(&mut catalog, OPERATOR_NAMESPACE);
    let mut observation = fixtures::observation(OPERATOR_NAMESPACE);
    observation.moves = moves()
        .into_iter()
        .filter(|m| !matches!(m.name_any().as_str(), "db-1" | "cache" | "queue"))
        .collect();
    let report = build(&catalog, &observation);
    assert!(report.summary.all_green, "{}", render::markdown(&report));
    assert_eq!(report.moves.moves.len(), 6);
    // No moves: no section.
    let report = build(&catalog, &fixtures::observation(OPERATOR_NAMESPACE));
    assert!(!render::markdown(&report).contains("## Volume moves"));
    let json = render::json(&report).expect("json");
    assert!(!json.contains("\"moves\""), "{json}");
}

#[test]
fn the_same_moves_give_the_same_bytes_whatever_the_order() {
    let catalog = catalog_with_claim_outside();
    let mut observation = fixtures::observation(OPERATOR_NAMESPACE);
    observation.moves = moves();
    let forward = build(&catalog, &observation);
    observation.moves.reverse();
    let backward = build(&catalog, &observation);
    assert_eq!(render::markdown(&forward), render::markdown(&backward));
    assert_eq!(
        render::json(&forward).expect("json"),
        render::json(&backward).expect("json")
    );
}
