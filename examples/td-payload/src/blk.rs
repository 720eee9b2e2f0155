//! A minimal virtio-mmio (version 2) virtio-blk driver for the ring-3 body: registers through
//! TDG.VP.VMCALL<#VE.RequestMMIO> on the device's shared GPA (never touching the MMIO range
//! directly), one split queue, request header, data and status in the shared bounce pool
//! (reached through its alias mapping), VERSION_1 + ACCESS_PLATFORM negotiated, completions
//! polled (bounded).
use tdx_abi::gpa::Gpa;
use tdx_abi::tdvmcall;

use crate::gate::Gate;

/// The first virtio-mmio window (`tdx-vmm`'s device layout).
pub const BASE: u64 = 0xFEB0_0000;
const QSIZE: u16 = 8;

/// Where the queue lives: `gpa` is its shared pool offset's GPA, `va` the alias address.
pub struct Blk {
    mmio: u64,
    gpa: u64,
    va: *mut u8,
    next: u16,
    /// The device offered VIRTIO_BLK_F_RO.
    pub read_only: bool,
}

fn r(mmio: u64, off: u64) -> Option<u32> {
    tdvmcall::tdvmcall_mmio_read(&Gate, Gpa(mmio + off), 4)
        .ok()
        .map(|v| v as u32)
}

fn w(mmio: u64, off: u64, v: u32) -> Option<()> {
    tdvmcall::tdvmcall_mmio_write(&Gate, Gpa(mmio + off), 4, u64::from(v)).ok()
}

impl Blk {
    /// Probes and initialises the device at slot 0. `shared_bit` marks the MMIO GPA shared;
    /// `gpa`/`va` are an 8 KiB shared area for the queue (first 4 KiB) and data (second).
    pub fn init(shared_bit: u64, gpa: u64, va: *mut u8) -> Option<Blk> {
        let mmio = BASE | shared_bit;
        if r(mmio, 0x000)? != 0x7472_6976 || r(mmio, 0x004)? != 2 || r(mmio, 0x008)? != 2 {
            return None;
        }
        w(mmio, 0x070, 0)?;
        w(mmio, 0x070, 1)?;
        w(mmio, 0x070, 3)?;
        w(mmio, 0x014, 0)?;
        let read_only = r(mmio, 0x010)? & (1 << 5) != 0;
        w(mmio, 0x024, 0)?;
        w(mmio, 0x020, 0)?;
        w(mmio, 0x024, 1)?;
        w(mmio, 0x020, 3)?; // VERSION_1 | ACCESS_PLATFORM (bits 32, 33)
        w(mmio, 0x070, 0xB)?;
        if r(mmio, 0x070)? & 8 == 0 {
            return None;
        }
        w(mmio, 0x030, 0)?;
        w(mmio, 0x038, u32::from(QSIZE))?;
        for (off, addr) in [(0x080, gpa), (0x090, gpa + 0x100), (0x0a0, gpa + 0x200)] {
            w(mmio, off, addr as u32)?;
            w(mmio, off + 4, (addr >> 32) as u32)?;
        }
        w(mmio, 0x044, 1)?;
        w(mmio, 0x070, 0xF)?;
        Some(Blk {
            mmio,
            gpa,
            va,
            next: 0,
            read_only,
        })
    }

    fn put<T>(&self, off: usize, v: T) {
        // SAFETY: `off` is inside the 8 KiB shared area this driver owns.
        unsafe { core::ptr::write_volatile(self.va.add(off) as *mut T, v) }
    }

    fn get<T: Copy>(&self, off: usize) -> T {
        // SAFETY: as in `put`.
        unsafe { core::ptr::read_volatile(self.va.add(off) as *const T) }
    }

    /// One request: `write` = OUT (data from `buf`) or IN (data into `buf`), 512 bytes at
    /// `sector`. Returns the device's status byte.
    pub fn request(&mut self, write: bool, sector: u64, buf: &mut [u8; 512]) -> Option<u8> {
        let data = 0x1000usize;
        if write {
            for (i, b) in buf.iter().enumerate() {
                self.put(data + i, *b);
            }
        }
        // Header at +0x400, status at +0x420; descriptors at +0.
        self.put(0x400, u32::from(write));
        self.put(0x404, 0u32);
        self.put(0x408, sector);
        self.put(0x420, 0xFFu8);
        let descs: [(u64, u32, u16, u16); 3] = [
            (self.gpa + 0x400, 16, 1, 1),
            (self.gpa + 0x1000, 512, if write { 1 } else { 3 }, 2),
            (self.gpa + 0x420, 1, 2, 0),
        ];
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            self.put(16 * i, *addr);
            self.put(16 * i + 8, *len);
            self.put(16 * i + 12, *flags);
            self.put(16 * i + 14, *next);
        }
        self.put(0x104 + 2 * usize::from(self.next % QSIZE), 0u16);
        self.next = self.next.wrapping_add(1);
        self.put(0x102, self.next);
        w(self.mmio, 0x050, 0)?;
        let mut spins = 0u64;
        while self.get::<u16>(0x202) != self.next {
            spins += 1;
            if spins > 1 << 30 {
                return None;
            }
            core::hint::spin_loop();
        }
        if !write {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.get(data + i);
            }
        }
        Some(self.get(0x420))
    }
}
