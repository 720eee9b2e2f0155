//! Feeds arbitrary bytes to the ELF payload loader and every payload it accepts to the plan
//! builder: neither may panic, and accepted segments must hold the loader's contract.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tdx_vmm::config::TdConfig;
use tdx_vmm::elf::{self, MAX_LOAD_SEGMENTS, MIN_LOAD_GPA};
use tdx_vmm::image;

const MEMORY: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = elf::parse(data, MEMORY) else { return };
    assert!(payload.segments.len() <= MAX_LOAD_SEGMENTS);
    for pair in payload.segments.windows(2) {
        assert!(pair[0].end() <= pair[1].gpa, "overlap accepted");
    }
    for s in &payload.segments {
        assert!(s.gpa >= MIN_LOAD_GPA && s.end() <= MEMORY && s.filesz <= s.memsz);
    }
    let config = TdConfig::parse(
        "payload = \"p.elf\"\nmemory = \"16M\"\n",
        Path::new("td.toml"),
        Path::new("/"),
    )
    .expect("fixed config");
    let plan = image::payload_plan(&config, data).expect("a parsed payload builds a plan");
    let _ = tdx_vmm::measure::mrtd(&plan).expect("a built plan measures");
});
