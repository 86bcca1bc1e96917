//! Admission, described once: [`ENTRIES`] lists every admission check — its path, the
//! requests it covers, how it fails, and its typed handler — and the router
//! ([`server::router`]), the webhook configurations ([`webhooks`]) and the native
//! admission policies ([`native`]) are all derived from it.
//!
//! Decisions are pure ([`decide`]) and read only in-memory state; the server
//! ([`server`]) is hardened against slow clients; the TLS material is shared by every
//! replica ([`certs`], [`tls`]).

pub mod certs;
pub mod decide;
pub mod doors;
pub mod native;
pub mod probe;
pub mod readback;
pub mod review;
pub mod scope_guard;
pub mod server;
pub mod tls;
pub mod webhooks;

use std::{net::SocketAddr, path::PathBuf};

/// Which mechanism enforces admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// MutatingAdmissionPolicy and ValidatingAdmissionPolicy, evaluated by the API server
    /// itself: no network hop, and enforcement holds while the operator is down.
    Native,
    /// Admission webhooks served by the operator (clusters without
    /// MutatingAdmissionPolicy v1).
    Webhook,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::Webhook => "webhook",
        }
    }
}

/// Which admission phase an entry runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Mutating,
    Validating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Mutating => "mutate",
            Phase::Validating => "validate",
        }
    }
}

/// What happens to a request when the operator cannot answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Fail closed under an enforcing policy, open under an auditing one.
    ByEnforcement,
    /// Never block: the entry only warns.
    Never,
}

/// The typed handler of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// AND the enclave into a new pod's node affinity.
    MutatePod,
    /// Check the final pod after every mutation.
    ValidatePod,
    /// Constrain a DaemonSet's pod template (its controller places pods by itself).
    MutateDaemonSet,
    /// Warn about workloads whose pods can never be placed.
    WarnWorkload,
    /// Keep claims (and StatefulSets' claim templates) on the enclave's storage.
    ValidateVolumes,
    /// Admit exec, attach, port-forward and debug containers for approved staff only.
    GateAccess,
    /// Keep pod labels from taking data out of scope ([`scope_guard`]).
    GuardScope,
}

/// The requests of one kind an entry covers.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub groups: &'static [&'static str],
    pub resources: &'static [&'static str],
    pub operations: &'static [&'static str],
}

/// One admission check.
#[derive(Debug)]
pub struct Entry {
    /// Short name: the first label of the webhook name, and the metric label.
    pub name: &'static str,
    pub phase: Phase,
    pub rules: &'static [Rule],
    pub failure: Failure,
    /// Narrowed by the policy's pod selector on the object's own labels, and not sent
    /// for requests made by nodes (mirror pods): true for pods.
    pub pod_scoped: bool,
    pub handler: Handler,
    /// Served as a webhook whatever the engine: the operator must see every such request
    /// (to record it), which a native policy would decide without it.
    pub webhook_only: bool,
}

impl Entry {
    /// The URL path of the entry on the webhook server.
    pub fn path(&self) -> String {
        format!("/{}/{}", self.phase.as_str(), self.name)
    }

    /// Are the objects of its requests ones with labels? Not for a CONNECT (its object
    /// is the options, `PodExecOptions` and the like): the API server never matches such
    /// an object against an object selector, however permissive, so a selector would keep
    /// every exec, attach and port-forward from the webhook.
    pub fn objects_have_labels(&self) -> bool {
        !self.rules.iter().any(|r| r.operations.contains(&"CONNECT"))
    }

    /// Does the policy need this entry? The scope guard only where a pod selector can
    /// leave pods of a covered namespace out.
    pub fn applies_to(&self, policy: &crate::crd::ResidencyPolicy) -> bool {
        self.handler != Handler::GuardScope || scope_guard::guarded_selector(policy).is_some()
    }

    /// The CEL conditions narrowing the entry's webhook, if any: requests made by nodes
    /// (mirror pods) never reach pod entries, and the scope guard is called only for
    /// requests it acts on.
    pub fn match_conditions(
        &self,
        policy: &crate::crd::ResidencyPolicy,
    ) -> Option<Vec<k8s_openapi::api::admissionregistration::v1::MatchCondition>> {
        if self.handler == Handler::GuardScope {
            return Some(scope_guard::match_conditions(policy));
        }
        self.pod_scoped.then(|| vec![webhooks::not_from_a_node()])
    }
}

const PODS: Rule = Rule {
    groups: &[""],
    resources: &["pods"],
    operations: &["CREATE"],
};

/// Every admission check, in the order the configurations list them.
pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "pods",
        phase: Phase::Mutating,
        rules: &[PODS],
        failure: Failure::ByEnforcement,
        pod_scoped: true,
        handler: Handler::MutatePod,
        webhook_only: false,
    },
    Entry {
        name: "daemonsets",
        phase: Phase::Mutating,
        rules: &[Rule {
            groups: &["apps"],
            resources: &["daemonsets"],
            operations: &["CREATE", "UPDATE"],
        }],
        failure: Failure::ByEnforcement,
        pod_scoped: false,
        handler: Handler::MutateDaemonSet,
        webhook_only: false,
    },
    Entry {
        name: "pods",
        phase: Phase::Validating,
        rules: &[PODS],
        failure: Failure::ByEnforcement,
        pod_scoped: true,
        handler: Handler::ValidatePod,
        webhook_only: false,
    },
    Entry {
        name: "workloads",
        phase: Phase::Validating,
        rules: &[
            Rule {
                groups: &["apps"],
                resources: &["deployments", "statefulsets", "replicasets", "daemonsets"],
                operations: &["CREATE", "UPDATE"],
            },
            Rule {
                groups: &["batch"],
                resources: &["jobs", "cronjobs"],
                operations: &["CREATE", "UPDATE"],
            },
        ],
        failure: Failure::Never,
        pod_scoped: false,
        handler: Handler::WarnWorkload,
        webhook_only: false,
    },
    Entry {
        name: "volumes",
        phase: Phase::Validating,
        rules: &[
            Rule {
                groups: &[""],
                resources: &["persistentvolumeclaims"],
                operations: &["CREATE"],
            },
            // CREATE only: claim templates are immutable (see the native policy).
            Rule {
                groups: &["apps"],
                resources: &["statefulsets"],
                operations: &["CREATE"],
            },
        ],
        failure: Failure::ByEnforcement,
        pod_scoped: false,
        handler: Handler::ValidateVolumes,
        webhook_only: false,
    },
    Entry {
        name: "scope",
        phase: Phase::Validating,
        rules: &[Rule {
            groups: &[""],
            resources: &["pods"],
            operations: &["CREATE", "UPDATE"],
        }],
        failure: Failure::ByEnforcement,
        // Namespace-wide: a copy that dropped the labels, or a pod whose labels are
        // being removed, is exactly what the pod selector would let through. Narrowed
        // by match conditions instead.
        pod_scoped: false,
        handler: Handler::GuardScope,
        webhook_only: false,
    },
    Entry {
        name: "access",
        phase: Phase::Validating,
        rules: &[
            Rule {
                groups: &[""],
                resources: &["pods/exec", "pods/attach", "pods/portforward"],
                operations: &["CONNECT"],
            },
            Rule {
                groups: &[""],
                resources: &["pods/ephemeralcontainers"],
                operations: &["UPDATE"],
            },
        ],
        failure: Failure::ByEnforcement,
        // The object of a CONNECT is its options, which carry no labels: the handler
        // reads the pod's labels from the cache.
        pod_scoped: false,
        handler: Handler::GateAccess,
        webhook_only: true,
    },
];

/// How the webhook is served and reached, and where its certificates come from.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    pub listen: SocketAddr,
    pub endpoint: webhooks::Endpoint,
    /// DNS names or IPs the serving certificate must cover (when generated).
    pub hosts: Vec<String>,
    /// A directory with tls.crt, tls.key and ca.crt (for example a cert-manager
    /// Secret); otherwise the shared Secret of [`tls`].
    pub tls_dir: Option<PathBuf>,
    /// The operator's namespace: holds the shared TLS Secret, and is never in scope.
    pub namespace: String,
    /// The Secret the replicas share their TLS material through.
    pub secret: String,
    pub limits: server::Limits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_has_its_own_path() {
        let mut paths: Vec<String> = ENTRIES.iter().map(Entry::path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), ENTRIES.len());
        assert!(paths.contains(&"/mutate/pods".to_string()));
    }
}
