//! Audit exports (NDJSON records): the verifier never panics and never calls a made-up
//! export intact.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::audit::{verify_export, VerifyOptions};
use shared::crypto::{KeySet, SigningKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = KeySet::from(&SigningKey::from_seed(&[7; 32]));
    let report = verify_export(text, &keys, VerifyOptions::default());
    // Without the key, only an empty export can be intact.
    if report.ok() {
        assert_eq!(report.verified, 0, "{text:?}");
    }
});
