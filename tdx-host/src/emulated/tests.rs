//! Unit tests of the TD, memory and guest leaves (happy paths and their main failures).
//! Status values are typed from the fact sheet, not taken from the code under test.

use std::sync::Arc;

use sha2::{Digest, Sha384};
use tdx_abi::call::Regs;
use tdx_abi::gpa::Gpa;

use super::sys::tests::{bring_up, call, small_platform};
use super::{EmulatedModule, GuestAccessFault, KotState, LogicalProcessor, PamtPageType};

const TDX_SUCCESS: u64 = 0;

/// A TD under construction on the small platform.
pub(crate) struct Build {
    pub(crate) m: Arc<EmulatedModule>,
    pub(crate) lp0: LogicalProcessor,
    pub(crate) lp1: LogicalProcessor,
    pub(crate) next: u64,
    pub(crate) tdr: u64,
    pub(crate) tdcs: Vec<u64>,
    pub(crate) tdvpr: u64,
    pub(crate) tdvps: Vec<u64>,
    pub(crate) sept: Vec<u64>,
}

impl Build {
    pub(crate) fn alloc(&mut self) -> u64 {
        let p = self.next;
        self.next += 4096;
        p
    }

    pub(crate) fn ok(&self, leaf: u64, f: impl FnOnce(&mut Regs)) -> Regs {
        let (s, r) = call(&self.lp0, leaf, f);
        assert_eq!(s, TDX_SUCCESS, "leaf {leaf:#x} failed with {s:#x}");
        self.m.check_invariants().unwrap();
        r
    }
}

/// TD_PARAMS with GPAW 48, 4-level EPT, XFAM x87|SSE, 4 vCPUs, 2.5 GHz.
pub(crate) fn td_params(attributes: u64) -> [u8; 1024] {
    let mut p = [0u8; 1024];
    p[0..8].copy_from_slice(&attributes.to_le_bytes());
    p[8..16].copy_from_slice(&3u64.to_le_bytes());
    p[16..18].copy_from_slice(&4u16.to_le_bytes());
    p[24..32].copy_from_slice(&(6u64 | (3 << 3)).to_le_bytes());
    p[40..42].copy_from_slice(&100u16.to_le_bytes());
    p
}

/// Creates a TD up to MNG.INIT (keys configured on both packages, 6 TDCS pages).
pub(crate) fn create_td(attributes: u64) -> Build {
    let m = small_platform();
    let lp0 = bring_up(&m);
    let lp1 = m.lp(1).unwrap();
    let mut b = Build {
        m,
        lp0,
        lp1,
        next: 4 << 20,
        tdr: 0,
        tdcs: vec![],
        tdvpr: 0,
        tdvps: vec![],
        sept: vec![],
    };
    b.tdr = b.alloc();
    let tdr = b.tdr;
    b.ok(9, |r| {
        r.rcx = tdr;
        r.rdx = 33;
    });
    b.ok(8, |r| r.rcx = tdr);
    assert_eq!(call(&b.lp1, 8, |r| r.rcx = tdr).0, TDX_SUCCESS);
    for _ in 0..6 {
        let p = b.alloc();
        b.tdcs.push(p);
        b.ok(1, |r| {
            r.rcx = p;
            r.rdx = tdr;
        });
    }
    let params = b.alloc();
    b.m.physical_memory()
        .write(params, &td_params(attributes))
        .unwrap();
    b.ok(21, |r| {
        r.rcx = tdr;
        r.rdx = params;
    });
    b
}

/// Adds the vCPU and the S-EPT tables for GPA 0..2 MiB.
pub(crate) fn add_vcpu_and_sept(b: &mut Build) {
    let tdr = b.tdr;
    b.tdvpr = b.alloc();
    let tdvpr = b.tdvpr;
    b.ok(10, |r| {
        r.rcx = tdvpr;
        r.rdx = tdr;
    });
    for _ in 0..5 {
        let p = b.alloc();
        b.tdvps.push(p);
        b.ok(4, |r| {
            r.rcx = p;
            r.rdx = tdvpr;
        });
    }
    let r = b.ok(22, |r| {
        r.rcx = tdvpr;
        r.rdx = 0x1234;
    });
    let _ = r;
    for level in [3u64, 2, 1] {
        let p = b.alloc();
        b.sept.push(p);
        b.ok(3, |r| {
            r.rcx = level;
            r.rdx = tdr;
            r.r8 = p;
        });
    }
}

fn page_add(b: &mut Build, gpa: u64, fill: u8) -> u64 {
    let src = b.alloc();
    b.m.physical_memory().write(src, &[fill; 4096]).unwrap();
    let page = b.alloc();
    let tdr = b.tdr;
    b.ok(2, |r| {
        r.rcx = gpa;
        r.rdx = tdr;
        r.r8 = page;
        r.r9 = src;
    });
    page
}

fn block(tag: &[u8], gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..tag.len()].copy_from_slice(tag);
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

fn read_mrtd(b: &Build) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..6u64 {
        let r = b.ok(11, |r| {
            r.rcx = b.tdr;
            r.rdx = 0x1310_0003_0000_0000 + i;
        });
        out.extend_from_slice(&r.r8.to_le_bytes());
    }
    out
}

#[test]
fn lifecycle_build_measure_run_teardown() {
    let mut b = create_td(0);
    let tdr = b.tdr;
    add_vcpu_and_sept(&mut b);
    let p0 = page_add(&mut b, 0, 0xA5);
    for off in (0..4096).step_by(256) {
        b.ok(16, |r| {
            r.rcx = off;
            r.rdx = tdr;
        });
    }
    let p1 = page_add(&mut b, 0x1000, 0x5A);
    // Before FINALIZE: MR.EXTEND of an unmapped GPA fails with the walk details.
    let (s, r) = call(&b.lp0, 16, |r| {
        r.rcx = 0x3000;
        r.rdx = tdr;
    });
    assert_eq!(
        s, 0xC000_0B03_0000_0001,
        "FREE leaf: EPT_ENTRY_NOT_PRESENT(RCX)"
    );
    assert_eq!(r.rcx, 1 << 63);
    assert_eq!(r.rdx, 0);
    b.ok(17, |r| r.rcx = tdr);

    // Independent MRTD: SHA-384 over the 128-byte blocks.
    let mut h = Sha384::new();
    h.update(block(b"MEM.PAGE.ADD", 0));
    for off in (0..4096u64).step_by(256) {
        h.update(block(b"MR.EXTEND", off));
        h.update([0xA5u8; 256]);
    }
    h.update(block(b"MEM.PAGE.ADD", 0x1000));
    assert_eq!(read_mrtd(&b), h.finalize().to_vec());

    // Isolation: the host sees zeros in TD pages.
    let mut buf = [0xFFu8; 16];
    b.m.physical_memory().read(p0, &mut buf).unwrap();
    assert_eq!(buf, [0; 16]);
    assert_eq!(b.m.page_type(p0), Some(PamtPageType::PT_REG));
    assert_eq!(b.m.page_type(b.tdr), Some(PamtPageType::PT_TDR));
    assert_eq!(b.m.page_type(b.sept[0]), Some(PamtPageType::PT_EPT));

    // Run: nothing queued → external-interrupt exit.
    let r = b.ok_enter();
    assert_eq!(r.rax, 1);
    // After an external-interrupt exit the recoverability hint (bit 52) is accepted; resume-L1
    // (bit 53) never is, nor bits 63:54 or 11:0.
    let (s, _) = call(&b.lp0, 0, |r| r.rcx = b.tdvpr | 1 << 52);
    assert_eq!(s, 1);
    for bad in [1u64 << 53, 1 << 54, 1] {
        let (s, _) = call(&b.lp0, 0, |r| r.rcx = b.tdvpr | bad);
        assert_eq!(s, 0xC000_0100_0000_0001, "RCX {bad:#x}");
    }
    // Another LP: the vCPU is associated with LP 0.
    assert_eq!(
        call(&b.lp1, 0, |r| r.rcx = b.tdvpr).0,
        0x8000_0701_0000_0000
    );
    let g = b.m.scripted_vcpu(tdx_abi::phys::Hpa(b.tdvpr));
    let mut data = [0u8; 8];
    g.read(Gpa(0x10), &mut data).unwrap();
    assert_eq!(data, [0xA5; 8]);
    // TDG.VP.INFO.
    let mut r = Regs::with_leaf(1);
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    assert_eq!((r.rcx, r.rdx, r.r8, r.r9), (48, 0, 1 | (4 << 32), 0));
    // TDG.VP.VMCALL round trip: R10..R13 selected.
    let mut r = Regs::with_leaf(0);
    r.rcx = 0x3C00;
    r.r10 = 0;
    r.r11 = 0x1E;
    r.r12 = 1;
    r.r13 = 0x80;
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    let r = b.ok_enter();
    assert_eq!(
        (r.rax, r.rcx, r.r11, r.r12, r.r13),
        (77, 0x3C00, 0x1E, 1, 0x80)
    );
    assert_eq!(r.rbx, 0, "unselected GPRs are zero");
    let (s, _) = call(&b.lp0, 0, |r| {
        r.rcx = b.tdvpr;
        r.r10 = 0;
        r.r11 = 0xAB;
    });
    assert_eq!(s, 1, "external interrupt exit after the resumed VMCALL");
    let resp = g.take_vmcall_response().unwrap();
    assert_eq!((resp.r10, resp.r11), (0, 0xAB));

    // ACCEPT of a GPA not AUGed: EPT-violation exit with the ACCEPT qualification.
    let mut r = Regs::with_leaf(6);
    r.rcx = 0x2000;
    assert_eq!(g.tdcall(&mut r).raw(), 0x8000_0004_0000_0000);
    let r = b.ok_enter();
    assert_eq!((r.rax, r.r8, r.rdx & 0xF), (48, 0x2000, 1));
    let aug = b.alloc();
    b.ok(6, |r| {
        r.rcx = 0x2000;
        r.rdx = tdr;
        r.r8 = aug;
    });
    // Pending page: #VE, VE_INFO via VEINFO.GET.
    assert_eq!(
        g.read(Gpa(0x2000), &mut data),
        Err(GuestAccessFault::VirtualizationException { gpa: 0x2000 })
    );
    let mut r = Regs::with_leaf(3);
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    assert_eq!((r.rcx, r.r9), (48, 0x2000));
    assert_eq!(
        g.tdcall(&mut Regs::with_leaf(3)).raw(),
        0xC000_0704_0000_0000
    );
    let mut r = Regs::with_leaf(6);
    r.rcx = 0x2000;
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    let mut r = Regs::with_leaf(6);
    r.rcx = 0x2000;
    assert_eq!(
        g.tdcall(&mut r).raw(),
        0x0000_0B0A_0000_0000,
        "already accepted, level 0"
    );
    let mut r = Regs::with_leaf(6);
    r.rcx = 0x20_0001; // 2M accept of the free PD entry for GPA 2 MiB: TD exit
    assert_eq!(g.tdcall(&mut r).raw(), 0x8000_0004_0000_0000);
    let r = b.ok_enter();
    assert_eq!((r.rax, r.r8), (48, 0x20_0000));
    assert_eq!(
        r.rdx >> 32 & 0x3F,
        1 | (1 << 3),
        "requested level 1, error level 1"
    );
    // 2M accept where a 4K table exists below (PD entry NL_MAPPED): size mismatch.
    let mut r = Regs::with_leaf(6);
    r.rcx = 1;
    assert_eq!(g.tdcall(&mut r).raw(), 0xC000_0B0B_0000_0001);
    g.read(Gpa(0x2000), &mut data).unwrap();
    assert_eq!(data, [0; 8], "ACCEPT zeroes the page");

    // RTMR extend + report.
    g.write(Gpa(0x40), &[0x11; 48]).unwrap();
    let mut r = Regs::with_leaf(2);
    r.rcx = 0x40;
    r.rdx = 4;
    assert_eq!(g.tdcall(&mut r).raw(), 0xC000_0100_0000_0002);
    r = Regs::with_leaf(2);
    r.rcx = 0x40;
    r.rdx = 2;
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    g.write(Gpa(0x2000), &[0x77; 64]).unwrap();
    let mut r = Regs::with_leaf(4);
    r.rcx = 0x1200;
    assert_eq!(
        g.tdcall(&mut r).raw(),
        0xC000_0100_0000_0001,
        "TDREPORT GPA 1024-aligned"
    );
    let mut r = Regs::with_leaf(4);
    r.rcx = 0x1000;
    r.rdx = 0x2000;
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    let mut rep = [0u8; 1024];
    g.read(Gpa(0x1000), &mut rep).unwrap();
    assert_eq!(rep[0], 0x81);
    assert_eq!(&rep[128..192], &[0x77; 64]);
    let report = tdx_abi::report::TdReport::from_bytes(&rep).unwrap();
    assert!(
        report.hashes_consistent(),
        "TEE_TCB_INFO_HASH / TEE_INFO_HASH"
    );
    let mut rms = report.report_mac_struct;
    assert!(b.m.verify_report_mac(&rms));
    rms.report_data[2] ^= 1;
    assert!(!b.m.verify_report_mac(&rms));
    assert_eq!(&rep[80..128], Sha384::digest(&rep[512..1024]).as_slice());
    let mut rt = Sha384::new();
    rt.update([0u8; 48]);
    rt.update([0x11u8; 48]);
    assert_eq!(
        &rep[512 + 304..512 + 352],
        rt.finalize().as_slice(),
        "RTMR2 in TDINFO"
    );
    assert_eq!(&rep[512 + 16..512 + 64], read_mrtd(&b).as_slice());

    // Remove the AUGed page while RUNNABLE: block + track first.
    let (s, _) = call(&b.lp0, 29, |r| {
        r.rcx = 0x2000;
        r.rdx = tdr;
    });
    assert_eq!(s, 0xC000_0B06_0000_0001);
    b.ok(7, |r| {
        r.rcx = 0x2000;
        r.rdx = tdr;
    });
    let (s, r) = call(&b.lp0, 7, |r| {
        r.rcx = 0x2000;
        r.rdx = tdr;
    });
    assert_eq!(s, 0x0000_0B07_0000_0001, "already blocked (operand RCX)");
    assert_eq!(r.rdx, 0x0100, "details: level 0, BLOCKED");
    let (s, _) = call(&b.lp0, 29, |r| {
        r.rcx = 0x2000;
        r.rdx = tdr;
    });
    assert_eq!(s, 0xC000_0B08_0000_0001);
    b.ok(38, |r| r.rcx = tdr);
    b.ok(29, |r| {
        r.rcx = 0x2000;
        r.rdx = tdr;
    });
    assert_eq!(b.m.page_type(aug), Some(PamtPageType::PT_NDA));

    // Teardown.
    let (s, _) = call(&b.lp1, 18, |r| r.rcx = b.tdvpr);
    assert_eq!(s, 0x8000_0702_0000_0000, "VP.FLUSH on the wrong LP");
    let (s, _) = call(&b.lp0, 19, |r| r.rcx = tdr);
    assert_eq!(s, 0x8000_0824_0000_0000, "FLUSHVP_NOT_DONE");
    b.ok(18, |r| r.rcx = b.tdvpr);
    b.ok(19, |r| r.rcx = tdr);
    assert_eq!(b.m.hkid_state(33), Some(KotState::FLUSHED));
    let (s, _) = call(&b.lp0, 2, |r| {
        r.rcx = 0x5000;
        r.rdx = tdr;
    });
    assert_eq!(
        s, 0x8000_0810_0000_0000,
        "TD_KEYS_NOT_CONFIGURED after VPFLUSHDONE"
    );
    let (s, _) = call(&b.lp0, 20, |r| r.rcx = tdr);
    assert_eq!(s, 0x8000_0817_0000_0000, "WBCACHE_NOT_COMPLETE");
    b.ok(40, |r| r.rcx = 0);
    let (s, _) = call(&b.lp0, 40, |r| r.rcx = 0);
    assert_eq!(s, 0x0000_0821_0000_0000, "nothing left on package 0");
    assert_eq!(call(&b.lp1, 40, |r| r.rcx = 0).0, 0);
    let (s, _) = call(&b.lp0, 28, |r| r.rcx = p0);
    assert_eq!(s, 0xC000_0607_0000_0000, "RECLAIM before TEARDOWN");
    b.ok(20, |r| r.rcx = tdr);
    assert_eq!(b.m.hkid_state(33), Some(KotState::FREE));
    let (s, r) = call(&b.lp0, 28, |r| r.rcx = tdr);
    assert_eq!(s, 0xC000_0400_0000_0000, "TDR last");
    assert_eq!((r.rcx, r.rdx), (4, 0));
    let mut pages = vec![p0, p1, b.tdvpr];
    pages.extend(&b.tdvps);
    pages.extend(&b.sept);
    pages.extend(&b.tdcs);
    for p in pages {
        let r = b.ok(28, |r| r.rcx = p);
        assert_eq!(r.rdx, tdr);
        b.ok(41, |r| r.rcx = p | (33u64 << b.m.hkid_shift()));
        assert_eq!(b.m.page_type(p), Some(PamtPageType::PT_NDA));
    }
    b.ok(28, |r| r.rcx = tdr);
    assert_eq!(b.m.page_type(tdr), Some(PamtPageType::PT_NDA));
    assert_eq!(b.m.locks_held(), 0);
}

impl Build {
    fn ok_enter(&self) -> Regs {
        let (s, r) = call(&self.lp0, 0, |r| r.rcx = self.tdvpr);
        assert!(s >> 63 == 0, "VP.ENTER failed {s:#x}");
        self.m.check_invariants().unwrap();
        r
    }
}

#[test]
fn mng_init_td_params_checks() {
    let m = small_platform();
    let lp0 = bring_up(&m);
    let lp1 = m.lp(1).unwrap();
    let tdr = 4 << 20;
    assert_eq!(
        call(&lp0, 9, |r| {
            r.rcx = tdr;
            r.rdx = 32;
        })
        .0,
        0xC000_0820_0000_0000,
        "global HKID is not free"
    );
    assert_eq!(
        call(&lp0, 9, |r| {
            r.rcx = tdr;
            r.rdx = 3;
        })
        .0,
        0xC000_0100_0000_0002
    );
    assert_eq!(
        call(&lp0, 9, |r| {
            r.rcx = tdr + 8;
            r.rdx = 33;
        })
        .0,
        0xC000_0100_0000_0001
    );
    assert_eq!(
        call(&lp0, 9, |r| {
            r.rcx = 0;
            r.rdx = 33;
        })
        .0,
        0xC000_0300_0000_0001,
        "RSVD page"
    );
    assert_eq!(
        call(&lp0, 9, |r| {
            r.rcx = 62 << 20;
            r.rdx = 33;
        })
        .0,
        0xC000_0300_0000_0001
    );
    assert_eq!(
        call(&lp0, 9, |r| {
            r.rcx = 1 << 40;
            r.rdx = 33;
        })
        .0,
        0xC000_0101_0000_0001
    );
    assert_eq!(
        call(&lp0, 9, |r| {
            r.rcx = tdr;
            r.rdx = 33;
        })
        .0,
        0
    );
    assert_eq!(m.hkid_state(33), Some(KotState::ASSIGNED));
    let cx = tdr + 4096;
    assert_eq!(
        call(&lp0, 1, |r| {
            r.rcx = cx;
            r.rdx = tdr;
        })
        .0,
        0x8000_0810_0000_0000
    );
    assert_eq!(call(&lp0, 8, |r| r.rcx = tdr).0, 0);
    assert_eq!(call(&lp0, 8, |r| r.rcx = tdr).0, 0x0000_0815_0000_0000);
    assert_eq!(call(&lp1, 8, |r| r.rcx = tdr).0, 0);
    assert_eq!(call(&lp1, 8, |r| r.rcx = tdr).0, 0xC000_0607_0000_0000);
    let params = 8 << 20;
    assert_eq!(
        call(&lp0, 21, |r| {
            r.rcx = tdr;
            r.rdx = params;
        })
        .0,
        0xC000_0606_0000_0000
    );
    for i in 0..6 {
        assert_eq!(
            call(&lp0, 1, |r| {
                r.rcx = cx + i * 4096;
                r.rdx = tdr;
            })
            .0,
            0
        );
    }
    type Case = (Box<dyn Fn(&mut [u8; 1024])>, u64, Option<u64>);
    let cases: Vec<Case> = vec![
        (Box::new(|p| p[0] = 2), 0xC000_0100_0000_0040, None),
        (Box::new(|p| p[3] = 0x80), 0xC000_0100_0000_0040, None), // KL bit 31
        (
            Box::new(|p| {
                p[0] = 1;
                p[3] = 0x20;
            }),
            0xC000_0100_0000_0040,
            None,
        ), // DEBUG + MIGRATABLE
        (Box::new(|p| p[8] = 1), 0xC000_0100_0000_0041, None),
        (Box::new(|p| p[8] = 0x23), 0xC000_0100_0000_0041, None), // AVX-512 partial
        (Box::new(|p| p[16] = 0), 0xC000_0100_0000_0044, None),
        (Box::new(|p| p[18] = 4), 0xC000_0100_0000_0047, None),
        (Box::new(|p| p[18] = 1), 0xC000_0606_0000_0000, None),
        (Box::new(|p| p[21] = 1), 0xC000_0100_0000_0002, None),
        (Box::new(|p| p[32] = 8), 0xC000_0100_0000_0042, None),
        (
            Box::new(|p| p[24] = 6 | (2 << 3)),
            0xC000_0100_0000_0043,
            None,
        ),
        (Box::new(|p| p[32] = 1), 0xC000_0100_0000_0043, None), // GPAW 52 needs 5-level
        (Box::new(|p| p[40] = 3), 0xC000_0100_0000_0046, None),
        (Box::new(|p| p[50] = 1), 0xC000_0100_0000_0002, None),
        (Box::new(|p| p[19] = 2), 0xC000_0100_0000_0002, None),
        (Box::new(|p| p[240] = 1), 0xC000_0100_0000_0002, None),
        // CPUID leaf 0xA (index 7) has no configurable bits: RCX = leaf | subleaf << 32.
        (
            Box::new(|p| p[256 + 16 * 7] = 1),
            0xC000_0100_0000_0045,
            Some(0xFFFF_FFFF_0000_000A),
        ),
        (Box::new(|p| p[600] = 1), 0xC000_0100_0000_0002, None),
        (
            Box::new(|p| {
                p[19] = 1;
                p[224] = 1;
            }),
            0xC000_0100_0000_0048,
            None,
        ),
    ];
    for (i, (f, want, rcx)) in cases.iter().enumerate() {
        let mut p = td_params(0);
        f(&mut p);
        m.physical_memory().write(params, &p).unwrap();
        let (s, r) = call(&lp0, 21, |r| {
            r.rcx = tdr;
            r.rdx = params;
        });
        assert_eq!(s, *want, "case {i}");
        if let Some(x) = rcx {
            assert_eq!(r.rcx, *x, "case {i} extended info");
        }
    }
    assert_eq!(
        call(&lp0, 21, |r| {
            r.rcx = tdr;
            r.rdx = params + 512;
        })
        .0,
        0xC000_0100_0000_0002
    );
    m.physical_memory()
        .write(params, &td_params(1 << 28))
        .unwrap();
    assert_eq!(
        call(&lp0, 21, |r| {
            r.rcx = tdr;
            r.rdx = params;
        })
        .0,
        0
    );
    assert_eq!(
        call(&lp0, 21, |r| {
            r.rcx = tdr;
            r.rdx = params;
        })
        .0,
        0xC000_0608_0000_0000
    );
    // MNG.RD of TDCS fields after INIT.
    let (s, r) = call(&lp0, 11, |r| {
        r.rcx = tdr;
        r.rdx = 0x1110_0003_0000_0000;
    });
    assert_eq!((s, r.r8), (0, 1 << 28));
    let (s, r) = call(&lp0, 11, |r| {
        r.rcx = tdr;
        r.rdx = 0x9010_0002_0000_0004;
    });
    assert_eq!((s, r.r8), (0, 1));
    let (s, r) = call(&lp0, 11, |r| {
        r.rcx = tdr;
        r.rdx = 0x8010_0003_0000_0004;
    });
    assert_eq!((s, r.r8), (0, 6), "CHLDCNT = 6 TDCS pages");
    m.check_invariants().unwrap();
}

#[test]
fn sept_errors_report_entry_details() {
    let mut b = create_td(0);
    let tdr = b.tdr;
    let page = b.alloc();
    // AUG at GPA 0 without any S-EPT table: walk fails at the root (level 3), entry FREE.
    let (s, r) = call(&b.lp0, 6, |r| {
        r.rcx = 0;
        r.rdx = tdr;
        r.r8 = page;
    });
    assert_eq!(s, 0xC000_0B00_0000_0001);
    assert_eq!((r.rcx, r.rdx), (1 << 63, 3));
    // Bad GPA+level operands.
    assert_eq!(
        call(&b.lp0, 6, |r| {
            r.rcx = 2;
            r.rdx = tdr;
            r.r8 = page;
        })
        .0,
        0xC000_0100_0000_0001
    );
    assert_eq!(
        call(&b.lp0, 6, |r| {
            r.rcx = 0x1001;
            r.rdx = tdr;
            r.r8 = page;
        })
        .0,
        0xC000_0100_0000_0001
    );
    assert_eq!(
        call(&b.lp0, 6, |r| {
            r.rcx = 1 << 47;
            r.rdx = tdr;
            r.r8 = page;
        })
        .0,
        0xC000_0100_0000_0001
    );
    // VP.CREATE etc. and SEPT.ADD of an existing level.
    add_vcpu_and_sept(&mut b);
    // TD CPUID_VALUES: leaf 1, no subleaf (code 0x300), element 0 = EAX | EBX << 32; EAX = the
    // platform F/M/S because TD_PARAMS left it 0.
    let r = b.ok(11, |r| {
        r.rcx = tdr;
        r.rdx = 0x9410_0003_0000_0300;
    });
    assert_eq!(r.r8 & 0xFFFF_FFFF, 0x0008_06F8);
    // PEND_NMI is host-writable (0/1), VCPU_STATE readable, VCPU_STATE not writable.
    let tdvpr = b.tdvpr;
    b.ok(43, |r| {
        r.rcx = tdvpr;
        r.rdx = 0x2020_0000_0000_000B;
        r.r8 = 1;
        r.r9 = 1;
    });
    let r = b.ok(26, |r| {
        r.rcx = tdvpr;
        r.rdx = 0x2020_0000_0000_000B;
    });
    assert_eq!(r.r8, 1);
    let (s, _) = call(&b.lp0, 43, |r| {
        r.rcx = tdvpr;
        r.rdx = 0x2020_0000_0000_000B;
        r.r8 = 2;
        r.r9 = 3;
    });
    assert_eq!(s, 0xC000_0C03_0000_0000);
    let r = b.ok(26, |r| {
        r.rcx = tdvpr;
        r.rdx = 0xA020_0000_0000_0000;
    });
    assert_eq!(r.r8, 2, "VCPU_STATE READY");
    let (s, _) = call(&b.lp0, 43, |r| {
        r.rcx = tdvpr;
        r.rdx = 0xA020_0000_0000_0000;
        r.r8 = 0;
        r.r9 = u64::MAX;
    });
    assert_eq!(s, 0xC000_0C01_0000_0000);
    let p2 = b.alloc();
    let (s, r) = call(&b.lp0, 3, |r| {
        r.rcx = 1;
        r.rdx = tdr;
        r.r8 = p2;
    });
    assert_eq!(s, 0xC000_0B0D_0000_0001);
    assert_eq!(r.rdx, 0x8401, "level 1, NL_MAPPED");
    // v1 with "allow existing" succeeds without consuming the page.
    let (s, _) = call(&b.lp0, 1 << 16 | 3, |r| {
        r.rcx = 1;
        r.rdx = tdr | 1;
        r.r8 = p2;
    });
    assert_eq!(s, 0);
    assert_eq!(b.m.page_type(p2), Some(PamtPageType::PT_NDA));
    // RDX reserved bits; R8 "none" (all ones) only in version 1 and only over a table.
    let (s, _) = call(&b.lp0, 3, |r| {
        r.rcx = 1;
        r.rdx = tdr | 2;
        r.r8 = p2;
    });
    assert_eq!(s, 0xC000_0100_0000_0002);
    let (s, _) = call(&b.lp0, 3, |r| {
        r.rcx = 1;
        r.rdx = tdr;
        r.r8 = u64::MAX;
    });
    assert_eq!(s, 0xC000_0100_0000_0008);
    let (s, r) = call(&b.lp0, 1 << 16 | 3, |r| {
        r.rcx = 1;
        r.rdx = tdr | 1;
        r.r8 = p2;
    });
    assert_eq!(
        (s, r.r8),
        (0, p2 | 1 << 63),
        "existing table: page not used, bit 63 set"
    );
    // MNG.RD version 1: all-ones asks for the first field, then "next" chains.
    let (s, r) = call(&b.lp0, 1 << 16 | 11, |r| {
        r.rcx = tdr;
        r.rdx = u64::MAX;
    });
    assert_eq!(s, 0x0000_0C0B_0000_0000);
    let first = r.rdx;
    let (s, r) = call(&b.lp0, 1 << 16 | 11, |r| {
        r.rcx = tdr;
        r.rdx = first;
    });
    assert_eq!(s, 0);
    assert_ne!(r.rdx, u64::MAX);
    // PAGE.ADD twice at the same GPA, with a private source, with a wrong level.
    let src = b.alloc();
    let t = b.alloc();
    b.ok(2, |r| {
        r.rcx = 0;
        r.rdx = tdr;
        r.r8 = t;
        r.r9 = src;
    });
    let t2 = b.alloc();
    let (s, r) = call(&b.lp0, 2, |r| {
        r.rcx = 0;
        r.rdx = tdr;
        r.r8 = t2;
        r.r9 = src;
    });
    assert_eq!(s, 0xC000_0B0D_0000_0001);
    assert_eq!(r.rdx, 0x0400, "level 0, MAPPED");
    assert_eq!(
        call(&b.lp0, 2, |r| {
            r.rcx = 0x1000;
            r.rdx = tdr;
            r.r8 = t2;
            // A source HPA whose HKID bits name a private KeyID is not a shared HPA.
            r.r9 = src | (33 << b.m.hkid_shift());
        })
        .0,
        0xC000_0100_0000_0009
    );
    assert_eq!(
        call(&b.lp0, 2, |r| {
            r.rcx = 0x1000;
            r.rdx = tdr;
            r.r8 = t;
            r.r9 = src;
        })
        .0,
        0xC000_0300_0000_0008
    );
    // HKID bits of a shared (MKTME) KeyID are allowed in a shared HPA.
    let t3 = b.alloc();
    b.ok(2, |r| {
        r.rcx = 0x2000;
        r.rdx = tdr;
        r.r8 = t3;
        r.r9 = src | (1 << b.m.hkid_shift());
    });
    // SEPT.REMOVE of a table with a mapped page; SEPT.RD.
    let (s, _) = call(&b.lp0, 30, |r| {
        r.rcx = 1;
        r.rdx = tdr;
    });
    assert_eq!(s, 0xC000_0B0E_0000_0001);
    let r = b.ok(25, |r| {
        r.rcx = 0;
        r.rdx = tdr;
    });
    assert_eq!(r.rdx, 0x0400);
    assert_eq!(r.rcx & 0x000F_FFFF_FFFF_F000, t);
    // MR.FINALIZE then PAGE.ADD: OP_STATE_INCORRECT.
    b.ok(17, |r| r.rcx = tdr);
    assert_eq!(
        call(&b.lp0, 2, |r| {
            r.rcx = 0x1000;
            r.rdx = tdr;
            r.r8 = t2;
            r.r9 = src;
        })
        .0,
        0xC000_0608_0000_0000
    );
    assert_eq!(call(&b.lp0, 17, |r| r.rcx = tdr).0, 0xC000_0608_0000_0000);
    // 2M AUG needs a 2M-aligned free range and a level-1 entry.
    let (s, _) = call(&b.lp0, 6, |r| {
        r.rcx = (2 << 20) | 1;
        r.rdx = tdr;
        r.r8 = 0x50_1000;
    });
    assert_eq!(s, 0xC000_0100_0000_0008);
    b.ok(6, |r| {
        r.rcx = (2 << 20) | 1;
        r.rdx = tdr;
        r.r8 = 10 << 20;
    });
    assert_eq!(
        b.m.page_type((10 << 20) + 0x1F_F000),
        Some(PamtPageType::PT_REG)
    );
    let g = b.m.scripted_vcpu(tdx_abi::phys::Hpa(b.tdvpr));
    let mut r = Regs::with_leaf(6);
    r.rcx = 2 << 20;
    assert_eq!(
        g.tdcall(&mut r).raw(),
        0x8000_0004_0000_0000,
        "4K accept of a 2M pending page: EPT-violation exit (check_tdaccept_failure case 1.2)"
    );
    assert_eq!(g.queued_exits(), 1);
    let mut r = Regs::with_leaf(6);
    r.rcx = (2 << 20) | 1;
    assert_eq!(g.tdcall(&mut r).raw(), 0);
    let mut r = Regs::with_leaf(6);
    r.rcx = (2 << 20) | 0x1000;
    assert_eq!(
        g.tdcall(&mut r).raw(),
        0x0000_0B0A_0000_0001,
        "already accepted at level 1"
    );
    b.m.check_invariants().unwrap();
}

#[test]
fn poisoned_page_is_fatal_to_the_td() {
    let mut b = create_td(0);
    let tdr = b.tdr;
    add_vcpu_and_sept(&mut b);
    let p = page_add(&mut b, 0, 1);
    b.ok(17, |r| r.rcx = tdr);
    b.m.physical_memory().write(p + 8, &[9; 8]).unwrap();
    assert!(b.m.physical_memory().is_poisoned(p));
    let g = b.m.scripted_vcpu(tdx_abi::phys::Hpa(b.tdvpr));
    let mut d = [0u8; 4];
    assert_eq!(
        g.read(Gpa(0), &mut d),
        Err(GuestAccessFault::Fatal { gpa: 0 })
    );
    assert_eq!(
        call(&b.lp0, 0, |r| r.rcx = b.tdvpr).0,
        0xE000_0604_0000_0000
    );
    assert_eq!(
        g.tdcall(&mut Regs::with_leaf(1)).raw(),
        0xE000_0604_0000_0000
    );
}

#[test]
fn forced_faults_and_busy() {
    let b = create_td(0);
    let tdr = b.tdr;
    b.m.faults()
        .force_seamcall(11, super::Fault::Busy(tdx_abi::status::OperandId::TDR), 1);
    let (s, _) = call(&b.lp0, 11, |r| {
        r.rcx = tdr;
        r.rdx = 0x8010_0002_0000_0005;
    });
    assert_eq!(s, 0x8000_0200_0000_0080);
    let (s, r) = call(&b.lp0, 11, |r| {
        r.rcx = tdr;
        r.rdx = 0x8010_0002_0000_0005;
    });
    assert_eq!((s, r.r8), (0, 1));
    // A lock held by an in-flight leaf: simulate with the lock table directly.
    {
        let mut st = b.m.lock();
        assert!(st.locks.try_acquire(
            super::locks::LockKey::Page(tdr),
            super::locks::Mode::Exclusive
        ));
    }
    assert_eq!(
        call(&b.lp0, 38, |r| r.rcx = tdr).0,
        0x8000_0200_0000_0001,
        "TDR busy on RCX"
    );
    {
        let mut st = b.m.lock();
        st.locks.release(
            super::locks::LockKey::Page(tdr),
            super::locks::Mode::Exclusive,
        );
        assert!(st.locks.try_acquire(
            super::locks::LockKey::Epoch(tdr),
            super::locks::Mode::Shared
        ));
    }
    assert_eq!(
        call(&b.lp0, 38, |r| r.rcx = tdr).0,
        0x8000_0200_0000_00A9,
        "TD_EPOCH busy"
    );
    {
        let mut st = b.m.lock();
        st.locks.release(
            super::locks::LockKey::Epoch(tdr),
            super::locks::Mode::Shared,
        );
    }
    b.ok(38, |r| r.rcx = tdr);
}

#[test]
fn concurrent_leaves_on_one_td_get_busy() {
    let b = create_td(0);
    let tdr = b.tdr;
    let busy = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for lp in [b.lp0.clone(), b.lp1.clone()] {
            let busy = &busy;
            s.spawn(move || {
                for _ in 0..2000 {
                    // MEM.TRACK takes the epoch lock exclusively.
                    let (st, _) = call(&lp, 38, |r| r.rcx = tdr);
                    if st == 0x8000_0200_0000_00A9 || st == 0x8000_0200_0000_0001 {
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        assert_eq!(st, 0, "{st:#x}");
                    }
                }
            });
        }
    });
    b.m.check_invariants().unwrap();
    // Contention is likely but not guaranteed on a loaded machine; the deterministic BUSY
    // paths are covered by `forced_faults_and_busy`.
    let _ = busy.into_inner();
}

#[test]
fn conflicting_leaf_during_lock_window_gets_busy() {
    let mut b = create_td(0);
    let tdr = b.tdr;
    add_vcpu_and_sept(&mut b);
    let page = b.alloc();
    let src = b.alloc();
    b.m.faults().pause_in_lock_window(6);
    std::thread::scope(|s| {
        let lp0 = b.lp0.clone();
        let aug = s.spawn(move || {
            call(&lp0, 6, |r| {
                r.rcx = 0x3000;
                r.rdx = tdr;
                r.r8 = page;
            })
            .0
        });
        b.m.faults().wait_until_paused();
        // PAGE.AUG holds TDR shared, OP_STATE shared, the SEPT tree shared, the entry and page.
        let block = call(&b.lp1, 7, |r| {
            r.rcx = 0x3000;
            r.rdx = tdr;
        })
        .0;
        assert_eq!(block, 0x8000_0200_0000_0092, "SEPT tree busy");
        let add = call(&b.lp1, 2, |r| {
            r.rcx = 0x4000;
            r.rdx = tdr;
            r.r8 = page + 4096;
            r.r9 = src;
        })
        .0;
        assert_eq!(
            add, 0x8000_0200_0000_0002,
            "TDR (RDX) busy: PAGE.ADD wants it exclusive"
        );
        let reclaim = call(&b.lp1, 28, |r| r.rcx = page).0;
        assert_eq!(
            reclaim, 0x8000_0200_0000_0001,
            "the AUGed page's PAMT entry is locked"
        );
        let rd = call(&b.lp1, 11, |r| {
            r.rcx = tdr;
            r.rdx = 0x8010_0002_0000_0005;
        })
        .0;
        assert_eq!(rd, 0, "a shared TDR reader is not blocked");
        b.m.faults().resume();
        assert_eq!(aug.join().unwrap(), 0);
    });
    assert_eq!(b.m.locks_held(), 0);
    b.m.check_invariants().unwrap();
    b.ok(7, |r| {
        r.rcx = 0x3000;
        r.rdx = tdr;
    });
}

mod random_sequences {
    use proptest::prelude::*;

    use super::*;

    /// One step: a SEAMCALL leaf with operands drawn from pools of interesting values, or a
    /// guest action.
    #[derive(Debug, Clone)]
    enum Step {
        Seam {
            leaf: u64,
            rcx: usize,
            rdx: usize,
            r8: usize,
            r9: usize,
            lp: bool,
        },
        Tdcall {
            leaf: u64,
            rcx: usize,
            rdx: usize,
        },
        Touch {
            gpa: usize,
            write: bool,
        },
    }

    const LEAVES: &[u64] = &[
        0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 28, 29, 30,
        38, 39, 40, 41, 43, 0x1_0003, 0x1_001E, 0xFFFF,
    ];

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (prop::sample::select(LEAVES), 0..24usize, 0..24usize, 0..24usize, 0..24usize, any::<bool>())
                .prop_map(|(leaf, rcx, rdx, r8, r9, lp)| Step::Seam { leaf, rcx, rdx, r8, r9, lp }),
            2 => (0..9u64, 0..24usize, 0..24usize).prop_map(|(leaf, rcx, rdx)| Step::Tdcall { leaf, rcx, rdx }),
            1 => (0..24usize, any::<bool>()).prop_map(|(gpa, write)| Step::Touch { gpa, write }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random SEAMCALL/TDCALL sequences on a half-built TD never panic and keep the
        /// module's invariants.
        #[test]
        fn random_calls_keep_invariants(steps in prop::collection::vec(step(), 1..40)) {
            let mut b = create_td(0);
            add_vcpu_and_sept(&mut b);
            let mut pool: Vec<u64> = vec![
                b.tdr, b.tdvpr, b.tdcs[0], b.sept[2], 0, 1, 0x1000, 0x2000, 0x20_0001,
                0x3000, 1 << 47, u64::MAX, 0x1234_5678_9ABC,
            ];
            while pool.len() < 24 {
                let p = b.alloc();
                pool.push(p);
            }
            let g = b.m.scripted_vcpu(tdx_abi::phys::Hpa(b.tdvpr));
            for s in steps {
                match s {
                    Step::Seam { leaf, rcx, rdx, r8, r9, lp } => {
                        let lp = if lp { &b.lp1 } else { &b.lp0 };
                        let _ = call(lp, leaf, |r| {
                            r.rcx = pool[rcx];
                            r.rdx = pool[rdx];
                            r.r8 = pool[r8];
                            r.r9 = pool[r9];
                        });
                    }
                    Step::Tdcall { leaf, rcx, rdx } => {
                        let mut r = Regs::with_leaf(leaf);
                        r.rcx = pool[rcx];
                        r.rdx = pool[rdx];
                        let _ = g.tdcall(&mut r);
                    }
                    Step::Touch { gpa, write } => {
                        let mut buf = [0u8; 16];
                        let gpa = Gpa(pool[gpa] & !0xF);
                        let _ = if write { g.write(gpa, &buf) } else { g.read(gpa, &mut buf) };
                    }
                }
                if let Err(e) = b.m.check_invariants() {
                    prop_assert!(false, "{e}");
                }
            }
        }
    }
}

#[test]
fn running_vcpu_holds_its_epoch_and_tdvpr() {
    let mut b = create_td(0);
    let tdr = b.tdr;
    add_vcpu_and_sept(&mut b);
    b.ok(17, |r| r.rcx = tdr);
    let tdvpr = b.tdvpr;
    b.m.faults().pause_in_lock_window(0);
    std::thread::scope(|s| {
        let lp0 = b.lp0.clone();
        let enter = s.spawn(move || call(&lp0, 0, |r| r.rcx = tdvpr).0);
        b.m.faults().wait_until_paused();
        // The vCPU is in the guest, counted in epoch 1.
        assert_eq!(call(&b.lp1, 38, |r| r.rcx = tdr).0, 0, "epoch 1 -> 2");
        assert_eq!(
            call(&b.lp1, 38, |r| r.rcx = tdr).0,
            0x8000_0201_0000_0000,
            "PREVIOUS_TLB_EPOCH_BUSY while the vCPU still runs in epoch 1"
        );
        assert_eq!(
            call(&b.lp1, 18, |r| r.rcx = tdvpr).0,
            0x8000_0200_0000_0001,
            "VP.FLUSH: TDVPR held by the running VP.ENTER"
        );
        // The guest can act while it runs; its VMCALL is the next VP.ENTER's exit.
        let g = b.m.scripted_vcpu(tdx_abi::phys::Hpa(tdvpr));
        let mut r = Regs::with_leaf(0);
        r.rcx = 0x1C00;
        r.r11 = 0x1E;
        assert_eq!(g.tdcall(&mut r).raw(), 0);
        b.m.faults().resume();
        assert_eq!(enter.join().unwrap(), 1, "external-interrupt exit");
    });
    assert_eq!(
        call(&b.lp1, 38, |r| r.rcx = tdr).0,
        0,
        "the vCPU left: epoch 2 -> 3"
    );
    let (s, r) = call(&b.lp0, 0, |r| r.rcx = tdvpr);
    assert_eq!((s, r.rcx, r.r11), (77, 0x1C00, 0x1E));
    b.m.check_invariants().unwrap();
}

#[test]
fn api_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send_clone<T: Send + Clone>() {}
    send_sync::<EmulatedModule>();
    send_clone::<LogicalProcessor>();
    send_clone::<super::ScriptedVcpu>();
}
