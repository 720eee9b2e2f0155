//! Property tests of the TDMR planner and validator over random memory maps.
//!
//! Every property is checked with code written independently of the planner: interval
//! arithmetic on the input map, the PAMT formula typed from the fact sheet, and a
//! whole-plan legality check written from the `TDH.SYS.CONFIG` rules (not its step order).

use proptest::prelude::*;
use tdx_abi::tdmr::{CmrInfoEntry, TdmrInfo};
use tdx_memory::tdmr::{plan_tdmrs, validate, TdmrConstraints, TdmrPlan, UsableRegion};

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
const MIB_PAGES: u64 = 256;
const GIB_PAGES: u64 = 262_144;

type Iv = (u64, u64);

/// Sorts and merges touching/overlapping intervals, dropping empty ones.
fn merge(mut v: Vec<Iv>) -> Vec<Iv> {
    v.retain(|i| i.0 < i.1);
    v.sort_unstable();
    let mut out: Vec<Iv> = Vec::new();
    for i in v {
        match out.last_mut() {
            Some(l) if i.0 <= l.1 => l.1 = l.1.max(i.1),
            _ => out.push(i),
        }
    }
    out
}

fn intersect(a: Iv, set: &[Iv]) -> Vec<Iv> {
    set.iter()
        .map(|s| (s.0.max(a.0), s.1.min(a.1)))
        .filter(|i| i.0 < i.1)
        .collect()
}

fn subtract(a: Iv, set: &[Iv]) -> Vec<Iv> {
    let mut out = Vec::new();
    let mut cur = a.0;
    for s in merge(set.to_vec()) {
        if s.1 <= cur || s.0 >= a.1 {
            continue;
        }
        if s.0 > cur {
            out.push((cur, s.0));
        }
        cur = cur.max(s.1);
    }
    if cur < a.1 {
        out.push((cur, a.1));
    }
    out
}

fn inside_one(a: Iv, set: &[Iv]) -> bool {
    set.iter().any(|s| s.0 <= a.0 && a.1 <= s.1)
}

/// PAMT bytes for one page size: entries x entry size, rounded up to 4 KiB.
fn formula(tdmr_size: u64, page: u64, entry: u16) -> u64 {
    ((tdmr_size / page) * u64::from(entry)).div_ceil(PAGE) * PAGE
}

#[derive(Clone, Debug)]
struct Map {
    regions: Vec<UsableRegion>,
    cmrs: Vec<CmrInfoEntry>,
    constraints: TdmrConstraints,
}

impl Map {
    fn usable(&self) -> Vec<Iv> {
        merge(self.regions.iter().map(|r| (r.start, r.end)).collect())
    }
    fn cmr_ivs(&self) -> Vec<Iv> {
        // CMRs are generated sorted, so the module's chaining = merging adjacent ones.
        merge(
            self.cmrs
                .iter()
                .map(|c| (c.cmr_base, c.cmr_base + c.cmr_size))
                .collect(),
        )
    }
}

fn pages(choice: impl Strategy<Value = u64>) -> impl Strategy<Value = u64> {
    choice
}

fn gap_pages() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => Just(0u64),
        2 => pages(1..1024u64),
        3 => (1..4096u64).prop_map(|m| m * MIB_PAGES),
        2 => (1..8u64).prop_map(|g| g * GIB_PAGES),
    ]
}

fn len_pages() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => 1..1024u64,
        3 => (1..4096u64).prop_map(|m| m * MIB_PAGES),
        2 => (1..6u64).prop_map(|g| g * GIB_PAGES),
    ]
}

fn arb_map() -> impl Strategy<Value = Map> {
    let parts = prop::collection::vec(
        (
            gap_pages(),
            len_pages(),
            0u32..3,
            any::<bool>(),
            any::<bool>(),
        ),
        1..10,
    );
    let constraints =
        (1u16..=8, 1u16..=16, 8u16..=32, 8u16..=32, 8u16..=32).prop_map(|(t, r, a, b, c)| {
            TdmrConstraints {
                max_tdmrs: t,
                max_reserved_per_tdmr: r,
                pamt_entry_size_4k: a,
                pamt_entry_size_2m: b,
                pamt_entry_size_1g: c,
                ..Default::default()
            }
        });
    (parts, constraints, any::<bool>()).prop_flat_map(|(parts, constraints, slack)| {
        let mut regions = Vec::new();
        let mut gaps = Vec::new();
        let mut cursor = 0u64;
        for &(gap, len, node, _, _) in &parts {
            let start = cursor + gap * PAGE;
            let end = start + len * PAGE;
            regions.push(UsableRegion { start, end, node });
            gaps.push(gap * PAGE);
            cursor = end;
        }
        // CMRs: consecutive regions grouped; each CMR may extend halfway into the gaps.
        let mut cmrs: Vec<CmrInfoEntry> = Vec::new();
        let mut group_start = 0usize;
        for i in 0..parts.len() {
            let last = i + 1 == parts.len() || parts[i + 1].3;
            if !last {
                continue;
            }
            let pre = if slack {
                (gaps[group_start] / 2) & !(PAGE - 1)
            } else {
                0
            };
            let post = if slack && i + 1 < parts.len() {
                (gaps[i + 1] / 2) & !(PAGE - 1)
            } else {
                0
            };
            let base = regions[group_start].start - pre;
            let end = regions[i].end + post;
            cmrs.push(CmrInfoEntry {
                cmr_base: base,
                cmr_size: end - base,
            });
            group_start = i + 1;
        }
        let map = Map {
            regions,
            cmrs,
            constraints,
        };
        Just(map.regions.clone())
            .prop_shuffle()
            .prop_map(move |shuffled| Map {
                regions: shuffled,
                ..map.clone()
            })
    })
}

/// Checks every structural property of a successful plan.
fn check_plan(map: &Map, plan: &TdmrPlan) -> Result<(), TestCaseError> {
    let c = &map.constraints;
    let usable = map.usable();
    let cmrs = map.cmr_ivs();
    let tdmrs = &plan.tdmrs;

    // TDMRs: 1..=max, 1 GiB aligned, non-empty, sorted, non-overlapping.
    prop_assert!(!tdmrs.is_empty() && tdmrs.len() <= usize::from(c.max_tdmrs));
    for (i, t) in tdmrs.iter().enumerate() {
        prop_assert_eq!(t.tdmr_base % GIB, 0);
        prop_assert_eq!(t.tdmr_size % GIB, 0);
        prop_assert!(t.tdmr_size > 0);
        if i > 0 {
            prop_assert!(t.tdmr_base >= tdmrs[i - 1].tdmr_base + tdmrs[i - 1].tdmr_size);
        }
    }
    let tdmr_ivs: Vec<Iv> = tdmrs
        .iter()
        .map(|t| (t.tdmr_base, t.tdmr_base + t.tdmr_size))
        .collect();
    // Every usable byte is in exactly one TDMR (TDMRs are disjoint, so: covered).
    for &u in &usable {
        let covered: u64 = intersect(u, &tdmr_ivs).iter().map(|i| i.1 - i.0).sum();
        prop_assert_eq!(covered, u.1 - u.0, "usable {:x?} not covered", u);
    }

    // PAMTs: formula sizes, one contiguous 4K|2M|1G chunk, inside usable memory and a CMR,
    // pairwise disjoint.
    let mut chunks: Vec<Iv> = Vec::new();
    let mut total = 0u64;
    for t in tdmrs {
        let s4k = formula(t.tdmr_size, 1 << 12, c.pamt_entry_size_4k);
        let s2m = formula(t.tdmr_size, 1 << 21, c.pamt_entry_size_2m);
        let s1g = formula(t.tdmr_size, 1 << 30, c.pamt_entry_size_1g);
        prop_assert_eq!(
            (t.pamt_4k_size, t.pamt_2m_size, t.pamt_1g_size),
            (s4k, s2m, s1g)
        );
        prop_assert_eq!(t.pamt_4k_base % PAGE, 0);
        prop_assert_eq!(t.pamt_2m_base, t.pamt_4k_base + s4k);
        prop_assert_eq!(t.pamt_1g_base, t.pamt_2m_base + s2m);
        let chunk = (t.pamt_4k_base, t.pamt_1g_base + s1g);
        prop_assert!(
            inside_one(chunk, &usable),
            "PAMT {:x?} not in usable memory",
            chunk
        );
        prop_assert!(inside_one(chunk, &cmrs), "PAMT {:x?} not in a CMR", chunk);
        for o in &chunks {
            prop_assert!(chunk.1 <= o.0 || o.1 <= chunk.0, "PAMTs overlap");
        }
        chunks.push(chunk);
        total += s4k + s2m + s1g;
    }
    prop_assert_eq!(plan.pamt_total_bytes, total);

    // Reserved areas: <= max, 4K aligned, sorted, non-overlapping, inside the TDMR, slots
    // after the used ones zero; and the reserved set is exactly (TDMR minus usable memory)
    // plus (TDMR intersected with any PAMT): so every PAMT byte is reserved in every TDMR
    // containing it and no other usable byte is reserved.
    for (i, t) in tdmrs.iter().enumerate() {
        let used = t.used_reserved_areas();
        prop_assert!(used.len() <= usize::from(c.max_reserved_per_tdmr));
        prop_assert!(t.reserved_areas[used.len()..]
            .iter()
            .all(|a| a.offset == 0 && a.size == 0));
        let mut prev_end = 0u64;
        let mut actual = Vec::new();
        for a in used {
            prop_assert_eq!(a.offset % PAGE, 0);
            prop_assert_eq!(a.size % PAGE, 0);
            prop_assert!(a.offset >= prev_end, "reserved areas unsorted/overlapping");
            prev_end = a.offset + a.size;
            prop_assert!(prev_end <= t.tdmr_size);
            actual.push((t.tdmr_base + a.offset, t.tdmr_base + prev_end));
        }
        let mut expected = subtract(tdmr_ivs[i], &usable);
        expected.extend(intersect(tdmr_ivs[i], &chunks));
        prop_assert_eq!(merge(actual), merge(expected), "reserved set of TDMR {}", i);
    }

    // The module accepts it.
    prop_assert_eq!(validate(tdmrs, &map.cmrs, c), Ok(()));
    Ok(())
}

/// Whether a TDMR list is legal for TDH.SYS.CONFIG, written from the rules as a whole
/// (not the module's step order). CMRs are given as merged intervals.
fn independently_legal(tdmrs: &[TdmrInfo], cmrs: &[Iv], c: &TdmrConstraints) -> bool {
    let limit = 1u64 << 52;
    if tdmrs.is_empty() || tdmrs.len() > usize::from(c.max_tdmrs) {
        return false;
    }
    let mut pamts: Vec<Iv> = Vec::new();
    let mut available: Vec<Iv> = Vec::new();
    let mut prev_end = 0u64;
    for (i, t) in tdmrs.iter().enumerate() {
        let Some(end) = t.tdmr_base.checked_add(t.tdmr_size) else {
            return false;
        };
        if t.tdmr_base % GIB != 0 || t.tdmr_size % GIB != 0 || t.tdmr_size == 0 || end > limit {
            return false;
        }
        if i > 0 && t.tdmr_base < prev_end {
            return false;
        }
        prev_end = end;
        let used = t.used_reserved_areas();
        if used.len() > usize::from(c.max_reserved_per_tdmr)
            || t.reserved_areas[used.len()..].iter().any(|a| a.size != 0)
        {
            return false;
        }
        let mut reserved = Vec::new();
        let mut r_end = 0u64;
        for a in used {
            let Some(e) = a.offset.checked_add(a.size) else {
                return false;
            };
            if a.offset % PAGE != 0 || a.size % PAGE != 0 || e > t.tdmr_size || a.offset < r_end {
                return false;
            }
            r_end = e;
            reserved.push((t.tdmr_base + a.offset, t.tdmr_base + e));
        }
        let avail = subtract((t.tdmr_base, end), &reserved);
        if !avail.iter().all(|a| inside_one(*a, cmrs)) {
            return false;
        }
        available.extend(avail);
        for (base, size, page, entry) in [
            (
                t.pamt_4k_base,
                t.pamt_4k_size,
                1u64 << 12,
                c.pamt_entry_size_4k,
            ),
            (
                t.pamt_2m_base,
                t.pamt_2m_size,
                1 << 21,
                c.pamt_entry_size_2m,
            ),
            (
                t.pamt_1g_base,
                t.pamt_1g_size,
                1 << 30,
                c.pamt_entry_size_1g,
            ),
        ] {
            let Some(e) = base.checked_add(size) else {
                return false;
            };
            let required = (t.tdmr_size / page) * u64::from(entry);
            if base % PAGE != 0 || size % PAGE != 0 || e > limit || size < required {
                return false;
            }
            if !inside_one((base, e), cmrs) {
                return false;
            }
            pamts.push((base, e));
        }
    }
    for (k, p) in pamts.iter().enumerate() {
        if pamts[..k].iter().any(|o| p.0 < o.1 && o.0 < p.1) {
            return false;
        }
        if available.iter().any(|a| p.0 < a.1 && a.0 < p.1) {
            return false;
        }
    }
    true
}

#[derive(Clone, Copy, Debug)]
enum Mutation {
    FlipBit(u32),
    Add(u64),
    Sub(u64),
    Zero,
}

fn apply(v: u64, m: Mutation) -> u64 {
    match m {
        Mutation::FlipBit(b) => v ^ (1u64 << b),
        Mutation::Add(k) => v.wrapping_add(k),
        Mutation::Sub(k) => v.wrapping_sub(k),
        Mutation::Zero => 0,
    }
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0u32..64).prop_map(Mutation::FlipBit),
        prop_oneof![
            Just(8u64),
            Just(PAGE),
            Just(2 * PAGE),
            Just(1 << 21),
            Just(GIB)
        ]
        .prop_map(Mutation::Add),
        prop_oneof![Just(PAGE), Just(1 << 21), Just(GIB)].prop_map(Mutation::Sub),
        Just(Mutation::Zero),
    ]
}

/// Field `f` of a TDMR_INFO: 0..8 the header words, 8.. the reserved-area words.
fn field_mut(t: &mut TdmrInfo, f: usize) -> &mut u64 {
    match f {
        0 => &mut t.tdmr_base,
        1 => &mut t.tdmr_size,
        2 => &mut t.pamt_1g_base,
        3 => &mut t.pamt_1g_size,
        4 => &mut t.pamt_2m_base,
        5 => &mut t.pamt_2m_size,
        6 => &mut t.pamt_4k_base,
        7 => &mut t.pamt_4k_size,
        n => {
            let a = &mut t.reserved_areas[(n - 8) / 2 % 16];
            if n % 2 == 0 {
                &mut a.offset
            } else {
                &mut a.size
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// Every successful plan has all the structural properties and passes the validator;
    /// every failure is a limit error (the generated inputs themselves are valid).
    #[test]
    fn plans_are_sound_or_fail_on_a_limit(map in arb_map()) {
        match plan_tdmrs(&map.regions, &map.cmrs, &map.constraints) {
            Ok(plan) => {
                check_plan(&map, &plan)?;
                // Input order does not matter.
                let mut sorted = map.regions.clone();
                sorted.sort_by_key(|r| r.start);
                prop_assert_eq!(plan_tdmrs(&sorted, &map.cmrs, &map.constraints), Ok(plan));
            }
            Err(e) => prop_assert!(e.is_limit(), "unexpected error {e}"),
        }
    }

    /// With generous limits, plans for these maps (whose every region is at least 4 KiB in a
    /// map with at most 9 regions) succeed whenever memory can hold the PAMTs.
    #[test]
    fn generous_limits_only_fail_on_pamt_space(map in arb_map()) {
        let c = TdmrConstraints::default();
        match plan_tdmrs(&map.regions, &map.cmrs, &c) {
            Ok(plan) => check_plan(&Map { constraints: c, ..map }, &plan)?,
            Err(e) => prop_assert!(
                matches!(e, tdx_memory::tdmr::PlanError::PamtAllocationFailed { .. }),
                "unexpected error {e}"
            ),
        }
    }

    /// Corrupting one field of a valid plan: the validator's verdict equals the independent
    /// legality check (so a corruption is rejected unless the result is still legal).
    #[test]
    fn corrupted_plans_are_judged_like_the_rules_say(
        map in arb_map(),
        which in any::<prop::sample::Index>(),
        field in 0usize..40,
        mutation in arb_mutation(),
    ) {
        let c = TdmrConstraints::default();
        let Ok(plan) = plan_tdmrs(&map.regions, &map.cmrs, &c) else {
            return Ok(());
        };
        let cmrs = map.cmr_ivs();
        prop_assert!(independently_legal(&plan.tdmrs, &cmrs, &c));
        let mut tdmrs = plan.tdmrs.clone();
        let i = which.index(tdmrs.len());
        let f = field_mut(&mut tdmrs[i], field);
        *f = apply(*f, mutation);
        let verdict = validate(&tdmrs, &map.cmrs, &c);
        prop_assert_eq!(
            verdict.is_ok(),
            independently_legal(&tdmrs, &cmrs, &c),
            "validator said {:?}", verdict
        );
    }
}
