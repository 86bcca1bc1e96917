//! Attempts through kubectl that a test expects may be refused: the refusal (or its
//! absence) is read from what kubectl says, on either stream.

use super::kubectl;

/// kubectl's combined output (stdout, then stderr) and whether it succeeded.
pub fn kubectl_outcome(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let out = kubectl(args, stdin);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// kubectl's combined output alone; the command may fail.
pub fn attempt(args: &[&str]) -> String {
    kubectl_outcome(args, None).1
}

/// `kubectl <args>` as the user `who` names (`["--as", "mallory"]`, with any
/// `--as-group`), given ten seconds, then `-- <command>` when there is one: an attempt
/// through a door, its combined output.
pub fn attempt_as(who: &[&str], args: &[&str], command: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(who);
    all.push("--request-timeout=10s");
    if !command.is_empty() {
        all.push("--");
        all.extend_from_slice(command);
    }
    attempt(&all)
}
