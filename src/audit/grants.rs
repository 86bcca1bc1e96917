//! The report's access grants and anomalies, pure: every AccessGrant as the operator's
//! own state machine judges it at the report's time (the audit reads no status), who
//! approved it, and what was done under it (counted from the decision logs given);
//! every AccessAnomaly and whether its lockout still holds. A break-glass grant nobody
//! acknowledged is a finding.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    catalog::Catalog,
    grants::{self, anomaly},
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessSection {
    pub grants: Vec<GrantLine>,
    pub anomalies: Vec<AnomalyLine>,
    /// Break-glass grants not acknowledged (each a finding).
    pub unreviewed_break_glass: usize,
}

impl AccessSection {
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.anomalies.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantLine {
    pub name: String,
    pub enclave: String,
    pub requester: String,
    pub verbs: Vec<String>,
    pub namespaces: Vec<String>,
    pub pods: Vec<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    pub requested_at: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    pub break_glass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewed_by: Option<String>,
    /// Access records (allowed attempts) that went through the grant, in the decision
    /// logs given; `None` without `--decision-log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<usize>,
    /// Why this grant is a finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyLine {
    pub name: String,
    pub enclave: String,
    pub user: String,
    pub reasons: Vec<String>,
    pub denied_attempts: i32,
    pub window_seconds: i32,
    pub raised_at: String,
    pub lockout: bool,
    /// The lockout holds now (not cleared by an approver).
    pub locked_out: bool,
}

/// The section, from the catalog at `now`; `since` keeps grants and anomalies created
/// at or after it.
pub fn section<C: Catalog>(catalog: &C, now: Timestamp, since: Option<Timestamp>) -> AccessSection {
    let Some(all) = catalog.grants() else {
        return AccessSection::default();
    };
    let created = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.creation_timestamp.as_ref().map(|t| t.0)
    };
    let in_period = |t: Option<Timestamp>| since.is_none_or(|s| t.is_some_and(|t| t >= s));
    let mut out = AccessSection::default();
    for grant in all
        .grants
        .iter()
        .filter(|g| in_period(created(&g.metadata)))
    {
        let spec = &grant.spec;
        let enclave = catalog.enclave(&spec.enclave);
        let eval = grants::evaluate(grant, &all.approvals_of(grant), enclave.as_deref(), now);
        let finding = eval.unreviewed_break_glass().then(|| {
            format!(
                "break-glass grant of {} not acknowledged by another approver of DataEnclave {}",
                spec.requester, spec.enclave
            )
        });
        if finding.is_some() {
            out.unreviewed_break_glass += 1;
        }
        out.grants.push(GrantLine {
            name: grant.name_any(),
            enclave: spec.enclave.clone(),
            requester: spec.requester.clone(),
            verbs: spec.verbs.iter().map(|v| v.as_str().to_string()).collect(),
            namespaces: spec.namespaces.clone(),
            pods: spec.pods.clone(),
            reason: spec.reason.clone(),
            ticket: spec.ticket.clone(),
            requested_at: created(&grant.metadata)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            state: eval.state.as_str().to_string(),
            approved_by: eval.approved_by.clone(),
            active_from: eval.active_from.map(|t| t.to_string()),
            expires_at: eval.expires_at.map(|t| t.to_string()),
            ended_by: eval.ended_by.clone(),
            break_glass: eval.break_glass,
            reviewed_by: eval.reviewed_by.clone(),
            uses: None,
            finding,
        });
    }
    out.grants
        .sort_by(|a, b| (&a.requested_at, &a.name).cmp(&(&b.requested_at, &b.name)));
    for anomaly_object in all
        .anomalies
        .iter()
        .filter(|a| in_period(created(&a.metadata)))
    {
        let spec = &anomaly_object.spec;
        let locked_out = spec.lockout
            && catalog.enclave(&spec.enclave).is_some_and(|enclave| {
                anomaly::lockout(&all, &enclave, &spec.user)
                    .is_some_and(|a| a.name_any() == anomaly_object.name_any())
            });
        out.anomalies.push(AnomalyLine {
            name: anomaly_object.name_any(),
            enclave: spec.enclave.clone(),
            user: spec.user.clone(),
            reasons: spec.reasons.clone(),
            denied_attempts: spec.denied_attempts,
            window_seconds: spec.window_seconds,
            raised_at: created(&anomaly_object.metadata)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            lockout: spec.lockout,
            locked_out,
        });
    }
    out.anomalies
        .sort_by(|a, b| (&a.raised_at, &a.name).cmp(&(&b.raised_at, &b.name)));
    out
}

/// Counts the uses of each grant: decision-log records of allowed access (`fields.grants`).
pub fn count_uses(uses: &mut BTreeMap<String, usize>, record: &serde_json::Value) {
    if let Some(names) = record["fields"]["grants"].as_array() {
        for name in names.iter().filter_map(|n| n.as_str()) {
            *uses.entry(name.to_string()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StaticCatalog;
    use std::sync::Arc;

    fn catalog() -> StaticCatalog {
        let mut catalog = StaticCatalog::from_yaml(
            r#"
enclaves:
- apiVersion: enclave.dev/v1alpha1
  kind: DataEnclave
  metadata: {name: eu}
  spec:
    jurisdiction: EU
    sites: [{name: d, nodeSelector: {matchLabels: {a: b}}}]
    access: {approverUsers: [carol, dave]}
"#,
        )
        .expect("fixture");
        let grant = |yaml: &str| -> Arc<crate::crd::AccessGrant> {
            Arc::new(serde_yaml::from_str(yaml).expect("grant"))
        };
        catalog.grants.grants = vec![
            grant(
                "metadata: {name: glass, uid: g1, creationTimestamp: '2027-01-01T00:00:00Z'}\nspec: {enclave: eu, requester: carol, verbs: [Exec], namespaces: [shop], reason: outage, durationMinutes: 30, breakGlass: true}",
            ),
            grant(
                "metadata: {name: normal, uid: n1, creationTimestamp: '2027-01-01T01:00:00Z'}\nspec: {enclave: eu, requester: alice, verbs: [Logs], namespaces: [shop], reason: INC-2, durationMinutes: 30}",
            ),
        ];
        catalog.grants.approvals = vec![Arc::new(
            serde_yaml::from_str(
                "metadata: {name: ok, creationTimestamp: '2027-01-01T01:05:00Z'}\nspec: {grant: {name: normal, uid: n1}, decision: Approve, approver: dave}",
            )
            .expect("approval"),
        )];
        catalog
    }

    #[test]
    fn unacknowledged_break_glass_is_a_finding_until_another_approver_acknowledges_it() {
        let mut catalog = catalog();
        let now = "2027-01-02T00:00:00Z".parse().expect("time");
        let report = section(&catalog, now, None);
        assert_eq!(report.unreviewed_break_glass, 1);
        let glass = &report.grants[0];
        assert_eq!(
            (glass.name.as_str(), glass.state.as_str()),
            ("glass", "Expired")
        );
        assert!(
            glass
                .finding
                .as_deref()
                .is_some_and(|f| f.contains("not acknowledged"))
        );
        let normal = &report.grants[1];
        assert_eq!(normal.approved_by.as_deref(), Some("dave"));
        assert_eq!(normal.finding, None);
        catalog.grants.approvals.push(Arc::new(
            serde_yaml::from_str(
                "metadata: {name: ack, creationTimestamp: '2027-01-01T02:00:00Z'}\nspec: {grant: {name: glass, uid: g1}, decision: Acknowledge, approver: dave}",
            )
            .expect("approval"),
        ));
        let report = section(&catalog, now, None);
        assert_eq!(report.unreviewed_break_glass, 0);
        assert_eq!(report.grants[0].reviewed_by.as_deref(), Some("dave"));
        // A period leaves out what was asked for before it.
        let since = "2027-01-01T00:30:00Z".parse().expect("time");
        let report = section(&catalog, now, Some(since));
        assert_eq!(report.grants.len(), 1);
    }
}
