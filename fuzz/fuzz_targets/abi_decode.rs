//! Feeds arbitrary bytes to the tdx-abi decoders of module- or guest-provided values: none may
//! panic, and decoded values must re-encode to the same bits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fmt::Write;
use tdx_abi::gpa::GpaAndLevel;
use tdx_abi::metadata::MetadataList;
use tdx_abi::report::TdReport;
use tdx_abi::leaf::{LeafAndVersion, SeamcallLeaf, TdVmCallSubFunction, TdcallLeaf};
use tdx_abi::status::TdxStatus;

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, byte) in b.iter_mut().enumerate() {
        *byte = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let mut sink = String::new();
    let v = u64_at(data, 0);
    if let Ok((gpa, level)) = GpaAndLevel::from_raw(v).decode() {
        assert_eq!(GpaAndLevel::new(gpa, level).map(|o| o.raw()), Ok(v));
    }
    let s = TdxStatus::from_raw(u64_at(data, 1));
    let _ = write!(sink, "{s} {s:?} {:?} {:?}", s.detail(), s.disposition());
    assert_eq!(s.code().with_details(s.details_l2()).raw() & 0x0000_FFFF_FFFF_FFFF, s.raw() & 0x0000_FFFF_FFFF_FFFF);
    let rax = u64_at(data, 2);
    match LeafAndVersion::decode(rax) {
        Ok(w) => {
            assert_eq!(w.raw(), rax);
            let _ = write!(sink, "{} {}", SeamcallLeaf::from_raw(w.leaf()), TdcallLeaf::from_raw(w.leaf()));
        }
        Err(e) => assert!(rax >> 24 != 0, "{e}"),
    }
    let _ = write!(sink, "{}", TdVmCallSubFunction::from_raw(u64_at(data, 3)));
    // A TDH.SYS.RDALL list buffer as the module (or a hostile emulator) wrote it.
    if let Ok(list) = MetadataList::parse(data) {
        for item in list.iter().take(4096) {
            if item.is_err() {
                break;
            }
        }
    }
    // A TDREPORT handed out by a guest: only the exact size parses.
    match TdReport::from_bytes(data) {
        Ok(r) => assert_eq!(data.len(), 1024, "{:?}", r.td_info.attributes),
        Err(_) => assert_ne!(data.len(), 1024),
    }
});
