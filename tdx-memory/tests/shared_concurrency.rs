//! Conversions racing device accesses on real threads.
//!
//! Protocol: one "guest" thread converts a two-page range shared -> private -> shared ...;
//! every conversion changes the range, so the generation is `2e - 1` while epoch `e` is shared
//! and `2e` after it became private again. Device threads take a view, note its generation
//! `g`, and access the range. Linearisability means:
//! * with `g` odd every access succeeds and sees only data written in the same epoch: zero
//!   (the discarded backing), the generation a device wrote in this epoch (`g`), or the guest's
//!   marker of this epoch (`GUEST | g`);
//! * with `g` even every access fails as private;
//! * the guest, right after converting to shared, never sees data from an earlier epoch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_memory::attributes::{AttributeMap, PageState};
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::{SharedAccessError, SharedGuestMemory};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const P0: u64 = 0x10000;
const P1: u64 = 0x11000;
const GUEST: u64 = 1 << 63;
const EPOCHS: u64 = 300;

/// Sets the stop flag when dropped, so a failing guest assertion also stops the devices
/// instead of leaving `thread::scope` waiting for them forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn read_u64(shared: &SharedGuestMemory, addr: u64) -> (u64, Result<u64, SharedAccessError>) {
    let view = shared.view();
    let g = view.generation();
    let r = view
        .read_obj::<u64>(GuestAddress(addr))
        .map_err(|e| *SharedAccessError::from_guest_memory_error(&e).expect("typed error"));
    (g, r)
}

#[test]
fn device_accesses_linearise_with_conversions() {
    let raw = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let attrs = Arc::new(AttributeMap::new(Gpaw::Gpaw48));
    let shared = SharedGuestMemory::new(attrs.clone(), raw).unwrap();
    let range = GpaRange::new(Gpa(P0), 0x2000).unwrap();
    let stop = AtomicBool::new(false);
    let seen_shared = AtomicU64::new(0);
    let seen_private = AtomicU64::new(0);
    let last_device_gen = AtomicU64::new(0);

    thread::scope(|s| {
        for dev in 0..2u64 {
            let shared = &shared;
            let stop = &stop;
            let seen_shared = &seen_shared;
            let seen_private = &seen_private;
            let last_device_gen = &last_device_gen;
            s.spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let view = shared.view();
                    let g = view.generation();
                    let target = if dev == 0 { P0 } else { P1 };
                    let read = view.read_obj::<u64>(GuestAddress(target));
                    let write = view.write_obj::<u64>(g, GuestAddress(P1 + 8 * dev));
                    // Straddles P1 -> 0x12000, which is always private; in a private epoch
                    // the first bad byte is the start itself.
                    let bad = if g % 2 == 1 { 0x12000 } else { P1 + 0xffc };
                    let straddle = view.read_obj::<u64>(GuestAddress(P1 + 0xffc));
                    let e = straddle.unwrap_err();
                    assert_eq!(
                        SharedAccessError::from_guest_memory_error(&e),
                        Some(&SharedAccessError::Private {
                            addr: P1 + 0xffc,
                            len: 8,
                            gpa: Gpa(bad)
                        })
                    );
                    if g % 2 == 1 {
                        let v = read.expect("shared epoch: read must succeed");
                        assert!(
                            v == 0 || v == g || v == GUEST | g,
                            "device saw {v:#x} in generation {g}"
                        );
                        write.expect("shared epoch: write must succeed");
                        seen_shared.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let e = read.expect_err("private epoch: read must fail");
                        assert_eq!(
                            SharedAccessError::from_guest_memory_error(&e),
                            Some(&SharedAccessError::Private {
                                addr: target,
                                len: 8,
                                gpa: Gpa(target)
                            })
                        );
                        write.expect_err("private epoch: write must fail");
                        seen_private.fetch_add(1, Ordering::Relaxed);
                    }
                    last_device_gen.fetch_max(g, Ordering::AcqRel);
                    drop(view);
                    thread::yield_now();
                }
            });
        }

        // The guest.
        let _stop_devices = StopOnDrop(&stop);
        let wait_for_device = |g: u64| {
            // Give the devices a chance to act in this generation (bounded; not asserted).
            for _ in 0..10_000 {
                if last_device_gen.load(Ordering::Acquire) >= g {
                    break;
                }
                thread::yield_now();
            }
        };
        for e in 1..=EPOCHS {
            let o = attrs.convert(range, PageState::Shared).unwrap();
            assert_eq!(o.generation, 2 * e - 1);
            assert_eq!(o.pages_changed, 2);
            for addr in [P0, P1, P1 + 8] {
                let (g, v) = read_u64(&shared, addr);
                let v = v.unwrap();
                // Nothing from an earlier epoch: zero, or a device write of this epoch.
                assert!(
                    v == 0 || (v == g && g == 2 * e - 1),
                    "guest saw stale {v:#x} at {addr:#x} in epoch {e}"
                );
            }
            {
                let view = shared.view();
                let g = view.generation();
                view.write_obj(GUEST | g, GuestAddress(P0)).unwrap();
                view.write_obj(GUEST | g, GuestAddress(P1)).unwrap();
            }
            wait_for_device(2 * e - 1);
            let o = attrs.convert(range, PageState::Private).unwrap();
            assert_eq!(o.generation, 2 * e);
            wait_for_device(2 * e);
        }
    });

    // Both kinds of epoch were exercised.
    assert!(seen_shared.load(Ordering::Relaxed) > 0);
    assert!(seen_private.load(Ordering::Relaxed) > 0);
    assert_eq!(attrs.generation(), 2 * EPOCHS);
}

#[test]
fn readers_never_see_half_a_conversion() {
    // Pure map: a 16-page range flips as a whole; readers must see it all-shared or
    // all-private, consistent with the generation's parity.
    let attrs = AttributeMap::new(Gpaw::Gpaw52);
    let range = GpaRange::new(Gpa(0x100_0000), 16 * 0x1000).unwrap();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let _stop_readers = StopOnDrop(&stop);
        for _ in 0..2 {
            s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) || n == 0 {
                    let g = attrs.read();
                    let shared = g.is_all(range, PageState::Shared).unwrap();
                    let private = g.is_all(range, PageState::Private).unwrap();
                    assert!(shared != private, "half-converted range seen");
                    assert_eq!(shared, g.generation() % 2 == 1);
                    n += 1;
                }
            });
        }
        for i in 0..2000 {
            let to = if i % 2 == 0 {
                PageState::Shared
            } else {
                PageState::Private
            };
            attrs.convert(range, to).unwrap();
        }
    });
    assert_eq!(attrs.generation(), 2000);
}
