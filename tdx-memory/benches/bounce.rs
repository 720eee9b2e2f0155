//! Bounce copy throughput: map + unmap with copies at 4 KiB, 64 KiB and 256 KiB, against a
//! plain `copy_from_slice` of the same size in the same run.
//!
//! * `bounce_to_device`: map (one copy in) + unmap (no copy back);
//! * `bounce_bidirectional`: map (copy in) + unmap (copy back) = two copies;
//! * `memcpy`: one `copy_from_slice`.
//!
//! Run: `cargo bench -p tdx-memory --bench bounce -- --quick`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tdx_memory::bounce::{BouncePool, DmaDirection, MapOptions, Slot};

const POOL: usize = 4 << 20;

fn bounce(c: &mut Criterion) {
    let mut data = vec![0u8; POOL];
    let mut slots = vec![Slot::EMPTY; POOL / 2048];
    let mut pool = BouncePool::new(0x8000_0000, &mut data[..], &mut slots[..]).unwrap();
    let mut g = c.benchmark_group("bounce");
    for size in [4 << 10, 64 << 10, 256 << 10] {
        g.throughput(Throughput::Bytes(size as u64));
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut dst = vec![0u8; size];
        g.bench_with_input(BenchmarkId::new("bounce_to_device", size), &size, |b, _| {
            b.iter(|| {
                let m = pool
                    .map(
                        0x10_0000,
                        black_box(&src),
                        DmaDirection::ToDevice,
                        MapOptions::default(),
                    )
                    .unwrap();
                pool.unmap(m, &mut dst).unwrap();
            })
        });
        g.bench_with_input(
            BenchmarkId::new("bounce_bidirectional", size),
            &size,
            |b, _| {
                b.iter(|| {
                    let m = pool
                        .map(
                            0x10_0000,
                            black_box(&src),
                            DmaDirection::Bidirectional,
                            MapOptions::default(),
                        )
                        .unwrap();
                    pool.unmap(m, &mut dst).unwrap();
                    black_box(&dst);
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            })
        });
    }
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
    targets = bounce
}
criterion_main!(benches);
