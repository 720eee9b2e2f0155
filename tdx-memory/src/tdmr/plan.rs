//! The TDMR/PAMT planner: Linux's `construct_tdmrs`, deterministic and with typed errors.

use std::collections::BTreeMap;

use tdx_abi::tdmr::{
    CmrInfoEntry, TdmrInfo, TdmrReservedArea, MAX_CMRS, TDMR_ALIGNMENT, TDMR_PAGE_ALIGNMENT,
};

use super::validate::area_in_cmrs;
use super::{ConstraintsError, TdmrConstraints};

/// One TDX-usable memory region `[start, end)` on NUMA node `node` (Linux's `tdx_memblock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UsableRegion {
    /// First byte (4 KiB aligned).
    pub start: u64,
    /// End, exclusive (4 KiB aligned). A region with `start == end` is ignored.
    pub end: u64,
    /// NUMA node of the region (used as the preferred node of PAMT allocations).
    pub node: u32,
}

impl UsableRegion {
    /// A region on node 0.
    pub const fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            end,
            node: 0,
        }
    }
}

/// Why no plan could be made. Limit errors name the limit and where it was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The constraints are unusable.
    #[error("invalid constraints: {0}")]
    InvalidConstraints(#[from] ConstraintsError),
    /// No non-empty usable region was given.
    #[error("no TDX-usable memory")]
    NoUsableMemory,
    /// A region is not 4 KiB aligned.
    #[error("usable region {index} [{start:#x}, {end:#x}) is not 4 KiB aligned")]
    RegionMisaligned {
        /// Index in the caller's list.
        index: usize,
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// A region ends before it starts.
    #[error("usable region {index} [{start:#x}, {end:#x}) ends before it starts")]
    RegionInverted {
        /// Index in the caller's list.
        index: usize,
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// A region's 1 GiB-aligned end does not fit in 64 bits or lies above the PA limit.
    #[error("usable region {index} ends at {end:#x}: its TDMR would end above 2^{max_pa_bits}")]
    RegionAbovePaLimit {
        /// Index in the caller's list.
        index: usize,
        /// Its end.
        end: u64,
        /// The PA width of the constraints.
        max_pa_bits: u8,
    },
    /// Two regions overlap.
    #[error("usable regions {first} and {second} overlap")]
    RegionsOverlap {
        /// Index (caller's list) of the lower region.
        first: usize,
        /// Index (caller's list) of the overlapping region.
        second: usize,
    },
    /// More CMRs than the module's table holds.
    #[error("{count} CMRs given, at most {MAX_CMRS} exist")]
    TooManyCmrs {
        /// Number given.
        count: usize,
    },
    /// A CMR is not 4 KiB aligned or its end overflows.
    #[error("CMR {index} (base {base:#x}, size {size:#x}) is misaligned or overflows")]
    InvalidCmr {
        /// Index in the CMR list.
        index: usize,
        /// CMR_BASE.
        base: u64,
        /// CMR_SIZE.
        size: u64,
    },
    /// Two CMRs overlap.
    #[error("CMRs {first} and {second} overlap")]
    CmrsOverlap {
        /// Index of one CMR.
        first: usize,
        /// Index of the other.
        second: usize,
    },
    /// A run of contiguous usable memory is not inside one CMR (as the module merges CMRs).
    #[error("usable memory [{start:#x}, {end:#x}) is not inside one CMR")]
    MemoryNotConvertible {
        /// Start of the run.
        start: u64,
        /// End of the run.
        end: u64,
    },
    /// Linux's "TDMRs exhausted": covering region `region_index` needs TDMR number
    /// `max_tdmrs + 1`.
    #[error(
        "TDMRs exhausted: MAX_TDMRS = {max_tdmrs} used up at usable region {region_index} \
         [{region_start:#x}, {region_end:#x})"
    )]
    TdmrsExhausted {
        /// Index (caller's list) of the region that needed another TDMR.
        region_index: usize,
        /// Its start.
        region_start: u64,
        /// Its end.
        region_end: u64,
        /// The limit.
        max_tdmrs: u16,
    },
    /// The PAMT size of a TDMR overflows 64 bits (absurd entry sizes).
    #[error("PAMT size of TDMR {tdmr_index} overflows")]
    PamtSizeOverflow {
        /// The TDMR.
        tdmr_index: usize,
    },
    /// The allocator found no room for a TDMR's PAMT chunk.
    #[error("PAMT allocation of {size} bytes for TDMR {tdmr_index} failed")]
    PamtAllocationFailed {
        /// The TDMR.
        tdmr_index: usize,
        /// Bytes requested (4K + 2M + 1G PAMT).
        size: u64,
    },
    /// The allocator returned a chunk that is misaligned, not inside usable memory, or
    /// overlapping another PAMT chunk.
    #[error(
        "PAMT allocator returned an unusable chunk [{base:#x} + {size:#x}) for TDMR {tdmr_index}"
    )]
    PamtAllocationInvalid {
        /// The TDMR.
        tdmr_index: usize,
        /// The returned base.
        base: u64,
        /// The chunk size.
        size: u64,
    },
    /// Linux's "reserved areas exhausted": TDMR `tdmr_index` needs more than
    /// `max_reserved_per_tdmr` reserved areas (holes plus PAMT parts).
    #[error(
        "reserved areas exhausted: TDMR {tdmr_index} [{tdmr_base:#x}, +{tdmr_size:#x}) needs \
         more than MAX_RESERVED_PER_TDMR = {max_reserved_per_tdmr}"
    )]
    ReservedAreasExhausted {
        /// The TDMR.
        tdmr_index: usize,
        /// Its base.
        tdmr_base: u64,
        /// Its size.
        tdmr_size: u64,
        /// The limit.
        max_reserved_per_tdmr: u16,
    },
}

impl PlanError {
    /// Whether this is one of the module-limit failures Linux also reports (TDMRs exhausted,
    /// reserved areas exhausted, PAMT allocation failed) rather than an input error.
    pub const fn is_limit(&self) -> bool {
        matches!(
            self,
            Self::TdmrsExhausted { .. }
                | Self::ReservedAreasExhausted { .. }
                | Self::PamtAllocationFailed { .. }
        )
    }
}

/// A checked, normalised TDX memory map: usable regions sorted by address (non-empty,
/// non-overlapping, 4 KiB aligned, each run of contiguous memory inside one CMR) and the CMRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxMemoryMap {
    /// Sorted regions with their index in the caller's list.
    regions: Vec<(UsableRegion, usize)>,
    /// Maximal runs of contiguous usable memory `[start, end)`, sorted.
    runs: Vec<(u64, u64)>,
    cmrs: Vec<CmrInfoEntry>,
}

fn align_down(v: u64, a: u64) -> u64 {
    v - v % a
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    match v % a {
        0 => Some(v),
        r => v.checked_add(a - r),
    }
}

impl TdxMemoryMap {
    /// Checks and sorts the usable regions and checks the CMRs (at most [`MAX_CMRS`],
    /// 4 KiB aligned, non-overlapping; null entries ignored). Empty regions are dropped, as
    /// Linux drops empty PFN ranges. `O(n log n)`.
    pub fn new(regions: &[UsableRegion], cmrs: &[CmrInfoEntry]) -> Result<Self, PlanError> {
        if cmrs.len() > MAX_CMRS {
            return Err(PlanError::TooManyCmrs { count: cmrs.len() });
        }
        let mut sorted_cmrs: Vec<(u64, u64, usize)> = Vec::with_capacity(cmrs.len());
        for (index, c) in cmrs.iter().enumerate() {
            if c.cmr_size == 0 {
                continue;
            }
            let end = c.cmr_base.checked_add(c.cmr_size);
            if c.cmr_base % TDMR_PAGE_ALIGNMENT != 0
                || c.cmr_size % TDMR_PAGE_ALIGNMENT != 0
                || end.is_none()
            {
                return Err(PlanError::InvalidCmr {
                    index,
                    base: c.cmr_base,
                    size: c.cmr_size,
                });
            }
            sorted_cmrs.push((c.cmr_base, end.unwrap_or(u64::MAX), index));
        }
        sorted_cmrs.sort_unstable();
        for w in sorted_cmrs.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(PlanError::CmrsOverlap {
                    first: w[0].2,
                    second: w[1].2,
                });
            }
        }

        let mut sorted: Vec<(UsableRegion, usize)> = Vec::with_capacity(regions.len());
        for (index, r) in regions.iter().enumerate() {
            if r.start % TDMR_PAGE_ALIGNMENT != 0 || r.end % TDMR_PAGE_ALIGNMENT != 0 {
                return Err(PlanError::RegionMisaligned {
                    index,
                    start: r.start,
                    end: r.end,
                });
            }
            if r.end < r.start {
                return Err(PlanError::RegionInverted {
                    index,
                    start: r.start,
                    end: r.end,
                });
            }
            if r.end > r.start {
                sorted.push((*r, index));
            }
        }
        if sorted.is_empty() {
            return Err(PlanError::NoUsableMemory);
        }
        sorted.sort_unstable_by_key(|(r, i)| (r.start, *i));
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for w in sorted.windows(2) {
            if w[1].0.start < w[0].0.end {
                return Err(PlanError::RegionsOverlap {
                    first: w[0].1,
                    second: w[1].1,
                });
            }
        }
        for (r, _) in &sorted {
            match runs.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => runs.push((r.start, r.end)),
            }
        }
        for &(start, end) in &runs {
            if !area_in_cmrs(cmrs, start, end) {
                return Err(PlanError::MemoryNotConvertible { start, end });
            }
        }
        Ok(Self {
            regions: sorted,
            runs,
            cmrs: cmrs.to_vec(),
        })
    }

    /// The usable regions in address order.
    pub fn regions(&self) -> impl ExactSizeIterator<Item = &UsableRegion> + '_ {
        self.regions.iter().map(|(r, _)| r)
    }

    /// Maximal runs `[start, end)` of contiguous usable memory, in address order.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// The CMRs as given.
    pub fn cmrs(&self) -> &[CmrInfoEntry] {
        &self.cmrs
    }

    /// Whether `[base, base + size)` lies inside one run of usable memory.
    pub fn contains(&self, base: u64, size: u64) -> bool {
        let Some(end) = base.checked_add(size) else {
            return false;
        };
        let i = self.runs.partition_point(|r| r.1 <= base);
        self.runs
            .get(i)
            .is_some_and(|&(s, e)| s <= base && end <= e)
    }
}

/// What the planner asks a [`PamtAllocator`] for: one contiguous chunk holding a TDMR's three
/// PAMTs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PamtRequest {
    /// Index of the TDMR the PAMT is for.
    pub tdmr_index: usize,
    /// That TDMR's base.
    pub tdmr_base: u64,
    /// That TDMR's size.
    pub tdmr_size: u64,
    /// Bytes needed (4K + 2M + 1G PAMT sizes), a multiple of 4 KiB.
    pub size: u64,
    /// Required alignment of the chunk (4 KiB).
    pub align: u64,
    /// Preferred NUMA node (Linux's `tdmr_get_nid`: the node of the first usable region that
    /// ends above the TDMR base, 0 if none).
    pub node: u32,
}

/// Source of physical memory for PAMT chunks (Linux uses `alloc_contig_pages`).
///
/// The returned chunk must be `align`ed, inside usable memory and must not overlap an earlier
/// chunk; the planner checks this and fails with [`PlanError::PamtAllocationInvalid`]
/// otherwise. Returning `None` fails the plan with [`PlanError::PamtAllocationFailed`].
pub trait PamtAllocator {
    /// Returns the base of a chunk of `request.size` bytes, or `None`.
    fn allocate(&mut self, request: &PamtRequest) -> Option<u64>;
}

/// The default allocator: deterministic, carves from the top of usable memory. For each
/// request it takes the highest fitting address (1) inside the requesting TDMR, else (2) on the
/// preferred node, else (3) anywhere. Free space is the usable memory, with adjacent regions of
/// one node merged; a chunk never spans two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopDownPamtAllocator {
    /// Free ranges `(start, end, node)`, sorted and disjoint.
    free: Vec<(u64, u64, u32)>,
}

impl TopDownPamtAllocator {
    /// An allocator over all usable memory of `map`.
    pub fn new(map: &TdxMemoryMap) -> Self {
        let mut free: Vec<(u64, u64, u32)> = Vec::with_capacity(map.regions.len());
        for (r, _) in &map.regions {
            match free.last_mut() {
                Some(last) if last.1 == r.start && last.2 == r.node => last.1 = r.end,
                _ => free.push((r.start, r.end, r.node)),
            }
        }
        Self { free }
    }

    fn find(&self, lo: u64, hi: u64, size: u64, align: u64, node: Option<u32>) -> Option<u64> {
        // Free ranges ending at or below `lo` cannot help; scan the rest top-down.
        let first = self.free.partition_point(|f| f.1 <= lo);
        for &(start, end, n) in self.free[first..].iter().rev() {
            if node.is_some_and(|want| want != n) {
                continue;
            }
            let s = start.max(lo);
            let e = end.min(hi);
            if e <= s || e - s < size {
                continue;
            }
            let base = align_down(e - size, align);
            if base >= s {
                return Some(base);
            }
        }
        None
    }

    fn take(&mut self, base: u64, size: u64) {
        let Some(end) = base.checked_add(size) else {
            return;
        };
        let i = self.free.partition_point(|f| f.1 <= base);
        let Some(&(s, e, n)) = self.free.get(i) else {
            return;
        };
        if !(s <= base && end <= e) {
            return;
        }
        let mut replacement = Vec::with_capacity(2);
        if s < base {
            replacement.push((s, base, n));
        }
        if end < e {
            replacement.push((end, e, n));
        }
        self.free.splice(i..=i, replacement);
    }
}

impl PamtAllocator for TopDownPamtAllocator {
    fn allocate(&mut self, req: &PamtRequest) -> Option<u64> {
        if req.size == 0 {
            return None;
        }
        let align = req.align.max(1);
        let tdmr_end = req.tdmr_base.saturating_add(req.tdmr_size);
        let base = self
            .find(req.tdmr_base, tdmr_end, req.size, align, None)
            .or_else(|| self.find(0, u64::MAX, req.size, align, Some(req.node)))
            .or_else(|| self.find(0, u64::MAX, req.size, align, None))?;
        self.take(base, req.size);
        Some(base)
    }
}

/// One TDMR's PAMT chunk (4K PAMT, then 2M, then 1G), as Linux's `tdmr_get_pamt` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PamtRange {
    /// The TDMR the PAMT describes.
    pub tdmr_index: usize,
    /// Physical base (= PAMT_4K_BASE).
    pub base: u64,
    /// Bytes (PAMT_4K_SIZE + PAMT_2M_SIZE + PAMT_1G_SIZE).
    pub size: u64,
}

/// The result of planning: the TDMR_INFO entries to pass to `TDH.SYS.CONFIG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdmrPlan {
    /// The TDMRs in address order, PAMTs filled in, reserved areas sorted by offset.
    pub tdmrs: Vec<TdmrInfo>,
    /// Sum of all PAMT bytes.
    pub pamt_total_bytes: u64,
    /// The constraints the plan was made for.
    pub constraints: TdmrConstraints,
}

impl TdmrPlan {
    /// Each TDMR's PAMT chunk, in TDMR order.
    pub fn pamt_ranges(&self) -> Vec<PamtRange> {
        self.tdmrs
            .iter()
            .enumerate()
            .map(|(tdmr_index, t)| PamtRange {
                tdmr_index,
                base: t.pamt_4k_base,
                size: t
                    .pamt_4k_size
                    .saturating_add(t.pamt_2m_size)
                    .saturating_add(t.pamt_1g_size),
            })
            .collect()
    }

    /// The PAMT total in KiB, the number in Linux's "N KB allocated for PAMT" message.
    pub fn pamt_total_kib(&self) -> u64 {
        self.pamt_total_bytes / 1024
    }

    /// Total TDMR span in bytes (what the PAMT is sized by, holes included).
    pub fn tdmr_span_bytes(&self) -> u64 {
        self.tdmrs
            .iter()
            .fold(0u64, |acc, t| acc.saturating_add(t.tdmr_size))
    }

    /// Runs the `TDH.SYS.CONFIG` checks on this plan.
    pub fn validate(&self, cmrs: &[CmrInfoEntry]) -> Result<(), super::TdmrValidationError> {
        super::validate(&self.tdmrs, cmrs, &self.constraints)
    }
}

/// Plans TDMRs and PAMTs like Linux, with the default [`TopDownPamtAllocator`].
pub fn plan_tdmrs(
    regions: &[UsableRegion],
    cmrs: &[CmrInfoEntry],
    constraints: &TdmrConstraints,
) -> Result<TdmrPlan, PlanError> {
    constraints.check()?;
    let map = TdxMemoryMap::new(regions, cmrs)?;
    let mut alloc = TopDownPamtAllocator::new(&map);
    plan_tdmrs_with_allocator(&map, constraints, &mut alloc)
}

/// Plans TDMRs and PAMTs like Linux, taking PAMT chunks from `alloc`.
///
/// Work is `O(n log n + t log t)` for `n` regions and `t` TDMRs plus the allocator's cost;
/// every loop is bounded by the input sizes and the constraints.
pub fn plan_tdmrs_with_allocator(
    map: &TdxMemoryMap,
    constraints: &TdmrConstraints,
    alloc: &mut dyn PamtAllocator,
) -> Result<TdmrPlan, PlanError> {
    constraints.check()?;
    let bounds = fill_out_tdmrs(map, constraints)?;
    let mut tdmrs: Vec<TdmrInfo> = bounds
        .iter()
        .map(|&(base, size)| TdmrInfo {
            tdmr_base: base,
            tdmr_size: size,
            ..Default::default()
        })
        .collect();
    let (chunks, total) = set_up_pamts(map, constraints, alloc, &mut tdmrs)?;
    populate_reserved_areas(map, constraints, &chunks, &mut tdmrs)?;
    Ok(TdmrPlan {
        tdmrs,
        pamt_total_bytes: total,
        constraints: *constraints,
    })
}

/// Linux's `fill_out_tdmrs`: returns `(base, size)` of each TDMR.
fn fill_out_tdmrs(
    map: &TdxMemoryMap,
    constraints: &TdmrConstraints,
) -> Result<Vec<(u64, u64)>, PlanError> {
    let pa_limit = constraints.pa_limit();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(r, index) in &map.regions {
        let above = PlanError::RegionAbovePaLimit {
            index,
            end: r.end,
            max_pa_bits: constraints.max_pa_bits,
        };
        let mut start = align_down(r.start, TDMR_ALIGNMENT);
        let end = align_up(r.end, TDMR_ALIGNMENT).ok_or(above)?;
        if end > pa_limit {
            return Err(above);
        }
        if let Some(&(base, size)) = out.last() {
            let cur_end = base + size; // <= pa_limit, no overflow
            if end <= cur_end {
                continue;
            }
            if start < cur_end {
                start = cur_end;
            }
            if out.len() >= usize::from(constraints.max_tdmrs) {
                return Err(PlanError::TdmrsExhausted {
                    region_index: index,
                    region_start: r.start,
                    region_end: r.end,
                    max_tdmrs: constraints.max_tdmrs,
                });
            }
        }
        out.push((start, end - start));
    }
    Ok(out)
}

/// Linux's `tdmrs_set_up_pamt_all`. Returns the chunks as `start -> (end, tdmr index)` and the
/// total PAMT bytes.
fn set_up_pamts(
    map: &TdxMemoryMap,
    constraints: &TdmrConstraints,
    alloc: &mut dyn PamtAllocator,
    tdmrs: &mut [TdmrInfo],
) -> Result<(BTreeMap<u64, u64>, u64), PlanError> {
    let mut chunks: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total = 0u64;
    for (tdmr_index, t) in tdmrs.iter_mut().enumerate() {
        let overflow = PlanError::PamtSizeOverflow { tdmr_index };
        let [s4k, s2m, s1g] = constraints.pamt_sizes(t.tdmr_size).ok_or(overflow)?;
        let size = constraints.pamt_chunk_size(t.tdmr_size).ok_or(overflow)?;
        // tdmr_get_nid: first region that ends above the TDMR base.
        let first = map.regions.partition_point(|(r, _)| r.end <= t.tdmr_base);
        let node = map.regions.get(first).map_or(0, |(r, _)| r.node);
        let request = PamtRequest {
            tdmr_index,
            tdmr_base: t.tdmr_base,
            tdmr_size: t.tdmr_size,
            size,
            align: TDMR_PAGE_ALIGNMENT,
            node,
        };
        let base = alloc
            .allocate(&request)
            .ok_or(PlanError::PamtAllocationFailed { tdmr_index, size })?;
        let invalid = PlanError::PamtAllocationInvalid {
            tdmr_index,
            base,
            size,
        };
        let end = base.checked_add(size).ok_or(invalid)?;
        let overlaps_prev = chunks
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > base);
        if base % TDMR_PAGE_ALIGNMENT != 0 || !map.contains(base, size) || overlaps_prev {
            return Err(invalid);
        }
        chunks.insert(base, end);
        total = total.checked_add(size).ok_or(overflow)?;
        t.pamt_4k_base = base;
        t.pamt_4k_size = s4k;
        t.pamt_2m_base = base + s4k;
        t.pamt_2m_size = s2m;
        t.pamt_1g_base = base + s4k + s2m;
        t.pamt_1g_size = s1g;
    }
    Ok((chunks, total))
}

/// Linux's `tdmrs_populate_rsvd_areas_all`.
fn populate_reserved_areas(
    map: &TdxMemoryMap,
    constraints: &TdmrConstraints,
    chunks: &BTreeMap<u64, u64>,
    tdmrs: &mut [TdmrInfo],
) -> Result<(), PlanError> {
    let max = constraints.reserved_slots();
    for (tdmr_index, t) in tdmrs.iter_mut().enumerate() {
        let base = t.tdmr_base;
        let tdmr_size = t.tdmr_size;
        let end = base + tdmr_size; // checked in fill_out_tdmrs
        let mut areas: Vec<TdmrReservedArea> = Vec::with_capacity(max);
        let mut add = |start: u64, stop: u64| {
            if areas.len() >= max {
                return Err(PlanError::ReservedAreasExhausted {
                    tdmr_index,
                    tdmr_base: base,
                    tdmr_size,
                    max_reserved_per_tdmr: constraints.max_reserved_per_tdmr,
                });
            }
            areas.push(TdmrReservedArea {
                offset: start - base,
                size: stop - start,
            });
            Ok(())
        };
        // Holes (tdmr_populate_rsvd_holes). Regions ending below the base are skipped.
        let mut prev_end = base;
        let first = map.regions.partition_point(|(r, _)| r.end < base);
        for (r, _) in &map.regions[first..] {
            if r.start >= end {
                break;
            }
            if r.start > prev_end {
                add(prev_end, r.start)?;
            }
            prev_end = r.end;
        }
        if prev_end < end {
            add(prev_end, end)?;
        }
        // PAMT parts (tdmr_populate_rsvd_pamts), every TDMR's chunk clipped to this TDMR.
        let from = chunks
            .range(..=base)
            .next_back()
            .filter(|(_, &e)| e > base)
            .map_or(base, |(&s, _)| s);
        for (&s, &e) in chunks.range(from..end) {
            add(s.max(base), e.min(end))?;
        }
        areas.sort_unstable_by_key(|a| a.offset);
        for (slot, a) in t.reserved_areas.iter_mut().zip(areas) {
            *slot = a;
        }
    }
    Ok(())
}
