//! Names, labels and constants of what the operator writes: a leaf module that every
//! other module may use and that uses none of them.
//!
//! Generated names are derived from user-chosen names (a ResidencyPolicy may be named
//! with up to 253 characters), so every generated name goes through [`bounded`], which
//! keeps it within the limit of its kind and unique by a hash of the full name.

use sha2::{Digest, Sha256};

/// The field manager of every write the operator makes (server-side apply): one
/// constant, so that ownership of fields never flips between our own writes.
pub const FIELD_MANAGER: &str = "enclave-operator";

/// `app.kubernetes.io/managed-by` on everything the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// On generated objects: the ResidencyPolicy they belong to, as a label value (see
/// [`label_value`]); the full name is in the owner reference or [`POLICY_ANNOTATION`].
pub const POLICY_LABEL: &str = "enclave.dev/policy";

/// On pods (and DaemonSet templates): the enforcing policies that placed them, sorted
/// and comma-separated. Informational only: no decision reads it back.
pub const POLICY_ANNOTATION: &str = "enclave.dev/policy";

/// On the objects a volume move creates (its mover pods, and a claim it recreates on the
/// original volume when rolling back): the VolumeMigration's name. Objects carrying it
/// are left alone by every policy's admission (an object selector) and are never in a
/// policy's pod scope, because the sender must run next to a volume outside the
/// enclave. Only the operator can set it: the chart's ValidatingAdmissionPolicy
/// `<release>-volume-move-label` refuses it (added or changed) from anyone else, so a
/// tenant cannot use it to step outside the enclave.
pub const VOLUME_MIGRATION_LABEL: &str = "enclave.dev/volume-migration";

/// The API group of the operator's resources.
pub const GROUP: &str = "enclave.dev";

/// The longest name of most objects (a DNS subdomain).
pub const MAX_NAME: usize = 253;

/// The longest label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// The longest note an Event may carry.
pub const MAX_EVENT_NOTE: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, with an ellipsis when cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str("...");
    text
}

/// The first 10 hex digits of the SHA-256 of `text`: short, stable across releases and
/// processes (unlike `DefaultHasher`), and collision-free in practice for names.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..5])
}

/// `prefix + name + suffix` when it fits in `max` characters; otherwise the name is cut
/// and a hash of the whole name inserted, so that two long names sharing a prefix still
/// get different results. The cut never leaves a `-` or `.` before the hash, so a DNS
/// subdomain stays one. `prefix` and `suffix` must leave room for the hash.
pub fn bounded(prefix: &str, name: &str, suffix: &str, max: usize) -> String {
    let whole = format!("{prefix}{name}{suffix}");
    if whole.len() <= max {
        return whole;
    }
    let hash = short_hash(name);
    let room = max.saturating_sub(prefix.len() + suffix.len() + hash.len() + 1);
    // Names are ASCII (DNS subdomains), but stay on a char boundary whatever comes in.
    let mut cut = room.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = name[..cut].trim_end_matches(['-', '.']);
    if head.is_empty() {
        format!("{prefix}{hash}{suffix}")
    } else {
        format!("{prefix}{head}-{hash}{suffix}")
    }
}

/// A name as a label value (at most 63 characters, alphanumeric at both ends).
pub fn label_value(name: &str) -> String {
    bounded("", name, "", MAX_LABEL_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_ones_are_cut_with_a_hash() {
        assert_eq!(bounded("p-", "eu", ".x", 253), "p-eu.x");
        let long = "a".repeat(240) + "-tail";
        let other = "a".repeat(240) + "-else";
        let one = bounded("pods.", &long, ".policies.enclave.dev", 253);
        let two = bounded("pods.", &other, ".policies.enclave.dev", 253);
        assert!(one.len() <= 253 && two.len() <= 253, "{}", one.len());
        assert_ne!(one, two, "names sharing a long prefix stay distinct");
        assert!(one.starts_with("pods.aaa") && one.ends_with(".policies.enclave.dev"));
        assert_eq!(one, bounded("pods.", &long, ".policies.enclave.dev", 253));
    }

    #[test]
    fn a_cut_never_ends_in_a_separator() {
        let name = format!("{}-{}", "a".repeat(50), "b".repeat(40));
        let value = label_value(&name);
        assert!(value.len() <= 63, "{value}");
        assert!(!value.contains("--") && !value.contains("-."), "{value}");
        assert!(
            value
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("é".repeat(600), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."));
    }

    #[test]
    fn the_hash_is_stable() {
        // A release that changed it would orphan every generated object.
        assert_eq!(short_hash("eu-user-data"), short_hash("eu-user-data"));
        assert_eq!(short_hash("eu-user-data").len(), 10);
    }
}
