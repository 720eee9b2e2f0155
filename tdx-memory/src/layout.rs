//! GPA layout helpers on top of [`tdx_abi::gpa`]: checked byte ranges of a TD's GPA space,
//! page iteration, intersection and containment, shared/private alias conversion and the
//! canonicalisation of device-visible (DMA) addresses.
//!
//! # Canonical addresses
//!
//! A TD's GPA space `[0, 1 << GPAW)` holds two aliases of the same guest-physical page: the
//! private alias (SHARED bit clear) and the shared alias (SHARED bit = bit `GPAW - 1` set).
//! KVM memslots, `KVM_SET_MEMORY_ATTRIBUTES` and `KVM_HC_MAP_GPA_RANGE` all use the
//! *canonical* form, i.e. the private alias: the SHARED bit is a flag, not an address bit.
//! Everything in this crate that is keyed by GPA (the attribute map, the shared-only memory)
//! uses canonical addresses, which therefore lie below [`canonical_limit`].
//!
//! A device-visible address (a virtio descriptor `addr`, a ring address, a DMA address) is
//! canonicalised with [`canonicalize_device_range`]: any bit at or above GPAW is rejected, the
//! SHARED bit is cleared (Linux DMA addresses have it clear, firmware sometimes sets it), and
//! the whole range must stay inside the canonical space without overflow.
//!
//! This module is `no_std` and allocation-free.

use core::fmt;

use tdx_abi::gpa::{Gpa, Gpaw, PAGE_SIZE_4K};

/// Exclusive upper bound of the canonical (private-alias) GPA space: `1 << (GPAW - 1)`,
/// i.e. the value of the SHARED bit.
pub const fn canonical_limit(gpaw: Gpaw) -> u64 {
    gpaw.shared_mask()
}

/// Why a GPA range or a device address is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `start + len` overflows 64 bits.
    Overflow {
        /// Start of the range.
        start: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The range is empty where a non-empty range is required.
    Empty {
        /// Start of the range.
        start: u64,
    },
    /// Start or length is not a multiple of 4 KiB where page granularity is required.
    Misaligned {
        /// Start of the range.
        start: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The address has a bit set at or above GPAW (outside `[0, 1 << GPAW)`).
    AboveGpaw {
        /// The offending address.
        addr: u64,
        /// The TD's GPA width.
        gpaw: Gpaw,
    },
    /// The range does not fit in the space it must lie in (the GPAW space, or the canonical
    /// space below the SHARED bit); it would cross the SHARED bit or the top of the GPAW space.
    OutOfSpace {
        /// Start of the range (as given).
        start: u64,
        /// Length in bytes.
        len: u64,
        /// Exclusive limit the range had to stay below.
        limit: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::Overflow { start, len } => {
                write!(f, "GPA range {start:#x}+{len:#x} overflows 64 bits")
            }
            LayoutError::Empty { start } => write!(f, "GPA range at {start:#x} is empty"),
            LayoutError::Misaligned { start, len } => write!(
                f,
                "GPA range {start:#x}+{len:#x} is not aligned to 4 KiB pages"
            ),
            LayoutError::AboveGpaw { addr, gpaw } => {
                write!(f, "address {addr:#x} has bits at or above {gpaw}")
            }
            LayoutError::OutOfSpace { start, len, limit } => write!(
                f,
                "GPA range {start:#x}+{len:#x} does not fit below {limit:#x}"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

/// A byte range `[start, start + len)` of guest physical addresses. `start + len` never
/// overflows (checked at construction); the range may be empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GpaRange {
    start: Gpa,
    len: u64,
}

impl GpaRange {
    /// A byte range; fails if `start + len` overflows.
    pub const fn new(start: Gpa, len: u64) -> Result<Self, LayoutError> {
        if start.0.checked_add(len).is_none() {
            return Err(LayoutError::Overflow {
                start: start.0,
                len,
            });
        }
        Ok(GpaRange { start, len })
    }

    /// Crate-internal constructor for ranges whose bounds are known not to overflow.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) const fn new_unchecked(start: Gpa, len: u64) -> Self {
        debug_assert!(start.0.checked_add(len).is_some());
        GpaRange { start, len }
    }

    /// The range `[start, end)`; fails if `end < start`.
    pub const fn from_bounds(start: Gpa, end: Gpa) -> Result<Self, LayoutError> {
        match end.0.checked_sub(start.0) {
            Some(len) => Ok(GpaRange { start, len }),
            None => Err(LayoutError::Empty { start: start.0 }),
        }
    }

    /// A byte range that lies inside the GPAW space `[0, 1 << GPAW)` (either alias).
    pub const fn new_in(start: Gpa, len: u64, gpaw: Gpaw) -> Result<Self, LayoutError> {
        match Self::new(start, len) {
            Ok(r) => r.check_below(gpaw.limit()),
            Err(e) => Err(e),
        }
    }

    /// A non-empty, 4 KiB-aligned range inside the canonical space (below the SHARED bit):
    /// the operand form of a conversion (`KVM_SET_MEMORY_ATTRIBUTES`, MapGPA after KVM has
    /// stripped the SHARED bit).
    pub const fn new_pages(start: Gpa, len: u64, gpaw: Gpaw) -> Result<Self, LayoutError> {
        let r = match Self::new(start, len) {
            Ok(r) => r,
            Err(e) => return Err(e),
        };
        if len == 0 {
            return Err(LayoutError::Empty { start: start.0 });
        }
        if !r.is_page_aligned() {
            return Err(LayoutError::Misaligned {
                start: start.0,
                len,
            });
        }
        r.check_below(canonical_limit(gpaw))
    }

    const fn check_below(self, limit: u64) -> Result<Self, LayoutError> {
        // `start + len` cannot overflow (checked at construction).
        if self.start.0 + self.len > limit || self.start.0 >= limit {
            return Err(LayoutError::OutOfSpace {
                start: self.start.0,
                len: self.len,
                limit,
            });
        }
        Ok(self)
    }

    /// First byte of the range.
    pub const fn start(&self) -> Gpa {
        self.start
    }

    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Exclusive end (`start + len`).
    pub const fn end(&self) -> Gpa {
        Gpa(self.start.0 + self.len)
    }

    /// Whether start and length are multiples of 4 KiB.
    pub const fn is_page_aligned(&self) -> bool {
        (self.start.0 | self.len) & (PAGE_SIZE_4K - 1) == 0
    }

    /// Whether `gpa` lies inside the range.
    pub const fn contains(&self, gpa: Gpa) -> bool {
        gpa.0 >= self.start.0 && gpa.0 < self.start.0 + self.len
    }

    /// Whether `other` lies entirely inside this range (an empty `other` is contained when its
    /// start lies in `[start, end]`).
    pub const fn contains_range(&self, other: &GpaRange) -> bool {
        other.start.0 >= self.start.0 && other.start.0 + other.len <= self.start.0 + self.len
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &GpaRange) -> bool {
        self.start.0 < other.start.0 + other.len && other.start.0 < self.start.0 + self.len
    }

    /// The bytes common to both ranges, or `None` if they do not overlap.
    pub const fn intersection(&self, other: &GpaRange) -> Option<GpaRange> {
        if !self.overlaps(other) {
            return None;
        }
        let start = if self.start.0 > other.start.0 {
            self.start.0
        } else {
            other.start.0
        };
        let end_a = self.start.0 + self.len;
        let end_b = other.start.0 + other.len;
        let end = if end_a < end_b { end_a } else { end_b };
        Some(GpaRange {
            start: Gpa(start),
            len: end - start,
        })
    }

    /// The smallest 4 KiB-aligned range covering this one; `None` if rounding the end up
    /// overflows. An empty range stays empty (at its page-aligned start).
    pub const fn page_cover(&self) -> Option<GpaRange> {
        let start = self.start.0 & !(PAGE_SIZE_4K - 1);
        if self.len == 0 {
            return Some(GpaRange {
                start: Gpa(start),
                len: 0,
            });
        }
        let end = match (self.start.0 + self.len).checked_add(PAGE_SIZE_4K - 1) {
            Some(e) => e & !(PAGE_SIZE_4K - 1),
            None => return None,
        };
        Some(GpaRange {
            start: Gpa(start),
            len: end - start,
        })
    }

    /// Number of 4 KiB pages the range touches (0 for an empty range).
    pub const fn page_count(&self) -> u64 {
        if self.len == 0 {
            return 0;
        }
        let first = self.start.0 / PAGE_SIZE_4K;
        let last = (self.start.0 + self.len - 1) / PAGE_SIZE_4K;
        last - first + 1
    }

    /// Iterates over the 4 KiB-aligned start address of every page the range touches.
    pub fn pages(&self) -> Pages {
        let first = self.start.0 / PAGE_SIZE_4K;
        Pages {
            next: first,
            remaining: self.page_count(),
        }
    }

    /// The shared alias of the range (SHARED bit set). Fails unless the range is canonical
    /// (entirely below the SHARED bit).
    pub const fn to_shared(&self, gpaw: Gpaw) -> Result<GpaRange, LayoutError> {
        match self.check_below(canonical_limit(gpaw)) {
            Ok(r) => Ok(GpaRange {
                start: r.start.to_shared(gpaw),
                len: r.len,
            }),
            Err(e) => Err(e),
        }
    }

    /// The private (canonical) alias of a range given in either alias. Fails if the range is
    /// outside the GPAW space or straddles the SHARED bit.
    pub const fn to_private(&self, gpaw: Gpaw) -> Result<GpaRange, LayoutError> {
        match self.check_below(gpaw.limit()) {
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        let start = self.start.to_private(gpaw);
        let r = GpaRange {
            start,
            len: self.len,
        };
        match r.check_below(canonical_limit(gpaw)) {
            Ok(r) => Ok(r),
            Err(_) => Err(LayoutError::OutOfSpace {
                start: self.start.0,
                len: self.len,
                limit: canonical_limit(gpaw),
            }),
        }
    }
}

impl fmt::Display for GpaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.start.0 + self.len)
    }
}

/// Iterator over the 4 KiB page addresses of a [`GpaRange`] (see [`GpaRange::pages`]).
#[derive(Clone, Debug)]
pub struct Pages {
    next: u64,
    remaining: u64,
}

impl Iterator for Pages {
    type Item = Gpa;

    fn next(&mut self) -> Option<Gpa> {
        if self.remaining == 0 {
            return None;
        }
        let gpa = Gpa(self.next * PAGE_SIZE_4K);
        self.next += 1;
        self.remaining -= 1;
        Some(gpa)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, usize::try_from(self.remaining).ok())
    }
}

/// Canonicalises one device-visible address: rejects any bit at or above GPAW and clears the
/// SHARED bit.
pub const fn canonicalize_device_address(addr: u64, gpaw: Gpaw) -> Result<Gpa, LayoutError> {
    if addr >= gpaw.limit() {
        return Err(LayoutError::AboveGpaw { addr, gpaw });
    }
    Ok(Gpa(addr).to_private(gpaw))
}

/// Canonicalises a device-visible byte range `[addr, addr + len)`: rejects bits at or above
/// GPAW, clears the SHARED bit, and requires the canonical range to end at or below the
/// SHARED bit without overflow (so a range cannot run from one alias into the other or past
/// the top of the GPAW space).
pub const fn canonicalize_device_range(
    addr: u64,
    len: u64,
    gpaw: Gpaw,
) -> Result<GpaRange, LayoutError> {
    let start = match canonicalize_device_address(addr, gpaw) {
        Ok(g) => g,
        Err(e) => return Err(e),
    };
    let r = match GpaRange::new(start, len) {
        Ok(r) => r,
        Err(_) => return Err(LayoutError::Overflow { start: addr, len }),
    };
    if r.start.0 + r.len > canonical_limit(gpaw) {
        return Err(LayoutError::OutOfSpace {
            start: addr,
            len,
            limit: if addr & gpaw.shared_mask() != 0 {
                gpaw.limit()
            } else {
                canonical_limit(gpaw)
            },
        });
    }
    Ok(r)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    const G48: Gpaw = Gpaw::Gpaw48;

    #[test]
    fn construction_checks() {
        assert_eq!(
            GpaRange::new(Gpa(u64::MAX), 1),
            Err(LayoutError::Overflow {
                start: u64::MAX,
                len: 1
            })
        );
        assert!(GpaRange::new(Gpa(u64::MAX), 0).is_ok());
        assert_eq!(
            GpaRange::new_pages(Gpa(0x1000), 0x800, G48),
            Err(LayoutError::Misaligned {
                start: 0x1000,
                len: 0x800
            })
        );
        assert_eq!(
            GpaRange::new_pages(Gpa(0x1000), 0, G48),
            Err(LayoutError::Empty { start: 0x1000 })
        );
        // Last canonical page of GPAW 48 is fine, one more page crosses bit 47.
        assert!(GpaRange::new_pages(Gpa(0x7fff_ffff_f000), 0x1000, G48).is_ok());
        assert_eq!(
            GpaRange::new_pages(Gpa(0x7fff_ffff_f000), 0x2000, G48),
            Err(LayoutError::OutOfSpace {
                start: 0x7fff_ffff_f000,
                len: 0x2000,
                limit: 0x8000_0000_0000
            })
        );
        assert!(GpaRange::new_in(Gpa(0xffff_ffff_f000), 0x1000, G48).is_ok());
        assert!(GpaRange::new_in(Gpa(0xffff_ffff_f000), 0x1001, G48).is_err());
        assert!(GpaRange::new_pages(Gpa(0x7_ffff_ffff_f000), 0x1000, Gpaw::Gpaw52).is_ok());
    }

    #[test]
    fn pages_and_intersections() {
        let r = GpaRange::new(Gpa(0x1ff0), 0x20).unwrap();
        assert_eq!(r.page_count(), 2);
        let pages: [Gpa; 2] = {
            let mut it = r.pages();
            [it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(pages, [Gpa(0x1000), Gpa(0x2000)]);
        assert_eq!(
            r.page_cover().unwrap(),
            GpaRange::new(Gpa(0x1000), 0x2000).unwrap()
        );
        assert_eq!(GpaRange::new(Gpa(0x5000), 0).unwrap().page_count(), 0);

        let a = GpaRange::new(Gpa(0x1000), 0x3000).unwrap();
        let b = GpaRange::new(Gpa(0x3000), 0x3000).unwrap();
        assert_eq!(
            a.intersection(&b),
            Some(GpaRange::new(Gpa(0x3000), 0x1000).unwrap())
        );
        let c = GpaRange::new(Gpa(0x4000), 0x1000).unwrap();
        assert_eq!(a.intersection(&c), None);
        assert!(!a.overlaps(&c));
        assert!(a.contains(Gpa(0x3fff)));
        assert!(!a.contains(Gpa(0x4000)));
        assert!(a.contains_range(&GpaRange::new(Gpa(0x2000), 0x2000).unwrap()));
        assert!(!a.contains_range(&b));
        assert_eq!(format!("{a}"), "[0x1000, 0x4000)");
    }

    #[test]
    fn aliases() {
        let r = GpaRange::new(Gpa(0x10_0000), 0x2000).unwrap();
        let s = r.to_shared(G48).unwrap();
        assert_eq!(s.start(), Gpa(0x8000_0010_0000));
        assert_eq!(s.to_private(G48).unwrap(), r);
        assert_eq!(r.to_private(G48).unwrap(), r);
        // Straddles the shared bit: 0x7fff_ffff_f000 + 0x2000.
        let straddle = GpaRange::new(Gpa(0x7fff_ffff_f000), 0x2000).unwrap();
        assert!(straddle.to_private(G48).is_err());
        assert!(straddle.to_shared(G48).is_err());
    }

    #[test]
    fn device_addresses() {
        assert_eq!(
            canonicalize_device_address(0x8000_0010_0000, G48),
            Ok(Gpa(0x10_0000))
        );
        assert_eq!(
            canonicalize_device_address(0x10_0000, G48),
            Ok(Gpa(0x10_0000))
        );
        assert_eq!(
            canonicalize_device_address(0x1_0000_0010_0000, G48),
            Err(LayoutError::AboveGpaw {
                addr: 0x1_0000_0010_0000,
                gpaw: G48
            })
        );
        // Bit 51 is the shared bit under GPAW 52 but above GPAW under 48.
        assert_eq!(
            canonicalize_device_address(0x8_0000_0000_1000, Gpaw::Gpaw52),
            Ok(Gpa(0x1000))
        );
        assert!(canonicalize_device_address(0x8_0000_0000_1000, G48).is_err());
        assert_eq!(
            canonicalize_device_range(0x8000_0000_1000, 0x100, G48).unwrap(),
            GpaRange::new(Gpa(0x1000), 0x100).unwrap()
        );
        // Running off the top of the shared alias.
        assert!(matches!(
            canonicalize_device_range(0xffff_ffff_ff00, 0x200, G48),
            Err(LayoutError::OutOfSpace {
                limit: 0x1_0000_0000_0000,
                ..
            })
        ));
        // Running from the private alias into the shared one.
        assert!(matches!(
            canonicalize_device_range(0x7fff_ffff_ff00, 0x200, G48),
            Err(LayoutError::OutOfSpace {
                limit: 0x8000_0000_0000,
                ..
            })
        ));
    }
}
