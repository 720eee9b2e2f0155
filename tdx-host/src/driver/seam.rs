//! The driver's single SEAMCALL entry: issues one leaf through [`Seamcall`] and turns a failing
//! status into a [`SeamcallFailure`] that names the leaf and keeps the output registers (the
//! module returns S-EPT entry details and extended error information in them).

use tdx_abi::call::{Regs, Seamcall};

/// SEAMCALL leaf numbers the driver issues (tdx-module-abi.md §2).
#[allow(missing_docs)]
pub mod leaf {
    pub const VP_ENTER: u16 = 0;
    pub const MNG_ADDCX: u16 = 1;
    pub const MEM_PAGE_ADD: u16 = 2;
    pub const MEM_SEPT_ADD: u16 = 3;
    pub const VP_ADDCX: u16 = 4;
    pub const MEM_PAGE_AUG: u16 = 6;
    pub const MEM_RANGE_BLOCK: u16 = 7;
    pub const MNG_KEY_CONFIG: u16 = 8;
    pub const MNG_CREATE: u16 = 9;
    pub const VP_CREATE: u16 = 10;
    pub const MNG_RD: u16 = 11;
    pub const MNG_WR: u16 = 13;
    pub const MR_EXTEND: u16 = 16;
    pub const MR_FINALIZE: u16 = 17;
    pub const VP_FLUSH: u16 = 18;
    pub const MNG_VPFLUSHDONE: u16 = 19;
    pub const MNG_KEY_FREEID: u16 = 20;
    pub const MNG_INIT: u16 = 21;
    pub const VP_INIT: u16 = 22;
    pub const MEM_SEPT_RD: u16 = 25;
    pub const VP_RD: u16 = 26;
    pub const PHYMEM_PAGE_RECLAIM: u16 = 28;
    pub const MEM_PAGE_REMOVE: u16 = 29;
    pub const SYS_KEY_CONFIG: u16 = 31;
    pub const SYS_INIT: u16 = 33;
    pub const SYS_RD: u16 = 34;
    pub const SYS_LP_INIT: u16 = 35;
    pub const SYS_TDMR_INIT: u16 = 36;
    pub const MEM_TRACK: u16 = 38;
    pub const MEM_RANGE_UNBLOCK: u16 = 39;
    pub const PHYMEM_CACHE_WB: u16 = 40;
    pub const PHYMEM_PAGE_WBINVD: u16 = 41;
    pub const SYS_CONFIG: u16 = 45;

    /// The spec name of a leaf the driver issues.
    pub fn name(leaf: u16) -> &'static str {
        match leaf {
            VP_ENTER => "TDH.VP.ENTER",
            MNG_ADDCX => "TDH.MNG.ADDCX",
            MEM_PAGE_ADD => "TDH.MEM.PAGE.ADD",
            MEM_SEPT_ADD => "TDH.MEM.SEPT.ADD",
            VP_ADDCX => "TDH.VP.ADDCX",
            MEM_PAGE_AUG => "TDH.MEM.PAGE.AUG",
            MEM_RANGE_BLOCK => "TDH.MEM.RANGE.BLOCK",
            MNG_KEY_CONFIG => "TDH.MNG.KEY.CONFIG",
            MNG_CREATE => "TDH.MNG.CREATE",
            VP_CREATE => "TDH.VP.CREATE",
            MNG_RD => "TDH.MNG.RD",
            MNG_WR => "TDH.MNG.WR",
            MR_EXTEND => "TDH.MR.EXTEND",
            MR_FINALIZE => "TDH.MR.FINALIZE",
            VP_FLUSH => "TDH.VP.FLUSH",
            MNG_VPFLUSHDONE => "TDH.MNG.VPFLUSHDONE",
            MNG_KEY_FREEID => "TDH.MNG.KEY.FREEID",
            MNG_INIT => "TDH.MNG.INIT",
            VP_INIT => "TDH.VP.INIT",
            MEM_SEPT_RD => "TDH.MEM.SEPT.RD",
            VP_RD => "TDH.VP.RD",
            PHYMEM_PAGE_RECLAIM => "TDH.PHYMEM.PAGE.RECLAIM",
            MEM_PAGE_REMOVE => "TDH.MEM.PAGE.REMOVE",
            SYS_KEY_CONFIG => "TDH.SYS.KEY.CONFIG",
            SYS_INIT => "TDH.SYS.INIT",
            SYS_RD => "TDH.SYS.RD",
            SYS_LP_INIT => "TDH.SYS.LP.INIT",
            SYS_TDMR_INIT => "TDH.SYS.TDMR.INIT",
            MEM_TRACK => "TDH.MEM.TRACK",
            MEM_RANGE_UNBLOCK => "TDH.MEM.RANGE.UNBLOCK",
            PHYMEM_CACHE_WB => "TDH.PHYMEM.CACHE.WB",
            PHYMEM_PAGE_WBINVD => "TDH.PHYMEM.PAGE.WBINVD",
            SYS_CONFIG => "TDH.SYS.CONFIG",
            _ => "TDH.(unknown)",
        }
    }
}

/// Completion-status codes the driver reacts to: bits 47:32 (class and L1 details) of the
/// status, which identify a code independently of the flag bits 63:60 (tdx-module-abi.md §4).
#[allow(missing_docs)]
pub mod code {
    pub const INTERRUPTED_RESUMABLE: u16 = 0x0003;
    pub const OPERAND_BUSY: u16 = 0x0200;
    pub const PREVIOUS_TLB_EPOCH_BUSY: u16 = 0x0201;
    pub const RND_NO_ENTROPY: u16 = 0x0203;
    pub const SYS_LP_INIT_DONE: u16 = 0x0503;
    pub const VCPU_NOT_ASSOCIATED: u16 = 0x0702;
    pub const KEY_GENERATION_FAILED: u16 = 0x0800;
    pub const KEY_CONFIGURED: u16 = 0x0815;
    pub const NO_HKID_READY_TO_WBCACHE: u16 = 0x0821;
    pub const TDMR_ALREADY_INITIALIZED: u16 = 0x0A03;
    pub const GPA_RANGE_ALREADY_BLOCKED: u16 = 0x0B07;
    pub const EPT_ENTRY_STATE_INCORRECT: u16 = 0x0B0D;
}

/// Bits 47:32 of a status: the code without flags and details.
pub const fn status_code(status: u64) -> u16 {
    (status >> 32) as u16
}

/// A SEAMCALL that returned an error status (bit 63 set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} (leaf {leaf}) failed with status {status:#018x}", leaf::name(*.leaf))]
pub struct SeamcallFailure {
    /// Leaf number.
    pub leaf: u16,
    /// The 64-bit completion status.
    pub status: u64,
    /// RCX on return (S-EPT entry or extended error information for some leaves).
    pub rcx: u64,
    /// RDX on return (S-EPT level/state for S-EPT errors).
    pub rdx: u64,
}

impl SeamcallFailure {
    /// Bits 47:32 of the status.
    pub const fn code(&self) -> u16 {
        status_code(self.status)
    }
    /// Bits 31:0 of the status: the operand id for operand errors.
    pub const fn details(&self) -> u32 {
        self.status as u32
    }
}

/// Issues `leaf` (version `version`) with the operands in `regs`. Returns the output
/// registers when the status has bit 63 clear (success or a success-class warning, left in
/// `rax`), else a [`SeamcallFailure`].
pub fn call<S: Seamcall + ?Sized>(
    s: &S,
    leaf: u16,
    version: u8,
    mut regs: Regs,
) -> Result<Regs, SeamcallFailure> {
    regs.rax = u64::from(leaf) | (u64::from(version) << 16);
    let status = s.seamcall(&mut regs).raw();
    regs.rax = status;
    if status >> 63 != 0 {
        return Err(SeamcallFailure {
            leaf,
            status,
            rcx: regs.rcx,
            rdx: regs.rdx,
        });
    }
    Ok(regs)
}

/// Like [`call`], retrying (up to `max_retries` more times) while the module reports
/// `TDX_RND_NO_ENTROPY` or `TDX_OPERAND_BUSY`/`TDX_KEY_GENERATION_FAILED`-style transient
/// conditions listed in `retry_on` (Linux's `sc_retry` retries RND_NO_ENTROPY on every leaf).
pub fn call_retry<S: Seamcall + ?Sized>(
    s: &S,
    leaf: u16,
    version: u8,
    regs: Regs,
    retry_on: &[u16],
    max_retries: u32,
) -> Result<Regs, SeamcallFailure> {
    let mut attempt = 0;
    loop {
        match call(s, leaf, version, regs) {
            Err(e)
                if attempt < max_retries
                    && (e.code() == code::RND_NO_ENTROPY || retry_on.contains(&e.code())) =>
            {
                attempt += 1;
                std::hint::spin_loop();
            }
            r => return r,
        }
    }
}
