//! Any bytes as an AdmissionReview, through every admission handler: decoding and
//! deciding must never panic, and a review that parses gets an answer for its uid.
#![no_main]

use std::sync::OnceLock;

use enclave_operator::{
    admission::{ENTRIES, review},
    scope::StaticCatalog,
};
use libfuzzer_sys::fuzz_target;

fn catalog() -> &'static StaticCatalog {
    static CATALOG: OnceLock<StaticCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml")).expect("fixture")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(review::ReviewIn { request: Some(request) }) = serde_json::from_slice::<review::ReviewIn>(data) else {
        return;
    };
    for entry in ENTRIES {
        let answer = review::decide(entry.handler, catalog(), &request);
        assert_eq!(answer.review.response.uid, request.uid);
        let _ = serde_json::to_vec(&answer.review).expect("a response always encodes");
    }
});
