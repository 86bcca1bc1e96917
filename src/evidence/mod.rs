//! Evidence an outside auditor can check without trusting the operator.
//!
//! - [`chain`]: every decision as one JSON line, hash-chained to the line before.
//! - [`writer`]: writes the chain to stdout (and a file), and checkpoints its head to
//!   the cluster at least every minute, so that deleting or editing stored lines is
//!   detectable against checkpoints kept elsewhere.
//! - [`verify`]: checks a log offline (`enclave-operator verify-log`).

pub mod chain;
pub mod cli;
pub mod verify;
pub mod writer;
