//! `POST /v1/actions` and `POST /v1/check` bodies: validation never panics, and an accepted
//! request has a digest and re-parses from its own JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::model::ActionRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ActionRequest::parse(data) {
        let digest = req.digest().expect("an accepted request has a digest");
        let _ = req.body_hash();
        assert!(!digest.is_empty());
    }
});
