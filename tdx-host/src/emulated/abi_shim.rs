//! The few status codes, operand ids and leaf numbers the emulated module needs, typed from the
//! fact sheet (tdx-module-abi.md §2, §3, §4.2, §4.3) until `tdx_abi::status` / `tdx_abi::leaf`
//! land in main. Private on purpose: swapping these for the real types is mechanical.

#![allow(dead_code)]

/// Builds a full status from the upper 32 bits (§4.2) and the low 32 bits (operand id or info).
pub(crate) const fn status(upper: u32, low: u32) -> u64 {
    ((upper as u64) << 32) | low as u64
}

/// True for a status with bit 63 (ERROR) set.
pub(crate) const fn is_error(status: u64) -> bool {
    status >> 63 != 0
}

// Status codes: value of the upper 32 bits (tdx-module-abi.md §4.2).
pub(crate) const SUCCESS: u32 = 0x0000_0000;
pub(crate) const NON_RECOVERABLE_VCPU: u32 = 0x4000_0001;
pub(crate) const INTERRUPTED_RESUMABLE: u32 = 0x8000_0003;
pub(crate) const OPERAND_INVALID: u32 = 0xC000_0100;
pub(crate) const OPERAND_ADDR_RANGE_ERROR: u32 = 0xC000_0101;
pub(crate) const OPERAND_BUSY: u32 = 0x8000_0200;
pub(crate) const PREVIOUS_TLB_EPOCH_BUSY: u32 = 0x8000_0201;
pub(crate) const SYS_BUSY: u32 = 0x8000_0202;
pub(crate) const PAGE_METADATA_INCORRECT: u32 = 0xC000_0300;
pub(crate) const TD_ASSOCIATED_PAGES_EXIST: u32 = 0xC000_0400;
pub(crate) const SYS_INIT_NOT_PENDING: u32 = 0xC000_0500;
pub(crate) const SYS_LP_INIT_NOT_DONE: u32 = 0xC000_0502;
pub(crate) const SYS_LP_INIT_DONE: u32 = 0xC000_0503;
pub(crate) const SYS_NOT_READY: u32 = 0xC000_0505;
pub(crate) const SYS_KEY_CONFIG_NOT_PENDING: u32 = 0xC000_0507;
pub(crate) const SYS_STATE_INCORRECT: u32 = 0xC000_0508;
pub(crate) const SYS_CONFIG_NOT_PENDING: u32 = 0xC000_050C;
pub(crate) const TD_FATAL: u32 = 0xE000_0604;
pub(crate) const TDCS_NOT_ALLOCATED: u32 = 0xC000_0606;
pub(crate) const LIFECYCLE_STATE_INCORRECT: u32 = 0xC000_0607;
pub(crate) const OP_STATE_INCORRECT: u32 = 0xC000_0608;
pub(crate) const NO_VCPUS: u32 = 0xC000_0609;
pub(crate) const TDCX_NUM_INCORRECT: u32 = 0xC000_0610;
pub(crate) const VCPU_STATE_INCORRECT: u32 = 0xC000_0700;
pub(crate) const VCPU_ASSOCIATED: u32 = 0x8000_0701;
pub(crate) const VCPU_NOT_ASSOCIATED: u32 = 0x8000_0702;
pub(crate) const NO_VALID_VE_INFO: u32 = 0xC000_0704;
pub(crate) const MAX_VCPUS_EXCEEDED: u32 = 0xC000_0705;
pub(crate) const TD_KEYS_NOT_CONFIGURED: u32 = 0x8000_0810;
pub(crate) const KEY_STATE_INCORRECT: u32 = 0xC000_0811;
pub(crate) const KEY_CONFIGURED: u32 = 0x0000_0815;
pub(crate) const WBCACHE_NOT_COMPLETE: u32 = 0x8000_0817;
pub(crate) const HKID_NOT_FREE: u32 = 0xC000_0820;
pub(crate) const NO_HKID_READY_TO_WBCACHE: u32 = 0x0000_0821;
pub(crate) const WBCACHE_RESUME_ERROR: u32 = 0xC000_0823;
pub(crate) const FLUSHVP_NOT_DONE: u32 = 0x8000_0824;
pub(crate) const TDMR_ALREADY_INITIALIZED: u32 = 0x0000_0A03;
pub(crate) const INVALID_TDMR: u32 = 0xC000_0A00;
pub(crate) const EPT_WALK_FAILED: u32 = 0xC000_0B00;
pub(crate) const EPT_ENTRY_NOT_PRESENT: u32 = 0xC000_0B03;
pub(crate) const GPA_RANGE_NOT_BLOCKED: u32 = 0xC000_0B06;
pub(crate) const GPA_RANGE_ALREADY_BLOCKED: u32 = 0x0000_0B07;
pub(crate) const TLB_TRACKING_NOT_DONE: u32 = 0xC000_0B08;
pub(crate) const PAGE_ALREADY_ACCEPTED: u32 = 0x0000_0B0A;
pub(crate) const PAGE_SIZE_MISMATCH: u32 = 0xC000_0B0B;
pub(crate) const EPT_ENTRY_STATE_INCORRECT: u32 = 0xC000_0B0D;
pub(crate) const EPT_PAGE_NOT_FREE: u32 = 0xC000_0B0E;
pub(crate) const METADATA_FIELD_ID_INCORRECT: u32 = 0xC000_0C00;
pub(crate) const METADATA_FIELD_NOT_WRITABLE: u32 = 0xC000_0C01;
pub(crate) const METADATA_FIELD_NOT_READABLE: u32 = 0xC000_0C02;
pub(crate) const METADATA_FIRST_FIELD_ID_IN_CONTEXT: u32 = 0x0000_0C0B;

// Operand ids (tdx-module-abi.md §4.3).
pub(crate) const OP_RAX: u32 = 0;
pub(crate) const OP_RCX: u32 = 1;
pub(crate) const OP_RDX: u32 = 2;
pub(crate) const OP_R8: u32 = 8;
pub(crate) const OP_R9: u32 = 9;
pub(crate) const OP_ATTRIBUTES: u32 = 64;
pub(crate) const OP_XFAM: u32 = 65;
pub(crate) const OP_EXEC_CONTROLS: u32 = 66;
pub(crate) const OP_EPTP_CONTROLS: u32 = 67;
pub(crate) const OP_MAX_VCPUS: u32 = 68;
pub(crate) const OP_CPUID_CONFIG: u32 = 69;
pub(crate) const OP_TSC_FREQUENCY: u32 = 70;
pub(crate) const OP_NUM_L2_VMS: u32 = 71;
pub(crate) const OP_IA32_ARCH_CAPABILITIES_CONFIG: u32 = 72;
pub(crate) const OP_TDR: u32 = 128;
pub(crate) const OP_TDCS: u32 = 144;
pub(crate) const OP_SEPT_TREE: u32 = 146;
pub(crate) const OP_TD_EPOCH: u32 = 169;
pub(crate) const OP_OP_STATE: u32 = 172;
pub(crate) const OP_KOT: u32 = 186;

// SEAMCALL leaf numbers (tdx-module-abi.md §2).
pub(crate) const TDH_VP_ENTER: u16 = 0;
pub(crate) const TDH_MNG_ADDCX: u16 = 1;
pub(crate) const TDH_MEM_PAGE_ADD: u16 = 2;
pub(crate) const TDH_MEM_SEPT_ADD: u16 = 3;
pub(crate) const TDH_VP_ADDCX: u16 = 4;
pub(crate) const TDH_MEM_PAGE_AUG: u16 = 6;
pub(crate) const TDH_MEM_RANGE_BLOCK: u16 = 7;
pub(crate) const TDH_MNG_KEY_CONFIG: u16 = 8;
pub(crate) const TDH_MNG_CREATE: u16 = 9;
pub(crate) const TDH_VP_CREATE: u16 = 10;
pub(crate) const TDH_MNG_RD: u16 = 11;
pub(crate) const TDH_MNG_WR: u16 = 13;
pub(crate) const TDH_MR_EXTEND: u16 = 16;
pub(crate) const TDH_MR_FINALIZE: u16 = 17;
pub(crate) const TDH_VP_FLUSH: u16 = 18;
pub(crate) const TDH_MNG_VPFLUSHDONE: u16 = 19;
pub(crate) const TDH_MNG_KEY_FREEID: u16 = 20;
pub(crate) const TDH_MNG_INIT: u16 = 21;
pub(crate) const TDH_VP_INIT: u16 = 22;
pub(crate) const TDH_MEM_PAGE_PROMOTE: u16 = 23;
pub(crate) const TDH_PHYMEM_PAGE_RDMD: u16 = 24;
pub(crate) const TDH_MEM_SEPT_RD: u16 = 25;
pub(crate) const TDH_VP_RD: u16 = 26;
pub(crate) const TDH_MNG_KEY_RECLAIMID: u16 = 27;
pub(crate) const TDH_PHYMEM_PAGE_RECLAIM: u16 = 28;
pub(crate) const TDH_MEM_PAGE_REMOVE: u16 = 29;
pub(crate) const TDH_MEM_SEPT_REMOVE: u16 = 30;
pub(crate) const TDH_SYS_KEY_CONFIG: u16 = 31;
pub(crate) const TDH_SYS_INFO: u16 = 32;
pub(crate) const TDH_SYS_INIT: u16 = 33;
pub(crate) const TDH_SYS_RD: u16 = 34;
pub(crate) const TDH_SYS_LP_INIT: u16 = 35;
pub(crate) const TDH_SYS_TDMR_INIT: u16 = 36;
pub(crate) const TDH_SYS_RDALL: u16 = 37;
pub(crate) const TDH_MEM_TRACK: u16 = 38;
pub(crate) const TDH_MEM_RANGE_UNBLOCK: u16 = 39;
pub(crate) const TDH_PHYMEM_CACHE_WB: u16 = 40;
pub(crate) const TDH_PHYMEM_PAGE_WBINVD: u16 = 41;
pub(crate) const TDH_VP_WR: u16 = 43;
pub(crate) const TDH_SYS_LP_SHUTDOWN: u16 = 44;
pub(crate) const TDH_SYS_CONFIG: u16 = 45;
pub(crate) const TDH_SYS_UPDATE: u16 = 53;

// TDCALL leaf numbers (tdx-module-abi.md §3).
pub(crate) const TDG_VP_VMCALL: u16 = 0;
pub(crate) const TDG_VP_INFO: u16 = 1;
pub(crate) const TDG_MR_RTMR_EXTEND: u16 = 2;
pub(crate) const TDG_VP_VEINFO_GET: u16 = 3;
pub(crate) const TDG_MR_REPORT: u16 = 4;
pub(crate) const TDG_MEM_PAGE_ACCEPT: u16 = 6;
pub(crate) const TDG_VM_RD: u16 = 7;
pub(crate) const TDG_VM_WR: u16 = 8;

/// VMX basic exit reasons used for TD exits.
pub(crate) const EXIT_REASON_EXTERNAL_INTERRUPT: u32 = 1;
/// TDCALL (TDG.VP.VMCALL exits report this).
pub(crate) const EXIT_REASON_TDCALL: u32 = 77;
/// EPT violation.
pub(crate) const EXIT_REASON_EPT_VIOLATION: u32 = 48;
