//! Planning TDMRs/PAMTs for 4 TiB of memory with 64 holes, against the floor of merely
//! sorting and walking the input regions. Also prints and asserts the PAMT total against
//! Linux's formula computed here independently.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tdx_abi::tdmr::CmrInfoEntry;
use tdx_memory::tdmr::{plan_tdmrs, TdmrConstraints, UsableRegion};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Span covered by each region's TDMR.
const SLICE: u64 = 64 * GIB;
/// Number of regions (and holes).
const N: u64 = 64;

/// 64 slices of 64 GiB (4 TiB), each starting with a 256 MiB hole. Linux's fill_out_tdmrs
/// opens one 64 GiB TDMR per region: 64 TDMRs, the module 1.5.01 maximum. Regions are given
/// in a scrambled order.
fn memory_map() -> (Vec<UsableRegion>, Vec<CmrInfoEntry>) {
    let mut regions: Vec<UsableRegion> = (0..N)
        .map(|i| UsableRegion {
            start: i * SLICE + 256 * MIB,
            end: (i + 1) * SLICE,
            node: (i / 32) as u32,
        })
        .collect();
    let cmrs = regions
        .iter()
        .map(|r| CmrInfoEntry {
            cmr_base: r.start,
            cmr_size: r.end - r.start,
        })
        .collect::<Vec<_>>();
    // CMRs must number at most 32: merge pairs of slices' CMRs into one covering both
    // (the hole between them is convertible in this synthetic platform).
    let cmrs = cmrs
        .chunks(2)
        .map(|p| CmrInfoEntry {
            cmr_base: p[0].cmr_base,
            cmr_size: p[1].cmr_base + p[1].cmr_size - p[0].cmr_base,
        })
        .collect();
    regions.reverse();
    regions.swap(3, 40);
    (regions, cmrs)
}

/// Linux's PAMT bytes for the expected TDMRs, from the formula (16-byte entries, each PAMT
/// rounded up to 4 KiB), summed over the 64 TDMRs of 64 GiB.
fn linux_pamt_bytes() -> u64 {
    let round = |b: u64| b.div_ceil(4096) * 4096;
    (0..N)
        .map(|_| round((SLICE >> 12) * 16) + round((SLICE >> 21) * 16) + round((SLICE >> 30) * 16))
        .sum()
}

fn bench(c: &mut Criterion) {
    let (regions, cmrs) = memory_map();
    let constraints = TdmrConstraints::default();

    let plan = plan_tdmrs(&regions, &cmrs, &constraints).expect("4 TiB map plans");
    let expected = linux_pamt_bytes();
    println!(
        "tdmr_plan: {} TDMRs, PAMT {} bytes ({} KiB); Linux formula {} bytes ({} KiB)",
        plan.tdmrs.len(),
        plan.pamt_total_bytes,
        plan.pamt_total_kib(),
        expected,
        expected / 1024
    );
    assert_eq!(plan.tdmrs.len(), 64);
    assert_eq!(plan.pamt_total_bytes, expected);
    plan.validate(&cmrs).expect("the module would accept it");

    let mut g = c.benchmark_group("tdmr_plan");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("plan_4tib_64_holes", |b| {
        b.iter(|| plan_tdmrs(black_box(&regions), black_box(&cmrs), &constraints))
    });
    g.bench_function("floor_sort_and_walk_regions", |b| {
        b.iter(|| {
            let mut v = black_box(&regions).clone();
            v.sort_unstable_by_key(|r| r.start);
            v.iter().fold(0u64, |acc, r| acc + (r.end - r.start))
        })
    });
    g.bench_function("validate_4tib_plan", |b| {
        b.iter(|| plan.validate(black_box(&cmrs)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
