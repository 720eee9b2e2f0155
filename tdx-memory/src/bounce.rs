//! A SWIOTLB-style bounce pool, as a TD guest uses for device DMA.
//!
//! A TD cannot let a device touch private memory, so (with `VIRTIO_F_ACCESS_PLATFORM`) Linux
//! bounces every streaming DMA buffer through a pool of memory it converted to shared once at
//! boot. This module implements the same allocator and copy discipline, with the numbers of
//! Linux `kernel/dma/swiotlb.c` / `include/linux/swiotlb.h`:
//!
//! * the pool is cut into slots of [`IO_TLB_SIZE`] = 2 KiB (`IO_TLB_SHIFT` = 11); a slot is
//!   never shared by two mappings;
//! * slots are grouped in segments of [`IO_TLB_SEGSIZE`] = 128 slots and an allocation never
//!   crosses a segment, so the largest mapping is [`MAX_MAPPING_SIZE`] = 256 KiB (less with a
//!   `min_align_mask`, see [`max_mapping_size`]);
//! * per slot the pool keeps the number of free slots from it to the end of its segment (the
//!   `list` field of Linux), which makes "is there a free run of n slots here" O(1); the search
//!   is next-fit from the slot after the previous allocation, wrapping once around the pool;
//! * alignment is computed as Linux does: the low bits of the original address selected by the
//!   device's `min_align_mask` are preserved in the bounce address (bits below 2 KiB as an
//!   in-slot offset, higher bits by choosing the slot, or by padding slots when an allocation
//!   alignment is given); without any alignment requirement an allocation of 4 KiB or more is
//!   page aligned; every allocation is at least slot aligned;
//! * `map` copies the original buffer into the bounce buffer **for every direction**, as Linux
//!   does since its fix for leaking stale bounce data to devices: a device that writes only
//!   part of a `FROM_DEVICE` buffer must not make the CPU read back another mapping's old data,
//!   and the unwritten bytes must keep their original value; `unmap` copies back for
//!   `FROM_DEVICE`/`BIDIRECTIONAL`; `sync_for_device` copies in for
//!   `TO_DEVICE`/`BIDIRECTIONAL` and `sync_for_cpu` copies out for
//!   `FROM_DEVICE`/`BIDIRECTIONAL` (other directions are no-ops).
//!
//! # no_std core
//!
//! [`BouncePool`] is usable from a `no_std` TD payload without an allocator: it is generic over
//! its storage, typically `&mut [u8]` for the pool bytes (the memory the guest converted to
//! shared, addressed by the device at `dma_base`) and `&mut [Slot]` for the bookkeeping (one
//! [`Slot`] per 2 KiB slot, caller provided). Copies take `&[u8]` / `&mut [u8]` buffers. Every
//! loop is bounded by the number of slots. With feature `std`, [`SyncBouncePool`] owns its
//! storage and serialises access with a `Mutex` (Linux uses per-CPU "areas" with one lock
//! each; a single area is enough here).
//!
//! Not modelled: the device segment boundary mask (`dma_get_seg_boundary`; Linux's default of
//! 4 GiB is never crossed by a 256 KiB allocation inside a page-aligned pool below 4 GiB),
//! dynamic pools, and the DMA address limit check (the caller places the pool).

use core::fmt;

/// log2 of the slot size (`IO_TLB_SHIFT`).
pub const IO_TLB_SHIFT: u32 = 11;
/// Slot size in bytes (`IO_TLB_SIZE` = 2 KiB).
pub const IO_TLB_SIZE: usize = 1 << IO_TLB_SHIFT;
/// Slots per segment (`IO_TLB_SEGSIZE`); an allocation never crosses a segment.
pub const IO_TLB_SEGSIZE: usize = 128;
/// Largest mapping without a `min_align_mask`: one segment, 256 KiB.
pub const MAX_MAPPING_SIZE: usize = IO_TLB_SIZE * IO_TLB_SEGSIZE;
/// Bytes per segment; a pool's size must be a non-zero multiple of this.
pub const SEGMENT_BYTES: usize = MAX_MAPPING_SIZE;

const PAGE_SIZE: u64 = 4096;
const SLOT_MASK: u64 = IO_TLB_SIZE as u64 - 1;

/// The largest mapping a device with `min_align_mask` can get (Linux
/// `swiotlb_max_mapping_size`): 256 KiB minus `min_align_mask` rounded up to a slot.
pub const fn max_mapping_size(min_align_mask: u64) -> usize {
    if min_align_mask == 0 {
        return MAX_MAPPING_SIZE;
    }
    let rounded = match min_align_mask.checked_add(SLOT_MASK) {
        Some(v) => v & !SLOT_MASK,
        None => return 0,
    };
    if rounded >= MAX_MAPPING_SIZE as u64 {
        0
    } else {
        MAX_MAPPING_SIZE - rounded as usize
    }
}

/// Direction of a streaming DMA mapping (`enum dma_data_direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaDirection {
    /// `DMA_BIDIRECTIONAL`: the device reads and writes the buffer.
    Bidirectional,
    /// `DMA_TO_DEVICE`: the device reads the buffer.
    ToDevice,
    /// `DMA_FROM_DEVICE`: the device writes the buffer.
    FromDevice,
}

impl DmaDirection {
    const fn copies_to_device(self) -> bool {
        matches!(self, DmaDirection::ToDevice | DmaDirection::Bidirectional)
    }

    const fn copies_from_device(self) -> bool {
        matches!(self, DmaDirection::FromDevice | DmaDirection::Bidirectional)
    }
}

/// Alignment constraints of one mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// The device's `min_align_mask` (`dma_get_min_align_mask`): these low bits of the
    /// original address are preserved in the bounce address. `2^n - 1` or 0.
    pub min_align_mask: u64,
    /// Required alignment of the allocation (`alloc_align_mask`), `2^n - 1` or 0. Streaming
    /// mappings (`swiotlb_map`) pass 0.
    pub alloc_align_mask: u64,
}

/// Bookkeeping of one 2 KiB slot. Callers provide one per slot (e.g. a
/// `[Slot::EMPTY; N]` static); [`BouncePool::new`] initialises them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Free slots from this one to the end of its segment (0 if this slot is in use).
    list: u16,
    /// At the first slot of an allocation: its number of slots; 0 elsewhere.
    alloc_slots: u16,
    /// At the first slot of an allocation: the tag of the mapping; 0 when free.
    tag: u32,
}

impl Slot {
    /// An uninitialised slot entry, for building the bookkeeping array.
    pub const EMPTY: Slot = Slot {
        list: 0,
        alloc_slots: 0,
        tag: 0,
    };
}

/// Why a bounce-pool operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceError {
    /// The pool's DMA base is not aligned to a slot (2 KiB).
    PoolMisaligned {
        /// The DMA base.
        dma_base: u64,
    },
    /// The pool is not a non-zero multiple of one segment (256 KiB), or `dma_base + size`
    /// overflows.
    PoolSize {
        /// The pool size in bytes.
        bytes: usize,
    },
    /// The bookkeeping slice has fewer entries than the pool has slots.
    SlotTableTooSmall {
        /// Slots in the pool.
        needed: usize,
        /// Entries provided.
        provided: usize,
    },
    /// An alignment mask is not of the form `2^n - 1`.
    InvalidAlignMask {
        /// The mask.
        mask: u64,
    },
    /// A zero-length mapping was requested.
    ZeroLength {
        /// The original address.
        orig_addr: u64,
    },
    /// The mapping, with its alignment padding, does not fit in one segment.
    Oversize {
        /// Requested length.
        len: usize,
        /// Length including alignment padding (saturated on overflow).
        alloc_size: u64,
        /// The largest mapping for this `min_align_mask`.
        max: usize,
    },
    /// No suitable free run of slots ("swiotlb buffer is full").
    Exhausted {
        /// Requested length.
        len: usize,
        /// Slots in the pool.
        total_slots: usize,
        /// Slots in use.
        used_slots: usize,
    },
    /// The mapping handle does not name a live mapping of this pool.
    NotMapped {
        /// The handle's DMA address.
        dma_addr: u64,
    },
    /// The CPU buffer's length differs from the mapping's.
    LengthMismatch {
        /// The mapping's DMA address.
        dma_addr: u64,
        /// The mapping's length.
        mapped: usize,
        /// The buffer's length.
        buffer: usize,
    },
    /// A device address range is not inside the pool.
    OutOfPool {
        /// The DMA address.
        dma_addr: u64,
        /// The length.
        len: usize,
    },
}

impl fmt::Display for BounceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BounceError::PoolMisaligned { dma_base } => {
                write!(f, "bounce pool base {dma_base:#x} is not 2 KiB aligned")
            }
            BounceError::PoolSize { bytes } => write!(
                f,
                "bounce pool size {bytes:#x} is not a non-zero multiple of 256 KiB in range"
            ),
            BounceError::SlotTableTooSmall { needed, provided } => write!(
                f,
                "bounce pool needs {needed} slot entries, {provided} provided"
            ),
            BounceError::InvalidAlignMask { mask } => {
                write!(f, "alignment mask {mask:#x} is not 2^n - 1")
            }
            BounceError::ZeroLength { orig_addr } => {
                write!(f, "zero-length bounce mapping of {orig_addr:#x}")
            }
            BounceError::Oversize {
                len,
                alloc_size,
                max,
            } => write!(
                f,
                "bounce mapping of {len:#x} bytes ({alloc_size:#x} with padding) exceeds {max:#x}"
            ),
            BounceError::Exhausted {
                len,
                total_slots,
                used_slots,
            } => write!(
                f,
                "bounce pool is full (sz: {len} bytes), total {total_slots} (slots), used {used_slots} (slots)"
            ),
            BounceError::NotMapped { dma_addr } => {
                write!(f, "no live bounce mapping at {dma_addr:#x}")
            }
            BounceError::LengthMismatch {
                dma_addr,
                mapped,
                buffer,
            } => write!(
                f,
                "bounce mapping at {dma_addr:#x} has {mapped:#x} bytes, buffer has {buffer:#x}"
            ),
            BounceError::OutOfPool { dma_addr, len } => {
                write!(f, "device range {dma_addr:#x}+{len:#x} is not inside the bounce pool")
            }
        }
    }
}

impl core::error::Error for BounceError {}

/// A live mapping, returned by [`BouncePool::map`] and consumed by [`BouncePool::unmap`].
/// It names its slots by a tag, so a stale or foreign handle is refused, not obeyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BounceMapping {
    dma_addr: u64,
    head: usize,
    nslots: usize,
    data_offset: usize,
    len: usize,
    dir: DmaDirection,
    tag: u32,
}

impl BounceMapping {
    /// The device-visible (DMA) address of the bounce buffer.
    pub const fn dma_addr(&self) -> u64 {
        self.dma_addr
    }

    /// Length of the mapping in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Always false: mappings are never empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping's direction.
    pub const fn direction(&self) -> DmaDirection {
        self.dir
    }

    /// Slots the mapping occupies (including alignment padding).
    pub const fn slots(&self) -> usize {
        self.nslots
    }
}

/// The bounce pool core over caller-provided storage (see the module docs).
///
/// `D` holds the pool bytes (device address `dma_base` is byte 0), `S` one [`Slot`] per 2 KiB
/// slot.
pub struct BouncePool<D, S> {
    dma_base: u64,
    data: D,
    slots: S,
    nslabs: usize,
    /// Next-fit cursor (`area->index`).
    index: usize,
    used: usize,
    next_tag: u32,
}

impl<D, S> fmt::Debug for BouncePool<D, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BouncePool")
            .field("dma_base", &self.dma_base)
            .field("slots", &self.nslabs)
            .field("used", &self.used)
            .finish()
    }
}

const fn is_mask(m: u64) -> bool {
    m & m.wrapping_add(1) == 0
}

const fn nr_slots(bytes: u64) -> usize {
    bytes.div_ceil(IO_TLB_SIZE as u64) as usize
}

impl<D, S> BouncePool<D, S>
where
    D: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    /// Builds a pool over `data`, which the device addresses at `dma_base`, with bookkeeping
    /// in `slots` (at least `data.len() / 2048` entries; extra entries are unused).
    pub fn new(dma_base: u64, data: D, mut slots: S) -> Result<Self, BounceError> {
        if dma_base & SLOT_MASK != 0 {
            return Err(BounceError::PoolMisaligned { dma_base });
        }
        let bytes = data.as_ref().len();
        if bytes == 0 || bytes % SEGMENT_BYTES != 0 || dma_base.checked_add(bytes as u64).is_none()
        {
            return Err(BounceError::PoolSize { bytes });
        }
        let nslabs = bytes / IO_TLB_SIZE;
        let table = slots.as_mut();
        if table.len() < nslabs {
            return Err(BounceError::SlotTableTooSmall {
                needed: nslabs,
                provided: table.len(),
            });
        }
        for (i, s) in table[..nslabs].iter_mut().enumerate() {
            *s = Slot {
                list: (IO_TLB_SEGSIZE - i % IO_TLB_SEGSIZE) as u16,
                alloc_slots: 0,
                tag: 0,
            };
        }
        Ok(BouncePool {
            dma_base,
            data,
            slots,
            nslabs,
            index: 0,
            used: 0,
            next_tag: 1,
        })
    }

    /// Device address of the pool's first byte.
    pub fn dma_base(&self) -> u64 {
        self.dma_base
    }

    /// Pool size in bytes.
    pub fn size(&self) -> usize {
        self.nslabs * IO_TLB_SIZE
    }

    /// Number of slots.
    pub fn total_slots(&self) -> usize {
        self.nslabs
    }

    /// Slots in use.
    pub fn used_slots(&self) -> usize {
        self.used
    }

    /// Free slots (not necessarily contiguous).
    pub fn free_slots(&self) -> usize {
        self.nslabs - self.used
    }

    /// The storage back (pool bytes and slot table).
    pub fn into_parts(self) -> (D, S) {
        (self.data, self.slots)
    }

    fn wrap(&self, i: usize) -> usize {
        if i >= self.nslabs {
            0
        } else {
            i
        }
    }

    /// Finds and claims `alloc_size` bytes of slots (`swiotlb_search_pool_area`).
    fn find_slots(
        &mut self,
        orig_addr: u64,
        alloc_size: u64,
        opts: MapOptions,
        len: usize,
    ) -> Result<usize, BounceError> {
        let nslots = nr_slots(alloc_size);
        let mut alloc_mask = opts.alloc_align_mask;
        let mut iotlb_mask = opts.min_align_mask;
        if alloc_mask == 0 && iotlb_mask == 0 && alloc_size >= PAGE_SIZE {
            alloc_mask = PAGE_SIZE - 1;
        }
        alloc_mask |= SLOT_MASK;
        iotlb_mask &= !alloc_mask;
        let stride_u64 = (alloc_mask.max(iotlb_mask) >> IO_TLB_SHIFT).saturating_add(1);
        let stride = usize::try_from(stride_u64)
            .unwrap_or(usize::MAX)
            .min(self.nslabs);
        let exhausted = BounceError::Exhausted {
            len,
            total_slots: self.nslabs,
            used_slots: self.used,
        };
        if nslots > self.nslabs - self.used {
            return Err(exhausted);
        }
        let mut index = self.index;
        let mut checked = 0;
        let found = loop {
            if checked >= self.nslabs {
                return Err(exhausted);
            }
            let tlb_addr = self.dma_base + (index as u64) * IO_TLB_SIZE as u64;
            if tlb_addr & alloc_mask != 0
                || (orig_addr != 0 && tlb_addr & iotlb_mask != orig_addr & iotlb_mask)
            {
                index = self.wrap(index + 1);
                checked += 1;
                continue;
            }
            if self.slots.as_ref()[index].list as usize >= nslots {
                break index;
            }
            index = self.wrap(index + stride);
            checked += stride;
        };
        let table = &mut self.slots.as_mut()[..self.nslabs];
        for s in &mut table[found..found + nslots] {
            s.list = 0;
        }
        // Free slots just before the allocation now end at it.
        let mut count = 0u16;
        let mut i = found;
        while i > 0 {
            i -= 1;
            if i % IO_TLB_SEGSIZE == IO_TLB_SEGSIZE - 1 || table[i].list == 0 {
                break;
            }
            count += 1;
            table[i].list = count;
        }
        self.index = self.wrap(found + nslots);
        self.used += nslots;
        Ok(found)
    }

    /// Returns slots to the free lists (`swiotlb_release_slots`).
    fn release(&mut self, head: usize, nslots: usize) {
        let table = &mut self.slots.as_mut()[..self.nslabs];
        let seg_end = (head / IO_TLB_SEGSIZE + 1) * IO_TLB_SEGSIZE;
        let mut count = if head + nslots < seg_end {
            table[head + nslots].list
        } else {
            0
        };
        for s in table[head..head + nslots].iter_mut().rev() {
            count += 1;
            *s = Slot {
                list: count,
                alloc_slots: 0,
                tag: 0,
            };
        }
        let mut i = head;
        while i > 0 {
            i -= 1;
            if i % IO_TLB_SEGSIZE == IO_TLB_SEGSIZE - 1 || table[i].list == 0 {
                break;
            }
            count += 1;
            table[i].list = count;
        }
        self.used -= nslots;
    }

    /// Maps `buf` (the original buffer, at physical/DMA address `orig_addr`) for DMA in
    /// direction `dir`: allocates slots and copies `buf` into the bounce buffer (for every
    /// direction, see the module docs). Returns the mapping; the device uses
    /// [`BounceMapping::dma_addr`].
    pub fn map(
        &mut self,
        orig_addr: u64,
        buf: &[u8],
        dir: DmaDirection,
        opts: MapOptions,
    ) -> Result<BounceMapping, BounceError> {
        let len = buf.len();
        if len == 0 {
            return Err(BounceError::ZeroLength { orig_addr });
        }
        for mask in [opts.min_align_mask, opts.alloc_align_mask] {
            if !is_mask(mask) {
                return Err(BounceError::InvalidAlignMask { mask });
            }
        }
        // swiotlb_align_offset(): bits of orig_addr preserved below the allocation alignment.
        let offset = orig_addr & opts.min_align_mask & (opts.alloc_align_mask | SLOT_MASK);
        let oversize = |alloc_size| BounceError::Oversize {
            len,
            alloc_size,
            max: max_mapping_size(opts.min_align_mask),
        };
        let alloc_size = (len as u64)
            .checked_add(offset)
            .and_then(|v| v.checked_add(opts.alloc_align_mask))
            .map(|v| v & !opts.alloc_align_mask)
            .ok_or(oversize(u64::MAX))?;
        if alloc_size > MAX_MAPPING_SIZE as u64 {
            return Err(oversize(alloc_size));
        }
        let head = self.find_slots(orig_addr, alloc_size, opts, len)?;
        let nslots = nr_slots(alloc_size);
        // offset < alloc_size <= 256 KiB here.
        let pad_slots = (offset >> IO_TLB_SHIFT) as usize;
        let data_offset = (head + pad_slots) * IO_TLB_SIZE + (offset & SLOT_MASK) as usize;
        self.data.as_mut()[data_offset..data_offset + len].copy_from_slice(buf);
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        let s = &mut self.slots.as_mut()[head];
        s.alloc_slots = nslots as u16;
        s.tag = tag;
        Ok(BounceMapping {
            dma_addr: self.dma_base + data_offset as u64,
            head,
            nslots,
            data_offset,
            len,
            dir,
            tag,
        })
    }

    fn validate(&self, m: &BounceMapping) -> Result<(), BounceError> {
        let ok = m.tag != 0
            && m.nslots > 0
            && m.head < self.nslabs
            && m.head + m.nslots <= self.nslabs
            && m.data_offset + m.len <= (m.head + m.nslots) * IO_TLB_SIZE
            && m.dma_addr == self.dma_base + m.data_offset as u64
            && {
                let s = self.slots.as_ref()[m.head];
                s.tag == m.tag && s.alloc_slots as usize == m.nslots
            };
        if ok {
            Ok(())
        } else {
            Err(BounceError::NotMapped {
                dma_addr: m.dma_addr,
            })
        }
    }

    fn check_len(m: &BounceMapping, buffer: usize) -> Result<(), BounceError> {
        if buffer != m.len {
            return Err(BounceError::LengthMismatch {
                dma_addr: m.dma_addr,
                mapped: m.len,
                buffer,
            });
        }
        Ok(())
    }

    /// Unmaps: copies the bounce buffer back into `buf` for `FromDevice`/`Bidirectional`,
    /// then frees the slots. On error nothing changes (the mapping stays live).
    pub fn unmap(&mut self, m: BounceMapping, buf: &mut [u8]) -> Result<(), BounceError> {
        self.validate(&m)?;
        Self::check_len(&m, buf.len())?;
        if m.dir.copies_from_device() {
            buf.copy_from_slice(&self.data.as_ref()[m.data_offset..m.data_offset + m.len]);
        }
        self.release(m.head, m.nslots);
        Ok(())
    }

    /// Unmaps without copying back (`DMA_ATTR_SKIP_CPU_SYNC`).
    pub fn unmap_skip_sync(&mut self, m: BounceMapping) -> Result<(), BounceError> {
        self.validate(&m)?;
        self.release(m.head, m.nslots);
        Ok(())
    }

    /// Hands the buffer back to the device: copies `buf` into the bounce buffer for
    /// `ToDevice`/`Bidirectional` (no-op for `FromDevice`).
    pub fn sync_for_device(&mut self, m: &BounceMapping, buf: &[u8]) -> Result<(), BounceError> {
        self.validate(m)?;
        Self::check_len(m, buf.len())?;
        if m.dir.copies_to_device() {
            self.data.as_mut()[m.data_offset..m.data_offset + m.len].copy_from_slice(buf);
        }
        Ok(())
    }

    /// Hands the buffer to the CPU: copies the bounce buffer into `buf` for
    /// `FromDevice`/`Bidirectional` (no-op for `ToDevice`).
    pub fn sync_for_cpu(&self, m: &BounceMapping, buf: &mut [u8]) -> Result<(), BounceError> {
        self.validate(m)?;
        Self::check_len(m, buf.len())?;
        if m.dir.copies_from_device() {
            buf.copy_from_slice(&self.data.as_ref()[m.data_offset..m.data_offset + m.len]);
        }
        Ok(())
    }

    /// The bounce buffer of a live mapping (what the device sees).
    pub fn bounce_buffer(&self, m: &BounceMapping) -> Result<&[u8], BounceError> {
        self.validate(m)?;
        Ok(&self.data.as_ref()[m.data_offset..m.data_offset + m.len])
    }

    /// The bounce buffer of a live mapping, writable (to emulate the device side).
    pub fn bounce_buffer_mut(&mut self, m: &BounceMapping) -> Result<&mut [u8], BounceError> {
        self.validate(m)?;
        Ok(&mut self.data.as_mut()[m.data_offset..m.data_offset + m.len])
    }

    fn translate(&self, dma_addr: u64, len: usize) -> Result<core::ops::Range<usize>, BounceError> {
        let err = BounceError::OutOfPool { dma_addr, len };
        let off = dma_addr.checked_sub(self.dma_base).ok_or(err)?;
        let off = usize::try_from(off).map_err(|_| err)?;
        let end = off.checked_add(len).ok_or(err)?;
        if end > self.size() {
            return Err(err);
        }
        Ok(off..end)
    }

    /// Pool bytes at a device address (any part of the pool, mapped or not).
    pub fn device_bytes(&self, dma_addr: u64, len: usize) -> Result<&[u8], BounceError> {
        let r = self.translate(dma_addr, len)?;
        Ok(&self.data.as_ref()[r])
    }

    /// Writable pool bytes at a device address (to emulate device DMA).
    pub fn device_bytes_mut(
        &mut self,
        dma_addr: u64,
        len: usize,
    ) -> Result<&mut [u8], BounceError> {
        let r = self.translate(dma_addr, len)?;
        Ok(&mut self.data.as_mut()[r])
    }
}

#[cfg(feature = "std")]
pub use owned::SyncBouncePool;

#[cfg(feature = "std")]
mod owned {
    use super::*;
    use std::sync::{Mutex, PoisonError};
    use std::vec;
    use std::vec::Vec;

    /// The pool core over owned storage.
    pub type OwnedBouncePool = BouncePool<Vec<u8>, Vec<Slot>>;

    /// An owning, `Mutex`-protected bounce pool (feature `std`).
    #[derive(Debug)]
    pub struct SyncBouncePool {
        inner: Mutex<OwnedBouncePool>,
    }

    impl SyncBouncePool {
        /// A zeroed pool of `bytes` bytes (a non-zero multiple of 256 KiB) at `dma_base`.
        pub fn new(dma_base: u64, bytes: usize) -> Result<Self, BounceError> {
            if bytes == 0 || bytes % SEGMENT_BYTES != 0 {
                return Err(BounceError::PoolSize { bytes });
            }
            let pool = BouncePool::new(
                dma_base,
                vec![0u8; bytes],
                vec![Slot::EMPTY; bytes / IO_TLB_SIZE],
            )?;
            Ok(SyncBouncePool {
                inner: Mutex::new(pool),
            })
        }

        /// Runs `f` on the locked core.
        pub fn with<R>(&self, f: impl FnOnce(&mut OwnedBouncePool) -> R) -> R {
            let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut g)
        }

        /// See [`BouncePool::map`].
        pub fn map(
            &self,
            orig_addr: u64,
            buf: &[u8],
            dir: DmaDirection,
            opts: MapOptions,
        ) -> Result<BounceMapping, BounceError> {
            self.with(|p| p.map(orig_addr, buf, dir, opts))
        }

        /// See [`BouncePool::unmap`].
        pub fn unmap(&self, m: BounceMapping, buf: &mut [u8]) -> Result<(), BounceError> {
            self.with(|p| p.unmap(m, buf))
        }

        /// See [`BouncePool::sync_for_device`].
        pub fn sync_for_device(&self, m: &BounceMapping, buf: &[u8]) -> Result<(), BounceError> {
            self.with(|p| p.sync_for_device(m, buf))
        }

        /// See [`BouncePool::sync_for_cpu`].
        pub fn sync_for_cpu(&self, m: &BounceMapping, buf: &mut [u8]) -> Result<(), BounceError> {
            self.with(|p| p.sync_for_cpu(m, buf))
        }

        /// Slots in use.
        pub fn used_slots(&self) -> usize {
            self.with(|p| p.used_slots())
        }
    }
}

#[cfg(feature = "std")]
pub use owned::OwnedBouncePool;
