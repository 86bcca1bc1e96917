//! What a mover pod says when it ends: one JSON object in its termination message,
//! written by the mover and parsed by the controller (pure, both ways).

use serde::{Deserialize, Serialize};

/// The kubelet keeps at most 4096 bytes of a termination message; the report stays
/// below, with room to spare.
pub const REPORT_LIMIT: usize = 4000;

/// One side's outcome of a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    /// Content bytes rsync transferred (sender; 0 on the receiver of a copy pass, which
    /// does not see rsync's statistics).
    pub bytes: u64,
    /// Regular files rsync transferred (sender; 0 on the receiver of a copy pass).
    pub files: u64,
    /// `bytes` over the time rsync ran.
    pub bytes_per_second: u64,
    /// Verify pass: this side's manifest root hash (64 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// Verify pass, receiver, on a mismatch: the first path where the manifests differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<String>,
    /// One line: what happened, or what failed with rsync's last error line.
    #[serde(default)]
    pub message: String,
}

/// Why a termination message is not a mover's report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error(
        "the termination message is not a mover report (a JSON object with bytes, files, bytesPerSecond, optional rootHash, firstDifference, message): {0}"
    )]
    Json(String),
    #[error("rootHash: {0:?} is not 64 lowercase hex digits")]
    RootHash(String),
}

/// Reads a mover's termination message (`containerStatuses[].state.terminated.message`).
pub fn parse_report(text: &str) -> Result<Report, ReportError> {
    let report: Report =
        serde_json::from_str(text.trim()).map_err(|e| ReportError::Json(e.to_string()))?;
    if let Some(hash) = &report.root_hash
        && !(hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    {
        return Err(ReportError::RootHash(hash.clone()));
    }
    Ok(report)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
}

impl Report {
    /// The report as one JSON line of at most [`REPORT_LIMIT`] bytes: the message on one
    /// line and cut first, then the first difference.
    pub fn encode(&self) -> String {
        let mut report = self.clone();
        report.message = report.message.replace(['\n', '\r'], " ");
        for _ in 0..2 {
            let text = serde_json::to_string(&report).unwrap_or_default();
            if text.len() <= REPORT_LIMIT {
                return text;
            }
            let over = text.len() - REPORT_LIMIT;
            // JSON escaping can make a byte of the message up to 6 of the report.
            let keep = report.message.len().saturating_sub(over * 6 + 16);
            truncate(&mut report.message, keep);
            if let Some(difference) = &mut report.first_difference {
                truncate(difference, 1024);
            }
        }
        serde_json::to_string(&report).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips() {
        let report = Report {
            bytes: 12,
            files: 3,
            bytes_per_second: 4,
            root_hash: Some("ab".repeat(32)),
            first_difference: Some("a/b: sha256 differs".into()),
            message: "manifests differ".into(),
        };
        let text = report.encode();
        assert!(text.contains("\"bytesPerSecond\":4"), "{text}");
        assert!(text.contains("\"rootHash\""), "{text}");
        assert_eq!(parse_report(&text), Ok(report));
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let report = parse_report(r#"{"bytes":1,"files":2,"bytesPerSecond":3}"#).unwrap();
        assert_eq!(
            (report.bytes, report.files, report.bytes_per_second),
            (1, 2, 3)
        );
        assert_eq!(report.root_hash, None);
        assert_eq!(report.message, "");
    }

    #[test]
    fn bad_reports_are_refused_naming_what_is_wrong() {
        let error = parse_report("rsync error: connection reset").unwrap_err();
        assert!(error.to_string().contains("not a mover report"), "{error}");
        let error = parse_report(r#"{"bytes":-1,"files":0,"bytesPerSecond":0}"#).unwrap_err();
        assert!(error.to_string().contains("bytes"), "{error}");
        let error = parse_report(r#"{"bytes":1,"files":0,"bytesPerSecond":0,"rootHash":"ABC"}"#)
            .unwrap_err();
        assert_eq!(error, ReportError::RootHash("ABC".into()));
        let error =
            parse_report(r#"{"bytes":1,"files":0,"bytesPerSecond":0,"extra":1}"#).unwrap_err();
        assert!(error.to_string().contains("extra"), "{error}");
    }

    #[test]
    fn a_long_message_is_cut_below_the_kubelets_limit() {
        let report = Report {
            message: "\u{1}é\"x\n".repeat(5000),
            first_difference: Some("p".repeat(10_000)),
            root_hash: Some("0".repeat(64)),
            ..Report::default()
        };
        let text = report.encode();
        assert!(text.len() <= REPORT_LIMIT, "{}", text.len());
        assert!(!text.contains('\n'));
        let parsed = parse_report(&text).unwrap();
        assert!(parsed.message.ends_with("..."));
        assert_eq!(parsed.root_hash, report.root_hash);
    }
}
