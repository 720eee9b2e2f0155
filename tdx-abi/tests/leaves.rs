//! Leaf numbers, TDVMCALL sub-functions and statuses against the fact sheet
//! (tdx-module-abi.md §1–§3), typed here independently of the crate's tables.

use tdx_abi::leaf::{
    GetQuoteHeader, GetQuoteStatus, LeafAndVersion, SeamcallLeaf, TdVmCallStatus,
    TdVmCallSubFunction, TdcallLeaf, VmxExitReason,
};
use zerocopy::IntoBytes;

const TDH: &[(u16, &str)] = &[
    (0, "TDH.VP.ENTER"),
    (1, "TDH.MNG.ADDCX"),
    (2, "TDH.MEM.PAGE.ADD"),
    (3, "TDH.MEM.SEPT.ADD"),
    (4, "TDH.VP.ADDCX"),
    (5, "TDH.MEM.PAGE.RELOCATE"),
    (6, "TDH.MEM.PAGE.AUG"),
    (7, "TDH.MEM.RANGE.BLOCK"),
    (8, "TDH.MNG.KEY.CONFIG"),
    (9, "TDH.MNG.CREATE"),
    (10, "TDH.VP.CREATE"),
    (11, "TDH.MNG.RD"),
    (12, "TDH.MEM.RD"),
    (13, "TDH.MNG.WR"),
    (14, "TDH.MEM.WR"),
    (15, "TDH.MEM.PAGE.DEMOTE"),
    (16, "TDH.MR.EXTEND"),
    (17, "TDH.MR.FINALIZE"),
    (18, "TDH.VP.FLUSH"),
    (19, "TDH.MNG.VPFLUSHDONE"),
    (20, "TDH.MNG.KEY.FREEID"),
    (21, "TDH.MNG.INIT"),
    (22, "TDH.VP.INIT"),
    (23, "TDH.MEM.PAGE.PROMOTE"),
    (24, "TDH.PHYMEM.PAGE.RDMD"),
    (25, "TDH.MEM.SEPT.RD"),
    (26, "TDH.VP.RD"),
    (27, "TDH.MNG.KEY.RECLAIMID"),
    (28, "TDH.PHYMEM.PAGE.RECLAIM"),
    (29, "TDH.MEM.PAGE.REMOVE"),
    (30, "TDH.MEM.SEPT.REMOVE"),
    (31, "TDH.SYS.KEY.CONFIG"),
    (32, "TDH.SYS.INFO"),
    (33, "TDH.SYS.INIT"),
    (34, "TDH.SYS.RD"),
    (35, "TDH.SYS.LP.INIT"),
    (36, "TDH.SYS.TDMR.INIT"),
    (37, "TDH.SYS.RDALL"),
    (38, "TDH.MEM.TRACK"),
    (39, "TDH.MEM.RANGE.UNBLOCK"),
    (40, "TDH.PHYMEM.CACHE.WB"),
    (41, "TDH.PHYMEM.PAGE.WBINVD"),
    (42, "TDH.MEM.SEPT.WR"),
    (43, "TDH.VP.WR"),
    (44, "TDH.SYS.LP.SHUTDOWN"),
    (45, "TDH.SYS.CONFIG"),
    (48, "TDH.SERVTD.BIND"),
    (49, "TDH.SERVTD.PREBIND"),
    (52, "TDH.SYS.SHUTDOWN"),
    (53, "TDH.SYS.UPDATE"),
    (64, "TDH.EXPORT.ABORT"),
    (65, "TDH.EXPORT.BLOCKW"),
    (66, "TDH.EXPORT.RESTORE"),
    (68, "TDH.EXPORT.MEM"),
    (70, "TDH.EXPORT.PAUSE"),
    (71, "TDH.EXPORT.TRACK"),
    (72, "TDH.EXPORT.STATE.IMMUTABLE"),
    (73, "TDH.EXPORT.STATE.TD"),
    (74, "TDH.EXPORT.STATE.VP"),
    (75, "TDH.EXPORT.UNBLOCKW"),
    (80, "TDH.IMPORT.ABORT"),
    (81, "TDH.IMPORT.END"),
    (82, "TDH.IMPORT.COMMIT"),
    (83, "TDH.IMPORT.MEM"),
    (84, "TDH.IMPORT.TRACK"),
    (85, "TDH.IMPORT.STATE.IMMUTABLE"),
    (86, "TDH.IMPORT.STATE.TD"),
    (87, "TDH.IMPORT.STATE.VP"),
    (96, "TDH.MIG.STREAM.CREATE"),
];

const TDG: &[(u16, &str)] = &[
    (0, "TDG.VP.VMCALL"),
    (1, "TDG.VP.INFO"),
    (2, "TDG.MR.RTMR.EXTEND"),
    (3, "TDG.VP.VEINFO.GET"),
    (4, "TDG.MR.REPORT"),
    (5, "TDG.VP.CPUIDVE.SET"),
    (6, "TDG.MEM.PAGE.ACCEPT"),
    (7, "TDG.VM.RD"),
    (8, "TDG.VM.WR"),
    (9, "TDG.VP.RD"),
    (10, "TDG.VP.WR"),
    (11, "TDG.SYS.RD"),
    (12, "TDG.SYS.RDALL"),
    (18, "TDG.SERVTD.RD"),
    (20, "TDG.SERVTD.WR"),
    (22, "TDG.MR.VERIFYREPORT"),
    (23, "TDG.MEM.PAGE.ATTR.RD"),
    (24, "TDG.MEM.PAGE.ATTR.WR"),
    (25, "TDG.VP.ENTER"),
    (26, "TDG.VP.INVEPT"),
    (27, "TDG.VP.INVVPID"),
];

#[test]
fn every_host_leaf_matches_the_fact_sheet() {
    for &(n, name) in TDH {
        assert_eq!(SeamcallLeaf::from_raw(n).name(), Some(name), "leaf {n}");
        assert_eq!(SeamcallLeaf::from_raw(n).to_string(), name);
    }
    assert_eq!(SeamcallLeaf::ALL.len(), TDH.len());
    assert_eq!(SeamcallLeaf::TDH_MEM_PAGE_ADD.raw(), 2);
    assert_eq!(SeamcallLeaf::TDH_SYS_CONFIG.raw(), 45);
}

#[test]
fn every_guest_leaf_matches_the_fact_sheet() {
    for &(n, name) in TDG {
        assert_eq!(TdcallLeaf::from_raw(n).name(), Some(name), "leaf {n}");
    }
    assert_eq!(TdcallLeaf::ALL.len(), TDG.len());
    assert_eq!(TdcallLeaf::TDG_MEM_PAGE_ACCEPT.raw(), 6);
}

#[test]
fn versions_and_tdx_1_0_membership() {
    let v1: Vec<u16> = TDH
        .iter()
        .map(|&(n, _)| n)
        .filter(|&n| SeamcallLeaf::from_raw(n).max_version() == 1)
        .collect();
    assert_eq!(
        v1,
        vec![3, 11, 23, 26, 30],
        "SEPT.ADD, MNG.RD, PROMOTE, VP.RD, SEPT.REMOVE"
    );
    assert_eq!(TdcallLeaf::TDG_VM_RD.max_version(), 1);
    assert_eq!(TdcallLeaf::TDG_VM_WR.max_version(), 0);
    assert!(SeamcallLeaf::TDH_SYS_CONFIG.in_tdx_1_0());
    assert!(!SeamcallLeaf::TDH_SYS_RD.in_tdx_1_0());
    assert!(!SeamcallLeaf::TDH_SYS_RDALL.in_tdx_1_0());
    assert!(!SeamcallLeaf::TDH_SERVTD_BIND.in_tdx_1_0());
    assert!(TdcallLeaf::TDG_VM_WR.in_tdx_1_0());
    assert!(!TdcallLeaf::TDG_VP_RD.in_tdx_1_0());
}

#[test]
fn leaf_and_version_word() {
    let w = LeafAndVersion::new(SeamcallLeaf::TDH_MNG_RD).with_version(1);
    assert_eq!(w.raw(), 0x1_000B);
    let d = LeafAndVersion::decode(0x1_000B).unwrap();
    assert_eq!((d.leaf(), d.version()), (11, 1));
    assert_eq!(LeafAndVersion::new(TdcallLeaf::TDG_VP_INFO).raw(), 1);
    let e = LeafAndVersion::decode(0x0100_0002).unwrap_err();
    assert_eq!(e.rax, 0x0100_0002);
    assert!(e.to_string().contains("0x1000002"), "{e}");
    assert!(LeafAndVersion::decode(u64::MAX).is_err());
    assert!(LeafAndVersion::decode(0x00FF_FFFF).is_ok());
}

#[test]
fn tdvmcall_sub_functions_and_statuses() {
    let subs: &[(u64, &str)] = &[
        (10, "Instruction.CPUID"),
        (12, "Instruction.HLT"),
        (30, "Instruction.IO"),
        (31, "Instruction.RDMSR"),
        (32, "Instruction.WRMSR"),
        (48, "#VE.RequestMMIO"),
        (54, "Instruction.WBINVD"),
        (65, "Instruction.PCONFIG"),
        (0x10000, "GetTdVmCallInfo"),
        (0x10001, "MapGPA"),
        (0x10002, "GetQuote"),
        (0x10003, "ReportFatalError"),
        (0x10004, "SetupEventNotifyInterrupt"),
        (0x10005, "Service"),
        (0x10006, "MigTD"),
    ];
    for &(n, name) in subs {
        assert_eq!(TdVmCallSubFunction::from_raw(n).name(), Some(name));
    }
    // The standard ones equal the VMX exit reasons they stand for.
    assert_eq!(
        TdVmCallSubFunction::INSTRUCTION_IO.raw(),
        VmxExitReason::IO_INSTRUCTION.raw() as u64
    );
    assert_eq!(
        TdVmCallSubFunction::VE_REQUEST_MMIO.raw(),
        VmxExitReason::EPT_VIOLATION.raw() as u64
    );
    let st: &[(u64, &str)] = &[
        (0, "TDG.VP.VMCALL_SUCCESS"),
        (1, "TDG.VP.VMCALL_RETRY"),
        (0x8000_0000_0000_0000, "TDG.VP.VMCALL_INVALID_OPERAND"),
        (0x8000_0000_0000_0001, "TDG.VP.VMCALL_GPA_INUSE"),
        (0x8000_0000_0000_0002, "TDG.VP.VMCALL_ALIGN_ERROR"),
        (0x8000_0000_0000_0003, "TDG.VP.VMCALL_SUBFUNC_UNSUPPORTED"),
    ];
    for &(n, name) in st {
        assert_eq!(TdVmCallStatus::from_raw(n).name(), Some(name));
        assert_eq!(TdVmCallStatus::from_raw(n).is_error(), n >> 63 == 1);
    }
}

#[test]
fn vmx_exit_reasons() {
    let t: &[(u32, &str)] = &[
        (0, "EXCEPTION_NMI"),
        (1, "EXTERNAL_INTERRUPT"),
        (2, "TRIPLE_FAULT"),
        (10, "CPUID"),
        (12, "HLT"),
        (30, "IO_INSTRUCTION"),
        (31, "RDMSR"),
        (32, "WRMSR"),
        (48, "EPT_VIOLATION"),
        (49, "EPT_MISCONFIG"),
        (54, "WBINVD"),
        (77, "TDCALL"),
    ];
    for &(n, name) in t {
        assert_eq!(VmxExitReason::from_raw(n).name(), Some(name));
    }
}

#[test]
fn unknown_values_survive_and_print_as_numbers() {
    assert_eq!(
        SeamcallLeaf::from_raw(200).to_string(),
        "SEAMCALL leaf 0xc8"
    );
    assert_eq!(SeamcallLeaf::from_raw(200).raw(), 200);
    assert_eq!(TdcallLeaf::from_raw(99).name(), None);
    assert_eq!(
        TdVmCallSubFunction::from_raw(0x12345).to_string(),
        "TDVMCALL sub-function 0x12345"
    );
    assert_eq!(
        TdVmCallStatus::from_raw(7).to_string(),
        "TDG.VP.VMCALL status 0x7"
    );
}

#[test]
fn get_quote_header_layout() {
    let h = GetQuoteHeader {
        version: 1,
        status: GetQuoteStatus::IN_FLIGHT.raw(),
        in_len: 1024,
        out_len: 0x1234,
    };
    let b = h.as_bytes();
    assert_eq!(b.len(), 24);
    assert_eq!(&b[0..8], &1u64.to_le_bytes());
    assert_eq!(&b[8..16], &u64::MAX.to_le_bytes());
    assert_eq!(&b[16..20], &1024u32.to_le_bytes());
    assert_eq!(&b[20..24], &0x1234u32.to_le_bytes());
    assert_eq!(
        GetQuoteStatus::SERVICE_UNAVAILABLE.raw(),
        0x8000_0000_0000_0001
    );
}
