//! Random SEAMCALL/TDCALL sequences against the emulated TDX module: the module must never
//! panic, its invariants must hold after every step (no page owned twice, PAMT and S-EPT
//! agree), and a full teardown must leave every page PT_NDA and every guest HKID free.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod support {
    include!("../../tdx-host/tests/support/seamcall_interp.rs");
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = support::run_sequence(&mut support::Bytes(data)) {
        panic!("{e}");
    }
});
