//! The guest-physical memory of one TD in its KVM VM.
//!
//! * **Private GPAs**: a per-TD reserved virtual-address window ([`PRIVATE_WINDOW`] bytes,
//!   `PROT_NONE`, no reserve) indexed by GPA. Every guest-accessible S-EPT leaf (MAPPED or
//!   write-blocked) is an `mmap(MAP_SHARED | MAP_FIXED)` of the arena memfd at the leaf's HPA
//!   over the window at its GPA; every other GPA stays `PROT_NONE` and, more importantly,
//!   outside any memslot, so the guest's access is a `KVM_EXIT_MMIO` the engine hands to the
//!   module. Maximal runs of mapped GPAs become one memslot each.
//! * **Shared GPAs**: the pages of the VMM's shared backing that the attribute map says are
//!   shared, as memslots at `GPA | shared bit` pointing into the backing.
//!
//! Both are resynchronised by difference (memslot changes cost 17–110 µs on the development
//! machine): pages whose mapping is unchanged are not touched, and runs that are unchanged keep
//! their memslot. The S-EPT and attribute-map generations let a resync with no change cost one
//! mutex round trip.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, BorrowedFd};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use tdx_memory::shared::SharedGuestMemory;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::super::guest::EngineError;
use super::super::SeptMappings;

/// Bytes of private GPA space the engine can map (GPAs at or above are never mapped: a guest
/// access there is an EPT-violation exit).
pub const PRIVATE_WINDOW: u64 = 1 << 40;

/// Memslots the engine leaves to others in a VM (KVM allows 32764 on the development
/// machine; private runs and shared runs share the rest).
const RESERVED_SLOTS: u32 = 4;

/// A memslot: guest range and host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    id: u32,
    len: u64,
    hva: u64,
}

/// The memory of one TD (see the module docs).
#[derive(Debug)]
pub(super) struct TdMemory {
    window: u64,
    /// Mapped private leaves: GPA → (HPA, size).
    private: BTreeMap<u64, (u64, u64)>,
    sept_generation: Option<u64>,
    /// Private memslots keyed by first GPA.
    private_slots: BTreeMap<u64, Slot>,
    /// The shared bit of the TD.
    shared_bit: u64,
    shared_generation: Option<u64>,
    /// Shared memslots keyed by first GPA (shared bit set).
    shared_slots: BTreeMap<u64, Slot>,
    free_ids: Vec<u32>,
    next_id: u32,
    max_slots: u32,
}

fn err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError(format!("{what}: {e}"))
}

impl TdMemory {
    /// Reserves the private window.
    pub(super) fn new(shared_bit: u64, kvm_slots: u32) -> Result<Self, EngineError> {
        // SAFETY: an anonymous PROT_NONE reservation at an address the kernel chooses; it
        // does not alias any Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PRIVATE_WINDOW as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(
                "reserving the private GPA window of 1 TiB",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(TdMemory {
            window: p as u64,
            private: BTreeMap::new(),
            sept_generation: None,
            private_slots: BTreeMap::new(),
            shared_bit,
            shared_generation: None,
            shared_slots: BTreeMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
            max_slots: kvm_slots.saturating_sub(RESERVED_SLOTS).max(2),
        })
    }

    /// The S-EPT generation last mirrored.
    pub(super) fn sept_generation(&self) -> Option<u64> {
        self.sept_generation
    }

    /// The attribute-map generation last mirrored.
    pub(super) fn shared_generation(&self) -> Option<u64> {
        self.shared_generation
    }

    fn alloc_id(&mut self) -> Result<u32, EngineError> {
        if let Some(id) = self.free_ids.pop() {
            return Ok(id);
        }
        if self.next_id >= self.max_slots {
            return Err(EngineError(format!(
                "out of KVM memslots ({} in use): guest memory too fragmented",
                self.max_slots
            )));
        }
        self.next_id += 1;
        Ok(self.next_id - 1)
    }

    fn set_slot(vm: &VmFd, id: u32, gpa: u64, len: u64, hva: u64) -> Result<(), EngineError> {
        let region = kvm_userspace_memory_region {
            slot: id,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: hva,
        };
        // SAFETY: `hva..hva + len` is either inside the private window (reserved for the life
        // of this TdMemory, which deletes its slots before unmapping it) or inside a region of
        // the shared backing, which the TD's engine state keeps alive (it holds a clone of the
        // SharedGuestMemory) for as long as the slot exists. A size of 0 deletes the slot.
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| {
            err(
                &format!("KVM_SET_USER_MEMORY_REGION slot {id} GPA {gpa:#x} size {len:#x}"),
                e,
            )
        })
    }

    /// Replaces the slots of `old` with the runs of `new` by difference.
    fn diff_slots(
        &mut self,
        vm: &VmFd,
        shared: bool,
        new: &BTreeMap<u64, (u64, u64)>,
    ) -> Result<(), EngineError> {
        let old = if shared {
            std::mem::take(&mut self.shared_slots)
        } else {
            std::mem::take(&mut self.private_slots)
        };
        let mut keep = BTreeMap::new();
        let r = self.apply_slots(vm, old, new, &mut keep);
        // On failure `keep` still lists exactly the slots that exist; the caller's
        // generation stays stale so the next resync retries.
        if shared {
            self.shared_slots = keep;
        } else {
            self.private_slots = keep;
        }
        r
    }

    fn apply_slots(
        &mut self,
        vm: &VmFd,
        old: BTreeMap<u64, Slot>,
        new: &BTreeMap<u64, (u64, u64)>,
        keep: &mut BTreeMap<u64, Slot>,
    ) -> Result<(), EngineError> {
        let mut doomed = Vec::new();
        for (gpa, slot) in old {
            if new.get(&gpa) == Some(&(slot.len, slot.hva)) {
                keep.insert(gpa, slot);
            } else {
                doomed.push((gpa, slot));
            }
        }
        let mut doomed = doomed.into_iter();
        while let Some((gpa, slot)) = doomed.next() {
            if let Err(e) = Self::set_slot(vm, slot.id, gpa, 0, slot.hva) {
                keep.insert(gpa, slot);
                keep.extend(doomed);
                return Err(e);
            }
            self.free_ids.push(slot.id);
        }
        for (&gpa, &(len, hva)) in new {
            if keep.contains_key(&gpa) {
                continue;
            }
            let id = self.alloc_id()?;
            if let Err(e) = Self::set_slot(vm, id, gpa, len, hva) {
                self.free_ids.push(id);
                return Err(e);
            }
            keep.insert(gpa, Slot { id, len, hva });
        }
        Ok(())
    }
}

impl TdMemory {
    /// Mirrors the S-EPT's guest-accessible leaves (see the module docs).
    pub(super) fn sync_private(
        &mut self,
        vm: &VmFd,
        arena: BorrowedFd<'_>,
        maps: &SeptMappings,
    ) -> Result<(), EngineError> {
        let mut new = BTreeMap::new();
        for &(gpa, hpa, size) in &maps.pages {
            if gpa.checked_add(size).is_none_or(|e| e > PRIVATE_WINDOW) {
                tracing::warn!(
                    gpa,
                    size,
                    "private GPA beyond the engine's window: not mapped"
                );
                continue;
            }
            new.insert(gpa, (hpa, size));
        }
        // Runs of contiguous mapped GPAs: GPA → (len, hva).
        let mut runs: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut cur: Option<(u64, u64)> = None;
        for (&gpa, &(_, size)) in &new {
            cur = match cur {
                Some((s, l)) if s + l == gpa => Some((s, l + size)),
                Some((s, l)) => {
                    runs.insert(s, (l, self.window + s));
                    Some((gpa, size))
                }
                None => Some((gpa, size)),
            };
        }
        if let Some((s, l)) = cur {
            runs.insert(s, (l, self.window + s));
        }
        // Slots that change go first (no slot may cover a page while it is being unmapped),
        // then the page mappings, then the new slots.
        let doomed: Vec<(u64, Slot)> = self
            .private_slots
            .iter()
            .filter(|(g, s)| runs.get(g) != Some(&(s.len, s.hva)))
            .map(|(g, s)| (*g, *s))
            .collect();
        for (gpa, slot) in doomed {
            Self::set_slot(vm, slot.id, gpa, 0, slot.hva)?;
            self.private_slots.remove(&gpa);
            self.free_ids.push(slot.id);
        }
        let old = std::mem::take(&mut self.private);
        // On failure `private` keeps only the pages known to be mapped (those this sync left
        // alone); the generation is forgotten so the next sync redoes the rest.
        let untouched = || -> BTreeMap<u64, (u64, u64)> {
            old.iter()
                .filter(|(g, m)| new.get(g) == Some(m))
                .map(|(g, m)| (*g, *m))
                .collect()
        };
        for (&gpa, &(hpa, size)) in &old {
            if new.get(&gpa) != Some(&(hpa, size)) {
                if let Err(e) = self.reserve(gpa, size) {
                    self.private = untouched();
                    self.sept_generation = None;
                    return Err(e);
                }
            }
        }
        for (&gpa, &(hpa, size)) in &new {
            if old.get(&gpa) != Some(&(hpa, size)) {
                if let Err(e) = self.map_arena(arena, gpa, hpa, size) {
                    self.private = untouched();
                    self.sept_generation = None;
                    return Err(e);
                }
            }
        }
        self.private = new;
        self.diff_slots(vm, false, &runs)?;
        self.sept_generation = Some(maps.generation);
        Ok(())
    }

    /// Mirrors the shared pages of `shared` at GPA | shared bit.
    pub(super) fn sync_shared(
        &mut self,
        vm: &VmFd,
        shared: &SharedGuestMemory,
    ) -> Result<(), EngineError> {
        let attrs = shared.attributes();
        let generation = attrs.generation();
        let mut runs: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for range in attrs.shared_ranges() {
            let (rs, re) = (range.start().raw(), range.start().raw() + range.len());
            for region in shared.backing().iter() {
                let bs = region.start_addr().0;
                let be = bs + region.len();
                let (s, e) = (rs.max(bs), re.min(be));
                if s >= e {
                    continue;
                }
                let Ok(hva) = region.get_host_address(MemoryRegionAddress(s - bs)) else {
                    continue;
                };
                runs.insert(s | self.shared_bit, (e - s, hva as u64));
            }
        }
        self.diff_slots(vm, true, &runs)?;
        self.shared_generation = Some(generation);
        Ok(())
    }

    fn map_arena(
        &self,
        arena: BorrowedFd<'_>,
        gpa: u64,
        hpa: u64,
        size: u64,
    ) -> Result<(), EngineError> {
        // SAFETY: the target range lies inside the private window (checked by the caller
        // against PRIVATE_WINDOW), which this TdMemory owns and no Rust object aliases;
        // MAP_FIXED replaces the reservation (or a previous mapping) there only.
        let p = unsafe {
            libc::mmap(
                (self.window + gpa) as *mut libc::c_void,
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                arena.as_raw_fd(),
                hpa as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(
                &format!("mapping arena HPA {hpa:#x} ({size:#x} bytes) at GPA {gpa:#x}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn reserve(&self, gpa: u64, size: u64) -> Result<(), EngineError> {
        // SAFETY: as in `map_arena`: the range is inside the window this TdMemory owns.
        let p = unsafe {
            libc::mmap(
                (self.window + gpa) as *mut libc::c_void,
                size as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(
                &format!("unmapping GPA {gpa:#x} ({size:#x} bytes)"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Host address of `len` bytes at `gpa` if they are all in one mapped private leaf or
    /// one shared slot.
    fn hva(&self, gpa: u64, len: u64) -> Option<u64> {
        if gpa & self.shared_bit != 0 {
            let (&start, slot) = self.shared_slots.range(..=gpa).next_back()?;
            let end = gpa.checked_add(len)?;
            return (end <= start + slot.len).then(|| slot.hva + (gpa - start));
        }
        let (&start, &(_, size)) = self.private.range(..=gpa).next_back()?;
        let end = gpa.checked_add(len)?;
        (end <= start + size).then(|| self.window + gpa)
    }

    /// Reads guest memory as the guest sees it (false if any byte is not mapped).
    pub(super) fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let g = gpa + done as u64;
            let n = ((4096 - (g & 0xFFF)) as usize).min(buf.len() - done);
            let Some(hva) = self.hva(g, n as u64) else {
                return false;
            };
            // SAFETY: `hva..hva + n` is mapped readable guest memory (a private leaf mapped
            // in the window, or a shared-backing region kept alive by the engine). The guest
            // may write it concurrently; a volatile byte copy tolerates that.
            unsafe {
                for (i, b) in buf[done..done + n].iter_mut().enumerate() {
                    *b = std::ptr::read_volatile((hva as *const u8).add(i));
                }
            }
            done += n;
        }
        true
    }

    /// Reads a little-endian u64 from guest memory.
    pub(super) fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// Releases every slot; the window is unmapped on drop.
    pub(super) fn release(&mut self, vm: &VmFd) {
        for (gpa, slot) in std::mem::take(&mut self.private_slots)
            .into_iter()
            .chain(std::mem::take(&mut self.shared_slots))
        {
            let _ = Self::set_slot(vm, slot.id, gpa, 0, slot.hva);
        }
    }
}

impl Drop for TdMemory {
    fn drop(&mut self) {
        // SAFETY: the window was mapped by `new` with this size and is owned by this object;
        // the VM's slots into it were deleted by `release` or die with the VM fd, which the
        // owner drops before this object.
        unsafe {
            libc::munmap(self.window as *mut libc::c_void, PRIVATE_WINDOW as usize);
        }
    }
}
