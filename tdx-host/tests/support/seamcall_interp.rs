// Shared SEAMCALL-sequence interpreter: used by `tests/seamcall_stress.rs` (through
// `mod support;`) and by `fuzz/fuzz_targets/seamcall_sequences.rs` (through `include!`).
//
// It brings a small emulated platform up through the host driver, hands out a fixed pool of
// pages, and interprets a byte stream as a bounded sequence of host SEAMCALLs whose operands
// point at real objects (pool pages, GPA+level pairs, HKIDs) or are raw values, issued on
// random LPs. After every step the emulator's invariant checker must pass; at the end every TD
// is torn down with the architectural sequence (VP.FLUSH, KEY.CONFIG for half-configured TDs,
// VPFLUSHDONE, CACHE.WB per package, KEY.FREEID, RECLAIM with the TDR last) and every pool
// page must be PT_NDA again and every TD HKID FREE.

use std::sync::Arc;

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::status::{StatusCode, TdxStatus};
use tdx_host::driver::emulated_glue::init_driver;
use tdx_host::driver::module::RetryPolicy;
use tdx_host::driver::td::encode_td_params;
use tdx_host::driver::{EmulatedTdxModule, TdConfig};
use tdx_host::emulated::{
    EmulatedModule, KotState, LogicalProcessor, PamtPageType, PlatformConfig,
};

/// A source of input bytes (fuzz data or a PRNG). `None` ends the sequence.
pub trait ByteSource {
    /// The next byte, if any.
    fn byte(&mut self) -> Option<u8>;

    /// The next little-endian u64 (missing bytes read as 0).
    fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for i in 0..8 {
            v |= u64::from(self.byte().unwrap_or(0)) << (8 * i);
        }
        v
    }
}

/// Fuzz input bytes.
pub struct SliceSource<'a>(pub &'a [u8]);

impl ByteSource for SliceSource<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// A fixed-seed SplitMix64 stream, for reproducible stress runs.
pub struct SplitMix(pub u64);

impl ByteSource for SplitMix {
    fn byte(&mut self) -> Option<u8> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Some((z ^ (z >> 31)) as u8)
    }
}

/// First TDX HKID of the platform; the driver reserves it as the global HKID.
pub const FIRST_HKID: u16 = 32;
/// Number of TDX HKIDs.
pub const NUM_HKIDS: u16 = 16;
/// Pages in the harness pool.
pub const POOL_PAGES: usize = 32;

/// Host leaves the menu draws from (never SYS.LP.SHUTDOWN / SYS.SHUTDOWN / SYS.UPDATE, which
/// would end the platform, nor the SYS init leaves the driver already ran).
pub const MENU: &[u16] = &[
    0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 28, 29,
    30, 38, 39, 40, 41, 43,
];

const VP_FLUSH: u16 = 18;
const MNG_VPFLUSHDONE: u16 = 19;
const MNG_KEY_FREEID: u16 = 20;
const MNG_KEY_CONFIG: u16 = 8;
const PHYMEM_CACHE_WB: u16 = 40;
const PHYMEM_PAGE_RECLAIM: u16 = 28;
/// Pool pages most typed page operands are drawn from.
pub const HOT_PAGES: usize = 12;

/// The operand kinds of a leaf's RCX, RDX, R8, R9: P pool page, G GPA+level, H HKID, T
/// TD_PARAMS page, S source page, W pool page with HKID bits, B 0/1, V raw value.
pub fn template(leaf: u16) -> &'static [u8] {
    match leaf {
        0 | 8 | 17 | 18 | 19 | 20 | 24 | 28 | 38 => b"P",
        1 | 4 | 10 => b"PP",
        2 => b"GPPS",
        3 | 6 => b"GPP",
        7 | 12 | 16 | 25 | 29 | 30 | 39 => b"GP",
        9 => b"PH",
        11 | 22 | 26 => b"PV",
        13 | 43 => b"PVVV",
        14 => b"GPV",
        21 => b"PT",
        40 => b"B",
        41 => b"W",
        _ => b"",
    }
}

/// Leaves never issued, even as a "raw" random leaf.
const FORBIDDEN: &[u16] = &[44, 52, 53];

/// The emulated platform, the driver that brought it up, and the harness's page pool.
pub struct Harness {
    /// The emulated module.
    pub m: Arc<EmulatedModule>,
    /// Kept alive for its frame allocator (the pool pages are allocated from it).
    pub module: EmulatedTdxModule,
    /// Every logical processor.
    pub lps: Vec<LogicalProcessor>,
    /// The page pool (TDR/TDCX/TDVPR/SEPT/data candidates).
    pub pool: Vec<u64>,
    /// A page holding a valid TD_PARAMS (never handed out as an object page).
    pub td_params: u64,
    /// A page with source contents for PAGE.ADD (never handed out as an object page).
    pub source: u64,
    /// Pages outside the pool that an operand named while they were PT_NDA.
    pub touched: std::collections::BTreeSet<u64>,
    /// Steps executed so far.
    pub steps: u64,
    /// Successful calls so far, per leaf.
    pub successes: [u64; 64],
}

impl Harness {
    /// Brings up a 64 MiB platform (1 package × 2 LPs, HKIDs 32..48) through the driver.
    pub fn new() -> Harness {
        let memory_size = 64 << 20;
        let m = EmulatedModule::new(PlatformConfig {
            memory_size,
            cmrs: vec![(1 << 20, memory_size - (1 << 20))],
            num_packages: 1,
            lps_per_package: 2,
            first_tdx_hkid: FIRST_HKID,
            num_tdx_hkids: NUM_HKIDS,
            report_mac_key: [7; 32],
        })
        .expect("emulated platform");
        let lps: Vec<LogicalProcessor> = (0..m.num_lps()).map(|i| m.lp(i).unwrap()).collect();
        let module = init_driver(&m, FIRST_HKID, NUM_HKIDS, RetryPolicy::default())
            .expect("driver bring-up");
        let (pool, td_params, source) = {
            let mut frames = module.frames();
            let pool: Vec<u64> = (0..POOL_PAGES)
                .map(|_| frames.allocate().expect("pool page"))
                .collect();
            (pool, frames.allocate().unwrap(), frames.allocate().unwrap())
        };
        let h = Harness {
            m,
            module,
            lps,
            pool,
            td_params,
            source,
            touched: Default::default(),
            steps: 0,
            successes: [0; 64],
        };
        h.write_fixed_pages();
        h
    }

    /// One operand: a pool page, a GPA with a level, the TD_PARAMS/source page, an HKID, a
    /// pool page with HKID bits, a small integer or a raw 64-bit value.
    fn operand(&self, src: &mut dyn ByteSource) -> u64 {
        let kind = src.byte().unwrap_or(0);
        let b = src.byte().unwrap_or(0);
        match kind % 10 {
            0..=2 => self.pool[usize::from(b) % self.pool.len()],
            3 | 4 => {
                // GPA in a small window (4 KiB steps, 2 MiB and 1 GiB strides), level 0..2.
                let c = src.byte().unwrap_or(0);
                let gpa = (u64::from(b % 8) << 12)
                    | (u64::from(c % 4) << 21)
                    | (u64::from((c >> 2) % 2) << 30);
                gpa | u64::from((c >> 3) % 3)
            }
            5 => {
                if b % 2 == 0 {
                    self.td_params
                } else {
                    self.source
                }
            }
            6 => u64::from(FIRST_HKID) + u64::from(b % (NUM_HKIDS as u8 + 1)),
            7 => {
                let page = self.pool[usize::from(b) % self.pool.len()];
                let hkid = u64::from(FIRST_HKID) + u64::from(src.byte().unwrap_or(0) % 16);
                page | (hkid << self.m.hkid_shift())
            }
            8 => u64::from(b),
            _ => src.u64(),
        }
    }

    /// Issues one SEAMCALL and checks the invariants; panics (a finding) if they break.
    pub fn call(&mut self, lp: usize, regs: &mut Regs) -> TdxStatus {
        let leaf = regs.rax & 0xFFFF;
        let before = *regs;
        let pa_mask = ((1u64 << self.m.hkid_shift()) - 1) & !0xFFF;
        for v in [regs.rcx, regs.rdx, regs.r8, regs.r9] {
            let pa = v & pa_mask;
            if self.m.page_type(pa) == Some(PamtPageType::PT_NDA) && !self.pool.contains(&pa) {
                self.touched.insert(pa);
            }
        }
        let s = self.lps[lp % self.lps.len()].seamcall(regs);
        self.steps += 1;
        if std::env::var_os("SEAMCALL_TRACE").is_some() {
            eprintln!(
                "#{} lp{} leaf {leaf} rcx {:#x} rdx {:#x} r8 {:#x} r9 {:#x} -> {s}",
                self.steps,
                lp % self.lps.len(),
                before.rcx,
                before.rdx,
                before.r8,
                before.r9
            );
        }
        if s.is_success() && leaf < 64 {
            self.successes[leaf as usize] += 1;
        }
        if let Err(e) = self.m.check_invariants() {
            panic!(
                "invariant broken after step {} (LP {lp}, input {before:x?}, status {s}): {e:?}",
                self.steps
            );
        }
        s
    }

    /// One operand of kind `k` (a [`template`] letter): three times in four the typed object,
    /// else any [`Harness::operand`].
    fn typed(&self, k: u8, src: &mut dyn ByteSource) -> u64 {
        let b = src.byte().unwrap_or(0);
        if b % 4 == 3 {
            return self.operand(src);
        }
        let c = src.byte().unwrap_or(0);
        match k {
            // A pool page, mostly from a hot subset so that objects meet.
            b'P' => {
                let n = if c % 4 == 0 {
                    self.pool.len()
                } else {
                    HOT_PAGES
                };
                self.pool[usize::from(c >> 2) % n]
            }
            // GPA in a tiny window (4 pages × 2 × 2 MiB × 2 × 1 GiB), level 0..=3.
            b'G' => {
                let gpa = (u64::from(c % 4) << 12)
                    | (u64::from((c >> 2) % 2) << 21)
                    | (u64::from((c >> 3) % 2) << 30);
                gpa | u64::from((c >> 4) % 4)
            }
            b'H' => u64::from(FIRST_HKID) + u64::from(c % NUM_HKIDS as u8),
            b'T' => self.td_params,
            b'S' => self.source,
            b'W' => {
                let page = self.pool[usize::from(c) % HOT_PAGES];
                let hkid = u64::from(FIRST_HKID) + u64::from(src.byte().unwrap_or(0) % 16);
                page | (hkid << self.m.hkid_shift())
            }
            b'B' => u64::from(c % 2),
            _ => src.u64(),
        }
    }

    fn nda_page(&self, skip: u8) -> Option<u64> {
        let nda: Vec<u64> = self
            .pool
            .iter()
            .copied()
            .filter(|&p| self.m.page_type(p) == Some(PamtPageType::PT_NDA))
            .collect();
        (!nda.is_empty()).then(|| nda[usize::from(skip) % nda.len()])
    }

    fn call4(&mut self, lp: usize, leaf: u16, rcx: u64, rdx: u64, r8: u64, r9: u64) -> TdxStatus {
        let mut regs = Regs::with_leaf(u64::from(leaf));
        [regs.rcx, regs.rdx, regs.r8, regs.r9] = [rcx, rdx, r8, r9];
        self.call(lp, &mut regs)
    }

    /// A short well-formed sequence on an existing TD (chosen with the introspection API), so
    /// that random steps start from deep states: finish building its TDCS, add a vCPU, or map
    /// a GPA (SEPT levels 3..1, then PAGE.ADD or AUG at level 0). Each call is checked.
    fn macro_step(&mut self, sel: u8, lp: usize, src: &mut dyn ByteSource) {
        let tdrs = self.pages_of(PamtPageType::PT_TDR);
        let pick = src.byte().unwrap_or(0);
        let Some(&tdr) = tdrs.get(usize::from(pick) % tdrs.len().max(1)) else {
            return;
        };
        match sel % 3 {
            0 => {
                self.call4(lp, MNG_KEY_CONFIG, tdr, 0, 0, 0);
                let n = self.module.info().tdcs_pages();
                for i in 0..n {
                    let Some(p) = self.nda_page(pick.wrapping_add(i as u8)) else {
                        return;
                    };
                    if !self.call4(lp, 1, p, tdr, 0, 0).is_success() {
                        break;
                    }
                }
                let params = self.td_params;
                self.call4(lp, 21, tdr, params, 0, 0);
            }
            1 => {
                let Some(tdvpr) = self.nda_page(pick) else {
                    return;
                };
                if !self.call4(lp, 10, tdvpr, tdr, 0, 0).is_success() {
                    return;
                }
                for i in 1..self.module.info().tdvps_pages() {
                    let Some(p) = self.nda_page(pick.wrapping_add(i as u8)) else {
                        return;
                    };
                    self.call4(lp, 4, p, tdvpr, 0, 0);
                }
                self.call4(lp, 22, tdvpr, 0x1234, 0, 0);
            }
            _ => {
                let c = src.byte().unwrap_or(0);
                let gpa = (u64::from(c % 4) << 12) | (u64::from((c >> 2) % 2) << 21);
                for level in (1..=3u64).rev() {
                    let mask = !((1u64 << (12 + 9 * level)) - 1);
                    if let Some(p) = self.nda_page(c.wrapping_add(level as u8)) {
                        self.call4(lp, 3, (gpa & mask) | level, tdr, p, 0);
                    }
                }
                if let Some(p) = self.nda_page(c) {
                    let leaf = if c & 0x80 == 0 { 2 } else { 6 };
                    let source = self.source;
                    self.call4(lp, leaf, gpa, tdr, p, source);
                    if leaf == 2 {
                        for chunk in 0..16 {
                            self.call4(lp, 16, gpa + chunk * 256, tdr, 0, 0);
                        }
                    }
                }
            }
        }
    }

    /// Interprets one step from `src`; returns false when the input is exhausted.
    pub fn step(&mut self, src: &mut dyn ByteSource) -> bool {
        let (Some(sel), Some(lp)) = (src.byte(), src.byte()) else {
            return false;
        };
        if (200..240).contains(&sel) {
            self.macro_step(sel, usize::from(lp), src);
            return true;
        }
        let leaf = if sel < 240 {
            MENU[usize::from(sel) % MENU.len()]
        } else {
            // A raw leaf number with a random version: the dispatcher's checks.
            let raw = u16::from(src.byte().unwrap_or(0) % 72);
            if FORBIDDEN.contains(&raw) {
                return true;
            }
            raw
        };
        let version = if sel % 16 == 15 { 1u64 << 16 } else { 0 };
        let mut regs = Regs::with_leaf(u64::from(leaf) | version);
        let t = template(leaf);
        let mut ops = [0u64; 4];
        for (i, op) in ops.iter_mut().enumerate() {
            *op = match t.get(i) {
                Some(&k) => self.typed(k, src),
                None => self.operand(src),
            };
        }
        [regs.rcx, regs.rdx, regs.r8, regs.r9] = ops;
        self.call(usize::from(lp), &mut regs);
        true
    }
}

impl Harness {
    fn leaf_call(&mut self, lp: usize, leaf: u16, rcx: u64) -> TdxStatus {
        let mut regs = Regs::with_leaf(u64::from(leaf));
        regs.rcx = rcx;
        self.call(lp, &mut regs)
    }

    /// Calls a leaf, retrying (bounded) while it reports BUSY or INTERRUPTED_RESUMABLE.
    fn retry(&mut self, lp: usize, leaf: u16, rcx: u64) -> TdxStatus {
        let mut s = self.leaf_call(lp, leaf, rcx);
        for _ in 0..16 {
            let code = s.code();
            if code != StatusCode::OPERAND_BUSY && code != StatusCode::INTERRUPTED_RESUMABLE {
                break;
            }
            let resume = u64::from(leaf == PHYMEM_CACHE_WB);
            s = self.leaf_call(lp, leaf, rcx | resume);
        }
        s
    }

    /// Every page the harness handed out: the pool, the TD_PARAMS and the source page (the
    /// menu may use any of them as an object page), and any other page an operand named while
    /// it was PT_NDA (a raw GPA value is also a valid PA).
    pub fn handed_out(&self) -> Vec<u64> {
        let mut v = self.pool.clone();
        v.extend([self.td_params, self.source]);
        let fixed = [self.td_params, self.source];
        v.extend(self.touched.iter().filter(|p| !fixed.contains(p)));
        v
    }

    fn pages_of(&self, t: PamtPageType) -> Vec<u64> {
        self.handed_out()
            .into_iter()
            .filter(|&p| self.m.page_type(p) == Some(t))
            .collect()
    }

    /// Tears every TD down and checks that nothing leaked: every pool page PT_NDA, every TD
    /// HKID FREE. Panics (a finding) otherwise.
    pub fn teardown(&mut self) {
        let nlps = self.lps.len();
        for _pass in 0..4 {
            // vCPUs: VP.FLUSH must run on the associated LP; try each.
            for tdvpr in self.pages_of(PamtPageType::PT_TDVPR) {
                for lp in 0..nlps {
                    if self.retry(lp, VP_FLUSH, tdvpr).is_success() {
                        break;
                    }
                }
            }
            let tdrs = self.pages_of(PamtPageType::PT_TDR);
            for &tdr in &tdrs {
                // A TD whose key was never configured is configured first (no-op otherwise).
                for lp in 0..nlps {
                    self.retry(lp, MNG_KEY_CONFIG, tdr);
                }
                self.retry(0, MNG_VPFLUSHDONE, tdr);
            }
            if !tdrs.is_empty() {
                for lp in 0..nlps {
                    self.retry(lp, PHYMEM_CACHE_WB, 0);
                }
            }
            for &tdr in &tdrs {
                self.retry(0, MNG_KEY_FREEID, tdr);
            }
            // Children first (any order among them), then the TDRs.
            for p in self.handed_out() {
                match self.m.page_type(p) {
                    Some(PamtPageType::PT_NDA) | Some(PamtPageType::PT_TDR) | None => {}
                    Some(_) => {
                        self.retry(0, PHYMEM_PAGE_RECLAIM, p);
                    }
                }
            }
            for tdr in self.pages_of(PamtPageType::PT_TDR) {
                self.retry(0, PHYMEM_PAGE_RECLAIM, tdr);
            }
            if self
                .handed_out()
                .iter()
                .all(|&p| self.m.page_type(p) == Some(PamtPageType::PT_NDA))
            {
                break;
            }
        }
        for p in self.handed_out() {
            assert_eq!(
                self.m.page_type(p),
                Some(PamtPageType::PT_NDA),
                "pool page {p:#x} leaked after teardown (step {})",
                self.steps
            );
        }
        for h in FIRST_HKID + 1..FIRST_HKID + NUM_HKIDS {
            assert_eq!(
                self.m.hkid_state(h),
                Some(KotState::FREE),
                "HKID {h} leaked after teardown (step {})",
                self.steps
            );
        }
        self.m
            .check_invariants()
            .expect("invariants after teardown");
        self.write_fixed_pages();
    }

    /// (Re)writes the TD_PARAMS and source pages (a reclaimed page may hold anything).
    fn write_fixed_pages(&self) {
        let params = encode_td_params(&TdConfig::default(), &self.module).expect("TD_PARAMS");
        let mem = self.m.physical_memory();
        mem.write(self.td_params, &params).unwrap();
        let src: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        mem.write(self.source, &src).unwrap();
    }

    /// Runs at most `max_steps` steps from `src`, then tears everything down.
    pub fn run(&mut self, src: &mut dyn ByteSource, max_steps: usize) {
        for _ in 0..max_steps {
            if !self.step(src) {
                break;
            }
        }
        self.teardown();
    }
}
