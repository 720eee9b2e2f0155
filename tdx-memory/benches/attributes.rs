//! Attribute-map conversion throughput on 1 GiB ranges, against floors measured in the same
//! run: one `BTreeMap` insert+remove (the least an interval map can do per conversion) and a
//! memset of the per-page bitmap a flat representation would have to write for 1 GiB.
//!
//! Run: `cargo bench -p tdx-memory --bench attributes -- --quick`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_memory::attributes::{AttributeMap, PageState};
use tdx_memory::layout::GpaRange;

const GIB: u64 = 1 << 30;

fn conversions(c: &mut Criterion) {
    let mut g = c.benchmark_group("attributes");
    let range = GpaRange::new(Gpa(GIB), GIB).unwrap();

    // Alternating shared/private on an otherwise empty map.
    let map = AttributeMap::new(Gpaw::Gpaw48);
    let mut shared = false;
    g.bench_function("convert_1gib_alternating", |b| {
        b.iter(|| {
            shared = !shared;
            let to = if shared {
                PageState::Shared
            } else {
                PageState::Private
            };
            black_box(map.convert(black_box(range), to).unwrap());
        })
    });

    // Same, with 1000 unrelated shared runs elsewhere (log factor of the tree).
    let busy = AttributeMap::new(Gpaw::Gpaw48);
    for i in 0..1000u64 {
        let r = GpaRange::new(Gpa(4 * GIB + i * 0x2000), 0x1000).unwrap();
        busy.convert(r, PageState::Shared).unwrap();
    }
    let mut shared = false;
    g.bench_function("convert_1gib_alternating_1000_runs", |b| {
        b.iter(|| {
            shared = !shared;
            let to = if shared {
                PageState::Shared
            } else {
                PageState::Private
            };
            black_box(busy.convert(black_box(range), to).unwrap());
        })
    });

    g.bench_function("state_query", |b| {
        b.iter(|| black_box(busy.state(black_box(Gpa(4 * GIB + 500 * 0x2000))).unwrap()))
    });

    // Floor 1: one BTreeMap insert + remove.
    let mut tree: BTreeMap<u64, u64> = (0..1000u64).map(|i| (i * 2 + 1_000_000, 1)).collect();
    g.bench_function("floor_btreemap_insert_remove", |b| {
        b.iter(|| {
            tree.insert(black_box(262_144), black_box(524_288));
            black_box(tree.remove(&262_144));
        })
    });

    // Floor 2: memset of a 1-bit-per-page bitmap covering 1 GiB (32 KiB).
    let mut bitmap = vec![0u64; (GIB / 4096 / 64) as usize];
    let mut v = 0u64;
    g.bench_function("floor_bitmap_memset_1gib", |b| {
        b.iter(|| {
            v = !v;
            bitmap.fill(v);
            black_box(&bitmap);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = conversions
}
criterion_main!(benches);
