//! One failing `TDH.SYS.CONFIG` check per error kind, each with the exact kind, indexes and
//! the 64-bit status the module would return (codes typed from the fact sheet §4.2).

use tdx_abi::gpa::PageSize;
use tdx_abi::tdmr::{CmrInfoEntry, TdmrInfo, TdmrReservedArea};
use tdx_memory::tdmr::{
    validate, TdmrConstraints, TdmrValidationError, TdmrValidationErrorKind as K,
};

/// The hand-checked plan of `tdmr_plan.rs` (memory [1M, 2G) + [4G, 6.5G)), typed literally.
fn good() -> Vec<TdmrInfo> {
    let mut t0 = TdmrInfo {
        tdmr_base: 0,
        tdmr_size: 0x8000_0000,
        pamt_1g_base: 0x7FFF_F000,
        pamt_1g_size: 0x1000,
        pamt_2m_base: 0x7FFF_B000,
        pamt_2m_size: 0x4000,
        pamt_4k_base: 0x7F7F_B000,
        pamt_4k_size: 0x80_0000,
        ..Default::default()
    };
    t0.reserved_areas[0] = TdmrReservedArea {
        offset: 0,
        size: 0x10_0000,
    };
    t0.reserved_areas[1] = TdmrReservedArea {
        offset: 0x7F7F_B000,
        size: 0x80_5000,
    };
    let mut t1 = TdmrInfo {
        tdmr_base: 0x1_0000_0000,
        tdmr_size: 0xC000_0000,
        pamt_1g_base: 0x1_9FFF_F000,
        pamt_1g_size: 0x1000,
        pamt_2m_base: 0x1_9FFF_9000,
        pamt_2m_size: 0x6000,
        pamt_4k_base: 0x1_9F3F_9000,
        pamt_4k_size: 0xC0_0000,
        ..Default::default()
    };
    t1.reserved_areas[0] = TdmrReservedArea {
        offset: 0x9F3F_9000,
        size: 0xC0_7000,
    };
    t1.reserved_areas[1] = TdmrReservedArea {
        offset: 0xA000_0000,
        size: 0x2000_0000,
    };
    vec![t0, t1]
}

fn cmrs() -> Vec<CmrInfoEntry> {
    vec![
        CmrInfoEntry {
            cmr_base: 0x10_0000,
            cmr_size: 0x8000_0000 - 0x10_0000,
        },
        CmrInfoEntry {
            cmr_base: 0x1_0000_0000,
            cmr_size: 0xA000_0000,
        },
    ]
}

fn check(tdmrs: &[TdmrInfo], cmrs: &[CmrInfoEntry]) -> Result<(), TdmrValidationError> {
    validate(tdmrs, cmrs, &TdmrConstraints::default())
}

fn expect(
    r: Result<(), TdmrValidationError>,
    kind: K,
    tdmr: usize,
    second: Option<usize>,
    ps: Option<PageSize>,
    status: u64,
) {
    let e = r.expect_err("validation must fail");
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.tdmr_index, Some(tdmr), "{e}");
    match kind {
        K::InvalidReservedInTdmr | K::NonOrderedReservedInTdmr => {
            assert_eq!(e.reserved_index, second, "{e}")
        }
        K::PamtOverlap => assert_eq!(e.other_tdmr_index, second, "{e}"),
        _ => assert_eq!(second, None),
    }
    assert_eq!(e.page_size, ps, "{e}");
    assert_eq!(e.status(), status, "{e}");
}

#[test]
fn the_good_plan_passes() {
    check(&good(), &cmrs()).unwrap();
}

#[test]
fn status_names_and_codes() {
    let table = [
        (K::InvalidTdmrCount, "TDX_OPERAND_INVALID", 0x0100),
        (K::InvalidTdmr, "TDX_INVALID_TDMR", 0x0A00),
        (K::NonOrderedTdmr, "TDX_NON_ORDERED_TDMR", 0x0A01),
        (K::TdmrOutsideCmrs, "TDX_TDMR_OUTSIDE_CMRS", 0x0A02),
        (K::InvalidPamt, "TDX_INVALID_PAMT", 0x0A10),
        (K::PamtOutsideCmrs, "TDX_PAMT_OUTSIDE_CMRS", 0x0A11),
        (K::PamtOverlap, "TDX_PAMT_OVERLAP", 0x0A12),
        (
            K::InvalidReservedInTdmr,
            "TDX_INVALID_RESERVED_IN_TDMR",
            0x0A20,
        ),
        (
            K::NonOrderedReservedInTdmr,
            "TDX_NON_ORDERED_RESERVED_IN_TDMR",
            0x0A21,
        ),
    ];
    for (k, name, code) in table {
        assert_eq!(k.status_name(), name);
        assert_eq!(k.status_code(), code);
    }
}

#[test]
fn count_zero_or_above_max_is_operand_invalid_rdx() {
    let e = check(&[], &cmrs()).unwrap_err();
    assert_eq!(e.kind, K::InvalidTdmrCount);
    assert_eq!((e.tdmr_index, e.count), (None, Some(0)));
    assert_eq!(e.status(), 0xC000_0100_0000_0002);
    let c = TdmrConstraints {
        max_tdmrs: 1,
        ..Default::default()
    };
    let e = validate(&good(), &cmrs(), &c).unwrap_err();
    assert_eq!((e.kind, e.count), (K::InvalidTdmrCount, Some(2)));
}

#[test]
fn invalid_tdmr() {
    let mut t = good();
    t[1].tdmr_size = 0xC000_1000; // not a 1 GiB multiple
    expect(
        check(&t, &cmrs()),
        K::InvalidTdmr,
        1,
        None,
        None,
        0xC000_0A00_0000_0001,
    );
    let mut t = good();
    t[1].tdmr_size = 0; // empty
    expect(
        check(&t, &cmrs()),
        K::InvalidTdmr,
        1,
        None,
        None,
        0xC000_0A00_0000_0001,
    );
    let mut t = good();
    t[1].tdmr_base = u64::MAX - (1 << 30) + 1; // base + size overflows
    expect(
        check(&t, &cmrs()),
        K::InvalidTdmr,
        1,
        None,
        None,
        0xC000_0A00_0000_0001,
    );
    let mut t = good();
    t[1].tdmr_base = 1 << 52; // above MAX_PA
    expect(
        check(&t, &cmrs()),
        K::InvalidTdmr,
        1,
        None,
        None,
        0xC000_0A00_0000_0001,
    );
}

#[test]
fn non_ordered_tdmr() {
    let mut t = good();
    t[1].tdmr_base = 0x4000_0000; // inside TDMR 0
    expect(
        check(&t, &cmrs()),
        K::NonOrderedTdmr,
        1,
        None,
        None,
        0xC000_0A01_0000_0001,
    );
    let t = vec![good()[1], good()[0]]; // descending
    expect(
        check(&t, &cmrs()),
        K::NonOrderedTdmr,
        1,
        None,
        None,
        0xC000_0A01_0000_0001,
    );
}

#[test]
fn tdmr_outside_cmrs() {
    // The first MiB of TDMR 0 is usable in the TDMR_INFO but not convertible.
    let mut c = cmrs();
    c[0].cmr_base = 0x20_0000;
    c[0].cmr_size = 0x8000_0000 - 0x20_0000;
    expect(
        check(&good(), &c),
        K::TdmrOutsideCmrs,
        0,
        None,
        None,
        0xC000_0A02_0000_0000,
    );
}

#[test]
fn invalid_pamt() {
    let mut t = good();
    t[0].pamt_2m_size = 0x1000; // 1024 entries x 16 B = 16 KiB needed
    expect(
        check(&t, &cmrs()),
        K::InvalidPamt,
        0,
        None,
        Some(PageSize::Size2M),
        0xC000_0A10_0000_0100,
    );
    let mut t = good();
    t[1].pamt_1g_base += 8; // misaligned
    expect(
        check(&t, &cmrs()),
        K::InvalidPamt,
        1,
        None,
        Some(PageSize::Size1G),
        0xC000_0A10_0000_0201,
    );
}

#[test]
fn pamt_outside_cmrs() {
    // CMR 1 ends at 6 GiB: TDMR 1's PAMT (checked 1G first) lies above it.
    let mut c = cmrs();
    c[1].cmr_size = 0x8000_0000;
    // TDMR 1's usable part [4G, 6.5G - PAMT) is outside that CMR too, but the module checks
    // PAMTs (step 8) before the TDMR's non-reserved parts (step 9).
    expect(
        check(&good(), &c),
        K::PamtOutsideCmrs,
        1,
        None,
        Some(PageSize::Size1G),
        0xC000_0A11_0000_0201,
    );
}

#[test]
fn pamt_overlap() {
    // TDMR 1's 4K PAMT on top of TDMR 0's PAMTs.
    let mut t = good();
    t[1].pamt_4k_base = t[0].pamt_4k_base;
    expect(
        check(&t, &cmrs()),
        K::PamtOverlap,
        1,
        Some(0),
        Some(PageSize::Size4K),
        0xC000_0A12_0000_0001,
    );
    // TDMR 0's 1G PAMT moved into TDMR 0's usable (non-reserved) memory.
    let mut t = good();
    t[0].pamt_1g_base = 0x4000_0000;
    expect(
        check(&t, &cmrs()),
        K::PamtOverlap,
        0,
        Some(0),
        Some(PageSize::Size1G),
        0xC000_0A12_0000_0200,
    );
    // TDMR 0's 2M PAMT overlapping its own 1G PAMT.
    let mut t = good();
    t[0].pamt_1g_base = t[0].pamt_2m_base;
    expect(
        check(&t, &cmrs()),
        K::PamtOverlap,
        0,
        Some(0),
        Some(PageSize::Size2M),
        0xC000_0A12_0000_0100,
    );
}

#[test]
fn invalid_reserved_in_tdmr() {
    let mut t = good();
    t[0].reserved_areas[1].size += 1; // not 4 KiB granular
    expect(
        check(&t, &cmrs()),
        K::InvalidReservedInTdmr,
        0,
        Some(1),
        None,
        0xC000_0A20_0000_0100,
    );
    let mut t = good();
    t[1].reserved_areas[1].size = 0x2000_1000; // past the TDMR end
    expect(
        check(&t, &cmrs()),
        K::InvalidReservedInTdmr,
        1,
        Some(1),
        None,
        0xC000_0A20_0000_0101,
    );
}

#[test]
fn non_ordered_reserved_in_tdmr() {
    let mut t = good();
    t[1].reserved_areas.swap(0, 1);
    expect(
        check(&t, &cmrs()),
        K::NonOrderedReservedInTdmr,
        1,
        Some(1),
        None,
        0xC000_0A21_0000_0101,
    );
    // A used slot after a null slot: reported at the null slot.
    let mut t = good();
    t[1].reserved_areas[3] = t[1].reserved_areas[1];
    t[1].reserved_areas[1] = TdmrReservedArea::default();
    expect(
        check(&t, &cmrs()),
        K::NonOrderedReservedInTdmr,
        1,
        Some(2),
        None,
        0xC000_0A21_0000_0201,
    );
}

#[test]
fn display_names_the_status() {
    let mut t = good();
    t[1].tdmr_base = 0x4000_0000;
    let e = check(&t, &cmrs()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "TDX_NON_ORDERED_TDMR: TDMR 1 (status 0xc0000a0100000001)"
    );
}

#[test]
fn cmr_containment_follows_the_module() {
    use tdx_memory::tdmr::area_in_cmrs;
    let c = |b: u64, s: u64| CmrInfoEntry {
        cmr_base: b,
        cmr_size: s,
    };
    const G: u64 = 1 << 30;
    // Adjacent CMRs consecutive in the array (null entries skipped) act as one.
    let chained = [c(G, G), c(0, 0), c(2 * G, G)];
    assert!(area_in_cmrs(&chained, G, 3 * G));
    // Adjacent but not consecutive in array order: not merged.
    let unordered = [c(2 * G, G), c(G, G)];
    assert!(!area_in_cmrs(&unordered, G, 3 * G));
    assert!(area_in_cmrs(&unordered, G, 2 * G));
    // Only the first 32 entries exist for the module.
    let mut many = vec![c(0, 0); 32];
    many.push(c(G, G));
    assert!(!area_in_cmrs(&many, G, 2 * G));
    // Wrapping CMR end: no panic, not contained.
    assert!(!area_in_cmrs(
        &[c(u64::MAX - 0xFFF, 0x2000)],
        u64::MAX - 0xFFF,
        u64::MAX
    ));
}
