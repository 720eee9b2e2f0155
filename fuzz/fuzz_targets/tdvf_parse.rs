//! Feeds arbitrary bytes to the TDVF metadata parser as a firmware image, and every image it
//! accepts to the firmware plan builder: neither may panic, and what the parser accepts must
//! hold its documented invariants.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tdx_vmm::config::TdConfig;
use tdx_vmm::image;
use tdx_vmm::tdvf::{self, MAX_GPA, MAX_SECTIONS};

fuzz_target!(|data: &[u8]| {
    let Ok(meta) = tdvf::parse(data) else { return };
    assert!(!meta.sections.is_empty() && meta.sections.len() <= MAX_SECTIONS as usize);
    for s in &meta.sections {
        assert_eq!(s.memory_address % 4096, 0);
        assert_eq!(s.memory_data_size % 4096, 0);
        assert!(s.memory_end() <= MAX_GPA);
        assert!(u64::from(s.raw_data_size) <= s.memory_data_size);
        if s.section_type.has_raw_data() {
            assert!(s.raw_data(data).is_some());
        }
    }
    let config = TdConfig::parse(
        "firmware = \"fw.fd\"\nmemory = \"16M\"\n",
        Path::new("td.toml"),
        Path::new("/"),
    )
    .expect("fixed config");
    if let Ok(plan) = image::firmware_plan_with(&config, data, &meta) {
        for r in &plan.initial {
            assert_eq!(r.gpa % 4096, 0);
            assert_eq!(r.data.len() % 4096, 0);
        }
        let _ = tdx_vmm::measure::mrtd(&plan).expect("a built plan measures");
    }
});
