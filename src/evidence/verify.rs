//! Offline verification of a decision log (see `super::chain`), for an auditor who
//! trusts neither the operator nor whoever stored the files.
//!
//! The verifier reads the log line by line (bounded memory, whatever the log's size),
//! re-hashes each line's bytes exactly as read, and checks that the lines form one
//! unbroken chain: seq goes up by one, each `prev` is the hash of the line before, the
//! log starts either at the chain's genesis or at a checkpoint the caller supplies, and
//! every supplied checkpoint that falls inside the log matches it. The checkpoints are
//! what make the check worth doing: someone who rewrites a line can recompute every
//! later hash, but cannot change the checkpoints kept in the cluster.
//!
//! It stops at the first problem and names that line (file, 1-based line number, seq):
//! after a break nothing later can be trusted, so counting further errors would only
//! suggest a precision the evidence does not have.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// `Broken` is large (two positions and two digests) but verification stops at the
// first one, so its size costs nothing measurable next to hashing and parsing each
// line, and callers can match on it without unboxing.
#![allow(clippy::result_large_err)]

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::Path,
};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

use super::chain::{
    CHAIN_RESUMED, CHAIN_STARTED, Checkpoint, Digest, FORMAT_VERSION, MAX_LINE_BYTES, RECORDS_LOST,
    Record,
};

/// Most distinct kinds one log may hold. The operator writes about a dozen; the bound
/// keeps the per-kind counters (the only state that grows with the log) bounded even
/// for a crafted log with a new kind on every line.
pub const MAX_KINDS: usize = 1024;

/// Where a line is: the file as the caller named it, the 1-based line number within
/// that file, and the line's seq when the line could be parsed far enough to know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub file: String,
    pub line: u64,
    pub seq: Option<u64>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        Ok(())
    }
}

/// Why a log does not verify. Each variant names the first broken line; the messages
/// are written for the person reading the verifier's output, and say what could have
/// caused the break.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("no records: the log is empty")]
    Empty,
    #[error(
        "{at}: line longer than {MAX_LINE_BYTES} bytes; the writer never produces one, so the file is damaged or not a decision log"
    )]
    LineTooLong { at: Position },
    #[error(
        "{at}: blank line inside the log; the writer never writes one, so the file was edited or damaged"
    )]
    BlankLine { at: Position },
    #[error("{at}: not a decision record: {reason}")]
    Parse { at: Position, reason: String },
    #[error("{at}: {reason}")]
    Malformed { at: Position, reason: String },
    #[error(
        "{at}: sequence gap from {previous} to {found} (expected {expected}): lines were deleted, reordered or inserted here",
        expected = .previous.saturating_add(1)
    )]
    SeqGap {
        at: Position,
        previous: u64,
        found: u64,
    },
    #[error(
        "{line}: this line hashes to {actual}, but the next line {next} records prev {recorded}: this line was altered (or the next line's prev was, or lines between them were removed)"
    )]
    HashMismatch {
        /// The line whose hash does not match: the first one that cannot be trusted.
        line: Position,
        /// The line after it, whose `prev` disagrees.
        next: Position,
        actual: Digest,
        recorded: Digest,
    },
    #[error(
        "{at}: record belongs to chain {found:?}, but the log so far is chain {expected:?}: lines of another chain were mixed in (verify one chain at a time with --chain)"
    )]
    ChainChanged {
        at: Position,
        expected: String,
        found: String,
    },
    #[error(
        "{at}: the log neither starts a chain (a ChainStarted record at seq 0 with a zero prev) nor continues a given checkpoint (its prev is {prev}); to verify a fragment, pass the checkpoint with the seq just before its first line"
    )]
    Unanchored { at: Position, prev: Digest },
    #[error(
        "{at}: the log continues from prev {prev}, but the checkpoint for seq {seq} (taken {time}) records hash {hash}: the lines before this one were rewritten, or they belong to another chain or branch",
        seq = .checkpoint.seq, time = .checkpoint.time, hash = .checkpoint.hash
    )]
    AnchorMismatch {
        at: Position,
        checkpoint: Checkpoint,
        prev: Digest,
    },
    #[error(
        "{at}: this line hashes to {actual}, but the checkpoint for seq {seq} (taken {time}) records hash {hash}: the log was rewritten at or before this line, with later hashes recomputed to hide it",
        seq = .checkpoint.seq, time = .checkpoint.time, hash = .checkpoint.hash
    )]
    CheckpointMismatch {
        at: Position,
        checkpoint: Checkpoint,
        actual: Digest,
    },
    #[error(
        "the log ends at {last}, but a checkpoint exists for seq {seq} (taken {time}): the log was truncated before that seq, or the files holding the rest were not given",
        seq = .checkpoint.seq, time = .checkpoint.time
    )]
    Truncated {
        /// The last line read, which verified.
        last: Position,
        checkpoint: Checkpoint,
    },
}

impl Broken {
    /// The first line that cannot be trusted, when the failure is about a line.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Broken::Io { .. } | Broken::Empty => None,
            Broken::LineTooLong { at }
            | Broken::BlankLine { at }
            | Broken::Parse { at, .. }
            | Broken::Malformed { at, .. }
            | Broken::SeqGap { at, .. }
            | Broken::ChainChanged { at, .. }
            | Broken::Unanchored { at, .. }
            | Broken::AnchorMismatch { at, .. }
            | Broken::CheckpointMismatch { at, .. } => Some(at),
            Broken::HashMismatch { line, .. } => Some(line),
            Broken::Truncated { last, .. } => Some(last),
        }
    }
}

/// Where the verified log starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Anchor {
    /// At the chain's `ChainStarted` record: the whole chain was verified.
    Genesis,
    /// Just after this checkpoint: a fragment, trusted as far as the checkpoint is.
    Checkpoint(Checkpoint),
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub chain: String,
    pub files: usize,
    pub lines: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hash of the last line: compare with a checkpoint taken later, or keep it to
    /// verify the next fragment of the log.
    pub last_hash: Digest,
    #[serde(with = "super::chain::rfc3339")]
    pub first_time: Timestamp,
    #[serde(with = "super::chain::rfc3339")]
    pub last_time: Timestamp,
    pub anchor: Anchor,
    /// Checkpoints inside the verified range; each matched its line.
    pub checkpoints_matched: Vec<Checkpoint>,
    /// Checkpoints older than the log's start, which this log cannot confirm.
    pub checkpoints_before: usize,
    /// Records per kind, including `ChainStarted`, `ChainResumed` and `RecordsLost`.
    pub kinds: BTreeMap<String, u64>,
    /// Sum of the `count` of every `RecordsLost` record: decisions that happened but
    /// were not logged.
    pub records_lost: u64,
}

impl Report {
    /// The head of the verified log as a checkpoint, to verify the next fragment from.
    pub fn head(&self) -> Checkpoint {
        Checkpoint {
            seq: self.last_seq,
            hash: self.last_hash,
            time: self.last_time,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verified {} records of chain {:?} in {} file(s): seq {} to {}, {} to {}",
            self.lines,
            self.chain,
            self.files,
            self.first_seq,
            self.last_seq,
            self.first_time,
            self.last_time
        )?;
        match &self.anchor {
            Anchor::Genesis => writeln!(f, "starts at the chain's genesis")?,
            Anchor::Checkpoint(c) => writeln!(
                f,
                "starts after checkpoint seq {} ({}), which it matches",
                c.seq, c.time
            )?,
        }
        writeln!(f, "last hash: {}", self.last_hash)?;
        writeln!(
            f,
            "checkpoints matched: {} ({} older ones not covered by this log)",
            self.checkpoints_matched.len(),
            self.checkpoints_before
        )?;
        writeln!(f, "records lost (RecordsLost): {}", self.records_lost)?;
        write!(f, "records per kind:")?;
        for (kind, count) in &self.kinds {
            write!(f, " {kind}={count}")?;
        }
        Ok(())
    }
}

/// Verifies the log held in `files`, read in the given order as one stream (a log
/// rotated into several files), against `checkpoints` (in any order, as read from the
/// cluster). See the module documentation for what is checked.
pub fn verify<P: AsRef<Path>>(files: &[P], checkpoints: &[Checkpoint]) -> Result<Report, Broken> {
    verify_selected(files, checkpoints, &|_| true)
}

/// Like [`verify`], reading only the lines `keep` selects (one chain of a log that holds
/// several, or the records among other log lines). Lines keep their numbers in
/// messages.
pub fn verify_selected<P: AsRef<Path>>(
    files: &[P],
    checkpoints: &[Checkpoint],
    keep: &dyn Fn(&[u8]) -> bool,
) -> Result<Report, Broken> {
    let mut verifier = Verifier::new(checkpoints);
    verifier.keep = Some(keep);
    for path in files {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| Broken::Io {
            file: name.clone(),
            source,
        })?;
        verifier.read(name, file)?;
    }
    verifier.finish()
}

/// Like [`verify`], for logs that are not files (standard input, an object store's
/// stream): each source is a name used in messages and a reader.
pub fn verify_readers<N, R>(
    sources: impl IntoIterator<Item = (N, R)>,
    checkpoints: &[Checkpoint],
) -> Result<Report, Broken>
where
    N: Into<String>,
    R: Read,
{
    let mut verifier = Verifier::new(checkpoints);
    for (name, reader) in sources {
        verifier.read(name.into(), reader)?;
    }
    verifier.finish()
}

/// Why checkpoints could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointsError {
    #[error("checkpoints are not a JSON array of {{seq, hash, time}} objects: {0}")]
    Array(#[source] serde_json::Error),
    #[error("checkpoint on line {line}: {source}")]
    Line {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads checkpoints as the CLI receives them: either one JSON array, or JSON lines
/// (one checkpoint object per line, blank lines ignored), which is what appending
/// checkpoints to a file or `kubectl get -o json | jq -c` produce.
pub fn checkpoints_from_json(text: &str) -> Result<Vec<Checkpoint>, CheckpointsError> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(CheckpointsError::Array);
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|source| CheckpointsError::Line {
                line: index.saturating_add(1),
                source,
            })
        })
        .collect()
}

/// The last line verified so far. The file is kept as an index into
/// `Verifier::files` so that no string is copied per line.
struct Last {
    file: usize,
    line: u64,
    seq: u64,
    hash: Digest,
    time: Timestamp,
}

/// What is known once the first line verified.
struct State {
    chain: String,
    anchor: Anchor,
    first_seq: u64,
    first_time: Timestamp,
    lines: u64,
    last: Last,
}

/// Selects the lines of a log to verify.
type LineFilter<'k> = &'k dyn Fn(&[u8]) -> bool;

/// The streaming check. Private: after an error its state is meaningless, and
/// `verify`/`verify_readers` make sure nothing reads it then.
struct Verifier<'k> {
    /// Which lines to read; the others are skipped (and still numbered).
    keep: Option<LineFilter<'k>>,
    /// Sorted by seq; `next_checkpoint` is the first one not yet reached.
    checkpoints: Vec<Checkpoint>,
    next_checkpoint: usize,
    checkpoints_before: usize,
    matched: Vec<Checkpoint>,
    files: Vec<String>,
    state: Option<State>,
    kinds: BTreeMap<String, u64>,
    records_lost: u64,
}

/// Read at most this much per line: a line of `MAX_LINE_BYTES` plus its newline.
const READ_LIMIT: u64 = MAX_LINE_BYTES as u64 + 1;

impl<'k> Verifier<'k> {
    fn new(checkpoints: &[Checkpoint]) -> Verifier<'k> {
        let mut checkpoints = checkpoints.to_vec();
        checkpoints.sort_by_key(|c| c.seq);
        Verifier {
            keep: None,
            checkpoints,
            next_checkpoint: 0,
            checkpoints_before: 0,
            matched: Vec::new(),
            files: Vec::new(),
            state: None,
            kinds: BTreeMap::new(),
            records_lost: 0,
        }
    }

    fn position(&self, file: usize, line: u64, seq: Option<u64>) -> Position {
        Position {
            file: self.files.get(file).cloned().unwrap_or_default(),
            line,
            seq,
        }
    }

    fn read(&mut self, name: String, reader: impl Read) -> Result<(), Broken> {
        let file = self.files.len();
        self.files.push(name);
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut buf = Vec::new();
        let mut line: u64 = 0;
        loop {
            buf.clear();
            // `take` bounds the read: a file with no newline for gigabytes costs
            // MAX_LINE_BYTES of memory, then an error.
            let read = (&mut reader)
                .take(READ_LIMIT)
                .read_until(b'\n', &mut buf)
                .map_err(|source| Broken::Io {
                    file: self.files.get(file).cloned().unwrap_or_default(),
                    source,
                })?;
            if read == 0 {
                return Ok(());
            }
            line = line.saturating_add(1);
            let bytes = match buf.strip_suffix(b"\n") {
                Some(bytes) => bytes,
                None if buf.len() > MAX_LINE_BYTES => {
                    return Err(Broken::LineTooLong {
                        at: self.position(file, line, None),
                    });
                }
                // The last line of a file without a final newline: accepted, since
                // its hash and the checkpoints decide whether it is complete.
                None => &buf,
            };
            if self.keep.is_some_and(|keep| !keep(bytes)) {
                continue;
            }
            self.line(file, line, bytes)?;
        }
    }

    fn line(&mut self, file: usize, line: u64, bytes: &[u8]) -> Result<(), Broken> {
        if bytes.is_empty() {
            return Err(Broken::BlankLine {
                at: self.position(file, line, None),
            });
        }
        if bytes.ends_with(b"\r") {
            return Err(Broken::Parse {
                at: self.position(file, line, None),
                reason: "line ends with a carriage return: the file's line endings were converted (CRLF), which changes every hash; verify the original file".into(),
            });
        }
        let record = Record::parse(bytes).map_err(|e| Broken::Parse {
            at: self.position(file, line, None),
            reason: e.to_string(),
        })?;
        let at = self.position(file, line, Some(record.seq));
        let hash = Digest::of(bytes);

        let state = match self.state.take() {
            None => {
                let anchor = self.anchor(&record, &at)?;
                State {
                    chain: record.chain.clone(),
                    anchor,
                    first_seq: record.seq,
                    first_time: record.time,
                    lines: 0,
                    last: Last {
                        file,
                        line,
                        seq: record.seq,
                        hash,
                        time: record.time,
                    },
                }
            }
            Some(state) => {
                self.link(&state, &record, &at)?;
                state
            }
        };
        self.reserved_kinds(&record, &at)?;
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            // Checkpoints before the first line were consumed by `anchor` and seq
            // goes up by exactly one per line, so none is ever skipped here.
            if checkpoint.seq != record.seq {
                break;
            }
            if checkpoint.hash != hash {
                return Err(Broken::CheckpointMismatch {
                    at,
                    checkpoint: checkpoint.clone(),
                    actual: hash,
                });
            }
            self.matched.push(checkpoint.clone());
            self.next_checkpoint = self.next_checkpoint.saturating_add(1);
        }
        self.count_kind(record.kind, &at)?;
        self.state = Some(State {
            lines: state.lines.saturating_add(1),
            last: Last {
                file,
                line,
                seq: record.seq,
                hash,
                time: record.time,
            },
            ..state
        });
        Ok(())
    }

    /// Checks where the log starts: at genesis, or right after a given checkpoint.
    /// Also moves past the checkpoints older than the log, which it cannot confirm.
    fn anchor(&mut self, record: &Record, at: &Position) -> Result<Anchor, Broken> {
        let mut anchor = None;
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            if checkpoint.seq >= record.seq {
                break;
            }
            if record.seq.checked_sub(1) == Some(checkpoint.seq) {
                if checkpoint.hash != record.prev {
                    return Err(Broken::AnchorMismatch {
                        at: at.clone(),
                        checkpoint: checkpoint.clone(),
                        prev: record.prev,
                    });
                }
                anchor = Some(checkpoint.clone());
            } else {
                self.checkpoints_before = self.checkpoints_before.saturating_add(1);
            }
            self.next_checkpoint = self.next_checkpoint.saturating_add(1);
        }
        if record.kind == CHAIN_STARTED {
            if record.seq == 0 && record.prev.is_zero() {
                return Ok(Anchor::Genesis);
            }
            return Err(Broken::Malformed {
                at: at.clone(),
                reason: format!(
                    "a ChainStarted record must have seq 0 and a zero prev; this one has seq {} and prev {}",
                    record.seq, record.prev
                ),
            });
        }
        anchor.map(Anchor::Checkpoint).ok_or(Broken::Unanchored {
            at: at.clone(),
            prev: record.prev,
        })
    }

    /// Checks that a record continues the one before it.
    fn link(&self, state: &State, record: &Record, at: &Position) -> Result<(), Broken> {
        // Before the seq check: a second chain appended to the same file restarts at
        // seq 0, and "a new chain starts here" says more than "sequence gap".
        if record.kind == CHAIN_STARTED {
            return Err(Broken::Malformed {
                at: at.clone(),
                reason: "a chain starts here (ChainStarted), but lines came before it: the files were given in the wrong order, or a second chain was written into this log (verify each chain's files separately)".into(),
            });
        }
        let last = &state.last;
        if last.seq.checked_add(1) != Some(record.seq) {
            return Err(Broken::SeqGap {
                at: at.clone(),
                previous: last.seq,
                found: record.seq,
            });
        }
        if record.prev != last.hash {
            return Err(Broken::HashMismatch {
                line: self.position(last.file, last.line, Some(last.seq)),
                next: at.clone(),
                actual: last.hash,
                recorded: record.prev,
            });
        }
        if record.chain != state.chain {
            return Err(Broken::ChainChanged {
                at: at.clone(),
                expected: state.chain.clone(),
                found: record.chain.clone(),
            });
        }
        Ok(())
    }

    /// Checks the fields of the kinds whose fields have a fixed meaning, and adds up
    /// lost records.
    fn reserved_kinds(&mut self, record: &Record, at: &Position) -> Result<(), Broken> {
        let malformed = |reason: String| Broken::Malformed {
            at: at.clone(),
            reason,
        };
        match record.kind.as_str() {
            CHAIN_STARTED => check_format(&record.fields).map_err(malformed),
            CHAIN_RESUMED => {
                check_format(&record.fields).map_err(malformed)?;
                check_resumed(record).map_err(malformed)
            }
            RECORDS_LOST => {
                let count = record.fields.get("count").and_then(Value::as_u64);
                let reason = record.fields.get("reason").and_then(Value::as_str);
                match (count, reason) {
                    (Some(count), Some(_)) => {
                        self.records_lost = self.records_lost.saturating_add(count);
                        Ok(())
                    }
                    _ => Err(malformed(
                        "a RecordsLost record must have a non-negative integer count and a string reason".into(),
                    )),
                }
            }
            _ => Ok(()),
        }
    }

    fn count_kind(&mut self, kind: String, at: &Position) -> Result<(), Broken> {
        if let Some(count) = self.kinds.get_mut(&kind) {
            *count = count.saturating_add(1);
            return Ok(());
        }
        if self.kinds.len() >= MAX_KINDS {
            return Err(Broken::Malformed {
                at: at.clone(),
                reason: format!(
                    "more than {MAX_KINDS} distinct kinds; the operator writes about a dozen, so this is not a decision log"
                ),
            });
        }
        self.kinds.insert(kind, 1);
        Ok(())
    }

    fn finish(self) -> Result<Report, Broken> {
        let Some(state) = self.state else {
            return Err(Broken::Empty);
        };
        let last = state.last;
        if let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            return Err(Broken::Truncated {
                last: Position {
                    file: self.files.get(last.file).cloned().unwrap_or_default(),
                    line: last.line,
                    seq: Some(last.seq),
                },
                checkpoint: checkpoint.clone(),
            });
        }
        Ok(Report {
            chain: state.chain,
            files: self.files.len(),
            lines: state.lines,
            first_seq: state.first_seq,
            last_seq: last.seq,
            last_hash: last.hash,
            first_time: state.first_time,
            last_time: last.time,
            anchor: state.anchor,
            checkpoints_matched: self.matched,
            checkpoints_before: self.checkpoints_before,
            kinds: self.kinds,
            records_lost: self.records_lost,
        })
    }
}

/// `ChainStarted` and `ChainResumed` carry the format version, so that even a fragment
/// without the genesis line says which format it is in.
fn check_format(fields: &Map<String, Value>) -> Result<(), String> {
    match fields.get("format").and_then(Value::as_u64) {
        Some(FORMAT_VERSION) => Ok(()),
        Some(other) => Err(format!(
            "log format {other} is not supported; this verifier reads format {FORMAT_VERSION}"
        )),
        None => Err("the record has no integer format field".into()),
    }
}

/// A `ChainResumed` record must name the checkpoint it actually continues from;
/// otherwise the branch point it shows the auditor would be false.
fn check_resumed(record: &Record) -> Result<(), String> {
    let named = record
        .fields
        .get("checkpoint")
        .and_then(|c| serde_json::from_value::<Checkpoint>(c.clone()).ok())
        .ok_or("a ChainResumed record must name its checkpoint as {seq, hash, time}")?;
    if record.seq.checked_sub(1) != Some(named.seq) || record.prev != named.hash {
        return Err(format!(
            "ChainResumed names checkpoint seq {} hash {}, but continues from seq {} prev {}",
            named.seq,
            named.hash,
            record.seq.saturating_sub(1),
            record.prev
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::super::chain::{Chain, Kind};
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::io::Cursor;
    use std::path::PathBuf;

    /// Where and why a log was found malformed; any other break fails the test.
    fn malformed(broken: Broken) -> (Position, String) {
        match broken {
            Broken::Malformed { at, reason } => (at, reason),
            other => panic!("unexpected {other}"),
        }
    }

    const ID: &str = "eu-west/enclave-operator";

    fn time(second: u64) -> Timestamp {
        Timestamp::from_second(1_740_830_400 + i64::try_from(second).unwrap()).unwrap()
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    /// A log as the operator would write it, and the checkpoints it stored.
    struct Log {
        lines: Vec<String>,
        checkpoints: Vec<Checkpoint>,
    }

    /// `records` decision records after the genesis line; a leader change (resume
    /// from the last checkpoint) after record `resume_after`, a RecordsLost marker
    /// after record 10, and a checkpoint every 50 seqs.
    fn build(records: u64, resume_after: Option<u64>) -> Log {
        let kinds = [
            Kind::POD_MUTATED,
            Kind::POD_DENIED,
            Kind::POD_EVICTED,
            Kind::POD_BLOCKED,
            Kind::ACCESS_ALLOWED,
            Kind::ACCESS_DENIED,
            Kind::NETWORK_POLICY_HEALED,
            Kind::EXPOSURE_FOUND,
        ];
        let (mut chain, first) = Chain::start(ID, time(0)).unwrap();
        let mut lines = vec![first];
        let mut checkpoints = Vec::new();
        for i in 1..=records {
            let now = time(i);
            let line = if i == 10 {
                chain.records_lost(3, "queue full", now)
            } else {
                let kind = kinds[usize::try_from(i).unwrap() % kinds.len()].clone();
                let fields =
                    object(json!({"namespace": "shop", "pod": format!("pod-{i}"), "i": i}));
                chain.append(kind, fields, now)
            };
            lines.push(line);
            if chain.head().seq % 50 == 0 {
                checkpoints.push(chain.head());
            }
            if Some(i) == resume_after {
                // The new leader only knows the checkpoint; the old one stopped there.
                let head = chain.head();
                checkpoints.push(head.clone());
                let (resumed, line) = Chain::resume(ID, &head, now).unwrap();
                chain = resumed;
                lines.push(line);
            }
        }
        Log { lines, checkpoints }
    }

    fn write(dir: &tempfile::TempDir, name: &str, lines: &[String]) -> PathBuf {
        let path = dir.path().join(name);
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn write_bytes(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn line_of(log: &Log, seq: u64) -> usize {
        log.lines
            .iter()
            .position(|l| Record::parse(l.as_bytes()).unwrap().seq == seq)
            .unwrap()
    }

    #[test]
    fn intact_log_with_resume_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(400, Some(200));
        let path = write(&dir, "decisions.log", &log.lines);
        let report = verify(&[&path], &log.checkpoints).unwrap();
        assert_eq!(report.lines, 402);
        assert_eq!(report.first_seq, 0);
        assert_eq!(report.last_seq, 401);
        assert_eq!(
            report.last_hash,
            Digest::of(log.lines.last().unwrap().as_bytes())
        );
        assert_eq!(report.anchor, Anchor::Genesis);
        assert_eq!(report.checkpoints_matched.len(), log.checkpoints.len());
        assert_eq!(report.checkpoints_before, 0);
        assert_eq!(report.kinds["ChainStarted"], 1);
        assert_eq!(report.kinds["ChainResumed"], 1);
        assert_eq!(report.kinds["RecordsLost"], 1);
        assert_eq!(report.kinds.values().sum::<u64>(), 402);
        assert_eq!(report.records_lost, 3);
        assert_eq!(report.chain, ID);
        assert_eq!(report.first_time, time(0));
        assert_eq!(report.last_time, time(400));
        let summary = report.to_string();
        assert!(summary.contains("verified 402 records"), "{summary}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["lastSeq"], 401);
        assert_eq!(json["anchor"], "genesis");
    }

    #[test]
    fn deleted_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = build(300, None);
        log.lines.remove(120);
        let path = write(&dir, "decisions.log", &log.lines);
        let err = verify(&[&path], &[]).unwrap_err();
        match &err {
            Broken::SeqGap {
                at,
                previous,
                found,
            } => {
                assert_eq!(
                    (at.line, at.seq, *previous, *found),
                    (121, Some(121), 119, 121)
                );
                assert!(at.file.ends_with("decisions.log"));
            }
            other => panic!("unexpected {other}"),
        }
        assert!(
            err.to_string().contains("sequence gap from 119 to 121"),
            "{err}"
        );
        assert!(
            err.to_string().contains("decisions.log:121 (seq 121)"),
            "{err}"
        );
    }

    #[test]
    fn edited_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = build(300, None);
        let edited = log.lines[150].replace("\"pod-150\"", "\"pod-666\"");
        assert_ne!(edited, log.lines[150]);
        log.lines[150] = edited;
        let path = write(&dir, "decisions.log", &log.lines);
        match verify(&[&path], &[]).unwrap_err() {
            Broken::HashMismatch { line, next, .. } => {
                assert_eq!((line.line, line.seq), (151, Some(150)));
                assert_eq!((next.line, next.seq), (152, Some(151)));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn reordered_pair_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = build(300, None);
        log.lines.swap(200, 201);
        let path = write(&dir, "decisions.log", &log.lines);
        match verify(&[&path], &[]).unwrap_err() {
            Broken::SeqGap {
                at,
                previous,
                found,
            } => {
                assert_eq!((at.line, previous, found), (201, 199, 201));
            }
            other => panic!("unexpected {other}"),
        }
    }

    /// The attack checkpoints exist for: edit a line and recompute every later hash.
    #[test]
    fn rewritten_chain_is_caught_by_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(300, Some(180));
        let edit = line_of(&log, 130);
        let mut forged = log.lines.clone();
        forged[edit] = forged[edit].replace("\"pod-130\"", "\"pod-999\"");
        for i in edit + 1..forged.len() {
            let old = Digest::of(log.lines[i - 1].as_bytes()).to_string();
            let new = Digest::of(forged[i - 1].as_bytes()).to_string();
            // Every occurrence: also the hash the ChainResumed record names.
            forged[i] = log.lines[i].replace(&old, &new);
        }
        let path = write(&dir, "decisions.log", &forged);
        // The chain alone is consistent again...
        verify(&[&path], &[]).unwrap();
        // ...but not with the checkpoints kept in the cluster.
        match verify(&[&path], &log.checkpoints).unwrap_err() {
            Broken::CheckpointMismatch { at, checkpoint, .. } => {
                assert_eq!(checkpoint.seq, 150);
                assert_eq!((at.line, at.seq), (151, Some(150)));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn truncation_before_checkpoint_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(400, None);
        let keep = line_of(&log, 320) + 1;
        let path = write(&dir, "decisions.log", &log.lines[..keep]);
        let err = verify(&[&path], &log.checkpoints).unwrap_err();
        match &err {
            Broken::Truncated { last, checkpoint } => {
                assert_eq!(last.seq, Some(320));
                assert_eq!(checkpoint.seq, 350);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn fragment_verifies_from_the_checkpoint_it_continues() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(300, None);
        let start = line_of(&log, 101);
        let path = write(&dir, "fragment.log", &log.lines[start..]);
        let report = verify(&[&path], &log.checkpoints).unwrap();
        assert_eq!(report.first_seq, 101);
        assert_eq!(
            report.anchor,
            Anchor::Checkpoint(log.checkpoints[1].clone())
        );
        assert_eq!(report.checkpoints_before, 1);
        assert_eq!(report.checkpoints_matched.len(), log.checkpoints.len() - 2);

        // Without the checkpoint it starts from, a fragment proves nothing.
        let later: Vec<_> = log
            .checkpoints
            .iter()
            .filter(|c| c.seq > 100)
            .cloned()
            .collect();
        match verify(&[&path], &later).unwrap_err() {
            Broken::Unanchored { at, .. } => assert_eq!((at.line, at.seq), (1, Some(101))),
            other => panic!("unexpected {other}"),
        }

        // A checkpoint that disagrees with the fragment's start.
        let mut wrong = log.checkpoints.clone();
        wrong[1].hash = Digest::of(b"something else");
        assert!(matches!(
            verify(&[&path], &wrong).unwrap_err(),
            Broken::AnchorMismatch { .. }
        ));
    }

    #[test]
    fn two_files_in_order_verify_and_in_the_wrong_order_fail() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(300, Some(120));
        let a = write(&dir, "decisions.log.1", &log.lines[..250]);
        let b = write(&dir, "decisions.log", &log.lines[250..]);
        let report = verify(&[&a, &b], &log.checkpoints).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.lines, u64::try_from(log.lines.len()).unwrap());

        let err = verify(&[&b, &a], &[]).unwrap_err();
        let at = err.position().unwrap();
        assert!(at.file.ends_with("decisions.log"), "{err}");
        assert_eq!(at.line, 1);

        // Even when the second file's start is anchored, the first file cannot follow it.
        let anchor = Record::parse(log.lines[249].as_bytes()).unwrap();
        let anchor = Checkpoint {
            seq: anchor.seq,
            hash: Digest::of(log.lines[249].as_bytes()),
            time: anchor.time,
        };
        let (at, reason) = malformed(verify(&[&b, &a], &[anchor]).unwrap_err());
        assert!(at.file.ends_with("decisions.log.1"));
        assert_eq!(at.line, 1);
        assert!(reason.contains("wrong order"), "{reason}");
    }

    /// Damaged or hostile bytes at line 11: each must give an error naming that line,
    /// never a panic.
    #[test]
    fn garbage_invalid_utf8_and_huge_lines_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(20, None);
        let head: Vec<u8> = log.lines[..10]
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        let tail: Vec<u8> = log.lines[11..]
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        let mut bad_utf8 = log.lines[12].clone().into_bytes();
        let at = bad_utf8.windows(6).position(|w| w == b"pod-12").unwrap();
        bad_utf8[at + 4] = 0xff;
        bad_utf8[at + 5] = 0xfe;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"\x00\x01\x02garbage{{{\x7f".to_vec()),
            ("invalid utf-8 in a string", bad_utf8),
            ("invalid utf-8 alone", vec![0xc3, 0x28, 0xa0, 0xa1]),
            (
                "deep nesting",
                [b"{\"fields\":".as_slice(), &[b'['; 500_000]].concat(),
            ),
            ("huge line", vec![b'a'; MAX_LINE_BYTES + 10]),
            ("torn json", log.lines[10].as_bytes()[..40].to_vec()),
            ("json array", b"[1,2,3]".to_vec()),
            ("blank", Vec::new()),
        ];
        for (name, bad) in cases {
            let bytes = [head.clone(), bad, b"\n".to_vec(), tail.clone()].concat();
            let path = write_bytes(&dir, "decisions.log", &bytes);
            let err = verify(&[&path], &log.checkpoints).unwrap_err();
            assert!(
                matches!(
                    err,
                    Broken::Parse { .. } | Broken::LineTooLong { .. } | Broken::BlankLine { .. }
                ),
                "{name}: {err}"
            );
            assert_eq!(err.position().unwrap().line, 11, "{name}: {err}");
        }

        // A file that is nothing but noise, without any newline.
        let noise: Vec<u8> = (0..3 * MAX_LINE_BYTES)
            .map(|i| match (i * 7 + 3) as u8 {
                b'\n' => 0xff,
                b => b,
            })
            .collect();
        let path = write_bytes(&dir, "noise.log", &noise);
        let err = verify(&[&path], &[]).unwrap_err();
        assert!(matches!(err, Broken::LineTooLong { .. }), "{err}");
        let path = write_bytes(&dir, "short-noise.log", &noise[..1000]);
        let err = verify(&[&path], &[]).unwrap_err();
        assert!(matches!(err, Broken::Parse { .. }), "{err}");
    }

    #[test]
    fn final_newline_is_optional_but_blank_lines_are_not_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(20, None);
        let joined = log.lines.join("\n");
        let path = write_bytes(&dir, "no-final-newline.log", joined.as_bytes());
        assert_eq!(verify(&[&path], &log.checkpoints).unwrap().lines, 21);

        let path = write_bytes(
            &dir,
            "trailing-blank.log",
            format!("{joined}\n\n").as_bytes(),
        );
        match verify(&[&path], &[]).unwrap_err() {
            Broken::BlankLine { at } => assert_eq!(at.line, 22),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn crlf_line_endings_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let log = build(5, None);
        let path = write_bytes(
            &dir,
            "dos.log",
            format!("{}\r\n", log.lines.join("\r\n")).as_bytes(),
        );
        let err = verify(&[&path], &[]).unwrap_err();
        assert_eq!(err.position().unwrap().line, 1);
        assert!(err.to_string().contains("CRLF"), "{err}");
    }

    #[test]
    fn empty_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_bytes(&dir, "empty.log", b"");
        assert!(matches!(verify(&[&path], &[]).unwrap_err(), Broken::Empty));
        let missing = dir.path().join("missing.log");
        let err = verify(&[&missing], &[]).unwrap_err();
        assert!(matches!(err, Broken::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing.log"), "{err}");
    }

    #[test]
    fn second_chain_in_the_same_log_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = build(30, None).lines;
        let (_, genesis) = Chain::start(ID, time(100)).unwrap();
        lines.push(genesis);
        let path = write(&dir, "decisions.log", &lines);
        let (at, reason) = malformed(verify(&[&path], &[]).unwrap_err());
        assert_eq!(at.line, 32);
        assert!(reason.contains("second chain"), "{reason}");
    }

    #[test]
    fn lines_of_another_chain_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut chain, first) = Chain::start(ID, time(0)).unwrap();
        let second = chain.append(Kind::POD_DENIED, Map::new(), time(1));
        let (_, other) = Chain::resume("us-east/enclave-operator", &chain.head(), time(2)).unwrap();
        let path = write(&dir, "decisions.log", &[first, second, other]);
        match verify(&[&path], &[]).unwrap_err() {
            Broken::ChainChanged { at, found, .. } => {
                assert_eq!(at.line, 3);
                assert_eq!(found, "us-east/enclave-operator");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn resumed_record_must_name_the_checkpoint_it_continues() {
        let (mut chain, first) = Chain::start(ID, time(0)).unwrap();
        let second = chain.append(Kind::POD_DENIED, Map::new(), time(1));
        let old = Checkpoint {
            seq: 0,
            hash: Digest::of(first.as_bytes()),
            time: time(0),
        };
        // A resume line claiming an older checkpoint than the one its prev continues.
        let (_, resumed) = Chain::resume(ID, &chain.head(), time(2)).unwrap();
        let lying = resumed.replace(
            &format!(
                "\"checkpoint\":{{\"hash\":\"{}\",\"seq\":1",
                chain.head().hash
            ),
            &format!("\"checkpoint\":{{\"hash\":\"{}\",\"seq\":0", old.hash),
        );
        assert_ne!(lying, resumed);
        let text = [first, second, lying].join("\n");
        let (at, reason) =
            malformed(verify_readers([("log", Cursor::new(text))], &[]).unwrap_err());
        assert_eq!(at.line, 3);
        assert!(
            reason.contains("ChainResumed names checkpoint seq 0"),
            "{reason}"
        );
    }

    #[test]
    fn checkpoints_are_read_from_a_json_array_or_json_lines() {
        let log = build(120, None);
        let array = serde_json::to_string_pretty(&log.checkpoints).unwrap();
        assert_eq!(checkpoints_from_json(&array).unwrap(), log.checkpoints);
        let lines: Vec<String> = log
            .checkpoints
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        let jsonl = format!("{}\n\n", lines.join("\n"));
        assert_eq!(checkpoints_from_json(&jsonl).unwrap(), log.checkpoints);
        assert!(checkpoints_from_json("").unwrap().is_empty());
        match checkpoints_from_json(&format!("{}\n{{\"seq\":1}}\n", lines[0])).unwrap_err() {
            CheckpointsError::Line { line, .. } => assert_eq!(line, 2),
            other => panic!("unexpected {other}"),
        }
        assert!(matches!(
            checkpoints_from_json("[{\"seq\":\"x\"}]").unwrap_err(),
            CheckpointsError::Array(_)
        ));
    }

    /// One step of a writer's life, for the property tests.
    #[derive(Clone, Debug)]
    enum Op {
        Append(usize, Map<String, Value>),
        Lost(u64, String),
        Checkpoint,
        Resume,
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..8usize, prop::collection::btree_map("[a-zA-Z_]{1,8}", json_value(), 0..4))
                .prop_map(|(k, m)| Op::Append(k, m.into_iter().collect())),
            1 => (any::<u64>(), ".{0,12}").prop_map(|(n, r)| Op::Lost(n, r)),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Resume),
        ]
    }

    /// Runs the ops; returns the log's bytes and the checkpoints, the last of which is
    /// the final head (an operator writes one at least every minute, and without one
    /// the last line could be edited undetectably).
    fn run(ops: &[Op]) -> (Vec<u8>, Vec<Checkpoint>, u64) {
        let kinds = [
            Kind::POD_MUTATED,
            Kind::POD_DENIED,
            Kind::POD_EVICTED,
            Kind::POD_BLOCKED,
            Kind::ACCESS_ALLOWED,
            Kind::ACCESS_DENIED,
            Kind::NETWORK_POLICY_HEALED,
            Kind::EXPOSURE_FOUND,
        ];
        let (mut chain, first) = Chain::start("proptest \"chain\" ✓", time(0)).unwrap();
        let mut lines = vec![first];
        let mut checkpoints = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let now = time(u64::try_from(i).unwrap() + 1)
                .checked_add(jiff::SignedDuration::from_nanos(
                    i64::try_from(i).unwrap() * 1_001,
                ))
                .unwrap();
            match op {
                Op::Append(k, fields) => {
                    lines.push(chain.append(kinds[*k].clone(), fields.clone(), now))
                }
                Op::Lost(n, reason) => lines.push(chain.records_lost(*n, reason, now)),
                Op::Checkpoint => checkpoints.push(chain.head()),
                Op::Resume => {
                    let head = chain.head();
                    checkpoints.push(head.clone());
                    let (resumed, line) = Chain::resume(chain.id(), &head, now).unwrap();
                    chain = resumed;
                    lines.push(line);
                }
            }
        }
        checkpoints.push(chain.head());
        let bytes = lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        (bytes, checkpoints, u64::try_from(lines.len()).unwrap())
    }

    proptest! {
        #[test]
        fn any_sequence_of_appends_verifies(ops in prop::collection::vec(op(), 0..40)) {
            let (bytes, checkpoints, lines) = run(&ops);
            let report = verify_readers([("log", Cursor::new(bytes))], &checkpoints).unwrap();
            prop_assert_eq!(report.lines, lines);
            prop_assert_eq!(report.last_seq, lines - 1);
            prop_assert_eq!(report.kinds.values().sum::<u64>(), lines);
            prop_assert_eq!(report.checkpoints_matched.len(), checkpoints.len());
        }

        #[test]
        fn any_single_byte_change_is_caught_at_or_before_the_changed_line(
            ops in prop::collection::vec(op(), 0..25),
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let (mut bytes, checkpoints, _) = run(&ops);
            let index = index.index(bytes.len());
            prop_assume!(bytes[index] != byte);
            bytes[index] = byte;
            let changed_line = 1 + bytes[..index].iter().filter(|b| **b == b'\n').count() as u64;
            let err = verify_readers([("log", Cursor::new(bytes))], &checkpoints).unwrap_err();
            let at = err.position().cloned();
            prop_assert!(at.is_some(), "no position in {}", err);
            prop_assert!(at.unwrap().line <= changed_line, "{} named after line {}", err, changed_line);
        }
    }
}
