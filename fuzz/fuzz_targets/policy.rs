//! Policy sets with countersign's annotations (@id, @approval, @quorum, @expires,
//! @grant_ttl): parsing and checking never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::policy::PolicyEngine;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(engine) = PolicyEngine::new(text) {
        let _ = engine.policy_ids();
    }
});
