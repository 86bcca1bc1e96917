//! The webhook under load, as a process: one operator answers 10,000 AdmissionReviews
//! sent straight to its HTTPS endpoint at 1,000 a second, and what it decided must all
//! be in its decision log — or be counted there by `RecordsLost` lines — in a log that
//! `enclave-operator verify-log` accepts against the checkpoints the operator kept in
//! the cluster. Then the shipped CLI is held to what it promises on that real log: an
//! intact copy verifies, and a deleted, an edited and two swapped lines are each named.
//!
//! The assertions are about evidence, never speed: a machine that cannot keep the
//! rate still has to log (or count) every decision it made. The rate and latencies
//! achieved are printed.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use common::*;
use enclave_operator::{
    admission::{ENTRIES, Handler},
    evidence::writer::{CHECKPOINTS, checkpoint_key},
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    sync::{OnceCell, mpsc},
    time::Instant,
};

/// Reviews per second the pacer sends, for how long, over how many connections.
const RATE: u32 = 1_000;
const SECONDS: u32 = 10;
const CONNECTIONS: usize = 8;
/// The operator's name in the harness, hence its chain id `test/load`.
const OPERATOR: &str = "load";
/// A node outside the EU enclave: pods pinned to it are denied.
const OUTSIDE: &str = "virginia-a";
/// How long one answer may take before it counts as never given.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the load run left behind, shared by both tests: the second verifies the
/// operator's real log, so it reuses the run instead of making a log of its own.
struct Run {
    namespace: String,
    /// What the client saw, one entry per review sent (index = review number).
    answers: Vec<Option<Answer>>,
    /// When the pacer had sent everything, and when the last answer arrived, from the
    /// first scheduled send.
    sent_in: Duration,
    answered_in: Duration,
    /// The most a send was late against its schedule (the pacer is open loop: a late
    /// send is one the client's own writes held up, and it is measured from its slot).
    max_send_lag: Duration,
    exit: std::process::ExitStatus,
    /// The operator's `--decision-log`, and its chain's checkpoints as JSON lines.
    log: PathBuf,
    checkpoints: PathBuf,
}

#[derive(Clone, Debug)]
struct Answer {
    verdict: Verdict,
    /// From the review's scheduled send to its answer's last byte.
    latency: Duration,
}

#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Placed,
    Denied,
    /// Anything else (wrong uid, HTTP error, placed without a patch…), described.
    Other(String),
}

static RUN: OnceCell<Run> = OnceCell::const_new();

async fn run() -> &'static Run {
    RUN.get_or_init(load).await
}

fn name_of(i: usize) -> String {
    format!("load-{i:05}")
}

/// Even reviews are placed, odd ones pinned outside the enclave and denied.
fn denied(i: usize) -> bool {
    i % 2 == 1
}

/// A Pod CREATE review as the API server sends it (only what decisions read, plus the
/// container every pod has).
fn review(uid: &str, namespace: &str, name: &str, node: Option<&str>, dry_run: bool) -> Vec<u8> {
    let mut spec = json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]});
    if let Some(node) = node {
        spec["nodeName"] = node.into();
    }
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "load-test", "groups": ["system:authenticated"]},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": "load"}},
                "spec": spec
            },
            "dryRun": dry_run
        }
    });
    serde_json::to_vec(&body).expect("a review serializes")
}

/// The path of the pods' mutating entry, from the admission table itself.
fn mutate_pods_path() -> String {
    ENTRIES
        .iter()
        .find(|e| e.handler == Handler::MutatePod)
        .expect("the table has a pod mutation entry")
        .path()
}

fn http_request(port: u16, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body).
async fn read_response<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<(u16, Vec<u8>), String> {
    let mut status = None;
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the connection closed before an answer".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if status.is_none() {
            status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        } else if let Some((key, value)) = line.split_once(':')
            && key.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.ok_or("an answer without Content-Length")?;
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status.ok_or("no status line")?, body))
}

/// What a review's answer says, checked against the uid it must carry.
fn verdict(uid: &str, status: u16, body: &[u8]) -> Verdict {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Other(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    };
    let response = &review["response"];
    if status != 200 || response["uid"] != uid {
        return Verdict::Other(format!("HTTP {status}, uid {}: {review}", response["uid"]));
    }
    match (response["allowed"].as_bool(), response["patch"].is_string()) {
        (Some(true), true) => Verdict::Placed,
        (Some(false), _) => Verdict::Denied,
        _ => Verdict::Other(review.to_string()),
    }
}

/// A TLS client that trusts only the CA the operator publishes in its Secret, so that
/// the load goes through the same certificate check the API server makes.
async fn connector(client: &kube::Client) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let secret = kube::Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get("enclave-operator-webhook-ca")
        .await
        .expect("the operator's CA Secret");
    let pem = secret
        .data
        .and_then(|mut d| d.remove("ca.crt"))
        .expect("the Secret holds ca.crt")
        .0;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.expect("ca.crt is PEM"))
            .expect("a CA rustls accepts");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(connector: &tokio_rustls::TlsConnector, port: u16) -> Result<Tls, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .expect("an IP address")
        .to_owned();
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with the operator's CA: {e}"))
}

/// One review on a fresh connection, answered or not within five seconds.
async fn ask(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    uid: &str,
    body: &[u8],
) -> Result<Verdict, String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut tls = connect(connector, port).await?;
        tls.write_all(&http_request(port, &mutate_pods_path(), body))
            .await
            .map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let (status, body) = read_response(&mut BufReader::new(tls)).await?;
        Ok(verdict(uid, status, &body))
    })
    .await
    .map_err(|_| "no answer in 5 s".to_string())?
}

/// Sends every review of one connection on its schedule (open loop: HTTP/1.1
/// pipelining, so a slow answer never holds back the next send) and reads the answers
/// in order. Returns (review, answer) pairs, and how late the latest send was.
async fn connection(
    tls: Tls,
    start: Instant,
    slots: Vec<(usize, Vec<u8>)>,
) -> (Vec<(usize, Answer)>, Duration, Instant) {
    let (read, mut write) = tokio::io::split(tls);
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let writer = tokio::spawn(async move {
        let mut lag = Duration::ZERO;
        let mut last = start;
        for (i, request) in slots {
            let at = slot(start, i);
            tokio::time::sleep_until(at).await;
            last = Instant::now();
            lag = lag.max(last.saturating_duration_since(at));
            // Announced before the write: the reader matches answers to reviews in
            // the order they were sent.
            let _ = sent_tx.send((i, at));
            if write.write_all(&request).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
        // The write half is kept until the answers are read: closing it could end
        // the connection early.
        (lag, last, write)
    });
    let mut reader = BufReader::new(read);
    let mut answers = Vec::new();
    while let Some((i, at)) = sent_rx.recv().await {
        let uid = format!("uid-{i}");
        let verdict = match tokio::time::timeout(ANSWER_TIMEOUT, read_response(&mut reader)).await {
            Ok(Ok((status, body))) => verdict(&uid, status, &body),
            // The rest of this connection's reviews stay unanswered.
            Ok(Err(error)) => {
                eprintln!("connection lost at review {i}: {error}");
                break;
            }
            Err(_) => {
                eprintln!("no answer to review {i} in {ANSWER_TIMEOUT:?}");
                break;
            }
        };
        answers.push((
            i,
            Answer {
                verdict,
                latency: at.elapsed(),
            },
        ));
    }
    let (lag, last, _write) = writer.await.expect("the writer task");
    (answers, lag, last)
}

/// When review `i` is due.
fn slot(start: Instant, i: usize) -> Instant {
    start + Duration::from_secs(1) / RATE * u32::try_from(i).expect("few reviews")
}

/// Starts the operator, loads it, stops it gracefully, and collects its evidence.
async fn load() -> Run {
    let client = client().await;
    apply(&eu_enclave("load-eu"));
    let ns = TestNamespace::new("load", true);
    apply(&policy(&ns.name, "load-eu", ""));
    // One process, no election: every decision in one chain, which the test verifies.
    let mut operator = Operator::start(OPERATOR, &["--leader-election=false"]);
    operator.ready().await;
    let port = operator.port;
    let connector = connector(&client).await;

    // The caches know the namespace, the policy, the enclave and the nodes once a
    // dry-run review (never recorded) is placed and one pinned outside is denied.
    eventually(
        Duration::from_secs(60),
        &format!("the webhook to place and deny pods in {}", ns.name),
        || async {
            let placed = ask(
                &connector,
                port,
                "probe-placed",
                &review("probe-placed", &ns.name, "probe", None, true),
            )
            .await?;
            let denied = ask(
                &connector,
                port,
                "probe-denied",
                &review("probe-denied", &ns.name, "probe", Some(OUTSIDE), true),
            )
            .await?;
            match (placed, denied) {
                (Verdict::Placed, Verdict::Denied) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // Every request is encoded before the clock starts, so the pacer only writes.
    let total = usize::try_from(RATE * SECONDS).expect("fits");
    let path = mutate_pods_path();
    let mut slots: Vec<Vec<(usize, Vec<u8>)>> = vec![Vec::new(); CONNECTIONS];
    for i in 0..total {
        let node = denied(i).then_some(OUTSIDE);
        let body = review(&format!("uid-{i}"), &ns.name, &name_of(i), node, false);
        slots[i % CONNECTIONS].push((i, http_request(port, &path, &body)));
    }
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        streams.push(
            connect(&connector, port)
                .await
                .expect("a webhook connection"),
        );
    }
    // All connections are open before the first slot, so the schedule holds from it.
    let start = Instant::now() + Duration::from_millis(200);
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(slots)
        .map(|(tls, slots)| tokio::spawn(connection(tls, start, slots)))
        .collect();
    let mut answers: Vec<Option<Answer>> = vec![None; total];
    let mut max_send_lag = Duration::ZERO;
    let mut sent_in = Duration::ZERO;
    let mut answered_in = Duration::ZERO;
    for task in tasks {
        let (mine, lag, last) = task.await.expect("a connection task");
        max_send_lag = max_send_lag.max(lag);
        sent_in = sent_in.max(last.saturating_duration_since(start));
        for (i, answer) in mine {
            answered_in = answered_in.max(slot(start, i) + answer.latency - start);
            answers[i] = Some(answer);
        }
    }

    // SIGTERM: the operator stops serving, drains its decision queue into the log and
    // takes a last checkpoint.
    operator.signal(libc::SIGTERM);
    let stopping = std::time::Instant::now();
    let exit = loop {
        if let Some(status) = operator.exited() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "the operator did not stop within 30 s of SIGTERM:\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("operator stopped {:?} after SIGTERM", stopping.elapsed());

    let key = checkpoint_key(&format!("test/{OPERATOR}"));
    let checkpoints = kube::Api::<ConfigMap>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get(CHECKPOINTS)
        .await
        .expect("the checkpoints ConfigMap")
        .data
        .and_then(|mut d| d.remove(&key))
        .unwrap_or_default();
    let checkpoints_file = decision_log(OPERATOR).with_extension("checkpoints");
    std::fs::write(&checkpoints_file, checkpoints).expect("write the checkpoints");
    Run {
        namespace: ns.name.clone(),
        answers,
        sent_in,
        answered_in,
        max_send_lag,
        exit,
        log: decision_log(OPERATOR),
        checkpoints: checkpoints_file,
    }
}

/// `enclave-operator verify-log <log> --checkpoints <file> [extra]`: (exit code, stdout, stderr).
fn verify_log(log: &Path, checkpoints: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_enclave-operator"))
        .arg("verify-log")
        .arg(log)
        .arg("--checkpoints")
        .arg(checkpoints)
        .args(extra)
        .output()
        .expect("run verify-log");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

#[tokio::test]
async fn ten_thousand_reviews_are_all_answered_and_none_is_lost_silently() {
    let run = run().await;
    let total = run.answers.len();

    // Every review was answered, as decided.
    let unanswered: Vec<usize> = (0..total).filter(|i| run.answers[*i].is_none()).collect();
    let wrong: Vec<String> = run
        .answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let a = a.as_ref()?;
            let expected = if denied(i) {
                Verdict::Denied
            } else {
                Verdict::Placed
            };
            (a.verdict != expected).then(|| format!("review {i}: {:?}", a.verdict))
        })
        .collect();
    let mut latencies: Vec<Duration> = run.answers.iter().flatten().map(|a| a.latency).collect();
    latencies.sort();
    eprintln!(
        "sent {total} reviews in {:.2} s ({:.0}/s; latest send {:?} behind its slot), answered by {:.2} s ({:.0}/s); latency from the scheduled send: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        run.sent_in.as_secs_f64(),
        total as f64 / run.sent_in.as_secs_f64(),
        run.max_send_lag,
        run.answered_in.as_secs_f64(),
        latencies.len() as f64 / run.answered_in.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    assert!(
        unanswered.is_empty(),
        "{} reviews unanswered, first {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(10)]
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        run.exit.success(),
        "the operator exits cleanly on SIGTERM: {:?}",
        run.exit
    );

    // The log holds each decision once, with its kind, or counts it as lost.
    let text = std::fs::read_to_string(&run.log).expect("the decision log");
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut ours: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lost = 0;
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).expect("every line is JSON");
        let kind = record["kind"].as_str().unwrap_or_default().to_string();
        *kinds.entry(kind.clone()).or_default() += 1;
        if kind == "RecordsLost" {
            lost += record["fields"]["count"].as_u64().expect("a count");
        }
        // Our reviews' decisions: about pods of our namespace, where no other pod is.
        let object = &record["fields"]["object"];
        if object["kind"] == "Pod" && object["namespace"] == run.namespace.as_str() {
            let name = object["name"].as_str().unwrap_or_default().to_string();
            ours.entry(name).or_default().push(kind);
        }
    }
    let mut missing: u64 = 0;
    let mut problems = Vec::new();
    for i in 0..total {
        let expected = if denied(i) { "PodDenied" } else { "PodPlaced" };
        match ours.remove(&name_of(i)).as_deref() {
            None => missing += 1,
            Some([kind]) if kind == expected => {}
            Some(other) => problems.push(format!("{}: {other:?}", name_of(i))),
        }
    }
    eprintln!(
        "decision log: {} lines ({kinds:?}); {} of our {total} decisions recorded, {missing} missing, RecordsLost total {lost}",
        text.lines().count(),
        total as u64 - missing
    );
    assert!(
        problems.is_empty() && ours.is_empty(),
        "each decision is recorded once with its kind: {:?}, unexpected {:?}",
        &problems[..problems.len().min(5)],
        ours.keys().take(5).collect::<Vec<_>>()
    );
    // Other decisions (the controllers', about other objects) share the queue, so the
    // RecordsLost total may exceed our own shortfall, never fall short of it.
    assert!(
        missing <= lost,
        "{missing} of our decisions are missing from the log but RecordsLost counts only {lost}: records were lost silently"
    );

    // And the log is one intact chain, held to the checkpoints in the cluster.
    let (code, stdout, stderr) = verify_log(&run.log, &run.checkpoints, &["--json"]);
    assert_eq!(code, Some(0), "verify-log: {stderr}{stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(
        report["recordsLost"], lost,
        "verify-log adds up the same losses"
    );
    assert_eq!(report["lines"], text.lines().count());
    eprintln!(
        "verify-log: {} records, seq {} to {}, {} checkpoints matched",
        report["lines"],
        report["firstSeq"],
        report["lastSeq"],
        report["checkpointsMatched"].as_array().map_or(0, Vec::len)
    );
}

/// seq of a log line.
fn seq(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).expect("JSON")["seq"]
        .as_u64()
        .expect("a seq")
}

#[tokio::test]
async fn verify_log_names_the_first_broken_line_of_a_real_log() {
    let run = run().await;
    let text = std::fs::read_to_string(&run.log).expect("the decision log");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 100, "a real log: {} lines", lines.len());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let write = |name: &str, lines: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{}\n", lines.join("\n"))).expect("write a copy");
        path
    };
    // The broken line is expected as `<file>:<line number> (seq <seq>)`.
    let broken = |name: &str, lines: Vec<&str>, number: usize, seq: u64, why: &str| {
        let path = write(name, &lines);
        let (code, stdout, stderr) = verify_log(&path, &run.checkpoints, &[]);
        eprintln!("{name}: {}", stderr.trim());
        assert_eq!(code, Some(1), "{name}: {stdout}{stderr}");
        let at = format!("{}:{number} (seq {seq})", path.display());
        assert!(
            stderr.contains(&at) && stderr.contains(why),
            "{name}: expected {at} and {why:?} in {stderr}"
        );
    };

    let (code, stdout, stderr) = verify_log(&write("intact.log", &lines), &run.checkpoints, &[]);
    assert_eq!(code, Some(0), "the intact copy: {stderr}");
    assert!(
        stdout.contains(&format!("verified {} records", lines.len())),
        "{stdout}"
    );

    // A decision in the middle: index `m` is line number m + 1.
    let m = lines.len() / 2
        + lines[lines.len() / 2..lines.len() - 1]
            .iter()
            .position(|l| l.contains("\"kind\":\"PodDenied\""))
            .expect("a denial in the second half");

    // Deleted: the line after it no longer follows its predecessor.
    let mut deleted = lines.clone();
    deleted.remove(m);
    broken(
        "deleted.log",
        deleted,
        m + 1,
        seq(lines[m + 1]),
        "sequence gap",
    );

    // Edited (the denied pod's name changed): the line itself is named, by the next
    // line's prev or by a checkpoint taken at it.
    let object = serde_json::from_str::<Value>(lines[m]).expect("JSON")["fields"]["object"]["name"]
        .as_str()
        .expect("a pod name")
        .to_string();
    let edited_line = lines[m].replace(
        &format!("\"name\":\"{object}\""),
        "\"name\":\"someone-else\"",
    );
    assert_ne!(edited_line, lines[m], "the edit changed the line");
    let mut edited = lines.clone();
    edited[m] = &edited_line;
    broken("edited.log", edited, m + 1, seq(lines[m]), "hashes to");

    // Swapped with the next: the first of the two places breaks the sequence.
    let mut swapped = lines.clone();
    swapped.swap(m, m + 1);
    broken(
        "swapped.log",
        swapped,
        m + 1,
        seq(lines[m + 1]),
        "sequence gap",
    );
}
