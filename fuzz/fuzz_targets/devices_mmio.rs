//! Arbitrary register reads and writes (any offset, any width, any value) against the
//! virtio-mmio transport of a block device, with the input also written into guest memory:
//! never a panic, identification registers never change.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_devices::blk::{BlkConfig, BlkDevice, RawFile};
use tdx_devices::interrupt::NoInterrupt;
use tdx_devices::mmio::{MmioConfig, MmioTransport};
use tdx_devices::tdx_memory::attributes::{AttributeMap, PageState};
use tdx_devices::tdx_memory::layout::GpaRange;
use tdx_devices::tdx_memory::shared::SharedGuestMemory;
use tdx_devices::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

fuzz_target!(|data: &[u8]| {
    let raw = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2_0000)]).unwrap();
    let _ = raw.write_slice(&data[..data.len().min(0x2_0000)], GuestAddress(0));
    let attrs = Arc::new(AttributeMap::new(Gpaw::Gpaw48));
    attrs
        .convert(GpaRange::new(Gpa(0), 0x1_0000).unwrap(), PageState::Shared)
        .unwrap();
    let shared = SharedGuestMemory::new(attrs, raw).unwrap();
    let path = std::env::temp_dir().join(format!("tdx-fuzz-mmio-{}.img", std::process::id()));
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let dev = BlkDevice::new(RawFile::new(file).unwrap(), BlkConfig { queue_size: 8, ..BlkConfig::default() });
    let mut t = MmioTransport::new(dev, shared, NoInterrupt, MmioConfig::default());
    // Records: [kind, width, offset lo, offset hi, value u64].
    for rec in data.chunks(12) {
        let mut r = [0u8; 12];
        r[..rec.len()].copy_from_slice(rec);
        let width = [1usize, 2, 4, 8, 4, 4, 4, 3][usize::from(r[1] & 7)];
        let off = if r[0] & 0x80 != 0 {
            u64::from_le_bytes([r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]])
        } else {
            u64::from(u16::from_le_bytes([r[2], r[3]]) & 0x1ff)
        };
        if r[0] & 1 == 0 {
            let mut buf = [0u8; 8];
            t.read(off, &mut buf[..width]);
        } else {
            t.write(off, &r[4..4 + width.min(8)]);
        }
    }
    let mut m = [0u8; 4];
    t.read(0, &mut m);
    assert_eq!(u32::from_le_bytes(m), 0x7472_6976);
    let _ = std::fs::remove_file(&path);
});
