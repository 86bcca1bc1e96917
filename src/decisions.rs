//! One sink for every decision the operator makes or observes: admission placements and
//! denials, Audit findings, evictions and what blocks them, access attempts, healed
//! NetworkPolicies, exposures. Each becomes a record that the evidence writer turns into
//! a line of the hash-chained decision log, and (best effort) an Event.
//!
//! Recording never waits: the admission path cannot afford to. The queue is large
//! (bursts of tens of thousands of decisions fit) and a record that does not fit is
//! counted; the count itself is written into the log as a `RecordsLost` record before
//! the next one, so that a gap is visible in the evidence instead of silent.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// How many records may wait for the writer.
pub const QUEUE: usize = 65_536;

/// What kind of decision a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// Admission ANDed the enclave into a pod or template.
    PodPlaced,
    /// Admission refused a pod or template.
    PodDenied,
    /// An Audit policy would have placed or refused something.
    AuditFinding,
    /// A pod outside the enclave was evicted so that its owner recreates it inside.
    PodEvicted,
    /// A pod outside the enclave is not moved (PDB, volume, no controller, conflict…).
    PodBlocked,
    /// exec, attach, port-forward or debug into an in-scope pod was allowed.
    AccessAllowed,
    /// … or denied.
    AccessDenied,
    /// The authorizer refused a read, proxy, kubelet request, impersonation or token
    /// request that reaches enclave data.
    AuthorizerDenied,
    /// … or left it to RBAC: approved staff, or an auditing policy that would refuse.
    AuthorizerNoOpinion,
    /// A managed NetworkPolicy was recreated or restored after a change.
    NetworkPolicyHealed,
    /// Someone outside the approved staff holds access to enclave data.
    ExposureFound,
    /// Pods of a namespace may take host access on an enclave's nodes: Pod Security
    /// Admission does not enforce `baseline` there ([`crate::access::host`]).
    HostAccessFound,
    /// A NetworkPolicy opens a path out of the enclave.
    NetworkLeakFound,
    /// A claim or storage class keeps (or would keep) data outside the enclave.
    VolumeOutsideEnclave,
    /// A namespace left a policy's scope: admission, the access gate and the fence no
    /// longer cover it.
    NamespaceLeftScope,
    /// The operator removed a NetworkPolicy of a namespace's fence, and why.
    FenceRemoved,
    /// A decision log chain whose writer is gone was sealed at its last checkpoint.
    ChainRetired,
    /// One of the operator's admission objects differed from what it writes (edited by
    /// hand: a match condition or selector added, a field changed) and was repaired.
    AdmissionTampered,
    /// An AccessGrant was asked for (who, what, why, for how long).
    GrantRequested,
    /// … approved by an approver of its enclave (or, break-glass, invoked).
    GrantApproved,
    /// … denied before it took effect.
    GrantDenied,
    /// … reached its expiry.
    GrantExpired,
    /// … revoked while it was active.
    GrantRevoked,
    /// … (break-glass) acknowledged by another approver.
    GrantReviewed,
    /// … could never be approved (too long, break-glass by a non-approver, no enclave).
    GrantInvalid,
    /// Repeated or unusual denied attempts by one subject: an alarm, and a lockout where
    /// the enclave asks for one.
    SuspiciousAccess,
    /// An approver cleared a lockout.
    LockoutCleared,
    /// A VolumeMigration took a step: its phase, the claim, both volumes, sizes, the
    /// manifest root hashes, the transfer's certificate fingerprints, who approved.
    VolumeMoveStep,
}

impl Kind {
    /// Decided by the controllers, which run on the leader only: such records go to the
    /// leader chain, which each new leader continues. Admission decisions are made by
    /// every replica and go to the replica's own chain.
    pub fn by_leader(self) -> bool {
        matches!(
            self,
            Kind::PodEvicted
                | Kind::PodBlocked
                | Kind::NetworkPolicyHealed
                | Kind::ExposureFound
                | Kind::HostAccessFound
                | Kind::NetworkLeakFound
                | Kind::VolumeOutsideEnclave
                | Kind::NamespaceLeftScope
                | Kind::FenceRemoved
                | Kind::ChainRetired
                | Kind::AdmissionTampered
                | Kind::GrantRequested
                | Kind::GrantApproved
                | Kind::GrantDenied
                | Kind::GrantExpired
                | Kind::GrantRevoked
                | Kind::GrantReviewed
                | Kind::GrantInvalid
                | Kind::LockoutCleared
                | Kind::VolumeMoveStep
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PodPlaced => "PodPlaced",
            Kind::PodDenied => "PodDenied",
            Kind::AuditFinding => "AuditFinding",
            Kind::PodEvicted => "PodEvicted",
            Kind::PodBlocked => "PodBlocked",
            Kind::AccessAllowed => "AccessAllowed",
            Kind::AccessDenied => "AccessDenied",
            Kind::AuthorizerDenied => "AuthorizerDenied",
            Kind::AuthorizerNoOpinion => "AuthorizerNoOpinion",
            Kind::NetworkPolicyHealed => "NetworkPolicyHealed",
            Kind::ExposureFound => "ExposureFound",
            Kind::HostAccessFound => "HostAccessFound",
            Kind::NetworkLeakFound => "NetworkLeakFound",
            Kind::VolumeOutsideEnclave => "VolumeOutsideEnclave",
            Kind::NamespaceLeftScope => "NamespaceLeftScope",
            Kind::FenceRemoved => "FenceRemoved",
            Kind::ChainRetired => "ChainRetired",
            Kind::AdmissionTampered => "AdmissionTampered",
            Kind::GrantRequested => "GrantRequested",
            Kind::GrantApproved => "GrantApproved",
            Kind::GrantDenied => "GrantDenied",
            Kind::GrantExpired => "GrantExpired",
            Kind::GrantRevoked => "GrantRevoked",
            Kind::GrantReviewed => "GrantReviewed",
            Kind::GrantInvalid => "GrantInvalid",
            Kind::SuspiciousAccess => "SuspiciousAccess",
            Kind::LockoutCleared => "LockoutCleared",
            Kind::VolumeMoveStep => "VolumeMoveStep",
        }
    }
}

/// The object a decision is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl Subject {
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

/// One decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub kind: Kind,
    /// The ResidencyPolicy (or, for access and exposure, the DataEnclave) that decided.
    pub policy: Option<String>,
    pub subject: Subject,
    pub message: String,
    /// Further structured details (user, groups, subresource, reason, …). Never secrets.
    pub details: Map<String, Value>,
}

impl Record {
    pub fn new(kind: Kind, policy: Option<&str>, subject: Subject, message: String) -> Self {
        Self {
            kind,
            policy: policy.map(str::to_string),
            subject,
            message,
            details: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// The record's fields as they go into the log line.
    pub fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        if let Some(policy) = &self.policy {
            fields.insert("policy".into(), Value::String(policy.clone()));
        }
        if let Ok(subject) = serde_json::to_value(&self.subject) {
            fields.insert("object".into(), subject);
        }
        fields.insert("message".into(), Value::String(self.message.clone()));
        for (key, value) in &self.details {
            fields.insert(key.clone(), value.clone());
        }
        fields
    }
}

/// Where decisions are recorded. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Record>,
    lost: Arc<AtomicU64>,
}

impl Sink {
    /// A sink and the receiver the writer reads from.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Record>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                lost: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Records a decision, or counts it as lost when the queue is full.
    pub fn record(&self, record: Record) {
        if self.tx.try_send(record).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records lost since the last call; the writer logs them as one record.
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }

    /// Records lost and not yet taken.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_counts_what_it_loses() {
        let (sink, mut rx) = Sink::new(2);
        for i in 0..5 {
            sink.record(Record::new(
                Kind::PodDenied,
                Some("p"),
                Subject::new("Pod", Some("ns"), &format!("pod-{i}")),
                "denied".into(),
            ));
        }
        assert_eq!(sink.lost(), 3);
        assert_eq!(sink.take_lost(), 3);
        assert_eq!(sink.take_lost(), 0);
        assert_eq!(
            rx.try_recv().map(|r| r.subject.name).ok().as_deref(),
            Some("pod-0")
        );
    }

    #[test]
    fn fields_carry_policy_object_message_and_details() {
        let record = Record::new(
            Kind::AccessDenied,
            Some("eu"),
            Subject::new("Pod", Some("shop"), "db-0"),
            "exec denied".into(),
        )
        .with("user", "mallory");
        let fields = record.fields();
        assert_eq!(fields["policy"], "eu");
        assert_eq!(fields["object"]["name"], "db-0");
        assert_eq!(fields["user"], "mallory");
    }
}
