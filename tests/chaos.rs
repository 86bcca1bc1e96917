//! Chaos against the local control plane: two operator replicas electing a leader on
//! one Lease; the leader killed in the middle of a migration; the API server restarted
//! during one; SIGTERM at any moment of a replica's life.
//!
//! What must hold: the other replica takes over within the lease duration, the
//! migration finishes, never more than `maxConcurrent` pods are on their way and the
//! PDB is never broken, no pod is evicted twice; the operator recovers from an API
//! server restart by itself; a SIGTERM ends the process within 5 s and gives the lease
//! up, and a leader handing over this way leaves a leader chain the next one continues.

mod common;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{workloads::*, *};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::Value;

const ENCLAVE: &str = "chaos-eu";
const TIMEOUT: Duration = Duration::from_secs(180);
/// The test operators' lease (see `Operator::start`): a killed leader is replaced after
/// at most this long.
const LEASE: Duration = Duration::from_secs(8);

/// The identity a replica elects under.
fn replica(name: &str, lease: &str, leader_chain: &str) -> Operator {
    Operator::start(
        name,
        &[
            "--lease-name",
            lease,
            "--leader-identity",
            name,
            "--leader-chain-id",
            leader_chain,
        ],
    )
}

async fn holder(lease: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client().await, OPERATOR_NAMESPACE);
    api.get_opt(lease)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// The pods evicted so far, from the eviction Events, by name.
fn evictions(namespace: &str) -> BTreeMap<String, usize> {
    let names = kubectl_ok(&[
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "reason=EvictedIntoEnclave",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name}{\"\\n\"}{end}",
    ]);
    let mut counts = BTreeMap::new();
    for name in names.lines().filter(|l| !l.is_empty()) {
        *counts.entry(name.to_string()).or_default() += 1;
    }
    counts
}

/// The fifty pods outside, the monitor watching them, the policy migrating them
/// (`maxConcurrent: 3`), and the migration under way: at least six evicted, most not.
async fn migration_under_way(namespace: &str) -> (Vec<String>, InFlightMonitor) {
    let outside_before = fifty_pods_outside(namespace).await;
    let monitor = InFlightMonitor::start(namespace, &[("web", 30), ("db", 20)]);
    apply(&policy(
        namespace,
        ENCLAVE,
        "  migration: {maxConcurrent: 3, maxEvictionsPerMinute: 600}\n",
    ));
    eventually(TIMEOUT, "the migration under way", || async {
        let done = evictions(namespace).len();
        if done >= 6 { Ok(()) } else { Err(done) }
    })
    .await;
    (outside_before, monitor)
}

/// Two Deployments started in Virginia before any policy: `web` (30) without a PDB and
/// `db` (20) with one allowing one pod down.
async fn fifty_pods_outside(namespace: &str) -> Vec<String> {
    apply(&eu_enclave(ENCLAVE));
    in_namespace(namespace, &deployment("web", 30, SITE_LABEL, "virginia"));
    in_namespace(namespace, &deployment("db", 20, SITE_LABEL, "virginia"));
    in_namespace(
        namespace,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: db\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: db}}\n",
    );
    let before = running_pods(namespace, 50, "50 pods running before the policy", |_| true).await;
    let outside: Vec<String> = before
        .iter()
        .filter(|p| outside(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        outside.len() >= 40,
        "the test needs pods in Virginia to move; only {} are",
        outside.len()
    );
    outside
}

/// Every pod evicted once at most, and only pods that were outside before the policy
/// (a replacement evicted again would be a second eviction of the same workload slot).
fn assert_evicted_once(namespace: &str, outside_before: &[String]) {
    let evicted = evictions(namespace);
    let twice: Vec<_> = evicted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "pods evicted twice: {twice:?}");
    let replacements: Vec<_> = evicted
        .keys()
        .filter(|name| !outside_before.contains(name))
        .collect();
    assert!(
        replacements.is_empty(),
        "replacements evicted again (they were admitted outside the enclave): {replacements:?}"
    );
}

#[tokio::test]
async fn the_leader_killed_mid_migration_is_replaced_and_the_migration_finishes_safely() {
    let lease = "enclave-test-chaos-kill";
    let chain = "test/chaos-kill/leader";
    let mut a = replica("chaos-kill-a", lease, chain);
    let mut b = replica("chaos-kill-b", lease, chain);
    a.ready().await;
    b.ready().await;
    let ns = TestNamespace::new("chaos-kill", true);
    let (outside_before, monitor) = migration_under_way(&ns.name).await;
    let leader = holder(lease).await.expect("a leader");
    let (killed, survivor, survivor_name) = if leader == "chaos-kill-a" {
        (&mut a, &mut b, "chaos-kill-b")
    } else {
        (&mut b, &mut a, "chaos-kill-a")
    };
    killed.stop(); // SIGKILL: no lease release, no last checkpoint.
    let killed_at = Instant::now();
    eprintln!(
        "killed leader {leader} after {} evictions",
        evictions(&ns.name).len()
    );
    eventually(TIMEOUT, "the other replica takes the lease", || async {
        match holder(lease).await {
            Some(h) if h == survivor_name => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let takeover = killed_at.elapsed();
    eprintln!(
        "{survivor_name} took over {:.1} s after the kill",
        takeover.as_secs_f64()
    );
    // The lease expires at most LEASE after its last renewal, which was before the kill;
    // the survivor's next attempt to take it and its own watch of the Lease add up to a
    // second or two.
    assert!(
        takeover <= LEASE + Duration::from_secs(2),
        "the lease should pass within its duration ({LEASE:?}); took {takeover:?}"
    );

    running_pods(&ns.name, 50, "all 50 pods inside the enclave", |pods| {
        pods.iter().all(|p| !outside(p))
    })
    .await;
    let (max, db) = monitor.stop("db");
    eprintln!("at most {max} pods on their way at once, {db} of db");
    assert!(
        max <= 3,
        "at most maxConcurrent=3 pods may be on their way at once; saw {max}"
    );
    assert!(
        db <= 1,
        "the PDB allows one db pod down at a time; saw {db}"
    );
    assert_evicted_once(&ns.name, &outside_before);
    assert!(
        survivor.exited().is_none(),
        "the survivor runs on: {}",
        survivor.log_tail()
    );
}

#[tokio::test]
async fn the_operator_recovers_by_itself_from_an_api_server_restart_mid_migration() {
    let cluster_dir = std::env::var("ENCLAVE_CLUSTER_DIR")
        .expect("ENCLAVE_CLUSTER_DIR names the local control plane to restart (make test sets it)");
    let mut operator = replica(
        "chaos-restart",
        "enclave-test-chaos-restart",
        "test/chaos-restart/leader",
    );
    operator.ready().await;
    let ns = TestNamespace::new("chaos-restart", true);
    let (outside_before, monitor) = migration_under_way(&ns.name).await;
    let restart = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/cluster/restart-apiserver.sh"
    ))
    .arg(&cluster_dir)
    .arg("2")
    .status()
    .expect("run restart-apiserver.sh");
    assert!(restart.success(), "the API server did not come back");
    eprintln!(
        "API server restarted after {} evictions",
        evictions(&ns.name).len()
    );

    running_pods(
        &ns.name,
        50,
        "all 50 pods inside the enclave after the restart",
        |pods| pods.iter().all(|p| !outside(p)),
    )
    .await;
    let (max, db) = monitor.stop("db");
    assert!(
        max <= 3,
        "at most maxConcurrent=3 pods may be on their way at once; saw {max}"
    );
    assert!(
        db <= 1,
        "the PDB allows one db pod down at a time; saw {db}"
    );
    assert_evicted_once(&ns.name, &outside_before);
    assert!(
        operator.exited().is_none(),
        "the operator stopped: {}",
        operator.log_tail()
    );
    // And it still decides: its status is current.
    eventually(TIMEOUT, "the policy compliant", || async {
        let compliant = kubectl_ok(&[
            "get",
            "residencypolicy",
            &ns.name,
            "-o",
            "jsonpath={.status.compliantPods}/{.status.matchedPods}",
        ]);
        if compliant == "50/50" {
            Ok(())
        } else {
            Err(compliant)
        }
    })
    .await;
}

/// Sends SIGTERM and waits for the exit: how long it took and how it ended.
async fn terminate(operator: &mut Operator) -> (Duration, std::process::ExitStatus) {
    let sent = Instant::now();
    operator.signal(libc::SIGTERM);
    loop {
        if let Some(status) = operator.exited() {
            return (sent.elapsed(), status);
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM: {}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_at_any_moment_ends_the_process_within_five_seconds_and_frees_the_lease() {
    let lease = "enclave-test-chaos-term";
    // Starting (before the signal handler may even be installed), connecting, syncing,
    // taking the lease, and steady.
    for delay_ms in [0u64, 30, 150, 400, 1000, 2500] {
        let mut operator = replica("chaos-term", lease, "test/chaos-term/leader");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let (took, status) = terminate(&mut operator).await;
        eprintln!(
            "SIGTERM {delay_ms} ms after start: exited in {:.2} s ({status})",
            took.as_secs_f64()
        );
        assert!(
            took < Duration::from_secs(5),
            "SIGTERM {delay_ms} ms after start took {took:?}"
        );
        assert_ne!(
            holder(lease).await.as_deref(),
            Some("chaos-term"),
            "the lease is still held after SIGTERM at {delay_ms} ms"
        );
    }
}

/// A leader that hands over on SIGTERM mid-migration: the other replica continues at
/// once (no wait for expiry), the migration finishes without a double eviction, and the
/// leader chain verifies as one across both replicas' logs.
#[tokio::test]
async fn a_leader_stopped_mid_migration_hands_over_and_the_leader_chain_continues() {
    let lease = "enclave-test-chaos-handover";
    let chain = "test/chaos-handover/leader";
    let mut a = replica("chaos-handover-a", lease, chain);
    a.ready().await;
    eventually(TIMEOUT, "replica a leads", || async {
        match holder(lease).await.as_deref() {
            Some("chaos-handover-a") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut b = replica("chaos-handover-b", lease, chain);
    b.ready().await;
    let ns = TestNamespace::new("chaos-handover", true);
    let (outside_before, monitor) = migration_under_way(&ns.name).await;
    let (took, status) = terminate(&mut a).await;
    assert!(
        took < Duration::from_secs(5),
        "the leader took {took:?} to stop"
    );
    assert!(status.success(), "{status}: {}", a.log_tail());
    let stopped = Instant::now();
    eventually(TIMEOUT, "b takes the lease", || async {
        match holder(lease).await.as_deref() {
            Some("chaos-handover-b") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!(
        "b took over {:.1} s after a stopped",
        stopped.elapsed().as_secs_f64()
    );
    running_pods(&ns.name, 50, "all 50 pods inside the enclave", |pods| {
        pods.iter().all(|p| !outside(p))
    })
    .await;
    let (max, db) = monitor.stop("db");
    assert!(
        max <= 3,
        "at most maxConcurrent=3 pods on their way at once; saw {max}"
    );
    assert!(
        db <= 1,
        "the PDB allows one db pod down at a time; saw {db}"
    );
    assert_evicted_once(&ns.name, &outside_before);

    // The leader chain: a's lines, then b's, one chain held to its checkpoints.
    tokio::time::sleep(Duration::from_secs(2)).await; // b's next checkpoint
    let config_map: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "configmap",
        "enclave-operator-checkpoints",
        "-n",
        OPERATOR_NAMESPACE,
        "-o",
        "json",
    ]))
    .expect("the checkpoints ConfigMap");
    let checkpoints = config_map["data"][enclave_operator::evidence::writer::checkpoint_key(chain)]
        .as_str()
        .expect("checkpoints of the leader chain")
        .to_string();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let checkpoints_file = dir.path().join("checkpoints.jsonl");
    std::fs::write(&checkpoints_file, checkpoints).expect("write checkpoints");
    let logs: Vec<PathBuf> = vec![
        decision_log("chaos-handover-a"),
        decision_log("chaos-handover-b"),
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enclave-operator"))
        .arg("verify-log")
        .args(&logs)
        .args(["--chain", chain, "--json", "--checkpoints"])
        .arg(&checkpoints_file)
        .output()
        .expect("run verify-log");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the leader chain across the handover: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    // One stream from a's lines through b's: b resumed where a's last checkpoint was.
    assert!(
        report["kinds"]["ChainResumed"].as_u64().unwrap_or_default() >= 1,
        "b resumed the chain a left: {report}"
    );
    // Every eviction of this namespace is in the leader chain, once, whoever made it.
    let mut logged = BTreeMap::<String, usize>::new();
    for log in &logs {
        for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let object = &record["fields"]["object"];
            if record["chain"] == chain
                && record["kind"] == "PodEvicted"
                && object["namespace"] == ns.name.as_str()
            {
                *logged
                    .entry(object["name"].as_str().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
        }
    }
    eprintln!(
        "leader chain: {} records, seq {} to {}; {} evictions of {} logged",
        report["lines"],
        report["firstSeq"],
        report["lastSeq"],
        logged.len(),
        ns.name
    );
    assert_eq!(
        logged,
        evictions(&ns.name),
        "the evictions in the leader chain are those made"
    );
}

/// SIGTERM while the operator starts against 10,000 pods of a covered namespace (its
/// pod cache listing them in full, page by page): it still exits within 5 s and frees
/// its lease, at every moment of that startup.
#[tokio::test]
async fn sigterm_during_startup_with_ten_thousand_pods_ends_within_five_seconds() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    const PODS: usize = 10_000;
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new("chaos-startup", true);
    apply(&policy(&ns.name, ENCLAVE, "  enforcement: Audit\n"));
    let client = client().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    // Pending pods that no scheduler takes: the cluster keeps them at no cost.
    let created = futures::stream::iter(0..PODS)
        .map(|i| {
            let api = api.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p-{i}"), "labels": {"app": "startup"}},
                    "spec": {
                        "schedulerName": "no-such-scheduler",
                        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                    },
                }))
                .expect("a pod");
                api.create(&Default::default(), &pod).await.is_ok()
            }
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(created, PODS, "every pod created");
    let lease = "enclave-test-chaos-startup";
    for delay_ms in [100u64, 400, 900] {
        let mut operator = replica("chaos-startup", lease, "test/chaos-startup/leader");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let (took, status) = terminate(&mut operator).await;
        eprintln!(
            "SIGTERM {delay_ms} ms into a start at {PODS} pods: exited in {:.2} s ({status})",
            took.as_secs_f64()
        );
        assert!(
            took < Duration::from_secs(5),
            "SIGTERM {delay_ms} ms into a start at {PODS} pods took {took:?}"
        );
        assert_ne!(
            holder(lease).await.as_deref(),
            Some("chaos-startup"),
            "the lease is still held after SIGTERM at {delay_ms} ms"
        );
    }
}
