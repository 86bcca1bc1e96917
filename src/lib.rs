//! enclave-operator keeps the pods, volumes and network paths that carry a
//! jurisdiction's personal data inside a data enclave on Kubernetes, and proves it.
//!
//! Where things are decided:
//! - [`crd`]: the DataEnclave and ResidencyPolicy resources.
//! - [`placement`]: the affinity algebra (pure).
//! - [`admission`]: admission described once, served as webhooks or compiled into
//!   native admission policies.
//! - [`controller`]: reconcilers, one per concern (sites, residency).
//! - [`catalog`]: the one index of cluster state every decision reads; [`cache`]: the
//!   watches behind it; [`scope`]: the policies covering an object, resolved from it;
//!   [`coverage`]: the pure predicates under both (what a policy covers), so that the
//!   caches need not import the catalog built on them.
//! - [`decisions`] and [`evidence`]: every decision recorded, hash-chained, checkpointed;
//!   [`auditsink`]: the native engine's decisions, from the API server's audit events.
//! - [`network`] and [`access`]: the network fence and the access exposure (pure).
//! - [`volume_move`]: moving a claim's data into the enclave, the VolumeMigration state
//!   machine and the content manifest (pure; the controller is not built yet).
//! - [`names`], [`selector`], [`conditions`]: leaves shared by all.

pub mod access;
pub mod admission;
pub mod audit;
pub mod auditsink;
pub mod authz;
pub mod cache;
pub mod catalog;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod coverage;
pub mod crd;
pub mod decisions;
pub mod evidence;
pub mod grants;
pub mod http;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod network;
pub mod placement;
pub mod scope;
pub mod selector;
pub mod shutdown;
pub mod telemetry;
pub mod volume_move;
pub mod volumes;
