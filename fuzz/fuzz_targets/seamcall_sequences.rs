//! Fuzzes sequences of host SEAMCALLs against the emulated TDX module.
//!
//! Each input gets a fresh small platform (64 MiB, 1 package × 2 LPs, HKIDs 32..48, brought up
//! through the host driver) and is interpreted as at most 256 steps: a leaf from the host menu
//! (or a raw leaf number), an LP, and operands aimed at real objects (pool pages for
//! TDR/TDCX/TDVPR/SEPT/data, GPAs with levels, HKIDs, the TD_PARAMS page) or raw values, plus
//! short well-formed macros that drive a TD into deep states. After every call the emulator's
//! invariant checker must pass; at the end every TD is torn down and every page the harness
//! named must be PT_NDA again and every TD HKID FREE. Any panic is a finding.
//!
//! The interpreter is shared with `tdx-host/tests/seamcall_stress.rs`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run seamcall_sequences -- -max_total_time=60`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod interp {
    include!("../../tdx-host/tests/support/seamcall_interp.rs");
}

/// Steps per input.
const MAX_STEPS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut h = interp::Harness::new();
    h.run(&mut interp::SliceSource(data), MAX_STEPS);
});
