// Random SEAMCALL/TDCALL sequences against the emulated module, shared by
// tests/seamcall_stress.rs (fixed-seed PRNG) and fuzz/fuzz_targets/seamcall_sequences.rs
// (libFuzzer input), which both `include!` this file. Uses public APIs only.
//
// Each step is a raw SEAMCALL with operands from a pool of real pages and edge values, a
// driver-level TD operation, or a scripted guest TDCALL. After every step the module's
// invariants must hold; at the end every TD is torn down and reclaimed by a raw sweep, and
// every page handed out must be PT_NDA again and every guest HKID FREE.

use std::collections::BTreeSet;
use std::sync::Arc;

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::gpa::Gpa;
use tdx_abi::phys::Hpa;
use tdx_abi::tdh;
use tdx_host::driver::module::{LogicalCpu, PlatformDesc, RetryPolicy};
use tdx_host::driver::{TdBuilder, TdxModule};
use tdx_host::emulated::{EmulatedModule, KotState, LogicalProcessor, PamtPageType, PlatformConfig};

/// Upper bound of steps per sequence.
pub const MAX_STEPS: usize = 256;

/// The source of choices (fuzz bytes or a PRNG).
pub trait Choices {
    /// The next byte, or `None` when the input is exhausted.
    fn next_u8(&mut self) -> Option<u8>;
}

/// Choices from a byte slice (fuzz input).
pub struct Bytes<'a>(pub &'a [u8]);

impl Choices for Bytes<'_> {
    fn next_u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// Choices from a xorshift PRNG, for a bounded number of bytes.
pub struct Prng {
    /// State.
    pub state: u64,
    /// Bytes left.
    pub left: usize,
}

impl Choices for Prng {
    fn next_u8(&mut self) -> Option<u8> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Some((self.state >> 24) as u8)
    }
}

const LEAVES: &[u64] = &[
    0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 28, 29, 30,
    38, 39, 40, 41, 43, 0x1_0003, 0xFFFF, 1 << 24,
];

const FIRST_HKID: u16 = 32;
const NUM_HKIDS: u16 = 16;

fn platform() -> (Arc<EmulatedModule>, TdxModule<LogicalProcessor, Arc<EmulatedModule>>) {
    let m = EmulatedModule::new(PlatformConfig {
        memory_size: 64 << 20,
        num_packages: 2,
        lps_per_package: 1,
        first_tdx_hkid: FIRST_HKID,
        num_tdx_hkids: NUM_HKIDS,
        ..PlatformConfig::default()
    })
    .expect("platform");
    let lps = (0..m.num_lps())
        .map(|i| LogicalCpu {
            seamcall: m.lp(i).expect("lp"),
            package: m.package_of(i),
        })
        .collect();
    let desc = PlatformDesc {
        usable_ranges: m
            .physical_memory()
            .cmrs()
            .iter()
            .map(|&(b, s)| (b, b + s))
            .collect(),
        first_tdx_hkid: FIRST_HKID,
        num_tdx_hkids: NUM_HKIDS,
        hkid_shift: m.hkid_shift(),
    };
    let module = TdxModule::init(lps, m.clone(), &desc, RetryPolicy::default()).expect("bring-up");
    (m, module)
}

/// Runs one sequence; returns a description of the first broken rule.
pub fn run_sequence(c: &mut dyn Choices) -> Result<usize, String> {
    let (m, module) = platform();
    let lps: Vec<LogicalProcessor> = (0..m.num_lps()).map(|i| m.lp(i).expect("lp")).collect();
    let frames: Vec<u64> = (0..16)
        .map(|_| module.frames().allocate().expect("frame"))
        .collect();
    let mut handed_out: BTreeSet<u64> = frames.iter().copied().collect();
    let mut tds = Vec::new();
    let mut steps = 0;
    while steps < MAX_STEPS {
        let Some(op) = c.next_u8() else { break };
        steps += 1;
        let mut pool: Vec<u64> = frames.clone();
        for td in &tds {
            let td: &tdx_host::driver::Td<'_, LogicalProcessor, Arc<EmulatedModule>> = td;
            pool.push(td.tdr());
            pool.extend(td.owned_pages());
        }
        pool.extend([0, 1, 0x1000, 0x20_0001, 33, 34, 1 << 47, u64::MAX]);
        let pick = |c: &mut dyn Choices| pool[c.next_u8().unwrap_or(0) as usize % pool.len()];
        match op % 10 {
            0..=4 => {
                let leaf = LEAVES[c.next_u8().unwrap_or(0) as usize % LEAVES.len()];
                let lp = &lps[c.next_u8().unwrap_or(0) as usize % lps.len()];
                let mut r = Regs::with_leaf(leaf);
                r.rcx = pick(c);
                r.rdx = pick(c);
                r.r8 = pick(c);
                r.r9 = pick(c);
                let _ = lp.seamcall(&mut r);
            }
            5 => {
                if tds.len() < 2 {
                    if let Ok(td) = TdBuilder::new(&module).build() {
                        handed_out.insert(td.tdr());
                        tds.push(td);
                    }
                }
            }
            6 => {
                if let Some(td) = tds.get(c.next_u8().unwrap_or(0) as usize % tds.len().max(1)) {
                    let _ = td.create_vcpu(u32::from(c.next_u8().unwrap_or(0)) % m.num_lps(), 7);
                }
            }
            7 => {
                if let Some(td) = tds.get(c.next_u8().unwrap_or(0) as usize % tds.len().max(1)) {
                    let gpa = Gpa(u64::from(c.next_u8().unwrap_or(0)) << 12);
                    let page = [c.next_u8().unwrap_or(0); 4096];
                    let _ = td.add_page(gpa, &page, op & 0x10 != 0);
                }
            }
            8 => {
                if let Some(td) = tds.get(c.next_u8().unwrap_or(0) as usize % tds.len().max(1)) {
                    if op & 0x10 != 0 {
                        let _ = td.finalize();
                    } else {
                        let gpa = Gpa(0x40_0000 + (u64::from(c.next_u8().unwrap_or(0)) << 12));
                        let _ = td.aug_page(0, gpa, 0);
                    }
                }
            }
            _ => {
                let tdvpr = pick(c);
                let v = m.scripted_vcpu(Hpa(tdvpr));
                let mut r = Regs::with_leaf(u64::from(c.next_u8().unwrap_or(0) % 9));
                r.rcx = pick(c);
                r.rdx = pick(c);
                let _ = v.tdcall(&mut r);
            }
        }
        for td in &tds {
            handed_out.extend(td.owned_pages());
        }
        m.check_invariants()
            .map_err(|e| format!("step {steps} (op {op}): invariant broken: {e}"))?;
    }
    // Teardown: the driver first, then a raw sweep for whatever random calls built.
    for td in &tds {
        let _ = td.teardown();
    }
    for _round in 0..2 {
        let typed = |t: PamtPageType| -> Vec<u64> {
            handed_out
                .iter()
                .copied()
                .filter(|&p| m.page_type(p) == Some(t))
                .collect()
        };
        for tdvpr in typed(PamtPageType::PT_TDVPR) {
            for lp in &lps {
                let _ = tdh::tdh_vp_flush(lp, Hpa(tdvpr));
            }
        }
        for tdr in typed(PamtPageType::PT_TDR) {
            let _ = tdh::tdh_mng_vpflushdone(&lps[0], Hpa(tdr));
            for lp in &lps {
                for resume in [false, true, true, true] {
                    if let Ok(tdh::CacheWbOutcome::Done(_)) = tdh::tdh_phymem_cache_wb(lp, resume) {
                        break;
                    }
                }
            }
            let _ = tdh::tdh_mng_key_freeid(&lps[0], Hpa(tdr));
        }
        for t in [
            PamtPageType::PT_REG,
            PamtPageType::PT_EPT,
            PamtPageType::PT_TDCX,
            PamtPageType::PT_TDVPR,
            PamtPageType::PT_TDR,
        ] {
            for p in typed(t) {
                let _ = tdh::tdh_phymem_page_reclaim(&lps[0], Hpa(p));
            }
        }
    }
    m.check_invariants()
        .map_err(|e| format!("after teardown: invariant broken: {e}"))?;
    for &p in &handed_out {
        let t = m.page_type(p);
        if t != Some(PamtPageType::PT_NDA) {
            return Err(format!("page {p:#x} leaked after teardown: {t:?}"));
        }
    }
    for h in FIRST_HKID + 1..FIRST_HKID + NUM_HKIDS {
        if m.hkid_state(h) != Some(KotState::FREE) {
            return Err(format!("HKID {h} not free after teardown: {:?}", m.hkid_state(h)));
        }
    }
    drop(tds);
    Ok(steps)
}
