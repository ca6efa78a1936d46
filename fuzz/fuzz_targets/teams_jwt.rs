//! Bot Framework tokens: decoding, the `kid` read before verification, RS256 verification
//! against a fixed key set, and the bearer header. Nothing made up verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::crypto::Jwks;
use shared::{teams, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = teams::bearer(Some(text));
    let _ = teams::token_kid(text);
    // The public half of a throwaway 2048-bit test key: a forged token must not verify.
    let jwks = Jwks::parse(include_str!("jwks.json")).expect("test key set");
    let now = Timestamp::from_unix(1_800_000_000);
    assert!(teams::verify_token(text, &jwks, "app", now).is_err());
});
