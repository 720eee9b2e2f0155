//! The private/shared attribute map: conversions, queries, limits, listeners, 1 GiB ranges and
//! a proptest against a naive per-page model.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_memory::attributes::{
    AttributeError, AttributeMap, ConversionEvent, ConversionListener, PageState,
};
use tdx_memory::layout::{GpaRange, LayoutError};

const G48: Gpaw = Gpaw::Gpaw48;
const KIB4: u64 = 0x1000;
const GIB: u64 = 0x4000_0000;

fn r(start: u64, len: u64) -> GpaRange {
    GpaRange::new(Gpa(start), len).unwrap()
}

fn runs(map: &AttributeMap) -> Vec<(u64, u64)> {
    map.shared_ranges()
        .map(|r| (r.start().raw(), r.end().raw()))
        .collect()
}

#[test]
fn starts_private() {
    let map = AttributeMap::new(G48);
    assert_eq!(map.state(Gpa(0)).unwrap(), PageState::Private);
    assert_eq!(
        map.state(Gpa(0x7fff_ffff_ffff)).unwrap(),
        PageState::Private
    );
    assert_eq!(
        map.state(Gpa(0x8000_0000_0000)),
        Err(AttributeError::OutOfSpace {
            gpa: Gpa(0x8000_0000_0000),
            gpaw: G48
        })
    );
    assert_eq!(map.generation(), 0);
    assert_eq!(map.shared_pages(), 0);
    assert!(runs(&map).is_empty());
}

#[test]
fn convert_merge_split() {
    let map = AttributeMap::new(G48);
    let o = map.convert(r(0x10000, 0x4000), PageState::Shared).unwrap();
    assert_eq!(o.pages_changed, 4);
    assert_eq!(o.generation, 1);
    assert_eq!(o.to, PageState::Shared);
    // Idempotent: nothing changes, generation stays.
    let o = map.convert(r(0x10000, 0x4000), PageState::Shared).unwrap();
    assert_eq!((o.pages_changed, o.generation), (0, 1));
    // Overlapping extension: only 0x14000..0x16000 is new.
    let o = map.convert(r(0x12000, 0x4000), PageState::Shared).unwrap();
    assert_eq!((o.pages_changed, o.generation), (2, 2));
    assert_eq!(runs(&map), vec![(0x10000, 0x16000)]);
    // Adjacent below: merges into one run.
    map.convert(r(0xe000, 0x2000), PageState::Shared).unwrap();
    assert_eq!(runs(&map), vec![(0xe000, 0x16000)]);
    // A separate run, then a range bridging both (gap of 2 pages).
    map.convert(r(0x18000, 0x1000), PageState::Shared).unwrap();
    assert_eq!(runs(&map), vec![(0xe000, 0x16000), (0x18000, 0x19000)]);
    let o = map.convert(r(0x15000, 0x3000), PageState::Shared).unwrap();
    assert_eq!(o.pages_changed, 2);
    assert_eq!(runs(&map), vec![(0xe000, 0x19000)]);
    assert_eq!(map.shared_pages(), 11);
    // Punch a private hole: the run splits.
    let o = map.convert(r(0x10000, 0x2000), PageState::Private).unwrap();
    assert_eq!(o.pages_changed, 2);
    assert_eq!(runs(&map), vec![(0xe000, 0x10000), (0x12000, 0x19000)]);
    assert_eq!(map.state(Gpa(0x10fff)).unwrap(), PageState::Private);
    assert_eq!(map.state(Gpa(0x12000)).unwrap(), PageState::Shared);
    assert_eq!(map.state(Gpa(0xffff)).unwrap(), PageState::Shared);
    // Private over a range covering both runs and more.
    let o = map.convert(r(0x0, 0x100000), PageState::Private).unwrap();
    assert_eq!(o.pages_changed, 9);
    assert!(runs(&map).is_empty());
    assert_eq!(map.shared_pages(), 0);
}

#[test]
fn queries() {
    let map = AttributeMap::new(G48);
    map.convert(r(0x20000, 0x3000), PageState::Shared).unwrap();
    assert!(map.is_all(r(0x20000, 0x3000), PageState::Shared).unwrap());
    // Byte granular: any byte of a page counts as the page.
    assert!(map.is_all(r(0x20ff0, 0x1100), PageState::Shared).unwrap());
    assert!(!map.is_all(r(0x22ff0, 0x20), PageState::Shared).unwrap());
    assert!(!map.is_all(r(0x22ff0, 0x20), PageState::Private).unwrap());
    assert!(map.is_all(r(0x23000, 0x1000), PageState::Private).unwrap());
    assert!(map.is_all(r(0x23000, 0), PageState::Shared).unwrap());
    let g = map.read();
    assert_eq!(g.first_not_shared(r(0x20000, 0x4000)), Some(Gpa(0x23000)));
    assert_eq!(g.first_not_shared(r(0x1f000, 0x2000)), Some(Gpa(0x1f000)));
    assert_eq!(g.first_not_shared(r(0x21234, 0x10)), None);
    assert_eq!(g.run_count(), 1);
    assert!(matches!(
        g.is_all(r(0x7fff_ffff_f000, 0x2000), PageState::Private),
        Err(AttributeError::Range(LayoutError::OutOfSpace { .. }))
    ));
}

#[test]
fn rejects_bad_ranges() {
    let map = AttributeMap::new(G48);
    assert_eq!(
        map.convert(r(0x1800, 0x1000), PageState::Shared),
        Err(AttributeError::Range(LayoutError::Misaligned {
            start: 0x1800,
            len: 0x1000
        }))
    );
    assert_eq!(
        map.convert(r(0x1000, 0), PageState::Shared),
        Err(AttributeError::Range(LayoutError::Empty { start: 0x1000 }))
    );
    // The shared alias is not canonical.
    assert!(matches!(
        map.convert(r(0x8000_0000_1000, 0x1000), PageState::Shared),
        Err(AttributeError::Range(LayoutError::OutOfSpace { .. }))
    ));
    // Crossing the SHARED bit.
    assert!(matches!(
        map.convert(r(0x7fff_ffff_f000, 0x2000), PageState::Shared),
        Err(AttributeError::Range(LayoutError::OutOfSpace { .. }))
    ));
    assert_eq!(map.generation(), 0);
}

#[test]
fn one_gib_conversions() {
    let map = AttributeMap::new(G48);
    let gib = r(GIB, GIB);
    let o = map.convert(gib, PageState::Shared).unwrap();
    assert_eq!(o.pages_changed, 262_144);
    assert_eq!(runs(&map), vec![(0x4000_0000, 0x8000_0000)]);
    // Fragment a window: every other page of 64 pages private.
    for i in 0..32u64 {
        map.convert(r(GIB + 0x10_0000 + i * 2 * KIB4, KIB4), PageState::Private)
            .unwrap();
    }
    assert_eq!(map.read().run_count(), 33);
    let o = map.convert(gib, PageState::Private).unwrap();
    assert_eq!(o.pages_changed, 262_144 - 32);
    assert!(runs(&map).is_empty());
    // Alternate many times; each costs O(runs), not O(pages).
    for i in 0..1000u64 {
        let to = if i % 2 == 0 {
            PageState::Shared
        } else {
            PageState::Private
        };
        assert_eq!(map.convert(gib, to).unwrap().pages_changed, 262_144);
    }
    assert_eq!(map.generation(), 1 + 32 + 1 + 1000);
}

#[test]
fn whole_gpaw52_space_converts_cheaply() {
    // 2^51 bytes = 2^39 pages: a per-page representation could not do this.
    let map = AttributeMap::new(Gpaw::Gpaw52);
    let all = r(0, 1 << 51);
    assert_eq!(
        map.convert(all, PageState::Shared).unwrap().pages_changed,
        1 << 39
    );
    assert_eq!(
        map.state(Gpa(0x7_ffff_ffff_f000)).unwrap(),
        PageState::Shared
    );
    assert_eq!(
        map.convert(r(0x1000, 0x1000), PageState::Private)
            .unwrap()
            .pages_changed,
        1
    );
    assert_eq!(runs(&map), vec![(0, 0x1000), (0x2000, 1 << 51)]);
}

#[test]
fn run_limit_is_atomic() {
    let map = AttributeMap::with_max_runs(G48, 2);
    map.convert(r(0x1000, 0x1000), PageState::Shared).unwrap();
    map.convert(r(0x5000, 0x3000), PageState::Shared).unwrap();
    // A third disjoint run is refused and nothing changes.
    assert_eq!(
        map.convert(r(0x10000, 0x1000), PageState::Shared),
        Err(AttributeError::TooManyRuns {
            range: r(0x10000, 0x1000),
            limit: 2
        })
    );
    assert_eq!(runs(&map), vec![(0x1000, 0x2000), (0x5000, 0x8000)]);
    assert_eq!(map.generation(), 2);
    // Splitting a run would also need a third run.
    assert!(matches!(
        map.convert(r(0x6000, 0x1000), PageState::Private),
        Err(AttributeError::TooManyRuns { .. })
    ));
    // Trimming an end does not.
    map.convert(r(0x7000, 0x1000), PageState::Private).unwrap();
    // Merging reduces the count, then a new run fits.
    map.convert(r(0x2000, 0x3000), PageState::Shared).unwrap();
    assert_eq!(runs(&map), vec![(0x1000, 0x7000)]);
    map.convert(r(0x10000, 0x1000), PageState::Shared).unwrap();
    assert_eq!(map.read().run_count(), 2);
}

/// (target state, changed byte ranges, generation) of one conversion event.
type Recorded = (PageState, Vec<(u64, u64)>, u64);

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Recorded>>,
}

impl ConversionListener for Recorder {
    fn converted(&self, e: &ConversionEvent<'_>) {
        self.events.lock().unwrap().push((
            e.to,
            e.changed
                .iter()
                .map(|r| (r.start().raw(), r.end().raw()))
                .collect(),
            e.generation,
        ));
    }
}

#[test]
fn listeners_see_changed_subranges() {
    let map = AttributeMap::new(G48);
    let rec = Arc::new(Recorder::default());
    map.add_listener(rec.clone());
    map.convert(r(0x3000, 0x1000), PageState::Shared).unwrap();
    map.convert(r(0x6000, 0x1000), PageState::Shared).unwrap();
    // Covers both runs: only the three gaps change.
    map.convert(r(0x2000, 0x6000), PageState::Shared).unwrap();
    // No change: no event.
    map.convert(r(0x2000, 0x6000), PageState::Shared).unwrap();
    map.convert(r(0x4000, 0x1000), PageState::Private).unwrap();
    let ev = rec.events.lock().unwrap().clone();
    assert_eq!(
        ev,
        vec![
            (PageState::Shared, vec![(0x3000, 0x4000)], 1),
            (PageState::Shared, vec![(0x6000, 0x7000)], 2),
            (
                PageState::Shared,
                vec![(0x2000, 0x3000), (0x4000, 0x6000), (0x7000, 0x8000)],
                3
            ),
            (PageState::Private, vec![(0x4000, 0x5000)], 4),
        ]
    );
}

const MODEL_PAGES: u64 = 64;

#[derive(Clone, Debug)]
enum Op {
    Convert { page: u64, count: u64, shared: bool },
    IsAll { page: u64, count: u64, shared: bool },
    State { page: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..MODEL_PAGES).prop_flat_map(|p| (Just(p), 1..=MODEL_PAGES - p));
    prop_oneof![
        3 => (range.clone(), any::<bool>()).prop_map(|((page, count), shared)| Op::Convert {
            page,
            count,
            shared
        }),
        1 => (range, any::<bool>()).prop_map(|((page, count), shared)| Op::IsAll {
            page,
            count,
            shared
        }),
        1 => (0..MODEL_PAGES + 2).prop_map(|page| Op::State { page }),
    ]
}

fn model_runs(model: &[bool]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < model.len() {
        if model[i] {
            let s = i;
            while i < model.len() && model[i] {
                i += 1;
            }
            out.push((s as u64 * KIB4, i as u64 * KIB4));
        } else {
            i += 1;
        }
    }
    out
}

proptest! {
    #[test]
    fn matches_per_page_model(ops in proptest::collection::vec(op(), 1..60)) {
        let map = AttributeMap::new(G48);
        let mut model = vec![false; MODEL_PAGES as usize];
        let mut generation = 0;
        for op in ops {
            match op {
                Op::Convert { page, count, shared } => {
                    let range = r(page * KIB4, count * KIB4);
                    let to = if shared { PageState::Shared } else { PageState::Private };
                    let expect = model[page as usize..(page + count) as usize]
                        .iter()
                        .filter(|&&s| s != shared)
                        .count() as u64;
                    for s in &mut model[page as usize..(page + count) as usize] {
                        *s = shared;
                    }
                    let o = map.convert(range, to).unwrap();
                    prop_assert_eq!(o.pages_changed, expect);
                    if expect > 0 {
                        generation += 1;
                    }
                    prop_assert_eq!(o.generation, generation);
                }
                Op::IsAll { page, count, shared } => {
                    let state = if shared { PageState::Shared } else { PageState::Private };
                    let expect = model[page as usize..(page + count) as usize]
                        .iter()
                        .all(|&s| s == shared);
                    // Use a byte-granular, unaligned range touching the same pages.
                    let range = r(page * KIB4 + 7, count * KIB4 - 14);
                    prop_assert_eq!(map.is_all(range, state).unwrap(), expect);
                }
                Op::State { page } => {
                    let expect = model.get(page as usize).copied().unwrap_or(false);
                    let got = map.state(Gpa(page * KIB4 + 0x123)).unwrap();
                    prop_assert_eq!(got == PageState::Shared, expect);
                }
            }
            prop_assert_eq!(runs(&map), model_runs(&model));
            prop_assert_eq!(
                map.shared_pages(),
                model.iter().filter(|&&s| s).count() as u64
            );
            let guard = map.read();
            prop_assert_eq!(
                guard.shared_ranges().map(|r| (r.start().raw(), r.end().raw())).collect::<Vec<_>>(),
                model_runs(&model)
            );
        }
    }
}
