//! The status codes, operand ids and leaf numbers the emulated module uses, as plain integers
//! for `match` arms and register arithmetic. Every value is taken from `tdx_abi::status` /
//! `tdx_abi::leaf`, the single source of truth (the canonical 1.5.01 status values).

#![allow(dead_code)]

use tdx_abi::leaf::{SeamcallLeaf, TdcallLeaf, VmxExitReason};
use tdx_abi::status::{OperandId, StatusCode};

/// The upper 32 bits of the canonical 1.5.01 status of `c`.
const fn code(c: StatusCode) -> u32 {
    (c.canonical_status().raw() >> 32) as u32
}

/// Builds a full status from the upper 32 bits (§4.2) and the low 32 bits (operand id or info).
pub(crate) const fn status(upper: u32, low: u32) -> u64 {
    ((upper as u64) << 32) | low as u64
}

/// True for a status with bit 63 (ERROR) set.
pub(crate) const fn is_error(status: u64) -> bool {
    status >> 63 != 0
}

// Status codes: value of the upper 32 bits (tdx-module-abi.md §4.2).
pub(crate) const SUCCESS: u32 = code(StatusCode::SUCCESS);
pub(crate) const NON_RECOVERABLE_VCPU: u32 = code(StatusCode::NON_RECOVERABLE_VCPU);
pub(crate) const INTERRUPTED_RESUMABLE: u32 = code(StatusCode::INTERRUPTED_RESUMABLE);
pub(crate) const OPERAND_INVALID: u32 = code(StatusCode::OPERAND_INVALID);
pub(crate) const OPERAND_ADDR_RANGE_ERROR: u32 = code(StatusCode::OPERAND_ADDR_RANGE_ERROR);
pub(crate) const OPERAND_BUSY: u32 = code(StatusCode::OPERAND_BUSY);
pub(crate) const PREVIOUS_TLB_EPOCH_BUSY: u32 = code(StatusCode::PREVIOUS_TLB_EPOCH_BUSY);
pub(crate) const SYS_BUSY: u32 = code(StatusCode::SYS_BUSY);
pub(crate) const PAGE_METADATA_INCORRECT: u32 = code(StatusCode::PAGE_METADATA_INCORRECT);
pub(crate) const TD_ASSOCIATED_PAGES_EXIST: u32 = code(StatusCode::TD_ASSOCIATED_PAGES_EXIST);
pub(crate) const SYS_INIT_NOT_PENDING: u32 = code(StatusCode::SYS_INIT_NOT_PENDING);
pub(crate) const SYS_LP_INIT_NOT_DONE: u32 = code(StatusCode::SYS_LP_INIT_NOT_DONE);
pub(crate) const SYS_LP_INIT_DONE: u32 = code(StatusCode::SYS_LP_INIT_DONE);
pub(crate) const SYS_NOT_READY: u32 = code(StatusCode::SYS_NOT_READY);
pub(crate) const SYS_KEY_CONFIG_NOT_PENDING: u32 = code(StatusCode::SYS_KEY_CONFIG_NOT_PENDING);
pub(crate) const SYS_STATE_INCORRECT: u32 = code(StatusCode::SYS_STATE_INCORRECT);
pub(crate) const SYS_CONFIG_NOT_PENDING: u32 = code(StatusCode::SYS_CONFIG_NOT_PENDING);
pub(crate) const TD_FATAL: u32 = code(StatusCode::TD_FATAL);
pub(crate) const TDCS_NOT_ALLOCATED: u32 = code(StatusCode::TDCS_NOT_ALLOCATED);
pub(crate) const LIFECYCLE_STATE_INCORRECT: u32 = code(StatusCode::LIFECYCLE_STATE_INCORRECT);
pub(crate) const OP_STATE_INCORRECT: u32 = code(StatusCode::OP_STATE_INCORRECT);
pub(crate) const NO_VCPUS: u32 = code(StatusCode::NO_VCPUS);
pub(crate) const TDCX_NUM_INCORRECT: u32 = code(StatusCode::TDCX_NUM_INCORRECT);
pub(crate) const VCPU_STATE_INCORRECT: u32 = code(StatusCode::VCPU_STATE_INCORRECT);
pub(crate) const VCPU_ASSOCIATED: u32 = code(StatusCode::VCPU_ASSOCIATED);
pub(crate) const VCPU_NOT_ASSOCIATED: u32 = code(StatusCode::VCPU_NOT_ASSOCIATED);
pub(crate) const NO_VALID_VE_INFO: u32 = code(StatusCode::NO_VALID_VE_INFO);
pub(crate) const MAX_VCPUS_EXCEEDED: u32 = code(StatusCode::MAX_VCPUS_EXCEEDED);
pub(crate) const TD_KEYS_NOT_CONFIGURED: u32 = code(StatusCode::TD_KEYS_NOT_CONFIGURED);
pub(crate) const KEY_STATE_INCORRECT: u32 = code(StatusCode::KEY_STATE_INCORRECT);
pub(crate) const KEY_CONFIGURED: u32 = code(StatusCode::KEY_CONFIGURED);
pub(crate) const WBCACHE_NOT_COMPLETE: u32 = code(StatusCode::WBCACHE_NOT_COMPLETE);
pub(crate) const HKID_NOT_FREE: u32 = code(StatusCode::HKID_NOT_FREE);
pub(crate) const NO_HKID_READY_TO_WBCACHE: u32 = code(StatusCode::NO_HKID_READY_TO_WBCACHE);
pub(crate) const WBCACHE_RESUME_ERROR: u32 = code(StatusCode::WBCACHE_RESUME_ERROR);
pub(crate) const FLUSHVP_NOT_DONE: u32 = code(StatusCode::FLUSHVP_NOT_DONE);
pub(crate) const TDMR_ALREADY_INITIALIZED: u32 = code(StatusCode::TDMR_ALREADY_INITIALIZED);
pub(crate) const INVALID_TDMR: u32 = code(StatusCode::INVALID_TDMR);
pub(crate) const EPT_WALK_FAILED: u32 = code(StatusCode::EPT_WALK_FAILED);
pub(crate) const EPT_ENTRY_NOT_PRESENT: u32 = code(StatusCode::EPT_ENTRY_NOT_PRESENT);
pub(crate) const GPA_RANGE_NOT_BLOCKED: u32 = code(StatusCode::GPA_RANGE_NOT_BLOCKED);
pub(crate) const GPA_RANGE_ALREADY_BLOCKED: u32 = code(StatusCode::GPA_RANGE_ALREADY_BLOCKED);
pub(crate) const TLB_TRACKING_NOT_DONE: u32 = code(StatusCode::TLB_TRACKING_NOT_DONE);
pub(crate) const PAGE_ALREADY_ACCEPTED: u32 = code(StatusCode::PAGE_ALREADY_ACCEPTED);
pub(crate) const PAGE_SIZE_MISMATCH: u32 = code(StatusCode::PAGE_SIZE_MISMATCH);
pub(crate) const EPT_ENTRY_STATE_INCORRECT: u32 = code(StatusCode::EPT_ENTRY_STATE_INCORRECT);
pub(crate) const EPT_PAGE_NOT_FREE: u32 = code(StatusCode::EPT_PAGE_NOT_FREE);
pub(crate) const METADATA_FIELD_ID_INCORRECT: u32 = code(StatusCode::METADATA_FIELD_ID_INCORRECT);
pub(crate) const METADATA_FIELD_NOT_WRITABLE: u32 = code(StatusCode::METADATA_FIELD_NOT_WRITABLE);
pub(crate) const METADATA_FIELD_NOT_READABLE: u32 = code(StatusCode::METADATA_FIELD_NOT_READABLE);
pub(crate) const METADATA_FIRST_FIELD_ID_IN_CONTEXT: u32 =
    code(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT);

// Operand ids (tdx-module-abi.md §4.3).
pub(crate) const OP_RAX: u32 = OperandId::RAX.raw();
pub(crate) const OP_RCX: u32 = OperandId::RCX.raw();
pub(crate) const OP_RDX: u32 = OperandId::RDX.raw();
pub(crate) const OP_R8: u32 = OperandId::R8.raw();
pub(crate) const OP_R9: u32 = OperandId::R9.raw();
pub(crate) const OP_ATTRIBUTES: u32 = OperandId::ATTRIBUTES.raw();
pub(crate) const OP_XFAM: u32 = OperandId::XFAM.raw();
pub(crate) const OP_EXEC_CONTROLS: u32 = OperandId::EXEC_CONTROLS.raw();
pub(crate) const OP_EPTP_CONTROLS: u32 = OperandId::EPTP_CONTROLS.raw();
pub(crate) const OP_MAX_VCPUS: u32 = OperandId::MAX_VCPUS.raw();
pub(crate) const OP_CPUID_CONFIG: u32 = OperandId::CPUID_CONFIG.raw();
pub(crate) const OP_TSC_FREQUENCY: u32 = OperandId::TSC_FREQUENCY.raw();
pub(crate) const OP_NUM_L2_VMS: u32 = OperandId::NUM_L2_VMS.raw();
pub(crate) const OP_IA32_ARCH_CAPABILITIES_CONFIG: u32 =
    OperandId::IA32_ARCH_CAPABILITIES_CONFIG.raw();
pub(crate) const OP_TDR: u32 = OperandId::TDR.raw();
pub(crate) const OP_TDCS: u32 = OperandId::TDCS.raw();
pub(crate) const OP_SEPT_TREE: u32 = OperandId::SEPT_TREE.raw();
pub(crate) const OP_TD_EPOCH: u32 = OperandId::TD_EPOCH.raw();
pub(crate) const OP_OP_STATE: u32 = OperandId::OP_STATE.raw();
pub(crate) const OP_KOT: u32 = OperandId::KOT.raw();

// SEAMCALL leaf numbers (tdx-module-abi.md §2).
pub(crate) const TDH_VP_ENTER: u16 = SeamcallLeaf::TDH_VP_ENTER.raw();
pub(crate) const TDH_MNG_ADDCX: u16 = SeamcallLeaf::TDH_MNG_ADDCX.raw();
pub(crate) const TDH_MEM_PAGE_ADD: u16 = SeamcallLeaf::TDH_MEM_PAGE_ADD.raw();
pub(crate) const TDH_MEM_SEPT_ADD: u16 = SeamcallLeaf::TDH_MEM_SEPT_ADD.raw();
pub(crate) const TDH_VP_ADDCX: u16 = SeamcallLeaf::TDH_VP_ADDCX.raw();
pub(crate) const TDH_MEM_PAGE_AUG: u16 = SeamcallLeaf::TDH_MEM_PAGE_AUG.raw();
pub(crate) const TDH_MEM_RANGE_BLOCK: u16 = SeamcallLeaf::TDH_MEM_RANGE_BLOCK.raw();
pub(crate) const TDH_MNG_KEY_CONFIG: u16 = SeamcallLeaf::TDH_MNG_KEY_CONFIG.raw();
pub(crate) const TDH_MNG_CREATE: u16 = SeamcallLeaf::TDH_MNG_CREATE.raw();
pub(crate) const TDH_VP_CREATE: u16 = SeamcallLeaf::TDH_VP_CREATE.raw();
pub(crate) const TDH_MNG_RD: u16 = SeamcallLeaf::TDH_MNG_RD.raw();
pub(crate) const TDH_MNG_WR: u16 = SeamcallLeaf::TDH_MNG_WR.raw();
pub(crate) const TDH_MR_EXTEND: u16 = SeamcallLeaf::TDH_MR_EXTEND.raw();
pub(crate) const TDH_MR_FINALIZE: u16 = SeamcallLeaf::TDH_MR_FINALIZE.raw();
pub(crate) const TDH_VP_FLUSH: u16 = SeamcallLeaf::TDH_VP_FLUSH.raw();
pub(crate) const TDH_MNG_VPFLUSHDONE: u16 = SeamcallLeaf::TDH_MNG_VPFLUSHDONE.raw();
pub(crate) const TDH_MNG_KEY_FREEID: u16 = SeamcallLeaf::TDH_MNG_KEY_FREEID.raw();
pub(crate) const TDH_MNG_INIT: u16 = SeamcallLeaf::TDH_MNG_INIT.raw();
pub(crate) const TDH_VP_INIT: u16 = SeamcallLeaf::TDH_VP_INIT.raw();
pub(crate) const TDH_MEM_PAGE_PROMOTE: u16 = SeamcallLeaf::TDH_MEM_PAGE_PROMOTE.raw();
pub(crate) const TDH_PHYMEM_PAGE_RDMD: u16 = SeamcallLeaf::TDH_PHYMEM_PAGE_RDMD.raw();
pub(crate) const TDH_MEM_SEPT_RD: u16 = SeamcallLeaf::TDH_MEM_SEPT_RD.raw();
pub(crate) const TDH_VP_RD: u16 = SeamcallLeaf::TDH_VP_RD.raw();
pub(crate) const TDH_MNG_KEY_RECLAIMID: u16 = SeamcallLeaf::TDH_MNG_KEY_RECLAIMID.raw();
pub(crate) const TDH_PHYMEM_PAGE_RECLAIM: u16 = SeamcallLeaf::TDH_PHYMEM_PAGE_RECLAIM.raw();
pub(crate) const TDH_MEM_PAGE_REMOVE: u16 = SeamcallLeaf::TDH_MEM_PAGE_REMOVE.raw();
pub(crate) const TDH_MEM_SEPT_REMOVE: u16 = SeamcallLeaf::TDH_MEM_SEPT_REMOVE.raw();
pub(crate) const TDH_SYS_KEY_CONFIG: u16 = SeamcallLeaf::TDH_SYS_KEY_CONFIG.raw();
pub(crate) const TDH_SYS_INFO: u16 = SeamcallLeaf::TDH_SYS_INFO.raw();
pub(crate) const TDH_SYS_INIT: u16 = SeamcallLeaf::TDH_SYS_INIT.raw();
pub(crate) const TDH_SYS_RD: u16 = SeamcallLeaf::TDH_SYS_RD.raw();
pub(crate) const TDH_SYS_LP_INIT: u16 = SeamcallLeaf::TDH_SYS_LP_INIT.raw();
pub(crate) const TDH_SYS_TDMR_INIT: u16 = SeamcallLeaf::TDH_SYS_TDMR_INIT.raw();
pub(crate) const TDH_SYS_RDALL: u16 = SeamcallLeaf::TDH_SYS_RDALL.raw();
pub(crate) const TDH_MEM_TRACK: u16 = SeamcallLeaf::TDH_MEM_TRACK.raw();
pub(crate) const TDH_MEM_RANGE_UNBLOCK: u16 = SeamcallLeaf::TDH_MEM_RANGE_UNBLOCK.raw();
pub(crate) const TDH_PHYMEM_CACHE_WB: u16 = SeamcallLeaf::TDH_PHYMEM_CACHE_WB.raw();
pub(crate) const TDH_PHYMEM_PAGE_WBINVD: u16 = SeamcallLeaf::TDH_PHYMEM_PAGE_WBINVD.raw();
pub(crate) const TDH_VP_WR: u16 = SeamcallLeaf::TDH_VP_WR.raw();
pub(crate) const TDH_SYS_LP_SHUTDOWN: u16 = SeamcallLeaf::TDH_SYS_LP_SHUTDOWN.raw();
pub(crate) const TDH_SYS_CONFIG: u16 = SeamcallLeaf::TDH_SYS_CONFIG.raw();
pub(crate) const TDH_SYS_UPDATE: u16 = SeamcallLeaf::TDH_SYS_UPDATE.raw();

// TDCALL leaf numbers (tdx-module-abi.md §3).
pub(crate) const TDG_VP_VMCALL: u16 = TdcallLeaf::TDG_VP_VMCALL.raw();
pub(crate) const TDG_VP_INFO: u16 = TdcallLeaf::TDG_VP_INFO.raw();
pub(crate) const TDG_MR_RTMR_EXTEND: u16 = TdcallLeaf::TDG_MR_RTMR_EXTEND.raw();
pub(crate) const TDG_VP_VEINFO_GET: u16 = TdcallLeaf::TDG_VP_VEINFO_GET.raw();
pub(crate) const TDG_MR_REPORT: u16 = TdcallLeaf::TDG_MR_REPORT.raw();
pub(crate) const TDG_MEM_PAGE_ACCEPT: u16 = TdcallLeaf::TDG_MEM_PAGE_ACCEPT.raw();
pub(crate) const TDG_VM_RD: u16 = TdcallLeaf::TDG_VM_RD.raw();
pub(crate) const TDG_VM_WR: u16 = TdcallLeaf::TDG_VM_WR.raw();

/// VMX basic exit reasons used for TD exits.
pub(crate) const EXIT_REASON_EXTERNAL_INTERRUPT: u32 = VmxExitReason::EXTERNAL_INTERRUPT.raw();
/// TDCALL (TDG.VP.VMCALL exits report this).
pub(crate) const EXIT_REASON_TDCALL: u32 = VmxExitReason::TDCALL.raw();
/// EPT violation.
pub(crate) const EXIT_REASON_EPT_VIOLATION: u32 = VmxExitReason::EPT_VIOLATION.raw();
