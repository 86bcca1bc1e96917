//! Who may reach into the enclave's pods: the access exposure found through RBAC.

pub mod rbac;
