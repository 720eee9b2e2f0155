//! The 64-bit completion status a SEAMCALL or TDCALL returns in RAX.
//!
//! Layout (module 1.5): bit 63 ERROR, 62 NON_RECOVERABLE, 61 FATAL, 60 host recoverability
//! hint, 47:40 class, 39:32 details L1, 31:0 details L2 (an operand id, an EPT level, an MSR
//! index, packed TDMR/PAMT bytes, or the VMX exit reason of a TD exit). A code is identified
//! by bits 47:32 ([`StatusCode`]); bits 63:60 differ between module versions for a few codes,
//! so they are decoded as flags and not used for matching.
//!
//! ```
//! use tdx_abi::status::{OperandId, StatusCode, TdxStatus};
//!
//! let s = TdxStatus::from_raw(0x8000_0200_0000_0092);
//! assert_eq!(s.code(), StatusCode::OPERAND_BUSY);
//! assert!(s.is_recoverable());
//! assert_eq!(s.to_string(), "TDX_OPERAND_BUSY (operand SEPT_TREE)");
//! assert_eq!(StatusCode::OPERAND_INVALID.with_operand(OperandId::RCX).raw(), 0xC000_0100_0000_0001);
//! ```

use core::fmt;

use crate::leaf::VmxExitReason;
use crate::open_enum::open_enum;

/// What bits 31:0 of a status carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DetailKind {
    /// Nothing (printed only if nonzero, as raw).
    Raw,
    /// Always an operand id (0 = RAX is meaningful).
    Operand,
    /// An operand id when nonzero.
    MaybeOperand,
    /// An EPT level.
    Level,
    /// An MSR index.
    Msr,
    /// TDMR index (7:0), reserved-area index or page size (15:8), other TDMR index (23:16).
    Tdmr,
    /// A VMX exit reason (successful TD exits, L2 exits).
    ExitReason,
}

/// Types a table literal as u32.
const fn u32_lit(v: u32) -> u32 {
    v
}

macro_rules! status_codes {
    ($( $(#[$m:meta])* $name:ident = $upper:literal, $text:literal, $kind:ident; )*) => {
        impl StatusCode {
            $( $(#[$m])* pub const $name: StatusCode = StatusCode((u32_lit($upper) & 0xffff) as u16); )*

            /// The specification's name (with the `TDX_` prefix), if known.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( v if v == (u32_lit($upper) & 0xffff) as u16 => Some($text), )*
                    _ => None,
                }
            }

            /// The full base value of this code in module 1.5.01, bits 63:60 included
            /// (for example TDX_NON_RECOVERABLE_TD is `0x6000_0002_0000_0000`). Unknown codes
            /// get the ERROR and NON_RECOVERABLE bits.
            pub const fn canonical_status(self) -> TdxStatus {
                match self.0 {
                    $( v if v == (u32_lit($upper) & 0xffff) as u16 => TdxStatus((u32_lit($upper) as u64) << 32), )*
                    v => TdxStatus((0xC000_0000u64 | v as u64) << 32),
                }
            }

            const fn detail_kind(self) -> DetailKind {
                match self.0 {
                    $( v if v == (u32_lit($upper) & 0xffff) as u16 => DetailKind::$kind, )*
                    _ => DetailKind::Raw,
                }
            }

            /// Every named code, in table order.
            pub const ALL: &'static [StatusCode] = &[$(StatusCode((u32_lit($upper) & 0xffff) as u16)),*];
        }
    };
}

/// A status code: bits 47:32 of the status (class << 8 | details L1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct StatusCode(u16);

impl StatusCode {
    /// Wraps bits 47:32.
    pub const fn from_raw(v: u16) -> Self {
        StatusCode(v)
    }

    /// Bits 47:32.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// The class (bits 47:40).
    pub const fn class(self) -> StatusClass {
        StatusClass::from_raw((self.0 >> 8) as u8)
    }

    /// The canonical status of this code with `operand` in bits 31:0.
    pub const fn with_operand(self, operand: OperandId) -> TdxStatus {
        self.with_details(operand.raw())
    }

    /// The canonical status of this code with `details` in bits 31:0.
    pub const fn with_details(self, details: u32) -> TdxStatus {
        TdxStatus(self.canonical_status().0 | details as u64)
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "TDX status code {:#06x}", self.0),
        }
    }
}

impl fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusCode({:#06x} {self})", self.0)
    }
}

status_codes! {
    /// TDX_SUCCESS.
    SUCCESS = 0x0000_0000, "TDX_SUCCESS", ExitReason;
    /// TDX_NON_RECOVERABLE_VCPU.
    NON_RECOVERABLE_VCPU = 0x4000_0001, "TDX_NON_RECOVERABLE_VCPU", ExitReason;
    /// TDX_NON_RECOVERABLE_TD (1.0 and Linux: 0x40000002).
    NON_RECOVERABLE_TD = 0x6000_0002, "TDX_NON_RECOVERABLE_TD", ExitReason;
    /// TDX_INTERRUPTED_RESUMABLE.
    INTERRUPTED_RESUMABLE = 0x8000_0003, "TDX_INTERRUPTED_RESUMABLE", Raw;
    /// TDX_INTERRUPTED_RESTARTABLE.
    INTERRUPTED_RESTARTABLE = 0x8000_0004, "TDX_INTERRUPTED_RESTARTABLE", Raw;
    /// TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE (1.0: NON_RECOVERABLE_TD_FATAL).
    NON_RECOVERABLE_TD_NON_ACCESSIBLE = 0x6000_0005, "TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE", ExitReason;
    /// TDX_INVALID_RESUMPTION.
    INVALID_RESUMPTION = 0xC000_0006, "TDX_INVALID_RESUMPTION", Raw;
    /// TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE.
    NON_RECOVERABLE_TD_WRONG_APIC_MODE = 0xE000_0007, "TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE", Raw;
    /// TDX_CROSS_TD_FAULT.
    CROSS_TD_FAULT = 0x8000_0008, "TDX_CROSS_TD_FAULT", ExitReason;
    /// TDX_CROSS_TD_TRAP.
    CROSS_TD_TRAP = 0x9000_0009, "TDX_CROSS_TD_TRAP", ExitReason;
    /// TDX_NON_RECOVERABLE_TD_CORRUPTED_MD.
    NON_RECOVERABLE_TD_CORRUPTED_MD = 0x6000_000A, "TDX_NON_RECOVERABLE_TD_CORRUPTED_MD", ExitReason;
    /// TDX_OPERAND_INVALID.
    OPERAND_INVALID = 0xC000_0100, "TDX_OPERAND_INVALID", Operand;
    /// TDX_OPERAND_ADDR_RANGE_ERROR.
    OPERAND_ADDR_RANGE_ERROR = 0xC000_0101, "TDX_OPERAND_ADDR_RANGE_ERROR", Operand;
    /// TDX_OPERAND_BUSY.
    OPERAND_BUSY = 0x8000_0200, "TDX_OPERAND_BUSY", Operand;
    /// TDX_PREVIOUS_TLB_EPOCH_BUSY.
    PREVIOUS_TLB_EPOCH_BUSY = 0x8000_0201, "TDX_PREVIOUS_TLB_EPOCH_BUSY", MaybeOperand;
    /// TDX_SYS_BUSY.
    SYS_BUSY = 0x8000_0202, "TDX_SYS_BUSY", Raw;
    /// TDX_RND_NO_ENTROPY (retry).
    RND_NO_ENTROPY = 0x8000_0203, "TDX_RND_NO_ENTROPY", Raw;
    /// TDX_OPERAND_BUSY_HOST_PRIORITY.
    OPERAND_BUSY_HOST_PRIORITY = 0x8000_0204, "TDX_OPERAND_BUSY_HOST_PRIORITY", Operand;
    /// TDX_HOST_PRIORITY_BUSY_TIMEOUT.
    HOST_PRIORITY_BUSY_TIMEOUT = 0x9000_0205, "TDX_HOST_PRIORITY_BUSY_TIMEOUT", MaybeOperand;
    /// TDX_PAGE_METADATA_INCORRECT.
    PAGE_METADATA_INCORRECT = 0xC000_0300, "TDX_PAGE_METADATA_INCORRECT", Operand;
    /// TDX_PAGE_ALREADY_FREE (success class).
    PAGE_ALREADY_FREE = 0x0000_0301, "TDX_PAGE_ALREADY_FREE", MaybeOperand;
    /// TDX_PAGE_NOT_OWNED_BY_TD.
    PAGE_NOT_OWNED_BY_TD = 0xC000_0302, "TDX_PAGE_NOT_OWNED_BY_TD", MaybeOperand;
    /// TDX_PAGE_NOT_FREE.
    PAGE_NOT_FREE = 0xC000_0303, "TDX_PAGE_NOT_FREE", MaybeOperand;
    /// TDX_TD_ASSOCIATED_PAGES_EXIST.
    TD_ASSOCIATED_PAGES_EXIST = 0xC000_0400, "TDX_TD_ASSOCIATED_PAGES_EXIST", Raw;
    /// TDX_SYS_INIT_NOT_PENDING.
    SYS_INIT_NOT_PENDING = 0xC000_0500, "TDX_SYS_INIT_NOT_PENDING", Raw;
    /// TDX_SYS_LP_INIT_NOT_DONE.
    SYS_LP_INIT_NOT_DONE = 0xC000_0502, "TDX_SYS_LP_INIT_NOT_DONE", Raw;
    /// TDX_SYS_LP_INIT_DONE.
    SYS_LP_INIT_DONE = 0xC000_0503, "TDX_SYS_LP_INIT_DONE", Raw;
    /// TDX_SYS_NOT_READY.
    SYS_NOT_READY = 0xC000_0505, "TDX_SYS_NOT_READY", Raw;
    /// TDX_SYS_SHUTDOWN.
    SYS_SHUTDOWN = 0xC000_0506, "TDX_SYS_SHUTDOWN", Raw;
    /// TDX_SYS_KEY_CONFIG_NOT_PENDING.
    SYS_KEY_CONFIG_NOT_PENDING = 0xC000_0507, "TDX_SYS_KEY_CONFIG_NOT_PENDING", Raw;
    /// TDX_SYS_STATE_INCORRECT.
    SYS_STATE_INCORRECT = 0xC000_0508, "TDX_SYS_STATE_INCORRECT", Raw;
    /// TDX_SYS_INVALID_HANDOFF.
    SYS_INVALID_HANDOFF = 0xC000_0509, "TDX_SYS_INVALID_HANDOFF", Raw;
    /// TDX_SYS_INCOMPATIBLE_SIGSTRUCT.
    SYS_INCOMPATIBLE_SIGSTRUCT = 0xC000_050A, "TDX_SYS_INCOMPATIBLE_SIGSTRUCT", Raw;
    /// TDX_SYS_LP_INIT_NOT_PENDING.
    SYS_LP_INIT_NOT_PENDING = 0xC000_050B, "TDX_SYS_LP_INIT_NOT_PENDING", Raw;
    /// TDX_SYS_CONFIG_NOT_PENDING.
    SYS_CONFIG_NOT_PENDING = 0xC000_050C, "TDX_SYS_CONFIG_NOT_PENDING", Raw;
    /// TDX_INCOMPATIBLE_SEAM_CAPABILITIES.
    INCOMPATIBLE_SEAM_CAPABILITIES = 0xC000_050D, "TDX_INCOMPATIBLE_SEAM_CAPABILITIES", Raw;
    /// TDX_TD_NOT_INITIALIZED (1.0 only).
    TD_NOT_INITIALIZED = 0xC000_0600, "TDX_TD_NOT_INITIALIZED", Raw;
    /// TDX_TD_INITIALIZED (1.0 only).
    TD_INITIALIZED = 0xC000_0601, "TDX_TD_INITIALIZED", Raw;
    /// TDX_TD_NOT_FINALIZED (1.0 only).
    TD_NOT_FINALIZED = 0xC000_0602, "TDX_TD_NOT_FINALIZED", Raw;
    /// TDX_TD_FINALIZED (1.0 only).
    TD_FINALIZED = 0xC000_0603, "TDX_TD_FINALIZED", Raw;
    /// TDX_TD_FATAL (1.0: 0xC0000604).
    TD_FATAL = 0xE000_0604, "TDX_TD_FATAL", Raw;
    /// TDX_TD_NON_DEBUG.
    TD_NON_DEBUG = 0xC000_0605, "TDX_TD_NON_DEBUG", Raw;
    /// TDX_TDCS_NOT_ALLOCATED.
    TDCS_NOT_ALLOCATED = 0xC000_0606, "TDX_TDCS_NOT_ALLOCATED", Raw;
    /// TDX_LIFECYCLE_STATE_INCORRECT.
    LIFECYCLE_STATE_INCORRECT = 0xC000_0607, "TDX_LIFECYCLE_STATE_INCORRECT", MaybeOperand;
    /// TDX_OP_STATE_INCORRECT (1.5+).
    OP_STATE_INCORRECT = 0xC000_0608, "TDX_OP_STATE_INCORRECT", MaybeOperand;
    /// TDX_NO_VCPUS.
    NO_VCPUS = 0xC000_0609, "TDX_NO_VCPUS", Raw;
    /// TDX_TDCX_NUM_INCORRECT.
    TDCX_NUM_INCORRECT = 0xC000_0610, "TDX_TDCX_NUM_INCORRECT", MaybeOperand;
    /// TDX_VCPU_STATE_INCORRECT.
    VCPU_STATE_INCORRECT = 0xC000_0700, "TDX_VCPU_STATE_INCORRECT", Raw;
    /// TDX_VCPU_ASSOCIATED.
    VCPU_ASSOCIATED = 0x8000_0701, "TDX_VCPU_ASSOCIATED", Raw;
    /// TDX_VCPU_NOT_ASSOCIATED.
    VCPU_NOT_ASSOCIATED = 0x8000_0702, "TDX_VCPU_NOT_ASSOCIATED", Raw;
    /// TDX_TDVPX_NUM_INCORRECT (1.0 only).
    TDVPX_NUM_INCORRECT = 0xC000_0703, "TDX_TDVPX_NUM_INCORRECT", Raw;
    /// TDX_NO_VALID_VE_INFO.
    NO_VALID_VE_INFO = 0xC000_0704, "TDX_NO_VALID_VE_INFO", Raw;
    /// TDX_MAX_VCPUS_EXCEEDED.
    MAX_VCPUS_EXCEEDED = 0xC000_0705, "TDX_MAX_VCPUS_EXCEEDED", Raw;
    /// TDX_TSC_ROLLBACK.
    TSC_ROLLBACK = 0xC000_0706, "TDX_TSC_ROLLBACK", Raw;
    /// TDX_FIELD_NOT_WRITABLE (1.0 only).
    FIELD_NOT_WRITABLE = 0xC000_0720, "TDX_FIELD_NOT_WRITABLE", Raw;
    /// TDX_FIELD_NOT_READABLE (1.0 only).
    FIELD_NOT_READABLE = 0xC000_0721, "TDX_FIELD_NOT_READABLE", Raw;
    /// TDX_TD_VMCS_FIELD_NOT_INITIALIZED.
    TD_VMCS_FIELD_NOT_INITIALIZED = 0xC000_0730, "TDX_TD_VMCS_FIELD_NOT_INITIALIZED", Raw;
    /// TDX_TD_VMCS_FIELD_ERROR.
    TD_VMCS_FIELD_ERROR = 0xC000_0731, "TDX_TD_VMCS_FIELD_ERROR", Raw;
    /// TDX_KEY_GENERATION_FAILED (retry).
    KEY_GENERATION_FAILED = 0x8000_0800, "TDX_KEY_GENERATION_FAILED", Raw;
    /// TDX_TD_KEYS_NOT_CONFIGURED.
    TD_KEYS_NOT_CONFIGURED = 0x8000_0810, "TDX_TD_KEYS_NOT_CONFIGURED", Raw;
    /// TDX_KEY_STATE_INCORRECT.
    KEY_STATE_INCORRECT = 0xC000_0811, "TDX_KEY_STATE_INCORRECT", MaybeOperand;
    /// TDX_KEY_CONFIGURED (success class).
    KEY_CONFIGURED = 0x0000_0815, "TDX_KEY_CONFIGURED", Raw;
    /// TDX_WBCACHE_NOT_COMPLETE.
    WBCACHE_NOT_COMPLETE = 0x8000_0817, "TDX_WBCACHE_NOT_COMPLETE", Raw;
    /// TDX_HKID_NOT_FREE.
    HKID_NOT_FREE = 0xC000_0820, "TDX_HKID_NOT_FREE", Raw;
    /// TDX_NO_HKID_READY_TO_WBCACHE (success class).
    NO_HKID_READY_TO_WBCACHE = 0x0000_0821, "TDX_NO_HKID_READY_TO_WBCACHE", Raw;
    /// TDX_WBCACHE_RESUME_ERROR.
    WBCACHE_RESUME_ERROR = 0xC000_0823, "TDX_WBCACHE_RESUME_ERROR", Raw;
    /// TDX_FLUSHVP_NOT_DONE.
    FLUSHVP_NOT_DONE = 0x8000_0824, "TDX_FLUSHVP_NOT_DONE", Raw;
    /// TDX_NUM_ACTIVATED_HKIDS_NOT_SUPPORTED.
    NUM_ACTIVATED_HKIDS_NOT_SUPPORTED = 0xC000_0825, "TDX_NUM_ACTIVATED_HKIDS_NOT_SUPPORTED", Raw;
    /// TDX_INCORRECT_CPUID_VALUE.
    INCORRECT_CPUID_VALUE = 0xC000_0900, "TDX_INCORRECT_CPUID_VALUE", Raw;
    /// TDX_LIMIT_CPUID_MAXVAL_SET (1.0: BOOT_NT4_SET).
    LIMIT_CPUID_MAXVAL_SET = 0xC000_0901, "TDX_LIMIT_CPUID_MAXVAL_SET", Raw;
    /// TDX_INCONSISTENT_CPUID_FIELD.
    INCONSISTENT_CPUID_FIELD = 0xC000_0902, "TDX_INCONSISTENT_CPUID_FIELD", Raw;
    /// TDX_CPUID_MAX_SUBLEAVES_UNRECOGNIZED.
    CPUID_MAX_SUBLEAVES_UNRECOGNIZED = 0xC000_0903, "TDX_CPUID_MAX_SUBLEAVES_UNRECOGNIZED", Raw;
    /// TDX_CPUID_LEAF_1F_FORMAT_UNRECOGNIZED.
    CPUID_LEAF_1F_FORMAT_UNRECOGNIZED = 0xC000_0904, "TDX_CPUID_LEAF_1F_FORMAT_UNRECOGNIZED", Raw;
    /// TDX_INVALID_WBINVD_SCOPE.
    INVALID_WBINVD_SCOPE = 0xC000_0905, "TDX_INVALID_WBINVD_SCOPE", Raw;
    /// TDX_INVALID_PKG_ID.
    INVALID_PKG_ID = 0xC000_0906, "TDX_INVALID_PKG_ID", Raw;
    /// TDX_ENABLE_MONITOR_FSM_NOT_SET.
    ENABLE_MONITOR_FSM_NOT_SET = 0xC000_0907, "TDX_ENABLE_MONITOR_FSM_NOT_SET", Raw;
    /// TDX_CPUID_LEAF_NOT_SUPPORTED.
    CPUID_LEAF_NOT_SUPPORTED = 0xC000_0908, "TDX_CPUID_LEAF_NOT_SUPPORTED", Raw;
    /// TDX_SMRR_NOT_LOCKED.
    SMRR_NOT_LOCKED = 0xC000_0910, "TDX_SMRR_NOT_LOCKED", Raw;
    /// TDX_INVALID_SMRR_CONFIGURATION.
    INVALID_SMRR_CONFIGURATION = 0xC000_0911, "TDX_INVALID_SMRR_CONFIGURATION", Raw;
    /// TDX_SMRR_OVERLAPS_CMR.
    SMRR_OVERLAPS_CMR = 0xC000_0912, "TDX_SMRR_OVERLAPS_CMR", Raw;
    /// TDX_SMRR_LOCK_NOT_SUPPORTED.
    SMRR_LOCK_NOT_SUPPORTED = 0xC000_0913, "TDX_SMRR_LOCK_NOT_SUPPORTED", Raw;
    /// TDX_SMRR_NOT_SUPPORTED.
    SMRR_NOT_SUPPORTED = 0xC000_0914, "TDX_SMRR_NOT_SUPPORTED", Raw;
    /// TDX_INCONSISTENT_MSR (low 32 bits = MSR index).
    INCONSISTENT_MSR = 0xC000_0920, "TDX_INCONSISTENT_MSR", Msr;
    /// TDX_INCORRECT_MSR_VALUE (low 32 bits = MSR index).
    INCORRECT_MSR_VALUE = 0xC000_0921, "TDX_INCORRECT_MSR_VALUE", Msr;
    /// TDX_SEAMREPORT_NOT_AVAILABLE.
    SEAMREPORT_NOT_AVAILABLE = 0xC000_0930, "TDX_SEAMREPORT_NOT_AVAILABLE", Raw;
    /// TDX_SEAMDB_GETREF_NOT_AVAILABLE.
    SEAMDB_GETREF_NOT_AVAILABLE = 0xC000_0931, "TDX_SEAMDB_GETREF_NOT_AVAILABLE", Raw;
    /// TDX_SEAMDB_REPORT_NOT_AVAILABLE.
    SEAMDB_REPORT_NOT_AVAILABLE = 0xC000_0932, "TDX_SEAMDB_REPORT_NOT_AVAILABLE", Raw;
    /// TDX_SEAMVERIFYREPORT_NOT_AVAILABLE.
    SEAMVERIFYREPORT_NOT_AVAILABLE = 0xC000_0933, "TDX_SEAMVERIFYREPORT_NOT_AVAILABLE", Raw;
    /// TDX_INVALID_TDMR.
    INVALID_TDMR = 0xC000_0A00, "TDX_INVALID_TDMR", Tdmr;
    /// TDX_NON_ORDERED_TDMR.
    NON_ORDERED_TDMR = 0xC000_0A01, "TDX_NON_ORDERED_TDMR", Tdmr;
    /// TDX_TDMR_OUTSIDE_CMRS.
    TDMR_OUTSIDE_CMRS = 0xC000_0A02, "TDX_TDMR_OUTSIDE_CMRS", Tdmr;
    /// TDX_TDMR_ALREADY_INITIALIZED (success class).
    TDMR_ALREADY_INITIALIZED = 0x0000_0A03, "TDX_TDMR_ALREADY_INITIALIZED", Raw;
    /// TDX_INVALID_PAMT.
    INVALID_PAMT = 0xC000_0A10, "TDX_INVALID_PAMT", Tdmr;
    /// TDX_PAMT_OUTSIDE_CMRS.
    PAMT_OUTSIDE_CMRS = 0xC000_0A11, "TDX_PAMT_OUTSIDE_CMRS", Tdmr;
    /// TDX_PAMT_OVERLAP.
    PAMT_OVERLAP = 0xC000_0A12, "TDX_PAMT_OVERLAP", Tdmr;
    /// TDX_INVALID_RESERVED_IN_TDMR.
    INVALID_RESERVED_IN_TDMR = 0xC000_0A20, "TDX_INVALID_RESERVED_IN_TDMR", Tdmr;
    /// TDX_NON_ORDERED_RESERVED_IN_TDMR.
    NON_ORDERED_RESERVED_IN_TDMR = 0xC000_0A21, "TDX_NON_ORDERED_RESERVED_IN_TDMR", Tdmr;
    /// TDX_CMR_LIST_INVALID.
    CMR_LIST_INVALID = 0xC000_0A22, "TDX_CMR_LIST_INVALID", Raw;
    /// TDX_EPT_WALK_FAILED.
    EPT_WALK_FAILED = 0xC000_0B00, "TDX_EPT_WALK_FAILED", MaybeOperand;
    /// TDX_EPT_ENTRY_FREE.
    EPT_ENTRY_FREE = 0xC000_0B01, "TDX_EPT_ENTRY_FREE", MaybeOperand;
    /// TDX_EPT_ENTRY_NOT_FREE.
    EPT_ENTRY_NOT_FREE = 0xC000_0B02, "TDX_EPT_ENTRY_NOT_FREE", MaybeOperand;
    /// TDX_EPT_ENTRY_NOT_PRESENT.
    EPT_ENTRY_NOT_PRESENT = 0xC000_0B03, "TDX_EPT_ENTRY_NOT_PRESENT", MaybeOperand;
    /// TDX_EPT_ENTRY_NOT_LEAF.
    EPT_ENTRY_NOT_LEAF = 0xC000_0B04, "TDX_EPT_ENTRY_NOT_LEAF", MaybeOperand;
    /// TDX_EPT_ENTRY_LEAF.
    EPT_ENTRY_LEAF = 0xC000_0B05, "TDX_EPT_ENTRY_LEAF", MaybeOperand;
    /// TDX_GPA_RANGE_NOT_BLOCKED.
    GPA_RANGE_NOT_BLOCKED = 0xC000_0B06, "TDX_GPA_RANGE_NOT_BLOCKED", MaybeOperand;
    /// TDX_GPA_RANGE_ALREADY_BLOCKED (success class).
    GPA_RANGE_ALREADY_BLOCKED = 0x0000_0B07, "TDX_GPA_RANGE_ALREADY_BLOCKED", MaybeOperand;
    /// TDX_TLB_TRACKING_NOT_DONE.
    TLB_TRACKING_NOT_DONE = 0xC000_0B08, "TDX_TLB_TRACKING_NOT_DONE", MaybeOperand;
    /// TDX_EPT_INVALID_PROMOTE_CONDITIONS.
    EPT_INVALID_PROMOTE_CONDITIONS = 0xC000_0B09, "TDX_EPT_INVALID_PROMOTE_CONDITIONS", MaybeOperand;
    /// TDX_PAGE_ALREADY_ACCEPTED (success class; low bits = the actual level).
    PAGE_ALREADY_ACCEPTED = 0x0000_0B0A, "TDX_PAGE_ALREADY_ACCEPTED", Level;
    /// TDX_PAGE_SIZE_MISMATCH (low bits = the actual level).
    PAGE_SIZE_MISMATCH = 0xC000_0B0B, "TDX_PAGE_SIZE_MISMATCH", Level;
    /// TDX_GPA_RANGE_BLOCKED.
    GPA_RANGE_BLOCKED = 0xC000_0B0C, "TDX_GPA_RANGE_BLOCKED", MaybeOperand;
    /// TDX_EPT_ENTRY_STATE_INCORRECT (1.5+).
    EPT_ENTRY_STATE_INCORRECT = 0xC000_0B0D, "TDX_EPT_ENTRY_STATE_INCORRECT", MaybeOperand;
    /// TDX_EPT_PAGE_NOT_FREE.
    EPT_PAGE_NOT_FREE = 0xC000_0B0E, "TDX_EPT_PAGE_NOT_FREE", MaybeOperand;
    /// TDX_L2_SEPT_WALK_FAILED.
    L2_SEPT_WALK_FAILED = 0xC000_0B0F, "TDX_L2_SEPT_WALK_FAILED", MaybeOperand;
    /// TDX_L2_SEPT_ENTRY_NOT_FREE.
    L2_SEPT_ENTRY_NOT_FREE = 0xC000_0B10, "TDX_L2_SEPT_ENTRY_NOT_FREE", MaybeOperand;
    /// TDX_PAGE_ATTR_INVALID.
    PAGE_ATTR_INVALID = 0xC000_0B11, "TDX_PAGE_ATTR_INVALID", MaybeOperand;
    /// TDX_L2_SEPT_PAGE_NOT_PROVIDED.
    L2_SEPT_PAGE_NOT_PROVIDED = 0xC000_0B12, "TDX_L2_SEPT_PAGE_NOT_PROVIDED", MaybeOperand;
    /// TDX_METADATA_FIELD_ID_INCORRECT.
    METADATA_FIELD_ID_INCORRECT = 0xC000_0C00, "TDX_METADATA_FIELD_ID_INCORRECT", MaybeOperand;
    /// TDX_METADATA_FIELD_NOT_WRITABLE.
    METADATA_FIELD_NOT_WRITABLE = 0xC000_0C01, "TDX_METADATA_FIELD_NOT_WRITABLE", MaybeOperand;
    /// TDX_METADATA_FIELD_NOT_READABLE.
    METADATA_FIELD_NOT_READABLE = 0xC000_0C02, "TDX_METADATA_FIELD_NOT_READABLE", MaybeOperand;
    /// TDX_METADATA_FIELD_VALUE_NOT_VALID.
    METADATA_FIELD_VALUE_NOT_VALID = 0xC000_0C03, "TDX_METADATA_FIELD_VALUE_NOT_VALID", MaybeOperand;
    /// TDX_METADATA_LIST_OVERFLOW.
    METADATA_LIST_OVERFLOW = 0xC000_0C04, "TDX_METADATA_LIST_OVERFLOW", Raw;
    /// TDX_INVALID_METADATA_LIST_HEADER.
    INVALID_METADATA_LIST_HEADER = 0xC000_0C05, "TDX_INVALID_METADATA_LIST_HEADER", Raw;
    /// TDX_REQUIRED_METADATA_FIELD_MISSING.
    REQUIRED_METADATA_FIELD_MISSING = 0xC000_0C06, "TDX_REQUIRED_METADATA_FIELD_MISSING", Raw;
    /// TDX_METADATA_ELEMENT_SIZE_INCORRECT.
    METADATA_ELEMENT_SIZE_INCORRECT = 0xC000_0C07, "TDX_METADATA_ELEMENT_SIZE_INCORRECT", Raw;
    /// TDX_METADATA_LAST_ELEMENT_INCORRECT.
    METADATA_LAST_ELEMENT_INCORRECT = 0xC000_0C08, "TDX_METADATA_LAST_ELEMENT_INCORRECT", Raw;
    /// TDX_METADATA_FIELD_CURRENTLY_NOT_WRITABLE.
    METADATA_FIELD_CURRENTLY_NOT_WRITABLE = 0xC000_0C09, "TDX_METADATA_FIELD_CURRENTLY_NOT_WRITABLE", Raw;
    /// TDX_METADATA_WR_MASK_NOT_VALID.
    METADATA_WR_MASK_NOT_VALID = 0xC000_0C0A, "TDX_METADATA_WR_MASK_NOT_VALID", Raw;
    /// TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT (success class).
    METADATA_FIRST_FIELD_ID_IN_CONTEXT = 0x0000_0C0B, "TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT", Raw;
    /// TDX_METADATA_FIELD_SKIP (success class).
    METADATA_FIELD_SKIP = 0x0000_0C0C, "TDX_METADATA_FIELD_SKIP", Raw;
    /// TDX_SERVTD_ALREADY_BOUND_FOR_TYPE (service-TD / migration; name from the 1.5.01 module headers).
    SERVTD_ALREADY_BOUND_FOR_TYPE = 0xC000_0D00, "TDX_SERVTD_ALREADY_BOUND_FOR_TYPE", Raw;
    /// TDX_SERVTD_TYPE_MISMATCH (service-TD / migration; name from the 1.5.01 module headers).
    SERVTD_TYPE_MISMATCH = 0xC000_0D01, "TDX_SERVTD_TYPE_MISMATCH", Raw;
    /// TDX_SERVTD_ATTR_MISMATCH (service-TD / migration; name from the 1.5.01 module headers).
    SERVTD_ATTR_MISMATCH = 0xC000_0D02, "TDX_SERVTD_ATTR_MISMATCH", Raw;
    /// TDX_SERVTD_INFO_HASH_MISMATCH (service-TD / migration; name from the 1.5.01 module headers).
    SERVTD_INFO_HASH_MISMATCH = 0xC000_0D03, "TDX_SERVTD_INFO_HASH_MISMATCH", Raw;
    /// TDX_SERVTD_UUID_MISMATCH (service-TD / migration; name from the 1.5.01 module headers).
    SERVTD_UUID_MISMATCH = 0xC000_0D04, "TDX_SERVTD_UUID_MISMATCH", Raw;
    /// TDX_SERVTD_NOT_BOUND (service-TD / migration; name from the 1.5.01 module headers).
    SERVTD_NOT_BOUND = 0xC000_0D05, "TDX_SERVTD_NOT_BOUND", Raw;
    /// TDX_SERVTD_BOUND (service-TD / migration; name from the 1.5.01 module headers).
    SERVTD_BOUND = 0xC000_0D06, "TDX_SERVTD_BOUND", Raw;
    /// TDX_TARGET_UUID_MISMATCH (service-TD / migration; name from the 1.5.01 module headers).
    TARGET_UUID_MISMATCH = 0xC000_0D07, "TDX_TARGET_UUID_MISMATCH", Raw;
    /// TDX_TARGET_UUID_UPDATED (service-TD / migration; name from the 1.5.01 module headers).
    TARGET_UUID_UPDATED = 0xC000_0D08, "TDX_TARGET_UUID_UPDATED", Raw;
    /// TDX_INVALID_MBMD (service-TD / migration; name from the 1.5.01 module headers).
    INVALID_MBMD = 0xC000_0E00, "TDX_INVALID_MBMD", Raw;
    /// TDX_INCORRECT_MBMD_MAC (service-TD / migration; name from the 1.5.01 module headers).
    INCORRECT_MBMD_MAC = 0xC000_0E01, "TDX_INCORRECT_MBMD_MAC", Raw;
    /// TDX_NOT_WRITE_BLOCKED (service-TD / migration; name from the 1.5.01 module headers).
    NOT_WRITE_BLOCKED = 0xC000_0E02, "TDX_NOT_WRITE_BLOCKED", Raw;
    /// TDX_NOT_EXPORTED (service-TD / migration; name from the 1.5.01 module headers).
    NOT_EXPORTED = 0xC000_0E04, "TDX_NOT_EXPORTED", Raw;
    /// TDX_MIGRATION_STREAM_STATE_INCORRECT (service-TD / migration; name from the 1.5.01 module headers).
    MIGRATION_STREAM_STATE_INCORRECT = 0xC000_0E05, "TDX_MIGRATION_STREAM_STATE_INCORRECT", Raw;
    /// TDX_MAX_MIGS_NUM_EXCEEDED (service-TD / migration; name from the 1.5.01 module headers).
    MAX_MIGS_NUM_EXCEEDED = 0xC000_0E06, "TDX_MAX_MIGS_NUM_EXCEEDED", Raw;
    /// TDX_EXPORTED_DIRTY_PAGES_REMAIN (service-TD / migration; name from the 1.5.01 module headers).
    EXPORTED_DIRTY_PAGES_REMAIN = 0xC000_0E07, "TDX_EXPORTED_DIRTY_PAGES_REMAIN", Raw;
    /// TDX_MIGRATION_DECRYPTION_KEY_NOT_SET (service-TD / migration; name from the 1.5.01 module headers).
    MIGRATION_DECRYPTION_KEY_NOT_SET = 0xC000_0E08, "TDX_MIGRATION_DECRYPTION_KEY_NOT_SET", Raw;
    /// TDX_TD_NOT_MIGRATABLE (service-TD / migration; name from the 1.5.01 module headers).
    TD_NOT_MIGRATABLE = 0xC000_0E09, "TDX_TD_NOT_MIGRATABLE", Raw;
    /// TDX_PREVIOUS_EXPORT_CLEANUP_INCOMPLETE (service-TD / migration; name from the 1.5.01 module headers).
    PREVIOUS_EXPORT_CLEANUP_INCOMPLETE = 0xC000_0E0A, "TDX_PREVIOUS_EXPORT_CLEANUP_INCOMPLETE", Raw;
    /// TDX_NUM_MIGS_HIGHER_THAN_CREATED (service-TD / migration; name from the 1.5.01 module headers).
    NUM_MIGS_HIGHER_THAN_CREATED = 0xC000_0E0B, "TDX_NUM_MIGS_HIGHER_THAN_CREATED", Raw;
    /// TDX_IMPORT_MISMATCH (service-TD / migration; name from the 1.5.01 module headers).
    IMPORT_MISMATCH = 0xC000_0E0C, "TDX_IMPORT_MISMATCH", Raw;
    /// TDX_MIGRATION_EPOCH_OVERFLOW (service-TD / migration; name from the 1.5.01 module headers).
    MIGRATION_EPOCH_OVERFLOW = 0xC000_0E0D, "TDX_MIGRATION_EPOCH_OVERFLOW", Raw;
    /// TDX_MAX_EXPORTS_EXCEEDED (service-TD / migration; name from the 1.5.01 module headers).
    MAX_EXPORTS_EXCEEDED = 0xC000_0E0E, "TDX_MAX_EXPORTS_EXCEEDED", Raw;
    /// TDX_INVALID_PAGE_MAC (service-TD / migration; name from the 1.5.01 module headers).
    INVALID_PAGE_MAC = 0xC000_0E0F, "TDX_INVALID_PAGE_MAC", Raw;
    /// TDX_MIGRATED_IN_CURRENT_EPOCH (service-TD / migration; name from the 1.5.01 module headers).
    MIGRATED_IN_CURRENT_EPOCH = 0xC000_0E10, "TDX_MIGRATED_IN_CURRENT_EPOCH", Raw;
    /// TDX_DISALLOWED_IMPORT_OVER_REMOVED (service-TD / migration; name from the 1.5.01 module headers).
    DISALLOWED_IMPORT_OVER_REMOVED = 0xC000_0E11, "TDX_DISALLOWED_IMPORT_OVER_REMOVED", Raw;
    /// TDX_SOME_VCPUS_NOT_MIGRATED (service-TD / migration; name from the 1.5.01 module headers).
    SOME_VCPUS_NOT_MIGRATED = 0xC000_0E12, "TDX_SOME_VCPUS_NOT_MIGRATED", Raw;
    /// TDX_ALL_VCPUS_IMPORTED (service-TD / migration; name from the 1.5.01 module headers).
    ALL_VCPUS_IMPORTED = 0xC000_0E13, "TDX_ALL_VCPUS_IMPORTED", Raw;
    /// TDX_MIN_MIGS_NOT_CREATED (service-TD / migration; name from the 1.5.01 module headers).
    MIN_MIGS_NOT_CREATED = 0xC000_0E14, "TDX_MIN_MIGS_NOT_CREATED", Raw;
    /// TDX_VCPU_ALREADY_EXPORTED (service-TD / migration; name from the 1.5.01 module headers).
    VCPU_ALREADY_EXPORTED = 0xC000_0E15, "TDX_VCPU_ALREADY_EXPORTED", Raw;
    /// TDX_INVALID_MIGRATION_DECRYPTION_KEY (service-TD / migration; name from the 1.5.01 module headers).
    INVALID_MIGRATION_DECRYPTION_KEY = 0xC000_0E16, "TDX_INVALID_MIGRATION_DECRYPTION_KEY", Raw;
    /// TDX_ALREADY_WRITE_BLOCKED (migration, success class).
    ALREADY_WRITE_BLOCKED = 0x0000_0E03, "TDX_ALREADY_WRITE_BLOCKED", Raw;
    /// TDX_INVALID_CPUSVN.
    INVALID_CPUSVN = 0xC000_1000, "TDX_INVALID_CPUSVN", Raw;
    /// TDX_INVALID_REPORTMACSTRUCT.
    INVALID_REPORTMACSTRUCT = 0xC000_1001, "TDX_INVALID_REPORTMACSTRUCT", Raw;
    /// TDX_L2_EXIT_HOST_ROUTED_ASYNC.
    L2_EXIT_HOST_ROUTED_ASYNC = 0x0000_1100, "TDX_L2_EXIT_HOST_ROUTED_ASYNC", ExitReason;
    /// TDX_L2_EXIT_HOST_ROUTED_TDVMCALL.
    L2_EXIT_HOST_ROUTED_TDVMCALL = 0x0000_1101, "TDX_L2_EXIT_HOST_ROUTED_TDVMCALL", ExitReason;
    /// TDX_L2_EXIT_PENDING_INTERRUPT.
    L2_EXIT_PENDING_INTERRUPT = 0x0000_1102, "TDX_L2_EXIT_PENDING_INTERRUPT", ExitReason;
    /// TDX_PENDING_INTERRUPT.
    PENDING_INTERRUPT = 0x0000_1120, "TDX_PENDING_INTERRUPT", Raw;
    /// TDX_TD_EXIT_BEFORE_L2_ENTRY.
    TD_EXIT_BEFORE_L2_ENTRY = 0x0000_1140, "TDX_TD_EXIT_BEFORE_L2_ENTRY", ExitReason;
    /// TDX_TD_EXIT_ON_L2_VM_EXIT.
    TD_EXIT_ON_L2_VM_EXIT = 0x0000_1141, "TDX_TD_EXIT_ON_L2_VM_EXIT", ExitReason;
    /// TDX_TD_EXIT_ON_L2_TO_L1.
    TD_EXIT_ON_L2_TO_L1 = 0x0000_1142, "TDX_TD_EXIT_ON_L2_TO_L1", ExitReason;
    /// TDX_GLA_NOT_CANONICAL.
    GLA_NOT_CANONICAL = 0xC000_1160, "TDX_GLA_NOT_CANONICAL", Raw;
}

open_enum! {
    /// The class of a status (bits 47:40).
    StatusClass(u8), unknown = "status class";
    /// General.
    GENERAL = 0x00 => "GENERAL",
    /// Operand errors.
    OPERAND = 0x01 => "OPERAND",
    /// Busy / entropy (retry).
    BUSY = 0x02 => "BUSY",
    /// Page metadata (PAMT).
    PAGE_METADATA = 0x03 => "PAGE_METADATA",
    /// TD pages.
    TD_PAGES = 0x04 => "TD_PAGES",
    /// System initialisation.
    SYS_INIT = 0x05 => "SYS_INIT",
    /// TD state.
    TD_STATE = 0x06 => "TD_STATE",
    /// vCPU.
    VCPU = 0x07 => "VCPU",
    /// Keys.
    KEYS = 0x08 => "KEYS",
    /// Platform configuration (CPUID, MSR, SMRR).
    PLATFORM_CONFIG = 0x09 => "PLATFORM_CONFIG",
    /// TDMR and PAMT.
    TDMR_PAMT = 0x0A => "TDMR_PAMT",
    /// Secure EPT.
    SEPT = 0x0B => "SEPT",
    /// Metadata.
    METADATA = 0x0C => "METADATA",
    /// Service TDs.
    SERVTD = 0x0D => "SERVTD",
    /// Migration.
    MIGRATION = 0x0E => "MIGRATION",
    /// Attestation.
    ATTESTATION = 0x10 => "ATTESTATION",
    /// L2 / interrupt exits.
    L2_EXIT = 0x11 => "L2_EXIT",
    /// Linux software-defined codes (never produced by the module).
    SW = 0xFF => "SW",
}

open_enum! {
    /// The operand an error refers to (bits 31:0 of operand errors).
    OperandId(u32), unknown = "operand";
    /// RAX.
    RAX = 0 => "RAX",
    /// RCX.
    RCX = 1 => "RCX",
    /// RDX.
    RDX = 2 => "RDX",
    /// RBX.
    RBX = 3 => "RBX",
    /// RBP.
    RBP = 5 => "RBP",
    /// RSI.
    RSI = 6 => "RSI",
    /// RDI.
    RDI = 7 => "RDI",
    /// R8.
    R8 = 8 => "R8",
    /// R9.
    R9 = 9 => "R9",
    /// R10.
    R10 = 10 => "R10",
    /// R11.
    R11 = 11 => "R11",
    /// R12.
    R12 = 12 => "R12",
    /// R13.
    R13 = 13 => "R13",
    /// R14.
    R14 = 14 => "R14",
    /// R15.
    R15 = 15 => "R15",
    /// TD_PARAMS.ATTRIBUTES.
    ATTRIBUTES = 64 => "ATTRIBUTES",
    /// TD_PARAMS.XFAM.
    XFAM = 65 => "XFAM",
    /// TD_PARAMS.EXEC_CONTROLS (CONFIG_FLAGS).
    EXEC_CONTROLS = 66 => "EXEC_CONTROLS",
    /// TD_PARAMS.EPTP_CONTROLS.
    EPTP_CONTROLS = 67 => "EPTP_CONTROLS",
    /// TD_PARAMS.MAX_VCPUS.
    MAX_VCPUS = 68 => "MAX_VCPUS",
    /// TD_PARAMS.CPUID_CONFIG.
    CPUID_CONFIG = 69 => "CPUID_CONFIG",
    /// TD_PARAMS.TSC_FREQUENCY.
    TSC_FREQUENCY = 70 => "TSC_FREQUENCY",
    /// TD_PARAMS.NUM_L2_VMS.
    NUM_L2_VMS = 71 => "NUM_L2_VMS",
    /// TD_PARAMS.IA32_ARCH_CAPABILITIES_CONFIG.
    IA32_ARCH_CAPABILITIES_CONFIG = 72 => "IA32_ARCH_CAPABILITIES_CONFIG",
    /// A page operand.
    PAGE = 95 => "PAGE",
    /// A TDMR_INFO physical address.
    TDMR_INFO_PA = 96 => "TDMR_INFO_PA",
    /// A GPA list entry.
    GPA_LIST_ENTRY = 97 => "GPA_LIST_ENTRY",
    /// A migration buffer list entry.
    MIG_BUFF_LIST_ENTRY = 98 => "MIG_BUFF_LIST_ENTRY",
    /// A new-page list entry.
    NEW_PAGE_LIST_ENTRY = 99 => "NEW_PAGE_LIST_ENTRY",
    /// The TDR page.
    TDR = 128 => "TDR",
    /// A TDCX page.
    TDCX = 129 => "TDCX",
    /// The TDVPR page.
    TDVPR = 130 => "TDVPR",
    /// A TDVPX page (1.0).
    TDVPX = 131 => "TDVPX",
    /// A regular TD page.
    REG_PAGE = 132 => "REG_PAGE",
    /// The TDCS.
    TDCS = 144 => "TDCS",
    /// The TDVPS.
    TDVPS = 145 => "TDVPS",
    /// The Secure-EPT tree.
    SEPT_TREE = 146 => "SEPT_TREE",
    /// A Secure-EPT entry.
    SEPT_ENTRY = 147 => "SEPT_ENTRY",
    /// An RTMR.
    RTMR = 168 => "RTMR",
    /// The TD epoch.
    TD_EPOCH = 169 => "TD_EPOCH",
    /// L2 virtual-APIC GPA.
    L2_VAPIC_GPA = 170 => "L2_VAPIC_GPA",
    /// Migration stream context.
    MIGSC = 171 => "MIGSC",
    /// The TD's OP_STATE.
    OP_STATE = 172 => "OP_STATE",
    /// Migration.
    MIG = 173 => "MIG",
    /// Service-TD bindings.
    SERVTD_BINDINGS = 174 => "SERVTD_BINDINGS",
    /// A metadata field.
    METADATA_FIELD = 176 => "METADATA_FIELD",
    /// The system (global) state.
    SYS = 184 => "SYS",
    /// The TDMRs.
    TDMR = 185 => "TDMR",
    /// The key ownership table.
    KOT = 186 => "KOT",
    /// The key encryption table.
    KET = 187 => "KET",
    /// The write-back cache state.
    WBCACHE = 188 => "WBCACHE",
}

/// What bits 31:0 of a status mean for its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusDetail {
    /// Nothing.
    None,
    /// The operand the error refers to.
    Operand(OperandId),
    /// An EPT level (PAGE_ALREADY_ACCEPTED, PAGE_SIZE_MISMATCH).
    Level(u32),
    /// An MSR index.
    Msr(u32),
    /// TDMR/PAMT errors: the TDMR index, the reserved-area index or page size, the other TDMR.
    Tdmr {
        /// Bits 7:0.
        tdmr_index: u8,
        /// Bits 15:8: reserved-area index or page size (0 4K, 1 2M, 2 1G).
        info: u8,
        /// Bits 23:16: the second TDMR involved.
        other_tdmr_index: u8,
    },
    /// The VMX exit reason of a TD exit (TDH.VP.ENTER).
    ExitReason(VmxExitReason),
    /// Bits 31:0 without a known meaning.
    Raw(u32),
}

/// How a caller should treat a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// TDX_SUCCESS (possibly carrying a TD-exit reason).
    Success,
    /// A success-class code other than TDX_SUCCESS (e.g. TDX_KEY_CONFIGURED).
    SuccessWithWarning,
    /// An error without NON_RECOVERABLE: retrying may succeed (busy, interrupted, entropy).
    Recoverable,
    /// An error with NON_RECOVERABLE set: the same call will fail again.
    NonRecoverable,
    /// An error with FATAL set: the TD is dead.
    Fatal,
}

/// The 64-bit completion status of a SEAMCALL or TDCALL (RAX on return).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct TdxStatus(u64);

impl TdxStatus {
    /// TDX_SUCCESS.
    pub const SUCCESS: TdxStatus = TdxStatus(0);
    /// Linux's code for a SEAMCALL that failed with VMfailInvalid (no module loaded).
    pub const SEAMCALL_VMFAILINVALID: TdxStatus = TdxStatus(0x8000_FF00_FFFF_0000);
    /// Linux's code for a SEAMCALL that raised #GP.
    pub const SEAMCALL_GP: TdxStatus = TdxStatus(0x8000_FF00_0000_0000 + 13);
    /// Linux's code for a SEAMCALL that raised #UD.
    pub const SEAMCALL_UD: TdxStatus = TdxStatus(0x8000_FF00_0000_0000 + 6);

    /// Wraps a raw RAX value.
    pub const fn from_raw(raw: u64) -> Self {
        TdxStatus(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The canonical status of `code` with zero details.
    pub const fn from_code(code: StatusCode) -> Self {
        code.canonical_status()
    }

    /// Bit 63: the call failed.
    pub const fn is_error(self) -> bool {
        self.0 >> 63 != 0
    }

    /// Bit 62: retrying will not help.
    pub const fn is_non_recoverable(self) -> bool {
        self.0 >> 62 & 1 != 0
    }

    /// Bit 61: the TD has been marked fatal.
    pub const fn is_fatal(self) -> bool {
        self.0 >> 61 & 1 != 0
    }

    /// Bit 60: the host recoverability hint.
    pub const fn host_recoverability_hint(self) -> bool {
        self.0 >> 60 & 1 != 0
    }

    /// Bits 47:40.
    pub const fn class(self) -> StatusClass {
        StatusClass::from_raw((self.0 >> 40) as u8)
    }

    /// Bits 39:32.
    pub const fn details_l1(self) -> u8 {
        (self.0 >> 32) as u8
    }

    /// Bits 31:0.
    pub const fn details_l2(self) -> u32 {
        self.0 as u32
    }

    /// The code (bits 47:32).
    pub const fn code(self) -> StatusCode {
        StatusCode((self.0 >> 32) as u16)
    }

    /// Bit 63 clear (success, including success-class warnings).
    pub const fn is_success(self) -> bool {
        !self.is_error()
    }

    /// An error that retrying may clear: bit 63 set, NON_RECOVERABLE and FATAL clear (the busy
    /// class, TDX_INTERRUPTED_RESUMABLE, TDX_RND_NO_ENTROPY, TDX_KEY_GENERATION_FAILED, …).
    pub const fn is_recoverable(self) -> bool {
        self.is_error() && !self.is_non_recoverable() && !self.is_fatal()
    }

    /// One of Linux's software-defined codes (class byte 0xFF).
    pub const fn is_sw_error(self) -> bool {
        self.is_error() && (self.0 >> 40) as u8 == 0xFF
    }

    /// How a caller should treat this status (from bits 63:61).
    pub const fn disposition(self) -> Disposition {
        if !self.is_error() {
            if self.code().0 == 0 {
                Disposition::Success
            } else {
                Disposition::SuccessWithWarning
            }
        } else if self.is_fatal() {
            Disposition::Fatal
        } else if self.is_non_recoverable() {
            Disposition::NonRecoverable
        } else {
            Disposition::Recoverable
        }
    }

    /// The meaning of bits 31:0 for this code.
    pub const fn detail(self) -> StatusDetail {
        let low = self.details_l2();
        if self.is_sw_error() {
            return if low == 0 {
                StatusDetail::None
            } else {
                StatusDetail::Raw(low)
            };
        }
        match self.code().detail_kind() {
            DetailKind::Operand => StatusDetail::Operand(OperandId::from_raw(low)),
            _ if low == 0 => StatusDetail::None,
            DetailKind::MaybeOperand => StatusDetail::Operand(OperandId::from_raw(low)),
            DetailKind::Level => StatusDetail::Level(low),
            DetailKind::Msr => StatusDetail::Msr(low),
            DetailKind::Tdmr => StatusDetail::Tdmr {
                tdmr_index: low as u8,
                info: (low >> 8) as u8,
                other_tdmr_index: (low >> 16) as u8,
            },
            DetailKind::ExitReason => StatusDetail::ExitReason(VmxExitReason::from_raw(low)),
            DetailKind::Raw => StatusDetail::Raw(low),
        }
    }

    fn sw_name(self) -> Option<&'static str> {
        match self {
            TdxStatus::SEAMCALL_VMFAILINVALID => Some("TDX_SEAMCALL_VMFAILINVALID"),
            TdxStatus::SEAMCALL_GP => Some("TDX_SEAMCALL_GP"),
            TdxStatus::SEAMCALL_UD => Some("TDX_SEAMCALL_UD"),
            _ => None,
        }
    }
}

impl Default for TdxStatus {
    fn default() -> Self {
        TdxStatus::SUCCESS
    }
}

impl fmt::Display for TdxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.sw_name() {
            return f.write_str(n);
        }
        let Some(name) = self.code().name().filter(|_| !self.is_sw_error()) else {
            return write!(f, "unknown TDX status {:#018x}", self.0);
        };
        f.write_str(name)?;
        match self.detail() {
            StatusDetail::None => {}
            StatusDetail::Operand(op) => match op.name() {
                Some(n) => write!(f, " (operand {n})")?,
                None => write!(f, " (operand {})", op.raw())?,
            },
            StatusDetail::Level(l) => write!(f, " (level {l})")?,
            StatusDetail::Msr(m) => write!(f, " (MSR {m:#x})")?,
            StatusDetail::Tdmr {
                tdmr_index,
                info,
                other_tdmr_index,
            } => write!(
                f,
                " (TDMR {tdmr_index}, info {info}, other TDMR {other_tdmr_index})"
            )?,
            StatusDetail::ExitReason(r) => write!(f, " (exit reason {} {r})", r.raw())?,
            StatusDetail::Raw(v) => write!(f, " (details {v:#x})")?,
        }
        // Flags that differ from this code's canonical value (e.g. a 1.0-style encoding).
        let flags = self.0 >> 60;
        let canonical = self.code().canonical_status().0 >> 60;
        if flags != canonical {
            write!(f, " [flags {flags:#x}]")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TdxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TdxStatus({:#018x} {self})", self.0)
    }
}

impl core::error::Error for TdxStatus {}
