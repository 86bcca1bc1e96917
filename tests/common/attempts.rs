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
