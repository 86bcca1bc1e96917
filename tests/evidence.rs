//! The decision log's checkpoints against the local control plane, with operators of
//! their own (one test at a time: they change the checkpoints ConfigMap every operator
//! of the namespace writes): the ConfigMap stays bounded whatever the chains left in it
//! by earlier rollouts; a store that loses every race to a concurrent writer fails
//! instead of counting as stored; a chain whose checkpoints are refused while its
//! writer runs is a finding of `enclave-operator audit`, a metric, a condition and an
//! Event.

mod common;

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use common::*;
use enclave_operator::evidence::{
    chain::{Checkpoint, Digest},
    checkpoints::{self, BUDGET_BYTES, CHECKPOINTS, MAX_RETIRED, StoreError},
};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
/// The API server's limit on a ConfigMap's data (keys and values).
const LIMIT: usize = 1024 * 1024;

fn checkpoint(seq: u64) -> Checkpoint {
    Checkpoint {
        seq,
        hash: Digest::of(&seq.to_le_bytes()),
        time: "2026-01-01T00:00:00Z".parse().expect("time"),
    }
}

fn line(seq: u64) -> String {
    serde_json::to_string(&checkpoint(seq)).expect("json")
}

async fn config_maps() -> Api<ConfigMap> {
    Api::namespaced(client().await, OPERATOR_NAMESPACE)
}

async fn data() -> BTreeMap<String, String> {
    config_maps()
        .await
        .get_opt(CHECKPOINTS)
        .await
        .expect("read the checkpoints")
        .and_then(|c| c.data)
        .unwrap_or_default()
}

/// Replaces the checkpoints ConfigMap (creating it when missing), as `immutable` asks.
/// A running operator may create it between the delete and the create: then again.
async fn put(data: BTreeMap<String, String>, immutable: bool) {
    let api = config_maps().await;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(CHECKPOINTS.into()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        immutable: immutable.then_some(true),
        ..ConfigMap::default()
    };
    eventually(TIMEOUT, "the checkpoints ConfigMap replaced", || async {
        let _ = api.delete(CHECKPOINTS, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &config_map)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

/// The records of an operator's decision log.
fn decisions(name: &str) -> Vec<Value> {
    std::fs::read_to_string(decision_log(name))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The last checkpoint of a key, if any.
fn head(data: &BTreeMap<String, String>, key: &str) -> Option<Checkpoint> {
    data.get(key)?
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Checkpoint>(l).ok())
}

/// A ConfigMap left by many rollouts of an operator that never pruned: 150 dead chains
/// with a checkpoint each, dead chains with a day of checkpoints each, and filler up to
/// a few bytes below the API server's limit, so that no checkpoint can be appended
/// without retiring what is dead. Before retirement existed, every write was refused
/// from here on (with only a warning in the operator's log).
#[tokio::test]
async fn checkpoints_stay_bounded_whatever_the_chains_earlier_rollouts_left() {
    let mut full: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..150 {
        full.insert(format!("enclave-system.dead-{i:03}"), line(i));
    }
    let day: String = (0..1440).map(line).collect::<Vec<_>>().join("\n");
    let mut i = 0;
    while checkpoints::size(&full) + day.len() + 64 < LIMIT - 200 {
        full.insert(format!("enclave-system.dead-day-{i}"), day.clone());
        i += 1;
    }
    let filler = "enclave-system.filler".to_string();
    let room = LIMIT - 16 - checkpoints::size(&full) - filler.len();
    full.insert(filler, "x".repeat(room));
    assert!(checkpoints::size(&full) <= LIMIT && checkpoints::size(&full) > LIMIT - 20);
    put(full, false).await;

    // Three rollouts: each a new chain id, killed without closing its chain.
    let mut operators = Vec::new();
    for rollout in 0..3 {
        let name = format!("evidence-roll-{rollout}");
        let mut operator = Operator::start(&name, &[]);
        operator.ready().await;
        let key = format!("test.{name}");
        eventually(TIMEOUT, &format!("a checkpoint of {key}"), || async {
            let now = data().await;
            match head(&now, &key) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "{} keys, {} bytes; log: {}",
                    now.len(),
                    checkpoints::size(&now),
                    operator.log_tail()
                )),
            }
        })
        .await;
        let now = data().await;
        assert!(
            checkpoints::size(&now) <= BUDGET_BYTES,
            "{} bytes",
            checkpoints::size(&now)
        );
        if rollout == 0 {
            // The records of what it retired reach its log before it is killed.
            eventually(
                TIMEOUT,
                "ChainRetired records in the first rollout's log",
                || async {
                    let n = decisions(&name)
                        .iter()
                        .filter(|r| r["kind"] == "ChainRetired")
                        .count();
                    if n > 150 { Ok(()) } else { Err(n) }
                },
            )
            .await;
        }
        if rollout < 2 {
            operator.stop();
        }
        operators.push(operator);
    }
    // The writers of the first two are gone: their chains are sealed at their last
    // checkpoint once their Leases expire, by the writer that runs.
    let sealed = eventually(TIMEOUT, "the killed rollouts' chains sealed", || async {
        let now = data().await;
        let sealed: Vec<bool> = (0..2)
            .map(|r| {
                now.get(&format!("test.evidence-roll-{r}"))
                    .is_some_and(|v| checkpoints::retired_at(v).is_some() && v.lines().count() == 1)
            })
            .collect();
        if sealed.iter().all(|s| *s) {
            Ok(now)
        } else {
            Err(format!("{sealed:?}"))
        }
    })
    .await;
    let size = checkpoints::size(&sealed);
    assert!(size <= BUDGET_BYTES, "{size} bytes");
    let retired = sealed
        .values()
        .filter(|v| checkpoints::retired_at(v).is_some())
        .count();
    assert!(retired <= MAX_RETIRED, "{retired} sealed chains kept");
    assert!(
        !sealed.contains_key("enclave-system.filler"),
        "no checkpoint: dropped"
    );
    eprintln!(
        "after three rollouts over a full ConfigMap: {} keys, {size} bytes, {retired} sealed",
        sealed.len()
    );

    // Every dead chain's last checkpoint is in the decision log of the writer that
    // retired it, whether or not its seal is still kept.
    let records: Vec<Value> = decisions("evidence-roll-0")
        .into_iter()
        .filter(|r| r["kind"] == "ChainRetired")
        .collect();
    let of = |key: &str| {
        records
            .iter()
            .find(|r| r["fields"]["object"]["name"] == key)
            .map(|r| r["fields"]["checkpoint"].clone())
    };
    assert_eq!(
        of("enclave-system.dead-day-0"),
        Some(serde_json::json!({
            "seq": 1439, "hash": checkpoint(1439).hash.to_string(), "time": "2026-01-01T00:00:00Z"
        })),
        "{} ChainRetired records",
        records.len()
    );
    assert!(of("enclave-system.dead-149").is_some());
    drop(operators);
}

/// A concurrent writer changes the ConfigMap between each read and write of a store:
/// the real API server answers every write with a conflict, and after the last attempt
/// the store fails. (It used to return Ok, and the checkpoint counted as stored.)
#[tokio::test]
async fn a_store_that_loses_every_race_fails_and_writes_nothing() {
    let client = client().await;
    let namespace = "evidence-conflicts";
    let _ns = TestNamespace::new(namespace, false);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let key = "evidence-conflicts.op-0";
    checkpoints::store(&api, &leases, key, &checkpoint(1))
        .await
        .expect("the first store");
    let races = Arc::new(AtomicU32::new(0));
    let result = checkpoints::store_with(&api, &leases, key, Some(&checkpoint(2)), || {
        let (api, races) = (api.clone(), races.clone());
        async move {
            let n = races.fetch_add(1, Ordering::SeqCst);
            let patch = serde_json::json!({"metadata": {"annotations": {"race": n.to_string()}}});
            api.patch(CHECKPOINTS, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("the concurrent write");
        }
    })
    .await;
    match result {
        Err(StoreError::Conflicts(n)) => assert_eq!(n, checkpoints::ATTEMPTS),
        other => panic!("expected the conflicts to be an error, got {other:?}"),
    }
    assert_eq!(races.load(Ordering::SeqCst), checkpoints::ATTEMPTS);
    let stored = api
        .get(CHECKPOINTS)
        .await
        .expect("the ConfigMap")
        .data
        .unwrap_or_default();
    assert_eq!(
        head(&stored, key),
        Some(checkpoint(1)),
        "seq 2 was never written"
    );
    // Without the race it is stored.
    checkpoints::store(&api, &leases, key, &checkpoint(2))
        .await
        .expect("a store without a race");
    let stored = api
        .get(CHECKPOINTS)
        .await
        .expect("the ConfigMap")
        .data
        .unwrap_or_default();
    assert_eq!(head(&stored, key), Some(checkpoint(2)));
}

fn audit_json() -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_enclave-operator"))
        .args(["audit", "--json", "-", "--namespace", OPERATOR_NAMESPACE])
        .args(["--policy", "evidence-stall"])
        .output()
        .expect("run the audit");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report)
}

/// The checkpoints ConfigMap made immutable: every store of a running operator is
/// refused. Its chain's head stops moving in the cluster while its log goes on; the
/// audit says so (a finding), and the operator counts, logs and shows it.
#[tokio::test]
async fn a_chain_whose_checkpoints_are_refused_while_its_writer_runs_is_reported() {
    let saved = data().await;
    let key = "test.evidence-stall";
    // The chain's last stored checkpoint, from which the operator resumes.
    let resumed_from = checkpoint(5);
    put(
        BTreeMap::from([(key.to_string(), line(resumed_from.seq))]),
        true,
    )
    .await;
    apply(&eu_enclave("evidence-eu"));
    apply(
        "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata:\n  name: evidence-stall\nspec:\n  enclave: evidence-eu\n  match:\n    namespaceSelector: {matchLabels: {enclave.dev/test-scope: evidence-stall-none}}\n",
    );
    let mut operator = Operator::start("evidence-stall", &[]);
    operator.ready().await;

    let (code, report) = eventually(TIMEOUT, "the audit to report the stalled chain", || async {
        let (code, report) = audit_json();
        let stalled = report["chain"]["stalled"].to_string();
        if stalled.contains("chain test/evidence-stall:")
            && stalled.contains("chain test/evidence-stall/leader:")
        {
            Ok((code, report))
        } else {
            Err(format!("exit {code:?}, chain: {}", report["chain"]))
        }
    })
    .await;
    assert_eq!(code, Some(1), "a stalled chain is a finding");
    let stalled: Vec<String> = report["chain"]["stalled"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let replica = stalled
        .iter()
        .find(|s| s.starts_with("chain test/evidence-stall:"))
        .expect("the replica chain");
    assert!(
        replica.contains("stopped at seq 5") && replica.contains("written up to seq"),
        "{replica}"
    );
    assert!(
        replica.contains("immutable"),
        "the error is named: {replica}"
    );
    // The leader chain never got a checkpoint at all.
    assert!(
        stalled
            .iter()
            .any(|s| s.starts_with("chain test/evidence-stall/leader: no checkpoint is stored")),
        "{stalled:?}"
    );

    // The operator shows it: metric, condition, Event, log.
    let metrics = http_get(&format!(
        "http://127.0.0.1:{}/metrics",
        operator.metrics_port
    ))
    .await
    .expect("metrics")
    .1;
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "enclave_operator_evidence_checkpoint_failures_total{reason=\"refused\"}"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("enclave_operator_evidence_checkpoints_total ") && !l.ends_with(" 0")
        ),
        "no checkpoint counted as stored: {metrics}"
    );
    eventually(
        TIMEOUT,
        "the policy's DecisionLogCheckpointed condition",
        || async {
            let out = kubectl_ok(&[
                "get",
                "residencypolicy",
                "evidence-stall",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"DecisionLogCheckpointed\")].reason}",
            ]);
            if out == "CheckpointFailing" {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    let events = kubectl_ok(&[
        "get",
        "events",
        "-n",
        OPERATOR_NAMESPACE,
        "--field-selector",
        &format!("reason=CheckpointFailed,involvedObject.name={CHECKPOINTS}"),
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(events.contains("chain test/evidence-stall"), "{events}");
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert!(
        log.contains("checkpoint was NOT stored"),
        "{}",
        operator.log_tail()
    );

    // Writable again: stored at the next interval, and the condition comes back.
    operator_keeps_running(&mut operator);
    let mut restored = saved;
    restored.insert(key.to_string(), line(resumed_from.seq));
    put(restored, false).await;
    eventually(TIMEOUT, "the chain checkpointed again", || async {
        let now = data().await;
        match head(&now, key) {
            Some(c) if c.seq > 5 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually(TIMEOUT, "the condition back to True", || async {
        let out = kubectl_ok(&[
            "get",
            "residencypolicy",
            "evidence-stall",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"DecisionLogCheckpointed\")].status}",
        ]);
        if out == "True" { Ok(()) } else { Err(out) }
    })
    .await;
    let (_, report) = audit_json();
    assert!(
        !report["chain"]["stalled"]
            .to_string()
            .contains("test/evidence-stall:"),
        "{}",
        report["chain"]
    );
    drop(operator);
    let _ = kubectl(&["delete", "residencypolicy", "evidence-stall"], None);
    let _ = kubectl(&["delete", "dataenclave", "evidence-eu"], None);
}

fn operator_keeps_running(operator: &mut Operator) {
    assert!(operator.exited().is_none(), "{}", operator.log_tail());
}
