//! The mover end to end on 127.0.0.1: real rsync, real TLS, real files (the tests run
//! as root: owners, modes and ACLs need it, as they do in the mover's pod).

use std::{
    ffi::OsStr,
    fs,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tokio::{io::AsyncReadExt, net::TcpListener};

use super::*;

const SERVER_NAME: &str = "receiver.mover.test";
const SENDER_NAME: &str = "sender.mover.test";

/// A move's credentials: a CA, the receiver's server certificate and the sender's
/// client certificate, as the controller writes them into the two Secrets.
struct Credentials {
    _dir: tempfile::TempDir,
    receiver: PathBuf,
    sender: PathBuf,
}

fn ca() -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "move CA");
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, "mover");
    params.extended_key_usages = usages;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn new_credentials() -> Credentials {
    let dir = tempfile::tempdir().unwrap();
    let (params, key, ca_pem) = ca();
    let issuer = Issuer::new(params, key);
    let (receiver, sender) = (dir.path().join("receiver"), dir.path().join("sender"));
    for (side, names, usage) in [
        (
            &receiver,
            vec![SERVER_NAME.to_string()],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        ),
        // The sender's certificate also serves its progress counters.
        (
            &sender,
            vec![SENDER_NAME.to_string()],
            vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        ),
    ] {
        let (cert, key) = leaf(&issuer, names, usage);
        fs::create_dir(side).unwrap();
        fs::write(side.join("ca.crt"), &ca_pem).unwrap();
        fs::write(side.join("tls.crt"), cert).unwrap();
        fs::write(side.join("tls.key"), key).unwrap();
    }
    Credentials {
        _dir: dir,
        receiver,
        sender,
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "lsetxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// `system.posix_acl_access` in the kernel's form: user::rw-, user:1000:r--,
/// group::r--, mask::r--, other::---.
fn acl_bytes() -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    acl
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const SPARSE_SIZE: u64 = 64 << 20;

/// The tree the issue lists: many small files, a sparse file, hard links, symlinks
/// (one dangling), odd owners and modes, an xattr, an ACL, a FIFO, a non-UTF-8 name.
fn populate(root: &Path, small_files: usize) {
    for i in 0..small_files {
        let dir = root.join(format!("small/{:02}", i % 20));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("file-{i}")),
            format!("content of {i}\n").repeat(i % 7),
        )
        .unwrap();
    }
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(SPARSE_SIZE).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"head", 0).unwrap();
    sparse.write_all_at(b"middle", SPARSE_SIZE / 2).unwrap();
    drop(sparse);

    fs::write(root.join("linked-a"), b"one inode, two names").unwrap();
    fs::hard_link(root.join("linked-a"), root.join("linked-b")).unwrap();
    std::os::unix::fs::symlink("small/00/file-0", root.join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("absolute")).unwrap();

    fs::write(root.join("owned"), b"uid 12345").unwrap();
    chown(&root.join("owned"), 12345, 54321);
    let private = root.join("private");
    fs::create_dir(&private).unwrap();
    fs::write(private.join("secret"), b"only its owner reads this").unwrap();
    chown(&private.join("secret"), 23456, 23456);
    mode(&private.join("secret"), 0o600);
    chown(&private, 23456, 23456);
    mode(&private, 0o700);
    let shared = root.join("setgid");
    fs::create_dir(&shared).unwrap();
    chown(&shared, 0, 4242);
    mode(&shared, 0o2775);
    fs::write(root.join("nobody-reads"), b"mode 0000").unwrap();
    mode(&root.join("nobody-reads"), 0o000);

    fs::write(root.join("tagged"), b"with an xattr").unwrap();
    set_xattr(&root.join("tagged"), "user.origin", b"us-east-1");
    fs::write(root.join("acl"), b"with an ACL").unwrap();
    set_xattr(&root.join("acl"), "system.posix_acl_access", &acl_bytes());

    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9 latin-1")),
        b"non-UTF-8 name",
    )
    .unwrap();
}

fn receive_args(pass: PassArg, credentials: &Path, data: &Path) -> ReceiveArgs {
    ReceiveArgs {
        pass,
        listen: "127.0.0.1:0".into(),
        credentials: credentials.to_path_buf(),
        data: data.to_path_buf(),
        report: PathBuf::from("/dev/null"),
    }
}

fn send_args(pass: PassArg, port: u16, credentials: &Path, data: &Path) -> SendArgs {
    SendArgs {
        pass,
        connect: format!("127.0.0.1:{port}"),
        server_name: SERVER_NAME.into(),
        credentials: credentials.to_path_buf(),
        data: data.to_path_buf(),
        connect_timeout: 10,
        report: PathBuf::from("/dev/null"),
        progress_listen: None,
        bwlimit_kib: None,
    }
}

/// Starts a receiver on an ephemeral port of 127.0.0.1.
async fn start_receiver(
    pass: PassArg,
    credentials: &Path,
    data: &Path,
) -> (u16, tokio::task::JoinHandle<Outcome>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let args = receive_args(pass, credentials, data);
    let config = tls::server_config(credentials).unwrap();
    let task = tokio::spawn(async move {
        match receive_on(listener, config, &args).await {
            Ok(outcome) => outcome,
            Err(message) => Outcome::failed(message),
        }
    });
    (port, task)
}

/// One pass, both sides; their outcomes (sender, receiver).
async fn pass(
    pass: PassArg,
    credentials: &Credentials,
    source: &Path,
    destination: &Path,
) -> (Outcome, Outcome) {
    let (port, receiver) = start_receiver(pass, &credentials.receiver, destination).await;
    let sender = send(&send_args(pass, port, &credentials.sender, source)).await;
    let receiver = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("the receiver ends with the sender")
        .unwrap();
    (sender, receiver)
}

fn assert_same_content(source: &Path, destination: &Path) {
    let manifest = walk::manifest(source).unwrap();
    for entry in manifest.entries() {
        if entry.file_type == crate::volume_move::manifest::FileType::Regular {
            let relative = OsStr::from_bytes(&entry.path);
            assert!(
                fs::read(source.join(relative)).unwrap()
                    == fs::read(destination.join(relative)).unwrap(),
                "{} differs",
                entry.display_path()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_moves_with_everything_it_holds_and_verifies() {
    let credentials = new_credentials();
    let (source, destination) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    populate(source.path(), 3000);
    // Something the destination has and the source not: --delete removes it.
    fs::write(destination.path().join("stale"), b"left from before").unwrap();

    let (sender, receiver) = pass(
        PassArg::First,
        &credentials,
        source.path(),
        destination.path(),
    )
    .await;
    assert_eq!(sender.code, 0, "sender: {:?}", sender.report);
    assert_eq!(receiver.code, 0, "receiver: {:?}", receiver.report);
    assert!(sender.report.files >= 3000, "{:?}", sender.report);
    assert!(sender.report.bytes > 0, "{:?}", sender.report);

    // A change after the first pass, copied by the final pass.
    fs::write(
        source.path().join("small/00/file-0"),
        b"changed before the final pass",
    )
    .unwrap();
    let (sender, receiver) = pass(
        PassArg::Final,
        &credentials,
        source.path(),
        destination.path(),
    )
    .await;
    assert_eq!(
        (sender.code, receiver.code),
        (0, 0),
        "{sender:?} {receiver:?}"
    );
    assert_eq!(sender.report.files, 1, "{:?}", sender.report);

    let d = destination.path();
    assert!(!d.join("stale").exists());
    assert_same_content(source.path(), d);
    let sparse = fs::metadata(d.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_SIZE);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "the sparse file takes {} blocks",
        sparse.blocks()
    );
    assert_eq!(
        fs::metadata(d.join("linked-a")).unwrap().ino(),
        fs::metadata(d.join("linked-b")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(d.join("absolute")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        fs::read_link(d.join("dangling")).unwrap(),
        Path::new("../nowhere")
    );
    let owned = fs::metadata(d.join("owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (12345, 54321));
    let private = fs::metadata(d.join("private")).unwrap();
    assert_eq!((private.uid(), private.mode() & 0o7777), (23456, 0o700));
    assert_eq!(
        fs::metadata(d.join("setgid")).unwrap().mode() & 0o7777,
        0o2775
    );
    assert_eq!(
        fs::metadata(d.join("nobody-reads")).unwrap().mode() & 0o7777,
        0
    );
    assert!(d.join(OsStr::from_bytes(b"caf\xe9 latin-1")).exists());

    let (source_manifest, destination_manifest) = (
        walk::manifest(source.path()).unwrap(),
        walk::manifest(d).unwrap(),
    );
    assert_eq!(
        source_manifest.first_difference(&destination_manifest),
        None
    );
    assert_eq!(source_manifest, destination_manifest);
    let acl = source_manifest
        .entries()
        .iter()
        .find(|e| e.path == b"acl")
        .unwrap();
    assert!(
        acl.acl_sha256.is_some() && acl.xattrs_sha256.is_none(),
        "{acl:?}"
    );
    let tagged = source_manifest
        .entries()
        .iter()
        .find(|e| e.path == b"tagged")
        .unwrap();
    assert!(tagged.xattrs_sha256.is_some(), "{tagged:?}");

    let (sender, receiver) = pass(PassArg::Verify, &credentials, source.path(), d).await;
    assert_eq!(
        (sender.code, receiver.code),
        (0, 0),
        "{sender:?} {receiver:?}"
    );
    let root = source_manifest.root_hash();
    assert_eq!(sender.report.root_hash.as_deref(), Some(root.as_str()));
    assert_eq!(receiver.report.root_hash.as_deref(), Some(root.as_str()));
    assert_eq!(receiver.report.first_difference, None);
    // What the controller reads back.
    assert_eq!(
        parse_report(&receiver.report.encode()).unwrap(),
        receiver.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_behind_the_movers_back_fails_the_verification_naming_the_path() {
    let credentials = new_credentials();
    let (source, destination) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    populate(source.path(), 50);
    let (sender, receiver) = pass(
        PassArg::Final,
        &credentials,
        source.path(),
        destination.path(),
    )
    .await;
    assert_eq!(
        (sender.code, receiver.code),
        (0, 0),
        "{sender:?} {receiver:?}"
    );

    // Same size, same times: only the content hash can tell.
    let changed = destination.path().join("small/03/file-3");
    let before = fs::metadata(&changed).unwrap();
    let mut content = fs::read(&changed).unwrap();
    content[0] ^= 1;
    fs::write(&changed, content).unwrap();
    assert_eq!(fs::metadata(&changed).unwrap().len(), before.len());

    let (sender, receiver) = pass(
        PassArg::Verify,
        &credentials,
        source.path(),
        destination.path(),
    )
    .await;
    assert_ne!(receiver.code, 0, "{receiver:?}");
    assert_ne!(sender.code, 0, "{sender:?}");
    let difference = receiver.report.first_difference.clone().unwrap();
    assert!(
        difference.contains("small/03/file-3") && difference.contains("sha256"),
        "{difference}"
    );
    assert!(
        sender.report.message.contains("small/03/file-3"),
        "{:?}",
        sender.report
    );
    assert_ne!(sender.report.root_hash, receiver.report.root_hash);
}

/// A TLS client of this test's choosing: `identity` is a credentials directory whose
/// client certificate it presents, or none.
fn client(ca_dir: &Path, identity: Option<&Path>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = fs::read(ca_dir.join("ca.crt")).unwrap();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(
                &fs::read(dir.join("tls.crt")).unwrap(),
            )
            .map(Result::unwrap)
            .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
                &fs::read(dir.join("tls.key")).unwrap(),
            )
            .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    }
}

/// Connects with `config` and reads: the receiver's greeting when it accepted us.
async fn try_connect(port: u16, config: rustls::ClientConfig) -> Result<String, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let mut stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut greeting = vec![0u8; 20];
    let n = stream
        .read(&mut greeting)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("closed".into());
    }
    Ok(String::from_utf8_lossy(&greeting[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_moves_own_sender_gets_in_and_strangers_do_not_end_the_pass() {
    let credentials = new_credentials();
    let stranger = new_credentials(); // a CA of its own
    let (source, destination) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    populate(source.path(), 10);
    let (port, receiver) =
        start_receiver(PassArg::First, &credentials.receiver, destination.path()).await;

    // A port scanner: connects and leaves.
    drop(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    // A client without a certificate.
    let refused = try_connect(port, client(&credentials.sender, None)).await;
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
    // A full sender whose certificate is from another CA (it trusts our receiver's CA).
    fs::copy(
        credentials.sender.join("ca.crt"),
        stranger.sender.join("ca.crt"),
    )
    .unwrap();
    let mut args = send_args(PassArg::First, port, &stranger.sender, source.path());
    args.connect_timeout = 2;
    let outcome = send(&args).await;
    assert_ne!(outcome.code, 0, "{outcome:?}");
    assert!(
        outcome.report.message.contains("did not accept"),
        "{:?}",
        outcome.report
    );
    assert_eq!(
        fs::read_dir(destination.path()).unwrap().count(),
        0,
        "nothing may be written"
    );
    assert!(!receiver.is_finished(), "strangers must not end the pass");

    // The move's own sender still gets through.
    let sender = send(&send_args(
        PassArg::First,
        port,
        &credentials.sender,
        source.path(),
    ))
    .await;
    let receiver = receiver.await.unwrap();
    assert_eq!(
        (sender.code, receiver.code),
        (0, 0),
        "{sender:?} {receiver:?}"
    );
    assert_same_content(source.path(), destination.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_cannot_read_the_enclaves_copy() {
    let credentials = new_credentials();
    let (destination, stolen) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(destination.path().join("enclave-only"), b"stays inside").unwrap();
    let (port, receiver) =
        start_receiver(PassArg::First, &credentials.receiver, destination.path()).await;

    // An authenticated sender that asks rsync to download instead.
    let config = tls::client_config(&credentials.sender).unwrap();
    let mut stream = tls::connect(
        &format!("127.0.0.1:{port}"),
        SERVER_NAME,
        config,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut greeting = vec![0u8; greeting(PassArg::First).len()];
    stream.read_exact(&mut greeting).await.unwrap();
    let target = format!("{}/", stolen.path().display());
    let outcome = copy_sender(
        stream,
        PassArg::Final,
        Path::new("/nonexistent"),
        &[],
        &["-a", "rsync://127.0.0.1:PORT/data/", &target],
        &Arc::new(progress::Counters::default()),
    )
    .await
    .unwrap();
    assert_ne!(outcome.code, 0, "{outcome:?}");
    assert!(
        !stolen.path().join("enclave-only").exists(),
        "the sender read the enclave's copy"
    );
    let receiver = receiver.await.unwrap();
    assert_ne!(receiver.code, 0, "{receiver:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_in_the_middle_fails_the_receiver() {
    let credentials = new_credentials();
    let (source, destination) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Incompressible and large enough to be cut in the middle.
    let mut block = vec![0u8; 1 << 20];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    for i in 0..400 {
        block[0] = i as u8;
        block[1] = (i >> 8) as u8;
        fs::write(source.path().join(format!("part-{i:03}")), &block).unwrap();
    }
    let (port, receiver) =
        start_receiver(PassArg::First, &credentials.receiver, destination.path()).await;
    let args = send_args(PassArg::First, port, &credentials.sender, source.path());
    let sender = tokio::spawn(async move { send(&args).await });
    // Cut once the first files arrived: the sender's task and its rsync are killed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fs::read_dir(destination.path()).unwrap().count() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.abort();
    let receiver = tokio::time::timeout(Duration::from_secs(30), receiver)
        .await
        .expect("the receiver ends when the connection is cut")
        .unwrap();
    assert_ne!(receiver.code, 0, "{receiver:?}");
    assert!(
        receiver.report.message.contains("rsync exited"),
        "{:?}",
        receiver.report
    );
    assert!(
        fs::read_dir(destination.path()).unwrap().count() < 400,
        "the copy was not cut: every file arrived"
    );
}

#[test]
fn a_directory_the_walker_cannot_read_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let closed = root.path().join("closed");
    fs::create_dir(&closed).unwrap();
    fs::write(closed.join("data"), b"x").unwrap();
    mode(&closed, 0o000);
    // Without the capabilities that let root read anything (per thread, so the rest of
    // the test process keeps them), as a mover without DAC_READ_SEARCH would be.
    let path = root.path().to_path_buf();
    let result = std::thread::spawn(move || {
        drop_dac_capabilities();
        walk::manifest(&path)
    })
    .join()
    .unwrap();
    let error = result.unwrap_err();
    assert!(
        error.contains("closed") && error.contains("ermission denied"),
        "{error}"
    );
}

/// Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this thread's effective set.
fn drop_dac_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as the kernel expects.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        // CAP_DAC_OVERRIDE is 1, CAP_DAC_READ_SEARCH 2 (linux/capability.h).
        let dac = (1 << 1) | (1 << 2);
        data[0].effective &= !dac;
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

#[test]
fn rsyncs_progress_lines_are_read() {
    assert_eq!(
        progress::parse_progress2(
            "    557,056,000  99%   58.61MB/s    0:00:09 (xfr#2012, to-chk=0/2021)"
        ),
        Some((557_056_000, Some(2012)))
    );
    assert_eq!(
        progress::parse_progress2("     32,768   0%    0.00kB/s    0:00:00"),
        Some((32_768, None))
    );
    assert_eq!(
        progress::parse_progress2("  1,024 100% 1.00kB/s 0:00:00 (xfr#7, ir-chk=1000/1021)"),
        Some((1_024, Some(7)))
    );
    for not_progress in [
        "Number of files: 12",
        "Total transferred file size: 1,234,567 bytes",
        "sent 1,234 bytes  received 56 bytes  2,580.00 bytes/sec",
        "",
    ] {
        assert_eq!(
            progress::parse_progress2(not_progress),
            None,
            "{not_progress}"
        );
    }
    // The counters only grow: a redrawn line never takes them back.
    let counters = progress::Counters::default();
    counters.observe("  2,048  50%  1.00kB/s  0:00:01 (xfr#2, to-chk=2/4)");
    counters.observe("  1,024  25%  1.00kB/s  0:00:01");
    counters.observe("Number of files: 99");
    let report = counters.report();
    assert_eq!((report.bytes, report.files), (2_048, 2));
}

/// A copy limited to 2 MiB/s serves counters while it runs, to a client that trusts the
/// move's CA and asks for the sender's name; not to one that trusts another CA or asks
/// for another name. The limit holds: 8 MiB take about 4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_copy_serves_its_progress_to_the_moves_ca_only() {
    let credentials = new_credentials();
    let (source, destination) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut block = vec![0u8; 1 << 20];
    for i in 0..8u8 {
        for (j, b) in block.iter_mut().enumerate() {
            *b = (j as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ i;
        }
        fs::write(source.path().join(format!("part-{i}")), &block).unwrap();
    }
    let move_ca = fs::read(credentials.sender.join("ca.crt")).unwrap();
    let progress_port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{progress_port}");
    let (port, receiver) =
        start_receiver(PassArg::First, &credentials.receiver, destination.path()).await;
    let mut args = send_args(PassArg::First, port, &credentials.sender, source.path());
    args.progress_listen = Some(address.clone());
    args.bwlimit_kib = Some(2048);
    let started = std::time::Instant::now();
    let sender = tokio::spawn(async move { send(&args).await });

    let timeout = Duration::from_secs(2);
    let mut seen = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !sender.is_finished() && tokio::time::Instant::now() < deadline {
        if let Ok(report) = progress::fetch(&address, SENDER_NAME, &move_ca, timeout).await
            && report.bytes > 0
            && report.bytes < 8 << 20
        {
            seen = Some(report);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = seen.expect("no counters between the first byte and the last");
    assert_eq!(seen.message, "copying");

    let (_, _, other_ca) = ca();
    let refused = progress::fetch(&address, SENDER_NAME, other_ca.as_bytes(), timeout).await;
    assert!(refused.is_err(), "a client of another CA got {refused:?}");
    let refused = progress::fetch(&address, SERVER_NAME, &move_ca, timeout).await;
    assert!(
        refused.is_err(),
        "the receiver's name was accepted: {refused:?}"
    );

    let sender = sender.await.unwrap();
    assert_eq!(sender.code, 0, "{sender:?}");
    assert_eq!(receiver.await.unwrap().code, 0);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "8 MiB at 2 MiB/s took {:?}",
        started.elapsed()
    );
    assert_same_content(source.path(), destination.path());
    // The counters end with the pass.
    assert!(
        progress::fetch(&address, SENDER_NAME, &move_ca, timeout)
            .await
            .is_err()
    );
}

#[test]
fn rsyncs_statistics_are_read() {
    assert_eq!(
        stat_value(
            "Total transferred file size: 1,234,567 bytes",
            "Total transferred file size:"
        ),
        Some(1_234_567)
    );
    assert_eq!(
        stat_value(
            "Number of regular files transferred: 12",
            "Number of regular files transferred:"
        ),
        Some(12)
    );
    assert_eq!(
        stat_value("Number of files: 12", "Total transferred file size:"),
        None
    );
}

#[test]
fn the_daemon_configuration_is_write_only() {
    let conf = rsyncd_conf(Path::new("/data"));
    for line in [
        "write only = true",
        "read only = false",
        "use chroot = yes",
        "numeric ids = yes",
        "munge symlinks = no",
        "path = /data",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "{line} missing from {conf}"
        );
    }
}

#[test]
fn only_vanished_files_in_the_first_pass_are_tolerated() {
    assert!(tolerated(24, PassArg::First));
    for code in [1, 10, 12, 23, 30, 35] {
        assert!(!tolerated(code, PassArg::First), "{code}");
    }
    assert!(!tolerated(24, PassArg::Final));
    assert!(!tolerated(24, PassArg::Verify));
}

#[tokio::test]
async fn a_data_path_that_would_break_the_configuration_is_refused() {
    let credentials = new_credentials();
    for data in ["relative/dir", "/data\n[evil]\npath = /"] {
        let args = receive_args(PassArg::First, &credentials.receiver, Path::new(data));
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let error = copy_receiver(server, &args).await.unwrap_err();
        assert!(
            error.contains("--data") && error.contains("absolute"),
            "{error}"
        );
    }
}
