//! Shared harness of the integration tests: a client for the cluster `KUBECONFIG`
//! names, kubectl, the operator under test as a host process, and polling.
#![allow(dead_code)] // each test binary uses a different part of the harness

mod attempts;
pub mod generate;
mod observe;
pub mod workloads;

#[allow(unused_imports)] // as dead_code above: not every binary reads them
pub use attempts::*;
#[allow(unused_imports)] // as dead_code above: not every binary reads them
pub use observe::*;

use std::{
    fmt::Debug,
    future::Future,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// A client for the cluster under test. Fails loudly: an integration test that cannot
/// reach its cluster must fail, never pass by skipping.
pub async fn client() -> kube::Client {
    kube::Client::try_default()
        .await
        .expect("integration tests need a cluster: run them with `make test`, or set KUBECONFIG")
}

/// Runs kubectl (from PATH; `make` puts the cached build first) with optional stdin.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs (make tools builds it and puts it on PATH)");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("kubectl finishes")
}

/// `kubectl apply -f -` that must succeed. Tests running in parallel may apply the same
/// object at once; the loser of that race (AlreadyExists, Conflict) applies again.
pub fn apply(yaml: &str) {
    let mut attempts = 0;
    loop {
        let out = kubectl(&["apply", "-f", "-"], Some(yaml));
        let error = String::from_utf8_lossy(&out.stderr);
        let raced =
            error.contains("AlreadyExists") || error.contains("the object has been modified");
        if out.status.success() {
            return;
        }
        attempts += 1;
        assert!(raced && attempts < 5, "kubectl apply failed: {error}");
    }
}

/// `kubectl apply -f -` that must be rejected; returns kubectl's error text.
pub fn apply_rejected(yaml: &str) -> String {
    let out = kubectl(&["apply", "-f", "-"], Some(yaml));
    assert!(
        !out.status.success(),
        "expected the API server to reject:\n{yaml}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// kubectl with stdin that must succeed; returns stdout.
pub fn kubectl_ok_stdin(args: &[&str], stdin: &str) -> String {
    let out = kubectl(args, Some(stdin));
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `probe` until it returns Ok, or panics after `timeout` with the last Err.
pub async fn eventually<T, E: Debug, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The operator under test, a host process talking to the cluster through KUBECONFIG.
/// Killed when dropped and, through PR_SET_PDEATHSIG, when the thread that started it
/// ends, so no operator outlives its test binary.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    /// The port of its webhook server.
    pub port: u16,
    /// The port of its /metrics, /healthz and /readyz.
    pub metrics_port: u16,
}

/// Does this run use the webhook engine (`ENCLAVE_TEST_ADMISSION=webhook`)? Otherwise
/// the native one (Kubernetes 1.36).
pub fn webhook_engine() -> bool {
    std::env::var("ENCLAVE_TEST_ADMISSION").is_ok_and(|e| e == "webhook")
}

/// The operator's namespace in tests: the chart's, created by `make test`.
pub const OPERATOR_NAMESPACE: &str = "enclave-system";

/// Is the operator under test the chart's, running in the cluster?
pub fn external_operator() -> bool {
    std::env::var("ENCLAVE_TEST_EXTERNAL_OPERATOR").is_ok_and(|v| v == "1")
}

/// The decision records of the shared operator: its `--decision-log` file, or with an
/// external operator the chain lines its pods print.
pub fn shared_decisions() -> Vec<serde_json::Value> {
    let text = if external_operator() {
        let out = kubectl(
            &[
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                "-l",
                "app.kubernetes.io/name=enclave-operator",
                "--tail=-1",
                "--prefix=false",
                "--max-log-requests=10",
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        std::fs::read_to_string(decision_log("shared")).unwrap_or_default()
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record.get("seq").is_some() && record.get("kind").is_some())
        .collect()
}

/// Where an operator of this test run writes its decision log.
pub fn decision_log(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("decisions-{name}.log"))
}

impl Operator {
    /// Starts an operator. It runs with the kubeconfig `ENCLAVE_TEST_OPERATOR_KUBECONFIG`
    /// names (`make test`: a token of the chart's ServiceAccount, so that the chart's RBAC
    /// is what the tests exercise), else the tests' own; with the admission engine
    /// `ENCLAVE_TEST_ADMISSION` names (default: auto).
    pub fn start(name: &str, extra_args: &[&str]) -> Self {
        let kubeconfig = std::env::var_os("ENCLAVE_TEST_OPERATOR_KUBECONFIG").map(PathBuf::from);
        Self::start_as(name, extra_args, kubeconfig.as_deref())
    }

    /// [`Operator::start`] with the credentials of `kubeconfig` (the tests' own when
    /// `None`).
    pub fn start_as(name: &str, extra_args: &[&str], kubeconfig: Option<&std::path::Path>) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let log = dir.join(format!("operator-{name}.log"));
        let file = std::fs::File::create(&log).expect("create operator log");
        let decisions = decision_log(name);
        let _ = std::fs::remove_file(&decisions);
        let port = free_port();
        let metrics_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_enclave-operator"));
        command.arg("run");
        if !extra_args.contains(&"--metrics-addr") {
            command.args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")]);
        }
        command.args(["--webhook-addr", &format!("127.0.0.1:{port}")]);
        if !extra_args.contains(&"--webhook-url") {
            command.args(["--webhook-url", &format!("https://127.0.0.1:{port}")]);
        }
        // Each test operator elects itself on a Lease of its own (two processes of one
        // test share it), with a short lease so that a killed one is replaced quickly.
        if !extra_args.contains(&"--lease-name") {
            command.args(["--lease-name", &format!("enclave-test-{name}")]);
        }
        if !extra_args.contains(&"--lease-duration") {
            command.args(["--lease-duration", "8", "--lease-renew-before", "3"]);
        }
        if !extra_args.contains(&"--leader-chain-id") {
            command.args(["--leader-chain-id", &format!("test/{name}/leader")]);
        }
        if !extra_args.contains(&"--namespace") {
            command.args(["--namespace", OPERATOR_NAMESPACE]);
        }
        command
            .args(["--checkpoint-interval", "1"])
            .args(["--chain-id", &format!("test/{name}")])
            .arg("--decision-log")
            .arg(&decisions)
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,enclave_operator=debug".into()),
            )
            .stdout(Stdio::null())
            .stderr(file);
        if !extra_args.contains(&"--admission") {
            command.args([
                "--admission",
                &std::env::var("ENCLAVE_TEST_ADMISSION").unwrap_or_else(|_| "auto".into()),
            ]);
        }
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("start enclave-operator");
        eprintln!(
            "operator {name} started (pid {}), log: {}",
            child.id(),
            log.display()
        );
        Self {
            child,
            log,
            port,
            metrics_port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Has it exited, and how?
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        let log = self.log.clone();
        eventually(
            Duration::from_secs(60),
            &format!("{url} (log: {})", log.display()),
            || async {
                match http_get(&url).await {
                    Ok((200, _)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the operator now (SIGKILL: the hardest way an operator can go away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP GET on 127.0.0.1 (probes and metrics): (status, body).
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("http only")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A kubeconfig for the cluster under test with a fresh token of a ServiceAccount, for
/// running a process with exactly that account's rights.
pub fn service_account_kubeconfig(namespace: &str, account: &str, path: &std::path::Path) {
    let token = kubectl_ok(&[
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--duration",
        "1h",
    ]);
    let config: serde_json::Value = serde_json::from_str(&kubectl_ok(&[
        "config", "view", "--minify", "--raw", "-o", "json",
    ]))
    .expect("kubectl config view prints JSON");
    let cluster = config["clusters"][0].clone();
    let name = cluster["name"].clone();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": account, "context": {"cluster": name, "user": account}}],
        "current-context": account,
    });
    std::fs::write(path, kubeconfig.to_string()).expect("write the kubeconfig");
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Tests that change shared nodes hold this exclusively; the others share it.
pub fn cluster_lock() -> &'static tokio::sync::RwLock<()> {
    static LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
    &LOCK
}

/// One operator shared by all tests of a binary, started on first use from a thread
/// that lives as long as the test binary. `_name` says which test asked first.
///
/// With `ENCLAVE_TEST_EXTERNAL_OPERATOR=1` (`make kind-e2e`: the chart runs the
/// operator from its image in the cluster) none is started.
pub fn shared_operator(_name: &'static str) {
    if external_operator() {
        return;
    }
    let name = "shared";
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut args = authorizer_args();
            args.extend(audit_sink_args());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let operator = Operator::start(name, &args);
            let _ = SHARED_METRICS_PORT.set(operator.metrics_port);
            tx.send(()).expect("report start");
            // Park forever: the operator dies with this thread, i.e. with the process.
            let _keep = operator;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("operator thread started");
    });
}

static SHARED_METRICS_PORT: OnceLock<u16> = OnceLock::new();

/// The value of one sample of the shared operator's `/metrics` (`name{labels}` exactly
/// as exposed), 0 when it is not exposed yet.
pub async fn shared_metric(sample: &str) -> f64 {
    let port = SHARED_METRICS_PORT
        .get()
        .expect("the shared operator runs in this process (not with an external operator)");
    let (status, body) = http_get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("the shared operator serves /metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a sample's value is a number"))
        .unwrap_or(0.0)
}

/// The arguments that make an operator answer the local control plane's authorizer
/// address (`hack/test-integration.sh` exports them from the cluster's state): only the
/// shared operator and the authorizer's own tests pass them, since one process at a
/// time can listen there.
pub fn authorizer_args() -> Vec<String> {
    match (
        std::env::var("ENCLAVE_TEST_AUTHORIZER_ADDR"),
        std::env::var("ENCLAVE_TEST_AUTHORIZER_TLS_DIR"),
    ) {
        (Ok(addr), Ok(dir)) if !addr.is_empty() => vec![
            "--authorizer-addr".into(),
            addr,
            "--authorizer-tls-dir".into(),
            dir,
        ],
        _ => Vec::new(),
    }
}

/// The arguments that make an operator receive the local control plane's audit events
/// (`hack/test-integration.sh` exports them): only the shared operator listens there.
/// The sink presents the authorizer's certificate (127.0.0.1, signed by the cluster CA).
pub fn audit_sink_args() -> Vec<String> {
    match (
        std::env::var("ENCLAVE_TEST_AUDIT_SINK_ADDR"),
        std::env::var("ENCLAVE_TEST_AUDIT_SINK_CLIENT_CA"),
        std::env::var("ENCLAVE_TEST_AUTHORIZER_TLS_DIR"),
    ) {
        (Ok(addr), Ok(ca), Ok(dir)) if !addr.is_empty() => vec![
            "--audit-sink-addr".into(),
            addr,
            "--audit-sink-client-ca".into(),
            ca,
            "--audit-sink-tls-dir".into(),
            dir,
        ],
        _ => Vec::new(),
    }
}

/// Is the cluster under test configured with the authorizer and the tests told where?
pub fn authorizer_configured() -> bool {
    !authorizer_args().is_empty()
}

/// A namespace of one test, labelled so that only that test's policy selects it, and
/// deleted (with what is in it) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// `in_scope`: labelled `enclave.dev/test-scope=<name>`, the label the test's policy selects.
    pub fn new(name: &str, in_scope: bool) -> Self {
        Self::create(name, in_scope.then_some(name))
    }

    /// Labelled `enclave.dev/test-scope=<scope>`: one of several namespaces under one policy.
    pub fn in_scope_of(name: &str, scope: &str) -> Self {
        Self::create(name, Some(scope))
    }

    fn create(name: &str, scope: Option<&str>) -> Self {
        // A run kept with ENCLAVE_TEST_KEEP leaves the policy named after the namespace,
        // which would otherwise place the pods this test means to start outside.
        // In the foreground: its admission objects are gone too, before this test's
        // policy of the same name writes its own (the garbage collector, late, would
        // delete those).
        let _ = kubectl(
            &[
                "delete",
                "residencypolicy",
                name,
                "--ignore-not-found",
                "--cascade=foreground",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        );
        let _ = kubectl(
            &[
                "delete",
                "namespace",
                name,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        );
        let labels = scope
            .map(|scope| format!("\n  labels: {{enclave.dev/test-scope: {scope}}}"))
            .unwrap_or_default();
        apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}{labels}\n"
        ));
        Self {
            name: name.to_string(),
        }
    }
}

/// Set `ENCLAVE_TEST_KEEP=1` to keep what a test made, for a look after it failed.
pub fn keep() -> bool {
    std::env::var_os("ENCLAVE_TEST_KEEP").is_some()
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if keep() {
            return;
        }
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
        let _ = kubectl(
            &[
                "delete",
                "residencypolicy",
                &self.name,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

pub const SITE_LABEL: &str = "node-restriction.kubernetes.io/enclave-site";
pub const ENCLAVE_NODES: &[&str] = &["dublin-a", "dublin-b", "norway-a"];

/// The test topology's EU enclave under `name`.
pub fn eu_enclave(name: &str) -> String {
    format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: DataEnclave\nmetadata:\n  name: {name}\nspec:\n  jurisdiction: EU\n  sites:\n  - name: dublin\n    nodeSelector: {{matchLabels: {{{SITE_LABEL}: dublin}}}}\n  - name: norway\n    nodeSelector: {{matchLabels: {{{SITE_LABEL}: norway}}}}\n  storage: {{storageClassNames: [eu-dublin-ssd, eu-norway-ssd]}}\n"
    )
}

/// A policy named after the test namespace, selecting only it. `extra` is appended to spec.
pub fn policy(namespace: &str, enclave: &str, extra: &str) -> String {
    format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata:\n  name: {namespace}\nspec:\n  enclave: {enclave}\n  match:\n    namespaceSelector: {{matchLabels: {{enclave.dev/test-scope: {namespace}}}}}\n{extra}"
    )
}

/// Pods of a namespace as (name, node, phase, terminating).
pub async fn pods(client: &kube::Client, namespace: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace);
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

pub fn node_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

pub fn is_running(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Waits until the (enforcing) policy named after `namespace` says Ready for its
/// current generation, which the operator reports only once the API server enforces
/// every part of it (checked by its own dry-run probes), whichever the engine.
pub async fn wait_for_admission(namespace: &str) {
    wait_for(namespace, namespace).await
}

/// [`wait_for_admission`] for a policy not named after its namespace.
pub async fn wait_for_admission_by(namespace: &str, policy: &str) {
    wait_for(namespace, policy).await
}

/// See [`wait_for_admission`].
pub async fn wait_for_webhook(namespace: &str) {
    wait_for(namespace, namespace).await
}

async fn wait_for(namespace: &str, policy: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("policy {policy} to be Ready (in force) for namespace {namespace}"),
        || async { policy_ready(policy) },
    )
    .await;
}

/// For admission objects a test writes itself (no ResidencyPolicy says Ready for them):
/// waits until a server-side dry-run pod in `namespace` comes back placed by `policy`
/// and one pinned to a node that does not exist is refused.
pub async fn wait_until_enforced(namespace: &str, policy: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("admission to place and refuse pods in {namespace}"),
        || async {
            let placed = kubectl(
                &[
                    "run",
                    "admission-probe",
                    "-n",
                    namespace,
                    "--image=registry.k8s.io/pause:3.10",
                    "--dry-run=server",
                    "-o",
                    "jsonpath={.metadata.annotations}",
                ],
                None,
            );
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&placed.stdout),
                String::from_utf8_lossy(&placed.stderr)
            );
            if !(placed.status.success() && text.contains(policy)) {
                return Err(text);
            }
            refuses_a_pod_pinned_outside(namespace)
        },
    )
    .await;
}

/// Admission in `namespace` refuses a pod pinned to a node that does not exist (a dry
/// run): the final check of pods is in force there.
pub fn refuses_a_pod_pinned_outside(namespace: &str) -> Result<(), String> {
    let pinned = kubectl(
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: admission-probe}\nspec:\n  nodeName: no-such-node\n  containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n",
        ),
    );
    if pinned.status.success() {
        Err("a pod pinned to an unknown node was admitted".to_string())
    } else {
        Ok(())
    }
}

/// `Ok` when `policy` says Ready for its current generation, else what it says.
pub fn policy_ready(policy: &str) -> Result<(), String> {
    let out = kubectl(&["get", "residencypolicy", policy, "-o", "json"], None);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let generation = json.pointer("/metadata/generation").cloned();
    let ready = json
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    if ready["status"] == "True" && ready.get("observedGeneration").cloned() == generation {
        Ok(())
    } else {
        Err(format!("Ready: {ready}"))
    }
}
