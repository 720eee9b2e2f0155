//! Measured build per 4 KiB page against its hashing floor, in the same run.
//!
//! A measured 4 KiB page costs the module one 128-byte block for TDH.MEM.PAGE.ADD and
//! 16 × 3 blocks for TDH.MR.EXTEND: 49 blocks = 6,272 bytes of SHA-384 input
//! (tdx-module-abi.md §6.1). The floor is hashing those 6,272 bytes; two SHA-384
//! implementations are compared (RustCrypto `sha2` and `ring`), plus the driver's offline MRTD
//! prediction (`tdx_abi::measure::MrtdBuilder`, which hashes the same blocks block by block).
//!
//! `emulated_page_add_16x_mr_extend` is the real thing: TDH.MEM.PAGE.ADD + 16 × TDH.MR.EXTEND
//! issued by the host driver on the emulated module (a fresh GPA per iteration; the TD and its
//! S-EPT are set up outside the timed loop).
//!
//! Run: `cargo bench -p tdx-host --bench measured_build`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::{Digest, Sha384};
use std::hint::black_box;
use std::sync::Arc;
use tdx_abi::gpa::Gpa;
use tdx_abi::measure::{mem_page_add_block, mr_extend_header_block, MrtdBuilder};
use tdx_host::driver::module::RetryPolicy;
use tdx_host::driver::{bring_up, EmulatedTdxModule, TdBuilder};
use tdx_host::emulated::{EmulatedModule, PlatformConfig};

/// The 49 blocks a measured page at `gpa` with `page` contents feeds the MRTD hash.
fn page_blocks(gpa: u64, page: &[u8; 4096]) -> Vec<u8> {
    let mut v = Vec::with_capacity(49 * 128);
    v.extend_from_slice(&mem_page_add_block(Gpa(gpa)));
    for (i, chunk) in page.chunks_exact(256).enumerate() {
        v.extend_from_slice(&mr_extend_header_block(Gpa(gpa + i as u64 * 256)));
        v.extend_from_slice(chunk);
    }
    v
}

fn bench(c: &mut Criterion) {
    let page = [0x5Au8; 4096];
    let blocks = page_blocks(0x10_0000, &page);
    assert_eq!(blocks.len(), 6272);
    let mut g = c.benchmark_group("measured_page_4k");
    g.throughput(Throughput::Bytes(blocks.len() as u64));
    g.bench_function("sha384_sha2_6272B", |b| {
        b.iter(|| Sha384::digest(black_box(&blocks)))
    });
    g.bench_function("sha384_ring_6272B", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA384, black_box(&blocks)))
    });
    g.bench_function("mrtd_builder_add_page", |b| {
        b.iter(|| {
            let mut m = MrtdBuilder::new();
            m.add_page(Gpa(0x10_0000), black_box(&page), true).unwrap();
            m.finalize()
        })
    });
    // The emulated module: one TD, measured pages at fresh GPAs inside 2 MiB ranges whose
    // S-EPT tables exist (created by a warm-up page), up to 480 pages per TD.
    let (m, module) = platform();
    let td = TdBuilder::new(&module).build().expect("TD");
    td.create_vcpu(0, 0).expect("vCPU");
    let mut next = 0u64;
    g.bench_function("emulated_page_add_16x_mr_extend", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                // Warm the S-EPT of the next 2 MiB region outside the timed part.
                if next % 512 == 0 {
                    td.add_page(Gpa(next << 12), &page, false)
                        .expect("warm-up page");
                    next += 1;
                }
                let gpa = Gpa(next << 12);
                next += 1;
                let t = std::time::Instant::now();
                td.add_page(gpa, black_box(&page), true)
                    .expect("measured page");
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    drop(td);
    drop(m);
}

fn platform() -> (Arc<EmulatedModule>, Arc<EmulatedTdxModule>) {
    bring_up(
        PlatformConfig {
            memory_size: 1 << 30,
            ..PlatformConfig::default()
        },
        RetryPolicy::default(),
    )
    .expect("bring-up")
}

criterion_group!(benches, bench);
criterion_main!(benches);
