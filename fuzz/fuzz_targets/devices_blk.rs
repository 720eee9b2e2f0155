//! Hostile guest against virtio-blk over virtio-mmio: the input becomes descriptor tables,
//! avail-ring entries, request headers and buffer contents (and sometimes private pages);
//! the device must never panic and must keep its invariants.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_devices::blk::{BlkConfig, BlkDevice, RawFile};
use tdx_devices::interrupt::NoInterrupt;
use tdx_devices::mmio::{reg, status, MmioConfig, MmioTransport};
use tdx_devices::tdx_memory::attributes::{AttributeMap, PageState};
use tdx_devices::tdx_memory::layout::GpaRange;
use tdx_devices::tdx_memory::shared::SharedGuestMemory;
use tdx_devices::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const Q: u64 = 16;
const AVAIL: u64 = 16 * Q;
const USED: u64 = 0x200;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let raw = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap();
    let attrs = Arc::new(AttributeMap::new(Gpaw::Gpaw48));
    attrs
        .convert(GpaRange::new(Gpa(0), 0x3_0000).unwrap(), PageState::Shared)
        .unwrap();
    // One private page in the middle of the buffers, chosen by the input.
    let private = 0x1000 * (1 + u64::from(data[0] % 0x2f));
    attrs
        .convert(GpaRange::new(Gpa(private), 0x1000).unwrap(), PageState::Private)
        .unwrap();
    let shared = SharedGuestMemory::new(attrs, raw.clone()).unwrap();
    let path = std::env::temp_dir().join(format!("tdx-fuzz-blk-{}.img", std::process::id()));
    std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let cfg = BlkConfig {
        read_only: data[1] & 1 != 0,
        queue_size: Q as u16,
        seg_max: 1 + u32::from(data[1] >> 4),
        size_max: 512 << (data[1] & 7),
        ..BlkConfig::default()
    };
    let dev = BlkDevice::new(RawFile::new(file).unwrap(), cfg);
    let mmio = MmioConfig {
        budget: 1 + u16::from(data[2] % 16),
        offer_indirect: data[2] & 0x80 != 0,
        ..MmioConfig::default()
    };
    let mut t = MmioTransport::new(dev, shared, NoInterrupt, mmio);
    let w = |t: &mut MmioTransport<_, _, _>, off: u64, v: u32| t.write(off, &v.to_le_bytes());
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES, u32::from(data[3]) << 9 | 0x4246 & (u32::from(data[3]) << 1));
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 0b11);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    w(&mut t, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    w(&mut t, reg::QUEUE_DEVICE_LOW, USED as u32);
    w(&mut t, reg::QUEUE_DESC_LOW, 0);
    w(&mut t, reg::QUEUE_READY, 1);
    let s = t.status();
    w(&mut t, reg::STATUS, s | status::DRIVER_OK);

    // The rest: 12-byte records. op 0: descriptor, 1: avail entry, 2: kick, 3: raw bytes,
    // 4: header, 5: reset + bring-up of the queue again.
    let mut avail_idx: u16 = 0;
    for rec in data[4..].chunks(12) {
        let mut r = [0u8; 12];
        r[..rec.len()].copy_from_slice(rec);
        let u16_at = |i: usize| u16::from_le_bytes([r[i], r[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
        match r[0] % 6 {
            0 => {
                let i = u64::from(r[1] % Q as u8);
                let addr = u64::from(u16_at(2)) * 8;
                let len = if r[11] & 0x80 != 0 { u32_at(4) } else { u32::from(u16_at(4)) };
                let d = [addr.to_le_bytes().as_slice(), &len.to_le_bytes(), &u16::from(r[8] & 0x7).to_le_bytes(), &u16::from(r[9]).to_le_bytes()].concat();
                let _ = raw.write_slice(&d, GuestAddress(16 * i));
            }
            1 => {
                let _ = raw.write_obj(u16_at(2) % 20, GuestAddress(AVAIL + 4 + 2 * u64::from(avail_idx % Q as u16)));
                avail_idx = avail_idx.wrapping_add(if r[1] == 0xff { u16_at(4) } else { 1 });
                let _ = raw.write_obj(avail_idx, GuestAddress(AVAIL + 2));
            }
            2 => w(&mut t, reg::QUEUE_NOTIFY, u32::from(r[1] & 1)),
            3 => {
                let _ = raw.write_slice(&r[4..], GuestAddress(u64::from(u16_at(2)) * 4));
            }
            4 => {
                let mut h = [0u8; 16];
                h[0..4].copy_from_slice(&u32::from(r[1] % 16).to_le_bytes());
                h[8..12].copy_from_slice(&r[4..8]);
                let _ = raw.write_slice(&h, GuestAddress(u64::from(u16_at(2)) * 8));
            }
            _ => {
                w(&mut t, reg::STATUS, 0);
                avail_idx = 0;
                let _ = raw.write_slice(&[0u8; 0x400], GuestAddress(0));
            }
        }
        let q = t.queue(0).unwrap();
        assert!(q.in_flight() == 0, "requests complete synchronously");
    }
    let _ = std::fs::remove_file(&path);
});
