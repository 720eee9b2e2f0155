//! Conformance table: wrong SEAMCALL sequences (leaf × TD lifecycle / OP_STATE / S-EPT
//! state / PAMT type / HKID state) with the exact status the module must return, operand id
//! included.
//!
//! Every expectation is written from the fact sheets (tdx-module-abi.md §2.1, §4, §7.2, §7.3,
//! §7.6; emulation-notes.md §3.5–3.6), with the operand ids confirmed in the TDX module 1.5
//! source where the sheets are silent (OP_STATE_INCORRECT, TD_KEYS_NOT_CONFIGURED and
//! TDCS_NOT_ALLOCATED carry none; EPT_WALK_FAILED, EPT_ENTRY_STATE_INCORRECT,
//! GPA_RANGE_NOT_BLOCKED and TLB_TRACKING_NOT_DONE carry RCX).
//!
//! [`run_table`] drives any `Seamcall` platform through the stages with raw register blocks
//! and checks each case on a fresh platform. It is instantiated against the emulated module
//! once that lands (`tdx_host::emulated`); until then this file checks the table itself.

#![allow(dead_code)]

use tdx_abi::call::{Regs, Seamcall};
use tdx_host::driver::td::encode_td_params;
use tdx_host::driver::{HostMemory, TdConfig, TdxModule};

// Leaves (tdx-module-abi.md §2).
const MNG_ADDCX: u16 = 1;
const MEM_PAGE_ADD: u16 = 2;
const MEM_SEPT_ADD: u16 = 3;
const VP_ADDCX: u16 = 4;
const MEM_PAGE_AUG: u16 = 6;
const MEM_RANGE_BLOCK: u16 = 7;
const MNG_KEY_CONFIG: u16 = 8;
const MNG_CREATE: u16 = 9;
const VP_CREATE: u16 = 10;
const MR_EXTEND: u16 = 16;
const MR_FINALIZE: u16 = 17;
const VP_FLUSH: u16 = 18;
const MNG_VPFLUSHDONE: u16 = 19;
const MNG_KEY_FREEID: u16 = 20;
const MNG_INIT: u16 = 21;
const VP_INIT: u16 = 22;
const PHYMEM_PAGE_RECLAIM: u16 = 28;
const MEM_PAGE_REMOVE: u16 = 29;
const SYS_INIT: u16 = 33;
const SYS_LP_INIT: u16 = 35;
const MEM_TRACK: u16 = 38;
const MEM_RANGE_UNBLOCK: u16 = 39;
const PHYMEM_CACHE_WB: u16 = 40;

// Status codes, upper 32 bits (tdx-module-abi.md §4.2) and operand ids (§4.3).
const fn st(upper: u32, operand: u32) -> u64 {
    ((upper as u64) << 32) | operand as u64
}
const RAX: u32 = 0;
const RCX: u32 = 1;
const RDX: u32 = 2;
const R8: u32 = 8;
const ATTRIBUTES: u32 = 64;
const XFAM: u32 = 65;
const MAX_VCPUS: u32 = 68;
const OPERAND_INVALID: u32 = 0xC000_0100;
const PAGE_METADATA_INCORRECT: u32 = 0xC000_0300;
const TD_ASSOCIATED_PAGES_EXIST: u32 = 0xC000_0400;
const SYS_INIT_NOT_PENDING: u32 = 0xC000_0500;
const SYS_LP_INIT_DONE: u32 = 0xC000_0503;
const TDCS_NOT_ALLOCATED: u32 = 0xC000_0606;
const LIFECYCLE_STATE_INCORRECT: u32 = 0xC000_0607;
const OP_STATE_INCORRECT: u32 = 0xC000_0608;
const NO_VCPUS: u32 = 0xC000_0609;
const VCPU_STATE_INCORRECT: u32 = 0xC000_0700;
const TD_KEYS_NOT_CONFIGURED: u32 = 0x8000_0810;
const KEY_CONFIGURED: u32 = 0x0000_0815;
const WBCACHE_NOT_COMPLETE: u32 = 0x8000_0817;
const HKID_NOT_FREE: u32 = 0xC000_0820;
const EPT_WALK_FAILED: u32 = 0xC000_0B00;
const EPT_ENTRY_NOT_PRESENT: u32 = 0xC000_0B03;
const GPA_RANGE_NOT_BLOCKED: u32 = 0xC000_0B06;
const GPA_RANGE_ALREADY_BLOCKED: u32 = 0x0000_0B07;
const TLB_TRACKING_NOT_DONE: u32 = 0xC000_0B08;
const EPT_ENTRY_STATE_INCORRECT: u32 = 0xC000_0B0D;

/// GPA of the page added before finalization (S-EPT levels 3..1 exist for it).
const GPA_X: u64 = 0x1000;
/// A second GPA under the same page table, never added.
const GPA_Y: u64 = 0x2000;
/// A GPA 1 GiB away: no PDPT entry below the root for it.
const GPA_FAR: u64 = 0x4000_0000;
/// Shared bit for GPAW 48.
const SHARED_48: u64 = 1 << 47;

/// How far a fresh platform is driven before the wrong call, in the order of
/// tdx-module-abi.md §7.7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Module up, TD created with TDH.MNG.CREATE (lifecycle HKID_ASSIGNED).
    Created,
    /// TDH.MNG.KEY.CONFIG on package 0 only (more than one package needed for this stage).
    KeyOnePackage,
    /// Keys configured on every package (KEYS_CONFIGURED), no TDCS.
    KeysConfigured,
    /// All TDCS pages added (OP_STATE UNINITIALIZED).
    TdcsAdded,
    /// TDH.MNG.INIT done (INITIALIZED).
    Initialized,
    /// One vCPU created with all TDVPS pages, not initialised.
    VcpuCreated,
    /// vCPU initialised (TDH.VP.INIT on LP 0).
    VcpuInit,
    /// S-EPT levels 3, 2, 1 for GPA_X.
    SeptReady,
    /// Page added at GPA_X (MAPPED).
    PageAdded,
    /// TDH.MR.FINALIZE done (RUNNABLE).
    Finalized,
    /// GPA_X blocked, epoch not tracked.
    Blocked,
    /// TDH.VP.FLUSH + TDH.MNG.VPFLUSHDONE (TD_BLOCKED, HKID FLUSHED).
    FlushDone,
    /// TDH.PHYMEM.CACHE.WB everywhere + TDH.MNG.KEY.FREEID (TD_TEARDOWN).
    Teardown,
}

/// Objects a case refers to.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// TDR.
    pub tdr: u64,
    /// The TD's HKID.
    pub hkid: u16,
    /// TDCS pages.
    pub tdcs: Vec<u64>,
    /// TDVPR of the vCPU.
    pub tdvpr: u64,
    /// Page mapped at GPA_X.
    pub page_x: u64,
    /// A free (NDA) frame owned by the host.
    pub free: u64,
    /// A host page holding TD_PARAMS (1024-aligned) for the default configuration.
    pub td_params: u64,
    /// A host source page.
    pub source: u64,
}

/// The wrong call: leaf, version and operands, built from the context.
pub type Op = fn(&Ctx) -> (u16, u8, Regs);

/// One wrong sequence.
pub struct Case {
    /// Name (unique).
    pub name: &'static str,
    /// Stage reached first.
    pub stage: Stage,
    /// The wrong call.
    pub op: Op,
    /// Exact expected RAX.
    pub expect: u64,
}

fn r(rcx: u64, rdx: u64, r8: u64, r9: u64) -> Regs {
    Regs {
        rcx,
        rdx,
        r8,
        r9,
        ..Default::default()
    }
}

/// The table.
pub fn table() -> Vec<Case> {
    use Stage::*;
    let c = |name, stage, op: Op, expect| Case {
        name,
        stage,
        op,
        expect,
    };
    vec![
        // --- dispatcher / platform ---
        c(
            "version 1 on MNG.CREATE",
            Created,
            |x| (MNG_CREATE, 1, r(x.free, 1, 0, 0)),
            st(OPERAND_INVALID, RAX),
        ),
        c(
            "SYS.INIT twice",
            Created,
            |_| (SYS_INIT, 0, r(0, 0, 0, 0)),
            st(SYS_INIT_NOT_PENDING, 0),
        ),
        c(
            "SYS.LP.INIT twice",
            Created,
            |_| (SYS_LP_INIT, 0, r(0, 0, 0, 0)),
            st(SYS_LP_INIT_DONE, 0),
        ),
        // --- HKID / KOT, PAMT type of the TDR operand ---
        c(
            "MNG.CREATE with a used HKID",
            Created,
            |x| (MNG_CREATE, 0, r(x.free, u64::from(x.hkid), 0, 0)),
            st(HKID_NOT_FREE, 0),
        ),
        c(
            "MNG.CREATE with a non-TDX KeyID",
            Created,
            |x| (MNG_CREATE, 0, r(x.free, 1, 0, 0)),
            st(OPERAND_INVALID, RDX),
        ),
        c(
            "MNG.CREATE on a page that is a TDR",
            Created,
            |x| (MNG_CREATE, 0, r(x.tdr, u64::from(x.hkid) + 1, 0, 0)),
            st(PAGE_METADATA_INCORRECT, RCX),
        ),
        // --- lifecycle ---
        c(
            "MNG.KEY.CONFIG on a configured package",
            KeyOnePackage,
            |x| (MNG_KEY_CONFIG, 0, r(x.tdr, 0, 0, 0)),
            st(KEY_CONFIGURED, 0),
        ),
        c(
            "MNG.KEY.CONFIG after KEYS_CONFIGURED",
            KeysConfigured,
            |x| (MNG_KEY_CONFIG, 0, r(x.tdr, 0, 0, 0)),
            st(LIFECYCLE_STATE_INCORRECT, 0),
        ),
        c(
            "MNG.KEY.CONFIG on a non-TDR page",
            Created,
            |x| (MNG_KEY_CONFIG, 0, r(x.free, 0, 0, 0)),
            st(PAGE_METADATA_INCORRECT, RCX),
        ),
        c(
            "MNG.ADDCX before keys",
            Created,
            |x| (MNG_ADDCX, 0, r(x.free, x.tdr, 0, 0)),
            st(TD_KEYS_NOT_CONFIGURED, 0),
        ),
        c(
            "MNG.ADDCX with the TDR as new page",
            KeysConfigured,
            |x| (MNG_ADDCX, 0, r(x.tdr, x.tdr, 0, 0)),
            st(PAGE_METADATA_INCORRECT, RCX),
        ),
        c(
            "MNG.INIT before keys",
            Created,
            |x| (MNG_INIT, 0, r(x.tdr, x.td_params, 0, 0)),
            st(TD_KEYS_NOT_CONFIGURED, 0),
        ),
        c(
            "MNG.INIT without TDCS",
            KeysConfigured,
            |x| (MNG_INIT, 0, r(x.tdr, x.td_params, 0, 0)),
            st(TDCS_NOT_ALLOCATED, 0),
        ),
        c(
            "VP.CREATE before keys",
            Created,
            |x| (VP_CREATE, 0, r(x.free, x.tdr, 0, 0)),
            st(TD_KEYS_NOT_CONFIGURED, 0),
        ),
        c(
            "MNG.KEY.FREEID while KEYS_CONFIGURED",
            Initialized,
            |x| (MNG_KEY_FREEID, 0, r(x.tdr, 0, 0, 0)),
            st(LIFECYCLE_STATE_INCORRECT, 0),
        ),
        c(
            "MNG.KEY.FREEID before CACHE.WB",
            FlushDone,
            |x| (MNG_KEY_FREEID, 0, r(x.tdr, 0, 0, 0)),
            st(WBCACHE_NOT_COMPLETE, 0),
        ),
        c(
            "SEPT.ADD after VPFLUSHDONE",
            FlushDone,
            |x| (MEM_SEPT_ADD, 0, r(GPA_FAR | 2, x.tdr, x.free, 0)),
            st(TD_KEYS_NOT_CONFIGURED, 0),
        ),
        c(
            "PAGE.RECLAIM while TD_BLOCKED",
            FlushDone,
            |x| (PHYMEM_PAGE_RECLAIM, 0, r(x.tdcs[0], 0, 0, 0)),
            st(LIFECYCLE_STATE_INCORRECT, 0),
        ),
        c(
            "PAGE.RECLAIM of the TDR with children",
            Teardown,
            |x| (PHYMEM_PAGE_RECLAIM, 0, r(x.tdr, 0, 0, 0)),
            st(TD_ASSOCIATED_PAGES_EXIST, 0),
        ),
        c(
            "PAGE.RECLAIM of a free page",
            Teardown,
            |x| (PHYMEM_PAGE_RECLAIM, 0, r(x.free, 0, 0, 0)),
            st(PAGE_METADATA_INCORRECT, RCX),
        ),
        // --- OP_STATE (§7.3) ---
        c(
            "MNG.ADDCX after MNG.INIT",
            Initialized,
            |x| (MNG_ADDCX, 0, r(x.free, x.tdr, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "MNG.INIT twice",
            Initialized,
            |x| (MNG_INIT, 0, r(x.tdr, x.td_params, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "VP.CREATE while UNINITIALIZED",
            TdcsAdded,
            |x| (VP_CREATE, 0, r(x.free, x.tdr, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "VP.CREATE while RUNNABLE",
            Finalized,
            |x| (VP_CREATE, 0, r(x.free, x.tdr, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "PAGE.ADD while UNINITIALIZED",
            TdcsAdded,
            |x| (MEM_PAGE_ADD, 0, r(GPA_Y, x.tdr, x.free, x.source)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "PAGE.ADD while RUNNABLE",
            Finalized,
            |x| (MEM_PAGE_ADD, 0, r(GPA_Y, x.tdr, x.free, x.source)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "MR.EXTEND while RUNNABLE",
            Finalized,
            |x| (MR_EXTEND, 0, r(GPA_X, x.tdr, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "MR.FINALIZE twice",
            Finalized,
            |x| (MR_FINALIZE, 0, r(x.tdr, 0, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "MR.FINALIZE without VP.INIT",
            VcpuCreated,
            |x| (MR_FINALIZE, 0, r(x.tdr, 0, 0, 0)),
            st(NO_VCPUS, 0),
        ),
        c(
            "SEPT.ADD while UNINITIALIZED",
            TdcsAdded,
            |x| (MEM_SEPT_ADD, 0, r(3, x.tdr, x.free, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "PAGE.AUG while UNINITIALIZED",
            TdcsAdded,
            |x| (MEM_PAGE_AUG, 0, r(GPA_Y, x.tdr, x.free, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "RANGE.BLOCK while UNINITIALIZED",
            TdcsAdded,
            |x| (MEM_RANGE_BLOCK, 0, r(GPA_X, x.tdr, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "MEM.TRACK while UNINITIALIZED",
            TdcsAdded,
            |x| (MEM_TRACK, 0, r(x.tdr, 0, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        c(
            "PAGE.REMOVE while UNINITIALIZED",
            TdcsAdded,
            |x| (MEM_PAGE_REMOVE, 0, r(GPA_X, x.tdr, 0, 0)),
            st(OP_STATE_INCORRECT, 0),
        ),
        // --- vCPU state ---
        c(
            "VP.ADDCX after VP.INIT",
            VcpuInit,
            |x| (VP_ADDCX, 0, r(x.free, x.tdvpr, 0, 0)),
            st(VCPU_STATE_INCORRECT, 0),
        ),
        c(
            "VP.INIT twice",
            VcpuInit,
            |x| (VP_INIT, 0, r(x.tdvpr, 0, 0, 0)),
            st(VCPU_STATE_INCORRECT, 0),
        ),
        // --- MNG.INIT TD_PARAMS checks ---
        c(
            "MNG.INIT with TD_PARAMS not 1024-aligned",
            TdcsAdded,
            |x| (MNG_INIT, 0, r(x.tdr, x.td_params + 512, 0, 0)),
            st(OPERAND_INVALID, RDX),
        ),
        // --- operands of S-EPT leaves ---
        c(
            "PAGE.ADD at level 1",
            SeptReady,
            |x| (MEM_PAGE_ADD, 0, r(0x20_0000 | 1, x.tdr, x.free, x.source)),
            st(OPERAND_INVALID, RCX),
        ),
        c(
            "PAGE.ADD at a shared GPA",
            SeptReady,
            |x| {
                (
                    MEM_PAGE_ADD,
                    0,
                    r(SHARED_48 | GPA_Y, x.tdr, x.free, x.source),
                )
            },
            st(OPERAND_INVALID, RCX),
        ),
        c(
            "PAGE.ADD onto the TDR page",
            SeptReady,
            |x| (MEM_PAGE_ADD, 0, r(GPA_Y, x.tdr, x.tdr, x.source)),
            st(PAGE_METADATA_INCORRECT, R8),
        ),
        c(
            "PAGE.ADD without S-EPT below the root",
            SeptReady,
            |x| (MEM_PAGE_ADD, 0, r(GPA_FAR, x.tdr, x.free, x.source)),
            st(EPT_WALK_FAILED, RCX),
        ),
        c(
            "SEPT.ADD at level 0",
            Initialized,
            |x| (MEM_SEPT_ADD, 0, r(GPA_X, x.tdr, x.free, 0)),
            st(OPERAND_INVALID, RCX),
        ),
        c(
            "SEPT.ADD with the TDR as page",
            Initialized,
            |x| (MEM_SEPT_ADD, 0, r(3, x.tdr, x.tdr, 0)),
            st(PAGE_METADATA_INCORRECT, R8),
        ),
        c(
            "PAGE.AUG at 1 GiB",
            Finalized,
            |x| (MEM_PAGE_AUG, 0, r(GPA_FAR | 2, x.tdr, x.free, 0)),
            st(OPERAND_INVALID, RCX),
        ),
        c(
            "MR.EXTEND not 256-aligned",
            PageAdded,
            |x| (MR_EXTEND, 0, r(GPA_X + 0x80, x.tdr, 0, 0)),
            st(OPERAND_INVALID, RCX),
        ),
        // --- S-EPT entry state (§7.6) ---
        c(
            "SEPT.ADD on an NL_MAPPED entry",
            SeptReady,
            |x| (MEM_SEPT_ADD, 0, r(3, x.tdr, x.free, 0)),
            st(EPT_ENTRY_STATE_INCORRECT, RCX),
        ),
        c(
            "PAGE.ADD on a MAPPED entry",
            PageAdded,
            |x| (MEM_PAGE_ADD, 0, r(GPA_X, x.tdr, x.free, x.source)),
            st(EPT_ENTRY_STATE_INCORRECT, RCX),
        ),
        c(
            "MR.EXTEND on a FREE entry",
            PageAdded,
            |x| (MR_EXTEND, 0, r(GPA_Y, x.tdr, 0, 0)),
            st(EPT_ENTRY_NOT_PRESENT, RCX),
        ),
        c(
            "PAGE.AUG on a MAPPED entry",
            Finalized,
            |x| (MEM_PAGE_AUG, 0, r(GPA_X, x.tdr, x.free, 0)),
            st(EPT_ENTRY_STATE_INCORRECT, RCX),
        ),
        c(
            "RANGE.UNBLOCK of a MAPPED entry",
            Finalized,
            |x| (MEM_RANGE_UNBLOCK, 0, r(GPA_X, x.tdr, 0, 0)),
            st(EPT_ENTRY_STATE_INCORRECT, RCX),
        ),
        c(
            "RANGE.BLOCK twice",
            Blocked,
            |x| (MEM_RANGE_BLOCK, 0, r(GPA_X, x.tdr, 0, 0)),
            st(GPA_RANGE_ALREADY_BLOCKED, RCX),
        ),
        c(
            "PAGE.REMOVE of a FREE entry",
            Finalized,
            |x| (MEM_PAGE_REMOVE, 0, r(GPA_Y, x.tdr, 0, 0)),
            st(EPT_ENTRY_STATE_INCORRECT, RCX),
        ),
        // --- TLB tracking (§7.3, emulation-notes §3.5) ---
        c(
            "PAGE.REMOVE unblocked while RUNNABLE",
            Finalized,
            |x| (MEM_PAGE_REMOVE, 0, r(GPA_X, x.tdr, 0, 0)),
            st(GPA_RANGE_NOT_BLOCKED, RCX),
        ),
        c(
            "PAGE.REMOVE blocked but not tracked",
            Blocked,
            |x| (MEM_PAGE_REMOVE, 0, r(GPA_X, x.tdr, 0, 0)),
            st(TLB_TRACKING_NOT_DONE, RCX),
        ),
    ]
}

/// Drives `module` (already brought up by the driver) to `stage` with raw SEAMCALLs on its
/// logical processors, returning the context, or the first unexpected failure.
pub fn drive_to<S: Seamcall, M: HostMemory>(
    module: &TdxModule<S, M>,
    stage: Stage,
) -> Result<Ctx, String> {
    let lp = |i: u32| module.lp(i).ok_or_else(|| format!("no LP {i}"));
    let call = |i: u32, leaf: u16, regs: Regs| -> Result<Regs, String> {
        let mut regs = regs;
        regs.rax = u64::from(leaf);
        let status = lp(i)?.seamcall(&mut regs).raw();
        if status >> 63 != 0 {
            return Err(format!("setup leaf {leaf} failed with {status:#x}"));
        }
        Ok(regs)
    };
    let alloc = || module.frames().allocate().map_err(|e| e.to_string());
    let mut x = Ctx {
        free: alloc()?,
        source: alloc()?,
        td_params: alloc()?,
        tdr: alloc()?,
        hkid: module.hkids().allocate().map_err(|e| e.to_string())?,
        ..Default::default()
    };
    let params = encode_td_params(&TdConfig::default(), module).map_err(|e| e.to_string())?;
    module
        .host_memory()
        .write(x.td_params, &params)
        .map_err(|e| e.to_string())?;
    call(0, MNG_CREATE, r(x.tdr, u64::from(x.hkid), 0, 0))?;
    let pkgs = module.package_lps();
    if stage >= Stage::KeyOnePackage {
        let upto = if stage == Stage::KeyOnePackage {
            1
        } else {
            pkgs.len()
        };
        for &(_, i) in &pkgs[..upto] {
            call(i as u32, MNG_KEY_CONFIG, r(x.tdr, 0, 0, 0))?;
        }
    }
    if stage >= Stage::TdcsAdded {
        for _ in 0..module.info().tdcs_pages() {
            let p = alloc()?;
            call(0, MNG_ADDCX, r(p, x.tdr, 0, 0))?;
            x.tdcs.push(p);
        }
    }
    if stage >= Stage::Initialized {
        call(0, MNG_INIT, r(x.tdr, x.td_params, 0, 0))?;
    }
    if stage >= Stage::VcpuCreated {
        x.tdvpr = alloc()?;
        call(0, VP_CREATE, r(x.tdvpr, x.tdr, 0, 0))?;
        for _ in 1..module.info().tdvps_pages() {
            call(0, VP_ADDCX, r(alloc()?, x.tdvpr, 0, 0))?;
        }
    }
    if stage >= Stage::VcpuInit {
        call(0, VP_INIT, r(x.tdvpr, 0, 0, 0))?;
    }
    if stage >= Stage::SeptReady {
        for level in [3u64, 2, 1] {
            call(0, MEM_SEPT_ADD, r(level, x.tdr, alloc()?, 0))?;
        }
    }
    if stage >= Stage::PageAdded {
        x.page_x = alloc()?;
        call(0, MEM_PAGE_ADD, r(GPA_X, x.tdr, x.page_x, x.source))?;
    }
    if stage >= Stage::Finalized {
        call(0, MR_FINALIZE, r(x.tdr, 0, 0, 0))?;
    }
    if stage >= Stage::Blocked {
        call(0, MEM_RANGE_BLOCK, r(GPA_X, x.tdr, 0, 0))?;
    }
    if stage >= Stage::FlushDone {
        let mut regs = r(x.tdvpr, 0, 0, 0);
        regs.rax = u64::from(VP_FLUSH);
        // Not associated is fine: the vCPU never ran.
        let _ = lp(0)?.seamcall(&mut regs);
        call(0, MNG_VPFLUSHDONE, r(x.tdr, 0, 0, 0))?;
    }
    if stage >= Stage::Teardown {
        for &(_, i) in &pkgs {
            call(i as u32, PHYMEM_CACHE_WB, r(0, 0, 0, 0))?;
        }
        call(0, MNG_KEY_FREEID, r(x.tdr, 0, 0, 0))?;
    }
    Ok(x)
}

/// Runs every case on a fresh module from `fresh` and returns the mismatches as
/// `(case, expected, got)`.
pub fn run_table<S: Seamcall, M: HostMemory>(
    fresh: impl Fn() -> TdxModule<S, M>,
) -> Vec<(&'static str, u64, Result<u64, String>)> {
    let mut bad = Vec::new();
    for case in table() {
        let module = fresh();
        let got = drive_to(&module, case.stage).and_then(|x| {
            let (leaf, version, mut regs) = (case.op)(&x);
            regs.rax = u64::from(leaf) | (u64::from(version) << 16);
            let s = module.lp(0).ok_or("no LP 0")?;
            Ok(s.seamcall(&mut regs).raw())
        });
        if got.as_ref() != Ok(&case.expect) {
            bad.push((case.name, case.expect, got));
        }
    }
    bad
}

#[test]
fn table_has_forty_distinct_wrong_sequences() {
    let t = table();
    assert!(t.len() >= 40, "only {} cases", t.len());
    let mut names: Vec<_> = t.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), t.len(), "case names must be unique");
    // Known encodings from tdx-module-abi.md §4.2–4.3, spelled out independently.
    assert_eq!(st(OP_STATE_INCORRECT, 0), 0xC000_0608_0000_0000);
    assert_eq!(st(EPT_ENTRY_STATE_INCORRECT, RCX), 0xC000_0B0D_0000_0001);
    assert_eq!(st(PAGE_METADATA_INCORRECT, R8), 0xC000_0300_0000_0008);
    assert_eq!(st(OPERAND_INVALID, ATTRIBUTES), 0xC000_0100_0000_0040);
    let _ = (XFAM, MAX_VCPUS);
    // Every case is a failure except the two success-class warnings.
    let warnings: Vec<_> = t
        .iter()
        .filter(|c| c.expect >> 63 == 0)
        .map(|c| c.name)
        .collect();
    assert_eq!(
        warnings,
        vec![
            "MNG.KEY.CONFIG on a configured package",
            "RANGE.BLOCK twice"
        ]
    );
}
