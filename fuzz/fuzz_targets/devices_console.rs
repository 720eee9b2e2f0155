//! Hostile guest against virtio-console's transmit queue: arbitrary descriptors, avail
//! entries and kicks; never a panic, output never exceeds what the chains held.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_devices::console::ConsoleDevice;
use tdx_devices::interrupt::NoInterrupt;
use tdx_devices::mmio::{reg, status, MmioConfig, MmioTransport};
use tdx_devices::tdx_memory::attributes::{AttributeMap, PageState};
use tdx_devices::tdx_memory::layout::GpaRange;
use tdx_devices::tdx_memory::shared::SharedGuestMemory;
use tdx_devices::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const Q: u64 = 8;
const AVAIL: u64 = 16 * Q;
const USED: u64 = 0x100;

fuzz_target!(|data: &[u8]| {
    let raw = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2_0000)]).unwrap();
    let attrs = Arc::new(AttributeMap::new(Gpaw::Gpaw48));
    attrs
        .convert(GpaRange::new(Gpa(0), 0x1_8000).unwrap(), PageState::Shared)
        .unwrap();
    let shared = SharedGuestMemory::new(attrs, raw.clone()).unwrap();
    let mut t = MmioTransport::new(ConsoleDevice::new(Vec::new(), Q as u16), shared, NoInterrupt, MmioConfig::default());
    let w = |t: &mut MmioTransport<_, _, _>, off: u64, v: u32| t.write(off, &v.to_le_bytes());
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 0b11);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    w(&mut t, reg::QUEUE_SEL, 1);
    w(&mut t, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    w(&mut t, reg::QUEUE_DEVICE_LOW, USED as u32);
    w(&mut t, reg::QUEUE_READY, 1);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    let mut avail_idx: u16 = 0;
    let mut kicks = 0u64;
    for rec in data.chunks(10) {
        let mut r = [0u8; 10];
        r[..rec.len()].copy_from_slice(rec);
        match r[0] % 4 {
            0 => {
                let i = u64::from(r[1] % Q as u8);
                let addr = u64::from(u16::from_le_bytes([r[2], r[3]])) * 2;
                let len = u32::from(u16::from_le_bytes([r[4], r[5]])) << (r[6] & 3);
                let d = [addr.to_le_bytes().as_slice(), &len.to_le_bytes(), &u16::from(r[7] & 7).to_le_bytes(), &u16::from(r[8] % 10).to_le_bytes()].concat();
                let _ = raw.write_slice(&d, GuestAddress(16 * i));
            }
            1 => {
                let _ = raw.write_obj(u16::from(r[1] % 10), GuestAddress(AVAIL + 4 + 2 * u64::from(avail_idx % Q as u16)));
                avail_idx = avail_idx.wrapping_add(1);
                let _ = raw.write_obj(avail_idx, GuestAddress(AVAIL + 2));
            }
            2 => {
                kicks += 1;
                w(&mut t, reg::QUEUE_NOTIFY, u32::from(r[1] & 1));
            }
            _ => {
                let _ = raw.write_slice(&r[2..], GuestAddress(0x1000 + u64::from(r[1]) * 64));
            }
        }
    }
    // Each kick completes at most `budget` chains of at most 64 KiB.
    assert!(t.device().sink().len() as u64 <= kicks * 64 * 65536);
});
