//! The integration suite against a real control plane, in one test binary so that it
//! shares one operator (run with the chart's own RBAC when `make test` drives it) and
//! runs its tests in parallel. Tests that change shared nodes take the cluster lock
//! exclusively; the others share it.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod admission;
mod audit;
mod auditsink;
mod authorizer;
mod grants;
mod hardening;
mod migration;
mod native;
mod network;
mod sites;
mod validation;
