//! The TDMR_INFO checks of `TDH.SYS.CONFIG`, in the module's order.
//!
//! Confirmed against the module 1.5 source (`tdh_sys_config.c`, branch `tdx_1.5`):
//!
//! * Before any TDMR is read: the number of TDMRs must be in `1..=MAX_TDMRS`, otherwise
//!   `TDX_OPERAND_INVALID` with operand id RDX (not `TDX_INVALID_TDMR`).
//! * Then TDMR by TDMR (`i` = 0, 1, …), each one fully checked before the next:
//!   1. `base + size` must not overflow (`TDX_INVALID_TDMR`);
//!   2. `base` must not be below the previous TDMR's base, nor below its end
//!      (`TDX_NON_ORDERED_TDMR`);
//!   3. base and size 1 GiB aligned, size non-zero, base and last byte below `2^MAX_PA` with
//!      zero HKID bits (`TDX_INVALID_TDMR`);
//!   4. reserved areas, slot by slot: a null slot (size 0) may only be followed by null slots
//!      (`TDX_NON_ORDERED_RESERVED_IN_TDMR`); `offset + size` must not overflow
//!      (`TDX_INVALID_RESERVED_IN_TDMR`); offsets ascending and not overlapping the previous
//!      area (`TDX_NON_ORDERED_RESERVED_IN_TDMR`); offset and size 4 KiB aligned and the area
//!      inside the TDMR (`TDX_INVALID_RESERVED_IN_TDMR`);
//!   5. PAMTs in the order 1G, 2M, 4K: no overflow, 4 KiB aligned base and size, base and last
//!      byte below the PA limit, size at least `(TDMR_SIZE / page size) * 16`
//!      (`TDX_INVALID_PAMT`);
//!   6. each of this TDMR's PAMTs (4K, 2M, 1G) against every PAMT of every earlier TDMR, then
//!      this TDMR's 4K/2M, 4K/1G and 2M/1G pairs (`TDX_PAMT_OVERLAP`);
//!   7. for every TDMR `j <= i`: this TDMR's PAMTs against TDMR `j`'s non-reserved parts, and
//!      (for `j < i`) TDMR `j`'s PAMTs against this TDMR's non-reserved parts
//!      (`TDX_PAMT_OVERLAP`);
//!   8. PAMTs 1G, 2M, 4K each inside one CMR (`TDX_PAMT_OUTSIDE_CMRS`);
//!   9. every non-reserved part of the TDMR inside one CMR (`TDX_TDMR_OUTSIDE_CMRS`).
//! * Status details (low 32 bits): byte 0 = TDMR index, byte 1 = reserved-area index or PAMT
//!   page size (0 = 4K, 1 = 2M, 2 = 1G), byte 2 = the other TDMR's index (PAMT overlap).
//!
//! Modelling choices: the required PAMT size uses the constraint's entry sizes (the module uses
//! its 16-byte `pamt_entry_t`, the same value in 1.5.01); only the first [`MAX_CMRS`] CMR
//! entries are looked at, as the module's CMR table has that many slots; with a
//! `max_reserved_per_tdmr` below 16 a non-null slot beyond it is `TDX_INVALID_RESERVED_IN_TDMR`
//! (the module's TDMR_INFO would not have that slot). The dynamic-PAMT variant of later modules
//! is not modelled.

use core::fmt;

use tdx_abi::gpa::PageSize;
use tdx_abi::tdmr::{
    CmrInfoEntry, TdmrInfo, TdmrReservedArea, MAX_CMRS, MAX_RESERVED_PER_TDMR, TDMR_ALIGNMENT,
    TDMR_PAGE_ALIGNMENT,
};

use super::TdmrConstraints;

/// Operand id of RDX in a `TDX_OPERAND_INVALID` status (the number-of-TDMRs operand).
pub const OPERAND_ID_RDX: u32 = 2;

/// Bits 63 (error) and 62 (non-recoverable) set in every status this validator returns.
const STATUS_ERROR_BITS: u64 = 0xC000_0000_0000_0000;

/// Which `TDH.SYS.CONFIG` check failed, named after the module's status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TdmrValidationErrorKind {
    /// `TDX_OPERAND_INVALID` (RDX): the number of TDMRs is 0 or above `MAX_TDMRS`.
    InvalidTdmrCount,
    /// `TDX_INVALID_TDMR`: base/size overflow, misalignment, zero size, or above the PA limit.
    InvalidTdmr,
    /// `TDX_NON_ORDERED_TDMR`: not sorted by base, or overlapping the previous TDMR.
    NonOrderedTdmr,
    /// `TDX_TDMR_OUTSIDE_CMRS`: a non-reserved part of the TDMR is not inside a CMR.
    TdmrOutsideCmrs,
    /// `TDX_INVALID_PAMT`: PAMT overflow, misalignment, above the PA limit, or too small.
    InvalidPamt,
    /// `TDX_PAMT_OUTSIDE_CMRS`: a PAMT is not inside a CMR.
    PamtOutsideCmrs,
    /// `TDX_PAMT_OVERLAP`: a PAMT overlaps another PAMT or a TDMR's non-reserved part.
    PamtOverlap,
    /// `TDX_INVALID_RESERVED_IN_TDMR`: reserved-area overflow, misalignment, or not inside
    /// its TDMR.
    InvalidReservedInTdmr,
    /// `TDX_NON_ORDERED_RESERVED_IN_TDMR`: reserved areas not sorted, overlapping, or a used
    /// slot after a null slot.
    NonOrderedReservedInTdmr,
}

impl TdmrValidationErrorKind {
    /// The module's name of the status code, e.g. `"TDX_INVALID_TDMR"`.
    pub const fn status_name(self) -> &'static str {
        match self {
            Self::InvalidTdmrCount => "TDX_OPERAND_INVALID",
            Self::InvalidTdmr => "TDX_INVALID_TDMR",
            Self::NonOrderedTdmr => "TDX_NON_ORDERED_TDMR",
            Self::TdmrOutsideCmrs => "TDX_TDMR_OUTSIDE_CMRS",
            Self::InvalidPamt => "TDX_INVALID_PAMT",
            Self::PamtOutsideCmrs => "TDX_PAMT_OUTSIDE_CMRS",
            Self::PamtOverlap => "TDX_PAMT_OVERLAP",
            Self::InvalidReservedInTdmr => "TDX_INVALID_RESERVED_IN_TDMR",
            Self::NonOrderedReservedInTdmr => "TDX_NON_ORDERED_RESERVED_IN_TDMR",
        }
    }

    /// The 16-bit code (`CLASS << 8 | DETAILS_L1`, status bits 47:32), e.g. `0x0A00`.
    pub const fn status_code(self) -> u16 {
        match self {
            Self::InvalidTdmrCount => 0x0100,
            Self::InvalidTdmr => 0x0A00,
            Self::NonOrderedTdmr => 0x0A01,
            Self::TdmrOutsideCmrs => 0x0A02,
            Self::InvalidPamt => 0x0A10,
            Self::PamtOutsideCmrs => 0x0A11,
            Self::PamtOverlap => 0x0A12,
            Self::InvalidReservedInTdmr => 0x0A20,
            Self::NonOrderedReservedInTdmr => 0x0A21,
        }
    }
}

/// A failed `TDH.SYS.CONFIG` check: which one, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TdmrValidationError {
    /// Which check failed.
    pub kind: TdmrValidationErrorKind,
    /// Index of the TDMR (for [`TdmrValidationErrorKind::PamtOverlap`], the TDMR owning the
    /// overlapping PAMT); `None` only for [`TdmrValidationErrorKind::InvalidTdmrCount`].
    pub tdmr_index: Option<usize>,
    /// Index of the reserved area, for the two reserved-area kinds.
    pub reserved_index: Option<usize>,
    /// The PAMT level, for the three PAMT kinds.
    pub page_size: Option<PageSize>,
    /// For [`TdmrValidationErrorKind::PamtOverlap`]: the other TDMR (whose PAMT or whose
    /// non-reserved part is overlapped; equal to `tdmr_index` for an overlap within one TDMR).
    pub other_tdmr_index: Option<usize>,
    /// For [`TdmrValidationErrorKind::InvalidTdmrCount`]: the rejected count.
    pub count: Option<u64>,
}

impl TdmrValidationError {
    fn tdmr(kind: TdmrValidationErrorKind, i: usize) -> Self {
        Self {
            kind,
            tdmr_index: Some(i),
            reserved_index: None,
            page_size: None,
            other_tdmr_index: None,
            count: None,
        }
    }

    fn reserved(kind: TdmrValidationErrorKind, i: usize, j: usize) -> Self {
        Self {
            reserved_index: Some(j),
            ..Self::tdmr(kind, i)
        }
    }

    fn pamt(kind: TdmrValidationErrorKind, i: usize, ps: PageSize) -> Self {
        Self {
            page_size: Some(ps),
            ..Self::tdmr(kind, i)
        }
    }

    fn overlap(i: usize, ps: PageSize, other: usize) -> Self {
        Self {
            other_tdmr_index: Some(other),
            ..Self::pamt(TdmrValidationErrorKind::PamtOverlap, i, ps)
        }
    }

    /// The status details (bits 31:0) as the module packs them: byte 0 TDMR index, byte 1
    /// reserved-area index or PAMT page size, byte 2 the other TDMR index; the operand id
    /// (RDX = 2) for [`TdmrValidationErrorKind::InvalidTdmrCount`]. Indexes are truncated to
    /// 8 bits like the module's `(uint8_t)` casts.
    pub fn status_details(&self) -> u32 {
        if self.kind == TdmrValidationErrorKind::InvalidTdmrCount {
            return OPERAND_ID_RDX;
        }
        let b0 = self.tdmr_index.unwrap_or(0) as u8;
        let b1 = match (self.reserved_index, self.page_size) {
            (Some(j), _) => j as u8,
            (None, Some(ps)) => ps as u8,
            (None, None) => 0,
        };
        let b2 = self.other_tdmr_index.unwrap_or(0) as u8;
        u32::from(b0) | (u32::from(b1) << 8) | (u32::from(b2) << 16)
    }

    /// The full 64-bit completion status the module returns in RAX.
    pub fn status(&self) -> u64 {
        STATUS_ERROR_BITS
            | (u64::from(self.kind.status_code()) << 32)
            | u64::from(self.status_details())
    }
}

impl fmt::Display for TdmrValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.status_name())?;
        if let Some(n) = self.count {
            write!(f, ": {n} TDMRs")?;
        }
        if let Some(i) = self.tdmr_index {
            write!(f, ": TDMR {i}")?;
        }
        if let Some(j) = self.reserved_index {
            write!(f, " reserved area {j}")?;
        }
        if let Some(ps) = self.page_size {
            write!(f, " PAMT {ps:?}")?;
        }
        if let Some(o) = self.other_tdmr_index {
            write!(f, " vs TDMR {o}")?;
        }
        write!(f, " (status {:#018x})", self.status())
    }
}

impl std::error::Error for TdmrValidationError {}

/// Whether `[start, end)` lies inside one CMR the way the module decides it: CMRs are scanned
/// in array order (first [`MAX_CMRS`] entries, null entries skipped), and a CMR that starts
/// exactly where the previous non-null CMR ends is merged with it (chains of such CMRs act as
/// one). Arithmetic wraps like the module's C code; no panic for any input.
pub fn area_in_cmrs(cmrs: &[CmrInfoEntry], start: u64, end: u64) -> bool {
    let mut last_start = 0u64;
    let mut last_end = 0u64;
    for cmr in cmrs.iter().take(MAX_CMRS) {
        if cmr.cmr_size == 0 {
            continue;
        }
        let mut cmr_start = cmr.cmr_base;
        let cmr_end = cmr.cmr_base.wrapping_add(cmr.cmr_size);
        if cmr_start == last_end {
            cmr_start = last_start;
        }
        if start >= cmr_start && end <= cmr_end {
            return true;
        }
        last_start = cmr_start;
        last_end = cmr_end;
    }
    false
}

/// The module's `is_overlap` on ranges already known not to overflow.
fn overlaps(base: u64, size: u64, base2: u64, size2: u64) -> bool {
    !(base >= base2.saturating_add(size2) || base2 >= base.saturating_add(size))
}

/// The three PAMTs of a TDMR in the order `[4K, 2M, 1G]` as `(page size, base, size)`.
fn pamts(t: &TdmrInfo) -> [(PageSize, u64, u64); 3] {
    [
        (PageSize::Size4K, t.pamt_4k_base, t.pamt_4k_size),
        (PageSize::Size2M, t.pamt_2m_base, t.pamt_2m_size),
        (PageSize::Size1G, t.pamt_1g_base, t.pamt_1g_size),
    ]
}

/// Calls `f(start, end)` for every non-reserved part of a TDMR whose base, size and reserved
/// areas have passed their checks (so nothing overflows and areas are sorted and disjoint).
/// Stops at the first `true` from `f` and returns it.
fn any_available_part(t: &TdmrInfo, mut f: impl FnMut(u64, u64) -> bool) -> bool {
    let end = t.tdmr_base.saturating_add(t.tdmr_size);
    let mut cursor = t.tdmr_base;
    for a in t.used_reserved_areas() {
        let r_start = t.tdmr_base.saturating_add(a.offset);
        if r_start > cursor && f(cursor, r_start) {
            return true;
        }
        cursor = r_start.saturating_add(a.size);
    }
    cursor < end && f(cursor, end)
}

/// Checks TDMR_INFO entries the way `TDH.SYS.CONFIG` does (see the module documentation for
/// the order) and returns the first failure.
///
/// `cmrs` is the platform's CMR table (only the first [`MAX_CMRS`] entries count). Work is
/// `O(n² )` in the number of TDMRs like the module's, with `n <= constraints.max_tdmrs`.
pub fn validate(
    tdmrs: &[TdmrInfo],
    cmrs: &[CmrInfoEntry],
    constraints: &TdmrConstraints,
) -> Result<(), TdmrValidationError> {
    use TdmrValidationErrorKind as K;

    if tdmrs.is_empty() || tdmrs.len() > usize::from(constraints.max_tdmrs) {
        return Err(TdmrValidationError {
            count: Some(tdmrs.len() as u64),
            tdmr_index: None,
            ..TdmrValidationError::tdmr(K::InvalidTdmrCount, 0)
        });
    }
    let pa_limit = constraints.pa_limit();
    let below_limit = |base: u64, size: u64| {
        // Module: base < 2^MAX_PA (HKID bits 0) and base + size - 1 likewise (wrapping).
        base < pa_limit && base.wrapping_add(size).wrapping_sub(1) < pa_limit
    };

    for (i, t) in tdmrs.iter().enumerate() {
        // 1. Overflow.
        let Some(t_end) = t.tdmr_base.checked_add(t.tdmr_size) else {
            return Err(TdmrValidationError::tdmr(K::InvalidTdmr, i));
        };
        // 2. Order against the previous TDMR (which passed its overflow check).
        if i > 0 {
            let prev = &tdmrs[i - 1];
            if t.tdmr_base < prev.tdmr_base
                || t.tdmr_base < prev.tdmr_base.saturating_add(prev.tdmr_size)
            {
                return Err(TdmrValidationError::tdmr(K::NonOrderedTdmr, i));
            }
        }
        // 3. Alignment, size and PA limit.
        if t.tdmr_base % TDMR_ALIGNMENT != 0
            || t.tdmr_size % TDMR_ALIGNMENT != 0
            || t.tdmr_size == 0
            || !below_limit(t.tdmr_base, t.tdmr_size)
        {
            return Err(TdmrValidationError::tdmr(K::InvalidTdmr, i));
        }
        // 4. Reserved areas.
        check_reserved_areas(t, i, t_end, constraints.reserved_slots())?;
        // 5. PAMT addresses and sizes, in the order 1G, 2M, 4K.
        for &(ps, base, size) in pamts(t).iter().rev() {
            let entries = t.tdmr_size / ps.bytes();
            let required = entries.checked_mul(u64::from(constraints.pamt_entry_size(ps)));
            let ok = base.checked_add(size).is_some()
                && base % TDMR_PAGE_ALIGNMENT == 0
                && size % TDMR_PAGE_ALIGNMENT == 0
                && below_limit(base, size)
                && required.is_some_and(|r| size >= r);
            if !ok {
                return Err(TdmrValidationError::pamt(K::InvalidPamt, i, ps));
            }
        }
        // 6. PAMTs against earlier TDMRs' PAMTs, then against each other.
        for (j, other) in tdmrs[..i].iter().enumerate() {
            for (ps, base, size) in pamts(t) {
                if pamts(other)
                    .iter()
                    .any(|&(_, b2, s2)| overlaps(base, size, b2, s2))
                {
                    return Err(TdmrValidationError::overlap(i, ps, j));
                }
            }
        }
        let [p4k, p2m, p1g] = pamts(t);
        for (a, b) in [(p4k, p2m), (p4k, p1g), (p2m, p1g)] {
            if overlaps(a.1, a.2, b.1, b.2) {
                return Err(TdmrValidationError::overlap(i, a.0, i));
            }
        }
        // 7. PAMTs against non-reserved parts of TDMRs 0..=i.
        for (j, other) in tdmrs[..=i].iter().enumerate() {
            for (ps, base, size) in pamts(t) {
                if any_available_part(other, |s, e| overlaps(base, size, s, e - s)) {
                    return Err(TdmrValidationError::overlap(i, ps, j));
                }
            }
            if j < i {
                for (ps, base, size) in pamts(other) {
                    if any_available_part(t, |s, e| overlaps(base, size, s, e - s)) {
                        return Err(TdmrValidationError::overlap(j, ps, i));
                    }
                }
            }
        }
        // 8. PAMTs inside CMRs, in the order 1G, 2M, 4K.
        for &(ps, base, size) in pamts(t).iter().rev() {
            if !area_in_cmrs(cmrs, base, base.wrapping_add(size)) {
                return Err(TdmrValidationError::pamt(K::PamtOutsideCmrs, i, ps));
            }
        }
        // 9. Non-reserved parts inside CMRs.
        if any_available_part(t, |s, e| !area_in_cmrs(cmrs, s, e)) {
            return Err(TdmrValidationError::tdmr(K::TdmrOutsideCmrs, i));
        }
    }
    Ok(())
}

fn check_reserved_areas(
    t: &TdmrInfo,
    i: usize,
    t_end: u64,
    slots: usize,
) -> Result<(), TdmrValidationError> {
    use TdmrValidationErrorKind as K;
    let areas: &[TdmrReservedArea; MAX_RESERVED_PER_TDMR] = &t.reserved_areas;
    for (j, a) in areas.iter().enumerate() {
        if a.size == 0 {
            if areas.get(j + 1).is_some_and(|next| next.size != 0) {
                return Err(TdmrValidationError::reserved(
                    K::NonOrderedReservedInTdmr,
                    i,
                    j,
                ));
            }
            continue;
        }
        if j >= slots {
            // Our rule: the module's TDMR_INFO has only `slots` reserved areas.
            return Err(TdmrValidationError::reserved(
                K::InvalidReservedInTdmr,
                i,
                j,
            ));
        }
        if a.offset.checked_add(a.size).is_none() {
            return Err(TdmrValidationError::reserved(
                K::InvalidReservedInTdmr,
                i,
                j,
            ));
        }
        if j > 0 {
            let prev = &areas[j - 1];
            if a.offset < prev.offset || a.offset < prev.offset.saturating_add(prev.size) {
                return Err(TdmrValidationError::reserved(
                    K::NonOrderedReservedInTdmr,
                    i,
                    j,
                ));
            }
        }
        if a.offset % TDMR_PAGE_ALIGNMENT != 0 || a.size % TDMR_PAGE_ALIGNMENT != 0 {
            return Err(TdmrValidationError::reserved(
                K::InvalidReservedInTdmr,
                i,
                j,
            ));
        }
        let inside = t
            .tdmr_base
            .checked_add(a.offset)
            .and_then(|s| s.checked_add(a.size))
            .is_some_and(|e| e <= t_end);
        if !inside {
            return Err(TdmrValidationError::reserved(
                K::InvalidReservedInTdmr,
                i,
                j,
            ));
        }
    }
    Ok(())
}
