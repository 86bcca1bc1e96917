//! The `enclave-operator` binary: parses the command line and starts the library's
//! controllers and servers.

use std::{net::SocketAddr, sync::Arc};

use clap::{Parser, Subcommand};
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
    /// Log format.
    #[arg(long, env = "ENCLAVE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: telemetry::LogFormat,
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
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let caches = Caches::start(&client);
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), caches));
    tracing::info!("enclave-operator starting");

    let server = tokio::spawn(http::serve(args.metrics_addr, metrics));
    tokio::select! {
        () = controller::sites::run(client, ctx) => tracing::info!("controllers stopped"),
        result = server => match result {
            Ok(Err(error)) => return Err(format!("metrics server on {}: {error}", args.metrics_addr).into()),
            _ => tracing::info!("metrics server stopped"),
        },
    }
    Ok(())
}
