//! Shared harness for the hostile-guest suites: a 16 MiB guest whose ring and data pages are
//! shared (the rest private), a shared-only memory view, an MMIO transport, and a driver that
//! writes descriptors and rings directly into guest memory (virtio-queue's `MockSplitQueue`
//! computes the ring layout and reads the used ring).
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_devices::blk::{BlkConfig, BlkDevice, RawFile};
use tdx_devices::mmio::{reg, status, MmioConfig, MmioTransport, VirtioDevice};
use tdx_devices::{Interrupt, InterruptKind};
use tdx_memory::attributes::{AttributeMap, PageState};
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::SharedGuestMemory;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::DescriptorTable;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: usize = 16 << 20;
/// Rings: 0x0..0x4000 (shared).
pub const RING: u64 = 0x0;
/// Shared data area 0x10_0000..0x20_0000.
pub const DATA: u64 = 0x10_0000;
pub const DATA_END: u64 = 0x20_0000;
/// A private page (never converted).
pub const PRIVATE: u64 = 0x30_0000;
/// Beyond the backing (absent), but marked shared.
pub const ABSENT: u64 = 0x200_0000;
pub const SHARED_BIT: u64 = 1 << 47;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

// Feature bits typed from the virtio spec.
pub const VERSION_1: u64 = 1 << 32;
pub const ACCESS_PLATFORM: u64 = 1 << 33;
pub const INDIRECT_DESC: u64 = 1 << 28;

// virtio-blk constants typed from the spec.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
pub const NEEDS_RESET: u32 = 0x40;

pub const DISK_SIZE: u64 = 1 << 20;
pub const CAPACITY: u64 = DISK_SIZE / 512;

#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<InterruptKind>>);

impl Interrupt for Recorder {
    fn trigger(&self, kind: InterruptKind) {
        self.0.lock().unwrap().push(kind);
    }
}

impl Recorder {
    pub fn take(&self) -> Vec<InterruptKind> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A temporary file removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempFile {
    pub fn new(tag: &str, contents: &[u8]) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tdx-devices-{tag}-{}-{n}.img", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile { path }
    }
    pub fn open(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap()
    }
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The initial disk contents: byte i = (i / 512 + i) as u8 — every sector different.
pub fn pattern(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 512) as u8).wrapping_add(i as u8))
        .collect()
}

pub fn range(start: u64, len: u64) -> GpaRange {
    GpaRange::new(Gpa(start), len).unwrap()
}

pub fn guest() -> (GuestMemoryMmap, SharedGuestMemory) {
    let raw = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let attrs = Arc::new(AttributeMap::new(Gpaw::Gpaw48));
    attrs
        .convert(range(RING, 0x4000), PageState::Shared)
        .unwrap();
    attrs
        .convert(range(DATA, DATA_END - DATA), PageState::Shared)
        .unwrap();
    attrs
        .convert(range(ABSENT, 0x10000), PageState::Shared)
        .unwrap();
    let shared = SharedGuestMemory::new(attrs, raw.clone()).unwrap();
    (raw, shared)
}

pub type Transport<D> = MmioTransport<D, SharedGuestMemory, Arc<Recorder>>;

pub struct H<D: VirtioDevice> {
    pub raw: GuestMemoryMmap,
    pub t: Transport<D>,
    pub irq: Arc<Recorder>,
    pub qsize: u16,
    next_desc: u16,
    next_buf: u64,
    pub queue: u32,
}

impl<D: VirtioDevice> H<D> {
    pub fn with_device(device: D, config: MmioConfig, qsize: u16) -> Self {
        let (raw, shared) = guest();
        let irq = Arc::new(Recorder::default());
        let t = MmioTransport::new(device, shared, irq.clone(), config);
        H {
            raw,
            t,
            irq,
            qsize,
            next_desc: 0,
            next_buf: DATA,
            queue: 0,
        }
    }

    /// The driver's ring layout: descriptor table at RING, avail ring right after it, used
    /// ring after the avail ring's 6 + 2n bytes, aligned to 4. (virtio-queue 0.18's
    /// `MockSplitQueue::create` places the used ring inside the avail ring — its
    /// `SplitQueueRing::end` adds the element count, not the byte size — and zeroes both
    /// rings' indexes each time it is created, so only its `DescriptorTable` is used.)
    pub fn desc_addr(&self) -> u64 {
        RING
    }
    pub fn avail_addr(&self) -> u64 {
        RING + 16 * u64::from(self.qsize)
    }
    pub fn used_addr(&self) -> u64 {
        (self.avail_addr() + 6 + 2 * u64::from(self.qsize) + 3) & !3
    }
    pub fn table(&self) -> DescriptorTable<'_, GuestMemoryMmap> {
        DescriptorTable::new(&self.raw, GuestAddress(RING), self.qsize)
    }

    pub fn r32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn w32(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    pub fn status(&mut self) -> u32 {
        self.r32(reg::STATUS)
    }

    /// ACKNOWLEDGE | DRIVER, driver features, FEATURES_OK. Returns the status read back.
    pub fn negotiate(&mut self, features: u64) -> u32 {
        self.w32(reg::STATUS, status::ACKNOWLEDGE);
        self.w32(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.w32(reg::DRIVER_FEATURES_SEL, 0);
        self.w32(reg::DRIVER_FEATURES, features as u32);
        self.w32(reg::DRIVER_FEATURES_SEL, 1);
        self.w32(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.w32(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.status()
    }

    /// Writes queue `q`'s size and the mock layout's addresses, then QueueReady=1. Returns
    /// QueueReady read back.
    pub fn setup_queue_at(&mut self, q: u32, size: u16, desc: u64, avail: u64, used: u64) -> u32 {
        self.w32(reg::QUEUE_SEL, q);
        self.w32(reg::QUEUE_NUM, u32::from(size));
        self.w32(reg::QUEUE_DESC_LOW, desc as u32);
        self.w32(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.w32(reg::QUEUE_DRIVER_LOW, avail as u32);
        self.w32(reg::QUEUE_DRIVER_HIGH, (avail >> 32) as u32);
        self.w32(reg::QUEUE_DEVICE_LOW, used as u32);
        self.w32(reg::QUEUE_DEVICE_HIGH, (used >> 32) as u32);
        self.w32(reg::QUEUE_READY, 1);
        self.r32(reg::QUEUE_READY)
    }

    pub fn setup_queue(&mut self, q: u32) -> u32 {
        let (d, a, u) = (self.desc_addr(), self.avail_addr(), self.used_addr());
        let size = self.qsize;
        self.setup_queue_at(q, size, d, a, u)
    }

    pub fn driver_ok(&mut self) {
        let s = self.status();
        self.w32(reg::STATUS, s | status::DRIVER_OK);
    }

    /// Full, correct bring-up with `extra` features on top of VERSION_1 | ACCESS_PLATFORM.
    pub fn bring_up(&mut self, extra: u64) {
        let st = self.negotiate(VERSION_1 | ACCESS_PLATFORM | extra);
        assert_ne!(st & status::FEATURES_OK, 0, "negotiation failed");
        let r = self.setup_queue(self.queue);
        assert_eq!(r, 1, "queue refused: {:?}", self.t.last_error());
        self.driver_ok();
        assert_ne!(self.status() & status::DRIVER_OK, 0);
    }

    pub fn write_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = SplitDescriptor::new(addr, len, flags, next);
        self.table().store(i, RawDescriptor::from(d)).unwrap();
    }

    /// Writes a chain at the next free descriptor indexes (NEXT/next filled in); returns the
    /// head. Each element: (addr, len, writable).
    pub fn chain(&mut self, segs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, &(addr, len, w)) in segs.iter().enumerate() {
            let i = (head + k as u16) % self.qsize;
            let last = k + 1 == segs.len();
            let mut flags = if w { F_WRITE } else { 0 };
            let next = if last {
                0
            } else {
                flags |= F_NEXT;
                (i + 1) % self.qsize
            };
            self.write_desc(i, addr, len, flags, next);
        }
        self.next_desc = (head + segs.len() as u16) % self.qsize;
        head
    }

    pub fn avail_idx(&self) -> u16 {
        let a = GuestAddress(self.avail_addr());
        self.raw.read_obj::<u16>(a.unchecked_add(2)).unwrap()
    }

    pub fn set_avail_idx(&self, v: u16) {
        let a = GuestAddress(self.avail_addr());
        self.raw.write_obj(v, a.unchecked_add(2)).unwrap();
    }

    /// Puts `head` into the avail ring and bumps avail.idx.
    pub fn publish(&self, head: u16) {
        let a = GuestAddress(self.avail_addr());
        let idx = self.avail_idx();
        let slot = u64::from(idx % self.qsize);
        self.raw
            .write_obj(head, a.unchecked_add(4 + 2 * slot))
            .unwrap();
        self.set_avail_idx(idx.wrapping_add(1));
    }

    pub fn kick(&mut self) {
        let q = self.queue;
        self.w32(reg::QUEUE_NOTIFY, q);
    }

    pub fn used_idx(&self) -> u16 {
        let u = GuestAddress(self.used_addr());
        self.raw.read_obj::<u16>(u.unchecked_add(2)).unwrap()
    }

    /// Used element `i` as (id, len).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let u = GuestAddress(self.used_addr());
        let at = u.unchecked_add(4 + 8 * u64::from(i % self.qsize));
        let id = self.raw.read_obj::<u32>(at).unwrap();
        let len = self.raw.read_obj::<u32>(at.unchecked_add(4)).unwrap();
        (id, len)
    }

    /// Allocates `len` bytes of shared data buffer (8-byte aligned) filled with `fill`.
    pub fn buf(&mut self, len: u64, fill: u8) -> u64 {
        let at = self.next_buf;
        self.next_buf = (at + len + 7) & !7;
        assert!(self.next_buf <= DATA_END, "harness out of buffers");
        let v = vec![fill; len as usize];
        self.raw.write_slice(&v, GuestAddress(at)).unwrap();
        at
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.raw.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    pub fn byte(&self, addr: u64) -> u8 {
        self.raw.read_obj(GuestAddress(addr)).unwrap()
    }

    pub fn convert(&self, start: u64, len: u64, to: PageState) {
        self.t
            .memory()
            .attributes()
            .convert(range(start, len), to)
            .unwrap();
    }
}

pub type BlkH = H<BlkDevice<RawFile>>;

pub struct Blk {
    pub h: BlkH,
    pub disk: TempFile,
    pub initial: Vec<u8>,
}

impl std::ops::Deref for Blk {
    type Target = BlkH;
    fn deref(&self) -> &BlkH {
        &self.h
    }
}
impl std::ops::DerefMut for Blk {
    fn deref_mut(&mut self) -> &mut BlkH {
        &mut self.h
    }
}

pub fn blk_with(cfg: BlkConfig, mmio: MmioConfig, qsize: u16) -> Blk {
    let initial = pattern(DISK_SIZE);
    let disk = TempFile::new("blk", &initial);
    let dev = BlkDevice::new(RawFile::new(disk.open()).unwrap(), cfg);
    Blk {
        h: H::with_device(dev, mmio, qsize),
        disk,
        initial,
    }
}

/// A blk device with queue size 16, brought up.
pub fn blk() -> Blk {
    let mut b = blk_with(
        BlkConfig {
            queue_size: 16,
            seg_max: 14,
            ..BlkConfig::default()
        },
        MmioConfig::default(),
        16,
    );
    b.bring_up(0);
    b
}

impl Blk {
    /// Writes a 16-byte out-header into a fresh shared buffer; returns its address.
    pub fn header(&mut self, t: u32, sector: u64) -> u64 {
        let at = self.buf(16, 0);
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&t.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        self.raw.write_slice(&hdr, GuestAddress(at)).unwrap();
        at
    }

    /// A fresh status byte preset to 0xee.
    pub fn status_buf(&mut self) -> u64 {
        self.buf(1, 0xee)
    }

    /// Publishes and kicks one chain; returns (status byte, used (id, len)) and asserts one
    /// used entry was added.
    pub fn run(&mut self, segs: &[(u64, u32, bool)], status_at: u64) -> (u8, u32) {
        let before = self.used_idx();
        let head = self.chain(segs);
        self.publish(head);
        self.kick();
        assert_eq!(self.used_idx(), before.wrapping_add(1), "no used entry");
        let (id, len) = self.used(before);
        assert_eq!(id, u32::from(head));
        (self.byte(status_at), len)
    }

    pub fn file(&self) -> Vec<u8> {
        self.disk.bytes()
    }

    pub fn file_unchanged(&self) -> bool {
        self.file() == self.initial
    }
}
