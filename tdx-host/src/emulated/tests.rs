//! Unit tests of the emulated module, driven by raw SEAMCALLs (register blocks) with values typed
//! from the fact sheet.

use super::*;
use sha2::Digest;
use tdx_abi::gpa::Gpa;
use tdx_abi::measure::MrtdBuilder;

// Leaves (tdx-module-abi.md §2).
const SYS_INIT: u64 = 33;
const SYS_LP_INIT: u64 = 35;
const SYS_RD: u64 = 34;
const SYS_CONFIG: u64 = 45;
const SYS_KEY_CONFIG: u64 = 31;
const SYS_TDMR_INIT: u64 = 36;
const MNG_CREATE: u64 = 9;
const MNG_KEY_CONFIG: u64 = 8;
const MNG_ADDCX: u64 = 1;
const MNG_INIT: u64 = 21;
const MNG_RD: u64 = 11;
const VP_CREATE: u64 = 10;
const VP_ADDCX: u64 = 4;
const VP_INIT: u64 = 22;
const SEPT_ADD: u64 = 3;
const PAGE_ADD: u64 = 2;
const MR_EXTEND: u64 = 16;
const MR_FINALIZE: u64 = 17;
const PAGE_AUG: u64 = 6;
const RANGE_BLOCK: u64 = 7;
const MEM_TRACK: u64 = 38;
const PAGE_REMOVE: u64 = 29;
const SEPT_RD: u64 = 25;
const VP_ENTER: u64 = 0;
const VP_FLUSH: u64 = 18;
const VPFLUSHDONE: u64 = 19;
const CACHE_WB: u64 = 40;
const KEY_FREEID: u64 = 20;
const RECLAIM: u64 = 28;

pub(super) const MIB: u64 = 1 << 20;

/// Calls `leaf` on `lp` with RCX, RDX, R8, R9; returns (RAX, output registers).
pub(super) fn call(
    lp: &LogicalProcessor,
    leaf: u64,
    rcx: u64,
    rdx: u64,
    r8: u64,
    r9: u64,
) -> (u64, Regs) {
    let mut r = Regs {
        rax: leaf,
        rcx,
        rdx,
        r8,
        r9,
        ..Regs::default()
    };
    let s = lp.seamcall(&mut r);
    assert_eq!(s.raw(), r.rax);
    (r.rax, r)
}

/// A bump allocator of 4 KiB frames from 2 MiB.
pub(super) struct Frames(pub u64);
impl Frames {
    pub(super) fn next(&mut self) -> u64 {
        let f = self.0;
        self.0 += 4096;
        f
    }
}

/// Brings the default platform up as Linux does; returns the module. The TDMR is [0, 1 GiB)
/// with reserved areas [0, 1 MiB) (no CMR), the PAMT [200 MiB, +4 MiB+12 KiB) and [256 MiB, 1 GiB).
pub(super) fn bring_up(packages: u32) -> Arc<EmulatedModule> {
    let m = EmulatedModule::new(PlatformConfig {
        num_packages: packages,
        ..PlatformConfig::default()
    })
    .unwrap();
    let lp0 = m.lp(0).unwrap();
    assert_eq!(call(&lp0, SYS_INIT, 0, 0, 0, 0).0, 0);
    for i in 0..m.num_lps() {
        assert_eq!(call(&m.lp(i).unwrap(), SYS_LP_INIT, 0, 0, 0, 0).0, 0);
    }
    // TDMR_INFO at 1 MiB + 4 KiB, the PA array at 1 MiB.
    let pm = m.physical_memory();
    let info = MIB + 4096;
    let pamt = 200 * MIB;
    let mut t = vec![0u8; 320];
    let put =
        |t: &mut Vec<u8>, off: usize, v: u64| t[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut t, 0, 0);
    put(&mut t, 8, 1 << 30);
    put(&mut t, 16, pamt + 4 * MIB + 8192); // 1G
    put(&mut t, 24, 4096);
    put(&mut t, 32, pamt + 4 * MIB); // 2M
    put(&mut t, 40, 8192);
    put(&mut t, 48, pamt); // 4K
    put(&mut t, 56, 4 * MIB);
    for (i, (o, s)) in [(0, MIB), (pamt, 4 * MIB + 12288), (256 * MIB, 768 * MIB)]
        .iter()
        .enumerate()
    {
        put(&mut t, 64 + 16 * i, *o);
        put(&mut t, 72 + 16 * i, *s);
    }
    pm.write(info, &t).unwrap();
    pm.write(MIB, &info.to_le_bytes()).unwrap();
    assert_eq!(call(&lp0, SYS_CONFIG, MIB, 1, 32, 0).0, 0);
    for p in 0..packages {
        let lp = m.lp(p * 2).unwrap();
        assert_eq!(call(&lp, SYS_KEY_CONFIG, 0, 0, 0, 0).0, 0);
    }
    let mut n = 0;
    loop {
        let (s, r) = call(&lp0, SYS_TDMR_INIT, 0, 0, 0, 0);
        assert_eq!(s, 0);
        n += 1;
        if r.rdx >= 1 << 30 {
            break;
        }
        assert!(n < 1000);
    }
    assert_eq!(n, 256, "4 MiB per call over 1 GiB");
    // Once complete: TDX_TDMR_ALREADY_INITIALIZED (success class).
    assert_eq!(
        call(&lp0, SYS_TDMR_INIT, 0, 0, 0, 0).0,
        0x0000_0A03_0000_0000
    );
    m
}

/// A TD built up to a chosen point.
pub(super) struct TestTd {
    pub(super) tdr: u64,
    pub(super) tdcs: Vec<u64>,
    pub(super) tdvpr: u64,
    pub(super) tdvpx: Vec<u64>,
    pub(super) sept: Vec<u64>,
    pub(super) pages: Vec<u64>,
    pub(super) hkid: u64,
}

/// Writes a default TD_PARAMS (GPAW 48, 4-level EPT, 4 vCPUs, 2.5 GHz) at `pa`.
pub(super) fn write_td_params(m: &EmulatedModule, pa: u64, attributes: u64) {
    let mut p = vec![0u8; 1024];
    p[0..8].copy_from_slice(&attributes.to_le_bytes());
    p[8..16].copy_from_slice(&0x3u64.to_le_bytes()); // XFAM x87+SSE
    p[16..18].copy_from_slice(&4u16.to_le_bytes());
    p[24..32].copy_from_slice(&(6u64 | (3 << 3)).to_le_bytes()); // WB, PWL 4
    p[40..42].copy_from_slice(&100u16.to_le_bytes());
    m.physical_memory().write(pa, &p).unwrap();
}

/// Creates, configures and initialises a TD with one initialised vCPU and S-EPT for GPA 0..2M.
pub(super) fn build_td(m: &Arc<EmulatedModule>, f: &mut Frames, hkid: u64) -> TestTd {
    let lp0 = m.lp(0).unwrap();
    let tdr = f.next();
    assert_eq!(call(&lp0, MNG_CREATE, tdr, hkid, 0, 0).0, 0);
    for p in 0..(m.num_lps() / 2) {
        assert_eq!(
            call(&m.lp(p * 2).unwrap(), MNG_KEY_CONFIG, tdr, 0, 0, 0).0,
            0
        );
    }
    let tdcs: Vec<u64> = (0..6).map(|_| f.next()).collect();
    for &c in &tdcs {
        assert_eq!(call(&lp0, MNG_ADDCX, c, tdr, 0, 0).0, 0);
    }
    let params = f.next();
    write_td_params(m, params, 0);
    assert_eq!(call(&lp0, MNG_INIT, tdr, params, 0, 0).0, 0);
    let tdvpr = f.next();
    assert_eq!(call(&lp0, VP_CREATE, tdvpr, tdr, 0, 0).0, 0);
    let tdvpx: Vec<u64> = (0..5).map(|_| f.next()).collect();
    for &c in &tdvpx {
        assert_eq!(call(&lp0, VP_ADDCX, c, tdvpr, 0, 0).0, 0);
    }
    let (s, r) = call(&lp0, VP_INIT, tdvpr, 0x1234, 0, 0);
    assert_eq!(s, 0);
    let _ = r;
    let mut sept = Vec::new();
    for level in [3u64, 2, 1] {
        let p = f.next();
        assert_eq!(
            call(&lp0, SEPT_ADD, level, tdr, p, 0).0,
            0,
            "SEPT.ADD level {level}"
        );
        sept.push(p);
    }
    TestTd {
        tdr,
        tdcs,
        tdvpr,
        tdvpx,
        sept,
        pages: Vec::new(),
        hkid,
    }
}

/// Tears a TD down as Linux does and reclaims every page, children first.
pub(super) fn teardown(m: &Arc<EmulatedModule>, td: &TestTd) {
    let lp0 = m.lp(0).unwrap();
    assert_eq!(call(&lp0, VP_FLUSH, td.tdvpr, 0, 0, 0).0, 0);
    assert_eq!(call(&lp0, VPFLUSHDONE, td.tdr, 0, 0, 0).0, 0);
    assert_eq!(m.hkid_state(td.hkid as u16), Some(KotState::Flushed));
    for p in 0..(m.num_lps() / 2) {
        assert_eq!(call(&m.lp(p * 2).unwrap(), CACHE_WB, 0, 0, 0, 0).0, 0);
    }
    assert_eq!(call(&lp0, KEY_FREEID, td.tdr, 0, 0, 0).0, 0);
    assert_eq!(m.hkid_state(td.hkid as u16), Some(KotState::Free));
    let children = td
        .pages
        .iter()
        .chain(&td.sept)
        .chain(&td.tdvpx)
        .chain(std::iter::once(&td.tdvpr))
        .chain(&td.tdcs);
    for &p in children {
        let (s, r) = call(&lp0, RECLAIM, p, 0, 0, 0);
        assert_eq!(s, 0, "reclaim {p:#x}");
        assert_eq!(r.rdx, td.tdr);
        assert_eq!(m.page_type(p), Some(PamtPageType::Nda));
    }
    let (s, r) = call(&lp0, RECLAIM, td.tdr, 0, 0, 0);
    assert_eq!(s, 0);
    assert_eq!(r.rcx, 4, "PT_TDR");
    assert_eq!(m.page_type(td.tdr), Some(PamtPageType::Nda));
    m.check_invariants().unwrap();
}

fn mng_rd(lp: &LogicalProcessor, tdr: u64, field: u64) -> u64 {
    let (s, r) = call(lp, MNG_RD, tdr, field, 0, 0);
    assert_eq!(s, 0, "MNG.RD {field:#x}");
    r.r8
}

#[test]
fn lifecycle_measured_build_and_teardown() {
    let m = bring_up(1);
    let lp0 = m.lp(0).unwrap();
    // SYS.RD: MAX_TDMRS and the "first field" iteration.
    let (s, r) = call(&lp0, SYS_RD, 0, 0x9100_0001_0000_0008, 0, 0);
    assert_eq!((s, r.r8), (0, 64));
    let (s, r) = call(&lp0, SYS_RD, 0, u64::MAX, 0, 0);
    assert_eq!(s, 0x0000_0C0B_0000_0000);
    assert_ne!(r.rdx, u64::MAX);
    // TDX_FEATURES0 has NO_RBP_MOD (bit 18).
    let (_, r) = call(&lp0, SYS_RD, 0, 0x0A00_0003_0000_0008, 0, 0);
    assert_ne!(r.r8 & (1 << 18), 0);

    let mut f = Frames(2 * MIB);
    let mut td = build_td(&m, &mut f, 33);
    assert_eq!(m.hkid_state(33), Some(KotState::Assigned));
    assert_eq!(m.page_type(td.tdr), Some(PamtPageType::Tdr));
    assert_eq!(m.page_type(td.tdcs[0]), Some(PamtPageType::Tdcx));
    assert_eq!(m.page_type(td.tdvpr), Some(PamtPageType::Tdvpr));
    assert_eq!(m.page_type(td.sept[0]), Some(PamtPageType::Ept));

    // Two measured pages at GPA 0x1000 and 0x2000.
    let mut expect = MrtdBuilder::new();
    for (i, gpa) in [0x1000u64, 0x2000].iter().enumerate() {
        let src = f.next();
        let data: Vec<u8> = (0..4096)
            .map(|b| (b as u8).wrapping_mul(i as u8 + 3))
            .collect();
        m.physical_memory().write(src, &data).unwrap();
        let page = f.next();
        assert_eq!(call(&lp0, PAGE_ADD, *gpa, td.tdr, page, src).0, 0);
        for off in (0..4096).step_by(256) {
            assert_eq!(call(&lp0, MR_EXTEND, gpa + off, td.tdr, 0, 0).0, 0);
        }
        let arr: &[u8; 4096] = data.as_slice().try_into().unwrap();
        expect.add_page(Gpa(*gpa), arr, true).unwrap();
        td.pages.push(page);
        // Isolation: the host reads zeros from the private page.
        let mut back = vec![1u8; 4096];
        m.physical_memory().read(page, &mut back).unwrap();
        assert!(back.iter().all(|b| *b == 0));
    }
    assert_eq!(call(&lp0, MR_FINALIZE, td.tdr, 0, 0, 0).0, 0);
    let want = expect.finalize().to_bytes();
    let mut got = [0u8; 48];
    for i in 0..6u64 {
        got[i as usize * 8..i as usize * 8 + 8]
            .copy_from_slice(&mng_rd(&lp0, td.tdr, 0x1310_0003_0000_0000 + i).to_le_bytes());
    }
    assert_eq!(
        got, want,
        "MRTD equals the independent MrtdBuilder computation"
    );
    // OP_STATE RUNNABLE (2), CHLDCNT = 6 TDCS + TDVPR + 5 TDVPX + 3 SEPT + 2 pages = 17.
    assert_eq!(mng_rd(&lp0, td.tdr, 0x9010_0002_0000_0004), 2);
    assert_eq!(mng_rd(&lp0, td.tdr, 0x8010_0003_0000_0004), 17);
    assert_eq!(mng_rd(&lp0, td.tdr, 0x8110_0001_0000_0001), 33);

    // VP.ENTER without an engine: asynchronous exit, reason 1 (external interrupt).
    let (s, _) = call(&lp0, VP_ENTER, td.tdvpr, 0, 0, 0);
    assert_eq!(s, 1);
    // ...on another LP: the vCPU is associated with LP 0.
    let (s, _) = call(&m.lp(1).unwrap(), VP_ENTER, td.tdvpr, 0, 0, 0);
    assert_eq!(s, 0x8000_0701_0000_0000);

    // Runtime memory: AUG a page, block + track + remove it.
    let aug = f.next();
    assert_eq!(call(&lp0, PAGE_AUG, 0x3000, td.tdr, aug, 0).0, 0);
    let (s, r) = call(&lp0, SEPT_RD, 0x3000, td.tdr, 0, 0);
    assert_eq!(s, 0);
    assert_eq!(r.rdx, 2 << 8, "level 0, PENDING");
    assert_eq!(r.rcx & 0x000F_FFFF_FFFF_F000, aug);
    assert_eq!(call(&lp0, RANGE_BLOCK, 0x3000, td.tdr, 0, 0).0, 0);
    assert_eq!(
        call(&lp0, PAGE_REMOVE, 0x3000, td.tdr, 0, 0).0,
        0xC000_0B08_0000_0001,
        "TLB_TRACKING_NOT_DONE (RCX)"
    );
    assert_eq!(call(&lp0, MEM_TRACK, td.tdr, 0, 0, 0).0, 0);
    assert_eq!(call(&lp0, PAGE_REMOVE, 0x3000, td.tdr, 0, 0).0, 0);
    assert_eq!(m.page_type(aug), Some(PamtPageType::Nda));
    m.check_invariants().unwrap();

    teardown(&m, &td);
    // Every frame we used is back to NDA, every HKID but the global one free.
    for p in (2 * MIB..f.0).step_by(4096) {
        assert_eq!(m.page_type(p), Some(PamtPageType::Nda), "{p:#x}");
    }
    for h in 33..48 {
        assert_eq!(m.hkid_state(h), Some(KotState::Free));
    }
    assert_eq!(m.hkid_state(32), Some(KotState::Reserved));
}

#[test]
fn dispatcher_rejects_bad_rax_and_gates_readiness() {
    let m = EmulatedModule::new(PlatformConfig::default()).unwrap();
    let lp0 = m.lp(0).unwrap();
    // Bits 63:24 set.
    assert_eq!(
        call(&lp0, 1 << 24 | SYS_INIT, 0, 0, 0, 0).0,
        0xC000_0100_0000_0000
    );
    // Version 1 of SYS.INIT.
    assert_eq!(
        call(&lp0, (1 << 16) | SYS_INIT, 0, 0, 0, 0).0,
        0xC000_0100_0000_0000
    );
    // Unknown leaf.
    assert_eq!(call(&lp0, 0xFFFF, 0, 0, 0, 0).0, 0xC000_0100_0000_0000);
    // Not ready.
    assert_eq!(
        call(&lp0, MNG_CREATE, 0x20_0000, 33, 0, 0).0,
        0xC000_0505_0000_0000
    );
    assert_eq!(call(&lp0, SYS_INIT, 0, 0, 0, 0).0, 0);
    // SYS.RD before LP.INIT on this LP.
    assert_eq!(
        call(&lp0, SYS_RD, 0, 0x9100_0001_0000_0008, 0, 0).0,
        0xC000_0502_0000_0000
    );
    assert!(m.lp(2).is_none());
}

#[test]
fn fault_injection_forces_busy_then_succeeds() {
    let m = bring_up(1);
    let lp0 = m.lp(0).unwrap();
    let mut f = Frames(2 * MIB);
    let tdr = f.next();
    m.faults()
        .inject(MNG_CREATE as u16, InjectedFault::Busy { operand: 186 }, 2);
    assert_eq!(
        call(&lp0, MNG_CREATE, tdr, 34, 0, 0).0,
        0x8000_0200_0000_00BA
    );
    assert_eq!(
        call(&lp0, MNG_CREATE, tdr, 34, 0, 0).0,
        0x8000_0200_0000_00BA
    );
    assert_eq!(call(&lp0, MNG_CREATE, tdr, 34, 0, 0).0, 0);
    m.faults()
        .inject(CACHE_WB as u16, InjectedFault::InterruptedResumable, 1);
    assert_eq!(call(&lp0, CACHE_WB, 0, 0, 0, 0).0, 0x8000_0003_0000_0000);
}

#[test]
fn host_write_poisons_private_page_and_mr_extend_is_fatal() {
    let m = bring_up(1);
    let lp0 = m.lp(0).unwrap();
    let mut f = Frames(2 * MIB);
    let td = build_td(&m, &mut f, 33);
    let src = f.next();
    let page = f.next();
    assert_eq!(call(&lp0, PAGE_ADD, 0x1000, td.tdr, page, src).0, 0);
    m.physical_memory().write(page + 8, &[0xAA; 8]).unwrap();
    assert_eq!(
        call(&lp0, MR_EXTEND, 0x1000, td.tdr, 0, 0).0,
        0xE000_0604_0000_0000
    );
}

/// A finalized TD with one vCPU and the scripted engine attached.
fn runnable_td() -> (Arc<EmulatedModule>, TestTd, Frames, ScriptedVcpu) {
    let m = bring_up(1);
    let lp0 = m.lp(0).unwrap();
    let mut f = Frames(2 * MIB);
    let mut td = build_td(&m, &mut f, 33);
    let src = f.next();
    let page = f.next();
    assert_eq!(call(&lp0, PAGE_ADD, 0x1000, td.tdr, page, src).0, 0);
    td.pages.push(page);
    assert_eq!(call(&lp0, MR_FINALIZE, td.tdr, 0, 0, 0).0, 0);
    let g = m.scripted_vcpu(td.tdvpr);
    (m, td, f, g)
}

const DONE_MAGIC: u64 = 0xD0E;

#[test]
fn scripted_guest_leaves_and_exits() {
    let (m, td, mut f, g) = runnable_td();
    let lp0 = m.lp(0).unwrap();
    // AUG 0x3000 (4K) before the guest runs; 0x5000 is AUGed on the guest's EPT violation.
    let aug3 = f.next();
    assert_eq!(call(&lp0, PAGE_AUG, 0x3000, td.tdr, aug3, 0).0, 0);
    let aug5 = f.next();
    let tdr = td.tdr;
    let tdvpr = td.tdvpr;
    let host = {
        let lp0 = lp0.clone();
        std::thread::spawn(move || {
            let mut exits = Vec::new();
            let mut regs = Regs::default();
            loop {
                regs.rax = VP_ENTER;
                regs.rcx = tdvpr;
                let s = lp0.seamcall(&mut regs).raw();
                exits.push((s, regs));
                match s {
                    // EPT violation: AUG the page (the ACCEPT retries on re-entry).
                    48 => {
                        assert_eq!(regs.rdx & 0xF, 1, "extended qualification ACCEPT");
                        assert_eq!(call(&lp0, PAGE_AUG, regs.r8, tdr, aug5, 0).0, 0);
                        regs = Regs::default();
                    }
                    77 if regs.r11 == DONE_MAGIC => break,
                    // TDVMCALL: answer R10 = 0 (success), R11 = 0x42.
                    77 => {
                        regs = Regs {
                            r10: 0,
                            r11: 0x42,
                            ..Regs::default()
                        };
                    }
                    other => panic!("unexpected exit {other:#x}"),
                }
            }
            exits
        })
    };
    // TDG.VP.INFO: GPAW 48, NUM_VCPUS 1 / MAX_VCPUS 4, index 0.
    let mut r = Regs::with_leaf(1);
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    assert_eq!((r.rcx, r.r8, r.r9), (48, 1 | (4 << 32), 0));
    // ACCEPT 0x3000: success, then PAGE_ALREADY_ACCEPTED (level 0 in the low bits).
    let mut r = Regs {
        rax: 6,
        rcx: 0x3000,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    let mut r = Regs {
        rax: 6,
        rcx: 0x3000,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0x0000_0B0A_0000_0000);
    // ACCEPT of the 2 MiB range at GPA 0: a page table is there → PAGE_SIZE_MISMATCH, level 1.
    let mut r = Regs {
        rax: 6,
        rcx: 1,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0xC000_0B0B_0000_0001);
    // ACCEPT 0x5000, never AUGed: EPT violation exit, host AUGs, the ACCEPT completes.
    let mut r = Regs {
        rax: 6,
        rcx: 0x5000,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    // The accepted page is zeroed and writable.
    g.write(0x5010, b"hello").unwrap();
    let mut b = [0u8; 8];
    g.read(0x500E, &mut b).unwrap();
    assert_eq!(&b, b"\0\0hello\0");
    // RTMR[2] extend with 48 bytes at 0x5040: SHA-384(48 zero bytes || data).
    let data = [0x5Au8; 48];
    g.write(0x5040, &data).unwrap();
    let mut r = Regs {
        rax: 2,
        rcx: 0x5040,
        rdx: 2,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    let mut r = Regs {
        rax: 2,
        rcx: 0x5040,
        rdx: 4,
        ..Regs::default()
    };
    assert_eq!(
        g.tdcall(&mut r).raw(),
        0xC000_0100_0000_0002,
        "RTMR index 4: RDX"
    );
    let mut msg = vec![0u8; 48];
    msg.extend_from_slice(&data);
    let want_rtmr: [u8; 48] = sha2::Sha384::digest(&msg).into();
    // TDG.MR.REPORT into 0x5400 with REPORTDATA at 0x5080.
    g.write(0x5080, &[7u8; 64]).unwrap();
    let mut r = Regs {
        rax: 4,
        rcx: 0x5400,
        rdx: 0x5080,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    let mut rep = vec![0u8; 1024];
    g.read(0x5400, &mut rep).unwrap();
    assert_eq!(rep[0], 0x81);
    assert_eq!(&rep[128..192], &[7u8; 64]);
    let tee_info_hash: [u8; 48] = sha2::Sha384::digest(&rep[512..1024]).into();
    assert_eq!(&rep[80..128], &tee_info_hash);
    assert_eq!(&rep[512 + 304..512 + 352], &want_rtmr, "RTMR2 in TDINFO");
    let mac: &[u8; 256] = rep[..256].try_into().unwrap();
    assert!(m.verify_report_mac(mac));
    let mut forged = *mac;
    forged[130] ^= 1;
    assert!(!m.verify_report_mac(&forged));
    // A read of a PENDING page: #VE with VE_INFO; a second one before VEINFO.GET: #DF.
    let aug6 = f.next();
    // (the host is blocked in VP.ENTER; a second host thread may still call SEAMCALLs)
    assert_eq!(call(&lp0, PAGE_AUG, 0x6000, td.tdr, aug6, 0).0, 0);
    assert_eq!(
        g.read(0x6008, &mut b),
        Err(GuestAccessFault::VirtualizationException { gpa: 0x6008 })
    );
    assert_eq!(
        g.read(0x6008, &mut b),
        Err(GuestAccessFault::DoubleFault { gpa: 0x6008 })
    );
    let mut r = Regs::with_leaf(3);
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    assert_eq!((r.rcx, r.r9), (48, 0x6008));
    let mut r = Regs::with_leaf(3);
    assert_eq!(
        g.tdcall(&mut r).raw(),
        0xC000_0704_0000_0000,
        "NO_VALID_VE_INFO"
    );
    // TDG.VP.VMCALL selecting R10..R13: the host answers R10 = 0, R11 = 0x42.
    let mut r = Regs {
        rax: 0,
        rcx: 0x3C00,
        r10: 0,
        r11: 0x1E,
        r12: 1,
        r13: 0,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    assert_eq!((r.r10, r.r11), (0, 0x42));
    // A mask selecting RCX is refused.
    let mut r = Regs {
        rax: 0,
        rcx: 0x2,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0xC000_0100_0000_0001);
    // Done.
    let mut r = Regs {
        rax: 0,
        rcx: 0xC00,
        r11: DONE_MAGIC,
        ..Regs::default()
    };
    let _ = std::thread::spawn(move || g.tdcall(&mut r));
    let exits = host.join().unwrap();
    let vmcall = exits
        .iter()
        .find(|(s, r)| *s == 77 && r.r11 == 0x1E)
        .unwrap();
    assert_eq!(vmcall.1.rcx, 0x3C00, "RCX = the guest's select mask");
    assert_eq!(vmcall.1.r12, 1);
    assert_eq!(vmcall.1.rbx, 0, "unselected GPRs are 0");
    m.check_invariants().unwrap();
}

#[test]
fn running_vcpu_makes_host_leaves_busy() {
    let (m, td, _f, g) = runnable_td();
    let lp0 = m.lp(0).unwrap();
    let tdvpr = td.tdvpr;
    let host = {
        let lp0 = lp0.clone();
        std::thread::spawn(move || call(&lp0, VP_ENTER, tdvpr, 0, 0, 0))
    };
    // Wait until the guest runs (the host thread is inside TDH.VP.ENTER).
    let mut r = Regs::with_leaf(1);
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    // TDVPR held by the running vCPU: VP.FLUSH gets OPERAND_BUSY on RCX.
    assert_eq!(
        call(&lp0, VP_FLUSH, tdvpr, 0, 0, 0).0,
        0x8000_0200_0000_0001
    );
    // TDR held shared: VPFLUSHDONE (exclusive) is BUSY too.
    assert_eq!(
        call(&lp0, VPFLUSHDONE, td.tdr, 0, 0, 0).0,
        0x8000_0200_0000_0001
    );
    // The vCPU runs in epoch 1: the first TRACK moves to 2, the second finds epoch 1 busy.
    assert_eq!(call(&lp0, MEM_TRACK, td.tdr, 0, 0, 0).0, 0);
    assert_eq!(
        call(&lp0, MEM_TRACK, td.tdr, 0, 0, 0).0,
        0x8000_0201_0000_0000
    );
    // VP.ENTER of the running (ACTIVE) vCPU from another LP: VCPU_STATE_INCORRECT with the
    // current state (ACTIVE = 4) in the low bits; the state is checked before the association.
    assert_eq!(
        call(&m.lp(1).unwrap(), VP_ENTER, tdvpr, 0, 0, 0).0,
        0xC000_0700_0000_0004
    );
    let mut r = Regs {
        rax: 0,
        rcx: 0xC00,
        r11: DONE_MAGIC,
        ..Regs::default()
    };
    let _ = std::thread::spawn(move || g.tdcall(&mut r));
    let (s, out) = host.join().unwrap();
    assert_eq!((s, out.r11), (77, DONE_MAGIC));
    // After the exit the epoch is free again.
    assert_eq!(call(&lp0, MEM_TRACK, td.tdr, 0, 0, 0).0, 0);
    teardown(&m, &td);
}

#[test]
fn mng_init_checks_td_params_fields_with_operand_ids() {
    let m = bring_up(1);
    let lp0 = m.lp(0).unwrap();
    let mut f = Frames(2 * MIB);
    let tdr = f.next();
    assert_eq!(call(&lp0, MNG_CREATE, tdr, 40, 0, 0).0, 0);
    assert_eq!(call(&lp0, MNG_KEY_CONFIG, tdr, 0, 0, 0).0, 0);
    for _ in 0..6 {
        assert_eq!(call(&lp0, MNG_ADDCX, f.next(), tdr, 0, 0).0, 0);
    }
    let params = f.next();
    // (byte offset, bytes, expected operand id) — tdx-module-abi.md §5.1, §4.3.
    let cases: [(usize, Vec<u8>, u64); 8] = [
        (0, (1u64 << 31).to_le_bytes().to_vec(), 64), // ATTRIBUTES.KL not allowed
        (8, 0x1u64.to_le_bytes().to_vec(), 65),       // XFAM without SSE
        (16, 0u16.to_le_bytes().to_vec(), 68),        // MAX_VCPUS 0
        (18, vec![1], 71),                            // NUM_L2_VMS
        (24, (6u64 | (2 << 3)).to_le_bytes().to_vec(), 67), // 3-level EPT
        (32, 0x8u64.to_le_bytes().to_vec(), 66),      // CONFIG_FLAGS bit 3
        (40, 3u16.to_le_bytes().to_vec(), 70),        // TSC 75 MHz
        (50, vec![1], 2),                             // reserved byte → RDX
    ];
    for (off, bytes, operand) in cases {
        write_td_params(&m, params, 0);
        m.physical_memory()
            .write(params + off as u64, &bytes)
            .unwrap();
        assert_eq!(
            call(&lp0, MNG_INIT, tdr, params, 0, 0).0,
            0xC000_0100_0000_0000 | operand,
            "offset {off}"
        );
    }
    // GPAW 52 with a 4-level EPT: EPTP_CONTROLS (67).
    write_td_params(&m, params, 0);
    m.physical_memory()
        .write(params + 32, &1u64.to_le_bytes())
        .unwrap();
    assert_eq!(
        call(&lp0, MNG_INIT, tdr, params, 0, 0).0,
        0xC000_0100_0000_0043
    );
    write_td_params(&m, params, 0);
    assert_eq!(call(&lp0, MNG_INIT, tdr, params, 0, 0).0, 0);
}

#[test]
fn sept_remove_order_and_2m_aug_accept() {
    let (m, td, mut f, g) = runnable_td();
    let lp0 = m.lp(0).unwrap();
    // A second PD entry (GPA 2 MiB) gets a 2 MiB AUG directly at level 1.
    let big = 64 * MIB;
    assert_eq!(call(&lp0, PAGE_AUG, (2 * MIB) | 1, td.tdr, big, 0).0, 0);
    assert_eq!(m.page_type(big + 4096 * 7), Some(PamtPageType::Reg));
    // Misaligned 2 MiB target: OPERAND_INVALID on R8.
    assert_eq!(
        call(&lp0, PAGE_AUG, (4 * MIB) | 1, td.tdr, big + 4096, 0).0,
        0xC000_0100_0000_0008
    );
    // SEPT.REMOVE of the PT while it maps a page: EPT_PAGE_NOT_FREE... first it must be blocked
    // (RUNNABLE): GPA_RANGE_NOT_BLOCKED with the entry in RCX/RDX.
    let (s, r) = call(&lp0, 30, 1, td.tdr, 0, 0);
    assert_eq!(s, 0xC000_0B06_0000_0001);
    assert_eq!(r.rdx, 0x84 << 8 | 1, "NL_MAPPED at level 1");
    assert_eq!(call(&lp0, RANGE_BLOCK, 1, td.tdr, 0, 0).0, 0);
    assert_eq!(call(&lp0, MEM_TRACK, td.tdr, 0, 0, 0).0, 0);
    assert_eq!(
        call(&lp0, 30, 1, td.tdr, 0, 0).0,
        0xC000_0B0E_0000_0001,
        "EPT_PAGE_NOT_FREE"
    );
    // The guest accepts the 2 MiB page at once.
    let host = {
        let lp0 = lp0.clone();
        let tdvpr = td.tdvpr;
        std::thread::spawn(move || call(&lp0, VP_ENTER, tdvpr, 0, 0, 0))
    };
    let mut r = Regs {
        rax: 6,
        rcx: (2 * MIB) | 1,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    // A 4 KiB accept inside it: PAGE_ALREADY_ACCEPTED with level 1.
    let mut r = Regs {
        rax: 6,
        rcx: 2 * MIB + 0x5000,
        ..Regs::default()
    };
    assert_eq!(g.tdcall(&mut r).raw(), 0x0000_0B0A_0000_0001);
    let mut r = Regs {
        rax: 0,
        rcx: 0xC00,
        r11: DONE_MAGIC,
        ..Regs::default()
    };
    let _ = std::thread::spawn(move || g.tdcall(&mut r));
    assert_eq!(host.join().unwrap().0, 77);
    let _ = f.next();
    m.check_invariants().unwrap();
}

#[test]
fn invariants_hold_during_out_of_order_reclaim() {
    let (m, td, _f, _g) = runnable_td();
    let lp0 = m.lp(0).unwrap();
    assert_eq!(call(&lp0, VP_FLUSH, td.tdvpr, 0, 0, 0).0, 0);
    assert_eq!(call(&lp0, VPFLUSHDONE, td.tdr, 0, 0, 0).0, 0);
    assert_eq!(call(&lp0, CACHE_WB, 0, 0, 0, 0).0, 0);
    // Nothing left to flush: NO_HKID_READY_TO_WBCACHE (success class).
    assert_eq!(call(&lp0, CACHE_WB, 0, 0, 0, 0).0, 0x0000_0821_0000_0000);
    assert_eq!(call(&lp0, KEY_FREEID, td.tdr, 0, 0, 0).0, 0);
    // The SEPT root (TDCS page 3) first, then a leaf page: still consistent.
    assert_eq!(call(&lp0, RECLAIM, td.tdcs[3], 0, 0, 0).0, 0);
    m.check_invariants().unwrap();
    // RDMD of a TD page: type REG (3), owner the TDR, size 4K.
    let (s, r) = call(&lp0, 24, td.pages[0], 0, 0, 0);
    assert_eq!((s, r.rcx, r.rdx, r.r8), (0, 3, td.tdr, 0));
    assert_eq!(call(&lp0, RECLAIM, td.pages[0], 0, 0, 0).0, 0);
    // WBINVD with the TD's HKID bits (33 << shift) on the reclaimed page; a non-TDX KeyID fails.
    let shift = m.hkid_shift();
    assert_eq!(call(&lp0, 41, td.pages[0] | (33 << shift), 0, 0, 0).0, 0);
    assert_eq!(
        call(&lp0, 41, td.pages[0] | (1 << shift), 0, 0, 0).0,
        0xC000_0100_0000_0001
    );
    m.check_invariants().unwrap();
}

#[test]
fn sys_rdall_lists_metadata() {
    let m = bring_up(1);
    let lp0 = m.lp(0).unwrap();
    let buf = 3 * MIB;
    let (s, r) = call(&lp0, 37, 0, buf, u64::MAX, 0);
    assert_eq!(s, 0);
    let mut b = vec![0u8; 4096];
    m.physical_memory().read(buf, &mut b).unwrap();
    let n = u16::from_le_bytes([b[2], b[3]]) as usize;
    assert!(n > 20);
    assert_eq!(r.r8, u64::MAX, "every field fitted");
    let fields: Vec<(u64, u64)> = (0..n)
        .map(|i| {
            let o = 8 + 16 * i;
            (
                u64::from_le_bytes(b[o..o + 8].try_into().unwrap()),
                u64::from_le_bytes(b[o + 8..o + 16].try_into().unwrap()),
            )
        })
        .collect();
    assert!(
        fields.contains(&(0x0800_0002_0000_0000, 0x8086)),
        "VENDOR_ID"
    );
    assert!(
        fields.contains(&(0x9800_0001_0000_0100, 6 * 4096)),
        "TDCS_BASE_SIZE"
    );
    assert!(
        fields.contains(&(0x9000_0003_0000_0080, MIB)),
        "CMR_BASE[0]"
    );
}

#[test]
fn host_view_is_isolated_and_guest_dies_on_poison() {
    let (m, td, _f, g) = runnable_td();
    let page = td.pages[0];
    let mut b = [0xFFu8; 16];
    m.physical_memory().read(td.tdr, &mut b).unwrap();
    assert_eq!(b, [0; 16], "TDR reads as zeros");
    m.physical_memory().write(page, &[1; 4]).unwrap();
    let lp0 = m.lp(0).unwrap();
    let host = {
        let lp0 = lp0.clone();
        let tdvpr = td.tdvpr;
        std::thread::spawn(move || call(&lp0, VP_ENTER, tdvpr, 0, 0, 0))
    };
    assert_eq!(
        g.read(0x1000, &mut b),
        Err(GuestAccessFault::Fatal { gpa: 0x1000 })
    );
    let mut r = Regs {
        rax: 0,
        rcx: 0xC00,
        r11: DONE_MAGIC,
        ..Regs::default()
    };
    let _ = std::thread::spawn(move || g.tdcall(&mut r));
    assert_eq!(host.join().unwrap().0, 77);
    // The TD is fatal now: VP.ENTER refuses.
    assert_eq!(
        call(&lp0, VP_ENTER, td.tdvpr, 0, 0, 0).0,
        0xE000_0604_0000_0000
    );
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Random SEAMCALLs (leaf, version, operands biased toward real objects) never panic and
        /// never break the invariants.
        #[test]
        fn random_seamcalls_keep_invariants(
            calls in proptest::collection::vec(
                (0u64..48, 0u64..2, 0usize..8, 0usize..8, 0usize..8, any::<u64>()),
                1..60,
            )
        ) {
            let m = bring_up(1);
            let mut f = Frames(2 * MIB);
            let td = build_td(&m, &mut f, 33);
            let pick = |i: usize, raw: u64| -> u64 {
                match i {
                    0 => td.tdr,
                    1 => td.tdvpr,
                    2 => 0x1000,
                    3 => 0x8000_0000 + (raw & 0xF000),
                    4 => 0x30_0000 + ((raw & 0x3F) << 12),
                    5 => 1,
                    6 => raw & 0x0000_FFFF_FFFF_F007,
                    _ => raw,
                }
            };
            for (leaf, version, a, b, c, raw) in calls {
                if leaf == VP_ENTER {
                    continue;
                }
                let lp = m.lp((raw & 1) as u32).unwrap();
                let mut r = Regs {
                    rax: leaf | (version << 16),
                    rcx: pick(a, raw),
                    rdx: pick(b, raw.rotate_left(7)),
                    r8: pick(c, raw.rotate_left(13)),
                    r9: pick(c, raw.rotate_left(29)),
                    ..Regs::default()
                };
                lp.seamcall(&mut r);
                prop_assert!(m.check_invariants().is_ok(), "{:?}", m.check_invariants());
            }
        }
    }
}
