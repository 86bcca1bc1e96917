//! The admission step: writes the policy's admission objects for the chosen engine
//! (webhook configurations, or native admission policies with the facts compiled in), removes the
//! other engine's, and reads back what the API server holds, so that `Ready` is True
//! only when enforcement is really in place.
//!
//! A pass writes them only when something they are built from changed, when one of the
//! operator's admission objects was touched (edited or deleted by hand, or its watch
//! restarted), or once a minute ([`Writes`]). Passes run every few hundred milliseconds
//! while pods move, and up to eight server-side applies per pass held every pass
//! (and so the status, and detection) back by 150–700 ms on a busy API server.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use kube::ResourceExt;
use tokio::time::Instant;

use super::status::AdmissionReadiness;
use crate::{
    admission::{Engine, native, webhooks},
    context::Context,
    crd::ResidencyPolicy,
    names,
    scope::ResolvedEnclave,
};

/// How long admission objects written and read back in place are trusted without a
/// write, when nothing they are built from changed and none of them was touched.
pub const REWRITE_AFTER: Duration = Duration::from_secs(60);

/// What each policy's admission objects were last written from, per policy UID.
#[derive(Default)]
pub struct Writes {
    /// Bumped whenever one of the operator's admission objects changes.
    touched: AtomicU64,
    written: Mutex<HashMap<String, Written>>,
}

struct Written {
    digest: String,
    touched: u64,
    at: Instant,
    engine: &'static str,
}

impl Writes {
    /// An admission object the operator owns changed (written, edited or deleted, by
    /// anyone): every policy writes its objects again on its next pass.
    pub fn touched(&self) {
        self.touched.fetch_add(1, Ordering::SeqCst);
    }

    fn epoch(&self) -> u64 {
        self.touched.load(Ordering::SeqCst)
    }

    /// The engine in place, when the objects built from `digest` were written and read
    /// back in place after the last touch, less than [`REWRITE_AFTER`] ago.
    fn in_place(&self, uid: &str, digest: &str) -> Option<&'static str> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written
            .get(uid)
            .filter(|w| {
                w.digest == digest && w.touched == self.epoch() && w.at.elapsed() < REWRITE_AFTER
            })
            .map(|w| w.engine)
    }

    /// Remembers a write that was read back in place. `touched` is the epoch read
    /// before writing: a touch during the write forces the next pass to write again.
    fn remember(&self, uid: String, digest: String, touched: u64, engine: &'static str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                uid,
                Written {
                    digest,
                    touched,
                    at: Instant::now(),
                    engine,
                },
            );
    }

    /// Forgets a policy's last write (it failed or was not in place). Entries of deleted
    /// policies stay until the term ends: a few dozen bytes each.
    fn forget(&self, uid: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

/// Writes and reads back the policy's admission objects, unless [`Writes`] knows them
/// to be in place as they would be written now.
pub async fn ensure(
    ctx: &Context,
    writes: &Writes,
    policy: &ResidencyPolicy,
    enclave: Result<&ResolvedEnclave, &str>,
) -> AdmissionReadiness {
    let setup = &ctx.admission;
    let engine = setup.engine_of(policy);
    if engine == Engine::Native && !setup.native_served {
        return AdmissionReadiness::NotInPlace {
            reason: "EngineUnavailable",
            message: "spec.admission.engine is Native, but this API server does not serve MutatingAdmissionPolicy v1 (Kubernetes 1.36+): use Webhook".into(),
        };
    }
    // Webhooks: every entry under the webhook engine; under the native one only those
    // the operator must see (access attempts, to record them).
    let target = setup.target();
    let desired = (
        webhooks::mutating(policy, &target, engine),
        webhooks::validating(policy, &target, engine),
    );
    let compiled = (engine == Engine::Native)
        .then(|| native::desired(policy, enclave, &ctx.caches, setup))
        .transpose();
    let uid = policy.uid().unwrap_or_default();
    let epoch = writes.epoch();
    let digest = digest(engine, &desired, compiled.as_ref().ok());
    if let Some(engine) = digest.as_deref().and_then(|d| writes.in_place(&uid, d)) {
        return AdmissionReadiness::InPlace { engine };
    }
    let readiness = write(ctx, policy, engine, desired, compiled).await;
    match (&readiness, digest) {
        (AdmissionReadiness::InPlace { engine }, Some(digest)) => {
            writes.remember(uid, digest, epoch, engine);
        }
        _ => writes.forget(&uid),
    }
    readiness
}

/// A digest of everything a write sends; `None` when it cannot be taken (never
/// remembered then).
fn digest(
    engine: Engine,
    webhooks: &impl serde::Serialize,
    native: Option<&Option<native::Compiled>>,
) -> Option<String> {
    let native = native?;
    let text = serde_json::to_string(&(engine.as_str(), webhooks, native)).ok()?;
    Some(names::short_hash(&text))
}

async fn write(
    ctx: &Context,
    policy: &ResidencyPolicy,
    engine: Engine,
    desired: (
        Option<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>,
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    ),
    compiled: Result<Option<native::Compiled>, native::Error>,
) -> AdmissionReadiness {
    let name = policy.name_any();
    let setup = &ctx.admission;
    let webhooks_ready = match webhooks::apply(&ctx.client, desired.0.as_ref(), &desired.1).await {
        Ok(applied)
            if webhooks::in_place(
                (applied.0.as_ref(), &applied.1),
                (desired.0.as_ref(), &desired.1),
            ) =>
        {
            AdmissionReadiness::InPlace {
                engine: engine.as_str(),
            }
        }
        Ok(_) => AdmissionReadiness::NotInPlace {
            reason: "AdmissionNotInPlace",
            message: format!(
                "the webhook configurations {} read back differ from what was written",
                webhooks::configuration_name(&name)
            ),
        },
        Err(error) => AdmissionReadiness::NotInPlace {
            reason: "AdmissionWriteFailed",
            message: format!(
                "could not write the webhook configurations {}: {error}",
                webhooks::configuration_name(&name)
            ),
        },
    };
    let native_ready = match compiled {
        Ok(None) => {
            if setup.native_served
                && let Err(error) = native::delete(&ctx.client, &name).await
            {
                tracing::debug!(%error, policy = %name, "could not remove native admission objects");
            }
            return webhooks_ready;
        }
        Ok(Some(compiled)) => native::apply(&ctx.client, policy, compiled).await,
        Err(error) => Err(error),
    };
    let native_ready = match native_ready {
        Ok(()) => AdmissionReadiness::InPlace { engine: "native" },
        Err(native::Error::NotInPlace(message)) => AdmissionReadiness::NotInPlace {
            reason: "AdmissionNotInPlace",
            message,
        },
        Err(native::Error::Unrepresentable(message)) => AdmissionReadiness::NotInPlace {
            reason: "Unrepresentable",
            message,
        },
        Err(error) => AdmissionReadiness::NotInPlace {
            reason: "AdmissionWriteFailed",
            message: error.to_string(),
        },
    };
    match (native_ready, webhooks_ready) {
        (AdmissionReadiness::InPlace { .. }, AdmissionReadiness::InPlace { .. }) => {
            AdmissionReadiness::InPlace { engine: "native" }
        }
        (AdmissionReadiness::InPlace { .. }, not) | (not, _) => not,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn objects_are_written_again_only_when_changed_touched_or_a_minute_old() {
        let writes = Writes::default();
        assert_eq!(writes.in_place("uid", "a"), None, "never written");
        writes.remember("uid".into(), "a".into(), writes.epoch(), "native");
        assert_eq!(writes.in_place("uid", "a"), Some("native"));
        assert_eq!(writes.in_place("uid", "b"), None, "what to write changed");
        assert_eq!(writes.in_place("other", "a"), None, "another policy");

        // A touch while a write is on its way: the epoch read before it is remembered.
        let before = writes.epoch();
        writes.touched();
        writes.remember("uid".into(), "a".into(), before, "native");
        assert_eq!(
            writes.in_place("uid", "a"),
            None,
            "touched during the write"
        );
        writes.remember("uid".into(), "a".into(), writes.epoch(), "native");
        assert_eq!(writes.in_place("uid", "a"), Some("native"));

        tokio::time::advance(REWRITE_AFTER - Duration::from_secs(1)).await;
        assert_eq!(writes.in_place("uid", "a"), Some("native"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(writes.in_place("uid", "a"), None, "a minute old");

        writes.remember("uid".into(), "a".into(), writes.epoch(), "webhook");
        writes.forget("uid");
        assert_eq!(
            writes.in_place("uid", "a"),
            None,
            "a failed write is forgotten"
        );
    }
}
