//! Bot Framework activities (after the token): parsing and the vote they carry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::teams;

fuzz_target!(|data: &[u8]| {
    if let Ok(activity) = teams::parse_activity(data) {
        let _ = activity.click();
        let _ = activity.identity();
        let claims = serde_json::json!({"serviceurl": activity.service_url});
        let _ = teams::check_activity(&claims, Some(&["msteams".to_string()]), &activity);
    }
});
