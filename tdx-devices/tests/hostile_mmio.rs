//! Hostile-guest suite, virtio-mmio transport: identification, feature negotiation (TD
//! policy), register-access abuse, queue configuration checks; and virtio-console.

mod common;

use common::*;
use tdx_devices::blk::BlkConfig;
use tdx_devices::console::ConsoleDevice;
use tdx_devices::mmio::{reg, status, DeviceMode, MmioConfig, TransportError};
use tdx_devices::queue::{QueueConfigError, Ring};
use tdx_memory::attributes::PageState;
use vm_memory::Bytes as _;

fn fresh() -> Blk {
    blk_with(
        BlkConfig {
            queue_size: 16,
            seg_max: 14,
            ..BlkConfig::default()
        },
        MmioConfig::default(),
        16,
    )
}

#[test]
fn identification_registers() {
    let mut b = fresh();
    // (offset, value) typed from virtio 1.x §4.2.2.
    let cases: &[(u64, u32)] = &[
        (0x000, 0x7472_6976),
        (0x004, 2),
        (0x008, 2),
        (0x00c, 0x4458_4454),
        (0x034, 16),
        (0x044, 0),
        (0x060, 0),
        (0x070, 0),
        (0x0fc, 0),
    ];
    for &(off, want) in cases {
        assert_eq!(b.r32(off), want, "register {off:#x}");
    }
    // Offered features in TD mode: VERSION_1 (32) and ACCESS_PLATFORM (33) in the high
    // word; SIZE_MAX(1) SEG_MAX(2) BLK_SIZE(6) FLUSH(9) WRITE_ZEROES(14) in the low word.
    b.w32(0x014, 1);
    assert_eq!(b.r32(0x010), 0b11);
    b.w32(0x014, 0);
    assert_eq!(
        b.r32(0x010),
        (1 << 1) | (1 << 2) | (1 << 6) | (1 << 9) | (1 << 14)
    );
    b.w32(0x014, 2);
    assert_eq!(b.r32(0x010), 0);
    b.w32(0x014, u32::MAX);
    assert_eq!(b.r32(0x010), 0);
}

#[test]
fn normal_mode_does_not_offer_access_platform() {
    let mut b = blk_with(
        BlkConfig::default(),
        MmioConfig {
            mode: DeviceMode::Normal,
            ..MmioConfig::default()
        },
        16,
    );
    b.w32(0x014, 1);
    assert_eq!(b.r32(0x010), 0b01);
    let st = b.negotiate(VERSION_1);
    assert_ne!(st & status::FEATURES_OK, 0);
}

#[test]
fn feature_negotiation_policy() {
    // (name, driver features, FEATURES_OK accepted?, refusal)
    let cases: &[(&str, u64, bool, Option<TransportError>)] = &[
        (
            "VERSION_1 | ACCESS_PLATFORM",
            VERSION_1 | ACCESS_PLATFORM,
            true,
            None,
        ),
        (
            "plus FLUSH",
            VERSION_1 | ACCESS_PLATFORM | (1 << 9),
            true,
            None,
        ),
        (
            "all offered",
            VERSION_1 | ACCESS_PLATFORM | 0x4246,
            true,
            None,
        ),
        (
            "drops ACCESS_PLATFORM",
            VERSION_1,
            false,
            Some(TransportError::MissingRequiredFeatures(ACCESS_PLATFORM)),
        ),
        (
            "drops VERSION_1",
            ACCESS_PLATFORM,
            false,
            Some(TransportError::MissingRequiredFeatures(VERSION_1)),
        ),
        (
            "drops both",
            0,
            false,
            Some(TransportError::MissingRequiredFeatures(
                VERSION_1 | ACCESS_PLATFORM,
            )),
        ),
        (
            "legacy only bits",
            1 << 9,
            false,
            Some(TransportError::MissingRequiredFeatures(
                VERSION_1 | ACCESS_PLATFORM,
            )),
        ),
        (
            "INDIRECT not offered",
            VERSION_1 | ACCESS_PLATFORM | INDIRECT_DESC,
            false,
            Some(TransportError::UnofferedFeatures(INDIRECT_DESC)),
        ),
        (
            "EVENT_IDX not offered",
            VERSION_1 | ACCESS_PLATFORM | (1 << 29),
            false,
            Some(TransportError::UnofferedFeatures(1 << 29)),
        ),
        (
            "RING_PACKED not offered",
            VERSION_1 | ACCESS_PLATFORM | (1 << 34),
            false,
            Some(TransportError::UnofferedFeatures(1 << 34)),
        ),
        (
            "bit 63",
            VERSION_1 | ACCESS_PLATFORM | (1 << 63),
            false,
            Some(TransportError::UnofferedFeatures(1 << 63)),
        ),
        (
            "RO on a writable disk",
            VERSION_1 | ACCESS_PLATFORM | (1 << 5),
            false,
            Some(TransportError::UnofferedFeatures(1 << 5)),
        ),
        (
            "DISCARD not offered",
            VERSION_1 | ACCESS_PLATFORM | (1 << 13),
            false,
            Some(TransportError::UnofferedFeatures(1 << 13)),
        ),
        (
            "MQ not offered",
            VERSION_1 | ACCESS_PLATFORM | (1 << 12),
            false,
            Some(TransportError::UnofferedFeatures(1 << 12)),
        ),
        (
            "all ones",
            u64::MAX,
            false,
            Some(TransportError::UnofferedFeatures(
                !(VERSION_1 | ACCESS_PLATFORM | 0x4246),
            )),
        ),
    ];
    for (name, f, ok, err) in cases {
        let mut b = fresh();
        let st = b.negotiate(*f);
        assert_eq!(st & status::FEATURES_OK != 0, *ok, "{name}");
        assert_eq!(b.t.last_error(), *err, "{name}");
        if !ok {
            // DRIVER_OK cannot follow a failed FEATURES_OK, and queues cannot be set up.
            b.driver_ok();
            assert_eq!(b.status() & status::DRIVER_OK, 0, "{name}");
            assert_eq!(b.setup_queue(0), 0, "{name}");
        }
    }
}

#[test]
fn feature_changes_after_features_ok_are_ignored() {
    let mut b = fresh();
    b.negotiate(VERSION_1 | ACCESS_PLATFORM);
    b.w32(reg::DRIVER_FEATURES_SEL, 1);
    b.w32(reg::DRIVER_FEATURES, 0);
    b.w32(reg::DRIVER_FEATURES_SEL, 0);
    b.w32(reg::DRIVER_FEATURES, u32::MAX);
    assert_eq!(b.t.driver_features(), VERSION_1 | ACCESS_PLATFORM);
    // Driver features select > 1 is ignored.
    let mut b = fresh();
    b.w32(reg::DRIVER_FEATURES_SEL, 2);
    b.w32(reg::DRIVER_FEATURES, u32::MAX);
    assert_eq!(b.t.driver_features(), 0);
}

#[test]
fn status_register_abuse() {
    // DRIVER_OK without FEATURES_OK.
    let mut b = fresh();
    b.w32(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_eq!(b.status(), status::ACKNOWLEDGE | status::DRIVER);
    // Clearing bits without a reset is ignored.
    b.w32(reg::STATUS, status::ACKNOWLEDGE);
    assert_eq!(b.status(), status::ACKNOWLEDGE | status::DRIVER);
    // The driver cannot set NEEDS_RESET.
    b.w32(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | NEEDS_RESET,
    );
    assert_eq!(b.status() & NEEDS_RESET, 0);
    // FAILED sticks; reset clears.
    b.w32(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FAILED,
    );
    assert_eq!(b.status() & status::FAILED, status::FAILED);
    b.w32(reg::STATUS, 0);
    assert_eq!(b.status(), 0);
}

#[test]
fn bad_register_accesses_are_ignored() {
    let mut b = fresh();
    // (offset, width) reads that return zeros.
    let reads: &[(u64, usize)] = &[
        (0x000, 1),
        (0x000, 2),
        (0x000, 8),
        (0x001, 4),
        (0x002, 4),
        (0x014, 4), // write-only DeviceFeaturesSel
        (0x020, 4), // write-only DriverFeatures
        (0x050, 4), // write-only QueueNotify
        (0x064, 4), // write-only InterruptACK
        (0x0c0, 4), // QueueReset: not offered
        (0x0f8, 4),
        (0x100, 16), // config wider than 8
    ];
    for &(off, w) in reads {
        let mut buf = vec![0xaau8; w];
        b.t.read(off, &mut buf);
        assert!(buf.iter().all(|&x| x == 0), "read {off:#x}/{w}");
    }
    let before = b.t.stats().ignored_accesses;
    assert_eq!(before, reads.len() as u64);
    // Writes: to read-only registers, wrong widths, misaligned, unknown.
    let writes: &[(u64, &[u8])] = &[
        (0x000, &[1, 2, 3, 4]),
        (0x004, &[9, 0, 0, 0]),
        (0x008, &[0, 0, 0, 0]),
        (0x034, &[0, 1, 0, 0]),
        (0x060, &[3, 0, 0, 0]),
        (0x0fc, &[1, 0, 0, 0]),
        (0x070, &[1]),
        (0x070, &[1, 0]),
        (0x070, &[1, 0, 0, 0, 0, 0, 0, 0]),
        (0x071, &[1, 0, 0, 0]),
        (0x0f0, &[1, 0, 0, 0]),
    ];
    for (off, data) in writes {
        b.t.write(*off, data);
    }
    assert_eq!(b.t.stats().ignored_accesses, before + writes.len() as u64);
    assert_eq!(b.r32(0x000), 0x7472_6976);
    assert_eq!(b.r32(0x004), 2);
    assert_eq!(b.status(), 0);
}

#[test]
fn queue_configuration_checks() {
    type Setup = fn(&mut Blk) -> u32;
    let cases: &[(&str, Setup, Option<QueueConfigError>)] = &[
        (
            "valid",
            |b| {
                let (d, a, u) = (b.desc_addr(), b.avail_addr(), b.used_addr());
                b.setup_queue_at(0, 16, d, a, u)
            },
            None,
        ),
        (
            "size 0",
            |b| b.setup_queue_at(0, 0, 0, 0x1000, 0x2000),
            Some(QueueConfigError::InvalidSize { size: 0, max: 16 }),
        ),
        (
            "size 3",
            |b| b.setup_queue_at(0, 3, 0, 0x1000, 0x2000),
            Some(QueueConfigError::InvalidSize { size: 3, max: 16 }),
        ),
        (
            "size 12",
            |b| b.setup_queue_at(0, 12, 0, 0x1000, 0x2000),
            Some(QueueConfigError::InvalidSize { size: 12, max: 16 }),
        ),
        (
            "size 32 > max",
            |b| b.setup_queue_at(0, 32, 0, 0x1000, 0x2000),
            Some(QueueConfigError::InvalidSize { size: 32, max: 16 }),
        ),
        (
            "size 0xffff",
            |b| b.setup_queue_at(0, 0xffff, 0, 0x1000, 0x2000),
            Some(QueueConfigError::InvalidSize {
                size: 0xffff,
                max: 16,
            }),
        ),
        (
            "size 1 ok",
            |b| b.setup_queue_at(0, 1, 0, 0x1000, 0x2000),
            None,
        ),
        (
            "size 8 ok",
            |b| b.setup_queue_at(0, 8, 0, 0x1000, 0x2000),
            None,
        ),
        (
            "desc misaligned",
            |b| b.setup_queue_at(0, 16, 8, 0x1000, 0x2000),
            Some(QueueConfigError::Misaligned {
                ring: Ring::Descriptors,
                addr: 8,
            }),
        ),
        (
            "avail misaligned",
            |b| b.setup_queue_at(0, 16, 0, 0x1001, 0x2000),
            Some(QueueConfigError::Misaligned {
                ring: Ring::Avail,
                addr: 0x1001,
            }),
        ),
        (
            "used misaligned",
            |b| b.setup_queue_at(0, 16, 0, 0x1000, 0x2002),
            Some(QueueConfigError::Misaligned {
                ring: Ring::Used,
                addr: 0x2002,
            }),
        ),
        (
            "desc overlaps avail",
            |b| b.setup_queue_at(0, 16, 0, 0xf0, 0x2000),
            Some(QueueConfigError::Overlap(Ring::Descriptors, Ring::Avail)),
        ),
        (
            "avail overlaps used",
            |b| b.setup_queue_at(0, 16, 0, 0x1000, 0x1024),
            Some(QueueConfigError::Overlap(Ring::Avail, Ring::Used)),
        ),
        (
            "avail used_event overlaps used",
            |b| b.setup_queue_at(0, 16, 0, 0x1000, 0x1024),
            Some(QueueConfigError::Overlap(Ring::Avail, Ring::Used)),
        ),
        (
            "desc equals used",
            |b| b.setup_queue_at(0, 16, 0x2000, 0x1000, 0x2000),
            Some(QueueConfigError::Overlap(Ring::Descriptors, Ring::Used)),
        ),
        (
            "all equal",
            |b| b.setup_queue_at(0, 16, 0x2000, 0x2000, 0x2000),
            Some(QueueConfigError::Overlap(Ring::Descriptors, Ring::Avail)),
        ),
        (
            "used inside desc",
            |b| b.setup_queue_at(0, 16, 0, 0x1000, 0x80),
            Some(QueueConfigError::Overlap(Ring::Descriptors, Ring::Used)),
        ),
        (
            "rings private",
            |b| b.setup_queue_at(0, 16, PRIVATE, PRIVATE + 0x1000, PRIVATE + 0x2000),
            Some(QueueConfigError::NotInSharedMemory),
        ),
        (
            "used ring private",
            |b| b.setup_queue_at(0, 16, 0, 0x1000, PRIVATE),
            Some(QueueConfigError::NotInSharedMemory),
        ),
        (
            "desc straddles into private",
            |b| b.setup_queue_at(0, 16, DATA_END - 0x80, 0x1000, 0x2000),
            Some(QueueConfigError::NotInSharedMemory),
        ),
        (
            "rings absent",
            |b| b.setup_queue_at(0, 16, ABSENT, ABSENT + 0x1000, ABSENT + 0x2000),
            Some(QueueConfigError::NotInSharedMemory),
        ),
        (
            "rings above GPAW",
            |b| b.setup_queue_at(0, 16, 1 << 50, 0x1000, 0x2000),
            Some(QueueConfigError::NotInSharedMemory),
        ),
        (
            "desc overflows",
            |b| b.setup_queue_at(0, 16, u64::MAX - 0xf, 0x1000, 0x2000),
            Some(QueueConfigError::Overflow {
                ring: Ring::Descriptors,
                addr: u64::MAX - 0xf,
            }),
        ),
        (
            "used overflows",
            |b| b.setup_queue_at(0, 16, 0, 0x1000, u64::MAX - 3),
            Some(QueueConfigError::Overflow {
                ring: Ring::Used,
                addr: u64::MAX - 3,
            }),
        ),
        (
            "rings at shared alias",
            |b| b.setup_queue_at(0, 16, SHARED_BIT, SHARED_BIT | 0x1000, SHARED_BIT | 0x2000),
            None,
        ),
    ];
    for (name, setup, err) in cases {
        let mut b = fresh();
        b.negotiate(VERSION_1 | ACCESS_PLATFORM);
        let ready = setup(&mut b);
        assert_eq!(ready, u32::from(err.is_none()), "{name}");
        assert_eq!(
            b.t.last_error(),
            err.map(|error| TransportError::QueueConfig { queue: 0, error }),
            "{name}"
        );
    }
}

#[test]
fn queue_configuration_state_rules() {
    // Missing addresses: each ring never written.
    for (skip, ring) in [
        (reg::QUEUE_DESC_LOW, Ring::Descriptors),
        (reg::QUEUE_DRIVER_LOW, Ring::Avail),
        (reg::QUEUE_DEVICE_LOW, Ring::Used),
    ] {
        let mut b = fresh();
        b.negotiate(VERSION_1 | ACCESS_PLATFORM);
        for (lo, v) in [
            (reg::QUEUE_DESC_LOW, 0u32),
            (reg::QUEUE_DRIVER_LOW, 0x1000),
            (reg::QUEUE_DEVICE_LOW, 0x2000),
        ] {
            if lo != skip {
                b.w32(lo, v);
            }
        }
        b.w32(reg::QUEUE_READY, 1);
        assert_eq!(b.r32(reg::QUEUE_READY), 0, "{ring}");
        assert_eq!(
            b.t.last_error(),
            Some(TransportError::QueueConfig {
                queue: 0,
                error: QueueConfigError::MissingAddress(ring)
            })
        );
    }
    // Queue registers before FEATURES_OK are ignored.
    let mut b = fresh();
    b.w32(reg::QUEUE_NUM, 8);
    b.w32(reg::QUEUE_DESC_LOW, 0x40);
    assert_eq!(b.r32(reg::QUEUE_NUM), 16);
    assert_eq!(b.r32(reg::QUEUE_DESC_LOW), 0);
    // Queue select beyond the device's queues.
    let mut b = fresh();
    b.negotiate(VERSION_1 | ACCESS_PLATFORM);
    b.w32(reg::QUEUE_SEL, 1);
    assert_eq!(b.r32(reg::QUEUE_NUM_MAX), 0);
    assert_eq!(b.setup_queue_at(1, 16, 0, 0x1000, 0x2000), 0);
    // Changes while ready are ignored; read-back shows the live values.
    let mut b = fresh();
    b.bring_up(0);
    b.w32(reg::QUEUE_SEL, 0);
    b.w32(reg::QUEUE_NUM, 4);
    b.w32(reg::QUEUE_DESC_LOW, 0x3000);
    assert_eq!(b.r32(reg::QUEUE_NUM), 16);
    assert_eq!(b.r32(reg::QUEUE_DESC_LOW), 0);
    assert_eq!(b.r32(reg::QUEUE_DRIVER_LOW), b.avail_addr() as u32);
    // Ring pages converted to private between configuration and QueueReady.
    let mut b = fresh();
    b.negotiate(VERSION_1 | ACCESS_PLATFORM);
    b.convert(RING, 0x1000, PageState::Private);
    assert_eq!(b.setup_queue(0), 0);
    assert_eq!(
        b.t.last_error(),
        Some(TransportError::QueueConfig {
            queue: 0,
            error: QueueConfigError::NotInSharedMemory
        })
    );
}

#[test]
fn interrupt_ack() {
    let mut b = fresh();
    b.bring_up(0);
    let h = b.header(T_FLUSH, 0);
    let s = b.status_buf();
    b.run(&[(h, 16, false), (s, 1, true)], s);
    assert_eq!(b.r32(reg::INTERRUPT_STATUS), 1);
    b.w32(reg::INTERRUPT_ACK, 2);
    assert_eq!(b.r32(reg::INTERRUPT_STATUS), 1);
    b.w32(reg::INTERRUPT_ACK, 1);
    assert_eq!(b.r32(reg::INTERRUPT_STATUS), 0);
}

// ---------------------------------------------------------------- console

type Con = H<ConsoleDevice<Vec<u8>>>;

fn console() -> Con {
    let mut c = H::with_device(
        ConsoleDevice::new(Vec::new(), 16),
        MmioConfig::default(),
        16,
    );
    // Device ID 3, no device features.
    assert_eq!(c.r32(reg::DEVICE_ID), 3);
    c.w32(reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(c.r32(reg::DEVICE_FEATURES), 0);
    c.queue = 1;
    c.bring_up(0);
    c
}

fn put(c: &mut Con, text: &[u8]) -> u64 {
    let a = c.buf(text.len() as u64, 0);
    c.raw.write_slice(text, vm_memory::GuestAddress(a)).unwrap();
    a
}

#[test]
fn console_output() {
    let mut c = console();
    let a = put(&mut c, b"hello ");
    let b2 = put(&mut c, b"TD\n");
    let head = c.chain(&[(a, 6, false), (b2, 3, false)]);
    c.publish(head);
    c.kick();
    assert_eq!(c.t.device().sink(), b"hello TD\n");
    assert_eq!(c.used(0), (u32::from(head), 0));
    // Receive queue kicks are ignored (no input): nothing popped.
    c.w32(reg::QUEUE_NOTIFY, 0);
    assert_eq!(c.t.stats().ignored_notifications, 1);
}

#[test]
fn console_hostile_chains() {
    // (name, segs, output expected)
    type Build = fn(&mut Con) -> Vec<(u64, u32, bool)>;
    let cases: &[(&str, Build)] = &[
        ("private buffer", |_| vec![(PRIVATE, 16, false)]),
        ("absent buffer", |_| vec![(ABSENT + 0x20000, 16, false)]),
        ("writable buffer on transmitq", |c| {
            let a = put(c, b"x");
            vec![(a, 1, true)]
        }),
        ("readable then writable", |c| {
            let a = put(c, b"abc");
            vec![(a, 3, false), (a, 3, true)]
        }),
        ("over 64 KiB", |_| vec![(DATA, 65537, false)]),
        ("huge lengths", |_| {
            vec![(DATA, u32::MAX, false), (DATA, u32::MAX, false)]
        }),
    ];
    for (name, build) in cases {
        let mut c = console();
        let segs = build(&mut c);
        let head = c.chain(&segs);
        c.publish(head);
        c.kick();
        assert!(c.t.device().sink().is_empty(), "{name}");
        assert_eq!(c.used_idx(), 1, "{name}");
        assert_eq!(c.used(0), (u32::from(head), 0), "{name}");
        assert_eq!(c.t.device().stats().dropped, 1, "{name}");
        assert_eq!(c.status() & NEEDS_RESET, 0, "{name}");
    }
    // Empty chain of zero-length descriptors: completes, no output.
    let mut c = console();
    let head = c.chain(&[(DATA, 0, false), (DATA, 0, false)]);
    c.publish(head);
    c.kick();
    assert_eq!(c.used(0), (u32::from(head), 0));
    assert!(c.t.device().sink().is_empty());
    // A loop latches NEEDS_RESET.
    let mut c = console();
    c.write_desc(0, DATA, 1, 1, 0);
    c.publish(0);
    c.kick();
    assert_eq!(c.status() & NEEDS_RESET, NEEDS_RESET);
    // Exactly 64 KiB is fine.
    let mut c = console();
    let head = c.chain(&[(DATA, 65536, false)]);
    c.publish(head);
    c.kick();
    assert_eq!(c.t.device().sink().len(), 65536);
}
