//! The admission step: writes the policy's admission objects for the chosen engine
//! (webhook configurations, or native admission policies with the facts compiled in), removes the
//! other engine's, and reads back what the API server holds, so that `Ready` is True
//! only when enforcement is really in place.

use kube::ResourceExt;

use super::status::AdmissionReadiness;
use crate::{
    admission::{Engine, native, webhooks},
    context::Context,
    crd::ResidencyPolicy,
    scope::ResolvedEnclave,
};

/// Writes and reads back the policy's admission objects.
pub async fn ensure(
    ctx: &Context,
    policy: &ResidencyPolicy,
    enclave: Result<&ResolvedEnclave, &str>,
) -> AdmissionReadiness {
    let name = policy.name_any();
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
    match engine {
        Engine::Webhook => {
            if setup.native_served
                && let Err(error) = native::delete(&ctx.client, &name).await
            {
                tracing::debug!(%error, policy = %name, "could not remove native admission objects");
            }
            webhooks_ready
        }
        Engine::Native => {
            let native_ready = match native::apply(&ctx.client, policy, enclave, &ctx.caches, setup)
                .await
            {
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
    }
}
