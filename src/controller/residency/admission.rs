//! The admission step: writes the policy's admission objects for the chosen engine
//! (webhook configurations, or native admission policies with the facts compiled in), removes the
//! other engine's once the new one is in force in the API server (probed, [`probe`]),
//! and compares what the API server holds with what it writes in full ([`readback`]),
//! repairing and recording any difference, so that `Ready` is True only when
//! enforcement is really in place.
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

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::{Api, Resource, ResourceExt, runtime::events::EventType};
use tokio::time::Instant;

use super::status::AdmissionReadiness;
use crate::{
    admission::{
        Engine, native,
        probe::{self, Verdict},
        readback::{self, Held, Tampered},
        webhooks,
    },
    context::Context,
    crd::ResidencyPolicy,
    decisions::{Kind, Record, Subject},
    names,
    scope::ResolvedEnclave,
};

/// How long admission objects written and read back in place are trusted without a
/// write, when nothing they are built from changed and none of them was touched.
pub const REWRITE_AFTER: Duration = Duration::from_secs(60);

/// What each policy's admission objects were last written from, per policy UID.
#[derive(Default)]
pub struct Writes {
    /// Bumped whenever an admission object the operator owns changes and it cannot
    /// tell whose it is: every policy writes its objects again.
    touched: AtomicU64,
    /// Bumped per policy (by name) when one of its own objects changes: only that
    /// policy writes again. A global bump for every change made each policy's write
    /// trigger a write of every other one (2–9 s of admission per pass with twenty
    /// policies).
    touched_policy: Mutex<HashMap<String, u64>>,
    /// Deletions of admission objects, per policy as touches are: a policy waiting for
    /// what it wrote to come into force stops waiting when one of its objects is
    /// deleted, and writes again at once (a deletion is never its own write).
    deleted: Mutex<HashMap<Option<String>, u64>>,
    written: Mutex<HashMap<String, Written>>,
    /// The native objects last found exactly as written ([`readback::Verified`]).
    verified: readback::Verified,
}

struct Written {
    digest: String,
    touched: u64,
    at: Instant,
    engine: &'static str,
}

impl Writes {
    /// An admission object the operator owns changed (written, edited or deleted, by
    /// anyone): `Some(policy)`, the policy it belongs to ([`touched_policy`]), writes
    /// its objects again on its next pass; `None`, every policy.
    pub fn touched(&self, policy: Option<String>, deleted: bool) {
        if deleted {
            *self
                .deleted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(policy.clone())
                .or_default() += 1;
        }
        match policy {
            Some(policy) => {
                *self
                    .touched_policy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(policy)
                    .or_default() += 1;
            }
            None => {
                self.touched.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The count of deletions that concern `policy` (its own objects' and those nobody
    /// can be sure of).
    fn deletions(&self, policy: &str) -> u64 {
        let deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        deleted.get(&None).copied().unwrap_or_default()
            + deleted
                .get(&Some(policy.to_string()))
                .copied()
                .unwrap_or_default()
    }

    /// The count of touches that concern `policy`: any change of it means a write.
    fn epoch(&self, policy: &str) -> u64 {
        let own = self
            .touched_policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(policy)
            .copied()
            .unwrap_or_default();
        self.touched.load(Ordering::SeqCst) + own
    }

    /// The engine in place, when the objects built from `digest` were written and read
    /// back in place (and in force) after the last touch, less than [`REWRITE_AFTER`] ago.
    fn in_place(&self, uid: &str, policy: &str, digest: &str) -> Option<&'static str> {
        let epoch = self.epoch(policy);
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written
            .get(uid)
            .filter(|w| w.digest == digest && w.touched == epoch && w.at.elapsed() < REWRITE_AFTER)
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

/// The policy an admission object the operator owns belongs to: the one its
/// `enclave.dev/policy-name` annotation names, but only when the object's name is one
/// the operator gives that policy's objects. Whoever edits the object can change the
/// annotation; its name cannot change, so an object relabelled to another policy (or
/// stripped of the annotation) reads as anyone's and every policy writes again. Pure.
pub fn touched_policy(
    name: &str,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<String> {
    let policy = annotations?.get(webhooks::POLICY_NAME_ANNOTATION)?;
    let own = webhooks::configuration_name(policy) == name
        || ["place", "check", "warn", "volumes", "scope"]
            .iter()
            .any(|what| native::object_name(what, policy) == name);
    own.then(|| policy.clone())
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
        webhooks::validating(policy, &target, engine, enclave.ok()),
    );
    let compiled = (engine == Engine::Native)
        .then(|| native::desired(policy, enclave, &ctx.caches, setup))
        .transpose();
    let uid = policy.uid().unwrap_or_default();
    let name = policy.name_any();
    let epoch = writes.epoch(&name);
    let digest = digest(engine, &desired, compiled.as_ref().ok());
    if let Some(engine) = digest
        .as_deref()
        .and_then(|d| writes.in_place(&uid, &name, d))
    {
        return AdmissionReadiness::InPlace { engine };
    }
    let deletions = writes.deletions(&name);
    let (readiness, tampered) = write(ctx, writes, policy, engine, desired, compiled).await;
    record_tampered(ctx, policy, &tampered).await;
    let readiness = match readiness {
        AdmissionReadiness::InPlace { engine: in_place } => {
            let deleted_since = || writes.deletions(&name) != deletions;
            in_force(ctx, policy, engine, in_place, deleted_since).await
        }
        not => not,
    };
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

/// How long one pass waits for a new engine to come into force before it reports the
/// switch as under way (the old engine stays; the next pass probes again).
const SWITCH_WAIT: Duration = Duration::from_secs(10);

/// Between probes of a switch.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The reason a policy is not Ready while its engine switches.
pub const ENGINE_SWITCHING: &str = "EngineSwitching";

/// Writes the policy's admission objects for `engine`, and removes the other engine's
/// only once the new one is in force in the API server ([`probe`]): never a moment
/// without enforcement. Returns the readiness and the objects found edited (repaired).
async fn write(
    ctx: &Context,
    writes: &Writes,
    policy: &ResidencyPolicy,
    engine: Engine,
    desired: (
        Option<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>,
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    ),
    compiled: Result<Option<native::Compiled>, native::Error>,
) -> (AdmissionReadiness, Vec<Tampered>) {
    let name = policy.name_any();
    let mut tampered = Vec::new();
    match engine {
        Engine::Native => {
            // 1. The native objects, while the webhooks (if any) still enforce.
            let native_ready = match compiled {
                Ok(Some(compiled)) => {
                    native::apply(&ctx.client, policy, compiled, &writes.verified)
                        .await
                        .map(|found| tampered.extend(found))
                }
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            };
            let native_ready = native_readiness(native_ready);
            if !matches!(native_ready, AdmissionReadiness::InPlace { .. }) {
                return (native_ready, tampered);
            }
            // 2. Coming from webhooks: they stay until the native policies refuse.
            let held = webhooks::pods_held(&ctx.client, &name).await;
            let old = format!(
                "the webhook configurations {}",
                webhooks::configuration_name(&name)
            );
            if let Err(switching) = leave_old_engine(ctx, policy, Engine::Native, held, old).await {
                return (switching, tampered);
            }
            // 3. The webhooks this engine keeps (access), which drops the pod webhooks.
            let webhooks_ready = write_webhooks(ctx, &name, engine, desired, &mut tampered).await;
            let readiness = match (native_ready, webhooks_ready) {
                (AdmissionReadiness::InPlace { .. }, AdmissionReadiness::InPlace { .. }) => {
                    AdmissionReadiness::InPlace { engine: "native" }
                }
                (AdmissionReadiness::InPlace { .. }, not) | (not, _) => not,
            };
            (readiness, tampered)
        }
        Engine::Webhook => {
            let webhooks_ready = write_webhooks(ctx, &name, engine, desired, &mut tampered).await;
            if !matches!(webhooks_ready, AdmissionReadiness::InPlace { .. })
                || !ctx.admission.native_served
            {
                return (webhooks_ready, tampered);
            }
            // Coming from the native engine: its policies stay until the webhooks refuse.
            let held = native::held(&ctx.client, &name).await;
            let old = format!(
                "the native admission policy {}",
                native::object_name("check", &name)
            );
            if let Err(switching) = leave_old_engine(ctx, policy, Engine::Webhook, held, old).await
            {
                return (switching, tampered);
            }
            if let Err(error) = native::delete(&ctx.client, &name).await {
                tracing::debug!(%error, policy = %name, "could not remove native admission objects");
            }
            (webhooks_ready, tampered)
        }
    }
}

/// How long one pass waits for what it wrote to come into force in the API server
/// before it reports the policy not Ready (the next pass, soon after, probes again).
const IN_FORCE_WAIT: Duration = Duration::from_secs(5);

/// The reason a policy is not Ready while the API server has not loaded what was written.
pub const NOT_YET_IN_FORCE: &str = "NotYetInForce";

/// Written and read back is not enforced: the API server loads admission objects
/// through its own informers a moment later. Waits (up to [`IN_FORCE_WAIT`]) until every
/// part of the policy is observed in force ([`probe::in_force`]), so that `Ready` means
/// what a user creating a pod or a claim next will meet.
async fn in_force(
    ctx: &Context,
    policy: &ResidencyPolicy,
    engine: Engine,
    in_place: &'static str,
    deleted_since: impl Fn() -> bool,
) -> AdmissionReadiness {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        // An admission object deleted since the write: the next pass writes it again
        // (its deletion touched the policies); waiting here would only hold that back.
        if deleted_since() {
            return AdmissionReadiness::NotInPlace {
                reason: NOT_YET_IN_FORCE,
                message: "an admission object was deleted while the ones written came into force: writing again".into(),
            };
        }
        match probe::in_force(&ctx.client, &ctx.caches, policy, engine).await {
            Verdict::InForce | Verdict::Nothing(_) => {
                tracing::debug!(waited = ?started.elapsed(), last, "admission in force");
                return AdmissionReadiness::InPlace { engine: in_place };
            }
            Verdict::NotYet(why) if started.elapsed() >= IN_FORCE_WAIT => {
                return AdmissionReadiness::NotInPlace {
                    reason: NOT_YET_IN_FORCE,
                    message: format!(
                        "the admission objects are written, but not yet in force in the API server: {why}"
                    ),
                };
            }
            Verdict::NotYet(why) => {
                last = why;
                tokio::time::sleep(PROBE_EVERY).await
            }
        }
    }
}

/// Coming from the other engine, whose objects (`old`, for the message) still hold the
/// pods (`held`, as read): they may go only once `engine` is in force ([`switched`]).
/// Not held: nothing to wait for. Unreadable: not in place, as a failed write is.
async fn leave_old_engine(
    ctx: &Context,
    policy: &ResidencyPolicy,
    engine: Engine,
    held: Result<bool, kube::Error>,
    old: String,
) -> Result<(), AdmissionReadiness> {
    match held {
        Ok(false) => Ok(()),
        Ok(true) => switched(ctx, policy, engine).await,
        Err(error) => Err(AdmissionReadiness::NotInPlace {
            reason: "AdmissionWriteFailed",
            message: format!("could not read {old}: {error}"),
        }),
    }
}

/// Waits (up to [`SWITCH_WAIT`]) until `engine` refuses the probe for `policy`.
async fn switched(
    ctx: &Context,
    policy: &ResidencyPolicy,
    engine: Engine,
) -> Result<(), AdmissionReadiness> {
    let started = Instant::now();
    loop {
        match probe::probe(&ctx.client, &ctx.caches, policy, engine).await {
            Verdict::InForce => {
                tracing::info!(engine = engine.as_str(), waited = ?started.elapsed(), "the new admission engine is in force: removing the old one");
                return Ok(());
            }
            Verdict::Nothing(why) => {
                tracing::info!(
                    engine = engine.as_str(),
                    why,
                    "nothing to probe: switching engines"
                );
                return Ok(());
            }
            Verdict::NotYet(why) if started.elapsed() >= SWITCH_WAIT => {
                let old = match engine {
                    Engine::Native => "webhook",
                    Engine::Webhook => "native",
                };
                return Err(AdmissionReadiness::NotInPlace {
                    reason: ENGINE_SWITCHING,
                    message: format!(
                        "switching to the {} admission engine: {why}; the {old} engine stays in force until it is",
                        engine.as_str()
                    ),
                });
            }
            Verdict::NotYet(_) => tokio::time::sleep(PROBE_EVERY).await,
        }
    }
}

fn native_readiness(result: Result<(), native::Error>) -> AdmissionReadiness {
    match result {
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
    }
}

/// Writes the webhook configurations `engine` needs and compares them in full.
async fn write_webhooks(
    ctx: &Context,
    name: &str,
    engine: Engine,
    desired: (
        Option<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>,
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    ),
    tampered: &mut Vec<Tampered>,
) -> AdmissionReadiness {
    let (mutating_hash, validating_hash);
    let desired = {
        let mutating = desired.0.map(readback::stamp);
        let (validating, hash) = readback::stamp(desired.1);
        mutating_hash = mutating
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_default();
        validating_hash = hash;
        (mutating.map(|(m, _)| m), validating)
    };
    // What was held before, to tell what the write itself takes back.
    let config = webhooks::configuration_name(name);
    let before = futures::future::try_join(
        Api::<MutatingWebhookConfiguration>::all(ctx.client.clone()).get_opt(&config),
        Api::<ValidatingWebhookConfiguration>::all(ctx.client.clone()).get_opt(&config),
    )
    .await;
    let (mutating_before, validating_before) = match before {
        Ok(before) => before,
        Err(error) => {
            return AdmissionReadiness::NotInPlace {
                reason: "AdmissionWriteFailed",
                message: format!("could not read the webhook configurations {config}: {error}"),
            };
        }
    };
    let applied = match webhooks::apply(&ctx.client, desired.0.as_ref(), &desired.1).await {
        Ok(applied) => applied,
        Err(error) => {
            return AdmissionReadiness::NotInPlace {
                reason: "AdmissionWriteFailed",
                message: format!(
                    "could not write the webhook configurations {}: {error}",
                    webhooks::configuration_name(name)
                ),
            };
        }
    };
    if !webhooks::in_place(
        (applied.0.as_ref(), &applied.1),
        (desired.0.as_ref(), &desired.1),
    ) {
        return AdmissionReadiness::NotInPlace {
            reason: "AdmissionNotInPlace",
            message: format!(
                "the webhook configurations {} read back differ from what was written",
                webhooks::configuration_name(name)
            ),
        };
    }
    let mutating = match (&applied.0, &desired.0) {
        (Some(applied), Some(desired)) => Some(
            readback::verify(
                &ctx.client,
                "MutatingWebhookConfiguration",
                "/webhooks",
                (mutating_before.as_ref(), &mutating_hash),
                applied,
                desired,
            )
            .await,
        ),
        _ => None,
    };
    let validating = readback::verify(
        &ctx.client,
        "ValidatingWebhookConfiguration",
        "/webhooks",
        (validating_before.as_ref(), &validating_hash),
        &applied.1,
        &desired.1,
    )
    .await;
    for held in mutating.into_iter().chain([validating]) {
        match held {
            Ok(Held::Exact) => {}
            Ok(Held::Repaired(found)) => tampered.push(found),
            Err(error) => {
                return AdmissionReadiness::NotInPlace {
                    reason: "AdmissionNotInPlace",
                    message: error.to_string(),
                };
            }
        }
    }
    AdmissionReadiness::InPlace {
        engine: engine.as_str(),
    }
}

/// Records each object found edited (decision log and an Event on the policy).
async fn record_tampered(ctx: &Context, policy: &ResidencyPolicy, tampered: &[Tampered]) {
    let name = policy.name_any();
    let reference = policy.object_ref(&());
    for found in tampered {
        let message = format!("policy {name}: {}", found.message());
        ctx.sink.record(
            Record::new(
                Kind::AdmissionTampered,
                Some(&name),
                Subject::new(found.kind, None, &found.name),
                message.clone(),
            )
            .with("differences", found.fields.clone()),
        );
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("admissionregistration.k8s.io/v1".into()),
            kind: Some(found.kind.into()),
            name: Some(found.name.clone()),
            ..Default::default()
        };
        crate::controller::publish_related(
            ctx,
            &reference,
            Some(related),
            EventType::Warning,
            "AdmissionTampered",
            "Repair",
            message,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn objects_are_written_again_only_when_changed_touched_or_a_minute_old() {
        let writes = Writes::default();
        let in_place = |digest: &str| writes.in_place("uid", "p", digest);
        assert_eq!(in_place("a"), None, "never written");
        writes.remember("uid".into(), "a".into(), writes.epoch("p"), "native");
        assert_eq!(in_place("a"), Some("native"));
        assert_eq!(in_place("b"), None, "what to write changed");
        assert_eq!(writes.in_place("other", "q", "a"), None, "another policy");

        // A touch while a write is on its way: the epoch read before it is remembered.
        let before = writes.epoch("p");
        writes.touched(None, false);
        writes.remember("uid".into(), "a".into(), before, "native");
        assert_eq!(in_place("a"), None, "touched during the write");
        writes.remember("uid".into(), "a".into(), writes.epoch("p"), "native");
        assert_eq!(in_place("a"), Some("native"));

        tokio::time::advance(REWRITE_AFTER - Duration::from_secs(1)).await;
        assert_eq!(in_place("a"), Some("native"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(in_place("a"), None, "a minute old");

        writes.remember("uid".into(), "a".into(), writes.epoch("p"), "webhook");
        writes.forget("uid");
        assert_eq!(in_place("a"), None, "a failed write is forgotten");
    }

    #[test]
    fn a_touch_of_one_policys_objects_makes_only_that_policy_write_again() {
        let writes = Writes::default();
        writes.remember("uid-p".into(), "a".into(), writes.epoch("p"), "native");
        writes.remember("uid-q".into(), "a".into(), writes.epoch("q"), "native");
        writes.touched(Some("q".into()), false);
        assert_eq!(writes.in_place("uid-p", "p", "a"), Some("native"));
        assert_eq!(
            writes.in_place("uid-q", "q", "a"),
            None,
            "q's object changed"
        );
        writes.touched(None, false);
        assert_eq!(
            writes.in_place("uid-p", "p", "a"),
            None,
            "an object nobody can be sure of: everyone writes"
        );
    }

    #[test]
    fn only_deletions_of_a_policys_objects_or_unknown_ones_concern_it() {
        let writes = Writes::default();
        let before = writes.deletions("p");
        writes.touched(Some("p".into()), false);
        writes.touched(Some("q".into()), true);
        assert_eq!(writes.deletions("p"), before, "an edit, and q's deletion");
        writes.touched(Some("p".into()), true);
        assert_eq!(writes.deletions("p"), before + 1);
        writes.touched(None, true);
        assert_eq!(writes.deletions("p"), before + 2, "nobody's: everyone's");
    }

    #[test]
    fn an_object_belongs_to_a_policy_only_under_a_name_the_operator_gives_it() {
        let annotated = |policy: &str| {
            Some(
                [(
                    webhooks::POLICY_NAME_ANNOTATION.to_string(),
                    policy.to_string(),
                )]
                .into(),
            )
        };
        for name in [
            native::object_name("check", "p"),
            native::object_name("place", "p"),
            native::object_name("scope", "p"),
            webhooks::configuration_name("p"),
        ] {
            assert_eq!(
                touched_policy(&name, annotated("p").as_ref()),
                Some("p".into()),
                "{name}"
            );
        }
        // Relabelled to another policy: nobody's, so everyone writes again.
        assert_eq!(
            touched_policy(&native::object_name("check", "p"), annotated("q").as_ref()),
            None
        );
        assert_eq!(
            touched_policy(&native::object_name("check", "p"), None),
            None
        );
    }
}
