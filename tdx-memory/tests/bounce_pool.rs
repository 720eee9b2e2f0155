//! The SWIOTLB-style bounce pool: the no-alloc core over caller storage (slices), data round
//! trips in every direction, alignment, fragmentation, exhaustion, stale handles, the std
//! wrapper under threads, and a proptest of the allocator invariants.

use proptest::prelude::*;
use tdx_memory::bounce::{
    max_mapping_size, BounceError, BounceMapping, BouncePool, DmaDirection, MapOptions, Slot,
    SyncBouncePool, IO_TLB_SEGSIZE, IO_TLB_SIZE, MAX_MAPPING_SIZE,
};

const BASE: u64 = 0x8000_0000;
const KIB: usize = 1024;
const NONE: MapOptions = MapOptions {
    min_align_mask: 0,
    alloc_align_mask: 0,
};

/// Pool core over plain slices, as a no_std payload would build it.
fn with_pool<R>(
    segments: usize,
    f: impl FnOnce(&mut BouncePool<&mut [u8], &mut [Slot]>) -> R,
) -> R {
    let mut data = vec![0u8; segments * 256 * KIB];
    let mut slots = [Slot::EMPTY; 4 * 128];
    let mut pool = BouncePool::new(BASE, &mut data[..], &mut slots[..segments * 128]).unwrap();
    f(&mut pool)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn linux_numbers() {
    assert_eq!(IO_TLB_SIZE, 2048);
    assert_eq!(IO_TLB_SEGSIZE, 128);
    assert_eq!(MAX_MAPPING_SIZE, 262_144);
    assert_eq!(max_mapping_size(0), 262_144);
    // NVMe-style min_align_mask 0xfff: 252 KiB.
    assert_eq!(max_mapping_size(0xfff), 258_048);
    assert_eq!(max_mapping_size(0x7ff), 260_096);
}

#[test]
fn construction_errors() {
    let mut data = vec![0u8; 512 * KIB];
    let mut slots = [Slot::EMPTY; 256];
    assert_eq!(
        BouncePool::new(BASE + 0x400, &mut data[..], &mut slots[..]).unwrap_err(),
        BounceError::PoolMisaligned {
            dma_base: BASE + 0x400
        }
    );
    assert_eq!(
        BouncePool::new(BASE, &mut data[..300 * KIB], &mut slots[..]).unwrap_err(),
        BounceError::PoolSize { bytes: 300 * KIB }
    );
    assert_eq!(
        BouncePool::new(BASE, &mut data[..0], &mut slots[..]).unwrap_err(),
        BounceError::PoolSize { bytes: 0 }
    );
    assert_eq!(
        BouncePool::new(BASE, &mut data[..], &mut slots[..255]).unwrap_err(),
        BounceError::SlotTableTooSmall {
            needed: 256,
            provided: 255
        }
    );
    assert_eq!(
        BouncePool::new(u64::MAX - 0x7ff, &mut data[..], &mut slots[..]).unwrap_err(),
        BounceError::PoolSize { bytes: 512 * KIB }
    );
    let pool = BouncePool::new(BASE, &mut data[..], &mut slots[..]).unwrap();
    assert_eq!(pool.total_slots(), 256);
    assert_eq!(pool.size(), 512 * KIB);
}

#[test]
fn to_device_round_trip() {
    with_pool(1, |pool| {
        let src = pattern(3000, 1);
        let m = pool
            .map(0x1_0000_0000, &src, DmaDirection::ToDevice, NONE)
            .unwrap();
        assert_eq!(m.len(), 3000);
        assert_eq!(m.slots(), 2);
        assert_eq!(pool.device_bytes(m.dma_addr(), 3000).unwrap(), &src[..]);
        // The CPU updates the buffer and hands it back to the device.
        let src2 = pattern(3000, 9);
        pool.sync_for_device(&m, &src2).unwrap();
        assert_eq!(pool.bounce_buffer(&m).unwrap(), &src2[..]);
        // Device writes are not copied back for TO_DEVICE.
        pool.device_bytes_mut(m.dma_addr(), 4)
            .unwrap()
            .copy_from_slice(&[0xee; 4]);
        let mut out = vec![0x55u8; 3000];
        pool.sync_for_cpu(&m, &mut out).unwrap();
        assert_eq!(out, vec![0x55u8; 3000]);
        pool.unmap(m, &mut out).unwrap();
        assert_eq!(out, vec![0x55u8; 3000]);
        assert_eq!(pool.used_slots(), 0);
    });
}

#[test]
fn from_device_round_trip_preserves_unwritten_bytes() {
    with_pool(1, |pool| {
        // A previous mapping leaves data behind in the pool.
        let secret = vec![0x5a; 8192];
        let old = pool
            .map(0x2000, &secret, DmaDirection::ToDevice, NONE)
            .unwrap();
        pool.unmap_skip_sync(old).unwrap();

        let mut buf = pattern(8192, 3);
        let orig = buf.clone();
        let m = pool
            .map(0x2000, &buf, DmaDirection::FromDevice, NONE)
            .unwrap();
        // The bounce buffer holds the original contents, not the stale secret.
        assert_eq!(pool.bounce_buffer(&m).unwrap(), &orig[..]);
        // The device writes only the first 100 bytes.
        pool.device_bytes_mut(m.dma_addr(), 100).unwrap().fill(0xc3);
        // sync_for_device is a no-op for FROM_DEVICE.
        pool.sync_for_device(&m, &vec![0u8; 8192]).unwrap();
        let mut peek = vec![0u8; 8192];
        pool.sync_for_cpu(&m, &mut peek).unwrap();
        assert_eq!(&peek[..100], &[0xc3; 100][..]);
        pool.unmap(m, &mut buf).unwrap();
        assert_eq!(&buf[..100], &[0xc3; 100][..]);
        assert_eq!(&buf[100..], &orig[100..]);
    });
}

#[test]
fn bidirectional_round_trip() {
    with_pool(1, |pool| {
        let mut buf = pattern(64 * KIB, 7);
        let m = pool
            .map(0x10_0000, &buf, DmaDirection::Bidirectional, NONE)
            .unwrap();
        assert_eq!(pool.bounce_buffer(&m).unwrap(), &buf[..]);
        buf[0] = 0x11;
        pool.sync_for_device(&m, &buf).unwrap();
        assert_eq!(pool.bounce_buffer(&m).unwrap()[0], 0x11);
        pool.bounce_buffer_mut(&m).unwrap()[1] = 0x22;
        pool.unmap(m, &mut buf).unwrap();
        assert_eq!((buf[0], buf[1]), (0x11, 0x22));
        assert_eq!(buf[2..], pattern(64 * KIB, 7)[2..]);
    });
}

#[test]
fn alignment() {
    with_pool(2, |pool| {
        // Knock the cursor off page alignment with a 2 KiB mapping.
        let small = pool
            .map(0, &[1; 100], DmaDirection::ToDevice, NONE)
            .unwrap();
        assert_eq!(small.dma_addr(), BASE);
        // >= 4 KiB without constraints: page aligned (skips slot 1).
        let page = pool
            .map(0x1234_5678, &[2; 4096], DmaDirection::ToDevice, NONE)
            .unwrap();
        assert_eq!(page.dma_addr(), BASE + 0x1000);
        // < 4 KiB: slot aligned only.
        let s2 = pool
            .map(0x1234_5678, &[3; 2048], DmaDirection::ToDevice, NONE)
            .unwrap();
        assert_eq!(s2.dma_addr(), BASE + 0x2000);
        let s3 = pool
            .map(0x1234_5678, &[3; 2048], DmaDirection::ToDevice, NONE)
            .unwrap();
        assert_eq!(s3.dma_addr(), BASE + 0x2800);
        // min_align_mask 0xfff: the low 12 bits of the original address are preserved:
        // 0xa00 = slot with bit 11 set + in-slot offset 0x200.
        let nvme = MapOptions {
            min_align_mask: 0xfff,
            alloc_align_mask: 0,
        };
        let m = pool
            .map(0x7777_0a00, &[4; 0x100], DmaDirection::ToDevice, nvme)
            .unwrap();
        assert_eq!(m.dma_addr() & 0xfff, 0xa00);
        assert_eq!(m.dma_addr(), BASE + 0x3a00);
        assert_eq!(pool.bounce_buffer(&m).unwrap(), &[4; 0x100][..]);
        // Explicit 64 KiB allocation alignment.
        let big = MapOptions {
            min_align_mask: 0,
            alloc_align_mask: 0xffff,
        };
        let a = pool
            .map(0x1234, &[5; 100], DmaDirection::ToDevice, big)
            .unwrap();
        assert_eq!(a.dma_addr() % 0x1_0000, 0);
        assert_eq!(a.slots(), 32);
        // Allocation alignment 8 KiB plus min_align_mask: one padding slot.
        let pad = MapOptions {
            min_align_mask: 0xfff,
            alloc_align_mask: 0x1fff,
        };
        let p = pool
            .map(0x4444_0a00, &[6; 0x300], DmaDirection::ToDevice, pad)
            .unwrap();
        assert_eq!(p.dma_addr() & 0x1fff, 0xa00);
        assert_eq!(p.slots(), 4);
        for m in [small, page, s2, s3, m, a, p] {
            pool.unmap_skip_sync(m).unwrap();
        }
        assert_eq!(pool.used_slots(), 0);
        assert_eq!(
            pool.map(
                0,
                &[0; 8],
                DmaDirection::ToDevice,
                MapOptions {
                    min_align_mask: 0x1000,
                    alloc_align_mask: 0
                }
            ),
            Err(BounceError::InvalidAlignMask { mask: 0x1000 })
        );
    });
}

#[test]
fn oversize_and_zero_length() {
    with_pool(1, |pool| {
        let big = vec![0u8; MAX_MAPPING_SIZE + 1];
        assert_eq!(
            pool.map(0, &big, DmaDirection::ToDevice, NONE),
            Err(BounceError::Oversize {
                len: MAX_MAPPING_SIZE + 1,
                alloc_size: MAX_MAPPING_SIZE as u64 + 1,
                max: MAX_MAPPING_SIZE
            })
        );
        // The in-slot offset kept by min_align_mask counts against the segment.
        let nvme = MapOptions {
            min_align_mask: 0xfff,
            alloc_align_mask: 0,
        };
        assert!(matches!(
            pool.map(
                0x200,
                &big[..MAX_MAPPING_SIZE - 0x100],
                DmaDirection::ToDevice,
                nvme
            ),
            Err(BounceError::Oversize { max: 258_048, .. })
        ));
        assert_eq!(
            pool.map(0x42, &[], DmaDirection::ToDevice, NONE),
            Err(BounceError::ZeroLength { orig_addr: 0x42 })
        );
        // Exactly one segment fits.
        let m = pool
            .map(0, &big[..MAX_MAPPING_SIZE], DmaDirection::ToDevice, NONE)
            .unwrap();
        assert_eq!(m.slots(), 128);
        assert_eq!(pool.used_slots(), 128);
        pool.unmap_skip_sync(m).unwrap();
        assert_eq!(pool.used_slots(), 0);
    });
}

#[test]
fn exhaustion_is_typed_and_leaks_nothing() {
    with_pool(2, |pool| {
        let seg = vec![0u8; MAX_MAPPING_SIZE];
        let a = pool.map(0, &seg, DmaDirection::ToDevice, NONE).unwrap();
        let b = pool.map(0, &seg, DmaDirection::ToDevice, NONE).unwrap();
        assert_eq!(
            pool.map(0, &[0; 10], DmaDirection::ToDevice, NONE),
            Err(BounceError::Exhausted {
                len: 10,
                total_slots: 256,
                used_slots: 256
            })
        );
        pool.unmap_skip_sync(a).unwrap();
        pool.unmap_skip_sync(b).unwrap();
        assert_eq!(pool.used_slots(), 0);
        // Full capacity again: 256 single-slot mappings, then 2 full segments.
        let mut maps = Vec::new();
        for i in 0..256u64 {
            maps.push(
                pool.map(i, &[i as u8; 2048], DmaDirection::ToDevice, NONE)
                    .unwrap(),
            );
        }
        assert!(matches!(
            pool.map(0, &[0; 1], DmaDirection::ToDevice, NONE),
            Err(BounceError::Exhausted { .. })
        ));
        for m in maps {
            pool.unmap_skip_sync(m).unwrap();
        }
        let a = pool.map(0, &seg, DmaDirection::ToDevice, NONE).unwrap();
        let b = pool.map(0, &seg, DmaDirection::ToDevice, NONE).unwrap();
        assert_ne!(a.dma_addr(), b.dma_addr());
        pool.unmap_skip_sync(a).unwrap();
        pool.unmap_skip_sync(b).unwrap();
    });
}

#[test]
fn fragmentation_needs_a_run_inside_one_segment() {
    with_pool(2, |pool| {
        let mut maps: Vec<Option<BounceMapping>> = (0..256u64)
            .map(|i| {
                Some(
                    pool.map(i << 20, &[0; 2048], DmaDirection::ToDevice, NONE)
                        .unwrap(),
                )
            })
            .collect();
        // Free every other slot: 128 free slots, no two adjacent.
        for i in (0..256).step_by(2) {
            pool.unmap_skip_sync(maps[i].take().unwrap()).unwrap();
        }
        assert_eq!(pool.free_slots(), 128);
        assert!(matches!(
            pool.map(0, &[0; 3000], DmaDirection::ToDevice, NONE),
            Err(BounceError::Exhausted { .. })
        ));
        // Free slots 120..136: 16 contiguous slots, but 8 on each side of the boundary.
        for m in maps[120..136].iter_mut().filter_map(Option::take) {
            pool.unmap_skip_sync(m).unwrap();
        }
        assert!(matches!(
            pool.map(0, &[0; 16 * 2048], DmaDirection::ToDevice, NONE),
            Err(BounceError::Exhausted { .. })
        ));
        let eight = pool
            .map(0, &[0; 8 * 2048], DmaDirection::ToDevice, NONE)
            .unwrap();
        assert!(
            eight.dma_addr() == BASE + 120 * 2048 || eight.dma_addr() == BASE + 128 * 2048,
            "{:#x}",
            eight.dma_addr()
        );
        pool.unmap_skip_sync(eight).unwrap();
        // Free all of segment 1: a full 256 KiB mapping must land exactly there.
        for m in maps[128..].iter_mut().filter_map(Option::take) {
            pool.unmap_skip_sync(m).unwrap();
        }
        let seg = pool
            .map(
                0,
                &vec![0u8; MAX_MAPPING_SIZE],
                DmaDirection::ToDevice,
                NONE,
            )
            .unwrap();
        assert_eq!(seg.dma_addr(), BASE + 256 * 1024);
        pool.unmap_skip_sync(seg).unwrap();
        for m in maps.into_iter().flatten() {
            pool.unmap_skip_sync(m).unwrap();
        }
        assert_eq!(pool.used_slots(), 0);
    });
}

#[test]
fn stale_and_mismatched_handles_are_refused() {
    with_pool(1, |pool| {
        let m = pool
            .map(0, &[1; 100], DmaDirection::FromDevice, NONE)
            .unwrap();
        let mut short = [0u8; 99];
        assert_eq!(
            pool.unmap(m, &mut short),
            Err(BounceError::LengthMismatch {
                dma_addr: m.dma_addr(),
                mapped: 100,
                buffer: 99
            })
        );
        // Still live after the failed unmap.
        assert_eq!(pool.used_slots(), 1);
        let mut buf = [0u8; 100];
        pool.unmap(m, &mut buf).unwrap();
        assert_eq!(
            pool.unmap(m, &mut buf),
            Err(BounceError::NotMapped {
                dma_addr: m.dma_addr()
            })
        );
        // Same slot reused by a new mapping: the old handle still does not match.
        pool.map(0, &[2; 100], DmaDirection::ToDevice, NONE)
            .unwrap();
        let _ = pool
            .map(0, &[2; 100], DmaDirection::ToDevice, NONE)
            .unwrap();
        assert_eq!(
            pool.bounce_buffer(&m),
            Err(BounceError::NotMapped {
                dma_addr: m.dma_addr()
            })
        );
        assert_eq!(
            pool.device_bytes(BASE + 256 * 1024 - 4, 8),
            Err(BounceError::OutOfPool {
                dma_addr: BASE + 256 * 1024 - 4,
                len: 8
            })
        );
        assert!(pool.device_bytes(BASE - 1, 1).is_err());
    });
}

#[test]
fn sync_pool_under_threads() {
    let pool = SyncBouncePool::new(0x4000_0000, 1024 * KIB).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..500usize {
                    let len = 1 + (i * 7919 + t as usize * 104_729) % (64 * KIB);
                    let src = pattern(len, t);
                    let m = match pool.map(0, &src, DmaDirection::Bidirectional, NONE) {
                        Ok(m) => m,
                        Err(BounceError::Exhausted { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    };
                    let mut out = vec![0u8; len];
                    pool.unmap(m, &mut out).unwrap();
                    assert_eq!(out, src);
                }
            });
        }
    });
    assert_eq!(pool.used_slots(), 0);
}

proptest! {
    #[test]
    fn allocator_invariants(ops in proptest::collection::vec((0usize..40_000, any::<bool>(), 0u64..0x10000), 1..120)) {
        let mut data = vec![0u8; 1024 * KIB];
        let mut slots = vec![Slot::EMPTY; 512];
        let mut pool = BouncePool::new(BASE, &mut data[..], &mut slots[..]).unwrap();
        let mut live: Vec<(BounceMapping, Vec<u8>)> = Vec::new();
        for (n, (len, free, orig)) in ops.into_iter().enumerate() {
            if free && !live.is_empty() {
                let (m, src) = live.swap_remove(n % live.len());
                let mut out = vec![0u8; m.len()];
                pool.unmap(m, &mut out).unwrap();
                prop_assert_eq!(out, src);
            } else {
                let len = len.max(1);
                let src = pattern(len, n as u8);
                match pool.map(orig, &src, DmaDirection::Bidirectional, NONE) {
                    Ok(m) => {
                        // Inside one segment, slot aligned, page aligned when >= 4 KiB.
                        let off = m.dma_addr() - BASE;
                        let first = off as usize / IO_TLB_SIZE;
                        let last = (off as usize + len - 1) / IO_TLB_SIZE;
                        prop_assert_eq!(first / IO_TLB_SEGSIZE, last / IO_TLB_SEGSIZE);
                        prop_assert_eq!(off % 2048, 0);
                        if len >= 4096 {
                            prop_assert_eq!(off % 4096, 0);
                        }
                        live.push((m, src));
                    }
                    Err(BounceError::Exhausted { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected {}", e),
                }
            }
            // No overlap between live mappings; slot accounting matches.
            let mut spans: Vec<(u64, u64)> = live
                .iter()
                .map(|(m, _)| (m.dma_addr(), m.dma_addr() + m.len() as u64))
                .collect();
            spans.sort();
            for w in spans.windows(2) {
                prop_assert!(w[0].1 <= w[1].0);
            }
            prop_assert_eq!(
                pool.used_slots(),
                live.iter().map(|(m, _)| m.slots()).sum::<usize>()
            );
            for (m, src) in &live {
                prop_assert_eq!(pool.bounce_buffer(m).unwrap(), &src[..]);
            }
        }
        for (m, _) in live {
            pool.unmap_skip_sync(m).unwrap();
        }
        prop_assert_eq!(pool.used_slots(), 0);
        // Everything is free again: two full segments per 512 KiB.
        for _ in 0..4 {
            pool.map(0, &vec![0u8; MAX_MAPPING_SIZE], DmaDirection::ToDevice, NONE).unwrap();
        }
    }
}
