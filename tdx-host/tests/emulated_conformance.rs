//! The driver's conformance table (tests/conformance.rs, 54 wrong sequences) run against the
//! emulated module, brought up by the host driver exactly as on hardware.

#[path = "conformance.rs"]
#[allow(unused_imports)]
mod conformance;

use std::sync::Arc;

use tdx_host::driver::module::{LogicalCpu, PlatformDesc, RetryPolicy};
use tdx_host::driver::TdxModule;
use tdx_host::emulated::{EmulatedModule, LogicalProcessor, PlatformConfig};

/// A fresh two-package platform brought up by the driver.
fn fresh() -> TdxModule<LogicalProcessor, Arc<EmulatedModule>> {
    let m = EmulatedModule::new(PlatformConfig {
        num_packages: 2,
        ..PlatformConfig::default()
    })
    .expect("platform");
    let lps = (0..m.num_lps())
        .map(|i| LogicalCpu {
            seamcall: m.lp(i).expect("lp"),
            package: m.package_of(i),
        })
        .collect();
    let desc = PlatformDesc {
        usable_ranges: m
            .physical_memory()
            .cmrs()
            .iter()
            .map(|&(b, s)| (b, b + s))
            .collect(),
        first_tdx_hkid: 32,
        num_tdx_hkids: 16,
        hkid_shift: m.hkid_shift(),
    };
    TdxModule::init(lps, m, &desc, RetryPolicy::default()).expect("driver bring-up")
}

#[test]
fn conformance_table_on_the_emulated_module() {
    assert!(conformance::table().len() >= 40);
    let bad = conformance::run_table(fresh);
    for (name, want, got) in &bad {
        eprintln!("{name}: expected {want:#018x}, got {got:x?}");
    }
    assert!(bad.is_empty(), "{} of the cases differ", bad.len());
}
