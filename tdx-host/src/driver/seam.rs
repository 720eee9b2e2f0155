//! The driver's single SEAMCALL entry: issues one leaf through [`Seamcall`] and turns a failing
//! status into a [`SeamcallFailure`] that names the leaf and keeps the output registers (the
//! module returns S-EPT entry details and extended error information in them).

use tdx_abi::call::{Regs, Seamcall};

/// SEAMCALL leaf numbers the driver issues, as integers for match arms (from `tdx_abi::leaf`).
#[allow(missing_docs)]
pub mod leaf {
    use tdx_abi::leaf::SeamcallLeaf;

    pub const VP_ENTER: u16 = SeamcallLeaf::TDH_VP_ENTER.raw();
    pub const MNG_ADDCX: u16 = SeamcallLeaf::TDH_MNG_ADDCX.raw();
    pub const MEM_PAGE_ADD: u16 = SeamcallLeaf::TDH_MEM_PAGE_ADD.raw();
    pub const MEM_SEPT_ADD: u16 = SeamcallLeaf::TDH_MEM_SEPT_ADD.raw();
    pub const VP_ADDCX: u16 = SeamcallLeaf::TDH_VP_ADDCX.raw();
    pub const MEM_PAGE_AUG: u16 = SeamcallLeaf::TDH_MEM_PAGE_AUG.raw();
    pub const MEM_RANGE_BLOCK: u16 = SeamcallLeaf::TDH_MEM_RANGE_BLOCK.raw();
    pub const MNG_KEY_CONFIG: u16 = SeamcallLeaf::TDH_MNG_KEY_CONFIG.raw();
    pub const MNG_CREATE: u16 = SeamcallLeaf::TDH_MNG_CREATE.raw();
    pub const VP_CREATE: u16 = SeamcallLeaf::TDH_VP_CREATE.raw();
    pub const MNG_RD: u16 = SeamcallLeaf::TDH_MNG_RD.raw();
    pub const MNG_WR: u16 = SeamcallLeaf::TDH_MNG_WR.raw();
    pub const MR_EXTEND: u16 = SeamcallLeaf::TDH_MR_EXTEND.raw();
    pub const MR_FINALIZE: u16 = SeamcallLeaf::TDH_MR_FINALIZE.raw();
    pub const VP_FLUSH: u16 = SeamcallLeaf::TDH_VP_FLUSH.raw();
    pub const MNG_VPFLUSHDONE: u16 = SeamcallLeaf::TDH_MNG_VPFLUSHDONE.raw();
    pub const MNG_KEY_FREEID: u16 = SeamcallLeaf::TDH_MNG_KEY_FREEID.raw();
    pub const MNG_INIT: u16 = SeamcallLeaf::TDH_MNG_INIT.raw();
    pub const VP_INIT: u16 = SeamcallLeaf::TDH_VP_INIT.raw();
    pub const MEM_SEPT_RD: u16 = SeamcallLeaf::TDH_MEM_SEPT_RD.raw();
    pub const VP_RD: u16 = SeamcallLeaf::TDH_VP_RD.raw();
    pub const PHYMEM_PAGE_RECLAIM: u16 = SeamcallLeaf::TDH_PHYMEM_PAGE_RECLAIM.raw();
    pub const MEM_PAGE_REMOVE: u16 = SeamcallLeaf::TDH_MEM_PAGE_REMOVE.raw();
    pub const SYS_KEY_CONFIG: u16 = SeamcallLeaf::TDH_SYS_KEY_CONFIG.raw();
    pub const SYS_INIT: u16 = SeamcallLeaf::TDH_SYS_INIT.raw();
    pub const SYS_RD: u16 = SeamcallLeaf::TDH_SYS_RD.raw();
    pub const SYS_LP_INIT: u16 = SeamcallLeaf::TDH_SYS_LP_INIT.raw();
    pub const SYS_TDMR_INIT: u16 = SeamcallLeaf::TDH_SYS_TDMR_INIT.raw();
    pub const MEM_TRACK: u16 = SeamcallLeaf::TDH_MEM_TRACK.raw();
    pub const MEM_RANGE_UNBLOCK: u16 = SeamcallLeaf::TDH_MEM_RANGE_UNBLOCK.raw();
    pub const PHYMEM_CACHE_WB: u16 = SeamcallLeaf::TDH_PHYMEM_CACHE_WB.raw();
    pub const PHYMEM_PAGE_WBINVD: u16 = SeamcallLeaf::TDH_PHYMEM_PAGE_WBINVD.raw();
    pub const SYS_CONFIG: u16 = SeamcallLeaf::TDH_SYS_CONFIG.raw();

    /// The spec name of a leaf (from `tdx_abi::leaf`).
    pub fn name(leaf: u16) -> &'static str {
        SeamcallLeaf::from_raw(leaf)
            .name()
            .unwrap_or("TDH.(unknown)")
    }
}

/// Completion-status codes the driver reacts to: bits 47:32 (class and L1 details) of the
/// status, which identify a code independently of the flag bits 63:60 (from `tdx_abi::status`).
#[allow(missing_docs)]
pub mod code {
    use tdx_abi::status::StatusCode;

    pub const INTERRUPTED_RESUMABLE: u16 = StatusCode::INTERRUPTED_RESUMABLE.raw();
    pub const OPERAND_BUSY: u16 = StatusCode::OPERAND_BUSY.raw();
    pub const PREVIOUS_TLB_EPOCH_BUSY: u16 = StatusCode::PREVIOUS_TLB_EPOCH_BUSY.raw();
    pub const RND_NO_ENTROPY: u16 = StatusCode::RND_NO_ENTROPY.raw();
    pub const SYS_LP_INIT_DONE: u16 = StatusCode::SYS_LP_INIT_DONE.raw();
    pub const VCPU_NOT_ASSOCIATED: u16 = StatusCode::VCPU_NOT_ASSOCIATED.raw();
    pub const KEY_GENERATION_FAILED: u16 = StatusCode::KEY_GENERATION_FAILED.raw();
    pub const KEY_CONFIGURED: u16 = StatusCode::KEY_CONFIGURED.raw();
    pub const NO_HKID_READY_TO_WBCACHE: u16 = StatusCode::NO_HKID_READY_TO_WBCACHE.raw();
    pub const TDMR_ALREADY_INITIALIZED: u16 = StatusCode::TDMR_ALREADY_INITIALIZED.raw();
    pub const GPA_RANGE_ALREADY_BLOCKED: u16 = StatusCode::GPA_RANGE_ALREADY_BLOCKED.raw();
    pub const EPT_ENTRY_STATE_INCORRECT: u16 = StatusCode::EPT_ENTRY_STATE_INCORRECT.raw();
}

/// Bits 47:32 of a status: the code without flags and details.
pub const fn status_code(status: u64) -> u16 {
    (status >> 32) as u16
}

/// A SEAMCALL that returned an error status (bit 63 set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} failed: {} (status {status:#018x})", leaf::name(*.leaf), tdx_abi::status::TdxStatus::from_raw(*.status))]
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
