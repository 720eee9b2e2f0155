//! Worked examples of the TDMR/PAMT planner, with values typed from the fact sheet and hand
//! computation (not from the code under test).

use tdx_abi::tdmr::{CmrInfoEntry, TdmrReservedArea};
use tdx_memory::tdmr::{
    plan_tdmrs, plan_tdmrs_with_allocator, LayoutError, PamtAllocator, PamtRequest, PlanError,
    TdmrConstraints, TdxMemoryMap, UsableRegion,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn cmr(base: u64, end: u64) -> CmrInfoEntry {
    CmrInfoEntry {
        cmr_base: base,
        cmr_size: end - base,
    }
}

fn cmrs_for(regions: &[UsableRegion]) -> Vec<CmrInfoEntry> {
    regions.iter().map(|r| cmr(r.start, r.end)).collect()
}

fn area(offset: u64, size: u64) -> TdmrReservedArea {
    TdmrReservedArea { offset, size }
}

#[test]
fn one_gib_tdmr_needs_4m_8k_4k_of_pamt() {
    let regions = [UsableRegion::new(GIB, 2 * GIB)];
    let plan = plan_tdmrs(&regions, &cmrs_for(&regions), &TdmrConstraints::default()).unwrap();
    assert_eq!(plan.tdmrs.len(), 1);
    let t = &plan.tdmrs[0];
    assert_eq!((t.tdmr_base, t.tdmr_size), (GIB, GIB));
    assert_eq!(t.pamt_4k_size, 4 * MIB);
    assert_eq!(t.pamt_2m_size, 8 << 10);
    assert_eq!(t.pamt_1g_size, 4 << 10);
    assert_eq!(plan.pamt_total_bytes, 4 * MIB + (12 << 10));
}

#[test]
fn linux_262668_kb_allocated_for_pamt() {
    // Three regions far enough apart that Linux opens one TDMR each:
    // [1 MiB, 2 GiB) -> TDMR [0, 2G); [4G, 34G) -> 30 GiB; [36G, 68G) -> 32 GiB. 64 GiB total.
    let regions = [
        UsableRegion::new(MIB, 2 * GIB),
        UsableRegion::new(4 * GIB, 34 * GIB),
        UsableRegion::new(36 * GIB, 68 * GIB),
    ];
    let plan = plan_tdmrs(&regions, &cmrs_for(&regions), &TdmrConstraints::default()).unwrap();
    let bounds: Vec<(u64, u64)> = plan
        .tdmrs
        .iter()
        .map(|t| (t.tdmr_base, t.tdmr_size))
        .collect();
    assert_eq!(
        bounds,
        [(0, 2 * GIB), (4 * GIB, 30 * GIB), (36 * GIB, 32 * GIB)]
    );
    assert_eq!(plan.tdmr_span_bytes(), 64 * GIB);
    // 262144 KiB of 4K PAMT + 512 KiB of 2M PAMT + 3 x 4 KiB of 1G PAMT.
    assert_eq!(plan.pamt_total_kib(), 262_668);
    plan.validate(&cmrs_for(&regions)).unwrap();
}

#[test]
fn hand_checked_two_tdmr_map() {
    // Memory [1 MiB, 2 GiB) + [4 GiB, 6.5 GiB).
    let regions = [
        UsableRegion::new(0x10_0000, 0x8000_0000),
        UsableRegion::new(0x1_0000_0000, 0x1_A000_0000),
    ];
    let cmrs = cmrs_for(&regions);
    let plan = plan_tdmrs(&regions, &cmrs, &TdmrConstraints::default()).unwrap();
    assert_eq!(plan.tdmrs.len(), 2);

    // TDMR 0: [0, 2 GiB); PAMT 8 MiB + 16 KiB + 4 KiB carved from the top of [1M, 2G).
    let t0 = &plan.tdmrs[0];
    assert_eq!(t0.tdmr_base, 0);
    assert_eq!(t0.tdmr_size, 0x8000_0000);
    assert_eq!(t0.pamt_4k_base, 0x7F7F_B000);
    assert_eq!(t0.pamt_4k_size, 0x80_0000);
    assert_eq!(t0.pamt_2m_base, 0x7FFF_B000);
    assert_eq!(t0.pamt_2m_size, 0x4000);
    assert_eq!(t0.pamt_1g_base, 0x7FFF_F000);
    assert_eq!(t0.pamt_1g_size, 0x1000);
    assert_eq!(
        t0.used_reserved_areas(),
        [area(0, 0x10_0000), area(0x7F7F_B000, 0x80_5000)]
    );

    // TDMR 1: [4 GiB, 7 GiB); PAMT 12 MiB + 24 KiB + 4 KiB at the top of [4G, 6.5G);
    // the PAMT area and the tail hole are adjacent and not merged.
    let t1 = &plan.tdmrs[1];
    assert_eq!(t1.tdmr_base, 0x1_0000_0000);
    assert_eq!(t1.tdmr_size, 0xC000_0000);
    assert_eq!(t1.pamt_4k_base, 0x1_9F3F_9000);
    assert_eq!(t1.pamt_4k_size, 0xC0_0000);
    assert_eq!(t1.pamt_2m_base, 0x1_9FFF_9000);
    assert_eq!(t1.pamt_2m_size, 0x6000);
    assert_eq!(t1.pamt_1g_base, 0x1_9FFF_F000);
    assert_eq!(t1.pamt_1g_size, 0x1000);
    assert_eq!(
        t1.used_reserved_areas(),
        [area(0x9F3F_9000, 0xC0_7000), area(0xA000_0000, 0x2000_0000)]
    );

    assert_eq!(plan.pamt_total_bytes, 0x80_5000 + 0xC0_7000);
    assert_eq!(plan.pamt_total_kib(), 20_528);
    let ranges = plan.pamt_ranges();
    assert_eq!(ranges.len(), 2);
    assert_eq!((ranges[1].base, ranges[1].size), (0x1_9F3F_9000, 0xC0_7000));
    plan.validate(&cmrs).unwrap();

    // Region order does not matter.
    let swapped = [regions[1], regions[0]];
    assert_eq!(
        plan_tdmrs(&swapped, &cmrs, &TdmrConstraints::default()).unwrap(),
        plan
    );
}

#[test]
fn physical_layout_matches_linux() {
    let regions = [
        UsableRegion::new(0x10_0000, 0x8000_0000),
        UsableRegion::new(0x1_0000_0000, 0x1_A000_0000),
    ];
    let plan = plan_tdmrs(&regions, &cmrs_for(&regions), &TdmrConstraints::default()).unwrap();
    let l = plan.to_physical_layout(0x20_0000, 0x30_0000).unwrap();
    // 64 + 16 * 16 = 320 bytes rounded up to 512.
    assert_eq!(l.tdmr_info_stride, 512);
    assert_eq!(l.tdmr_info_array.len(), 1024);
    assert_eq!(l.tdmr_info_pas, [0x20_0000, 0x20_0200]);
    assert_eq!(l.num_tdmrs, 2);
    // 2 x 8 bytes rounded up to a power of two, at least 512.
    assert_eq!(l.pa_array.len(), 512);
    assert_eq!(&l.pa_array[0..8], &0x20_0000u64.to_le_bytes());
    assert_eq!(&l.pa_array[8..16], &0x20_0200u64.to_le_bytes());
    assert!(l.pa_array[16..].iter().all(|b| *b == 0));
    let e1 = &l.tdmr_info_array[512..1024];
    assert_eq!(&e1[0..8], &0x1_0000_0000u64.to_le_bytes()); // TDMR_BASE
    assert_eq!(&e1[8..16], &0xC000_0000u64.to_le_bytes()); // TDMR_SIZE
    assert_eq!(&e1[16..24], &0x1_9FFF_F000u64.to_le_bytes()); // PAMT_1G_BASE
    assert_eq!(&e1[24..32], &0x1000u64.to_le_bytes()); // PAMT_1G_SIZE
    assert_eq!(&e1[32..40], &0x1_9FFF_9000u64.to_le_bytes()); // PAMT_2M_BASE
    assert_eq!(&e1[48..56], &0x1_9F3F_9000u64.to_le_bytes()); // PAMT_4K_BASE
    assert_eq!(&e1[56..64], &0xC0_0000u64.to_le_bytes()); // PAMT_4K_SIZE
    assert_eq!(&e1[64..72], &0x9F3F_9000u64.to_le_bytes()); // RESERVED[0].OFFSET
    assert_eq!(&e1[88..96], &0x2000_0000u64.to_le_bytes()); // RESERVED[1].SIZE
    assert!(e1[96..].iter().all(|b| *b == 0));

    assert_eq!(
        plan.to_physical_layout(0x20_0100, 0x30_0000),
        Err(LayoutError::TdmrInfoArrayMisaligned(0x20_0100))
    );
    assert_eq!(
        plan.to_physical_layout(0x20_0000, 0x30_0040),
        Err(LayoutError::PaArrayMisaligned(0x30_0040))
    );
    assert_eq!(
        plan.to_physical_layout(0x20_0000, 0x20_0200),
        Err(LayoutError::ArraysOverlap)
    );
    assert_eq!(
        plan.to_physical_layout(u64::MAX - 511, 0),
        Err(LayoutError::AddressOverflow)
    );
}

#[test]
fn tdmrs_exhausted_names_the_region() {
    let regions = [
        UsableRegion::new(8 * GIB, 9 * GIB),
        UsableRegion::new(GIB, 2 * GIB),
        UsableRegion::new(4 * GIB, 5 * GIB),
    ];
    let c = TdmrConstraints {
        max_tdmrs: 2,
        ..Default::default()
    };
    assert_eq!(
        plan_tdmrs(&regions, &cmrs_for(&regions), &c),
        Err(PlanError::TdmrsExhausted {
            region_index: 0,
            region_start: 8 * GIB,
            region_end: 9 * GIB,
            max_tdmrs: 2,
        })
    );
}

#[test]
fn regions_sharing_a_gib_share_a_tdmr() {
    // Linux: a region fully inside the current TDMR is skipped, a partially covered one starts
    // the next TDMR at the current TDMR's end.
    let regions = [
        UsableRegion::new(GIB, GIB + 256 * MIB),
        UsableRegion::new(GIB + 512 * MIB, GIB + 768 * MIB),
        UsableRegion::new(GIB + 900 * MIB, 3 * GIB + 4 * MIB),
    ];
    let plan = plan_tdmrs(&regions, &cmrs_for(&regions), &TdmrConstraints::default()).unwrap();
    let bounds: Vec<(u64, u64)> = plan
        .tdmrs
        .iter()
        .map(|t| (t.tdmr_base, t.tdmr_size))
        .collect();
    assert_eq!(bounds, [(GIB, GIB), (2 * GIB, 2 * GIB)]);
    // TDMR 0 holes: [1G+256M, 1G+512M) and [1G+768M, 1G+900M); TDMR 1 tail hole
    // [3G+4M, 4G); region 3 continues into TDMR 1 from below, so TDMR 1 has no head hole.
    let t0 = plan.tdmrs[0].used_reserved_areas();
    assert!(t0.contains(&area(256 * MIB, 256 * MIB)));
    assert!(t0.contains(&area(768 * MIB, 132 * MIB)));
    let t1 = plan.tdmrs[1].used_reserved_areas();
    assert!(t1.contains(&area(GIB + 4 * MIB, GIB - 4 * MIB)));
    plan.validate(&cmrs_for(&regions)).unwrap();
}

#[test]
fn reserved_areas_exhausted_names_the_tdmr() {
    // 20 MiB-sized regions with holes between them inside [4G, 5G): 20 holes + 1 tail > 16.
    let regions: Vec<UsableRegion> = (0..20)
        .map(|i| {
            UsableRegion::new(
                4 * GIB + (2 * i + 1) * 20 * MIB,
                4 * GIB + (2 * i + 2) * 20 * MIB,
            )
        })
        .collect();
    let mut all = vec![UsableRegion::new(GIB, 2 * GIB)];
    all.extend(regions);
    assert_eq!(
        plan_tdmrs(&all, &cmrs_for(&all), &TdmrConstraints::default()),
        Err(PlanError::ReservedAreasExhausted {
            tdmr_index: 1,
            tdmr_base: 4 * GIB,
            tdmr_size: GIB,
            max_reserved_per_tdmr: 16,
        })
    );
}

#[test]
fn pamt_allocation_failure_names_size() {
    // 1 MiB of memory cannot hold the 4 MiB + 12 KiB PAMT of its 1 GiB TDMR.
    let regions = [UsableRegion::new(0x10_0000, 0x20_0000)];
    assert_eq!(
        plan_tdmrs(&regions, &cmrs_for(&regions), &TdmrConstraints::default()),
        Err(PlanError::PamtAllocationFailed {
            tdmr_index: 0,
            size: 0x40_3000
        })
    );
}

#[test]
fn input_errors_are_typed() {
    let c = TdmrConstraints::default();
    let ok_cmr = [cmr(0, 4 * GIB)];
    assert_eq!(plan_tdmrs(&[], &ok_cmr, &c), Err(PlanError::NoUsableMemory));
    assert_eq!(
        plan_tdmrs(&[UsableRegion::new(0x1800, 0x4000)], &ok_cmr, &c),
        Err(PlanError::RegionMisaligned {
            index: 0,
            start: 0x1800,
            end: 0x4000
        })
    );
    assert_eq!(
        plan_tdmrs(&[UsableRegion::new(0x4000, 0x1000)], &ok_cmr, &c),
        Err(PlanError::RegionInverted {
            index: 0,
            start: 0x4000,
            end: 0x1000
        })
    );
    assert_eq!(
        plan_tdmrs(
            &[
                UsableRegion::new(GIB, 3 * GIB),
                UsableRegion::new(0, GIB + 4096)
            ],
            &ok_cmr,
            &c
        ),
        Err(PlanError::RegionsOverlap {
            first: 1,
            second: 0
        })
    );
    assert_eq!(
        plan_tdmrs(&[UsableRegion::new(GIB, 3 * GIB)], &[cmr(GIB, 2 * GIB)], &c),
        Err(PlanError::MemoryNotConvertible {
            start: GIB,
            end: 3 * GIB
        })
    );
    // Adjacent CMRs merge only when consecutive in the array (module semantics).
    let r = [UsableRegion::new(GIB, 3 * GIB)];
    assert!(plan_tdmrs(&r, &[cmr(GIB, 2 * GIB), cmr(2 * GIB, 3 * GIB)], &c).is_ok());
    assert_eq!(
        plan_tdmrs(
            &r,
            &[
                cmr(2 * GIB, 3 * GIB),
                cmr(8 * GIB, 9 * GIB),
                cmr(GIB, 2 * GIB)
            ],
            &c
        ),
        Err(PlanError::MemoryNotConvertible {
            start: GIB,
            end: 3 * GIB
        })
    );
    assert_eq!(
        plan_tdmrs(&r, &[cmr(0, 2 * GIB), cmr(GIB, 4 * GIB)], &c),
        Err(PlanError::CmrsOverlap {
            first: 0,
            second: 1
        })
    );
    assert_eq!(
        plan_tdmrs(&r, &vec![cmr(0, 4 * GIB); 33], &c),
        Err(PlanError::TooManyCmrs { count: 33 })
    );
    let bad_cmr = CmrInfoEntry {
        cmr_base: u64::MAX - 0xFFF,
        cmr_size: 0x2000,
    };
    assert_eq!(
        plan_tdmrs(&r, &[bad_cmr], &c),
        Err(PlanError::InvalidCmr {
            index: 0,
            base: u64::MAX - 0xFFF,
            size: 0x2000
        })
    );
    let bad_c = TdmrConstraints {
        max_reserved_per_tdmr: 0,
        ..c
    };
    assert!(matches!(
        plan_tdmrs(&r, &ok_cmr, &bad_c),
        Err(PlanError::InvalidConstraints(_))
    ));
}

#[test]
fn addresses_near_u64_max_do_not_overflow() {
    let top = u64::MAX - 0xFFF; // highest 4 KiB-aligned address
    let r = [UsableRegion::new(top - 0x10_0000, top)];
    let cmrs = [cmr(top - 0x10_0000, top)];
    assert_eq!(
        plan_tdmrs(&r, &cmrs, &TdmrConstraints::default()),
        Err(PlanError::RegionAbovePaLimit {
            index: 0,
            end: top,
            max_pa_bits: 52
        })
    );
    // A region ending exactly at 2^52 is fine for the PA limit.
    let r = [UsableRegion::new((1 << 52) - 2 * GIB, 1 << 52)];
    let plan = plan_tdmrs(&r, &cmrs_for(&r), &TdmrConstraints::default()).unwrap();
    plan.validate(&cmrs_for(&r)).unwrap();
    // ... but not with a 46-bit PA limit (e.g. HKID bits from bit 46).
    let c46 = TdmrConstraints {
        max_pa_bits: 46,
        ..Default::default()
    };
    assert_eq!(
        plan_tdmrs(&r, &cmrs_for(&r), &c46),
        Err(PlanError::RegionAbovePaLimit {
            index: 0,
            end: 1 << 52,
            max_pa_bits: 46
        })
    );
}

struct Fixed(u64);
impl PamtAllocator for Fixed {
    fn allocate(&mut self, request: &PamtRequest) -> Option<u64> {
        let base = self.0;
        self.0 += request.size;
        Some(base)
    }
}

#[test]
fn custom_allocator_results_are_checked() {
    let regions = [
        UsableRegion::new(GIB, 2 * GIB),
        UsableRegion::new(4 * GIB, 5 * GIB),
    ];
    let cmrs = cmrs_for(&regions);
    let map = TdxMemoryMap::new(&regions, &cmrs).unwrap();
    let c = TdmrConstraints::default();
    // Both PAMTs packed at the bottom of the first region: valid, and TDMR 0 reserves both.
    let plan = plan_tdmrs_with_allocator(&map, &c, &mut Fixed(GIB)).unwrap();
    assert_eq!(
        plan.tdmrs[0].used_reserved_areas(),
        [area(0, 0x40_3000), area(0x40_3000, 0x40_3000)]
    );
    plan.validate(&cmrs).unwrap();
    // Misaligned, outside usable memory, or overlapping: rejected.
    assert_eq!(
        plan_tdmrs_with_allocator(&map, &c, &mut Fixed(GIB + 8)),
        Err(PlanError::PamtAllocationInvalid {
            tdmr_index: 0,
            base: GIB + 8,
            size: 0x40_3000
        })
    );
    assert_eq!(
        plan_tdmrs_with_allocator(&map, &c, &mut Fixed(3 * GIB)),
        Err(PlanError::PamtAllocationInvalid {
            tdmr_index: 0,
            base: 3 * GIB,
            size: 0x40_3000
        })
    );
    struct Same;
    impl PamtAllocator for Same {
        fn allocate(&mut self, _: &PamtRequest) -> Option<u64> {
            Some(GIB)
        }
    }
    assert_eq!(
        plan_tdmrs_with_allocator(&map, &c, &mut Same),
        Err(PlanError::PamtAllocationInvalid {
            tdmr_index: 1,
            base: GIB,
            size: 0x40_3000
        })
    );
    struct Near;
    impl PamtAllocator for Near {
        fn allocate(&mut self, _: &PamtRequest) -> Option<u64> {
            Some(u64::MAX - 0xFFF)
        }
    }
    assert!(matches!(
        plan_tdmrs_with_allocator(&map, &c, &mut Near),
        Err(PlanError::PamtAllocationInvalid { tdmr_index: 0, .. })
    ));
}

#[test]
fn pamt_prefers_the_preferred_node() {
    // TDMR [4G, 5G) holds only 1 MiB (too small for its PAMT); its node is 1, so the PAMT goes
    // to the top of the node-1 region [8G, 9G), not to node 0's [1G, 2G).
    let regions = [
        UsableRegion {
            start: GIB,
            end: 2 * GIB,
            node: 0,
        },
        UsableRegion {
            start: 4 * GIB,
            end: 4 * GIB + MIB,
            node: 1,
        },
        UsableRegion {
            start: 8 * GIB,
            end: 9 * GIB,
            node: 1,
        },
    ];
    let plan = plan_tdmrs(&regions, &cmrs_for(&regions), &TdmrConstraints::default()).unwrap();
    // TDMR 1 is served first and gets the very top; TDMR 2 then carves below it.
    assert_eq!(plan.tdmrs[1].pamt_4k_base, 9 * GIB - 0x40_3000);
    assert_eq!(plan.tdmrs[2].pamt_4k_base, 9 * GIB - 0x40_3000 - 0x40_3000);
    plan.validate(&cmrs_for(&regions)).unwrap();
}
