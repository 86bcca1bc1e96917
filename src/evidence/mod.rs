//! Evidence an outside auditor can check without trusting the operator.
//!
//! - [`chain`]: every decision as one JSON line, hash-chained to the line before.
//! - [`writer`]: writes the chain to stdout (and a file), and checkpoints its head to
//!   the cluster at least every minute, so that deleting or editing stored lines is
//!   detectable against checkpoints kept elsewhere.
//! - [`checkpoints`]: the checkpoints ConfigMap kept bounded, chains retired when their
//!   writer is gone; [`health`]: whether this process's checkpoints are stored.
//! - [`verify`]: checks a log offline (`enclave-operator verify-log`).

pub mod chain;
pub mod checkpoints;
pub mod cli;
pub mod health;
pub mod verify;
pub mod writer;
