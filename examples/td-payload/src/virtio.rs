//! A minimal virtio-mmio (version 2) virtio-blk driver (issue 8): registers through
//! TDVMCALL<#VE.RequestMMIO> only (the MMIO page's shared alias is never touched directly),
//! VIRTIO_F_VERSION_1 + VIRTIO_F_ACCESS_PLATFORM negotiated, one split queue whose rings,
//! request header, data and status live in the shared bounce pool. Device-provided values
//! (used index, lengths, status) are checked, every wait is bounded.

use core::fmt;

use tdx_abi::tdvmcall::{tdvmcall_mmio_read, tdvmcall_mmio_write};
use tdx_abi::Gpa;

use crate::gate::GateTdcall;

/// GPA of virtio-mmio device 0; device `n` is at `+ n * 0x1000`.
pub const MMIO_BASE: u64 = 0xFEB0_0000;
/// Devices probed.
pub const MAX_DEVICES: u64 = 8;
/// "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// Queue size used.
const QSIZE: u16 = 8;
/// Polls of the used index per request.
const MAX_POLLS: u32 = 1 << 20;

const R_MAGIC: u64 = 0x00;
const R_VERSION: u64 = 0x04;
const R_DEVICE_ID: u64 = 0x08;
const R_DEV_FEATURES: u64 = 0x10;
const R_DEV_FEATURES_SEL: u64 = 0x14;
const R_DRV_FEATURES: u64 = 0x20;
const R_DRV_FEATURES_SEL: u64 = 0x24;
const R_QUEUE_SEL: u64 = 0x30;
const R_QUEUE_NUM_MAX: u64 = 0x34;
const R_QUEUE_NUM: u64 = 0x38;
const R_QUEUE_READY: u64 = 0x44;
const R_QUEUE_NOTIFY: u64 = 0x50;
const R_STATUS: u64 = 0x70;
const R_DESC: u64 = 0x80;
const R_DRIVER: u64 = 0x90;
const R_DEVICE: u64 = 0xA0;

const S_ACK: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_FAILED: u32 = 0x80;

/// High feature word bits: VERSION_1 (32) and ACCESS_PLATFORM (33).
const F_HIGH: u32 = 0b11;

/// Offsets inside the queue page.
const O_DESC: usize = 0x000;
const O_AVAIL: usize = 0x100;
const O_USED: usize = 0x200;
const O_HDR: usize = 0x400;
const O_STATUS: usize = 0x420;

/// Why the virtio-blk exercise failed.
#[derive(Debug)]
pub enum BlkError {
    /// An MMIO TDVMCALL failed.
    Mmio { offset: u64, write: bool },
    /// The device lacks VERSION_1 or ACCESS_PLATFORM (high feature word shown).
    Features(u32),
    /// FEATURES_OK did not stick (status shown).
    FeaturesRejected(u32),
    /// Queue 0 is unusable (QueueNumMax shown).
    Queue(u32),
    /// The device did not complete a request within the poll bound.
    Timeout { sector: u64 },
    /// The used ring reported an impossible element.
    BadUsed { id: u32, len: u32 },
    /// The request completed with a non-OK status byte.
    Status { sector: u64, status: u8 },
    /// Sector 1 read back differs at `offset`.
    Mismatch { offset: usize },
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::Mmio { offset, write } => {
                write!(
                    f,
                    "MMIO {} at {offset:#x} failed",
                    if *write { "write" } else { "read" }
                )
            }
            BlkError::Features(h) => write!(
                f,
                "device features[63:32] {h:#x} lack VERSION_1/ACCESS_PLATFORM"
            ),
            BlkError::FeaturesRejected(s) => write!(f, "FEATURES_OK rejected, status {s:#x}"),
            BlkError::Queue(m) => write!(f, "queue 0 unusable, QueueNumMax {m}"),
            BlkError::Timeout { sector } => write!(f, "request for sector {sector} timed out"),
            BlkError::BadUsed { id, len } => write!(f, "used element id {id} len {len}"),
            BlkError::Status { sector, status } => write!(f, "sector {sector}: status {status}"),
            BlkError::Mismatch { offset } => write!(f, "sector 1 read back differs at {offset}"),
        }
    }
}

/// One virtio-mmio device through RequestMMIO on its shared alias.
struct Dev {
    base: u64,
}

impl Dev {
    fn read(&self, off: u64) -> Result<u32, BlkError> {
        tdvmcall_mmio_read(&GateTdcall, Gpa(self.base + off), 4)
            .map(|v| v as u32)
            .map_err(|_| BlkError::Mmio {
                offset: off,
                write: false,
            })
    }
    fn write(&self, off: u64, v: u32) -> Result<(), BlkError> {
        tdvmcall_mmio_write(&GateTdcall, Gpa(self.base + off), 4, u64::from(v)).map_err(|_| {
            BlkError::Mmio {
                offset: off,
                write: true,
            }
        })
    }
    fn write64(&self, off: u64, v: u64) -> Result<(), BlkError> {
        self.write(off, v as u32)?;
        self.write(off + 4, (v >> 32) as u32)
    }
}

/// Finds the first virtio-blk device (version 2); `None` if there is none.
fn probe(shared: u64) -> Option<Dev> {
    for n in 0..MAX_DEVICES {
        let dev = Dev {
            base: (MMIO_BASE + n * 0x1000) | shared,
        };
        if dev.read(R_MAGIC).ok() != Some(MAGIC) {
            continue;
        }
        if dev.read(R_VERSION).ok() == Some(2) && dev.read(R_DEVICE_ID).ok() == Some(2) {
            return Some(dev);
        }
    }
    None
}

/// A shared page: its VA (shared alias) and its canonical GPA (what the device is given).
#[derive(Clone, Copy)]
pub struct SharedPage {
    /// VA of the shared alias.
    pub va: *mut u8,
    /// Canonical GPA (shared bit clear), as ACCESS_PLATFORM addresses are translated by the VMM.
    pub gpa: u64,
}

fn w<T>(page: SharedPage, off: usize, v: T) {
    // SAFETY: `off + size_of::<T>() <= 4096` at every call site and the page is shared and
    // mapped at `va`; volatile because the device reads it.
    unsafe { (page.va.add(off) as *mut T).write_volatile(v) }
}

fn r<T>(page: SharedPage, off: usize) -> T {
    // SAFETY: as `w`; the device may write it at any time, hence volatile.
    unsafe { (page.va.add(off) as *const T).read_volatile() }
}

struct Queue {
    dev: Dev,
    q: SharedPage,
    next_avail: u16,
    last_used: u16,
}

impl Queue {
    /// One request of `kind` (0 IN, 1 OUT) for `sector` with 512 bytes at `data`.
    fn request(&mut self, kind: u32, sector: u64, data: SharedPage) -> Result<(), BlkError> {
        let q = self.q;
        w(q, O_HDR, kind);
        w(q, O_HDR + 4, 0u32);
        w(q, O_HDR + 8, sector);
        w(q, O_STATUS, 0xFFu8);
        // d0 header → d1 data → d2 status.
        let descs: [(u64, u32, u16, u16); 3] = [
            (q.gpa + O_HDR as u64, 16, 1, 1),
            (data.gpa, 512, 1 | if kind == 0 { 2 } else { 0 }, 2),
            (q.gpa + O_STATUS as u64, 1, 2, 0),
        ];
        for (i, (addr, len, flags, next)) in descs.into_iter().enumerate() {
            let o = O_DESC + i * 16;
            w(q, o, addr);
            w(q, o + 8, len);
            w(q, o + 12, flags);
            w(q, o + 14, next);
        }
        w(
            q,
            O_AVAIL + 4 + 2 * usize::from(self.next_avail % QSIZE),
            0u16,
        );
        self.next_avail = self.next_avail.wrapping_add(1);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        w(q, O_AVAIL + 2, self.next_avail);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.dev.write(R_QUEUE_NOTIFY, 0)?;
        let mut polls = 0;
        while r::<u16>(q, O_USED + 2) == self.last_used {
            polls += 1;
            if polls > MAX_POLLS {
                return Err(BlkError::Timeout { sector });
            }
            core::hint::spin_loop();
        }
        let slot = O_USED + 4 + 8 * usize::from(self.last_used % QSIZE);
        let (id, len) = (r::<u32>(q, slot), r::<u32>(q, slot + 4));
        self.last_used = self.last_used.wrapping_add(1);
        if id != 0 || len as usize > 512 + 1 {
            return Err(BlkError::BadUsed { id, len });
        }
        match r::<u8>(q, O_STATUS) {
            0 => Ok(()),
            status => Err(BlkError::Status { sector, status }),
        }
    }
}

/// What the exercise found.
pub enum BlkOutcome {
    /// No virtio-blk device is present.
    NoDevice,
    /// Sector 0's first 16 bytes; sector 1 written and read back.
    Ok([u8; 16]),
}

/// Probes for a virtio-blk device, initialises it with its queue in `q`, reads sector 0 into
/// `data`, writes a pattern from `pattern` to sector 1 and reads it back into `data`.
pub fn run(
    shared: u64,
    q: SharedPage,
    data: SharedPage,
    pattern: SharedPage,
) -> Result<BlkOutcome, BlkError> {
    let Some(dev) = probe(shared) else {
        return Ok(BlkOutcome::NoDevice);
    };
    dev.write(R_STATUS, 0)?;
    dev.write(R_STATUS, S_ACK)?;
    dev.write(R_STATUS, S_ACK | S_DRIVER)?;
    dev.write(R_DEV_FEATURES_SEL, 1)?;
    let high = dev.read(R_DEV_FEATURES)?;
    if high & F_HIGH != F_HIGH {
        dev.write(R_STATUS, S_FAILED)?;
        return Err(BlkError::Features(high));
    }
    dev.write(R_DRV_FEATURES_SEL, 0)?;
    dev.write(R_DRV_FEATURES, 0)?;
    dev.write(R_DRV_FEATURES_SEL, 1)?;
    dev.write(R_DRV_FEATURES, F_HIGH)?;
    dev.write(R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK)?;
    let status = dev.read(R_STATUS)?;
    if status & S_FEATURES_OK == 0 {
        return Err(BlkError::FeaturesRejected(status));
    }
    dev.write(R_QUEUE_SEL, 0)?;
    let max = dev.read(R_QUEUE_NUM_MAX)?;
    if max < u32::from(QSIZE) {
        return Err(BlkError::Queue(max));
    }
    // SAFETY: the queue page is shared and mapped at `q.va`; it is cleared before the device
    // is told where it is.
    unsafe { core::ptr::write_bytes(q.va, 0, 4096) };
    dev.write(R_QUEUE_NUM, u32::from(QSIZE))?;
    dev.write64(R_DESC, q.gpa + O_DESC as u64)?;
    dev.write64(R_DRIVER, q.gpa + O_AVAIL as u64)?;
    dev.write64(R_DEVICE, q.gpa + O_USED as u64)?;
    dev.write(R_QUEUE_READY, 1)?;
    dev.write(R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK)?;
    let mut queue = Queue {
        dev,
        q,
        next_avail: 0,
        last_used: 0,
    };
    queue.request(0, 0, data)?;
    let mut first = [0u8; 16];
    for (i, b) in first.iter_mut().enumerate() {
        *b = r(data, i);
    }
    for i in 0..512 {
        w(pattern, i, (i as u8) ^ 0x5A);
    }
    queue.request(1, 1, pattern)?;
    // SAFETY: the data page is shared and mapped; cleared so the read-back is meaningful.
    unsafe { core::ptr::write_bytes(data.va, 0, 512) };
    queue.request(0, 1, data)?;
    for i in 0..512 {
        if r::<u8>(data, i) != (i as u8) ^ 0x5A {
            return Err(BlkError::Mismatch { offset: i });
        }
    }
    Ok(BlkOutcome::Ok(first))
}
