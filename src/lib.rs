//! enclave-operator keeps the pods, volumes and network paths that carry a
//! jurisdiction's personal data inside a data enclave on Kubernetes, and reports it.
//!
//! Where things are decided:
//! - [`crd`]: the DataEnclave and ResidencyPolicy resources.
//! - [`selector`]: label selector matching, shared by every decision.
//! - [`conditions`]: the standard status condition bookkeeping.
//! - [`controller`]: reconcilers, one per concern (sites).
//! - [`context`]: what the controllers and servers share.

pub mod admission;
pub mod cache;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod http;
pub mod metrics;
pub mod placement;
pub mod scope;
pub mod selector;
pub mod telemetry;
