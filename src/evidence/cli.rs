//! The command-line side of the evidence: where the decision log goes, and
//! `enclave-operator verify-log`.

use std::{path::PathBuf, process::ExitCode};

use super::{chain::Checkpoint, verify};

/// Where the decision log goes.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Also append the decision log to this file (it always goes to stdout; the
    /// operator's own logs go to stderr).
    #[arg(long, env = "ENCLAVE_DECISION_LOG")]
    pub decision_log: Option<PathBuf>,
    /// The chain's identity; defaults to `<namespace>/<pod name or host name>`.
    #[arg(long, env = "ENCLAVE_CHAIN_ID")]
    pub chain_id: Option<String>,
    /// The chain of the controllers' decisions, written by whichever replica leads and
    /// continued by the next; defaults to `<namespace>/leader`.
    #[arg(long, env = "ENCLAVE_LEADER_CHAIN_ID")]
    pub leader_chain_id: Option<String>,
    /// Seconds between checkpoints of the chain's head to the cluster.
    #[arg(long, default_value_t = 60.0)]
    pub checkpoint_interval: f64,
}

/// `enclave-operator verify-log`.
#[derive(clap::Args, Clone, Debug)]
pub struct VerifyArgs {
    /// Log files of one chain, oldest first (a rotated log is several files).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Checkpoints to hold the log to: a JSON array or JSON lines, as kept in the
    /// `enclave-operator-checkpoints` ConfigMap.
    #[arg(long)]
    pub checkpoints: Vec<PathBuf>,
    /// Skip lines that are not chain records (for logs captured with `kubectl logs`,
    /// where the operator's own log lines are mixed in). Deleted or edited records are
    /// still found: the chain itself is checked.
    #[arg(long)]
    pub skip_other_lines: bool,
    /// Verify only the records of this chain (a log written by a leader holds its own
    /// chain and the leader chain; `kubectl logs` of several replicas hold several).
    #[arg(long)]
    pub chain: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn read_checkpoints(paths: &[PathBuf]) -> Result<Vec<Checkpoint>, String> {
    let mut all = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        all.extend(
            verify::checkpoints_from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        );
    }
    Ok(all)
}

/// A chain record line, as opposed to a log line of something else.
pub fn is_record(line: &[u8]) -> bool {
    line.starts_with(b"{\"seq\":")
}

fn check(args: &VerifyArgs) -> Result<verify::Report, String> {
    let checkpoints = read_checkpoints(&args.checkpoints)?;
    let keep = |line: &[u8]| {
        if !is_record(line) {
            // Not a record: skipped on request, else read (and reported as broken).
            return !args.skip_other_lines;
        }
        match &args.chain {
            None => true,
            Some(chain) => {
                #[derive(serde::Deserialize)]
                struct ChainOf {
                    chain: String,
                }
                // A record that does not parse is read, so that it is reported.
                serde_json::from_slice::<ChainOf>(line).map_or(true, |r| &r.chain == chain)
            }
        }
    };
    verify::verify_selected(&args.files, &checkpoints, &keep).map_err(|broken| broken.to_string())
}

/// Runs `verify-log`: exit 0 when the log is intact, 1 with the first broken line
/// named, 2 when it cannot be read.
pub fn verify(args: VerifyArgs) -> ExitCode {
    match check(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => eprintln!("error: {error}"),
                }
            } else {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("verify-log: {message}");
            ExitCode::from(1)
        }
    }
}
