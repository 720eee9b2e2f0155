//! TDMR and PAMT planning (the way Linux does it) and validation (the way `TDH.SYS.CONFIG`
//! does it).
//!
//! # Planner
//!
//! [`plan_tdmrs`] / [`plan_tdmrs_with_allocator`] reproduce Linux's `construct_tdmrs`
//! (`arch/x86/virt/vmx/tdx/tdx.c`):
//!
//! 1. **fill_out_tdmrs**: walk the TDX-usable regions in address order; each region is widened
//!    to 1 GiB boundaries; a region already covered by the current TDMR is skipped, a partially
//!    covered one starts the next TDMR at the current TDMR's end, otherwise a new TDMR is
//!    opened. Running past `MAX_TDMRS` fails ([`PlanError::TdmrsExhausted`]).
//! 2. **tdmrs_set_up_pamt_all**: per TDMR, the three PAMT sizes are
//!    `round_up((TDMR_SIZE >> shift) * entry_size, 4 KiB)` for shift 12 / 21 / 30, and they
//!    are allocated as **one** contiguous chunk laid out 4K PAMT, 2M PAMT, 1G PAMT. The
//!    preferred NUMA node is the node of the first region that ends above the TDMR base
//!    (node 0 if none).
//! 3. **tdmrs_populate_rsvd_areas_all**: per TDMR, one reserved area for every part of the
//!    TDMR not covered by usable memory (head gap, gaps between regions, tail gap), then one
//!    for the part of **every** TDMR's PAMT chunk that lies inside this TDMR, then the areas
//!    are sorted by offset. Adjacent areas are not merged. Running past
//!    `MAX_RESERVED_PER_TDMR` fails ([`PlanError::ReservedAreasExhausted`]).
//!
//! TDMR bounds, the hole reserved areas and the PAMT sizes are exactly Linux's. PAMT
//! *addresses* depend on the allocator, as in Linux (where they come from
//! `alloc_contig_pages` on the preferred node): the planner takes a [`PamtAllocator`]; the
//! default [`TopDownPamtAllocator`] is deterministic. Whatever the allocator returns is checked:
//! the chunk must be 4 KiB aligned, inside usable memory (which the planner has checked to be
//! inside the CMRs) and must not overlap another PAMT chunk.
//!
//! Departures from Linux, all of them input checks Linux gets from memblock for free or leaves
//! to `TDH.SYS.CONFIG`: regions may be given in any order (they are sorted; overlapping ones
//! are rejected), must be 4 KiB aligned, and every run of contiguous usable memory must lie in
//! one CMR (as the module merges CMRs, see [`area_in_cmrs`]). Linux also drops the first MiB
//! of memory before planning; callers pass the already-clipped TDX-usable list.
//!
//! # Validator
//!
//! [`validate`] performs the checks of `TDH.SYS.CONFIG` on the TDMR_INFO entries, in the order
//! of the module 1.5 source (`src/vmm_dispatcher/api_calls/tdh_sys_config.c`, `tdx_1.5`
//! branch), and reports the status the module would return ([`TdmrValidationError::status`]).

mod layout;
mod plan;
mod validate;

pub use layout::{LayoutError, TdmrPhysicalLayout};
pub use plan::{
    plan_tdmrs, plan_tdmrs_with_allocator, PamtAllocator, PamtRange, PamtRequest, PlanError,
    TdmrPlan, TdxMemoryMap, TopDownPamtAllocator, UsableRegion,
};
pub use validate::{
    area_in_cmrs, validate, TdmrValidationError, TdmrValidationErrorKind, OPERAND_ID_RDX,
};

use tdx_abi::gpa::PageSize;
use tdx_abi::tdmr::{pamt_size, MAX_RESERVED_PER_TDMR, MAX_TDMRS, PAMT_ENTRY_SIZE};

/// The maximum physical-address width of module 1.5 (`MAX_PA`): TDMR and PAMT addresses must be
/// below `2^52`.
pub const MODULE_MAX_PA_BITS: u8 = 52;

/// The page sizes in the order Linux lays out one PAMT chunk: 4K PAMT, then 2M, then 1G.
pub const PAMT_CHUNK_ORDER: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

/// The module limits a TDMR plan must respect (global metadata read with `TDH.SYS.RD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TdmrConstraints {
    /// `MAX_TDMRS` (field 0x9100000100000008).
    pub max_tdmrs: u16,
    /// `MAX_RESERVED_PER_TDMR` (field 0x9100000100000009); at most 16, the reserved-area
    /// slots of [`tdx_abi::tdmr::TdmrInfo`].
    pub max_reserved_per_tdmr: u16,
    /// `PAMT_4K_ENTRY_SIZE` in bytes (field 0x9100000100000010).
    pub pamt_entry_size_4k: u16,
    /// `PAMT_2M_ENTRY_SIZE` in bytes (field 0x9100000100000011).
    pub pamt_entry_size_2m: u16,
    /// `PAMT_1G_ENTRY_SIZE` in bytes (field 0x9100000100000012).
    pub pamt_entry_size_1g: u16,
    /// Physical-address bits usable for TDMRs and PAMTs. The module requires addresses below
    /// `2^MAX_PA` (52) **and** with zero HKID bits, so set this to
    /// `min(52, first HKID bit)` for a given platform. Default 52.
    pub max_pa_bits: u8,
}

impl Default for TdmrConstraints {
    /// The values of module 1.5.01: 64 TDMRs, 16 reserved areas, 16-byte PAMT entries.
    fn default() -> Self {
        Self {
            max_tdmrs: MAX_TDMRS as u16,
            max_reserved_per_tdmr: MAX_RESERVED_PER_TDMR as u16,
            pamt_entry_size_4k: PAMT_ENTRY_SIZE as u16,
            pamt_entry_size_2m: PAMT_ENTRY_SIZE as u16,
            pamt_entry_size_1g: PAMT_ENTRY_SIZE as u16,
            max_pa_bits: MODULE_MAX_PA_BITS,
        }
    }
}

/// A metadata value that cannot be used as a TDMR constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintsError {
    /// `MAX_TDMRS` is 0 or does not fit 16 bits.
    #[error("MAX_TDMRS = {0} is not in 1..=65535")]
    MaxTdmrs(u64),
    /// `MAX_RESERVED_PER_TDMR` is 0 or more than the 16 slots of TDMR_INFO.
    #[error("MAX_RESERVED_PER_TDMR = {0} is not in 1..=16")]
    MaxReservedPerTdmr(u64),
    /// A PAMT entry size is 0 or does not fit 16 bits.
    #[error("PAMT entry size for {page_size:?} pages = {value} is not in 1..=65535")]
    PamtEntrySize {
        /// Which PAMT level.
        page_size: PageSize,
        /// The rejected value.
        value: u64,
    },
    /// The physical-address width is 0 or above 52 (`MAX_PA`).
    #[error("physical-address width {0} is not in 1..=52")]
    MaxPaBits(u64),
}

impl TdmrConstraints {
    /// Builds constraints from the raw metadata values (`MAX_TDMRS`, `MAX_RESERVED_PER_TDMR`,
    /// `PAMT_4K/2M/1G_ENTRY_SIZE`) as read with `TDH.SYS.RD`; the PA width is 52.
    pub fn from_metadata(
        max_tdmrs: u64,
        max_reserved_per_tdmr: u64,
        pamt_entry_size_4k: u64,
        pamt_entry_size_2m: u64,
        pamt_entry_size_1g: u64,
    ) -> Result<Self, ConstraintsError> {
        let entry = |page_size, value: u64| {
            u16::try_from(value)
                .ok()
                .filter(|v| *v != 0)
                .ok_or(ConstraintsError::PamtEntrySize { page_size, value })
        };
        let c = Self {
            max_tdmrs: u16::try_from(max_tdmrs)
                .map_err(|_| ConstraintsError::MaxTdmrs(max_tdmrs))?,
            max_reserved_per_tdmr: u16::try_from(max_reserved_per_tdmr)
                .map_err(|_| ConstraintsError::MaxReservedPerTdmr(max_reserved_per_tdmr))?,
            pamt_entry_size_4k: entry(PageSize::Size4K, pamt_entry_size_4k)?,
            pamt_entry_size_2m: entry(PageSize::Size2M, pamt_entry_size_2m)?,
            pamt_entry_size_1g: entry(PageSize::Size1G, pamt_entry_size_1g)?,
            max_pa_bits: MODULE_MAX_PA_BITS,
        };
        c.check()?;
        Ok(c)
    }

    /// Checks that every field is usable (see [`ConstraintsError`]).
    pub fn check(&self) -> Result<(), ConstraintsError> {
        if self.max_tdmrs == 0 {
            return Err(ConstraintsError::MaxTdmrs(0));
        }
        if self.max_reserved_per_tdmr == 0
            || usize::from(self.max_reserved_per_tdmr) > MAX_RESERVED_PER_TDMR
        {
            return Err(ConstraintsError::MaxReservedPerTdmr(u64::from(
                self.max_reserved_per_tdmr,
            )));
        }
        for ps in PAMT_CHUNK_ORDER {
            if self.pamt_entry_size(ps) == 0 {
                return Err(ConstraintsError::PamtEntrySize {
                    page_size: ps,
                    value: 0,
                });
            }
        }
        if self.max_pa_bits == 0 || self.max_pa_bits > MODULE_MAX_PA_BITS {
            return Err(ConstraintsError::MaxPaBits(u64::from(self.max_pa_bits)));
        }
        Ok(())
    }

    /// The PAMT entry size for one page size.
    pub const fn pamt_entry_size(&self, page_size: PageSize) -> u16 {
        match page_size {
            PageSize::Size4K => self.pamt_entry_size_4k,
            PageSize::Size2M => self.pamt_entry_size_2m,
            PageSize::Size1G => self.pamt_entry_size_1g,
        }
    }

    /// The reserved-area slots actually usable: `min(MAX_RESERVED_PER_TDMR, 16)`.
    pub fn reserved_slots(&self) -> usize {
        usize::from(self.max_reserved_per_tdmr).min(MAX_RESERVED_PER_TDMR)
    }

    /// Exclusive upper bound of TDMR and PAMT addresses: `2^max_pa_bits` (capped at 52 bits).
    pub fn pa_limit(&self) -> u64 {
        1u64 << self.max_pa_bits.min(MODULE_MAX_PA_BITS)
    }

    /// The PAMT sizes Linux allocates for a TDMR of `tdmr_size` bytes, in chunk order
    /// `[4K, 2M, 1G]` (each rounded up to 4 KiB), or `None` on arithmetic overflow.
    pub fn pamt_sizes(&self, tdmr_size: u64) -> Option<[u64; 3]> {
        let mut out = [0u64; 3];
        for (slot, ps) in out.iter_mut().zip(PAMT_CHUNK_ORDER) {
            *slot = pamt_size(
                tdmr_size,
                ps.bytes().trailing_zeros(),
                u64::from(self.pamt_entry_size(ps)),
            )?;
        }
        Some(out)
    }

    /// Total PAMT bytes (one contiguous chunk) for a TDMR of `tdmr_size` bytes.
    pub fn pamt_chunk_size(&self, tdmr_size: u64) -> Option<u64> {
        let [a, b, c] = self.pamt_sizes(tdmr_size)?;
        a.checked_add(b)?.checked_add(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_module_1_5_01() {
        let c = TdmrConstraints::default();
        assert_eq!(
            (
                c.max_tdmrs,
                c.max_reserved_per_tdmr,
                c.pamt_entry_size_4k,
                c.pamt_entry_size_2m,
                c.pamt_entry_size_1g,
                c.max_pa_bits
            ),
            (64, 16, 16, 16, 16, 52)
        );
        assert_eq!(TdmrConstraints::from_metadata(64, 16, 16, 16, 16), Ok(c));
    }

    #[test]
    fn from_metadata_rejects_bad_values() {
        assert_eq!(
            TdmrConstraints::from_metadata(0, 16, 16, 16, 16),
            Err(ConstraintsError::MaxTdmrs(0))
        );
        assert_eq!(
            TdmrConstraints::from_metadata(1 << 16, 16, 16, 16, 16),
            Err(ConstraintsError::MaxTdmrs(1 << 16))
        );
        assert_eq!(
            TdmrConstraints::from_metadata(64, 17, 16, 16, 16),
            Err(ConstraintsError::MaxReservedPerTdmr(17))
        );
        assert_eq!(
            TdmrConstraints::from_metadata(64, 16, 16, 0, 16),
            Err(ConstraintsError::PamtEntrySize {
                page_size: PageSize::Size2M,
                value: 0
            })
        );
    }

    #[test]
    fn one_gib_tdmr_pamt_is_4m_8k_4k() {
        let c = TdmrConstraints::default();
        assert_eq!(c.pamt_sizes(1 << 30), Some([4 << 20, 8 << 10, 4 << 10]));
        assert_eq!(c.pamt_chunk_size(1 << 30), Some((4 << 20) + (12 << 10)));
    }
}
