//! What the decision log says was refused, for the audit report (`--decision-log`):
//! every `PodDenied` line, counted by the engine that decided it, so that refusals by
//! the native engine (from the API server's audit events, see [`crate::auditsink`]) and
//! by the webhooks are reported side by side. Pure: lines in, a section out.
//!
//! The lines are read as given: whether the file is complete and unedited is what
//! `enclave-operator verify-log` proves against the checkpoints, and the report says so.

use std::{collections::BTreeMap, io::BufRead};

use serde::Serialize;
use serde_json::Value;

/// At most this many refusals are listed (all are counted): a report stays readable
/// whatever the size of the log.
pub const MAX_LISTED: usize = 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusals {
    /// The files read, as given.
    pub files: Vec<String>,
    /// Decision-log records read (lines with a `seq` and a `kind`).
    pub records: usize,
    /// Refusals (`PodDenied`) by engine: `native`, `webhook`, or `unknown` for lines
    /// written before records named their engine.
    pub by_engine: BTreeMap<String, usize>,
    /// The refusals, oldest first, at most [`MAX_LISTED`].
    pub refused: Vec<Refusal>,
    /// Refusals counted but not listed.
    pub not_listed: usize,
    /// Allowed access attempts per AccessGrant they went through (shown with the
    /// grants, not here).
    #[serde(skip)]
    pub grant_uses: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub time: String,
    pub chain: String,
    pub seq: u64,
    pub engine: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `Kind namespace/name`.
    pub object: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_string)
}

impl Refusals {
    /// Takes in one log's lines; `policies` (when not empty) keeps those policies' only.
    pub fn read(
        &mut self,
        name: &str,
        reader: impl BufRead,
        policies: &[String],
    ) -> std::io::Result<()> {
        self.files.push(name.to_string());
        for line in reader.lines() {
            let line = line?;
            // Lines that are not records (the operator's own log on the same stream)
            // are skipped, as verify-log does.
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let (Some(seq), Some(kind)) = (
                record.get("seq").and_then(Value::as_u64),
                record.get("kind").and_then(Value::as_str),
            ) else {
                continue;
            };
            self.records += 1;
            if matches!(kind, "AccessAllowed" | "AuthorizerNoOpinion") {
                super::grants::count_uses(&mut self.grant_uses, &record);
            }
            if kind != "PodDenied" {
                continue;
            }
            let fields = record.get("fields").cloned().unwrap_or(Value::Null);
            let policy = text(fields.get("policy"));
            if !policies.is_empty() && !policy.as_ref().is_some_and(|p| policies.contains(p)) {
                continue;
            }
            let engine = text(fields.get("engine")).unwrap_or_else(|| {
                // Webhook records name their webhook; older lines have no engine.
                if fields.get("webhook").is_some() {
                    "webhook"
                } else {
                    "unknown"
                }
                .into()
            });
            *self.by_engine.entry(engine.clone()).or_default() += 1;
            if self.refused.len() == MAX_LISTED {
                self.not_listed += 1;
                continue;
            }
            let object = fields.get("object").cloned().unwrap_or(Value::Null);
            let kind = text(object.get("kind")).unwrap_or_default();
            let name = text(object.get("name")).unwrap_or_default();
            let object = match text(object.get("namespace")) {
                Some(namespace) => format!("{kind} {namespace}/{name}"),
                None => format!("{kind} {name}"),
            };
            self.refused.push(Refusal {
                time: text(record.get("time")).unwrap_or_default(),
                chain: text(record.get("chain")).unwrap_or_default(),
                seq,
                engine,
                policy,
                object,
                message: text(fields.get("message")).unwrap_or_default(),
                user: text(fields.get("user")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"seq":0,"prev":"00","time":"2026-12-06T19:00:00Z","chain":"enclave-system/a","kind":"ChainStarted","fields":{}}
2026-12-06T19:00:01Z INFO not a record
{"seq":1,"prev":"aa","time":"2026-12-06T19:00:02Z","chain":"enclave-system/a","kind":"PodDenied","fields":{"engine":"native","policy":"eu","object":{"kind":"Pod","namespace":"shop","name":"db-0"},"message":"policy eu: pinned outside","user":"alice","auditID":"x"}}
{"seq":2,"prev":"bb","time":"2026-12-06T19:00:03Z","chain":"enclave-system/a","kind":"PodDenied","fields":{"webhook":"pods","policy":"us","object":{"kind":"Pod","namespace":"x","name":"y"},"message":"m"}}
{"seq":3,"prev":"cc","time":"2026-12-06T19:00:04Z","chain":"enclave-system/a","kind":"PodPlaced","fields":{"engine":"native","policy":"eu","object":{"kind":"Pod","namespace":"shop","name":"web"},"message":"placed"}}
"#;

    #[test]
    fn refusals_are_listed_and_counted_by_engine() {
        let mut refusals = Refusals::default();
        refusals.read("log", LOG.as_bytes(), &[]).expect("reads");
        assert_eq!(refusals.records, 4);
        assert_eq!(refusals.by_engine["native"], 1);
        assert_eq!(refusals.by_engine["webhook"], 1);
        assert_eq!(refusals.refused.len(), 2);
        let native = &refusals.refused[0];
        assert_eq!(native.object, "Pod shop/db-0");
        assert_eq!(native.engine, "native");
        assert_eq!(native.user.as_deref(), Some("alice"));
        assert_eq!(native.seq, 1);
    }

    #[test]
    fn only_the_policies_asked_for_and_a_bounded_list() {
        let mut refusals = Refusals::default();
        refusals
            .read("log", LOG.as_bytes(), &["eu".to_string()])
            .expect("reads");
        assert_eq!(refusals.refused.len(), 1);
        assert_eq!(refusals.by_engine.get("webhook"), None);

        let line = r#"{"seq":1,"kind":"PodDenied","fields":{"engine":"native","policy":"eu"}}"#;
        let many = format!("{line}\n").repeat(MAX_LISTED + 5);
        let mut refusals = Refusals::default();
        refusals.read("big", many.as_bytes(), &[]).expect("reads");
        assert_eq!(refusals.refused.len(), MAX_LISTED);
        assert_eq!(refusals.not_listed, 5);
        assert_eq!(refusals.by_engine["native"], MAX_LISTED + 5);
    }
}
