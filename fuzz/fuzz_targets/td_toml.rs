//! Feeds arbitrary text to the td.toml parser: it may refuse, never panic, and what it accepts
//! must hold the documented bounds.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tdx_vmm::config::{TdConfig, MAX_MEMORY, MAX_VCPUS, MEMORY_ALIGN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match TdConfig::parse(text, Path::new("td.toml"), Path::new("/base")) {
        Ok(c) => {
            assert!(c.memory > 0 && c.memory <= MAX_MEMORY && c.memory % MEMORY_ALIGN == 0);
            assert!(c.vcpus >= 1 && c.vcpus <= MAX_VCPUS);
            assert!(c.disks.len() + c.vhost_user_blk.len() <= 8);
            assert!(c.boot.path().is_absolute());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
