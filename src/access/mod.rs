//! Who may reach into the enclave's pods: the access exposure found through RBAC, and
//! the namespaces whose pods may reach its nodes themselves.

pub mod host;
pub mod rbac;
