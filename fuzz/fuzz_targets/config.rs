//! The config loader: TOML text → parsed and validated `Config`, as
//! `schleuse check-config` and start-up see it. A config that passes
//! validation must also give the values start-up derives from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = schleuse::fuzzing::config(text) {
        let _ = config.admin.listen_addr();
        let _ = config.attachments.link_url("token");
        let _ = config.file_name();
        let _ = format!("{config:?}");
    }
});
