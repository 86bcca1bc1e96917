//! The command-line side of the evidence: where the decision log goes, and
//! `enclave-operator verify-log`.

use std::{io::BufRead, path::PathBuf, process::ExitCode};

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
pub fn is_record(line: &str) -> bool {
    line.starts_with("{\"seq\":")
}

fn check(args: &VerifyArgs) -> Result<verify::Report, String> {
    let checkpoints = read_checkpoints(&args.checkpoints)?;
    if !args.skip_other_lines {
        return verify::verify(&args.files, &checkpoints).map_err(|broken| broken.to_string());
    }
    let mut readers = Vec::new();
    for path in &args.files {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut kept = Vec::new();
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            if line.starts_with(b"{\"seq\":") {
                kept.extend_from_slice(&line);
                kept.push(b'\n');
            }
        }
        readers.push((path.display().to_string(), std::io::Cursor::new(kept)));
    }
    verify::verify_readers(readers, &checkpoints).map_err(|broken| broken.to_string())
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
