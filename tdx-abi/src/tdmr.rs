//! TDMR_INFO, reserved areas and CMR_INFO: how the host describes TDX-usable physical memory
//! to the module (TDH.SYS.CONFIG) and how the module reports convertible memory.
//!
//! Layouts follow `tdmr_info_entry_t` and `cmr_info_entry_t` of module 1.5.01; every field
//! offset is checked at compile time and in the tests.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Maximum number of TDMRs of module 1.5.01 (`MAX_TDMRS` metadata field).
pub const MAX_TDMRS: usize = 64;
/// Reserved areas per TDMR of module 1.5.01 (`MAX_RESERVED_PER_TDMR` metadata field).
pub const MAX_RESERVED_PER_TDMR: usize = 16;
/// Maximum number of CMRs (`MAX_CMR`).
pub const MAX_CMRS: usize = 32;
/// Required alignment of each TDMR_INFO in physical memory.
pub const TDMR_INFO_ALIGNMENT: u64 = 512;
/// Required alignment of the array of TDMR_INFO physical addresses passed to TDH.SYS.CONFIG.
pub const TDMR_INFO_PA_ARRAY_ALIGNMENT: u64 = 512;
/// TDMR base and size granularity (1 GiB).
pub const TDMR_ALIGNMENT: u64 = 1 << 30;
/// PAMT base/size and reserved-area granularity (4 KiB).
pub const TDMR_PAGE_ALIGNMENT: u64 = 1 << 12;
/// Size of one PAMT entry for each page size in module 1.5.01 (`PAMT_*_ENTRY_SIZE`).
pub const PAMT_ENTRY_SIZE: u64 = 16;

/// One reserved area of a TDMR (16 bytes): a 4 KiB-granular range, relative to the TDMR base,
/// that the module does not manage. A `size` of 0 ends the list.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TdmrReservedArea {
    /// Offset from the TDMR base (4 KiB aligned).
    pub offset: u64,
    /// Size in bytes (4 KiB aligned); 0 = unused slot, end of list.
    pub size: u64,
}

/// TDMR_INFO (`tdmr_info_entry_t`): one Trust Domain Memory Region with its three PAMT blocks
/// and its reserved areas. 320 bytes with [`MAX_RESERVED_PER_TDMR`] = 16; each instance must be
/// placed [`TDMR_INFO_ALIGNMENT`]-aligned in physical memory.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TdmrInfo {
    /// TDMR_BASE: 1 GiB aligned physical base.
    pub tdmr_base: u64,
    /// TDMR_SIZE: 1 GiB multiple.
    pub tdmr_size: u64,
    /// PAMT_1G_BASE.
    pub pamt_1g_base: u64,
    /// PAMT_1G_SIZE.
    pub pamt_1g_size: u64,
    /// PAMT_2M_BASE.
    pub pamt_2m_base: u64,
    /// PAMT_2M_SIZE.
    pub pamt_2m_size: u64,
    /// PAMT_4K_BASE.
    pub pamt_4k_base: u64,
    /// PAMT_4K_SIZE.
    pub pamt_4k_size: u64,
    /// RESERVED_AREAS, sorted ascending by offset, unused slots zero.
    pub reserved_areas: [TdmrReservedArea; MAX_RESERVED_PER_TDMR],
}

impl TdmrInfo {
    /// Physical end (exclusive) of the TDMR, or `None` on overflow.
    pub const fn end(&self) -> Option<u64> {
        self.tdmr_base.checked_add(self.tdmr_size)
    }

    /// The used reserved areas (those before the first zero-sized slot).
    pub fn used_reserved_areas(&self) -> &[TdmrReservedArea] {
        let n = self
            .reserved_areas
            .iter()
            .position(|a| a.size == 0)
            .unwrap_or(MAX_RESERVED_PER_TDMR);
        &self.reserved_areas[..n]
    }
}

/// Size in bytes of the PAMT for one page size: `(tdmr_size >> page_shift) * entry_size`,
/// rounded up to 4 KiB (as Linux's `tdmr_get_pamt_sz` and the module compute it).
/// Returns `None` on arithmetic overflow.
pub const fn pamt_size(tdmr_size: u64, page_shift: u32, entry_size: u64) -> Option<u64> {
    let entries = tdmr_size >> page_shift;
    let bytes = match entries.checked_mul(entry_size) {
        Some(b) => b,
        None => return None,
    };
    match bytes.checked_add(TDMR_PAGE_ALIGNMENT - 1) {
        Some(b) => Some(b & !(TDMR_PAGE_ALIGNMENT - 1)),
        None => None,
    }
}

/// One Convertible Memory Range (CMR_INFO entry, 16 bytes). A size of 0 marks a null entry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CmrInfoEntry {
    /// CMR_BASE (4 KiB aligned).
    pub cmr_base: u64,
    /// CMR_SIZE (4 KiB aligned, 0 = null entry).
    pub cmr_size: u64,
}

impl CmrInfoEntry {
    /// Whether `[base, base + size)` lies completely inside this CMR.
    pub const fn contains(&self, base: u64, size: u64) -> bool {
        let end = match base.checked_add(size) {
            Some(e) => e,
            None => return false,
        };
        let cmr_end = match self.cmr_base.checked_add(self.cmr_size) {
            Some(e) => e,
            None => return false,
        };
        self.cmr_size != 0 && base >= self.cmr_base && end <= cmr_end
    }
}

/// The CMR_INFO array returned by TDH.SYS.INFO (32 entries, 512 bytes, 512-byte aligned).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CmrInfo {
    /// The entries; unused ones are zero.
    pub entries: [CmrInfoEntry; MAX_CMRS],
}

const _: () = {
    assert!(size_of::<TdmrReservedArea>() == 16);
    assert!(size_of::<TdmrInfo>() == 64 + 16 * MAX_RESERVED_PER_TDMR);
    assert!(offset_of!(TdmrInfo, tdmr_base) == 0);
    assert!(offset_of!(TdmrInfo, tdmr_size) == 8);
    assert!(offset_of!(TdmrInfo, pamt_1g_base) == 16);
    assert!(offset_of!(TdmrInfo, pamt_1g_size) == 24);
    assert!(offset_of!(TdmrInfo, pamt_2m_base) == 32);
    assert!(offset_of!(TdmrInfo, pamt_2m_size) == 40);
    assert!(offset_of!(TdmrInfo, pamt_4k_base) == 48);
    assert!(offset_of!(TdmrInfo, pamt_4k_size) == 56);
    assert!(offset_of!(TdmrInfo, reserved_areas) == 64);
    assert!(size_of::<CmrInfoEntry>() == 16);
    assert!(size_of::<CmrInfo>() == 512);
};

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn tdmr_info_layout_and_bytes() {
        assert_eq!(size_of::<TdmrInfo>(), 320);
        let mut t = TdmrInfo {
            tdmr_base: 1 << 30,
            tdmr_size: 2 << 30,
            pamt_4k_base: 0x1000,
            ..Default::default()
        };
        t.reserved_areas[0] = TdmrReservedArea {
            offset: 0x2000,
            size: 0x3000,
        };
        let b = t.as_bytes();
        assert_eq!(&b[0..8], &(1u64 << 30).to_le_bytes());
        assert_eq!(&b[8..16], &(2u64 << 30).to_le_bytes());
        assert_eq!(&b[48..56], &0x1000u64.to_le_bytes());
        assert_eq!(&b[64..72], &0x2000u64.to_le_bytes());
        assert_eq!(&b[72..80], &0x3000u64.to_le_bytes());
        assert_eq!(t.used_reserved_areas().len(), 1);
        let back = TdmrInfo::read_from_bytes(b).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn pamt_sizes_match_fact_sheet_example() {
        // A 1 GiB TDMR: 4 MiB of 4K PAMT, 8 KiB of 2M PAMT, 4 KiB (16 B rounded up) of 1G PAMT.
        assert_eq!(pamt_size(1 << 30, 12, 16), Some(4 << 20));
        assert_eq!(pamt_size(1 << 30, 21, 16), Some(8 << 10));
        assert_eq!(pamt_size(1 << 30, 30, 16), Some(4 << 10));
        assert_eq!(pamt_size(u64::MAX, 12, 1 << 20), None);
    }

    #[test]
    fn cmr_contains() {
        let c = CmrInfoEntry {
            cmr_base: 0x10_0000,
            cmr_size: 0x10_0000,
        };
        assert!(c.contains(0x10_0000, 0x1000));
        assert!(c.contains(0x1f_f000, 0x1000));
        assert!(!c.contains(0x1f_f000, 0x2000));
        assert!(!c.contains(u64::MAX, 2));
        assert!(!CmrInfoEntry::default().contains(0, 0));
    }
}
