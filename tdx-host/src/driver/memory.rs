//! Host physical memory as the driver sees it: the [`HostMemory`] access trait and the
//! [`FrameAllocator`] that hands out 4 KiB frames of the TDX-usable ranges.
//!
//! Every page the driver gives the TDX module (PAMTs, TDR, TDCS, TDVPS, S-EPT, TD private
//! pages) and every buffer it places for the module (TDMR_INFO array, TD_PARAMS, source pages)
//! comes from the frame allocator, so a test can check that a TD's teardown gives every frame
//! back ([`FrameAllocator::free_frames`]).

use std::collections::BTreeMap;

/// Size of one frame.
pub const FRAME_SIZE: u64 = 4096;

/// Largest number of frames one allocator manages (2^26 frames = 256 GiB): bounds the bitmap
/// the allocator builds from its input ranges.
pub const MAX_FRAMES: u64 = 1 << 26;

/// Why a host physical-memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host physical memory access of {len} bytes at {pa:#x} failed")]
pub struct HostMemoryError {
    /// Physical address of the access.
    pub pa: u64,
    /// Length of the access.
    pub len: usize,
}

/// Read and write access to host physical memory with the host's key (HKID 0), as a ring-0
/// driver has through the direct map.
///
/// On TDX hardware a read of a TD-owned page returns ciphertext (or zeros with the TD-owner
/// bit) and a write poisons it; the driver only touches pages it owns.
pub trait HostMemory {
    /// Reads `buf.len()` bytes at `pa`.
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemoryError>;
    /// Writes `buf` at `pa`.
    fn write(&self, pa: u64, buf: &[u8]) -> Result<(), HostMemoryError>;
}

impl<T: HostMemory + ?Sized> HostMemory for &T {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemoryError> {
        (**self).read(pa, buf)
    }
    fn write(&self, pa: u64, buf: &[u8]) -> Result<(), HostMemoryError> {
        (**self).write(pa, buf)
    }
}

impl<T: HostMemory + ?Sized> HostMemory for std::sync::Arc<T> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemoryError> {
        (**self).read(pa, buf)
    }
    fn write(&self, pa: u64, buf: &[u8]) -> Result<(), HostMemoryError> {
        (**self).write(pa, buf)
    }
}

/// Why the frame allocator refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An input range is not 4 KiB aligned, is empty, or overlaps another one.
    #[error("usable range [{start:#x}, {end:#x}) is empty, unaligned or overlaps another")]
    InvalidRange {
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
    },
    /// The ranges hold more than [`MAX_FRAMES`] frames.
    #[error("{0} frames exceed the allocator's bound of {MAX_FRAMES}")]
    TooManyFrames(u64),
    /// No free run of the requested size and alignment.
    #[error("out of memory: no free run of {frames} frames aligned to {align:#x}")]
    OutOfMemory {
        /// Frames requested.
        frames: u64,
        /// Alignment requested in bytes.
        align: u64,
    },
    /// The request is malformed (zero frames, alignment not a power of two ≥ 4 KiB).
    #[error("invalid request: {frames} frames aligned to {align:#x}")]
    InvalidRequest {
        /// Frames requested.
        frames: u64,
        /// Alignment requested in bytes.
        align: u64,
    },
    /// A freed address is not a frame this allocator handed out.
    #[error("frame {0:#x} is not allocated by this allocator (double free or foreign frame)")]
    NotAllocated(u64),
}

/// One usable range with its bitmap (bit set = frame allocated).
#[derive(Clone, Debug)]
struct Range {
    start: u64,
    frames: u64,
    used: Vec<u64>,
}

impl Range {
    fn is_used(&self, i: u64) -> bool {
        self.used[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u64, used: bool) {
        let w = &mut self.used[(i / 64) as usize];
        if used {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

/// A bounded first-fit allocator of 4 KiB host frames over a set of usable physical ranges,
/// with contiguous aligned runs for PAMTs and 2 MiB pages.
///
/// Allocations are tracked by their first frame and length, so [`FrameAllocator::free`] of a
/// run returns exactly what was allocated, and a double free or a foreign address is an error.
#[derive(Clone, Debug)]
pub struct FrameAllocator {
    ranges: Vec<Range>,
    /// Live allocations: first frame PA -> number of frames.
    live: BTreeMap<u64, u64>,
    total: u64,
    free: u64,
}

impl FrameAllocator {
    /// Builds an allocator over `ranges` (`(start, end)` exclusive, 4 KiB aligned, disjoint).
    pub fn new(ranges: &[(u64, u64)]) -> Result<Self, FrameError> {
        let mut sorted = ranges.to_vec();
        sorted.sort_unstable();
        let mut out = Vec::with_capacity(sorted.len());
        let mut total: u64 = 0;
        let mut prev_end = 0u64;
        for (i, &(start, end)) in sorted.iter().enumerate() {
            if start >= end
                || start % FRAME_SIZE != 0
                || end % FRAME_SIZE != 0
                || (i > 0 && start < prev_end)
            {
                return Err(FrameError::InvalidRange { start, end });
            }
            prev_end = end;
            let frames = (end - start) / FRAME_SIZE;
            total = total.saturating_add(frames);
            if total > MAX_FRAMES {
                return Err(FrameError::TooManyFrames(total));
            }
            out.push(Range {
                start,
                frames,
                used: vec![0; frames.div_ceil(64) as usize],
            });
        }
        Ok(Self {
            ranges: out,
            live: BTreeMap::new(),
            total,
            free: total,
        })
    }

    /// Total frames managed.
    pub fn total_frames(&self) -> u64 {
        self.total
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Number of live allocations (runs).
    pub fn live_allocations(&self) -> usize {
        self.live.len()
    }

    /// The usable ranges, `(start, end)` exclusive.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|r| (r.start, r.start + r.frames * FRAME_SIZE))
            .collect()
    }

    /// Allocates one frame.
    pub fn allocate(&mut self) -> Result<u64, FrameError> {
        self.allocate_contiguous(1, FRAME_SIZE)
    }

    /// Allocates `frames` physically contiguous frames whose first address is aligned to
    /// `align` bytes (a power of two, at least 4 KiB). Returns the first address.
    pub fn allocate_contiguous(&mut self, frames: u64, align: u64) -> Result<u64, FrameError> {
        if frames == 0 || frames > self.total || !align.is_power_of_two() || align < FRAME_SIZE {
            return Err(FrameError::InvalidRequest { frames, align });
        }
        if frames > self.free {
            return Err(FrameError::OutOfMemory { frames, align });
        }
        let step = align / FRAME_SIZE;
        for r in &mut self.ranges {
            if r.frames < frames {
                continue;
            }
            // First index whose address is aligned.
            let first_pa = r.start.next_multiple_of(align);
            let first = (first_pa - r.start) / FRAME_SIZE;
            let mut i = first;
            'cand: while i + frames <= r.frames {
                // Fast skip over full words for single-frame requests.
                if frames == 1 && step == 1 && i % 64 == 0 && r.used[(i / 64) as usize] == u64::MAX
                {
                    i += 64;
                    continue;
                }
                for j in 0..frames {
                    if r.is_used(i + j) {
                        // Next aligned candidate after the used frame (aligned indices
                        // are `first + k * step`: the range start need not be aligned).
                        let next = i + j + 1;
                        i = first + (next - first).next_multiple_of(step);
                        continue 'cand;
                    }
                }
                for j in 0..frames {
                    r.set(i + j, true);
                }
                let pa = r.start + i * FRAME_SIZE;
                self.free -= frames;
                self.live.insert(pa, frames);
                return Ok(pa);
            }
        }
        Err(FrameError::OutOfMemory { frames, align })
    }

    /// Frees the run that starts at `pa` (as returned by an allocation).
    pub fn free(&mut self, pa: u64) -> Result<(), FrameError> {
        let frames = self.live.remove(&pa).ok_or(FrameError::NotAllocated(pa))?;
        let r = self
            .ranges
            .iter_mut()
            .find(|r| pa >= r.start && pa < r.start + r.frames * FRAME_SIZE)
            .ok_or(FrameError::NotAllocated(pa))?;
        let i = (pa - r.start) / FRAME_SIZE;
        for j in 0..frames {
            r.set(i + j, false);
        }
        self.free += frames;
        Ok(())
    }

    /// Whether `pa` is the start of a live allocation.
    pub fn is_allocated(&self, pa: u64) -> bool {
        self.live.contains_key(&pa)
    }

    /// Whether the frame containing `pa` is inside a usable range and currently in use.
    pub fn frame_in_use(&self, pa: u64) -> bool {
        self.ranges
            .iter()
            .find(|r| pa >= r.start && pa < r.start + r.frames * FRAME_SIZE)
            .is_some_and(|r| r.is_used((pa - r.start) / FRAME_SIZE))
    }

    /// The live allocations, `(first PA, frames)`, in address order: what leaked if the
    /// allocator was expected to be empty.
    pub fn leaks(&self) -> Vec<(u64, u64)> {
        self.live.iter().map(|(&pa, &n)| (pa, n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_roundtrip_and_alignment() {
        let mut a = FrameAllocator::new(&[(0x10_0000, 0x40_0000)]).unwrap();
        assert_eq!(a.total_frames(), 0x300);
        let p = a.allocate().unwrap();
        assert_eq!(p, 0x10_0000);
        let big = a.allocate_contiguous(512, 0x20_0000).unwrap();
        assert_eq!(big, 0x20_0000);
        assert_eq!(a.free_frames(), 0x300 - 513);
        assert_eq!(a.free(p), Ok(()));
        assert_eq!(a.free(p), Err(FrameError::NotAllocated(p)));
        a.free(big).unwrap();
        assert_eq!(a.free_frames(), 0x300);
        assert!(a.leaks().is_empty());
    }

    #[test]
    fn aligned_runs_skip_used_frames_in_an_unaligned_range() {
        // The range starts at 1 MiB: aligned 2 MiB candidates are at indices 256, 768, …
        let mut a = FrameAllocator::new(&[(0x10_0000, 0x80_0000)]).unwrap();
        let _low = a.allocate_contiguous(1, 0x20_0000).unwrap();
        let big = a.allocate_contiguous(512, 0x20_0000).unwrap();
        assert_eq!(
            big, 0x40_0000,
            "after the used frame at 2 MiB, the next 2 MiB boundary"
        );
        assert_eq!(big % 0x20_0000, 0);
    }

    #[test]
    fn rejects_bad_ranges_and_requests() {
        assert!(FrameAllocator::new(&[(0x1001, 0x3000)]).is_err());
        assert!(FrameAllocator::new(&[(0x0, 0x3000), (0x2000, 0x5000)]).is_err());
        let mut a = FrameAllocator::new(&[(0x0, 0x4000)]).unwrap();
        assert!(matches!(
            a.allocate_contiguous(5, 4096),
            Err(FrameError::InvalidRequest { .. })
        ));
        assert!(matches!(
            a.allocate_contiguous(1, 3000),
            Err(FrameError::InvalidRequest { .. })
        ));
        for _ in 0..4 {
            a.allocate().unwrap();
        }
        assert!(matches!(a.allocate(), Err(FrameError::OutOfMemory { .. })));
    }
}
