//! `config/directory.toml`: parsing never panics; lookups on what parsed do not either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::directory::Directory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(dir) = Directory::parse(text) {
        let _ = dir.agent("etl-bot");
        let _ = dir.approver_by_slack("T1", "U1");
        let _ = dir.approver_by_teams("t", "a");
    }
});
