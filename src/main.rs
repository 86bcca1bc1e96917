//! The `enclave-operator` binary: parses the command line and starts the library's
//! controllers and servers.

use std::{net::SocketAddr, sync::Arc};

use clap::{Parser, Subcommand};
use enclave_operator::admission::{self, WebhookOptions, config::Endpoint};
use enclave_operator::{
    cache::Caches, context::Context, controller, crd, http, metrics::Metrics, telemetry,
};

#[derive(Parser)]
#[command(
    name = "enclave-operator",
    version,
    about = "Keeps personal data inside a jurisdiction's enclave on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition as YAML (what `crds/` holds).
    Crd,
    /// Run the controllers against the cluster of the current kubeconfig or service account.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the plain-HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "ENCLAVE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address the admission webhook server (HTTPS) listens on.
    #[arg(long, env = "ENCLAVE_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    /// Reach the webhook at this base URL (e.g. https://127.0.0.1:8443) instead of
    /// through a Service: for an operator running outside the cluster.
    #[arg(long, env = "ENCLAVE_WEBHOOK_URL", conflicts_with = "webhook_service")]
    webhook_url: Option<String>,
    /// The Service in front of the operator, as namespace/name:port.
    #[arg(long, env = "ENCLAVE_WEBHOOK_SERVICE")]
    webhook_service: Option<String>,
    /// Directory with tls.crt, tls.key and ca.crt (e.g. a cert-manager Secret). Without
    /// it, certificates are generated and rotated in memory.
    #[arg(long, env = "ENCLAVE_WEBHOOK_TLS_DIR")]
    webhook_tls_dir: Option<std::path::PathBuf>,
    /// The operator's namespace: excluded from every webhook.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "ENCLAVE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: telemetry::LogFormat,
}

/// Where the API server reaches the webhook, and the names its certificate covers.
fn webhook_options(args: &RunArgs) -> Result<WebhookOptions, String> {
    let (endpoint, hosts) = match (&args.webhook_url, &args.webhook_service) {
        (Some(url), _) => {
            let host = url
                .strip_prefix("https://")
                .and_then(|rest| rest.split(['/', ':']).next())
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    format!("--webhook-url must look like https://HOST:PORT, got {url:?}")
                })?;
            (
                Endpoint::Url(url.trim_end_matches('/').to_string()),
                vec![host.to_string()],
            )
        }
        (None, Some(service)) => {
            let parse = || -> Option<(String, String, i32)> {
                let (namespace, rest) = service.split_once('/')?;
                let (name, port) = rest.split_once(':')?;
                Some((namespace.into(), name.into(), port.parse().ok()?))
            };
            let (namespace, name, port) = parse().ok_or_else(|| {
                format!("--webhook-service must look like NAMESPACE/NAME:PORT, got {service:?}")
            })?;
            let hosts = vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
            ];
            (
                Endpoint::Service {
                    namespace,
                    name,
                    port,
                },
                hosts,
            )
        }
        (None, None) => return Err(
            "set --webhook-url (operator outside the cluster) or --webhook-service (in a cluster)"
                .into(),
        ),
    };
    Ok(WebhookOptions {
        listen: args.webhook_addr,
        endpoint,
        hosts,
        tls_dir: args.webhook_tls_dir.clone(),
        operator_namespace: args.namespace.clone(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", crd::all_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init(args.log_format);
    // One TLS crypto provider for the kube client and the webhook server.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let caches = Caches::start(&client);
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), caches));
    tracing::info!("enclave-operator starting");

    let webhook = webhook_options(&args)?;
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        metrics.clone(),
        ctx.caches.clone(),
    ));
    let admission = tokio::spawn(admission::run(
        client.clone(),
        ctx.caches.clone(),
        ctx.recorder.clone(),
        metrics.admission.clone(),
        webhook,
    ));
    tokio::select! {
        () = controller::sites::run(client.clone(), ctx.clone()) => tracing::info!("controllers stopped"),
        () = controller::residency::run(client, ctx) => tracing::info!("controllers stopped"),
        result = admission => match result {
            Ok(Err(error)) => return Err(error.into()),
            _ => tracing::info!("webhook server stopped"),
        },
        result = server => match result {
            Ok(Err(error)) => return Err(format!("metrics server on {}: {error}", args.metrics_addr).into()),
            _ => tracing::info!("metrics server stopped"),
        },
    }
    Ok(())
}
