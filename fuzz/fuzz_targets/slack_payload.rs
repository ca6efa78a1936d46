//! Slack interaction bodies (`payload=<json>` forms) and the signature check over them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::{slack, Timestamp};

fuzz_target!(|data: &[u8]| {
    let _ = slack::parse_click(data);
    // A signature made with another secret never verifies.
    let now = Timestamp::from_unix(1_800_000_000);
    let sig = slack::signature("other", "1800000000", data);
    assert!(slack::verify("secret", Some("1800000000"), Some(&sig), data, now).is_err());
});
