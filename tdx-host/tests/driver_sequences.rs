//! The driver's SEAMCALL sequences against a recording mock module: Linux's bring-up order,
//! the KVM order for building a TD, teardown order, bounded retries and resumption, and that
//! failure paths give every frame and HKID back. Expected values come from the fact sheets
//! (kvm-tdx-host.md §2.4, tdx-module-abi.md §2.1 and §7.7), not from the driver.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::gpa::Gpa;
use tdx_abi::status::TdxStatus;
use tdx_host::driver::{
    BringUpStep, DriverError, HostMemory, HostMemoryError, LogicalCpu, PlatformDesc, RetryPolicy,
    TdBuilder, TdxModule,
};

const MIB: u64 = 1 << 20;
const MEM: u64 = 256 * MIB;

// Leaf numbers (tdx-module-abi.md §2).
const SYS_INIT: u16 = 33;
const SYS_LP_INIT: u16 = 35;
const SYS_RD: u16 = 34;
const SYS_CONFIG: u16 = 45;
const SYS_KEY_CONFIG: u16 = 31;
const SYS_TDMR_INIT: u16 = 36;
const MNG_CREATE: u16 = 9;
const MNG_KEY_CONFIG: u16 = 8;
const MNG_ADDCX: u16 = 1;
const MNG_INIT: u16 = 21;
const VP_CREATE: u16 = 10;
const VP_ADDCX: u16 = 4;
const VP_INIT: u16 = 22;
const SEPT_ADD: u16 = 3;
const PAGE_ADD: u16 = 2;
const MR_EXTEND: u16 = 16;
const MR_FINALIZE: u16 = 17;
const VP_FLUSH: u16 = 18;
const VPFLUSHDONE: u16 = 19;
const CACHE_WB: u16 = 40;
const KEY_FREEID: u16 = 20;
const RECLAIM: u16 = 28;
const WBINVD: u16 = 41;

// Status values (tdx-module-abi.md §4.2).
const RND_NO_ENTROPY: u64 = 0x8000_0203_0000_0000;
const INTERRUPTED_RESUMABLE: u64 = 0x8000_0003_0000_0000;
const TDMR_ALREADY_INITIALIZED: u64 = 0x0000_0A03_0000_0000;
const OPERAND_INVALID_RDX: u64 = 0xC000_0100_0000_0002;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Call {
    lp: u32,
    leaf: u16,
    rcx: u64,
    rdx: u64,
    r8: u64,
}

#[derive(Default)]
struct MockState {
    log: Vec<Call>,
    /// Leaf -> statuses to return (front first) before behaving normally.
    inject: HashMap<u16, Vec<u64>>,
    tdmr_progress: u64,
}

struct Mock {
    st: Mutex<MockState>,
    metadata: BTreeMap<u64, u64>,
    mem: Mutex<BTreeMap<u64, Box<[u8; 4096]>>>,
}

impl Mock {
    fn new() -> Arc<Self> {
        let mut md = BTreeMap::new();
        // Values of the 1.5.01 module (tdx-module-abi.md §5.11).
        for (f, v) in [
            (0x0800_0001_0000_0003, 5), // MINOR_VERSION
            (0x0800_0001_0000_0004, 1), // MAJOR_VERSION
            (0x0800_0001_0000_0005, 1),
            (0x0800_0001_0000_0006, 0),
            (0x8800_0001_0000_0002, 100),
            (0x8800_0002_0000_0001, 2024_0101),
            (0x0A00_0003_0000_0008, 1 << 18), // TDX_FEATURES0: NO_RBP_MOD
            (0x9000_0001_0000_0000, 1),       // NUM_CMRS
            (0x9000_0003_0000_0080, MIB),     // CMR_BASE[0]
            (0x9000_0003_0000_0100, MEM - MIB),
            (0x9100_0001_0000_0008, 64), // MAX_TDMRS
            (0x9100_0001_0000_0009, 16), // MAX_RESERVED_PER_TDMR
            (0x9100_0001_0000_0010, 16),
            (0x9100_0001_0000_0011, 16),
            (0x9100_0001_0000_0012, 16),
            (0x9800_0001_0000_0000, 4096),
            (0x9800_0001_0000_0100, 6 * 4096),
            (0x9800_0001_0000_0200, 6 * 4096),
            (
                0x1900_0003_0000_0000,
                (1 << 0) | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 63),
            ),
            (0x1900_0003_0000_0001, 0),
            (0x1900_0003_0000_0002, 0x6DBE7),
            (0x1900_0003_0000_0003, 0x3),
            (0x9900_0001_0000_0004, 1), // NUM_CPUID_CONFIG
            (0x9900_0003_0000_0400, 0xFFFF_FFFF_0000_0001), // leaf 1, no subleaf
            (0x9900_0003_0000_0500, 0xFFFF_FFFF_FFFF_FFFF),
            (0x9900_0003_0000_0501, 0xFFFF_FFFF_FFFF_FFFF),
        ] {
            md.insert(f, v);
        }
        Arc::new(Self {
            st: Mutex::new(MockState::default()),
            metadata: md,
            mem: Mutex::new(BTreeMap::new()),
        })
    }

    fn log(&self) -> Vec<Call> {
        self.st.lock().unwrap().log.clone()
    }

    fn inject(&self, leaf: u16, statuses: &[u64]) {
        self.st
            .lock()
            .unwrap()
            .inject
            .insert(leaf, statuses.to_vec());
    }

    fn handle(&self, lp: u32, regs: &mut Regs) -> u64 {
        let leaf = regs.rax as u16;
        let mut st = self.st.lock().unwrap();
        st.log.push(Call {
            lp,
            leaf,
            rcx: regs.rcx,
            rdx: regs.rdx,
            r8: regs.r8,
        });
        if let Some(q) = st.inject.get_mut(&leaf) {
            if !q.is_empty() {
                return q.remove(0);
            }
        }
        match leaf {
            SYS_RD => match self.metadata.get(&regs.rdx) {
                Some(&v) => {
                    regs.r8 = v;
                    0
                }
                None => OPERAND_INVALID_RDX,
            },
            SYS_TDMR_INIT => {
                // 1 GiB TDMR at 0; advance 256 MiB per call, then report done.
                if st.tdmr_progress >= 1 << 30 {
                    return TDMR_ALREADY_INITIALIZED;
                }
                st.tdmr_progress += 256 * MIB;
                regs.rdx = st.tdmr_progress;
                0
            }
            RECLAIM => {
                regs.rcx = 0;
                0
            }
            _ => 0,
        }
    }
}

impl std::fmt::Debug for MockLp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MockLp({})", self.1)
    }
}

impl std::fmt::Debug for MockMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockMem")
    }
}

#[derive(Clone)]
struct MockLp(Arc<Mock>, u32);

impl Seamcall for MockLp {
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
        TdxStatus::from_raw(self.0.handle(self.1, regs))
    }
}

struct MockMem(Arc<Mock>);

impl HostMemory for MockMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemoryError> {
        let mem = self.0.mem.lock().unwrap();
        for (i, b) in buf.iter_mut().enumerate() {
            let a = pa + i as u64;
            *b = mem
                .get(&(a & !0xFFF))
                .map_or(0, |p| p[(a & 0xFFF) as usize]);
        }
        Ok(())
    }
    fn write(&self, pa: u64, buf: &[u8]) -> Result<(), HostMemoryError> {
        if pa + buf.len() as u64 > MEM {
            return Err(HostMemoryError { pa, len: buf.len() });
        }
        let mut mem = self.0.mem.lock().unwrap();
        for (i, b) in buf.iter().enumerate() {
            let a = pa + i as u64;
            mem.entry(a & !0xFFF).or_insert_with(|| Box::new([0; 4096]))[(a & 0xFFF) as usize] = *b;
        }
        Ok(())
    }
}

fn desc() -> PlatformDesc {
    PlatformDesc {
        usable_ranges: vec![(MIB, MEM)],
        first_tdx_hkid: 32,
        num_tdx_hkids: 4,
        hkid_shift: 46,
    }
}

/// Two packages with two logical processors each.
fn bring_up(m: &Arc<Mock>, retry: RetryPolicy) -> Result<TdxModule<MockLp, MockMem>, DriverError> {
    let lps = (0..4)
        .map(|i| LogicalCpu {
            seamcall: MockLp(m.clone(), i),
            package: i / 2,
        })
        .collect();
    TdxModule::init(lps, MockMem(m.clone()), &desc(), retry)
}

fn leaves(log: &[Call]) -> Vec<u16> {
    log.iter().map(|c| c.leaf).collect()
}

#[test]
fn bring_up_follows_linux_order() {
    let m = Mock::new();
    let module = bring_up(&m, RetryPolicy::default()).unwrap();
    let log = m.log();
    let l = leaves(&log);
    // SYS.INIT once, first, on LP 0; then LP.INIT on every LP in order.
    assert_eq!(
        &l[..5],
        &[SYS_INIT, SYS_LP_INIT, SYS_LP_INIT, SYS_LP_INIT, SYS_LP_INIT]
    );
    assert_eq!(log[0].rcx, 0);
    assert_eq!(
        log[1..5].iter().map(|c| c.lp).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    // Then metadata only, then exactly one SYS.CONFIG.
    let cfg = l.iter().position(|&x| x == SYS_CONFIG).unwrap();
    assert!(l[5..cfg].iter().all(|&x| x == SYS_RD));
    let config = log[cfg];
    assert_eq!(config.rcx % 512, 0, "PA array must be 512-byte aligned");
    assert_eq!(config.rdx, 1, "one TDMR covers 256 MiB");
    assert_eq!(config.r8, 32, "global KeyID is the first TDX KeyID");
    // The PA array points at a 512-aligned TDMR_INFO: base 0, size 1 GiB, a 4K PAMT of
    // 1 GiB / 4 KiB * 16 B = 4 MiB.
    let mem = MockMem(m.clone());
    let mut pa = [0u8; 8];
    mem.read(config.rcx, &mut pa).unwrap();
    let info_pa = u64::from_le_bytes(pa);
    assert_eq!(info_pa % 512, 0);
    let mut info = [0u8; 64];
    mem.read(info_pa, &mut info).unwrap();
    let q = |i: usize| u64::from_le_bytes(info[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!((q(0), q(1)), (0, 1 << 30));
    assert_eq!(q(7), 4 * MIB);
    // KEY.CONFIG once per package (LP 0 and LP 2), then TDMR.INIT until the end.
    let keys: Vec<u32> = log
        .iter()
        .filter(|c| c.leaf == SYS_KEY_CONFIG)
        .map(|c| c.lp)
        .collect();
    assert_eq!(keys, vec![0, 2]);
    let tail = &l[cfg + 1..];
    assert_eq!(
        tail,
        &[
            SYS_KEY_CONFIG,
            SYS_KEY_CONFIG,
            SYS_TDMR_INIT,
            SYS_TDMR_INIT,
            SYS_TDMR_INIT,
            SYS_TDMR_INIT
        ]
    );
    assert!(log
        .iter()
        .filter(|c| c.leaf == SYS_TDMR_INIT)
        .all(|c| c.rcx == 0));
    let info = module.info();
    assert_eq!((info.version.major, info.version.minor), (1, 5));
    assert_eq!(info.tdcs_pages(), 6);
    assert_eq!(info.cpuid_configs.len(), 1);
    assert_eq!(info.cpuid_configs[0].subleaf, None);
    // The PAMT chunk stays allocated; the staging frames went back.
    let frames = module.frames();
    assert_eq!(frames.live_allocations(), 1);
}

#[test]
fn bring_up_retries_entropy_then_gives_up_with_typed_error() {
    let m = Mock::new();
    m.inject(SYS_CONFIG, &[RND_NO_ENTROPY; 3]);
    bring_up(&m, RetryPolicy::default()).unwrap();
    assert_eq!(
        leaves(&m.log())
            .iter()
            .filter(|&&l| l == SYS_CONFIG)
            .count(),
        4
    );

    let m = Mock::new();
    m.inject(SYS_KEY_CONFIG, &[RND_NO_ENTROPY; 5]);
    let retry = RetryPolicy {
        max_retries: 2,
        ..RetryPolicy::default()
    };
    match bring_up(&m, retry) {
        Err(DriverError::BringUp { step, source }) => {
            assert_eq!(step, BringUpStep::KeyConfig(0));
            assert_eq!(source.status, RND_NO_ENTROPY);
            assert_eq!(source.leaf, SYS_KEY_CONFIG);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn td_build_and_teardown_follow_kvm_order_and_free_everything() {
    let m = Mock::new();
    let module = Arc::new(bring_up(&m, RetryPolicy::default()).unwrap());
    let free0 = module.frames().free_frames();
    let start = m.log().len();
    m.inject(CACHE_WB, &[INTERRUPTED_RESUMABLE, INTERRUPTED_RESUMABLE]);
    {
        let td = TdBuilder::new(&module).build().unwrap();
        assert_eq!(td.hkid(), 33);
        td.create_vcpu(1, 0x1234).unwrap();
        let page = [0xA5u8; 4096];
        td.add_page(Gpa(0x10_0000), &page, true).unwrap();
        td.finalize().unwrap();
        td.teardown().unwrap();
        assert!(td.is_torn_down());
        let log = m.log();
        let l = leaves(&log[start..]);
        let mut want = vec![MNG_CREATE, MNG_KEY_CONFIG, MNG_KEY_CONFIG];
        want.extend([MNG_ADDCX; 6]);
        want.push(MNG_INIT);
        want.push(VP_CREATE);
        want.extend([VP_ADDCX; 5]);
        want.push(VP_INIT);
        want.extend([SEPT_ADD; 3]);
        want.push(PAGE_ADD);
        want.extend([MR_EXTEND; 16]);
        want.push(MR_FINALIZE);
        want.extend([11; 6]); // MNG.RD × 6 (MRTD)
        want.extend([VP_FLUSH, VPFLUSHDONE]);
        // CACHE.WB on package 0 resumed twice, then package 1.
        want.extend([CACHE_WB, CACHE_WB, CACHE_WB, CACHE_WB, KEY_FREEID]);
        // 1 page + 3 S-EPT + 5 TDVPX + TDVPR + 6 TDCS + TDR, each RECLAIM then WBINVD.
        for _ in 0..17 {
            want.extend([RECLAIM, WBINVD]);
        }
        assert_eq!(l, want);
        let calls = &log[start..];
        let create = calls[0];
        assert_eq!(create.rdx, 33);
        let tdr = create.rcx;
        // KEY.CONFIG on one LP per package.
        assert_eq!((calls[1].lp, calls[2].lp), (0, 2));
        // VP.INIT and VP.FLUSH on the vCPU's LP; VP.INIT's RDX = initial RCX.
        let vp_init = calls.iter().find(|c| c.leaf == VP_INIT).unwrap();
        assert_eq!((vp_init.lp, vp_init.rdx), (1, 0x1234));
        assert_eq!(calls.iter().find(|c| c.leaf == VP_FLUSH).unwrap().lp, 1);
        // S-EPT from the root down: levels 3, 2, 1 for GPA 1 MiB.
        let sept: Vec<u64> = calls
            .iter()
            .filter(|c| c.leaf == SEPT_ADD)
            .map(|c| c.rcx)
            .collect();
        // GPA 1 MiB aligned down to each level's span is 0, so RCX is the level alone.
        assert_eq!(sept, vec![3, 2, 1]);
        // MR.EXTEND over the page in 256-byte steps.
        let ext: Vec<u64> = calls
            .iter()
            .filter(|c| c.leaf == MR_EXTEND)
            .map(|c| c.rcx)
            .collect();
        assert_eq!(
            ext,
            (0..16).map(|i| 0x10_0000 + i * 256).collect::<Vec<_>>()
        );
        // CACHE.WB: start (0), resume (1), resume (1); package 1 starts with 0.
        let wb: Vec<(u32, u64)> = calls
            .iter()
            .filter(|c| c.leaf == CACHE_WB)
            .map(|c| (c.lp, c.rcx))
            .collect();
        assert_eq!(wb, vec![(0, 0), (0, 1), (0, 1), (2, 0)]);
        // WBINVD after each RECLAIM carries the TD's HKID (33 << 46), the TDR the global one.
        let wbinvd: Vec<u64> = calls
            .iter()
            .filter(|c| c.leaf == WBINVD)
            .map(|c| c.rcx)
            .collect();
        let reclaim: Vec<u64> = calls
            .iter()
            .filter(|c| c.leaf == RECLAIM)
            .map(|c| c.rcx)
            .collect();
        assert_eq!(*reclaim.last().unwrap(), tdr);
        assert_eq!(*wbinvd.last().unwrap(), tdr | (32 << 46));
        for (w, r) in wbinvd.iter().zip(&reclaim).take(16) {
            assert_eq!(*w, r | (33 << 46));
        }
    }
    assert_eq!(module.frames().free_frames(), free0);
    assert_eq!(module.hkids().in_use(), 0);
}

#[test]
fn failed_mng_init_tears_down_and_leaks_nothing() {
    let m = Mock::new();
    let module = Arc::new(bring_up(&m, RetryPolicy::default()).unwrap());
    let free0 = module.frames().free_frames();
    m.inject(MNG_INIT, &[0xC000_0100_0000_0040]); // OPERAND_INVALID (ATTRIBUTES)
    let start = m.log().len();
    let err = TdBuilder::new(&module).build().unwrap_err();
    let sc = err.seamcall().expect("a SEAMCALL error");
    assert_eq!((sc.leaf, sc.status), (MNG_INIT, 0xC000_0100_0000_0040));
    let l = leaves(&m.log()[start..]);
    let init = l.iter().position(|&x| x == MNG_INIT).unwrap();
    let mut want = vec![VPFLUSHDONE, CACHE_WB, CACHE_WB, KEY_FREEID];
    for _ in 0..7 {
        want.extend([RECLAIM, WBINVD]);
    }
    assert_eq!(&l[init + 1..], &want[..]);
    assert_eq!(module.frames().free_frames(), free0);
    assert_eq!(module.hkids().in_use(), 0);
}

#[test]
fn failed_teardown_keeps_pages_and_resumes() {
    let m = Mock::new();
    let module = Arc::new(bring_up(&m, RetryPolicy::default()).unwrap());
    let free0 = module.frames().free_frames();
    let td = TdBuilder::new(&module).build().unwrap();
    // WBCACHE_NOT_COMPLETE on KEY.FREEID: nothing may be reclaimed yet.
    m.inject(KEY_FREEID, &[0x8000_0817_0000_0000]);
    let err = td.teardown().unwrap_err();
    assert_eq!(err.seamcall().unwrap().leaf, KEY_FREEID);
    assert!(module.frames().free_frames() < free0);
    assert_eq!(module.hkids().in_use(), 1);
    assert!(!leaves(&m.log()).contains(&RECLAIM));
    td.teardown().unwrap();
    drop(td);
    assert_eq!(module.frames().free_frames(), free0);
    assert_eq!(module.hkids().in_use(), 0);
}
