//! Grants presented to `POST /v1/grants/verify`: the body and the token; nothing made up
//! verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::crypto::{KeySet, SigningKey};
use shared::grant::{self, GrantVerifyRequest};
use shared::Timestamp;

fuzz_target!(|data: &[u8]| {
    let keys = KeySet::from(&SigningKey::from_seed(&[7; 32]));
    let now = Timestamp::from_unix(1_800_000_000);
    if let Ok(req) = GrantVerifyRequest::parse(data) {
        assert!(grant::verify_for(&req, &keys, now).is_err());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(grant::verify(text, &keys, now).is_err());
    }
});
