//! Feeds arbitrary bytes to every tdx-abi decoder of module- or guest-provided data: none may
//! panic, and every decoded value must re-encode to the same bits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdx_abi::gpa::GpaAndLevel;

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, byte) in b.iter_mut().enumerate() {
        *byte = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let v = u64_at(data, 0);
    if let Ok((gpa, level)) = GpaAndLevel::from_raw(v).decode() {
        assert_eq!(GpaAndLevel::new(gpa, level).map(|o| o.raw()), Ok(v));
    }
});
