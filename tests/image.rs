//! The container image: assembled without a container engine (`hack/image.sh`, umoci),
//! unpacked, and the operator started from its root filesystem with chroot as the
//! image's non-root user against the local control plane, until `/readyz` answers
//! (`hack/image-test.sh`). The image is of the debug build here (`IMAGE_PROFILE=dev`),
//! to keep `make test` within its time budget; `make image` packages the release build
//! the same way.

use std::process::Command;

#[test]
fn the_operator_starts_from_its_image_as_a_non_root_user() {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/image-test.sh"))
        .env("IMAGE_PROFILE", "dev")
        .output()
        .expect("run hack/image-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "image-test failed:\n{stderr}{stdout}");
    let ready = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("image-test: ready in "))
        .unwrap_or_else(|| panic!("no readiness line in {stdout}"));
    eprintln!("{ready}");
    // The chart's default reference is what the image was tagged with (the script
    // refuses otherwise), and the operator ran as 65532.
    assert!(
        ready.contains("ghcr.io/enclave-operator/enclave-operator:"),
        "{ready}"
    );
    assert!(stderr.contains("uid 65532"), "{stderr}");
}
