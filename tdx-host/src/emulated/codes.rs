//! Completion-status values and operand ids the emulated module returns (tdx-module-abi.md
//! §4.2/§4.3, `include/auto_gen/tdx_error_codes_defs.h`).
//!
//! Interim: these are the raw 64-bit values (`CLASS`/`DETAILS_L1` in bits 47:32 plus the
//! flag bits 63:60) used until `tdx_abi::status::{StatusCode, OperandId}` is merged; the
//! handlers only go through [`err`], [`with_operand`] and [`code`], so the switch is local.

use tdx_abi::status::TdxStatus;

macro_rules! codes {
    ($($(#[$m:meta])* $name:ident = $v:expr;)*) => {
        $($(#[$m])* pub(crate) const $name: u64 = ($v as u64) << 32;)*
    };
}

codes! {
    INTERRUPTED_RESUMABLE = 0x8000_0003u32;
    OPERAND_INVALID = 0xC000_0100u32;
    OPERAND_ADDR_RANGE_ERROR = 0xC000_0101u32;
    OPERAND_BUSY = 0x8000_0200u32;
    PREVIOUS_TLB_EPOCH_BUSY = 0x8000_0201u32;
    PAGE_METADATA_INCORRECT = 0xC000_0300u32;
    TD_ASSOCIATED_PAGES_EXIST = 0xC000_0400u32;
    SYS_INIT_NOT_PENDING = 0xC000_0500u32;
    SYS_LP_INIT_NOT_DONE = 0xC000_0502u32;
    SYS_LP_INIT_DONE = 0xC000_0503u32;
    SYS_NOT_READY = 0xC000_0505u32;
    SYS_KEY_CONFIG_NOT_PENDING = 0xC000_0507u32;
    SYS_LP_INIT_NOT_PENDING = 0xC000_050Bu32;
    SYS_CONFIG_NOT_PENDING = 0xC000_050Cu32;
    TD_FATAL = 0xE000_0604u32;
    TDCS_NOT_ALLOCATED = 0xC000_0606u32;
    LIFECYCLE_STATE_INCORRECT = 0xC000_0607u32;
    OP_STATE_INCORRECT = 0xC000_0608u32;
    NO_VCPUS = 0xC000_0609u32;
    TDCX_NUM_INCORRECT = 0xC000_0610u32;
    VCPU_STATE_INCORRECT = 0xC000_0700u32;
    VCPU_ASSOCIATED = 0x8000_0701u32;
    VCPU_NOT_ASSOCIATED = 0x8000_0702u32;
    NO_VALID_VE_INFO = 0xC000_0704u32;
    MAX_VCPUS_EXCEEDED = 0xC000_0705u32;
    TD_KEYS_NOT_CONFIGURED = 0x8000_0810u32;
    KEY_CONFIGURED = 0x0000_0815u32;
    WBCACHE_NOT_COMPLETE = 0x8000_0817u32;
    HKID_NOT_FREE = 0xC000_0820u32;
    NO_HKID_READY_TO_WBCACHE = 0x0000_0821u32;
    FLUSHVP_NOT_DONE = 0x8000_0824u32;
    TDMR_ALREADY_INITIALIZED = 0x0000_0A03u32;
    EPT_WALK_FAILED = 0xC000_0B00u32;
    EPT_ENTRY_NOT_PRESENT = 0xC000_0B03u32;
    GPA_RANGE_NOT_BLOCKED = 0xC000_0B06u32;
    GPA_RANGE_ALREADY_BLOCKED = 0x0000_0B07u32;
    TLB_TRACKING_NOT_DONE = 0xC000_0B08u32;
    PAGE_ALREADY_ACCEPTED = 0x0000_0B0Au32;
    PAGE_SIZE_MISMATCH = 0xC000_0B0Bu32;
    EPT_ENTRY_STATE_INCORRECT = 0xC000_0B0Du32;
    EPT_PAGE_NOT_FREE = 0xC000_0B0Eu32;
    METADATA_FIELD_ID_INCORRECT = 0xC000_0C00u32;
    METADATA_FIELD_NOT_WRITABLE = 0xC000_0C01u32;
    METADATA_FIRST_FIELD_ID_IN_CONTEXT = 0x0000_0C0Bu32;
}

/// Operand ids (§4.3).
pub(crate) mod op {
    pub(crate) const RAX: u32 = 0;
    pub(crate) const RCX: u32 = 1;
    pub(crate) const RDX: u32 = 2;
    pub(crate) const R8: u32 = 8;
    pub(crate) const R9: u32 = 9;
    pub(crate) const ATTRIBUTES: u32 = 64;
    pub(crate) const XFAM: u32 = 65;
    pub(crate) const EXEC_CONTROLS: u32 = 66;
    pub(crate) const EPTP_CONTROLS: u32 = 67;
    pub(crate) const MAX_VCPUS: u32 = 68;
    pub(crate) const CPUID_CONFIG: u32 = 69;
    pub(crate) const TSC_FREQUENCY: u32 = 70;
    pub(crate) const NUM_L2_VMS: u32 = 71;
    pub(crate) const IA32_ARCH_CAPABILITIES_CONFIG: u32 = 72;
    pub(crate) const TDR: u32 = 128;
    pub(crate) const SEPT_TREE: u32 = 146;
    pub(crate) const TD_EPOCH: u32 = 169;
    pub(crate) const OP_STATE: u32 = 172;
    pub(crate) const KOT: u32 = 186;
}

/// A status with no extra details.
pub(crate) const fn code(c: u64) -> TdxStatus {
    TdxStatus::from_raw(c)
}

/// A status with an operand id (or other details) in bits 31:0.
pub(crate) const fn with_operand(c: u64, operand: u32) -> TdxStatus {
    TdxStatus::from_raw(c | operand as u64)
}

/// `Err` of [`with_operand`], for `?` in handlers.
pub(crate) const fn err<T>(c: u64, operand: u32) -> Result<T, TdxStatus> {
    Err(with_operand(c, operand))
}
