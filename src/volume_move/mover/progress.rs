//! Progress during a copy pass: the sender counts what rsync reports
//! (`--info=progress2`) and serves the counters, over TLS with its own certificate, to
//! whoever connects; the operator connects, trusting only the move's CA, and shows them
//! in the move's status while the pass runs.
//!
//! Why this way (docs/design.md, "Moving a volume's data"): a mover holds no API
//! credentials (a tenant could start a pod with the same service account and write the
//! move's status), and reading its log would need `pods/log` on every pod, the door the
//! enclave gates. The counters are not secret, so the server asks no client
//! certificate; the operator pins the move's CA and the sender's name, so that no other
//! pod can answer in the sender's place.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{REPORT_LIMIT, Report, parse_report, tls};

/// The port a sender serves its counters on.
pub const PROGRESS_PORT: u16 = 8874;

/// Connections answered at once; more wait for the listener (a pod of the namespace
/// can connect too: it learns counters, and cannot hold the sender up).
const CONCURRENT_ANSWERS: usize = 4;

/// What rsync has done so far in this pass, as its progress lines say.
#[derive(Debug)]
pub struct Counters {
    bytes: AtomicU64,
    files: AtomicU64,
    started: Instant,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl Counters {
    /// Takes in one line of rsync's stdout; lines that are not progress are ignored.
    pub fn observe(&self, line: &str) {
        if let Some((bytes, files)) = parse_progress2(line) {
            self.bytes.fetch_max(bytes, Ordering::Relaxed);
            if let Some(files) = files {
                self.files.fetch_max(files, Ordering::Relaxed);
            }
        }
    }

    /// The counters as a report: bytes, regular files, and the average rate since
    /// the pass started.
    pub fn report(&self) -> Report {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        Report {
            bytes,
            files: self.files.load(Ordering::Relaxed),
            bytes_per_second: if seconds >= 1.0 {
                (bytes as f64 / seconds) as u64
            } else {
                0
            },
            message: "copying".into(),
            ..Report::default()
        }
    }
}

/// Reads one `--info=progress2` line, `  1,234,567  12%  10.50MB/s  0:00:01 (xfr#3,
/// to-chk=10/100)`: the bytes transferred so far and, when the line has it, the
/// number of files transferred (`xfr#`).
pub fn parse_progress2(line: &str) -> Option<(u64, Option<u64>)> {
    let mut words = line.split_whitespace();
    let bytes = words.next()?;
    let percent = words.next()?;
    if !percent.ends_with('%') || !bytes.bytes().all(|b| b.is_ascii_digit() || b == b',') {
        return None;
    }
    let bytes: u64 = bytes.replace(',', "").parse().ok()?;
    let files = line.split_once("xfr#").and_then(|(_, rest)| {
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    Some((bytes, files))
}

/// Serves `counters` on `listener` until the task is dropped: each connection that
/// completes a TLS handshake gets one JSON report and is closed.
pub async fn serve(listener: TcpListener, config: rustls::ServerConfig, counters: Arc<Counters>) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let answering = Arc::new(Semaphore::new(CONCURRENT_ANSWERS));
    loop {
        let Ok(permit) = answering.clone().acquire_owned().await else {
            return;
        };
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, counters) = (acceptor.clone(), counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let answer = async {
                let mut tls = acceptor.accept(tcp).await.ok()?;
                let mut text = serde_json::to_vec(&counters.report()).ok()?;
                text.push(b'\n');
                tls.write_all(&text).await.ok()?;
                tls.shutdown().await.ok()
            };
            tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, answer)
                .await
                .ok();
        });
    }
}

/// Asks the sender at `address` for its counters, trusting only the CA of `ca_pem`
/// and only a certificate for `server_name`; everything within `timeout`.
pub async fn fetch(
    address: &str,
    server_name: &str,
    ca_pem: &[u8],
    timeout: Duration,
) -> Result<Report, String> {
    let config = tls::progress_client_config(ca_pem)?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("server name {server_name:?}: {e}"))?;
    let ask = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {address}: {e}"))?;
        let mut text = Vec::new();
        (&mut tls)
            .take(REPORT_LIMIT as u64)
            .read_to_end(&mut text)
            .await
            .map_err(|e| format!("reading the counters from {address}: {e}"))?;
        let text = String::from_utf8(text)
            .map_err(|_| format!("the counters from {address} are not UTF-8"))?;
        parse_report(&text).map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("no counters from {address} in {} ms", timeout.as_millis()))?
}
