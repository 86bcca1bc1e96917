//! The `enclave-operator` binary: parses the command line and starts the library's
//! controllers and servers.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use enclave_operator::{
    admission::{self, Engine, WebhookOptions, certs, native, server, webhooks::Endpoint},
    auditsink, authz,
    cache::{self, Caches},
    context::{AdmissionSetup, Context},
    controller, crd, decisions, evidence, http, leader,
    metrics::Metrics,
    shutdown, telemetry,
};
use k8s_openapi::{api::rbac::v1::ClusterRole, apimachinery::pkg::apis::meta::v1::OwnerReference};

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
    Run(Box<RunArgs>),
    /// Check a decision log offline: the hash chain, the sequence, and the checkpoints.
    VerifyLog(evidence::cli::VerifyArgs),
    /// Report, read-only, whether every policy holds: Markdown and/or JSON; exit 0 all
    /// green, 1 findings, 2 no report.
    Audit(enclave_operator::audit::AuditArgs),
    /// Print the API server's AuthorizationConfiguration (`--authorization-config`) that
    /// puts the operator's authorizer between Node and RBAC, and with `--url` the
    /// kubeconfig it names. See README, "The authorizer".
    AuthorizationConfig(AuthorizationConfigArgs),
    /// Print the API server's audit policy (`--audit-policy-file`) that sends the
    /// operator the requests its native admission policies decide, and with `--url` the
    /// audit webhook's kubeconfig (`--audit-webhook-config-file`). See README, "Native
    /// decisions in the decision log".
    AuditSinkConfig(AuditSinkConfigArgs),
    /// Move a volume's data (the mover pods of a VolumeMigration run this): `receive`
    /// in the enclave, `send` next to the source volume.
    Mover(enclave_operator::volume_move::mover::MoverArgs),
}

#[derive(clap::Args)]
struct AuditSinkConfigArgs {
    /// The operator's namespace (never in scope: its requests are not sent).
    #[arg(long, default_value = "enclave-system")]
    namespace: String,
    /// Print the kubeconfig instead, for the operator's audit sink at this base URL
    /// (e.g. https://10.96.0.21:443 or https://127.0.0.1:16445).
    #[arg(long)]
    url: Option<String>,
    /// With --url: the CA file the API server verifies the sink's certificate with.
    #[arg(long, default_value = "/etc/kubernetes/enclave-audit-sink-ca.crt")]
    ca_file: String,
    /// With --url: the API server's client certificate for the sink.
    #[arg(long, default_value = "/etc/kubernetes/pki/enclave-audit-client.crt")]
    client_cert: String,
    /// With --url: its key.
    #[arg(long, default_value = "/etc/kubernetes/pki/enclave-audit-client.key")]
    client_key: String,
}

#[derive(clap::Args)]
struct AuthorizationConfigArgs {
    /// The operator's namespace (its requests never wait on the operator).
    #[arg(long, default_value = "enclave-system")]
    namespace: String,
    /// Where the API server reads the kubeconfig of the webhook.
    #[arg(long, default_value = "/etc/kubernetes/enclave-authorizer.kubeconfig")]
    kubeconfig: String,
    /// Print the kubeconfig instead, for the operator at this base URL (e.g.
    /// https://10.96.0.20:443 or https://127.0.0.1:16444).
    #[arg(long)]
    url: Option<String>,
    /// With --url: the CA file the API server verifies the operator's certificate with.
    #[arg(long, default_value = "/etc/kubernetes/enclave-authorizer-ca.crt")]
    ca_file: String,
}

/// Which admission engine to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum AdmissionChoice {
    /// Native where the API server serves MutatingAdmissionPolicy v1, webhooks otherwise.
    #[default]
    Auto,
    Native,
    Webhook,
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
    /// it, the replicas share a CA through the Secret --webhook-secret.
    #[arg(long, env = "ENCLAVE_WEBHOOK_TLS_DIR")]
    webhook_tls_dir: Option<std::path::PathBuf>,
    /// The Secret (in --namespace) through which replicas share the webhook's CA.
    #[arg(
        long,
        env = "ENCLAVE_WEBHOOK_SECRET",
        default_value = "enclave-operator-webhook-ca"
    )]
    webhook_secret: String,
    /// Most connections the webhook server holds open at once.
    #[arg(long, default_value_t = server::Limits::default().max_connections)]
    webhook_max_connections: usize,
    /// Seconds an idle webhook connection is kept (longer than the API server's 90 s).
    #[arg(long, default_value_t = server::Limits::default().idle_timeout.as_secs_f64())]
    webhook_idle_timeout: f64,
    /// Seconds a client has to complete the TLS handshake.
    #[arg(long, default_value_t = server::Limits::default().handshake_timeout.as_secs_f64())]
    webhook_handshake_timeout: f64,
    /// Seconds from a request's first byte to its response.
    #[arg(long, default_value_t = server::Limits::default().request_timeout.as_secs_f64())]
    webhook_request_timeout: f64,
    /// Also answer the API server's SubjectAccessReviews (and admission) on this address,
    /// for an authorization configuration that names a fixed address (the local control
    /// plane). The webhook server answers them at /authorize in any case.
    #[arg(long, env = "ENCLAVE_AUTHORIZER_ADDR")]
    authorizer_addr: Option<SocketAddr>,
    /// tls.crt, tls.key and ca.crt for --authorizer-addr (default: the webhook's).
    #[arg(long, env = "ENCLAVE_AUTHORIZER_TLS_DIR", requires = "authorizer_addr")]
    authorizer_tls_dir: Option<std::path::PathBuf>,
    /// Receive the API server's audit events (its audit webhook backend) on this
    /// address, so that the native engine's decisions reach the decision log. Requires
    /// --audit-sink-client-ca.
    #[arg(
        long,
        env = "ENCLAVE_AUDIT_SINK_ADDR",
        requires = "audit_sink_client_ca"
    )]
    audit_sink_addr: Option<SocketAddr>,
    /// The CA (PEM) that signed the API server's client certificate for the audit
    /// webhook: a client without a certificate it signed is refused at the handshake.
    #[arg(
        long,
        env = "ENCLAVE_AUDIT_SINK_CLIENT_CA",
        requires = "audit_sink_addr"
    )]
    audit_sink_client_ca: Option<std::path::PathBuf>,
    /// tls.crt and tls.key the audit sink presents (default: the webhook's).
    #[arg(long, env = "ENCLAVE_AUDIT_SINK_TLS_DIR", requires = "audit_sink_addr")]
    audit_sink_tls_dir: Option<std::path::PathBuf>,
    /// The operator's namespace: never in scope; holds its Secret, checkpoints and Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "enclave-system")]
    namespace: String,
    /// A cluster-scoped object of the installation (the chart's ClusterRole) that owns
    /// the webhook configurations, so that uninstalling removes them.
    #[arg(long, env = "ENCLAVE_OWNER_CLUSTER_ROLE")]
    owner_cluster_role: Option<String>,
    /// Which admission engine enforces the policies.
    #[arg(long, env = "ENCLAVE_ADMISSION", value_enum, default_value_t)]
    admission: AdmissionChoice,
    /// Elect a leader on a Lease in --namespace: only the leader runs the controllers.
    /// `false` runs them in this process unconditionally (one replica only).
    #[arg(long, env = "ENCLAVE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The Lease of the election.
    #[arg(long, env = "ENCLAVE_LEASE_NAME", default_value = "enclave-operator")]
    lease_name: String,
    /// Seconds a lease holds without renewal: the longest a crashed leader's work waits
    /// for another replica.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds before expiry the leader renews.
    #[arg(long, default_value_t = 5)]
    lease_renew_before: u64,
    /// This process's identity in the election; defaults to POD_NAME, else host-pid.
    #[arg(long, env = "ENCLAVE_LEADER_IDENTITY")]
    leader_identity: Option<String>,
    /// How the watches take their initial state: `stream` (over the watch, one object
    /// at a time; WatchList, on by default from Kubernetes 1.34 except 1.33), `pages`
    /// (lists of 500 from the API server's cache), or `auto` (stream where the API
    /// server's version has it on by default).
    #[arg(long, env = "ENCLAVE_INITIAL_LIST", value_enum, default_value_t = InitialList::Auto)]
    initial_list: InitialList,
    #[command(flatten)]
    evidence: evidence::cli::LogArgs,
    /// Log format.
    #[arg(long, env = "ENCLAVE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: telemetry::LogFormat,
    /// The image the mover pods of volume moves run: the operator's own image, which
    /// carries rsync (the chart sets it). Without it, moves wait at their first copy.
    #[arg(long, env = "ENCLAVE_MOVER_IMAGE")]
    mover_image: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum InitialList {
    Auto,
    Stream,
    Pages,
}

/// Where the API server reaches the webhook, and the names its certificate covers.
fn endpoint(args: &RunArgs) -> Result<(Endpoint, Vec<String>), String> {
    match (&args.webhook_url, &args.webhook_service) {
        (Some(url), _) => {
            let host = url
                .strip_prefix("https://")
                .and_then(|rest| rest.split(['/', ':']).next())
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    format!("--webhook-url must look like https://HOST:PORT, got {url:?}")
                })?;
            Ok((
                Endpoint::Url(url.trim_end_matches('/').to_string()),
                vec![host.to_string()],
            ))
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
            Ok((
                Endpoint::Service {
                    namespace,
                    name,
                    port,
                },
                hosts,
            ))
        }
        (None, None) => Err(
            "set --webhook-url (operator outside the cluster) or --webhook-service (in a cluster)"
                .into(),
        ),
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a positive number of seconds, got {value}"))
}

fn main() -> ExitCode {
    enclave_operator::memory::limit_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run_command()),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => match crd::all_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::VerifyLog(args) => evidence::cli::verify(args),
        Command::Mover(args) => enclave_operator::volume_move::mover::run(args).await,
        Command::Audit(args) => enclave_operator::audit::run(args).await,
        Command::AuthorizationConfig(args) => {
            match &args.url {
                Some(url) => print!("{}", authz::kubeconfig(url, &args.ca_file)),
                None => print!(
                    "{}",
                    authz::configuration(&args.namespace, &args.kubeconfig)
                ),
            }
            ExitCode::SUCCESS
        }
        Command::AuditSinkConfig(args) => {
            match &args.url {
                Some(url) => print!(
                    "{}",
                    enclave_operator::auditsink::kubeconfig(
                        url,
                        &args.ca_file,
                        &args.client_cert,
                        &args.client_key
                    )
                ),
                None => print!("{}", enclave_operator::auditsink::policy(&args.namespace)),
            }
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            // The steady state stops within 5 s of a signal by itself; this bounds the
            // phases before it (connecting, the first lists of a large cluster, taking
            // the lease), which a signal must not wait for either.
            let deadline = async {
                shutdown::signalled().await;
                tokio::time::sleep(Duration::from_millis(4800)).await;
            };
            let code = tokio::select! {
                result = run(*args) => match result {
                    Ok(()) => 0,
                    Err(error) => {
                        tracing::error!(%error, "enclave-operator stopped");
                        eprintln!("error: {error}");
                        1
                    }
                },
                () = deadline => {
                    tracing::warn!("stopped 5 s after the signal, with work still in flight");
                    0
                }
            };
            // Exit now: the runtime would otherwise wait for blocking file writes still
            // queued, beyond the deadline.
            std::process::exit(code)
        }
    }
}

async fn owner(client: &kube::Client, name: &str) -> Result<OwnerReference, String> {
    let role = kube::Api::<ClusterRole>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| format!("--owner-cluster-role {name}: {e}"))?;
    Ok(OwnerReference {
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: "ClusterRole".into(),
        name: name.to_string(),
        uid: role.metadata.uid.unwrap_or_default(),
        ..OwnerReference::default()
    })
}

/// Logs what the caches hold once synced, and hands freed memory back to the system
/// then and every 10 s after.
async fn report_synced_and_release_memory(caches: Caches) {
    caches.wait_until_ready().await;
    // Decoding the first lists leaves most of the peak free: give it back.
    enclave_operator::memory::release_free();
    let (full, summarised, label_sets) = caches.pods.counts();
    let (in_use, held) = enclave_operator::memory::heap().unwrap_or_default();
    tracing::info!(
        pods_in_full = full,
        pods_summarised = summarised,
        label_sets,
        heap_in_use_kib = in_use / 1024,
        heap_held_kib = held / 1024,
        "caches synced"
    );
    // Each reconcile builds views of every pod and drops them; glibc keeps what they
    // freed. Hand it back now and then (a few ms on this heap), so that resident memory
    // follows what is cached, not the last pass's peak.
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        enclave_operator::memory::release_free();
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init(args.log_format);
    // One TLS crypto provider for the kube client and the webhook server.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::spawn(shutdown::listen());
    // Before anything decides scope: the operator's namespace is never in it.
    enclave_operator::scope::set_operator_namespace(&args.namespace)?;
    let files = server::raise_file_limit();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        open_files = files,
        "enclave-operator starting"
    );

    // Bind first: a port in use is a clear error, not a panic half-way through.
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| {
            format!(
                "cannot serve /metrics and probes on {}: {e}",
                args.metrics_addr
            )
        })?;
    let webhook_listener = server::bind(args.webhook_addr)
        .await
        .map_err(|e| e.to_string())?;
    let authorizer_listener = match args.authorizer_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            format!("cannot answer SubjectAccessReviews on --authorizer-addr {addr}: {e}")
        })?),
        None => None,
    };
    let audit_sink_listener = match (args.audit_sink_addr, &args.audit_sink_client_ca) {
        (Some(addr), Some(client_ca)) => {
            let roots = auditsink::server::read_client_ca(client_ca).map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                format!("cannot receive audit events on --audit-sink-addr {addr}: {e}")
            })?;
            Some((listener, roots))
        }
        _ => None,
    };

    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    let client = kube::Client::try_from(config.clone()).map_err(|e| e.to_string())?;
    // Evictions are answered, not retried by the client: a 429 from a PDB is final for
    // this pass (see controller::residency::migrate).
    let mut no_retry = config;
    no_retry.default_retry = false;
    let eviction_client = kube::Client::try_from(no_retry).map_err(|e| e.to_string())?;

    // The watches start first: the initial lists are most of the time to ready, and
    // they need nothing of what is set up after them.
    let (native_served, version) =
        tokio::join!(native::served(&client), client.apiserver_version());
    let streaming = match args.initial_list {
        InitialList::Stream => true,
        InitialList::Pages => false,
        InitialList::Auto => match version {
            Ok(version) => cache::streams_lists(&version),
            Err(error) => {
                tracing::warn!(%error, "cannot read the API server version; listing in pages");
                false
            }
        },
    };
    let caches = Caches::start(&client, &cache::list_config(streaming));
    tokio::spawn(report_synced_and_release_memory(caches.clone()));

    let native_served = native_served.map_err(|e| {
        format!("cannot tell whether the API server serves MutatingAdmissionPolicy: {e}")
    })?;
    let engine = match args.admission {
        AdmissionChoice::Native if !native_served => {
            return Err("--admission native: this API server does not serve MutatingAdmissionPolicy v1 (Kubernetes 1.36+); use --admission webhook or auto".into());
        }
        AdmissionChoice::Native => Engine::Native,
        AdmissionChoice::Webhook => Engine::Webhook,
        AdmissionChoice::Auto if native_served => Engine::Native,
        AdmissionChoice::Auto => Engine::Webhook,
    };
    tracing::info!(engine = engine.as_str(), "admission engine");

    let (endpoint, hosts) = endpoint(&args)?;
    let limits = server::Limits {
        max_connections: args.webhook_max_connections.max(1),
        idle_timeout: seconds(args.webhook_idle_timeout, "--webhook-idle-timeout")?,
        request_timeout: seconds(args.webhook_request_timeout, "--webhook-request-timeout")?,
        handshake_timeout: seconds(
            args.webhook_handshake_timeout,
            "--webhook-handshake-timeout",
        )?,
        ..server::Limits::default()
    };
    let options = WebhookOptions {
        listen: args.webhook_addr,
        endpoint: endpoint.clone(),
        hosts,
        tls_dir: args.webhook_tls_dir.clone(),
        namespace: args.namespace.clone(),
        secret: args.webhook_secret.clone(),
        limits: limits.clone(),
    };
    let tls = admission::tls::start(client.clone(), &options)
        .await
        .map_err(|e| e.to_string())?;
    let owner = match &args.owner_cluster_role {
        Some(name) => Some(owner(&client, name).await?),
        None => None,
    };

    let metrics = Arc::new(Metrics::default());
    let (sink, records) = decisions::Sink::new(decisions::QUEUE);
    let mut ctx = Context::new(
        client.clone(),
        eviction_client,
        metrics.clone(),
        caches,
        sink.clone(),
        AdmissionSetup {
            engine,
            native_served,
            endpoint,
            ca_bundle: tls.ca_bundle.clone(),
            operator_namespace: args.namespace.clone(),
            owner,
        },
    );
    ctx.mover_image = args.mover_image.clone();
    let ctx = Arc::new(ctx);
    let election = if args.leader_election {
        Some(
            leader::start(
                client.clone(),
                leader::Settings {
                    namespace: args.namespace.clone(),
                    lease_name: args.lease_name.clone(),
                    identity: args
                        .leader_identity
                        .clone()
                        .unwrap_or_else(leader::default_identity),
                    duration: Duration::from_secs(args.lease_duration),
                    renew_before: Duration::from_secs(args.lease_renew_before),
                },
            )
            .await
            .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    // Without an election this process always leads; the sender lives as long as the
    // process so that the value stays.
    let (always, always_rx) = tokio::sync::watch::channel(true);
    let leading = election
        .as_ref()
        .map_or(always_rx, leader::Election::leading);
    let writer = evidence::writer::start(
        &args.evidence,
        ctx.clone(),
        records,
        election.as_ref().map(leader::Election::leading),
    )
    .await
    .map_err(|e| e.to_string())?;

    let probes = tokio::spawn(http::serve(
        metrics_listener,
        metrics.clone(),
        ctx.caches.clone(),
    ));
    let mut state = server::AdmissionState::new(
        ctx.caches.clone(),
        metrics.admission.clone(),
        Some(sink),
        limits.clone(),
    );
    // Every replica counts the denials it answers and raises its own alarms.
    let (observer, alarms) = enclave_operator::controller::grants::Observer::new();
    state.observer = Arc::new(observer);
    tokio::spawn(enclave_operator::controller::grants::raise_alarms(
        ctx.clone(),
        alarms,
    ));
    let state = Arc::new(state);
    let authorizer = match authorizer_listener {
        Some(listener) => {
            let cert = match &args.authorizer_tls_dir {
                Some(dir) => Arc::new(
                    certs::read_dir(dir)
                        .and_then(|bundle| server::SwappableCert::new(&bundle))
                        .map_err(|e| format!("--authorizer-tls-dir {}: {e}", dir.display()))?,
                ),
                None => tls.cert.clone(),
            };
            Some(tokio::spawn(server::serve(
                listener,
                cert,
                server::router(state.clone()),
                limits.clone(),
                metrics.admission.clone(),
                shutdown::signalled(),
            )))
        }
        None => None,
    };
    let audit_sink = match audit_sink_listener {
        Some((listener, roots)) => {
            let cert = match &args.audit_sink_tls_dir {
                Some(dir) => Arc::new(
                    certs::read_dir(dir)
                        .and_then(|bundle| server::SwappableCert::new(&bundle))
                        .map_err(|e| format!("--audit-sink-tls-dir {}: {e}", dir.display()))?,
                ),
                None => tls.cert.clone(),
            };
            let config = auditsink::server::tls_config(cert, roots)
                .map_err(|e| format!("the audit sink's TLS: {e}"))?;
            metrics.auditsink.configured.set(1);
            tracing::info!(addr = ?args.audit_sink_addr, "receiving the API server's audit events");
            let state = Arc::new(auditsink::server::SinkState::new(
                ctx.sink.clone(),
                metrics.auditsink.clone(),
            ));
            Some(tokio::spawn(server::serve_with(
                listener,
                config,
                auditsink::server::router(state),
                limits.clone(),
                metrics.admission.clone(),
                shutdown::signalled(),
            )))
        }
        None => None,
    };
    let webhooks = tokio::spawn(server::serve(
        webhook_listener,
        tls.cert.clone(),
        server::router(state),
        limits,
        metrics.admission.clone(),
        shutdown::signalled(),
    ));
    let controllers = tokio::spawn(controller::lead(ctx.clone(), leading));

    tokio::select! {
        () = shutdown::signalled() => {}
        result = probes => if let Ok(Err(error)) = result {
            return Err(format!("the metrics server stopped: {error}"));
        },
    }
    // Stop within 5 s whatever is in flight: controllers finish their current reconcile
    // at most and the webhook server answers the reviews it holds; then, with a budget
    // of its own, the decision log takes in what they decided, is flushed and its
    // chains checkpointed (what reaches it too late is counted in a RecordsLost line);
    // only then is the lease given up, so that the next leader continues the leader
    // chain from this process's last checkpoint, and takes over at once rather than
    // when the lease expires.
    let _ = tokio::time::timeout(Duration::from_millis(2500), async {
        let _ = tokio::join!(
            controllers,
            webhooks,
            async {
                if let Some(authorizer) = authorizer {
                    let _ = authorizer.await;
                }
            },
            async {
                if let Some(audit_sink) = audit_sink {
                    let _ = audit_sink.await;
                }
            }
        );
    })
    .await;
    if tokio::time::timeout(Duration::from_millis(1500), writer.close())
        .await
        .is_err()
    {
        tracing::warn!("the decision log did not close in time: its last lines may be missing");
    }
    if let Some(election) = election {
        let _ = tokio::time::timeout(Duration::from_millis(700), election.release()).await;
    }
    drop(always);
    tracing::info!("enclave-operator stopped");
    Ok(())
}
