//! The decision log: every decision the operator makes or observes becomes one JSON
//! line, and the lines form a hash chain, so that an auditor who does not trust the
//! operator can check offline (see `super::verify`) that no line was removed, edited,
//! reordered or inserted.
//!
//! A line looks like this (one line in the file, shown wrapped):
//!
//! ```text
//! {"seq":7,"prev":"<64 lowercase hex digits>","time":"2025-03-01T12:00:00Z",
//!  "chain":"eu-west/enclave-operator","kind":"PodDenied",
//!  "fields":{"namespace":"shop","pod":"api-0","reason":"node outside enclave"}}
//! ```
//!
//! Why it is built this way:
//! - `prev` is the SHA-256 of the previous line's exact bytes (without the newline).
//!   Hashing the bytes as written, never a re-serialization, means the verifier needs no
//!   canonical JSON rules of its own and cannot disagree with the writer about them.
//! - The writer still emits one fixed form (keys in the order seq, prev, time, chain,
//!   kind, fields; compact; `fields` keys sorted, as serde_json's map keeps them), so the
//!   same decision always gives the same line and the lines diff and grep well.
//! - A hash chain alone proves nothing against someone who can rewrite the whole file:
//!   they recompute every later hash. The operator therefore writes a [`Checkpoint`]
//!   (seq and hash of the last line) to the cluster at least every minute; the log and
//!   the checkpoints are kept in different places with different access, and the
//!   verifier checks one against the other.
//! - Loss is recorded, not hidden: when the operator has to drop records under load it
//!   appends a `RecordsLost` record saying how many and why.
//! - Lines are limited to [`MAX_LINE_BYTES`] so that a verifier can read a log of any
//!   size in bounded memory and refuse a damaged file instead of buffering it whole.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{borrow::Cow, fmt, str::FromStr};

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Longest line (in bytes, without the newline) the writer produces and the verifier
/// accepts. Decisions carry names and reasons, not whole objects, so this is far above
/// any real record; it exists so that a damaged or hostile file (say, gigabytes without
/// a newline) is rejected after reading at most this much.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Longest chain id. Ids are cluster/operator identities; the bound keeps every line
/// with an oversized-`fields` summary (see [`Chain::append`]) under [`MAX_LINE_BYTES`].
pub const MAX_CHAIN_ID_BYTES: usize = 256;

/// Longest kind name. Kinds are short words; the bound also bounds the verifier's
/// per-kind counters.
pub const MAX_KIND_BYTES: usize = 64;

/// A chain's seqs stay below this: [`Chain::resume`] refuses a checkpoint at or above
/// it. Checkpoints live in Kubernetes objects, whose integers are int64, so such a seq
/// cannot have come from a real checkpoint (nor could the next one be stored); refusing
/// it also means `seq + 1` can never overflow.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Version of the line format, written into `ChainStarted` and `ChainResumed` records
/// so that a verifier reading a fragment (which may not include the genesis line) can
/// still tell which format it is reading.
pub const FORMAT_VERSION: u64 = 1;

/// Kind of the first record of a new chain (seq 0, `prev` all zeros). Written only by
/// [`Chain::start`], which is why it is not a [`Kind`] value.
pub const CHAIN_STARTED: &str = "ChainStarted";

/// Kind of the first record after [`Chain::resume`]; its fields name the checkpoint it
/// continues from. Written only by `resume`.
pub const CHAIN_RESUMED: &str = "ChainResumed";

/// Kind of the gap marker written by [`Chain::records_lost`], whose `count` and
/// `reason` fields the verifier checks and adds up.
pub const RECORDS_LOST: &str = "RecordsLost";

/// The kinds whose fields have a fixed meaning and that only this module writes.
const RESERVED_KINDS: [&str; 3] = [CHAIN_STARTED, CHAIN_RESUMED, RECORDS_LOST];

/// A SHA-256 digest, written as 64 lowercase hex digits.
///
/// A type of its own (rather than a `String`) so that hashes compare byte for byte:
/// parsing accepts only the lowercase form the writer produces, so `"AB.."` and `"ab.."`
/// can never both pass for the same line.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The `prev` of a chain's first line: no line comes before it.
    pub const ZERO: Digest = Digest([0; 32]);

    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn is_zero(&self) -> bool {
        *self == Digest::ZERO
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            if let [high, low] = pair {
                *high = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
                *low = HEX.get(usize::from(byte & 0x0f)).copied().unwrap_or(b'0');
            }
        }
        // Every byte written above is an ASCII hex digit.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 digest: expected 64 lowercase hex digits")]
pub struct InvalidDigest;

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Digest, InvalidDigest> {
        fn nibble(c: u8) -> Result<u8, InvalidDigest> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(InvalidDigest),
            }
        }
        let digits = s.as_bytes();
        if digits.len() != 64 {
            return Err(InvalidDigest);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let [high, low] = pair else {
                return Err(InvalidDigest);
            };
            *byte = (nibble(*high)? << 4) | nibble(*low)?;
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a record is about: a short CamelCase word such as `PodDenied`.
///
/// A type rather than a bare string so that a typo cannot silently create a new kind
/// (the constants cover what the operator decides today), while [`Kind::new`] still
/// lets a newer operator add kinds that older verifiers count without knowing them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(Cow<'static, str>);

impl Kind {
    /// The admission webhook changed a pod (e.g. added enclave node affinity).
    pub const POD_MUTATED: Kind = Kind(Cow::Borrowed("PodMutated"));
    /// The admission webhook refused a pod.
    pub const POD_DENIED: Kind = Kind(Cow::Borrowed("PodDenied"));
    /// A running pod was evicted to move it into the enclave.
    pub const POD_EVICTED: Kind = Kind(Cow::Borrowed("PodEvicted"));
    /// A running pod outside the enclave could not be moved and was blocked.
    pub const POD_BLOCKED: Kind = Kind(Cow::Borrowed("PodBlocked"));
    /// An access attempt to enclave data was allowed.
    pub const ACCESS_ALLOWED: Kind = Kind(Cow::Borrowed("AccessAllowed"));
    /// An access attempt to enclave data was denied.
    pub const ACCESS_DENIED: Kind = Kind(Cow::Borrowed("AccessDenied"));
    /// A NetworkPolicy guarding the enclave had drifted and was restored.
    pub const NETWORK_POLICY_HEALED: Kind = Kind(Cow::Borrowed("NetworkPolicyHealed"));
    /// Data, a volume or a network path was found outside the enclave.
    pub const EXPOSURE_FOUND: Kind = Kind(Cow::Borrowed("ExposureFound"));

    /// A kind not among the constants. Fails on names that are not CamelCase ASCII
    /// (letters and digits, starting with an upper-case letter, at most
    /// [`MAX_KIND_BYTES`]) and on the reserved `ChainStarted`, `ChainResumed` and
    /// `RecordsLost`, whose records only [`Chain`] itself writes.
    pub fn new(name: impl Into<String>) -> Result<Kind, InvalidKind> {
        let name = name.into();
        check_kind_name(&name)?;
        if is_reserved(&name) {
            return Err(InvalidKind::Reserved(name));
        }
        Ok(Kind(Cow::Owned(name)))
    }

    /// A kind from a `&'static str`, checked like [`Kind::new`] but without
    /// allocating: the bridge for a caller with its own kind enum whose `as_str`
    /// returns `&'static str`. `None` for a name `Kind::new` would refuse.
    pub const fn from_static(name: &'static str) -> Option<Kind> {
        if has_kind_shape(name) && !is_reserved(name) {
            Some(Kind(Cow::Borrowed(name)))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// CamelCase ASCII of at most [`MAX_KIND_BYTES`]. A `const fn` (hence the slice
/// patterns instead of iterators) so that [`Kind::from_static`] can be one too.
const fn has_kind_shape(name: &str) -> bool {
    let [first, rest @ ..] = name.as_bytes() else {
        return false;
    };
    if name.len() > MAX_KIND_BYTES || !first.is_ascii_uppercase() {
        return false;
    }
    let mut rest = rest;
    while let [byte, tail @ ..] = rest {
        if !byte.is_ascii_alphanumeric() {
            return false;
        }
        rest = tail;
    }
    true
}

const fn is_reserved(name: &str) -> bool {
    const fn same(a: &[u8], b: &[u8]) -> bool {
        let (mut a, mut b) = (a, b);
        loop {
            match (a, b) {
                ([], []) => return true,
                ([x, a_tail @ ..], [y, b_tail @ ..]) if *x == *y => {
                    a = a_tail;
                    b = b_tail;
                }
                _ => return false,
            }
        }
    }
    let mut reserved: &[&str] = &RESERVED_KINDS;
    while let [kind, rest @ ..] = reserved {
        if same(name.as_bytes(), kind.as_bytes()) {
            return true;
        }
        reserved = rest;
    }
    false
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string cannot be a record kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKind {
    #[error("kind is empty")]
    Empty,
    #[error("kind is longer than {MAX_KIND_BYTES} bytes")]
    TooLong,
    #[error(
        "kind {0:?} is not CamelCase: only ASCII letters and digits, starting with an upper-case letter"
    )]
    NotCamelCase(String),
    #[error("kind {0} is reserved: only the chain itself writes it")]
    Reserved(String),
}

/// Checks the shape of a kind name; reserved names pass (the verifier reads them).
/// The shape also guarantees that a kind needs no escaping inside a JSON string.
pub(crate) fn check_kind_name(name: &str) -> Result<(), InvalidKind> {
    if has_kind_shape(name) {
        Ok(())
    } else if name.is_empty() {
        Err(InvalidKind::Empty)
    } else if name.len() > MAX_KIND_BYTES {
        Err(InvalidKind::TooLong)
    } else {
        Err(InvalidKind::NotCamelCase(name.to_string()))
    }
}

/// The head of a chain as the operator stores it in the cluster: the seq and hash of
/// the last line written, and that line's time. Whoever holds a checkpoint can later
/// prove that the log up to `seq` was not rewritten, and a new leader resumes from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: Digest,
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
}

/// Serde helpers writing a [`Timestamp`] as an RFC 3339 UTC string. Kept local so the
/// module does not depend on jiff's optional `serde` feature.
pub(crate) mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(time)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        super::parse_time(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses the `time` of a record or checkpoint: an RFC 3339 timestamp in UTC (`Z`).
pub(crate) fn parse_time(text: &str) -> Result<Timestamp, String> {
    if !text.ends_with('Z') {
        return Err(format!(
            "time {text:?} is not an RFC 3339 UTC timestamp (ending in Z)"
        ));
    }
    text.parse()
        .map_err(|e| format!("time {text:?} is not an RFC 3339 UTC timestamp: {e}"))
}

/// One line of the log, as read back. The verifier hashes the line's bytes, not this.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub prev: Digest,
    pub time: Timestamp,
    pub chain: String,
    pub kind: String,
    pub fields: Map<String, Value>,
}

/// A line's JSON as it must look: exactly these keys, nothing more, so a line with an
/// extra top-level key (which no writer produces) is rejected rather than ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecord {
    seq: u64,
    prev: Digest,
    time: String,
    chain: String,
    kind: String,
    fields: Map<String, Value>,
}

/// Why a line is not a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("a record is a JSON object, starting with {{")]
    NotAnObject,
    #[error("{}", json_message(.0))]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Kind(#[from] InvalidKind),
    #[error("{0}")]
    Time(String),
}

/// serde_json's message without its "at line 1": a log line never spans lines, so
/// only the column helps the reader find the damage.
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once(" at line ") {
        Some((message, _)) if error.line() == 1 => {
            format!("{message} at column {}", error.column())
        }
        _ => text,
    }
}

impl Record {
    /// Parses one line (without its newline). Never panics, whatever the bytes:
    /// invalid UTF-8, truncated JSON and nesting deeper than serde_json's limit are
    /// all errors.
    pub fn parse(line: &[u8]) -> Result<Record, RecordError> {
        // serde would also accept the fields as a JSON array; no writer produces that.
        if line.first() != Some(&b'{') {
            return Err(RecordError::NotAnObject);
        }
        let wire: WireRecord = serde_json::from_slice(line)?;
        check_kind_name(&wire.kind)?;
        let time = parse_time(&wire.time).map_err(RecordError::Time)?;
        Ok(Record {
            seq: wire.seq,
            prev: wire.prev,
            time,
            chain: wire.chain,
            kind: wire.kind,
            fields: wire.fields,
        })
    }
}

/// Why a chain cannot be started or resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("invalid chain id: {0}")]
    InvalidChainId(&'static str),
    #[error(
        "checkpoint seq {0} is not below {MAX_SEQ} (int64's maximum); it cannot come from a real checkpoint"
    )]
    SeqExhausted(u64),
}

fn check_chain_id(id: &str) -> Result<(), ChainError> {
    if id.is_empty() {
        Err(ChainError::InvalidChainId("it is empty"))
    } else if id.len() > MAX_CHAIN_ID_BYTES {
        Err(ChainError::InvalidChainId(
            "it is longer than 256 bytes (MAX_CHAIN_ID_BYTES)",
        ))
    } else if id.chars().any(char::is_control) {
        Err(ChainError::InvalidChainId("it contains control characters"))
    } else {
        Ok(())
    }
}

/// The writer's side of the log: the head (seq, hash and time of the last line) and
/// the chain id. It produces lines; writing them (and the newline after each) in order
/// is the caller's job, as is storing [`Chain::head`] as a checkpoint.
///
/// There is no constructor for an empty chain: [`Chain::start`] and [`Chain::resume`]
/// each return the chain together with its first line, so every chain in a log begins
/// with a record that says where it comes from.
#[derive(Clone, Debug)]
pub struct Chain {
    id: String,
    /// The id as a JSON string literal, escaped once rather than on every append.
    id_json: String,
    last_seq: u64,
    last_hash: Digest,
    last_time: Timestamp,
}

impl Chain {
    /// Starts a new chain: returns it and its first line, a `ChainStarted` record with
    /// seq 0 and `prev` all zeros, whose fields give the format version.
    pub fn start(id: impl Into<String>, time: Timestamp) -> Result<(Chain, String), ChainError> {
        let id = id.into();
        check_chain_id(&id)?;
        let id_json = Value::String(id.clone()).to_string();
        let mut fields = Map::new();
        fields.insert("format".into(), FORMAT_VERSION.into());
        let line = encode(
            0,
            &Digest::ZERO,
            time,
            &id_json,
            CHAIN_STARTED,
            &Value::Object(fields).to_string(),
        );
        let chain = Chain {
            last_seq: 0,
            last_hash: Digest::of(line.as_bytes()),
            last_time: time,
            id,
            id_json,
        };
        Ok((chain, line))
    }

    /// Continues a chain from a checkpoint, as a new leader does: the returned first
    /// line is a `ChainResumed` record with seq `from.seq + 1` and `prev` `from.hash`,
    /// whose fields name the checkpoint (`{"checkpoint":{"seq","hash","time"},
    /// "format":1}`).
    ///
    /// Lines the previous leader wrote after its last checkpoint are not part of the
    /// resumed chain: they form a branch that ends there, and checkpoints written after
    /// the resume describe the new lines, not that branch. The `ChainResumed` record
    /// makes the branch point visible to an auditor.
    pub fn resume(
        id: impl Into<String>,
        from: &Checkpoint,
        time: Timestamp,
    ) -> Result<(Chain, String), ChainError> {
        let id = id.into();
        check_chain_id(&id)?;
        if from.seq >= MAX_SEQ {
            return Err(ChainError::SeqExhausted(from.seq));
        }
        let mut chain = Chain {
            id_json: Value::String(id.clone()).to_string(),
            id,
            last_seq: from.seq,
            last_hash: from.hash,
            last_time: from.time,
        };
        let mut checkpoint = Map::new();
        checkpoint.insert("seq".into(), from.seq.into());
        checkpoint.insert("hash".into(), from.hash.to_string().into());
        checkpoint.insert("time".into(), from.time.to_string().into());
        let mut fields = Map::new();
        fields.insert("checkpoint".into(), Value::Object(checkpoint));
        fields.insert("format".into(), FORMAT_VERSION.into());
        let line = chain.push(CHAIN_RESUMED, fields, time);
        Ok((chain, line))
    }

    /// Appends a record and returns its line (without newline). The head advances at
    /// once, so the caller must write this line before the next one, and if writing
    /// fails, retry the same line rather than drop it: the next line's `prev` names it,
    /// and a missing line is exactly what the verifier reports.
    ///
    /// If the line would exceed [`MAX_LINE_BYTES`], `fields` is replaced by
    /// `{"oversized":{"bytes":N,"sha256":"..."}}` (the size and hash of the compact JSON
    /// of the original fields): the decision is still recorded and counted, and the
    /// details can be matched against another copy, but the log stays readable by a
    /// bounded-memory verifier. This keeps `append` infallible, so a decision is never
    /// lost to an error path.
    pub fn append(&mut self, kind: Kind, fields: Map<String, Value>, time: Timestamp) -> String {
        self.push(kind.as_str(), fields, time)
    }

    /// Appends the gap marker: `count` records were dropped (e.g. a full queue) for
    /// `reason`. Recording the loss in the chain itself is what lets an auditor tell
    /// "nothing happened" from "something happened and was not written".
    pub fn records_lost(&mut self, count: u64, reason: &str, time: Timestamp) -> String {
        let mut fields = Map::new();
        fields.insert("count".into(), count.into());
        fields.insert("reason".into(), reason.into());
        self.push(RECORDS_LOST, fields, time)
    }

    /// The checkpoint to store in the cluster: seq, hash and time of the last line.
    /// Store it only once that line is durably written (flushed and synced): a
    /// checkpoint beyond the end of the file is what the verifier reports as truncation.
    pub fn head(&self) -> Checkpoint {
        Checkpoint {
            seq: self.last_seq,
            hash: self.last_hash,
            time: self.last_time,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn push(&mut self, kind: &str, fields: Map<String, Value>, time: Timestamp) -> String {
        // Cannot saturate: resume refuses seqs at or above MAX_SEQ (i64::MAX), and
        // appending 2^63 records is out of reach.
        let seq = self.last_seq.saturating_add(1);
        let fields_json = Value::Object(fields).to_string();
        let mut line = encode(
            seq,
            &self.last_hash,
            time,
            &self.id_json,
            kind,
            &fields_json,
        );
        if line.len() > MAX_LINE_BYTES {
            let summary = oversized_summary(&fields_json);
            line = encode(seq, &self.last_hash, time, &self.id_json, kind, &summary);
        }
        self.last_seq = seq;
        self.last_hash = Digest::of(line.as_bytes());
        self.last_time = time;
        line
    }
}

/// The `fields` that replace an oversized record's fields: the size and hash of the
/// original `fields` JSON, so the details can still be matched against another copy.
fn oversized_summary(fields_json: &str) -> String {
    let mut summary = Map::new();
    summary.insert("bytes".into(), fields_json.len().into());
    summary.insert(
        "sha256".into(),
        Digest::of(fields_json.as_bytes()).to_string().into(),
    );
    let mut fields = Map::new();
    fields.insert("oversized".into(), Value::Object(summary));
    Value::Object(fields).to_string()
}

/// Writes a line in the one canonical form. Built by hand rather than through a derived
/// `Serialize` so that it cannot fail (no `Result` to unwrap) and the key order is
/// visible here: every part is either a number, hex digits, a timestamp or kind name
/// (none of which need JSON escaping), or JSON that serde_json already produced.
fn encode(
    seq: u64,
    prev: &Digest,
    time: Timestamp,
    id_json: &str,
    kind: &str,
    fields_json: &str,
) -> String {
    format!(
        "{{\"seq\":{seq},\"prev\":\"{prev}\",\"time\":\"{time}\",\"chain\":{id_json},\"kind\":\"{kind}\",\"fields\":{fields_json}}}"
    )
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn start_writes_genesis_line_in_canonical_form() {
        let (chain, line) =
            Chain::start("eu-west/enclave-operator", t("2025-03-01T12:00:00Z")).unwrap();
        assert_eq!(
            line,
            format!(
                r#"{{"seq":0,"prev":"{}","time":"2025-03-01T12:00:00Z","chain":"eu-west/enclave-operator","kind":"ChainStarted","fields":{{"format":1}}}}"#,
                "0".repeat(64)
            )
        );
        let head = chain.head();
        assert_eq!(head.seq, 0);
        assert_eq!(head.hash, Digest::of(line.as_bytes()));
    }

    #[test]
    fn append_links_to_previous_line_and_sorts_field_keys() {
        let (mut chain, first) = Chain::start("c", t("2025-03-01T12:00:00Z")).unwrap();
        let line = chain.append(
            Kind::POD_DENIED,
            fields(json!({"pod": "api-0", "namespace": "shop", "reason": "node outside enclave"})),
            t("2025-03-01T12:00:01.5Z"),
        );
        let expected = format!(
            r#"{{"seq":1,"prev":"{}","time":"2025-03-01T12:00:01.5Z","chain":"c","kind":"PodDenied","fields":{{"namespace":"shop","pod":"api-0","reason":"node outside enclave"}}}}"#,
            Digest::of(first.as_bytes())
        );
        assert_eq!(line, expected);
        let record = Record::parse(line.as_bytes()).unwrap();
        assert_eq!(record.seq, 1);
        assert_eq!(record.prev, Digest::of(first.as_bytes()));
        assert_eq!(record.kind, "PodDenied");
        assert_eq!(record.fields["pod"], "api-0");
        assert_eq!(chain.head().seq, 1);
        assert_eq!(chain.head().time, t("2025-03-01T12:00:01.5Z"));
    }

    #[test]
    fn chain_id_is_json_escaped() {
        let (_, line) = Chain::start("a \"quoted\" \\ id", t("2025-03-01T12:00:00Z")).unwrap();
        let record = Record::parse(line.as_bytes()).unwrap();
        assert_eq!(record.chain, "a \"quoted\" \\ id");
    }

    #[test]
    fn invalid_chain_ids_are_refused() {
        let now = t("2025-03-01T12:00:00Z");
        assert!(Chain::start("", now).is_err());
        assert!(Chain::start("a\nb", now).is_err());
        assert!(Chain::start("x".repeat(MAX_CHAIN_ID_BYTES + 1), now).is_err());
        assert!(Chain::start("x".repeat(MAX_CHAIN_ID_BYTES), now).is_ok());
    }

    #[test]
    fn resume_continues_from_checkpoint_and_names_it() {
        let (mut chain, _) = Chain::start("c", t("2025-03-01T12:00:00Z")).unwrap();
        chain.append(Kind::POD_EVICTED, Map::new(), t("2025-03-01T12:00:01Z"));
        let checkpoint = chain.head();
        let (resumed, line) = Chain::resume("c", &checkpoint, t("2025-03-01T12:05:00Z")).unwrap();
        let record = Record::parse(line.as_bytes()).unwrap();
        assert_eq!(record.kind, CHAIN_RESUMED);
        assert_eq!(record.seq, checkpoint.seq + 1);
        assert_eq!(record.prev, checkpoint.hash);
        assert_eq!(
            Value::Object(record.fields),
            json!({
                "checkpoint": {"seq": 1, "hash": checkpoint.hash.to_string(), "time": "2025-03-01T12:00:01Z"},
                "format": 1
            })
        );
        assert_eq!(resumed.head().seq, 2);
        assert_eq!(resumed.id(), "c");
    }

    #[test]
    fn resume_refuses_seq_that_cannot_continue() {
        let checkpoint = Checkpoint {
            seq: u64::MAX,
            hash: Digest::ZERO,
            time: t("2025-03-01T12:00:00Z"),
        };
        assert_eq!(
            Chain::resume("c", &checkpoint, checkpoint.time).unwrap_err(),
            ChainError::SeqExhausted(u64::MAX)
        );
    }

    #[test]
    fn records_lost_is_an_ordinary_record() {
        let (mut chain, _) = Chain::start("c", t("2025-03-01T12:00:00Z")).unwrap();
        let line = chain.records_lost(17, "queue full", t("2025-03-01T12:00:02Z"));
        let record = Record::parse(line.as_bytes()).unwrap();
        assert_eq!(record.kind, RECORDS_LOST);
        assert_eq!(
            Value::Object(record.fields),
            json!({"count": 17, "reason": "queue full"})
        );
    }

    #[test]
    fn oversized_fields_are_replaced_by_their_digest() {
        let (mut chain, _) = Chain::start("c", t("2025-03-01T12:00:00Z")).unwrap();
        let big = fields(json!({"blob": "x".repeat(MAX_LINE_BYTES)}));
        let big_json = Value::Object(big.clone()).to_string();
        let line = chain.append(Kind::EXPOSURE_FOUND, big, t("2025-03-01T12:00:03Z"));
        assert!(line.len() <= MAX_LINE_BYTES);
        let record = Record::parse(line.as_bytes()).unwrap();
        assert_eq!(record.kind, "ExposureFound");
        assert_eq!(
            Value::Object(record.fields),
            json!({"oversized": {"bytes": big_json.len(), "sha256": Digest::of(big_json.as_bytes()).to_string()}})
        );
        assert_eq!(chain.head().hash, Digest::of(line.as_bytes()));
    }

    #[test]
    fn kinds_must_be_camel_case_and_not_reserved() {
        assert_eq!(
            Kind::new("QuotaExceeded").unwrap().as_str(),
            "QuotaExceeded"
        );
        assert_eq!(Kind::new(""), Err(InvalidKind::Empty));
        assert!(matches!(
            Kind::new("podDenied"),
            Err(InvalidKind::NotCamelCase(_))
        ));
        assert!(matches!(
            Kind::new("Pod Denied"),
            Err(InvalidKind::NotCamelCase(_))
        ));
        assert!(matches!(
            Kind::new("Pod\"Denied"),
            Err(InvalidKind::NotCamelCase(_))
        ));
        assert_eq!(
            Kind::new("A".repeat(MAX_KIND_BYTES + 1)),
            Err(InvalidKind::TooLong)
        );
        for reserved in RESERVED_KINDS {
            assert!(matches!(Kind::new(reserved), Err(InvalidKind::Reserved(_))));
            assert_eq!(Kind::from_static(reserved), None);
        }
        assert_eq!(
            Kind::from_static("PodPlaced").unwrap().as_str(),
            "PodPlaced"
        );
        assert_eq!(Kind::from_static("Chain"), Kind::new("Chain").ok());
        assert_eq!(
            Kind::from_static("ChainStartedX"),
            Kind::new("ChainStartedX").ok()
        );
        assert_eq!(Kind::from_static("pod_placed"), None);
        assert_eq!(Kind::from_static(""), None);
    }

    #[test]
    fn digest_parses_only_lowercase_hex_of_the_right_length() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(d.to_string().to_uppercase().parse::<Digest>().is_err());
        assert!("ab".parse::<Digest>().is_err());
        assert!("g".repeat(64).parse::<Digest>().is_err());
        assert!(
            format!("{}é", &d.to_string()[..62])
                .parse::<Digest>()
                .is_err()
        );
        assert!(Digest::ZERO.is_zero());
        assert_eq!(Digest::ZERO.to_string(), "0".repeat(64));
    }

    #[test]
    fn checkpoint_serializes_with_camel_case_and_round_trips() {
        let checkpoint = Checkpoint {
            seq: 42,
            hash: Digest::of(b"x"),
            time: t("2025-03-01T12:00:00Z"),
        };
        let text = serde_json::to_string(&checkpoint).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"seq":42,"hash":"{}","time":"2025-03-01T12:00:00Z"}}"#,
                Digest::of(b"x")
            )
        );
        assert_eq!(
            serde_json::from_str::<Checkpoint>(&text).unwrap(),
            checkpoint
        );
        assert!(
            serde_json::from_str::<Checkpoint>(
                r#"{"seq":1,"hash":"00","time":"2025-03-01T12:00:00Z"}"#
            )
            .is_err()
        );
        let zeros = "0".repeat(64);
        let local = format!(r#"{{"seq":1,"hash":"{zeros}","time":"2025-03-01T12:00:00+01:00"}}"#);
        assert!(serde_json::from_str::<Checkpoint>(&local).is_err());
    }

    #[test]
    fn parse_rejects_unknown_keys_bad_kinds_and_bad_times() {
        let (_, line) = Chain::start("c", t("2025-03-01T12:00:00Z")).unwrap();
        let extra = line.replacen("{\"seq\"", "{\"x\":1,\"seq\"", 1);
        assert!(Record::parse(extra.as_bytes()).is_err());
        let bad_kind = line.replace("ChainStarted", "chain started");
        assert!(matches!(
            Record::parse(bad_kind.as_bytes()),
            Err(RecordError::Kind(_))
        ));
        let bad_time = line.replace("2025-03-01T12:00:00Z", "yesterday");
        assert!(matches!(
            Record::parse(bad_time.as_bytes()),
            Err(RecordError::Time(_))
        ));
        assert!(Record::parse(b"\xff\xfe").is_err());
        assert!(Record::parse(&[b'['; 10_000]).is_err());
        let array = format!(
            r#"[0,"{}","2025-03-01T12:00:00Z","c","ChainStarted",{{}}]"#,
            "0".repeat(64)
        );
        assert!(matches!(
            Record::parse(array.as_bytes()),
            Err(RecordError::NotAnObject)
        ));
        let deep = [b"{\"fields\":".as_slice(), &[b'['; 100_000]].concat();
        assert!(matches!(Record::parse(&deep), Err(RecordError::Json(_))));
    }
}
