//! Measured build per 4 KiB page against its hashing floor, in the same run.
//!
//! A measured 4 KiB page costs the module one 128-byte block for TDH.MEM.PAGE.ADD and
//! 16 × 3 blocks for TDH.MR.EXTEND: 49 blocks = 6,272 bytes of SHA-384 input
//! (tdx-module-abi.md §6.1). The floor is hashing those 6,272 bytes; two SHA-384
//! implementations are compared (RustCrypto `sha2` and `ring`), plus the driver's offline MRTD
//! prediction (`tdx_abi::measure::MrtdBuilder`, which hashes the same blocks block by block).
//!
//! The group for PAGE.ADD + 16 × MR.EXTEND through the emulated module is added when the
//! emulated module lands (it needs `tdx_host::emulated::EmulatedModule`).
//!
//! Run: `cargo bench -p tdx-host --bench measured_build`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::{Digest, Sha384};
use std::hint::black_box;
use tdx_abi::gpa::Gpa;
use tdx_abi::measure::{mem_page_add_block, mr_extend_header_block, MrtdBuilder};

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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
