//! The mover: `enclave-operator mover receive|send`, the program both mover pods of a
//! pass run (the sender next to the source volume, the receiver in the enclave).
//!
//! Transport: rsync's daemon protocol inside mutual TLS ([`tls`]). The receiver accepts
//! one connection authenticated by the move's own CA, then runs
//! `rsync --server --daemon` on it with a configuration of its own ([`rsyncd_conf`]:
//! one module, write only, so the sender can never read the enclave's copy). The
//! sender runs rsync against a listener on its own loopback and carries that one
//! connection through the TLS connection ([`send`]): no second process holds the key.
//!
//! The verify pass runs no rsync: both sides walk the volume into a manifest
//! ([`walk`]); the sender sends its own, the receiver compares and answers with its root
//! hash and the first difference, so that both know the outcome.
//!
//! Each side writes one JSON [`Report`] to its termination message ([`report`]).

pub mod progress;
mod report;
#[cfg(test)]
mod tests;
mod tls;
pub mod walk;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpListener,
    process::Command,
};

pub use report::{REPORT_LIMIT, Report, ReportError, parse_report};
pub use tls::progress_server_config;

use super::manifest::Manifest;

/// The capabilities the sender keeps (it runs as root, everything else dropped): it
/// reads every file and directory whatever its mode and owner (`DAC_READ_SEARCH`;
/// without it rsync skips a 0700 directory of another owner, exit 23, and the walk
/// fails), and writes nothing. Measured with `setpriv --bounding-set` (docs/design.md).
pub const SENDER_CAPABILITIES: &[&str] = &["DAC_READ_SEARCH"];

/// The capabilities the receiver keeps (root, everything else dropped), each found
/// necessary by dropping it (docs/design.md, "The mover"): `CHOWN` (files of any owner),
/// `DAC_OVERRIDE` (writes into, and reads for `--delete` and the verification,
/// directories whatever their mode; it covers `DAC_READ_SEARCH`), `FOWNER` (modes,
/// times, ACLs and xattrs of files it does not own), `FSETID` (setuid/setgid bits on
/// files of another group), `SYS_CHROOT` (rsync's daemon confined to `--data`, see
/// [`rsyncd_conf`]) and `SETGID` (rsync's daemon calls `setgroups` when it applies its
/// `uid = 0`/`gid = 0`, even to the ids it already has).
pub const RECEIVER_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "SETGID",
    "SYS_CHROOT",
];

/// rsync: where the image puts it (hack/image.sh), else from `PATH` (a developer's
/// machine). The image sets no `PATH`, so the mover does not rely on one.
fn rsync() -> &'static str {
    const IN_IMAGE: &str = "/usr/bin/rsync";
    if Path::new(IN_IMAGE).exists() {
        IN_IMAGE
    } else {
        "rsync"
    }
}

/// Which pass of a move this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PassArg {
    /// The first copy, while the application runs: vanished files are tolerated.
    First,
    /// The delta with the application stopped: every rsync failure is fatal.
    Final,
    /// Both sides compute their manifest; equal root hashes or failure.
    Verify,
}

impl PassArg {
    fn name(self) -> &'static str {
        match self {
            PassArg::First => "first",
            PassArg::Final => "final",
            PassArg::Verify => "verify",
        }
    }
}

impl From<PassArg> for super::Pass {
    fn from(pass: PassArg) -> Self {
        match pass {
            PassArg::First => super::Pass::First,
            PassArg::Final => super::Pass::Final,
            PassArg::Verify => super::Pass::Verify,
        }
    }
}

/// `enclave-operator mover ...`
#[derive(Clone, Debug, clap::Args)]
pub struct MoverArgs {
    #[command(subcommand)]
    pub side: Side,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Side {
    /// The enclave's side: accept the sender's one authenticated connection and write.
    Receive(ReceiveArgs),
    /// The source's side: connect to the receiver and send.
    Send(SendArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct ReceiveArgs {
    #[arg(long, value_enum)]
    pub pass: PassArg,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8873")]
    pub listen: String,
    /// Directory with ca.crt (the move's CA), tls.crt and tls.key (this side's).
    #[arg(long, default_value = "/credentials")]
    pub credentials: PathBuf,
    /// The destination claim's mount.
    #[arg(long, default_value = "/data")]
    pub data: PathBuf,
    /// Where the report goes (the termination message).
    #[arg(long, default_value = "/dev/termination-log")]
    pub report: PathBuf,
}

#[derive(Clone, Debug, clap::Args)]
pub struct SendArgs {
    #[arg(long, value_enum)]
    pub pass: PassArg,
    /// The receiver, HOST:PORT.
    #[arg(long)]
    pub connect: String,
    /// The name in the receiver's certificate.
    #[arg(long)]
    pub server_name: String,
    #[arg(long, default_value = "/credentials")]
    pub credentials: PathBuf,
    /// The source claim's mount.
    #[arg(long, default_value = "/data")]
    pub data: PathBuf,
    /// Seconds to keep trying to reach the receiver (its pod may start later).
    #[arg(long, default_value_t = 300)]
    pub connect_timeout: u64,
    #[arg(long, default_value = "/dev/termination-log")]
    pub report: PathBuf,
    /// Copy passes: serve the pass's counters on this address ([`progress`]), with
    /// this side's certificate.
    #[arg(long)]
    pub progress_listen: Option<String>,
    /// Copy passes: at most this many KiB per second on the wire (rsync's `--bwlimit`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub bwlimit_kib: Option<u64>,
}

/// How a side ended: its report and its exit code (rsync's, when rsync failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub report: Report,
    pub code: i32,
}

impl Outcome {
    fn failed(message: String) -> Self {
        Self {
            report: Report {
                message,
                ..Report::default()
            },
            code: 1,
        }
    }
}

/// Runs one side and writes its report; the process's exit code.
pub async fn run(args: MoverArgs) -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let (outcome, report_path) = match args.side {
        Side::Receive(args) => (receive(&args).await, args.report),
        Side::Send(args) => (send(&args).await, args.report),
    };
    if outcome.code == 0 {
        tracing::info!(message = %outcome.report.message, "mover done");
    } else {
        tracing::error!(code = outcome.code, message = %outcome.report.message, "mover failed");
    }
    if let Err(error) = std::fs::write(&report_path, outcome.report.encode()) {
        tracing::error!(path = %report_path.display(), %error, "cannot write the report");
    }
    std::process::ExitCode::from(u8::try_from(outcome.code).unwrap_or(1))
}

// ---- The receiver ---------------------------------------------------------------------

/// The receiver's rsync daemon configuration. None of it is the sender's to choose.
///
/// `use chroot = yes` (hence `SYS_CHROOT` in [`RECEIVER_CAPABILITIES`]): without a
/// chroot, rsync's daemon "sanitizes" every symlink it receives, stripping leading `/`
/// and `../` (`/etc/passwd` arrives as `etc/passwd`, `../x` as `x`), which would change
/// the application's data and fail every verification of a volume with such links. The
/// chroot keeps them byte for byte, and the kernel, not rsync's path checks, keeps the
/// writes inside `--data`. `munge symlinks = no`: symlinks are data. `uid = 0`,
/// `gid = 0`, `numeric ids`: the daemon stays root and keeps the numeric owners (no
/// names are looked up; the chroot has no /etc/passwd anyway). `write only`: the
/// sender cannot download anything of the enclave's copy. `list = false`: nor list it.
pub fn rsyncd_conf(data: &Path) -> String {
    format!(
        "# written by enclave-operator mover receive\n\
         use chroot = yes\n\
         numeric ids = yes\n\
         uid = 0\n\
         gid = 0\n\
         munge symlinks = no\n\
         fake super = no\n\
         log file = /dev/stderr\n\
         \n\
         [data]\n\
         path = {}\n\
         read only = false\n\
         write only = true\n\
         list = false\n",
        data.display()
    )
}

/// The configuration in a directory of its own under the temporary directory (`$TMPDIR`,
/// else `/tmp`: a pod with a read-only root file system needs an `emptyDir` there),
/// readable by root only, removed when dropped. Not a memfd: rsync refuses to read its
/// configuration through `/proc/self/fd/N`.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn write(text: &str) -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("enclave-mover-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("rsyncd.conf");
        let file = Self { dir, path };
        std::fs::write(&file.path, text)
            .map_err(|e| format!("cannot write {}: {e}", file.path.display()))?;
        Ok(file)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first bytes the receiver sends: the sender learns that it was accepted and for
/// which pass (a sender and a receiver of different passes stop at once).
fn greeting(pass: PassArg) -> String {
    format!("enclave-mover 1 {}\n", pass.name())
}

/// The receiver: one authenticated connection, then rsync's daemon on it (copy passes)
/// or the comparison of manifests (verify).
pub async fn receive(args: &ReceiveArgs) -> Outcome {
    match receive_inner(args).await {
        Ok(outcome) => outcome,
        Err(message) => Outcome::failed(message),
    }
}

async fn receive_inner(args: &ReceiveArgs) -> Result<Outcome, String> {
    let config = tls::server_config(&args.credentials)?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    receive_on(listener, config, args).await
}

async fn receive_on(
    listener: TcpListener,
    config: rustls::ServerConfig,
    args: &ReceiveArgs,
) -> Result<Outcome, String> {
    tracing::info!(address = %args.listen, pass = args.pass.name(), "waiting for the sender");
    // The receiver's own manifest is computed while it waits.
    let own = (args.pass == PassArg::Verify).then(|| {
        let data = args.data.clone();
        tokio::task::spawn_blocking(move || walk::manifest(&data))
    });
    let mut stream = tls::accept_one(&listener, config).await?;
    // One connection per pass: nobody else gets to talk to this receiver.
    drop(listener);
    stream
        .write_all(greeting(args.pass).as_bytes())
        .await
        .map_err(|e| format!("greeting the sender: {e}"))?;
    match own {
        Some(own) => {
            let own = own
                .await
                .map_err(|e| format!("the walk of --data stopped: {e}"))?;
            verify_receiver(stream, own).await
        }
        None => copy_receiver(stream, args).await,
    }
}

async fn copy_receiver<S>(stream: S, args: &ReceiveArgs) -> Result<Outcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The path goes into the configuration's `path = ` line: it must not end that line
    // early, and the chroot needs it absolute.
    match args.data.to_str() {
        Some(data) if args.data.is_absolute() && !data.contains(['\n', '\r']) => {}
        _ => {
            return Err(format!(
                "--data {:?}: must be an absolute UTF-8 path without line breaks",
                args.data
            ));
        }
    }
    let config = ConfigFile::write(&rsyncd_conf(&args.data))?;
    let started = Instant::now();
    let mut child = Command::new(rsync())
        .arg("--server")
        .arg("--daemon")
        .arg(format!("--config={}", config.path.display()))
        .arg(".")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start rsync: {e}"))?;
    let stdio = tokio::io::join(
        child.stdout.take().expect("piped"),
        child.stdin.take().expect("piped"),
    );
    let last_error = tokio::spawn(relay_stderr(child.stderr.take().expect("piped")));
    let pumped = pump(stream, stdio).await;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for rsync: {e}"))?;
    let last_error = last_error.await.unwrap_or_default();
    drop(config);
    let code = status.code().unwrap_or(20);
    let seconds = started.elapsed().as_secs_f64();
    let message = match (code, &pumped) {
        (0, _) => format!("received in {seconds:.1} s"),
        (_, Err(error)) => format!(
            "rsync exited with {code}: {}; the connection: {error}",
            last_error.unwrap_or_default()
        ),
        (_, Ok(_)) => format!(
            "rsync exited with {code}: {}",
            last_error.unwrap_or_default()
        ),
    };
    Ok(Outcome {
        report: Report {
            message,
            ..Report::default()
        },
        code,
    })
}

/// The most a manifest may weigh on the wire (100 bytes and more per path: tens of
/// millions of paths).
const MANIFEST_LIMIT: u64 = 4 << 30;

async fn verify_receiver<S>(mut stream: S, own: Result<Manifest, String>) -> Result<Outcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let length = stream
        .read_u64()
        .await
        .map_err(|e| format!("reading the sender's manifest: {e}"))?;
    // A sender that could not walk its side says so instead of a manifest.
    if length == u64::MAX {
        let mut why = String::new();
        (&mut stream)
            .take(REPORT_LIMIT as u64)
            .read_to_string(&mut why)
            .await
            .ok();
        return Err(format!("the sender could not compute its manifest: {why}"));
    }
    if length > MANIFEST_LIMIT {
        return Err(format!(
            "the sender's manifest is {length} bytes, more than {MANIFEST_LIMIT}"
        ));
    }
    let mut text = Vec::new();
    (&mut stream)
        .take(length)
        .read_to_end(&mut text)
        .await
        .map_err(|e| format!("reading the sender's manifest: {e}"))?;
    let answer = |verdict: &Report| serde_json::to_vec(verdict).unwrap_or_default();
    let verdict = (|| {
        let own = own.map_err(|e| format!("cannot compute this side's manifest: {e}"))?;
        if text.len() as u64 != length {
            return Err("the connection ended inside the sender's manifest".to_string());
        }
        let text = String::from_utf8(text)
            .map_err(|_| "the sender's manifest is not UTF-8".to_string())?;
        let source = Manifest::parse(&text).map_err(|e| format!("the sender's manifest: {e}"))?;
        let root_hash = own.root_hash();
        let files = own.entries().len() as u64;
        Ok(match source.first_difference(&own) {
            None if source.root_hash() == root_hash => Report {
                files,
                root_hash: Some(root_hash.clone()),
                message: format!("verified: both sides' manifests have root {root_hash}"),
                ..Report::default()
            },
            difference => {
                let difference = difference
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "the root hashes differ".into());
                Report {
                    files,
                    root_hash: Some(root_hash),
                    message: format!(
                        "the manifests differ: source root {}; first difference: {difference}",
                        source.root_hash()
                    ),
                    first_difference: Some(difference),
                    ..Report::default()
                }
            }
        })
    })();
    let (report, code) = match verdict {
        Ok(report) => {
            let code = i32::from(report.first_difference.is_some());
            (report, code)
        }
        Err(message) => (
            Report {
                message,
                ..Report::default()
            },
            1,
        ),
    };
    let reply = answer(&report);
    stream.write_u64(reply.len() as u64).await.ok();
    stream.write_all(&reply).await.ok();
    stream.shutdown().await.ok();
    Ok(Outcome { report, code })
}

// ---- The sender -----------------------------------------------------------------------

/// The rsync options of a copy: archive (recursion, symlinks, permissions, times, group,
/// owner, devices and specials), hard links, ACLs, xattrs, sparse files, numeric ids,
/// deletions, and the statistics the report reads.
pub const RSYNC_OPTIONS: &[&str] = &[
    "-aHAXS",
    "--numeric-ids",
    "--delete",
    "--stats",
    "--info=progress2",
];

/// The sender: connects (retrying), then rsync (copy passes) or its manifest (verify).
pub async fn send(args: &SendArgs) -> Outcome {
    match send_inner(args).await {
        Ok(outcome) => outcome,
        Err(message) => Outcome::failed(message),
    }
}

async fn send_inner(args: &SendArgs) -> Result<Outcome, String> {
    let config = tls::client_config(&args.credentials)?;
    // The verify pass walks before it connects: the receiver walks while it waits.
    let manifest = if args.pass == PassArg::Verify {
        let data = args.data.clone();
        Some(
            tokio::task::spawn_blocking(move || walk::manifest(&data))
                .await
                .map_err(|e| format!("the walk of --data stopped: {e}"))?,
        )
    } else {
        None
    };
    let timeout = Duration::from_secs(args.connect_timeout);
    let mut stream = tls::connect(&args.connect, &args.server_name, config, timeout).await?;
    let expected = greeting(args.pass);
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).await.map_err(|e| {
        format!(
            "the receiver at {} did not accept this sender (TLS: {e})",
            args.connect
        )
    })?;
    if got != expected.as_bytes() {
        return Err(format!(
            "the receiver greeted with {:?}, expected {expected:?} (a receiver of another pass?)",
            String::from_utf8_lossy(&got)
        ));
    }
    match manifest {
        Some(manifest) => verify_sender(stream, manifest).await,
        None => {
            let counters = Arc::new(progress::Counters::default());
            let _serving = match &args.progress_listen {
                Some(address) => Some(serve_progress(address, args, counters.clone()).await?),
                None => None,
            };
            let mut options: Vec<String> = RSYNC_OPTIONS.iter().map(|o| o.to_string()).collect();
            if let Some(kib) = args.bwlimit_kib {
                options.push(format!("--bwlimit={kib}"));
            }
            copy_sender(stream, args.pass, &args.data, &options, &[], &counters).await
        }
    }
}

/// Starts serving the pass's counters; they stop when the guard is dropped.
async fn serve_progress(
    address: &str,
    args: &SendArgs,
    counters: Arc<progress::Counters>,
) -> Result<AbortOnDrop, String> {
    let config = tls::progress_server_config(&args.credentials)?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("--progress-listen {address}: {e}"))?;
    Ok(AbortOnDrop(tokio::spawn(progress::serve(
        listener, config, counters,
    ))))
}

/// Ends a task when its owner ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn verify_sender<S>(
    mut stream: S,
    manifest: Result<Manifest, String>,
) -> Result<Outcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let manifest = match manifest {
        Ok(manifest) => manifest,
        Err(error) => {
            let message = format!("cannot compute this side's manifest: {error}");
            stream.write_u64(u64::MAX).await.ok();
            stream.write_all(message.as_bytes()).await.ok();
            stream.shutdown().await.ok();
            return Err(message);
        }
    };
    let text = manifest.encode();
    stream
        .write_u64(text.len() as u64)
        .await
        .map_err(|e| format!("sending the manifest: {e}"))?;
    stream
        .write_all(text.as_bytes())
        .await
        .map_err(|e| format!("sending the manifest: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending the manifest: {e}"))?;
    let length = stream
        .read_u64()
        .await
        .map_err(|e| format!("reading the receiver's verdict: {e}"))?;
    if length > REPORT_LIMIT as u64 * 2 {
        return Err(format!("the receiver's verdict is {length} bytes long"));
    }
    let mut reply = vec![0u8; length as usize];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|e| format!("reading the receiver's verdict: {e}"))?;
    let verdict: Report = serde_json::from_slice(&reply)
        .map_err(|e| format!("the receiver's verdict is not a report: {e}"))?;
    let root_hash = manifest.root_hash();
    let files = manifest.entries().len() as u64;
    let (code, message) = match &verdict.root_hash {
        Some(theirs) if *theirs == root_hash => (
            0,
            format!("verified: both sides' manifests have root {root_hash}"),
        ),
        Some(theirs) => (
            1,
            format!(
                "the manifests differ: destination root {theirs}; {}",
                verdict
                    .first_difference
                    .as_deref()
                    .unwrap_or("no difference named")
            ),
        ),
        None => (
            1,
            format!("the receiver could not verify: {}", verdict.message),
        ),
    };
    Ok(Outcome {
        report: Report {
            files,
            root_hash: Some(root_hash),
            message,
            ..Report::default()
        },
        code,
    })
}

/// Runs rsync with `options` against a listener on this pod's loopback, carries its one
/// connection through `stream`, and keeps `counters` up to date. `extra`, when not
/// empty, replaces rsync's arguments (`PORT` in them becomes the loopback port): tests
/// use it for what a hostile sender would try.
async fn copy_sender<S>(
    stream: S,
    pass: PassArg,
    data: &Path,
    options: &[String],
    extra: &[&str],
    counters: &Arc<progress::Counters>,
) -> Result<Outcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let local = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("listening on the loopback for rsync: {e}"))?;
    let port = local.local_addr().map_err(|e| e.to_string())?.port();
    let mut source = data.as_os_str().to_owned();
    source.push("/");
    let started = Instant::now();
    let mut command = Command::new(rsync());
    if extra.is_empty() {
        command
            .args(options)
            .arg(&source)
            .arg(format!("rsync://127.0.0.1:{port}/data/"));
    } else {
        command.args(extra.iter().map(|a| a.replace("PORT", &port.to_string())));
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start rsync: {e}"))?;
    let stats = tokio::spawn(read_stats(
        child.stdout.take().expect("piped"),
        counters.clone(),
    ));
    let last_error = tokio::spawn(relay_stderr(child.stderr.take().expect("piped")));
    // rsync's one connection; nothing else on this pod connects to its loopback, and
    // the listener closes as soon as it has it.
    let accepted = tokio::select! {
        accepted = local.accept() => Some(accepted.map_err(|e| format!("accepting rsync's connection: {e}"))?.0),
        _ = child.wait() => None,
    };
    drop(local);
    let pumped = match accepted {
        Some(tcp) => pump(stream, tcp).await,
        None => Ok(()),
    };
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for rsync: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let (bytes, files) = stats.await.unwrap_or_default();
    let last_error = last_error.await.unwrap_or_default().unwrap_or_default();
    let code = status.code().unwrap_or(20);
    let rate = if seconds > 0.0 {
        (bytes as f64 / seconds) as u64
    } else {
        bytes
    };
    let (code, message) = match code {
        0 => (
            0,
            format!("sent {files} files, {bytes} bytes in {seconds:.1} s"),
        ),
        // The application is still writing during the first copy: a file deleted between
        // rsync's listing and its reading is copied (or deleted) by the final pass.
        code if tolerated(code, pass) => (
            0,
            format!(
                "sent {files} files, {bytes} bytes in {seconds:.1} s; some source files vanished during the copy (tolerated in the first pass: the final pass copies them): {last_error}"
            ),
        ),
        code => (
            code,
            match pumped {
                Err(error) => {
                    format!("rsync exited with {code}: {last_error}; the connection: {error}")
                }
                Ok(()) => format!("rsync exited with {code}: {last_error}"),
            },
        ),
    };
    Ok(Outcome {
        report: Report {
            bytes,
            files,
            bytes_per_second: rate,
            message,
            ..Report::default()
        },
        code,
    })
}

/// The one rsync failure that does not fail a pass: 24, "some source files vanished",
/// in the first pass only, where the application still writes (the final pass copies
/// what changed). In the final pass the application is stopped: a vanished file there
/// means something else writes, and the copy cannot be trusted.
fn tolerated(code: i32, pass: PassArg) -> bool {
    code == 24 && pass == PassArg::First
}

// ---- Plumbing -------------------------------------------------------------------------

/// Carries bytes both ways until both directions ended. The TLS side is closed with a
/// close_notify when the local side ends, so that a connection cut by anything else
/// (a killed pod, the network) reads as an error on the other end.
async fn pump<A, B>(mut tls: A, mut local: B) -> Result<(), String>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional(&mut tls, &mut local)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Copies rsync's stderr to ours, line by line, and keeps the last non-empty line for
/// the report.
async fn relay_stderr(stderr: impl AsyncRead + Unpin) -> Option<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut last = None;
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("rsync: {line}");
        if !line.trim().is_empty() {
            last = Some(line.trim().to_string());
        }
    }
    last
}

/// Reads rsync's stdout (the progress and the `--stats`), logs it, counts the progress
/// into `counters`, and gives the transferred bytes and regular files.
async fn read_stats(
    stdout: impl AsyncRead + Unpin,
    counters: Arc<progress::Counters>,
) -> (u64, u64) {
    let mut reader = BufReader::new(stdout);
    let (mut bytes, mut files) = (0, 0);
    let mut line = Vec::new();
    let mut last_progress = Instant::now();
    loop {
        line.clear();
        // The progress line is redrawn with carriage returns: split on those too.
        let mut byte = [0u8; 1];
        let mut ended = false;
        loop {
            match reader.read(&mut byte).await {
                Ok(1) if byte[0] == b'\n' || byte[0] == b'\r' => break,
                Ok(1) => line.push(byte[0]),
                _ => {
                    ended = true;
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if let Some(value) = stat_value(text, "Total transferred file size:") {
            bytes = value;
        } else if let Some(value) = stat_value(text, "Number of regular files transferred:") {
            files = value;
        }
        counters.observe(text);
        let progress = text.contains("xfr#") || text.contains("to-chk=");
        if !text.is_empty() && (!progress || last_progress.elapsed() > Duration::from_secs(10)) {
            eprintln!("rsync: {text}");
            if progress {
                last_progress = Instant::now();
            }
        }
        if ended {
            return (bytes, files);
        }
    }
}

/// The number of a `--stats` line (`Total transferred file size: 1,234 bytes`).
fn stat_value(line: &str, label: &str) -> Option<u64> {
    let rest = line.strip_prefix(label)?.trim();
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    number.parse().ok()
}
