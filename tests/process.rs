//! The operator as a process: what a second replica, a restart, hostile clients and a
//! busy port do to it. Each test runs operators of its own, one test at a time.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(120);

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

/// A dry-run pod in `namespace` comes back placed by `policy`.
fn placed(namespace: &str, policy: &str) -> Result<(), String> {
    let (ok, text) = kubectl_outcome(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            namespace,
            "-o",
            "jsonpath={.metadata.annotations}",
            "-f",
            "-",
        ],
        Some(&pod("probe")),
    );
    if ok && text.contains(policy) {
        Ok(())
    } else {
        Err(text)
    }
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let metrics = format!("127.0.0.1:{port}");
    let mut operator = Operator::start("port-in-use", &["--metrics-addr", &metrics]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = operator.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the operator did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&operator.log).expect("log");
    assert!(
        log.contains(&format!("cannot serve /metrics and probes on {metrics}")),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// Row 3 of the hardening issue: a second replica (a rolling update's new pod, a
/// second replica, a stray process) serves with the same CA, so when it goes away the
/// configuration still trusts the one that stays; a caBundle changed by hand is
/// repaired at once, not at a periodic resync.
#[tokio::test]
async fn replicas_share_one_ca_and_a_changed_bundle_is_repaired_at_once() {
    apply(&eu_enclave("process-eu"));
    let ns = TestNamespace::new("proc-ca", true);
    apply(&policy(&ns.name, "process-eu", ""));
    let mut first = Operator::start("ca-first", &["--admission", "webhook"]);
    first.ready().await;
    eventually(TIMEOUT, "the first replica placing pods", || async {
        placed(&ns.name, &ns.name)
    })
    .await;
    // The second serves behind the same endpoint (as behind one Service).
    let url = format!("https://127.0.0.1:{}", first.port);
    let mut second = Operator::start(
        "ca-second",
        &["--admission", "webhook", "--webhook-url", &url],
    );
    second.ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.stop();
    for _ in 0..5 {
        placed(&ns.name, &ns.name).expect("the remaining replica's certificate is trusted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A hand-edited caBundle is repaired within seconds.
    let configuration = format!("enclave-operator-{}", ns.name);
    let out = kubectl(
        &[
            "patch",
            "mutatingwebhookconfiguration",
            &configuration,
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"Zm9v"}]"#,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broken = Instant::now();
    eventually(Duration::from_secs(15), "the caBundle repaired", || async {
        placed(&ns.name, &ns.name)
    })
    .await;
    let repaired = broken.elapsed();
    eprintln!("caBundle repaired {repaired:?} after the edit");
    assert!(repaired < Duration::from_secs(10), "{repaired:?}");
    drop(first);
}

/// A Deployment whose pods prefer Virginia and take `ready` to become Ready.
fn slow_deployment(name: &str, replicas: u32, ready: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}, annotations: {{pod-ready.stage.kwok.x-k8s.io/delay: {ready}}}}}\n    spec:\n      terminationGracePeriodSeconds: 0\n      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n      affinity:\n        nodeAffinity:\n          preferredDuringSchedulingIgnoredDuringExecution:\n          - weight: 100\n            preference: {{matchExpressions: [{{key: {SITE_LABEL}, operator: In, values: [virginia]}}]}}\n"
    )
}

/// Row 6: `kill -9` right after an eviction batch, then a restart: the new process
/// counts the owner's missing replicas (evicted, not yet recreated), so `maxConcurrent`
/// holds across the restart.
#[tokio::test]
async fn max_concurrent_holds_across_a_kill_and_restart() {
    apply(&eu_enclave("process-eu"));
    let ns = TestNamespace::new("proc-restart", true);
    let out = kubectl(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&slow_deployment("web", 30, "2s")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = client().await;
    eventually(TIMEOUT, "30 pods running in Virginia", || async {
        let pods = pods(&client, &ns.name).await;
        let outside = pods
            .iter()
            .filter(|p| is_running(p) && node_of(p).is_some_and(|n| !ENCLAVE_NODES.contains(&n)))
            .count();
        if outside == 30 { Ok(()) } else { Err(outside) }
    })
    .await;
    // Sample how many pods are on their way (30 minus those running) every 50 ms.
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, client, namespace) =
            (peak.clone(), done.clone(), client.clone(), ns.name.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let running = pods(&client, &namespace)
                    .await
                    .iter()
                    .filter(|p| is_running(p))
                    .count();
                peak.fetch_max(30usize.saturating_sub(running), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    apply(&policy(
        &ns.name,
        "process-eu",
        "  migration: {maxConcurrent: 5, maxEvictionsPerMinute: 600}\n",
    ));
    let mut first = Operator::start("restart-first", &[]);
    eventually(TIMEOUT, "the first eviction batch", || async {
        let evicted = event_names(&ns.name, "reason=EvictedIntoEnclave");
        if evicted.lines().count() >= 3 {
            Ok(())
        } else {
            Err(evicted)
        }
    })
    .await;
    first.stop(); // SIGKILL, mid-migration.
    let second = Operator::start("restart-second", &[]);
    eventually(
        Duration::from_secs(180),
        "all 30 pods running inside",
        || async {
            let pods = pods(&client, &ns.name).await;
            let inside = pods
                .iter()
                .filter(|p| is_running(p) && node_of(p).is_some_and(|n| ENCLAVE_NODES.contains(&n)))
                .count();
            if inside == 30 && pods.len() == 30 {
                Ok(())
            } else {
                Err(inside)
            }
        },
    )
    .await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("peak on their way across the restart: {peak}");
    assert!(
        peak <= 5,
        "at most maxConcurrent (5) on their way, saw {peak}"
    );
    assert!(peak >= 2, "the bound was exercised (peak {peak})");
    drop(second);
}

/// Accepts any server certificate: the attacker in the next test does not care whom it
/// talks to.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Does the server close the connection within `within`?
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Row 7: idle, slow-handshake, header-dripping and body-dripping clients are cut off by
/// their timeouts, the connection cap turns the rest away, memory stays bounded, and
/// neither the probes nor real admission requests suffer.
#[tokio::test]
async fn slow_and_idle_clients_cannot_starve_the_webhook() {
    apply(&eu_enclave("process-eu"));
    let ns = TestNamespace::new("proc-slow", true);
    apply(&policy(&ns.name, "process-eu", ""));
    let mut operator = Operator::start(
        "slow-clients",
        &[
            "--admission",
            "webhook",
            "--webhook-idle-timeout",
            "2",
            "--webhook-request-timeout",
            "2",
            "--webhook-handshake-timeout",
            "2",
            "--webhook-max-connections",
            "64",
        ],
    );
    operator.ready().await;
    eventually(TIMEOUT, "admission in force", || async {
        placed(&ns.name, &ns.name)
    })
    .await;
    let address = format!("127.0.0.1:{}", operator.port);
    let started = Instant::now();

    // 1,000 connections that never say anything (no TLS handshake).
    let mut silent = Vec::new();
    for _ in 0..1000 {
        if let Ok(stream) = tokio::net::TcpStream::connect(&address).await {
            silent.push(stream);
        }
    }
    // Clients that complete the handshake, then idle, drip headers, or drip a body.
    let connector = tls_connector();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .expect("name")
        .to_owned();
    let mut handles = Vec::new();
    for kind in ["idle", "headers", "body"] {
        for _ in 0..10 {
            let (connector, name, address) = (connector.clone(), name.clone(), address.clone());
            handles.push(tokio::spawn(async move {
                // The cap may refuse us while the silent ones hold their slots: retry.
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut tls = loop {
                    if let Ok(tcp) = tokio::net::TcpStream::connect(&address).await
                        && let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(2), connector.connect(name.clone(), tcp)).await
                    {
                        break tls;
                    }
                    assert!(Instant::now() < deadline, "{kind}: no TLS connection in 20 s");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                let began = Instant::now();
                let drip: &[u8] = match kind {
                    "headers" => b"POST /mutate/pods HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                    "body" => b"POST /mutate/pods HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"request\":{\"uid\":\"x\"",
                    _ => b"",
                };
                let mut closed = false;
                for byte in drip.iter() {
                    if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                        closed = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                if !closed {
                    closed = closed_within(&mut tls, Duration::from_secs(10)).await;
                }
                (kind, closed, began.elapsed())
            }));
        }
    }
    // Meanwhile the probes answer and real in-scope requests are admitted.
    for _ in 0..5 {
        let health = http_get(&format!(
            "http://127.0.0.1:{}/healthz",
            operator.metrics_port
        ))
        .await;
        assert_eq!(
            health.map(|(status, _)| status),
            Ok(200),
            "the probe answers under load"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(
        Duration::from_secs(20),
        "an in-scope pod admitted under load",
        || async { placed(&ns.name, &ns.name) },
    )
    .await;
    for handle in handles {
        let (kind, closed, took) = handle.await.expect("client task");
        assert!(closed, "a {kind} client was never cut off");
        assert!(
            took < Duration::from_secs(12),
            "a {kind} client held on for {took:?}"
        );
    }
    // The silent ones were cut off by the handshake timeout (or refused by the cap).
    let mut held = 0;
    for stream in &mut silent {
        if !closed_within(stream, Duration::from_secs(4)).await {
            held += 1;
        }
    }
    assert_eq!(
        held,
        0,
        "{held} silent connections still open after {:?}",
        started.elapsed()
    );
    let rss = rss_kib(operator.pid());
    eprintln!("resident memory under the attack: {} MiB", rss / 1024);
    assert!(rss < 256 * 1024, "RSS {rss} KiB");
    let (_, metrics) = http_get(&format!(
        "http://127.0.0.1:{}/metrics",
        operator.metrics_port
    ))
    .await
    .expect("metrics");
    assert!(
        metrics.contains("connections_closed_total{reason=\"limit\"}")
            && metrics.contains("connections_closed_total{reason=\"timeout\"}"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("connections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    placed(&ns.name, &ns.name).expect("admission still works afterwards");
}
