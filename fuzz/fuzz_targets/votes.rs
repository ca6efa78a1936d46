//! Vote bodies: `POST /v1/actions/:id/decision` and the internal vote of every channel.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::model::DecisionBody;
use shared::vote::VoteRequest;

fuzz_target!(|data: &[u8]| {
    let _ = DecisionBody::parse(data);
    let _ = VoteRequest::parse(data);
});
