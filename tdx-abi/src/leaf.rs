//! Leaf numbers: host-side SEAMCALL leaves (`TDH.*`), guest-side TDCALL leaves (`TDG.*`), the
//! leaf/version word in RAX, VMX exit reasons, and the `TDG.VP.VMCALL` (GHCI) sub-functions and
//! status codes.
//!
//! All spec-numbered values are open: an unknown value from hardware or a guest survives a
//! round trip and prints as a number.

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::open_enum::open_enum;

open_enum! {
    /// A host-side SEAMCALL leaf number (`TDH.*`, bits 15:0 of RAX), TDX module 1.5.
    SeamcallLeaf(u16), unknown = "SEAMCALL leaf";
    /// TDH.VP.ENTER.
    TDH_VP_ENTER = 0 => "TDH.VP.ENTER",
    /// TDH.MNG.ADDCX.
    TDH_MNG_ADDCX = 1 => "TDH.MNG.ADDCX",
    /// TDH.MEM.PAGE.ADD.
    TDH_MEM_PAGE_ADD = 2 => "TDH.MEM.PAGE.ADD",
    /// TDH.MEM.SEPT.ADD.
    TDH_MEM_SEPT_ADD = 3 => "TDH.MEM.SEPT.ADD",
    /// TDH.VP.ADDCX.
    TDH_VP_ADDCX = 4 => "TDH.VP.ADDCX",
    /// TDH.MEM.PAGE.RELOCATE.
    TDH_MEM_PAGE_RELOCATE = 5 => "TDH.MEM.PAGE.RELOCATE",
    /// TDH.MEM.PAGE.AUG.
    TDH_MEM_PAGE_AUG = 6 => "TDH.MEM.PAGE.AUG",
    /// TDH.MEM.RANGE.BLOCK.
    TDH_MEM_RANGE_BLOCK = 7 => "TDH.MEM.RANGE.BLOCK",
    /// TDH.MNG.KEY.CONFIG.
    TDH_MNG_KEY_CONFIG = 8 => "TDH.MNG.KEY.CONFIG",
    /// TDH.MNG.CREATE.
    TDH_MNG_CREATE = 9 => "TDH.MNG.CREATE",
    /// TDH.VP.CREATE.
    TDH_VP_CREATE = 10 => "TDH.VP.CREATE",
    /// TDH.MNG.RD.
    TDH_MNG_RD = 11 => "TDH.MNG.RD",
    /// TDH.MEM.RD.
    TDH_MEM_RD = 12 => "TDH.MEM.RD",
    /// TDH.MNG.WR.
    TDH_MNG_WR = 13 => "TDH.MNG.WR",
    /// TDH.MEM.WR.
    TDH_MEM_WR = 14 => "TDH.MEM.WR",
    /// TDH.MEM.PAGE.DEMOTE.
    TDH_MEM_PAGE_DEMOTE = 15 => "TDH.MEM.PAGE.DEMOTE",
    /// TDH.MR.EXTEND.
    TDH_MR_EXTEND = 16 => "TDH.MR.EXTEND",
    /// TDH.MR.FINALIZE.
    TDH_MR_FINALIZE = 17 => "TDH.MR.FINALIZE",
    /// TDH.VP.FLUSH.
    TDH_VP_FLUSH = 18 => "TDH.VP.FLUSH",
    /// TDH.MNG.VPFLUSHDONE.
    TDH_MNG_VPFLUSHDONE = 19 => "TDH.MNG.VPFLUSHDONE",
    /// TDH.MNG.KEY.FREEID.
    TDH_MNG_KEY_FREEID = 20 => "TDH.MNG.KEY.FREEID",
    /// TDH.MNG.INIT.
    TDH_MNG_INIT = 21 => "TDH.MNG.INIT",
    /// TDH.VP.INIT.
    TDH_VP_INIT = 22 => "TDH.VP.INIT",
    /// TDH.MEM.PAGE.PROMOTE.
    TDH_MEM_PAGE_PROMOTE = 23 => "TDH.MEM.PAGE.PROMOTE",
    /// TDH.PHYMEM.PAGE.RDMD.
    TDH_PHYMEM_PAGE_RDMD = 24 => "TDH.PHYMEM.PAGE.RDMD",
    /// TDH.MEM.SEPT.RD.
    TDH_MEM_SEPT_RD = 25 => "TDH.MEM.SEPT.RD",
    /// TDH.VP.RD.
    TDH_VP_RD = 26 => "TDH.VP.RD",
    /// TDH.MNG.KEY.RECLAIMID (a no-op in 1.5).
    TDH_MNG_KEY_RECLAIMID = 27 => "TDH.MNG.KEY.RECLAIMID",
    /// TDH.PHYMEM.PAGE.RECLAIM.
    TDH_PHYMEM_PAGE_RECLAIM = 28 => "TDH.PHYMEM.PAGE.RECLAIM",
    /// TDH.MEM.PAGE.REMOVE.
    TDH_MEM_PAGE_REMOVE = 29 => "TDH.MEM.PAGE.REMOVE",
    /// TDH.MEM.SEPT.REMOVE.
    TDH_MEM_SEPT_REMOVE = 30 => "TDH.MEM.SEPT.REMOVE",
    /// TDH.SYS.KEY.CONFIG.
    TDH_SYS_KEY_CONFIG = 31 => "TDH.SYS.KEY.CONFIG",
    /// TDH.SYS.INFO (TDX 1.0-style enumeration).
    TDH_SYS_INFO = 32 => "TDH.SYS.INFO",
    /// TDH.SYS.INIT.
    TDH_SYS_INIT = 33 => "TDH.SYS.INIT",
    /// TDH.SYS.RD (1.5+).
    TDH_SYS_RD = 34 => "TDH.SYS.RD",
    /// TDH.SYS.LP.INIT.
    TDH_SYS_LP_INIT = 35 => "TDH.SYS.LP.INIT",
    /// TDH.SYS.TDMR.INIT.
    TDH_SYS_TDMR_INIT = 36 => "TDH.SYS.TDMR.INIT",
    /// TDH.SYS.RDALL (1.5+).
    TDH_SYS_RDALL = 37 => "TDH.SYS.RDALL",
    /// TDH.MEM.TRACK.
    TDH_MEM_TRACK = 38 => "TDH.MEM.TRACK",
    /// TDH.MEM.RANGE.UNBLOCK.
    TDH_MEM_RANGE_UNBLOCK = 39 => "TDH.MEM.RANGE.UNBLOCK",
    /// TDH.PHYMEM.CACHE.WB.
    TDH_PHYMEM_CACHE_WB = 40 => "TDH.PHYMEM.CACHE.WB",
    /// TDH.PHYMEM.PAGE.WBINVD.
    TDH_PHYMEM_PAGE_WBINVD = 41 => "TDH.PHYMEM.PAGE.WBINVD",
    /// TDH.MEM.SEPT.WR (enumerated only).
    TDH_MEM_SEPT_WR = 42 => "TDH.MEM.SEPT.WR",
    /// TDH.VP.WR.
    TDH_VP_WR = 43 => "TDH.VP.WR",
    /// TDH.SYS.LP.SHUTDOWN.
    TDH_SYS_LP_SHUTDOWN = 44 => "TDH.SYS.LP.SHUTDOWN",
    /// TDH.SYS.CONFIG.
    TDH_SYS_CONFIG = 45 => "TDH.SYS.CONFIG",
    /// TDH.SERVTD.BIND.
    TDH_SERVTD_BIND = 48 => "TDH.SERVTD.BIND",
    /// TDH.SERVTD.PREBIND.
    TDH_SERVTD_PREBIND = 49 => "TDH.SERVTD.PREBIND",
    /// TDH.SYS.SHUTDOWN.
    TDH_SYS_SHUTDOWN = 52 => "TDH.SYS.SHUTDOWN",
    /// TDH.SYS.UPDATE.
    TDH_SYS_UPDATE = 53 => "TDH.SYS.UPDATE",
    /// TDH.EXPORT.ABORT.
    TDH_EXPORT_ABORT = 64 => "TDH.EXPORT.ABORT",
    /// TDH.EXPORT.BLOCKW.
    TDH_EXPORT_BLOCKW = 65 => "TDH.EXPORT.BLOCKW",
    /// TDH.EXPORT.RESTORE.
    TDH_EXPORT_RESTORE = 66 => "TDH.EXPORT.RESTORE",
    /// TDH.EXPORT.MEM.
    TDH_EXPORT_MEM = 68 => "TDH.EXPORT.MEM",
    /// TDH.EXPORT.PAUSE.
    TDH_EXPORT_PAUSE = 70 => "TDH.EXPORT.PAUSE",
    /// TDH.EXPORT.TRACK.
    TDH_EXPORT_TRACK = 71 => "TDH.EXPORT.TRACK",
    /// TDH.EXPORT.STATE.IMMUTABLE.
    TDH_EXPORT_STATE_IMMUTABLE = 72 => "TDH.EXPORT.STATE.IMMUTABLE",
    /// TDH.EXPORT.STATE.TD.
    TDH_EXPORT_STATE_TD = 73 => "TDH.EXPORT.STATE.TD",
    /// TDH.EXPORT.STATE.VP.
    TDH_EXPORT_STATE_VP = 74 => "TDH.EXPORT.STATE.VP",
    /// TDH.EXPORT.UNBLOCKW.
    TDH_EXPORT_UNBLOCKW = 75 => "TDH.EXPORT.UNBLOCKW",
    /// TDH.IMPORT.ABORT.
    TDH_IMPORT_ABORT = 80 => "TDH.IMPORT.ABORT",
    /// TDH.IMPORT.END.
    TDH_IMPORT_END = 81 => "TDH.IMPORT.END",
    /// TDH.IMPORT.COMMIT.
    TDH_IMPORT_COMMIT = 82 => "TDH.IMPORT.COMMIT",
    /// TDH.IMPORT.MEM.
    TDH_IMPORT_MEM = 83 => "TDH.IMPORT.MEM",
    /// TDH.IMPORT.TRACK.
    TDH_IMPORT_TRACK = 84 => "TDH.IMPORT.TRACK",
    /// TDH.IMPORT.STATE.IMMUTABLE.
    TDH_IMPORT_STATE_IMMUTABLE = 85 => "TDH.IMPORT.STATE.IMMUTABLE",
    /// TDH.IMPORT.STATE.TD.
    TDH_IMPORT_STATE_TD = 86 => "TDH.IMPORT.STATE.TD",
    /// TDH.IMPORT.STATE.VP.
    TDH_IMPORT_STATE_VP = 87 => "TDH.IMPORT.STATE.VP",
    /// TDH.MIG.STREAM.CREATE.
    TDH_MIG_STREAM_CREATE = 96 => "TDH.MIG.STREAM.CREATE",
}

impl SeamcallLeaf {
    /// The highest version (RAX bits 23:16) module 1.5.01 accepts for this leaf.
    pub const fn max_version(self) -> u8 {
        match self {
            SeamcallLeaf::TDH_MEM_PAGE_PROMOTE
            | SeamcallLeaf::TDH_MEM_SEPT_ADD
            | SeamcallLeaf::TDH_MEM_SEPT_REMOVE
            | SeamcallLeaf::TDH_MNG_RD
            | SeamcallLeaf::TDH_VP_RD => 1,
            _ => 0,
        }
    }

    /// Whether TDX module 1.0 has this leaf (0..=45 except SYS.RD and SYS.RDALL).
    pub const fn in_tdx_1_0(self) -> bool {
        self.0 <= 45 && self.0 != 34 && self.0 != 37
    }
}

open_enum! {
    /// A guest-side TDCALL leaf number (`TDG.*`, bits 15:0 of RAX), TDX module 1.5.
    TdcallLeaf(u16), unknown = "TDCALL leaf";
    /// TDG.VP.VMCALL.
    TDG_VP_VMCALL = 0 => "TDG.VP.VMCALL",
    /// TDG.VP.INFO.
    TDG_VP_INFO = 1 => "TDG.VP.INFO",
    /// TDG.MR.RTMR.EXTEND.
    TDG_MR_RTMR_EXTEND = 2 => "TDG.MR.RTMR.EXTEND",
    /// TDG.VP.VEINFO.GET.
    TDG_VP_VEINFO_GET = 3 => "TDG.VP.VEINFO.GET",
    /// TDG.MR.REPORT.
    TDG_MR_REPORT = 4 => "TDG.MR.REPORT",
    /// TDG.VP.CPUIDVE.SET.
    TDG_VP_CPUIDVE_SET = 5 => "TDG.VP.CPUIDVE.SET",
    /// TDG.MEM.PAGE.ACCEPT.
    TDG_MEM_PAGE_ACCEPT = 6 => "TDG.MEM.PAGE.ACCEPT",
    /// TDG.VM.RD.
    TDG_VM_RD = 7 => "TDG.VM.RD",
    /// TDG.VM.WR.
    TDG_VM_WR = 8 => "TDG.VM.WR",
    /// TDG.VP.RD.
    TDG_VP_RD = 9 => "TDG.VP.RD",
    /// TDG.VP.WR.
    TDG_VP_WR = 10 => "TDG.VP.WR",
    /// TDG.SYS.RD.
    TDG_SYS_RD = 11 => "TDG.SYS.RD",
    /// TDG.SYS.RDALL.
    TDG_SYS_RDALL = 12 => "TDG.SYS.RDALL",
    /// TDG.SERVTD.RD.
    TDG_SERVTD_RD = 18 => "TDG.SERVTD.RD",
    /// TDG.SERVTD.WR.
    TDG_SERVTD_WR = 20 => "TDG.SERVTD.WR",
    /// TDG.MR.VERIFYREPORT.
    TDG_MR_VERIFYREPORT = 22 => "TDG.MR.VERIFYREPORT",
    /// TDG.MEM.PAGE.ATTR.RD.
    TDG_MEM_PAGE_ATTR_RD = 23 => "TDG.MEM.PAGE.ATTR.RD",
    /// TDG.MEM.PAGE.ATTR.WR.
    TDG_MEM_PAGE_ATTR_WR = 24 => "TDG.MEM.PAGE.ATTR.WR",
    /// TDG.VP.ENTER (TD partitioning).
    TDG_VP_ENTER = 25 => "TDG.VP.ENTER",
    /// TDG.VP.INVEPT (TD partitioning).
    TDG_VP_INVEPT = 26 => "TDG.VP.INVEPT",
    /// TDG.VP.INVVPID (TD partitioning).
    TDG_VP_INVVPID = 27 => "TDG.VP.INVVPID",
}

impl TdcallLeaf {
    /// The highest version module 1.5.01 accepts for this leaf (TDG.VM.RD: 1).
    pub const fn max_version(self) -> u8 {
        match self {
            TdcallLeaf::TDG_VM_RD => 1,
            _ => 0,
        }
    }

    /// Whether TDX module 1.0 has this leaf (0..=8).
    pub const fn in_tdx_1_0(self) -> bool {
        self.0 <= 8
    }
}

/// A leaf number of either instruction, for [`LeafAndVersion`].
pub trait Leaf: Copy {
    /// The 16-bit leaf number.
    fn number(self) -> u16;
}

impl Leaf for SeamcallLeaf {
    fn number(self) -> u16 {
        self.0
    }
}

impl Leaf for TdcallLeaf {
    fn number(self) -> u16 {
        self.0
    }
}

/// The RAX input word of SEAMCALL/TDCALL: bits 15:0 leaf, 23:16 version, 63:24 zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeafAndVersion {
    leaf: u16,
    version: u8,
}

/// RAX bits 63:24 were not zero (the module answers OPERAND_INVALID on RAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafDecodeError {
    /// The RAX value.
    pub rax: u64,
}

impl fmt::Display for LeafDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RAX {:#x} has reserved bits 63:24 set", self.rax)
    }
}

impl core::error::Error for LeafDecodeError {}

impl LeafAndVersion {
    /// Leaf `leaf` at version 0.
    pub fn new<L: Leaf>(leaf: L) -> Self {
        LeafAndVersion {
            leaf: leaf.number(),
            version: 0,
        }
    }

    /// The same leaf at `version`.
    pub const fn with_version(self, version: u8) -> Self {
        LeafAndVersion {
            leaf: self.leaf,
            version,
        }
    }

    /// The RAX value.
    pub const fn raw(self) -> u64 {
        self.leaf as u64 | (self.version as u64) << 16
    }

    /// The leaf number.
    pub const fn leaf(self) -> u16 {
        self.leaf
    }

    /// The version.
    pub const fn version(self) -> u8 {
        self.version
    }

    /// Decodes RAX, refusing nonzero bits 63:24.
    pub const fn decode(rax: u64) -> Result<Self, LeafDecodeError> {
        if rax >> 24 != 0 {
            return Err(LeafDecodeError { rax });
        }
        Ok(LeafAndVersion {
            leaf: rax as u16,
            version: (rax >> 16) as u8,
        })
    }
}

open_enum! {
    /// A VMX basic exit reason (Intel SDM Vol. 3 Appendix C), as TDX reports it on TD exits
    /// and in #VE information; the standard TDVMCALL sub-functions reuse these numbers.
    VmxExitReason(u32), unknown = "VMX exit reason";
    /// Exception or NMI.
    EXCEPTION_NMI = 0 => "EXCEPTION_NMI",
    /// External interrupt.
    EXTERNAL_INTERRUPT = 1 => "EXTERNAL_INTERRUPT",
    /// Triple fault.
    TRIPLE_FAULT = 2 => "TRIPLE_FAULT",
    /// INIT signal.
    INIT = 3 => "INIT",
    /// Start-up IPI.
    SIPI = 4 => "SIPI",
    /// Interrupt window.
    INTERRUPT_WINDOW = 7 => "INTERRUPT_WINDOW",
    /// NMI window.
    NMI_WINDOW = 8 => "NMI_WINDOW",
    /// CPUID.
    CPUID = 10 => "CPUID",
    /// GETSEC.
    GETSEC = 11 => "GETSEC",
    /// HLT.
    HLT = 12 => "HLT",
    /// INVD.
    INVD = 13 => "INVD",
    /// RDPMC.
    RDPMC = 15 => "RDPMC",
    /// VMCALL.
    VMCALL = 18 => "VMCALL",
    /// Control-register access.
    CR_ACCESS = 28 => "CR_ACCESS",
    /// Debug-register access.
    DR_ACCESS = 29 => "DR_ACCESS",
    /// I/O instruction.
    IO_INSTRUCTION = 30 => "IO_INSTRUCTION",
    /// RDMSR.
    RDMSR = 31 => "RDMSR",
    /// WRMSR.
    WRMSR = 32 => "WRMSR",
    /// MWAIT.
    MWAIT = 36 => "MWAIT",
    /// MONITOR.
    MONITOR = 39 => "MONITOR",
    /// PAUSE.
    PAUSE = 40 => "PAUSE",
    /// EPT violation.
    EPT_VIOLATION = 48 => "EPT_VIOLATION",
    /// EPT misconfiguration.
    EPT_MISCONFIG = 49 => "EPT_MISCONFIG",
    /// WBINVD / WBNOINVD.
    WBINVD = 54 => "WBINVD",
    /// XSETBV.
    XSETBV = 55 => "XSETBV",
    /// PCONFIG.
    PCONFIG = 65 => "PCONFIG",
    /// TDCALL (a TDG.VP.VMCALL TD exit).
    TDCALL = 77 => "TDCALL",
}

open_enum! {
    /// A `TDG.VP.VMCALL` sub-function (R11) per the GHCI. The standard ones are keyed by the VMX
    /// exit reason they stand for.
    TdVmCallSubFunction(u64), unknown = "TDVMCALL sub-function";
    /// Instruction.CPUID.
    INSTRUCTION_CPUID = 10 => "Instruction.CPUID",
    /// Instruction.HLT.
    INSTRUCTION_HLT = 12 => "Instruction.HLT",
    /// Instruction.IO.
    INSTRUCTION_IO = 30 => "Instruction.IO",
    /// Instruction.RDMSR.
    INSTRUCTION_RDMSR = 31 => "Instruction.RDMSR",
    /// Instruction.WRMSR.
    INSTRUCTION_WRMSR = 32 => "Instruction.WRMSR",
    /// #VE.RequestMMIO (EPT violation on a shared GPA).
    VE_REQUEST_MMIO = 48 => "#VE.RequestMMIO",
    /// Instruction.WBINVD.
    INSTRUCTION_WBINVD = 54 => "Instruction.WBINVD",
    /// Instruction.PCONFIG.
    INSTRUCTION_PCONFIG = 65 => "Instruction.PCONFIG",
    /// GetTdVmCallInfo.
    GET_TD_VM_CALL_INFO = 0x10000 => "GetTdVmCallInfo",
    /// MapGPA.
    MAP_GPA = 0x10001 => "MapGPA",
    /// GetQuote.
    GET_QUOTE = 0x10002 => "GetQuote",
    /// ReportFatalError.
    REPORT_FATAL_ERROR = 0x10003 => "ReportFatalError",
    /// SetupEventNotifyInterrupt.
    SETUP_EVENT_NOTIFY_INTERRUPT = 0x10004 => "SetupEventNotifyInterrupt",
    /// Service.
    SERVICE = 0x10005 => "Service",
    /// MigTD.
    MIGTD = 0x10006 => "MigTD",
}

open_enum! {
    /// The status a host returns in R10 for a `TDG.VP.VMCALL`.
    TdVmCallStatus(u64), unknown = "TDG.VP.VMCALL status";
    /// Success.
    SUCCESS = 0 => "TDG.VP.VMCALL_SUCCESS",
    /// Retry (e.g. MapGPA interrupted; R11 = where to resume).
    RETRY = 1 => "TDG.VP.VMCALL_RETRY",
    /// Invalid operand.
    INVALID_OPERAND = 0x8000_0000_0000_0000 => "TDG.VP.VMCALL_INVALID_OPERAND",
    /// GPA already in use.
    GPA_INUSE = 0x8000_0000_0000_0001 => "TDG.VP.VMCALL_GPA_INUSE",
    /// Alignment error.
    ALIGN_ERROR = 0x8000_0000_0000_0002 => "TDG.VP.VMCALL_ALIGN_ERROR",
    /// Sub-function not supported (newer GHCI).
    SUBFUNC_UNSUPPORTED = 0x8000_0000_0000_0003 => "TDG.VP.VMCALL_SUBFUNC_UNSUPPORTED",
}

impl TdVmCallStatus {
    /// Whether bit 63 (error) is set.
    pub const fn is_error(self) -> bool {
        self.0 >> 63 != 0
    }
}

open_enum! {
    /// The status field of a GetQuote buffer.
    GetQuoteStatus(u64), unknown = "GetQuote status";
    /// The quote is in the buffer.
    SUCCESS = 0 => "GET_QUOTE_SUCCESS",
    /// The request is being processed.
    IN_FLIGHT = u64::MAX => "GET_QUOTE_IN_FLIGHT",
    /// Generic error.
    ERROR = 0x8000_0000_0000_0000 => "GET_QUOTE_ERROR",
    /// The quoting service is unavailable.
    SERVICE_UNAVAILABLE = 0x8000_0000_0000_0001 => "GET_QUOTE_SERVICE_UNAVAILABLE",
}

/// The 24-byte header of a GetQuote shared buffer; data follows it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GetQuoteHeader {
    /// Format version (1).
    pub version: u64,
    /// [`GetQuoteStatus`] raw value.
    pub status: u64,
    /// Length of the input (the TDREPORT) after the header.
    pub in_len: u32,
    /// Length of the output (the quote) after the header.
    pub out_len: u32,
}

/// Size of [`GetQuoteHeader`].
pub const GET_QUOTE_HEADER_SIZE: usize = 24;

const _: () = {
    assert!(core::mem::size_of::<GetQuoteHeader>() == GET_QUOTE_HEADER_SIZE);
    assert!(core::mem::offset_of!(GetQuoteHeader, status) == 8);
    assert!(core::mem::offset_of!(GetQuoteHeader, in_len) == 16);
    assert!(core::mem::offset_of!(GetQuoteHeader, out_len) == 20);
};
