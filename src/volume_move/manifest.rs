//! The manifest of a volume's content, pure: one entry per path (type, size, mode,
//! owner, link target, SHA-256 of the content, digests of xattrs and ACLs), a canonical
//! encoding of one line per entry, a root hash over the sorted lines, and a diff that
//! names the first path where two manifests differ.
//!
//! Sender and receiver each compute the manifest of their side after the final delta;
//! the move switches the claim only when the root hashes are equal, and the root hash
//! goes into the record. Equality of the root hashes means equality of every field of
//! every entry: the encoding is injective (paths are escaped so that no path can
//! contain the separator or the line end, and every field is always written).
//!
//! Not in the manifest, on purpose: modification times (rsync keeps them, but a
//! directory's changes when anything is created in it, and timestamps prove nothing
//! about content), and the sparse layout of files (holes read as zeros and hash the same
//! as written zeros; the allocated size depends on the filesystem, not on the data).

use std::{collections::BTreeSet, fmt};

use sha2::{Digest, Sha256};

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    /// A character device, with its major and minor numbers.
    CharDevice(u32, u32),
    /// A block device, with its major and minor numbers.
    BlockDevice(u32, u32),
}

impl FileType {
    fn encode(self) -> String {
        match self {
            FileType::Regular => "f".into(),
            FileType::Directory => "d".into(),
            FileType::Symlink => "l".into(),
            FileType::Fifo => "p".into(),
            FileType::Socket => "s".into(),
            FileType::CharDevice(major, minor) => format!("c:{major}:{minor}"),
            FileType::BlockDevice(major, minor) => format!("b:{major}:{minor}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        Some(match text {
            "f" => FileType::Regular,
            "d" => FileType::Directory,
            "l" => FileType::Symlink,
            "p" => FileType::Fifo,
            "s" => FileType::Socket,
            _ => {
                let mut parts = text.split(':');
                let kind = parts.next()?;
                let major = parts.next()?.parse().ok()?;
                let minor = parts.next()?.parse().ok()?;
                if parts.next().is_some() {
                    return None;
                }
                match kind {
                    "c" => FileType::CharDevice(major, minor),
                    "b" => FileType::BlockDevice(major, minor),
                    _ => return None,
                }
            }
        })
    }
}

/// One path of a volume. Paths are bytes (file names need not be UTF-8), relative to
/// the volume's root, without `.` or `..` components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub file_type: FileType,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner and group (names are not kept: they differ between images).
    pub uid: u32,
    pub gid: u32,
    /// Size in bytes of a regular file's content (0 for other types).
    pub size: u64,
    /// SHA-256 of a regular file's content.
    pub sha256: Option<[u8; 32]>,
    /// A symlink's target, as bytes.
    pub link_target: Option<Vec<u8>>,
    /// For the second and later paths of one inode: the first path (in sorted order)
    /// that shares it, so that hard links are checked, not just their content.
    pub hard_link_to: Option<Vec<u8>>,
    /// SHA-256 of the extended attributes (names and values, sorted), if any.
    pub xattrs_sha256: Option<[u8; 32]>,
    /// SHA-256 of the POSIX ACLs (access and default, in their text form), if any.
    pub acl_sha256: Option<[u8; 32]>,
}

/// Why a manifest or one of its lines cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("line {line}: {field}: {problem}")]
    Field {
        line: usize,
        field: &'static str,
        problem: String,
    },
    #[error("line {line}: {count} fields, expected 11 separated by single spaces")]
    FieldCount { line: usize, count: usize },
    #[error("path {path}: {problem}")]
    Path { path: String, problem: &'static str },
    #[error("path {0} appears twice")]
    Duplicate(String),
}

/// Escapes a path or link target so that it holds no space, newline or `%`, and is
/// printable: every byte outside `!`..`~` and `%` itself become `%XX`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            // Only the canonical form: uppercase, and only for bytes that must be escaped,
            // so that one path has exactly one encoding.
            if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                return None;
            }
            let value = u8::from_str_radix(hex, 16).ok()?;
            if (b'!'..=b'~').contains(&value) && value != b'%' {
                return None;
            }
            out.push(value);
            i += 3;
        } else if (b'!'..=b'~').contains(&b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

fn digest_field(digest: &Option<[u8; 32]>) -> String {
    digest.map_or_else(|| "-".into(), hex::encode)
}

fn bytes_field(bytes: &Option<Vec<u8>>) -> String {
    bytes.as_deref().map_or_else(|| "-".into(), escape)
}

impl Entry {
    /// The path as written in the manifest (escaped).
    pub fn display_path(&self) -> String {
        escape(&self.path)
    }

    /// The entry's canonical line, without the line end: path, type, mode (octal),
    /// uid, gid, size, content SHA-256, link target, hard link, xattrs digest, ACL
    /// digest, separated by single spaces, `-` for an absent field.
    pub fn canonical(&self) -> String {
        format!(
            "{} {} {:04o} {} {} {} {} {} {} {} {}",
            escape(&self.path),
            self.file_type.encode(),
            self.mode,
            self.uid,
            self.gid,
            self.size,
            digest_field(&self.sha256),
            bytes_field(&self.link_target),
            bytes_field(&self.hard_link_to),
            digest_field(&self.xattrs_sha256),
            digest_field(&self.acl_sha256),
        )
    }

    /// Reads a canonical line (as [`Entry::canonical`] writes it); `line` numbers the
    /// errors.
    pub fn parse(text: &str, line: usize) -> Result<Self, ManifestError> {
        let fields: Vec<&str> = text.split(' ').collect();
        if fields.len() != 11 {
            return Err(ManifestError::FieldCount {
                line,
                count: fields.len(),
            });
        }
        let bad = |field: &'static str, problem: &str| ManifestError::Field {
            line,
            field,
            problem: problem.to_string(),
        };
        let path = unescape(fields[0]).ok_or_else(|| bad("path", "not a canonical escape"))?;
        let file_type = FileType::decode(fields[1]).ok_or_else(|| {
            bad(
                "type",
                "allowed: f, d, l, p, s, c:MAJOR:MINOR, b:MAJOR:MINOR",
            )
        })?;
        if fields[2].len() != 4 {
            return Err(bad("mode", "four octal digits"));
        }
        let mode = u32::from_str_radix(fields[2], 8)
            .map_err(|_| bad("mode", "four octal digits"))
            .and_then(|m| {
                (m <= 0o7777)
                    .then_some(m)
                    .ok_or_else(|| bad("mode", "at most 7777"))
            })?;
        let number = |field: &'static str, text: &str| -> Result<u64, ManifestError> {
            if text.len() > 1 && text.starts_with('0') {
                return Err(bad(field, "a decimal number without leading zeros"));
            }
            text.parse()
                .map_err(|_| bad(field, "a decimal number without leading zeros"))
        };
        let uid = u32::try_from(number("uid", fields[3])?).map_err(|_| bad("uid", "too large"))?;
        let gid = u32::try_from(number("gid", fields[4])?).map_err(|_| bad("gid", "too large"))?;
        let size = number("size", fields[5])?;
        let digest = |field: &'static str, text: &str| -> Result<Option<[u8; 32]>, ManifestError> {
            if text == "-" {
                return Ok(None);
            }
            if text.bytes().any(|c| c.is_ascii_uppercase()) {
                return Err(bad(field, "64 lowercase hex digits or -"));
            }
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out)
                .map_err(|_| bad(field, "64 lowercase hex digits or -"))?;
            Ok(Some(out))
        };
        let optional_bytes =
            |field: &'static str, text: &str| -> Result<Option<Vec<u8>>, ManifestError> {
                if text == "-" {
                    return Ok(None);
                }
                unescape(text)
                    .map(Some)
                    .ok_or_else(|| bad(field, "not a canonical escape"))
            };
        let entry = Entry {
            path,
            file_type,
            mode,
            uid,
            gid,
            size,
            sha256: digest("sha256", fields[6])?,
            link_target: optional_bytes("linkTarget", fields[7])?,
            hard_link_to: optional_bytes("hardLinkTo", fields[8])?,
            xattrs_sha256: digest("xattrs", fields[9])?,
            acl_sha256: digest("acl", fields[10])?,
        };
        entry.check().map_err(|e| match e {
            ManifestError::Path { problem, .. } => bad("path", problem),
            other => other,
        })?;
        if entry.canonical() != text {
            return Err(bad("line", "not in canonical form"));
        }
        Ok(entry)
    }

    /// The entry is well-formed: a relative path without `.`/`..`/empty components,
    /// content fields only where they belong.
    pub fn check(&self) -> Result<(), ManifestError> {
        let problem = |problem: &'static str| ManifestError::Path {
            path: escape(&self.path),
            problem,
        };
        if self.path.is_empty() {
            return Err(problem("empty"));
        }
        if self.path.contains(&0) {
            return Err(problem("contains a NUL byte"));
        }
        // The root is ".", every other path is relative and normal.
        if self.path != b"." {
            if self.path.starts_with(b"/") {
                return Err(problem("absolute; paths are relative to the volume's root"));
            }
            if self
                .path
                .split(|&b| b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..")
            {
                return Err(problem("has an empty, . or .. component"));
            }
        }
        let regular = self.file_type == FileType::Regular;
        if regular != self.sha256.is_some() {
            return Err(problem(
                "a content SHA-256 is required for regular files and only for them",
            ));
        }
        if !regular && self.size != 0 {
            return Err(problem("only regular files have a size"));
        }
        if (self.file_type == FileType::Symlink) != self.link_target.is_some() {
            return Err(problem(
                "a link target is required for symlinks and only for them",
            ));
        }
        if self.hard_link_to.is_some() && self.file_type == FileType::Directory {
            return Err(problem("directories cannot be hard links"));
        }
        Ok(())
    }
}

/// A volume's manifest: its entries sorted by path, each path once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<Entry>,
}

impl Manifest {
    /// A manifest of these entries, in any order; refused if an entry is malformed,
    /// a path appears twice, or a hard link names a path that is not in the manifest.
    pub fn new(mut entries: Vec<Entry>) -> Result<Self, ManifestError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in entries.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(ManifestError::Duplicate(pair[0].display_path()));
            }
        }
        let paths: BTreeSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
        for entry in &entries {
            entry.check()?;
            if let Some(target) = &entry.hard_link_to
                && (!paths.contains(target.as_slice()) || target >= &entry.path)
            {
                return Err(ManifestError::Path {
                    path: entry.display_path(),
                    problem: "hardLinkTo must name an earlier path of the manifest",
                });
            }
        }
        Ok(Self { entries })
    }

    /// Reads a manifest in its canonical encoding (one line per entry, each ending in
    /// `\n`, sorted by path).
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.is_empty() {
            return Self::new(Vec::new());
        }
        let Some(body) = text.strip_suffix('\n') else {
            return Err(ManifestError::Field {
                line: text.lines().count(),
                field: "line",
                problem: "the last line does not end in a newline".into(),
            });
        };
        let entries = body
            .split('\n')
            .enumerate()
            .map(|(i, line)| Entry::parse(line, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = Self::new(entries)?;
        if manifest.encode() != text {
            return Err(ManifestError::Field {
                line: 1,
                field: "line",
                problem: "lines are not sorted by path".into(),
            });
        }
        Ok(manifest)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The canonical encoding: every entry's line, sorted by path, each ending in `\n`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            out.push_str(&entry.canonical());
            out.push('\n');
        }
        out
    }

    /// SHA-256 over the canonical encoding, as 64 lowercase hex digits.
    pub fn root_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for entry in &self.entries {
            hasher.update(entry.canonical().as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }

    /// The first path (in sorted order) where `self` (the source) and `other` (the
    /// destination) differ, and how; `None` when they are equal.
    pub fn first_difference(&self, other: &Manifest) -> Option<Difference> {
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return None,
                (Some(x), None) => return Some(Difference::only_in_source(x)),
                (None, Some(y)) => return Some(Difference::only_in_destination(y)),
                (Some(x), Some(y)) => match x.path.cmp(&y.path) {
                    std::cmp::Ordering::Less => return Some(Difference::only_in_source(x)),
                    std::cmp::Ordering::Greater => {
                        return Some(Difference::only_in_destination(y));
                    }
                    std::cmp::Ordering::Equal => {
                        if let Some(field) = differing_field(x, y) {
                            return Some(Difference {
                                path: x.display_path(),
                                what: DifferenceKind::Field {
                                    field,
                                    source: field_value(x, field),
                                    destination: field_value(y, field),
                                },
                            });
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
    }
}

/// Where two manifests first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The path, escaped as in the manifest.
    pub path: String,
    pub what: DifferenceKind,
}

/// How they differ at that path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DifferenceKind {
    OnlyInSource,
    OnlyInDestination,
    Field {
        field: &'static str,
        source: String,
        destination: String,
    },
}

impl Difference {
    fn only_in_source(entry: &Entry) -> Self {
        Self {
            path: entry.display_path(),
            what: DifferenceKind::OnlyInSource,
        }
    }

    fn only_in_destination(entry: &Entry) -> Self {
        Self {
            path: entry.display_path(),
            what: DifferenceKind::OnlyInDestination,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            DifferenceKind::OnlyInSource => {
                write!(
                    f,
                    "{} is in the source and missing from the destination",
                    self.path
                )
            }
            DifferenceKind::OnlyInDestination => {
                write!(
                    f,
                    "{} is in the destination and not in the source",
                    self.path
                )
            }
            DifferenceKind::Field {
                field,
                source,
                destination,
            } => write!(
                f,
                "{} differs in {field}: {source} in the source, {destination} in the destination",
                self.path
            ),
        }
    }
}

const FIELDS: [&str; 10] = [
    "type",
    "mode",
    "uid",
    "gid",
    "size",
    "sha256",
    "linkTarget",
    "hardLinkTo",
    "xattrs",
    "acl",
];

fn field_value(entry: &Entry, field: &str) -> String {
    match field {
        "type" => entry.file_type.encode(),
        "mode" => format!("{:04o}", entry.mode),
        "uid" => entry.uid.to_string(),
        "gid" => entry.gid.to_string(),
        "size" => entry.size.to_string(),
        "sha256" => digest_field(&entry.sha256),
        "linkTarget" => bytes_field(&entry.link_target),
        "hardLinkTo" => bytes_field(&entry.hard_link_to),
        "xattrs" => digest_field(&entry.xattrs_sha256),
        _ => digest_field(&entry.acl_sha256),
    }
}

fn differing_field(a: &Entry, b: &Entry) -> Option<&'static str> {
    FIELDS
        .into_iter()
        .find(|field| field_value(a, field) != field_value(b, field))
}
