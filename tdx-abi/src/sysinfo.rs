//! TDSYSINFO_STRUCT, the TDX 1.0 module enumeration returned by TDH.SYS.INFO (§5.9).
//!
//! Module 1.5 hosts should prefer the global metadata ([`crate::metadata::sys`]); this layout
//! is kept for 1.0 modules and for the emulator.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::td_params::CpuidConfig;

/// Number of 24-byte CPUID_CONFIG entries that fit in TDSYSINFO_STRUCT (bytes 132..1020).
pub const MAX_CPUID_CONFIGS_IN_SYSINFO: usize = 37;

/// TDSYSINFO_STRUCT (`td_sys_info_t`, 1024 bytes, 1024-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(1024))]
pub struct TdSysInfo {
    /// ATTRIBUTES of the module (bit 31 = debug module).
    pub attributes: u32,
    /// VENDOR_ID (0x8086).
    pub vendor_id: u32,
    /// BUILD_DATE (yyyymmdd, decimal).
    pub build_date: u32,
    /// BUILD_NUM.
    pub build_num: u16,
    /// MINOR_VERSION.
    pub minor_version: u16,
    /// MAJOR_VERSION.
    pub major_version: u16,
    /// SYS_RD: 1 if TDH.SYS.RD is available (1.5).
    pub sys_rd: u8,
    /// Reserved.
    pub reserved_0: [u8; 13],
    /// MAX_TDMRS.
    pub max_tdmrs: u16,
    /// MAX_RESERVED_PER_TDMR.
    pub max_reserved_per_tdmr: u16,
    /// PAMT_ENTRY_SIZE.
    pub pamt_entry_size: u16,
    /// Reserved.
    pub reserved_1: [u8; 10],
    /// TDCS_BASE_SIZE in bytes.
    pub tdcs_base_size: u16,
    /// Reserved.
    pub reserved_2: [u8; 2],
    /// TDVPS_BASE_SIZE in bytes.
    pub tdvps_base_size: u16,
    /// TDVPS_XFAM_DEPENDENT_SIZE (boolean).
    pub tdvps_xfam_dependent_size: u8,
    /// Reserved.
    pub reserved_3: [u8; 9],
    /// ATTRIBUTES_FIXED0: an ATTRIBUTES bit may be 1 only if it is 1 here.
    pub attributes_fixed0: u64,
    /// ATTRIBUTES_FIXED1: an ATTRIBUTES bit must be 1 if it is 1 here.
    pub attributes_fixed1: u64,
    /// XFAM_FIXED0.
    pub xfam_fixed0: u64,
    /// XFAM_FIXED1.
    pub xfam_fixed1: u64,
    /// Reserved.
    pub reserved_4: [u8; 32],
    /// NUM_CPUID_CONFIG: number of valid entries in `cpuid_config`.
    pub num_cpuid_config: u32,
    /// CPUID_CONFIG list; entries at or beyond NUM_CPUID_CONFIG are reserved.
    pub cpuid_config: [CpuidConfig; MAX_CPUID_CONFIGS_IN_SYSINFO],
    /// Reserved tail.
    pub reserved_5: [u8; 4],
}

impl Default for TdSysInfo {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl TdSysInfo {
    /// The valid CPUID_CONFIG entries: the first `min(num_cpuid_config, 37)` (an out-of-range
    /// count from the module is clamped, never trusted).
    pub fn cpuid_configs(&self) -> &[CpuidConfig] {
        let n = (self.num_cpuid_config as usize).min(MAX_CPUID_CONFIGS_IN_SYSINFO);
        &self.cpuid_config[..n]
    }

    /// Whether the debug-module bit (ATTRIBUTES bit 31) is set.
    pub const fn is_debug_module(&self) -> bool {
        self.attributes & (1 << 31) != 0
    }
}

const _: () = {
    assert!(size_of::<TdSysInfo>() == 1024);
    assert!(offset_of!(TdSysInfo, attributes) == 0);
    assert!(offset_of!(TdSysInfo, vendor_id) == 4);
    assert!(offset_of!(TdSysInfo, build_date) == 8);
    assert!(offset_of!(TdSysInfo, build_num) == 12);
    assert!(offset_of!(TdSysInfo, minor_version) == 14);
    assert!(offset_of!(TdSysInfo, major_version) == 16);
    assert!(offset_of!(TdSysInfo, sys_rd) == 18);
    assert!(offset_of!(TdSysInfo, reserved_0) == 19);
    assert!(offset_of!(TdSysInfo, max_tdmrs) == 32);
    assert!(offset_of!(TdSysInfo, max_reserved_per_tdmr) == 34);
    assert!(offset_of!(TdSysInfo, pamt_entry_size) == 36);
    assert!(offset_of!(TdSysInfo, reserved_1) == 38);
    assert!(offset_of!(TdSysInfo, tdcs_base_size) == 48);
    assert!(offset_of!(TdSysInfo, reserved_2) == 50);
    assert!(offset_of!(TdSysInfo, tdvps_base_size) == 52);
    assert!(offset_of!(TdSysInfo, tdvps_xfam_dependent_size) == 54);
    assert!(offset_of!(TdSysInfo, reserved_3) == 55);
    assert!(offset_of!(TdSysInfo, attributes_fixed0) == 64);
    assert!(offset_of!(TdSysInfo, attributes_fixed1) == 72);
    assert!(offset_of!(TdSysInfo, xfam_fixed0) == 80);
    assert!(offset_of!(TdSysInfo, xfam_fixed1) == 88);
    assert!(offset_of!(TdSysInfo, reserved_4) == 96);
    assert!(offset_of!(TdSysInfo, num_cpuid_config) == 128);
    assert!(offset_of!(TdSysInfo, cpuid_config) == 132);
    assert!(offset_of!(TdSysInfo, reserved_5) == 1020);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_configs_is_bounded() {
        let mut b = [0u8; 1024];
        b[4..8].copy_from_slice(&0x8086u32.to_le_bytes());
        b[128..132].copy_from_slice(&2u32.to_le_bytes());
        b[132..136].copy_from_slice(&7u32.to_le_bytes());
        b[136..140].copy_from_slice(&1u32.to_le_bytes());
        b[156..160].copy_from_slice(&0xAu32.to_le_bytes());
        let mut s = TdSysInfo::read_from_bytes(&b).unwrap();
        assert_eq!(s.vendor_id, 0x8086);
        assert_eq!(s.cpuid_configs().len(), 2);
        assert_eq!(s.cpuid_configs()[0].leaf, 7);
        assert_eq!(s.cpuid_configs()[0].subleaf, 1);
        assert_eq!(s.cpuid_configs()[1].leaf, 0xA);
        s.num_cpuid_config = u32::MAX;
        assert_eq!(s.cpuid_configs().len(), 37);
        assert_eq!(s.as_bytes()[..128], b[..128]);
    }
}
