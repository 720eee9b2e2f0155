//! The shared-only guest memory driven through virtio-queue 0.18's `MockSplitQueue`: rings and
//! buffers in shared pages work; private, straddling, unbacked and above-GPAW addresses fail
//! with typed errors naming the address; conversions take effect immediately.

use std::sync::Arc;

use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_memory::attributes::{AttributeMap, PageState};
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::{SharedAccessError, SharedGuestMemory, SharedMemoryError};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError, GuestMemoryMmap};

const G48: Gpaw = Gpaw::Gpaw48;
const MEM_SIZE: usize = 16 << 20;
const RING_PAGE: u64 = 0x0;
const SHARED_BUF: u64 = 0x10000;
const PRIVATE_BUF: u64 = 0x20000;
const VRING_DESC_F_WRITE: u16 = 2;

struct Setup {
    raw: GuestMemoryMmap,
    shared: SharedGuestMemory,
}

fn page(start: u64, pages: u64) -> GpaRange {
    GpaRange::new(Gpa(start), pages * 0x1000).unwrap()
}

fn setup() -> Setup {
    let raw = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let attrs = Arc::new(AttributeMap::new(G48));
    attrs
        .convert(page(RING_PAGE, 1), PageState::Shared)
        .unwrap();
    attrs
        .convert(page(SHARED_BUF, 1), PageState::Shared)
        .unwrap();
    let shared = SharedGuestMemory::new(attrs, raw.clone()).unwrap();
    Setup { raw, shared }
}

fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}

/// Publishes a one-descriptor chain (driver side, raw memory) and has the device (the view)
/// pop it and build a Reader (or Writer for a device-writable descriptor). Returns the
/// typed refusal, if any.
fn device_access(s: &Setup, d: RawDescriptor) -> Result<usize, SharedAccessError> {
    let mock = MockSplitQueue::create(&s.raw, GuestAddress(RING_PAGE), 16);
    mock.add_desc_chains(&[d], 0).unwrap();
    let mut q: Queue = mock.create_queue().unwrap();
    let view = s.shared.view();
    assert!(q.is_valid(&view), "rings in shared pages must be valid");
    let chain = q.iter(&view).unwrap().next().expect("one chain");
    let writable = SplitDescriptor::from(d).is_write_only();
    let res = if writable {
        Writer::new(&view, chain).map(|w| w.available_bytes())
    } else {
        Reader::new(&view, chain).map(|r| r.available_bytes())
    };
    res.map_err(|e| match e {
        virtio_queue::Error::GuestMemoryError(g) => *SharedAccessError::from_guest_memory_error(&g)
            .unwrap_or_else(|| panic!("untyped guest memory error {g:?}")),
        other => panic!("unexpected queue error {other:?}"),
    })
}

#[test]
fn shared_buffer_works() {
    let s = setup();
    s.raw
        .write_slice(b"hello TD", GuestAddress(SHARED_BUF))
        .unwrap();
    assert_eq!(device_access(&s, desc(SHARED_BUF, 256, 0)), Ok(256));
    assert_eq!(
        device_access(&s, desc(SHARED_BUF + 0x100, 0x100, VRING_DESC_F_WRITE)),
        Ok(256)
    );
    let view = s.shared.view();
    let mut buf = [0u8; 8];
    view.read_slice(&mut buf, GuestAddress(SHARED_BUF)).unwrap();
    assert_eq!(&buf, b"hello TD");
}

#[test]
fn private_buffer_fails() {
    let s = setup();
    assert_eq!(
        device_access(&s, desc(PRIVATE_BUF, 256, 0)),
        Err(SharedAccessError::Private {
            addr: 0x20000,
            len: 256,
            gpa: Gpa(0x20000)
        })
    );
    assert_eq!(
        device_access(&s, desc(PRIVATE_BUF + 0x80, 16, VRING_DESC_F_WRITE)),
        Err(SharedAccessError::Private {
            addr: 0x20080,
            len: 16,
            gpa: Gpa(0x20080)
        })
    );
}

#[test]
fn straddling_shared_to_private_fails() {
    let s = setup();
    // 0x10f00..0x11100: the second part is in the private page 0x11000.
    assert_eq!(
        device_access(&s, desc(SHARED_BUF + 0xf00, 0x200, 0)),
        Err(SharedAccessError::Private {
            addr: 0x10f00,
            len: 0x200,
            gpa: Gpa(0x11000)
        })
    );
}

#[test]
fn absent_memory_fails() {
    let s = setup();
    // Beyond the 16 MiB memslot; mark it shared so absence is what is reported.
    s.shared
        .attributes()
        .convert(page(0x2000_0000, 1), PageState::Shared)
        .unwrap();
    assert_eq!(
        device_access(&s, desc(0x2000_0000, 64, 0)),
        Err(SharedAccessError::Absent {
            addr: 0x2000_0000,
            len: 64,
            gpa: Gpa(0x2000_0000)
        })
    );
    // Running off the end of RAM: the first unbacked byte is named.
    s.shared
        .attributes()
        .convert(page(MEM_SIZE as u64 - 0x1000, 2), PageState::Shared)
        .unwrap();
    assert_eq!(
        device_access(&s, desc(MEM_SIZE as u64 - 0x10, 0x20, 0)),
        Err(SharedAccessError::Absent {
            addr: MEM_SIZE as u64 - 0x10,
            len: 0x20,
            gpa: Gpa(MEM_SIZE as u64)
        })
    );
    // Unbacked and private (never converted): the lower bad byte wins, absence on a tie.
    assert_eq!(
        device_access(&s, desc(0x4000_0000, 8, 0)),
        Err(SharedAccessError::Absent {
            addr: 0x4000_0000,
            len: 8,
            gpa: Gpa(0x4000_0000)
        })
    );
}

#[test]
fn bits_above_gpaw_fail() {
    let s = setup();
    let addr = (1u64 << 48) | SHARED_BUF;
    assert_eq!(
        device_access(&s, desc(addr, 64, 0)),
        Err(SharedAccessError::AboveGpaw { addr, gpaw: G48 })
    );
    assert_eq!(
        device_access(&s, desc(u64::MAX - 0x10, 64, 0)),
        Err(SharedAccessError::AboveGpaw {
            addr: u64::MAX - 0x10,
            gpaw: G48
        })
    );
    // Shared alias running past the top of the GPAW space.
    assert_eq!(
        device_access(&s, desc(0xffff_ffff_fff0, 0x20, 0)),
        Err(SharedAccessError::OutOfRange {
            addr: 0xffff_ffff_fff0,
            len: 0x20
        })
    );
}

#[test]
fn shared_bit_alias_is_canonicalised() {
    let s = setup();
    s.raw
        .write_obj(0x1122_3344_u32, GuestAddress(SHARED_BUF))
        .unwrap();
    let alias = SHARED_BUF | (1 << 47);
    assert_eq!(device_access(&s, desc(alias, 128, 0)), Ok(128));
    let view = s.shared.view();
    assert_eq!(
        view.read_obj::<u32>(GuestAddress(alias)).unwrap(),
        0x1122_3344
    );
    assert_eq!(
        view.check(GuestAddress(alias | 0x20000), 4),
        Err(SharedAccessError::Private {
            addr: 0x8000_0003_0000,
            len: 4,
            gpa: Gpa(0x30000)
        })
    );
    // The whole queue placed at the shared alias also works.
    let mut q: Queue = MockSplitQueue::create(&s.raw, GuestAddress(RING_PAGE), 16)
        .create_queue()
        .unwrap();
    q.set_desc_table_address(Some(0), Some(0x8000));
    assert!(q.is_valid(&view));
}

#[test]
fn rings_in_private_pages_are_invalid() {
    let s = setup();
    let mock = MockSplitQueue::create(&s.raw, GuestAddress(0x40000), 16);
    let q: Queue = mock.create_queue().unwrap();
    assert!(!q.is_valid(&s.shared.view()));
    s.shared
        .attributes()
        .convert(page(0x40000, 1), PageState::Shared)
        .unwrap();
    assert!(q.is_valid(&s.shared.view()));
}

#[test]
fn conversion_round_trip() {
    let s = setup();
    let attrs = s.shared.attributes().clone();
    assert!(device_access(&s, desc(PRIVATE_BUF, 512, 0)).is_err());

    attrs
        .convert(page(PRIVATE_BUF, 1), PageState::Shared)
        .unwrap();
    s.raw
        .write_slice(&[0xab; 512], GuestAddress(PRIVATE_BUF))
        .unwrap();
    assert_eq!(device_access(&s, desc(PRIVATE_BUF, 512, 0)), Ok(512));
    {
        let view = s.shared.view();
        let mut buf = [0u8; 512];
        view.read_slice(&mut buf, GuestAddress(PRIVATE_BUF))
            .unwrap();
        assert_eq!(buf, [0xab; 512]);
    }

    attrs
        .convert(page(PRIVATE_BUF, 1), PageState::Private)
        .unwrap();
    assert_eq!(
        device_access(&s, desc(PRIVATE_BUF, 512, 0)),
        Err(SharedAccessError::Private {
            addr: PRIVATE_BUF,
            len: 512,
            gpa: Gpa(PRIVATE_BUF)
        })
    );
    // The shared backing was discarded on conversion to private.
    let mut raw = [0xffu8; 512];
    s.raw
        .read_slice(&mut raw, GuestAddress(PRIVATE_BUF))
        .unwrap();
    assert_eq!(raw, [0u8; 512]);
    // And stays zero when shared again.
    attrs
        .convert(page(PRIVATE_BUF, 1), PageState::Shared)
        .unwrap();
    let view = s.shared.view();
    assert_eq!(view.read_obj::<u64>(GuestAddress(PRIVATE_BUF)).unwrap(), 0);
}

#[test]
fn bytes_errors_are_typed() {
    let s = setup();
    let view = s.shared.view();
    let e: GuestMemoryError = view.read_obj::<u64>(GuestAddress(PRIVATE_BUF)).unwrap_err();
    assert_eq!(
        SharedAccessError::from_guest_memory_error(&e),
        Some(&SharedAccessError::Private {
            addr: PRIVATE_BUF,
            len: 8,
            gpa: Gpa(PRIVATE_BUF)
        })
    );
    assert!(e.to_string().contains("private GPA 0x20000"), "{e}");
    let e = view
        .write_obj(1u32, GuestAddress(SHARED_BUF + 0xffe))
        .unwrap_err();
    assert_eq!(
        SharedAccessError::from_guest_memory_error(&e),
        Some(&SharedAccessError::Private {
            addr: SHARED_BUF + 0xffe,
            len: 4,
            gpa: Gpa(SHARED_BUF + 0x1000)
        })
    );
    assert!(!view.check_range(GuestAddress(PRIVATE_BUF), 1, vm_memory::Permissions::Read));
    assert!(view.check_range(
        GuestAddress(SHARED_BUF),
        0x1000,
        vm_memory::Permissions::ReadWrite
    ));
    assert!(view.physical_memory().is_none());
    // Empty accesses need only a canonical address.
    assert!(view.check(GuestAddress(PRIVATE_BUF), 0).is_ok());
    assert!(view.check(GuestAddress(1 << 50), 0).is_err());
}

#[test]
fn backing_must_be_canonical() {
    let attrs = Arc::new(AttributeMap::new(G48));
    let raw =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x8000_0000_0000), 0x1000)]).unwrap();
    assert_eq!(
        SharedGuestMemory::new(attrs, raw).unwrap_err(),
        SharedMemoryError::RegionNotCanonical {
            start: Gpa(0x8000_0000_0000),
            len: 0x1000,
            gpaw: G48
        }
    );
}
