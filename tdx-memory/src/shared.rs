//! The shared-only guest memory: the only view of a TD's memory a device gets.
//!
//! [`SharedGuestMemory`] wraps the VMM's *shared* backing (a vm-memory [`GuestMemoryMmap`]
//! mapping the `userspace_addr` half of the TD's memslots; the guest_memfd private half never
//! appears in vm-memory) together with the TD's [`AttributeMap`]. Devices access memory through
//! a [`SharedMemoryView`], a vm-memory 0.18 [`GuestMemory`] that admits a range only if every
//! 4 KiB page it touches is backed **and** currently [`PageState::Shared`]. virtio-queue 0.18
//! routes every ring, descriptor-table and Reader/Writer access through
//! [`GuestMemory::check_range`] / [`GuestMemory::get_slices`], so the policy covers all of
//! them. `physical_memory()` returns `None`, so nothing can reach the raw backing around the
//! check, and the view deliberately does not implement `GuestMemoryBackend`.
//!
//! # Device addresses and the SHARED bit
//!
//! Decision: a device-visible address may carry the SHARED bit or not; it is **canonicalised**
//! by clearing the SHARED bit (bit `GPAW - 1`), and any address with a bit at or above GPAW is
//! refused ([`SharedAccessError::AboveGpaw`]). Linux TDX guests hand devices DMA addresses with
//! the SHARED bit clear (the kernel removes it from `physical_mask`); firmware has been seen to
//! set it. Both aliases name the same page and the check is against the canonical page, so
//! accepting either is safe. A range must stay inside the canonical space after clearing the
//! bit (`[addr, addr + len)` may not run into the other alias or past the top of the GPAW
//! space, [`SharedAccessError::OutOfRange`]). The backing regions themselves are placed at
//! canonical GPAs (as KVM memslots are; [`SharedGuestMemory::new`] refuses regions at or above
//! the SHARED bit).
//!
//! # Check and access under one guard
//!
//! A view holds a read guard of the attribute map for its whole life, and every slice it hands
//! out borrows the view: the borrow checker guarantees no access through a slice can happen
//! after the guard is dropped. So each check and the access it admits happen under the same
//! guard, and every access linearises before or after each conversion (see
//! [`crate::attributes`]). This also holds for virtio-queue's `Reader`/`Writer`, which collect
//! slices when they are built and use them later: they borrow the view, so they cannot outlive
//! it. Conversions (the write lock) wait until all views are dropped, so a device must hold a
//! view only for a bounded batch of work (one request, one queue notification), never across
//! blocking waits, and never take a second view (or call a locking method of the map) on the
//! same thread while holding one.
//!
//! # Stale data
//!
//! [`SharedGuestMemory::new`] registers a [`ConversionListener`] that zeroes the shared backing
//! of every page that converts to private, while the map's write lock is held. Data written to
//! the shared alias before a conversion to private (by the guest or by a device access that
//! linearised before the conversion) therefore never reappears when the page is converted back
//! to shared; the guest then sees zeros, as with KVM user space that punches holes.
//!
//! # Errors
//!
//! vm-memory's `GuestMemoryError` is a closed enum; refusals are returned as
//! `GuestMemoryError::IOError` wrapping a typed [`SharedAccessError`] (which names the device
//! address, the length and the offending GPA). Recover it with
//! [`SharedAccessError::from_guest_memory_error`]. [`SharedMemoryView::check`] returns the typed
//! error directly.

use std::fmt;
use std::io;
use std::sync::Arc;

use tdx_abi::gpa::{Gpa, Gpaw};
use vm_memory::bitmap::{Bitmap, BS};
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError,
    GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress, Permissions,
};

use crate::attributes::{
    AttributeMap, AttributeReadGuard, ConversionEvent, ConversionListener, PageState,
};
use crate::layout::{canonical_limit, canonicalize_device_range, GpaRange, LayoutError};

/// Why a device access was refused by the shared-only memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SharedAccessError {
    /// The device address has a bit set at or above GPAW.
    #[error("device address {addr:#x} has bits at or above {gpaw}")]
    AboveGpaw {
        /// The address as the device gave it.
        addr: u64,
        /// The TD's GPA width.
        gpaw: Gpaw,
    },
    /// `addr + len` overflows or leaves the canonical GPA space (crosses the SHARED bit or
    /// the top of the GPAW space).
    #[error("device range {addr:#x}+{len:#x} overflows or leaves the GPA space")]
    OutOfRange {
        /// The address as the device gave it.
        addr: u64,
        /// The length of the access.
        len: u64,
    },
    /// The range touches a page that is currently private.
    #[error("device range {addr:#x}+{len:#x} touches private GPA {gpa}")]
    Private {
        /// The address as the device gave it.
        addr: u64,
        /// The length of the access.
        len: u64,
        /// The first private byte (canonical GPA).
        gpa: Gpa,
    },
    /// The range touches a GPA with no shared backing (outside every memslot).
    #[error("device range {addr:#x}+{len:#x} touches unbacked GPA {gpa}")]
    Absent {
        /// The address as the device gave it.
        addr: u64,
        /// The length of the access.
        len: u64,
        /// The first unbacked byte (canonical GPA).
        gpa: Gpa,
    },
}

impl SharedAccessError {
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            SharedAccessError::AboveGpaw { .. } | SharedAccessError::OutOfRange { .. } => {
                io::ErrorKind::InvalidInput
            }
            SharedAccessError::Private { .. } => io::ErrorKind::PermissionDenied,
            SharedAccessError::Absent { .. } => io::ErrorKind::NotFound,
        }
    }

    /// Wraps the error as a vm-memory error (`GuestMemoryError::IOError`).
    pub fn into_guest_memory_error(self) -> GuestMemoryError {
        GuestMemoryError::IOError(io::Error::new(self.io_kind(), self))
    }

    /// The typed error inside a vm-memory error produced by [`SharedMemoryView`], if any.
    pub fn from_guest_memory_error(e: &GuestMemoryError) -> Option<&SharedAccessError> {
        match e {
            GuestMemoryError::IOError(io) => io.get_ref()?.downcast_ref::<SharedAccessError>(),
            _ => None,
        }
    }
}

/// Why a [`SharedGuestMemory`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SharedMemoryError {
    /// A backing region does not lie entirely in the canonical GPA space (below the SHARED
    /// bit); memslots never include the SHARED bit.
    #[error(
        "shared backing region at {start} ({len:#x} bytes) is not below the SHARED bit of {gpaw}"
    )]
    RegionNotCanonical {
        /// Region start.
        start: Gpa,
        /// Region length.
        len: u64,
        /// The TD's GPA width.
        gpaw: Gpaw,
    },
}

/// The shared backing of a TD plus its attribute map; hands out [`SharedMemoryView`]s.
#[derive(Clone)]
pub struct SharedGuestMemory<B: Bitmap + 'static = ()> {
    attrs: Arc<AttributeMap>,
    mem: GuestMemoryMmap<B>,
}

impl<B: Bitmap + 'static> fmt::Debug for SharedGuestMemory<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedGuestMemory")
            .field("attrs", &self.attrs)
            .field("regions", &self.mem.num_regions())
            .finish()
    }
}

impl<B: Bitmap + Send + Sync + 'static> SharedGuestMemory<B> {
    /// Wraps the shared backing `mem` (regions at canonical GPAs) and registers, on `attrs`, the
    /// listener that zeroes the backing of pages converted to private.
    pub fn new(
        attrs: Arc<AttributeMap>,
        mem: GuestMemoryMmap<B>,
    ) -> Result<Self, SharedMemoryError> {
        let gpaw = attrs.gpaw();
        for region in mem.iter() {
            let start = region.start_addr().raw_value();
            let len = region.len();
            let end = start.checked_add(len);
            if end.is_none_or(|end| end > canonical_limit(gpaw)) {
                return Err(SharedMemoryError::RegionNotCanonical {
                    start: Gpa(start),
                    len,
                    gpaw,
                });
            }
        }
        attrs.add_listener(Arc::new(DiscardSharedBacking { mem: mem.clone() }));
        Ok(SharedGuestMemory { attrs, mem })
    }
}

impl<B: Bitmap + 'static> SharedGuestMemory<B> {
    /// The attribute map.
    pub fn attributes(&self) -> &Arc<AttributeMap> {
        &self.attrs
    }

    /// The TD's GPA width.
    pub fn gpaw(&self) -> Gpaw {
        self.attrs.gpaw()
    }

    /// The raw shared backing, **without** the attribute-map checks: for an execution engine
    /// that maps the backing into a guest itself and consults the map (and its generation)
    /// to decide which pages the guest may reach. Host code should use [`Self::view`].
    pub fn backing(&self) -> &GuestMemoryMmap<B> {
        &self.mem
    }

    /// Takes a view: a [`GuestMemory`] whose accesses are all checked against, and performed
    /// under, one read guard of the attribute map. Conversions wait until it is dropped.
    pub fn view(&self) -> SharedMemoryView<'_, B> {
        SharedMemoryView {
            guard: self.attrs.read(),
            mem: &self.mem,
        }
    }
}

/// Zeroes the shared backing of pages that became private (see the module docs).
struct DiscardSharedBacking<B: Bitmap + 'static> {
    mem: GuestMemoryMmap<B>,
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl<B: Bitmap + 'static> DiscardSharedBacking<B> {
    fn zero(&self, range: GpaRange) {
        for region in self.mem.iter() {
            let rstart = region.start_addr().raw_value();
            let Ok(rrange) = GpaRange::new(Gpa(rstart), region.len()) else {
                continue;
            };
            let Some(part) = rrange.intersection(&range) else {
                continue;
            };
            let mut off = part.start().raw() - rstart;
            let end = off + part.len();
            while off < end {
                let n = (end - off).min(ZEROS.len() as u64) as usize;
                // Cannot fail: the part lies inside the region by construction. Nothing
                // sensible to do on failure anyway (listeners are infallible).
                let _ = region.write_slice(&ZEROS[..n], MemoryRegionAddress(off));
                off += n as u64;
            }
        }
    }
}

impl<B: Bitmap + Send + Sync + 'static> ConversionListener for DiscardSharedBacking<B> {
    fn converted(&self, event: &ConversionEvent<'_>) {
        if event.to == PageState::Private {
            for r in event.changed {
                self.zero(*r);
            }
        }
    }
}

/// A device's view of the shared memory under one read guard of the attribute map (see the
/// module docs). Implements vm-memory's [`GuestMemory`], hence `Bytes<GuestAddress>`, and can
/// be handed to virtio-queue.
pub struct SharedMemoryView<'a, B: Bitmap + 'static = ()> {
    guard: AttributeReadGuard<'a>,
    mem: &'a GuestMemoryMmap<B>,
}

impl<B: Bitmap + 'static> fmt::Debug for SharedMemoryView<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemoryView")
            .field("generation", &self.guard.generation())
            .finish_non_exhaustive()
    }
}

impl<'a, B: Bitmap + 'static> SharedMemoryView<'a, B> {
    /// The attribute-map generation this view sees (constant for the view's life).
    pub fn generation(&self) -> u64 {
        self.guard.generation()
    }

    /// The read guard, for further attribute queries under the same guard.
    pub fn attributes(&self) -> &AttributeReadGuard<'a> {
        &self.guard
    }

    /// Checks a device access of `len` bytes at device address `addr` and returns the
    /// canonical range it covers. An empty access only needs a canonical address.
    pub fn check(&self, addr: GuestAddress, len: usize) -> Result<GpaRange, SharedAccessError> {
        let gpaw = self.guard.gpaw();
        let raw = addr.raw_value();
        let len64 = len as u64;
        let range = canonicalize_device_range(raw, len64, gpaw).map_err(|e| match e {
            LayoutError::AboveGpaw { .. } => SharedAccessError::AboveGpaw { addr: raw, gpaw },
            _ => SharedAccessError::OutOfRange {
                addr: raw,
                len: len64,
            },
        })?;
        if range.is_empty() {
            return Ok(range);
        }
        let private = self.guard.first_not_shared(range);
        let absent = self.first_absent(range);
        match (absent, private) {
            (Some(a), Some(p)) if a <= p => Err(SharedAccessError::Absent {
                addr: raw,
                len: len64,
                gpa: a,
            }),
            (Some(a), None) => Err(SharedAccessError::Absent {
                addr: raw,
                len: len64,
                gpa: a,
            }),
            (_, Some(p)) => Err(SharedAccessError::Private {
                addr: raw,
                len: len64,
                gpa: p,
            }),
            (None, None) => Ok(range),
        }
    }

    /// The first byte of the (non-empty, canonical) range not covered by a backing region.
    fn first_absent(&self, range: GpaRange) -> Option<Gpa> {
        let end = range.end().raw();
        let mut cur = range.start().raw();
        // Each step moves to the end of a distinct region: at most num_regions + 1 steps.
        for _ in 0..=self.mem.num_regions() {
            let Some(region) = self.mem.find_region(GuestAddress(cur)) else {
                return Some(Gpa(cur));
            };
            let rend = region.start_addr().raw_value().saturating_add(region.len());
            if rend >= end {
                return None;
            }
            cur = rend;
        }
        Some(Gpa(cur))
    }
}

impl<B: Bitmap + 'static> GuestMemory for SharedMemoryView<'_, B> {
    type PhysicalMemory = GuestMemoryMmap<B>;
    type Bitmap = B;

    fn check_range(&self, addr: GuestAddress, count: usize, _access: Permissions) -> bool {
        self.check(addr, count).is_ok()
    }

    fn get_slices<'s>(
        &'s self,
        addr: GuestAddress,
        count: usize,
        _access: Permissions,
    ) -> vm_memory::guest_memory::Result<impl GuestMemorySliceIterator<'s, BS<'s, B>>> {
        let range = self
            .check(addr, count)
            .map_err(SharedAccessError::into_guest_memory_error)?;
        // The slices borrow `self`, which holds the read guard: they cannot outlive it.
        Ok(GuestMemoryBackend::get_slices(
            self.mem,
            GuestAddress(range.start().raw()),
            count,
        ))
    }

    fn physical_memory(&self) -> Option<&Self::PhysicalMemory> {
        None
    }
}
