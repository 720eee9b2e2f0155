//! virtio-blk request throughput through the device path (MMIO notify → snapshot → pread/
//! pwrite → used ring, through the shared-only view) against plain `pread`/`pwrite` of the
//! same file, at 4 KiB and 64 KiB, in the same run.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_devices::blk::{BlkConfig, BlkDevice, RawFile};
use tdx_devices::interrupt::NoInterrupt;
use tdx_devices::mmio::{reg, status, MmioConfig, MmioTransport};
use tdx_memory::attributes::{AttributeMap, PageState};
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::SharedGuestMemory;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const QSIZE: u64 = 256;
const DESC: u64 = 0;
const AVAIL: u64 = DESC + 16 * QSIZE;
const USED: u64 = 0x2000;
const HDR: u64 = 0x10_0000;
const STATUS: u64 = 0x10_1000;
const DATA: u64 = 0x20_0000;
const DISK: u64 = 64 << 20;

struct Rig {
    raw: GuestMemoryMmap,
    t: MmioTransport<BlkDevice<RawFile>, SharedGuestMemory, NoInterrupt>,
    avail_idx: u16,
}

fn w(t: &mut MmioTransport<BlkDevice<RawFile>, SharedGuestMemory, NoInterrupt>, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn rig(path: &std::path::Path) -> Rig {
    let raw = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let attrs = Arc::new(AttributeMap::new(Gpaw::Gpaw48));
    attrs
        .convert(GpaRange::new(Gpa(0), 4 << 20).unwrap(), PageState::Shared)
        .unwrap();
    let shared = SharedGuestMemory::new(attrs, raw.clone()).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let dev = BlkDevice::new(RawFile::new(file).unwrap(), BlkConfig::default());
    let mut t = MmioTransport::new(dev, shared, NoInterrupt, MmioConfig::default());
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 0b11);
    w(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    w(&mut t, reg::QUEUE_NUM, QSIZE as u32);
    w(&mut t, reg::QUEUE_DESC_LOW, DESC as u32);
    w(&mut t, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    w(&mut t, reg::QUEUE_DEVICE_LOW, USED as u32);
    w(&mut t, reg::QUEUE_READY, 1);
    w(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert_eq!(t.status() & status::DRIVER_OK, status::DRIVER_OK);
    Rig {
        raw,
        t,
        avail_idx: 0,
    }
}

impl Rig {
    /// One request of `len` bytes at `sector`, `t` = 0 (IN) or 1 (OUT).
    fn request(&mut self, t: u32, sector: u64, len: u32) {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&t.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        self.raw.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        let dflag = if t == 0 { 2 } else { 0 };
        let descs = [
            Descriptor::new(HDR, 16, 1, 1),
            Descriptor::new(DATA, len, 1 | dflag, 2),
            Descriptor::new(STATUS, 1, 2, 0),
        ];
        for (i, d) in descs.iter().enumerate() {
            self.raw
                .write_obj(*d, GuestAddress(DESC + 16 * i as u64))
                .unwrap();
        }
        let slot = u64::from(self.avail_idx) % QSIZE;
        self.raw
            .write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.raw
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        w(&mut self.t, reg::QUEUE_NOTIFY, 0);
        debug_assert_eq!(self.raw.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), 0);
    }
}

fn bench(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("tdx-devices-bench-{}.img", std::process::id()));
    std::fs::write(&path, vec![0x5au8; DISK as usize]).unwrap();
    let mut r = rig(&path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut g = c.benchmark_group("blk");
    g.sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for size in [4096u32, 65536] {
        let sectors = DISK / 512 - u64::from(size) / 512;
        g.throughput(Throughput::Bytes(u64::from(size)));
        let mut s = 0u64;
        g.bench_function(format!("device_read_{}k", size / 1024), |b| {
            b.iter(|| {
                s = (s + 8 * 61) % sectors;
                r.request(0, s, size)
            })
        });
        g.bench_function(format!("pread_{}k", size / 1024), |b| {
            b.iter(|| {
                s = (s + 8 * 61) % sectors;
                file.read_exact_at(&mut buf[..size as usize], s * 512)
                    .unwrap()
            })
        });
        g.bench_function(format!("device_write_{}k", size / 1024), |b| {
            b.iter(|| {
                s = (s + 8 * 61) % sectors;
                r.request(1, s, size)
            })
        });
        g.bench_function(format!("pwrite_{}k", size / 1024), |b| {
            b.iter(|| {
                s = (s + 8 * 61) % sectors;
                file.write_all_at(&buf[..size as usize], s * 512).unwrap()
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, bench);
criterion_main!(benches);
