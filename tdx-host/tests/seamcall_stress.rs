//! Random SEAMCALL/TDCALL sequences (fixed seeds) against the emulated module with the
//! invariant checker after every step and a leak check after a full teardown. The same
//! interpreter is the `seamcall_sequences` fuzz target (`scripts/fuzz.sh`).

#[allow(dead_code)]
mod support {
    include!("support/seamcall_interp.rs");
}

use support::{run_sequence, Prng, MAX_STEPS};

#[test]
fn ten_thousand_random_steps_keep_invariants_and_leak_nothing() {
    let mut total = 0;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    while total < 10_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut c = Prng {
            state: seed | 1,
            left: MAX_STEPS * 8,
        };
        match run_sequence(&mut c) {
            Ok(steps) => total += steps.max(1),
            Err(e) => panic!("seed {seed:#x}: {e}"),
        }
    }
}
