//! The private/shared attribute map of a TD's GPA space.
//!
//! Every 4 KiB page of the canonical GPA space `[0, 1 << (GPAW - 1))` (see
//! [`crate::layout`]) is either [`PageState::Private`] — the TDX default, backed by
//! guest_memfd and invisible to the host — or [`PageState::Shared`], backed by the VMM's
//! ordinary mapping (the `userspace_addr` half of a `KVM_MEM_GUEST_MEMFD` memslot) and the only
//! memory a device may touch. The VMM feeds conversions from `KVM_HC_MAP_GPA_RANGE` exits
//! (MapGPA) and `KVM_EXIT_MEMORY_FAULT` exits into [`AttributeMap::convert`], after (or
//! together with) `KVM_SET_MEMORY_ATTRIBUTES`.
//!
//! # Representation
//!
//! The map stores only the *shared* pages, as a `BTreeMap` of maximal runs of page frame
//! numbers (`start -> end`, end exclusive, no two runs touching). A conversion or a query costs
//! O(log R + k) where R is the number of runs and k the number of runs the range touches,
//! independent of the number of pages: converting 1 GiB is as cheap as converting 4 KiB. The
//! number of runs (which a guest drives by fragmenting its shared memory) is bounded by a
//! configurable limit ([`DEFAULT_MAX_RUNS`]); a conversion that would exceed it fails
//! atomically with [`AttributeError::TooManyRuns`] and changes nothing.
//!
//! # Concurrency and the conversion race
//!
//! The map is shared between vCPU threads (which convert) and device threads (which access
//! shared memory). It is protected by one `RwLock`:
//!
//! * a conversion takes the write lock, updates the runs, bumps the generation counter and
//!   calls every [`ConversionListener`] *before* releasing the lock;
//! * a device access takes a read guard ([`AttributeMap::read`]), checks that every page it
//!   touches is shared and performs the access while still holding the guard (the
//!   shared-only memory in [`crate::shared`] is built so that its slices cannot outlive the
//!   guard).
//!
//! Hence every device access **linearises** entirely before or entirely after each conversion:
//! it never sees a half-converted range, and a shared→private conversion waits until all
//! in-flight accesses to the memory have finished (the checklist's "conversion waits for
//! in-flight DMA"). An access that linearised before a conversion to private completed
//! against the shared backing only, which the guest no longer sees once the page is private:
//! as on hardware, where the shared backing and the guest_memfd private backing are distinct
//! memories, such a late write is simply lost to the guest.
//!
//! On conversion to private the shared backing of the pages that changed must be
//! **discarded**, so that stale shared data (written by the guest or by a device) cannot
//! reappear when the page is later converted back to shared. Real KVM user space punches a
//! hole in the shared backing (`fallocate(PUNCH_HOLE)` / `madvise(MADV_DONTNEED)`); the
//! shared-only memory registers a listener that zeroes it (see
//! [`crate::shared::SharedGuestMemory`]). Listeners run under the write lock, so no access can
//! observe the page as shared again before the discard has finished.
//!
//! Rules for users: never call a locking method of the map (including [`AttributeMap::read`])
//! while already holding a read guard on the same thread (a queued writer would deadlock the
//! nested read), and never call back into the map from a listener.
//!
//! The generation counter starts at 0 and increases by one for each conversion that changed
//! at least one page; observers compare generations to detect changes without taking the lock.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use tdx_abi::gpa::{Gpa, Gpaw, PAGE_SIZE_4K};

use crate::layout::{canonical_limit, GpaRange, LayoutError};

/// Default bound on the number of maximal shared runs the map keeps (about 64 MiB of
/// bookkeeping in the worst case). A guest that fragments its shared memory beyond this gets
/// conversion errors instead of unbounded host allocation.
pub const DEFAULT_MAX_RUNS: usize = 1 << 20;

const PAGE_SHIFT: u32 = 12;

/// The state of one 4 KiB page of a TD's GPA space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Private to the TD (guest_memfd backed); the TDX default. Devices may not touch it.
    Private,
    /// Shared with the host (backed by the VMM's shared mapping); devices may access it.
    Shared,
}

impl fmt::Display for PageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageState::Private => "private",
            PageState::Shared => "shared",
        })
    }
}

/// Why a conversion or query was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// The range is malformed: unaligned, empty, overflowing, or not inside the canonical
    /// (SHARED-bit-clear) GPA space.
    #[error("invalid GPA range: {0}")]
    Range(#[from] LayoutError),
    /// The address is not inside the canonical GPA space (it has the SHARED bit or a bit above
    /// GPAW set).
    #[error("GPA {gpa} is outside the canonical GPA space of {gpaw}")]
    OutOfSpace {
        /// The address.
        gpa: Gpa,
        /// The TD's GPA width.
        gpaw: Gpaw,
    },
    /// Converting `range` would need more than `limit` maximal shared runs.
    #[error("converting {range} would exceed the limit of {limit} shared runs")]
    TooManyRuns {
        /// The requested range.
        range: GpaRange,
        /// The configured limit.
        limit: usize,
    },
}

/// What a conversion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversionOutcome {
    /// The state the range was converted to.
    pub to: PageState,
    /// How many 4 KiB pages changed state (pages already in the target state do not count).
    pub pages_changed: u64,
    /// The generation after the conversion (unchanged if no page changed).
    pub generation: u64,
}

/// A conversion as reported to a [`ConversionListener`].
#[derive(Clone, Copy, Debug)]
pub struct ConversionEvent<'a> {
    /// The requested range (canonical, page aligned).
    pub requested: GpaRange,
    /// The target state.
    pub to: PageState,
    /// The maximal sub-ranges whose state actually changed, in address order.
    pub changed: &'a [GpaRange],
    /// The generation after the conversion.
    pub generation: u64,
}

/// Told of every conversion that changed at least one page, while the map's write lock is
/// held (so no device access runs concurrently). Used to discard the shared backing on
/// conversion to private, to zap host mappings, or to punch holes in guest_memfd.
///
/// Implementations must not call back into the [`AttributeMap`] (deadlock) and must not
/// panic; they should be quick, since every device access waits for them.
pub trait ConversionListener: Send + Sync {
    /// Called once per conversion that changed at least one page.
    fn converted(&self, event: &ConversionEvent<'_>);
}

struct Inner {
    /// Maximal shared runs: start pfn -> end pfn (exclusive).
    runs: BTreeMap<u64, u64>,
    shared_pages: u64,
    generation: u64,
    max_runs: usize,
    listeners: Vec<Arc<dyn ConversionListener>>,
}

/// The private/shared attribute map of one TD (see the module docs for the concurrency
/// contract).
pub struct AttributeMap {
    gpaw: Gpaw,
    inner: RwLock<Inner>,
    generation: AtomicU64,
}

impl fmt::Debug for AttributeMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.read();
        f.debug_struct("AttributeMap")
            .field("gpaw", &self.gpaw)
            .field("generation", &g.generation())
            .field("shared_pages", &g.shared_pages())
            .field("runs", &g.run_count())
            .finish()
    }
}

impl AttributeMap {
    /// A map of the whole canonical GPA space of `gpaw`, every page private.
    pub fn new(gpaw: Gpaw) -> Self {
        Self::with_max_runs(gpaw, DEFAULT_MAX_RUNS)
    }

    /// Like [`AttributeMap::new`] with a custom bound on the number of shared runs
    /// (at least 1).
    pub fn with_max_runs(gpaw: Gpaw, max_runs: usize) -> Self {
        AttributeMap {
            gpaw,
            inner: RwLock::new(Inner {
                runs: BTreeMap::new(),
                shared_pages: 0,
                generation: 0,
                max_runs: max_runs.max(1),
                listeners: Vec::new(),
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// The TD's GPA width.
    pub fn gpaw(&self) -> Gpaw {
        self.gpaw
    }

    /// The current generation, read without locking.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Registers a listener for every future conversion.
    pub fn add_listener(&self, listener: Arc<dyn ConversionListener>) {
        self.write_inner().listeners.push(listener);
    }

    /// Takes a read guard: queries on it are consistent with each other, and no conversion
    /// can happen until it is dropped.
    pub fn read(&self) -> AttributeReadGuard<'_> {
        AttributeReadGuard {
            inner: self.inner.read().unwrap_or_else(PoisonError::into_inner),
            gpaw: self.gpaw,
        }
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// State of the page holding `gpa` (a canonical address).
    pub fn state(&self, gpa: Gpa) -> Result<PageState, AttributeError> {
        self.read().state(gpa)
    }

    /// Whether every page touched by the canonical byte range is in `state` (true for an
    /// empty range).
    pub fn is_all(&self, range: GpaRange, state: PageState) -> Result<bool, AttributeError> {
        self.read().is_all(range, state)
    }

    /// Iterates over the maximal shared runs in address order. The iterator holds a read
    /// guard: conversions wait until it is dropped.
    pub fn shared_ranges(&self) -> SharedRanges<'_> {
        SharedRanges {
            guard: self.read(),
            next_pfn: 0,
        }
    }

    /// Number of shared 4 KiB pages.
    pub fn shared_pages(&self) -> u64 {
        self.read().shared_pages()
    }

    /// Converts every page of `range` (canonical, 4 KiB aligned, non-empty) to `to` and
    /// reports how many pages changed. Atomic: on error nothing changes. Listeners are called
    /// (under the write lock) when at least one page changed.
    pub fn convert(
        &self,
        range: GpaRange,
        to: PageState,
    ) -> Result<ConversionOutcome, AttributeError> {
        let range = GpaRange::new_pages(range.start(), range.len(), self.gpaw)?;
        let s = range.start().raw() >> PAGE_SHIFT;
        let e = range.end().raw() >> PAGE_SHIFT;
        let mut inner = self.write_inner();
        let mut changed: Vec<GpaRange> = Vec::new();
        let pages_changed = match to {
            PageState::Shared => inner.make_shared(s, e, range, &mut changed)?,
            PageState::Private => inner.make_private(s, e, range, &mut changed)?,
        };
        if pages_changed > 0 {
            inner.generation += 1;
            self.generation.store(inner.generation, Ordering::Release);
            let event = ConversionEvent {
                requested: range,
                to,
                changed: &changed,
                generation: inner.generation,
            };
            for l in &inner.listeners {
                l.converted(&event);
            }
        }
        Ok(ConversionOutcome {
            to,
            pages_changed,
            generation: inner.generation,
        })
    }
}

/// The byte range of page frames `[s, e)`; callers guarantee `s <= e` and that both lie in
/// the canonical space (so the shifts cannot overflow).
fn pfn_range(s: u64, e: u64) -> GpaRange {
    GpaRange::new_unchecked(Gpa(s << PAGE_SHIFT), (e - s) << PAGE_SHIFT)
}

impl Inner {
    /// Runs overlapping or touching `[s, e)` (for `touching`) or overlapping it, in order.
    fn runs_near(&self, s: u64, e: u64, touching: bool) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        // A run starting before `s` that reaches `s` (touching) or passes it (overlapping).
        if let Some((&rs, &re)) = self.runs.range(..s).next_back() {
            if re > s || (touching && re == s) {
                out.push((rs, re));
            }
        }
        let upper = if touching {
            Bound::Included(e)
        } else {
            Bound::Excluded(e)
        };
        out.extend(
            self.runs
                .range((Bound::Included(s), upper))
                .map(|(&a, &b)| (a, b)),
        );
        out
    }

    fn make_shared(
        &mut self,
        s: u64,
        e: u64,
        range: GpaRange,
        changed: &mut Vec<GpaRange>,
    ) -> Result<u64, AttributeError> {
        let near = self.runs_near(s, e, true);
        if near.is_empty() && self.runs.len() >= self.max_runs {
            return Err(AttributeError::TooManyRuns {
                range,
                limit: self.max_runs,
            });
        }
        let mut cursor = s;
        let mut new_start = s;
        let mut new_end = e;
        for &(rs, re) in &near {
            new_start = new_start.min(rs);
            new_end = new_end.max(re);
            // The gap [cursor, rs) inside [s, e) was private and becomes shared.
            let gap_end = rs.min(e);
            if gap_end > cursor {
                changed.push(pfn_range(cursor, gap_end));
            }
            cursor = cursor.max(re);
        }
        if cursor < e {
            changed.push(pfn_range(cursor, e));
        }
        for &(rs, _) in &near {
            self.runs.remove(&rs);
        }
        self.runs.insert(new_start, new_end);
        let n: u64 = changed.iter().map(|r| r.len() >> PAGE_SHIFT).sum();
        self.shared_pages += n;
        Ok(n)
    }

    fn make_private(
        &mut self,
        s: u64,
        e: u64,
        range: GpaRange,
        changed: &mut Vec<GpaRange>,
    ) -> Result<u64, AttributeError> {
        let near = self.runs_near(s, e, false);
        let splits = near.iter().any(|&(rs, re)| rs < s && re > e);
        if splits && self.runs.len() >= self.max_runs {
            return Err(AttributeError::TooManyRuns {
                range,
                limit: self.max_runs,
            });
        }
        let mut n = 0;
        for &(rs, re) in &near {
            let os = rs.max(s);
            let oe = re.min(e);
            changed.push(pfn_range(os, oe));
            n += oe - os;
            self.runs.remove(&rs);
            if rs < s {
                self.runs.insert(rs, s);
            }
            if re > e {
                self.runs.insert(e, re);
            }
        }
        self.shared_pages -= n;
        Ok(n)
    }

    /// The run containing `pfn`, if any.
    fn run_containing(&self, pfn: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=pfn)
            .next_back()
            .filter(|&(_, &re)| re > pfn)
            .map(|(&rs, &re)| (rs, re))
    }
}

/// A read guard on an [`AttributeMap`]: consistent queries; conversions wait until it is
/// dropped. Do not take another guard on the same thread while holding one.
pub struct AttributeReadGuard<'a> {
    inner: RwLockReadGuard<'a, Inner>,
    gpaw: Gpaw,
}

impl fmt::Debug for AttributeReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttributeReadGuard")
            .field("generation", &self.inner.generation)
            .finish_non_exhaustive()
    }
}

impl AttributeReadGuard<'_> {
    /// The generation this guard sees.
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The TD's GPA width.
    pub fn gpaw(&self) -> Gpaw {
        self.gpaw
    }

    /// Number of shared 4 KiB pages.
    pub fn shared_pages(&self) -> u64 {
        self.inner.shared_pages
    }

    /// Number of maximal shared runs.
    pub fn run_count(&self) -> usize {
        self.inner.runs.len()
    }

    fn check_canonical(&self, gpa: Gpa) -> Result<(), AttributeError> {
        if gpa.raw() >= canonical_limit(self.gpaw) {
            return Err(AttributeError::OutOfSpace {
                gpa,
                gpaw: self.gpaw,
            });
        }
        Ok(())
    }

    /// State of the page holding the canonical address `gpa`.
    pub fn state(&self, gpa: Gpa) -> Result<PageState, AttributeError> {
        self.check_canonical(gpa)?;
        Ok(match self.inner.run_containing(gpa.raw() >> PAGE_SHIFT) {
            Some(_) => PageState::Shared,
            None => PageState::Private,
        })
    }

    /// Whether every page touched by the canonical byte range is in `state` (true when empty).
    pub fn is_all(&self, range: GpaRange, state: PageState) -> Result<bool, AttributeError> {
        let range = self.canonical(range)?;
        if range.is_empty() {
            return Ok(true);
        }
        Ok(match state {
            PageState::Shared => self.first_not_shared(range).is_none(),
            PageState::Private => {
                let s = range.start().raw() >> PAGE_SHIFT;
                let e = (range.end().raw() - 1) / PAGE_SIZE_4K + 1;
                self.inner.runs_near(s, e, false).is_empty()
            }
        })
    }

    fn canonical(&self, range: GpaRange) -> Result<GpaRange, AttributeError> {
        Ok(GpaRange::new_in(
            range.start(),
            range.len(),
            // The canonical space is the lower half of the GPAW space.
            self.gpaw,
        )
        .and_then(|r| {
            if r.end().raw() > canonical_limit(self.gpaw) {
                Err(LayoutError::OutOfSpace {
                    start: r.start().raw(),
                    len: r.len(),
                    limit: canonical_limit(self.gpaw),
                })
            } else {
                Ok(r)
            }
        })?)
    }

    /// The first byte of the (canonical, non-empty) range whose page is not shared, or `None`
    /// if the whole range is shared. Addresses outside the canonical space count as not shared.
    pub fn first_not_shared(&self, range: GpaRange) -> Option<Gpa> {
        if range.is_empty() {
            return None;
        }
        let limit = canonical_limit(self.gpaw);
        if range.start().raw() >= limit {
            return Some(range.start());
        }
        let pfn = range.start().raw() >> PAGE_SHIFT;
        let Some((_, re)) = self.inner.run_containing(pfn) else {
            return Some(range.start());
        };
        // Runs are maximal, so the page at `re` is private (or beyond the space).
        let run_end = re << PAGE_SHIFT;
        if run_end >= range.end().raw() {
            None
        } else {
            Some(Gpa(run_end))
        }
    }

    /// Iterates over the maximal shared runs in address order.
    pub fn shared_ranges(&self) -> impl Iterator<Item = GpaRange> + '_ {
        self.inner.runs.iter().map(|(&s, &e)| pfn_range(s, e))
    }
}

/// Iterator over the maximal shared runs of an [`AttributeMap`], holding a read guard
/// (see [`AttributeMap::shared_ranges`]).
pub struct SharedRanges<'a> {
    guard: AttributeReadGuard<'a>,
    next_pfn: u64,
}

impl fmt::Debug for SharedRanges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRanges")
            .field("next_pfn", &self.next_pfn)
            .finish_non_exhaustive()
    }
}

impl Iterator for SharedRanges<'_> {
    type Item = GpaRange;

    fn next(&mut self) -> Option<GpaRange> {
        let (&s, &e) = self.guard.inner.runs.range(self.next_pfn..).next()?;
        self.next_pfn = e;
        Some(pfn_range(s, e))
    }
}
