//! Typed wrappers of the guest-side TDCALL leaves (`TDG.*`), generic over any [`Tdcall`].
//!
//! A TD payload picks its [`Tdcall`] at run time (the real instruction on hardware, the
//! emulator transport on the emulated backend), so one binary runs on both.
//! `TDG.VP.VMCALL` lives in [`crate::tdvmcall`].

use core::fmt;

use crate::attributes::TdAttributes;
use crate::call::{Regs, Tdcall};
use crate::gpa::{EptLevel, Gpa, GpaAndLevel, Gpaw};
use crate::leaf::{LeafAndVersion, TdcallLeaf, VmxExitReason};
use crate::metadata::MetadataFieldId;
use crate::status::{StatusCode, TdxStatus};
use crate::tdh::{regs, ErrorRegs};

/// A TDCALL that did not succeed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TdcallError {
    /// The leaf that was called.
    pub leaf: TdcallLeaf,
    /// The completion status (RAX).
    pub status: TdxStatus,
    /// The output registers that carry extended error information.
    pub out: ErrorRegs,
}

impl fmt::Display for TdcallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.leaf, self.status)
    }
}

impl fmt::Debug for TdcallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TdcallError({self}; status {:#018x})", self.status.raw())
    }
}

impl core::error::Error for TdcallError {}

/// Result of a typed TDCALL wrapper.
pub type Result<T> = core::result::Result<T, TdcallError>;

/// Issues `leaf` (version `version`) with `regs`; returns the success-class status and the
/// output registers.
pub fn call<T: Tdcall + ?Sized>(
    t: &T,
    leaf: TdcallLeaf,
    version: u8,
    mut regs: Regs,
) -> Result<(TdxStatus, Regs)> {
    regs.rax = LeafAndVersion::new(leaf).with_version(version).raw();
    let status = t.tdcall(&mut regs);
    if status.is_error() {
        Err(TdcallError {
            leaf,
            status,
            out: ErrorRegs::from(&regs),
        })
    } else {
        Ok((status, regs))
    }
}

/// Output of TDG.VP.INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdgVpInfo {
    /// GPA width (`RCX[5:0]`); `None` if the module reported something other than 48/52.
    pub gpaw: Option<Gpaw>,
    /// The raw `RCX[5:0]`.
    pub gpaw_raw: u8,
    /// The TD's ATTRIBUTES (RDX).
    pub attributes: TdAttributes,
    /// NUM_VCPUS (`R8[31:0]`).
    pub num_vcpus: u32,
    /// MAX_VCPUS (`R8[63:32]`).
    pub max_vcpus: u32,
    /// This vCPU's VCPU_INDEX (R9).
    pub vcpu_index: u32,
    /// R10 bit 0: TDG.SYS.RD and friends are available.
    pub sys_rd_available: bool,
}

/// TDG.VP.INFO: the TD execution environment.
pub fn tdg_vp_info<T: Tdcall + ?Sized>(t: &T) -> Result<TdgVpInfo> {
    let (_, r) = call(t, TdcallLeaf::TDG_VP_INFO, 0, Regs::default())?;
    let gpaw_raw = (r.rcx & 0x3f) as u8;
    Ok(TdgVpInfo {
        gpaw: Gpaw::from_bits(gpaw_raw as u64),
        gpaw_raw,
        attributes: TdAttributes::from_bits_retain(r.rdx),
        num_vcpus: r.r8 as u32,
        max_vcpus: (r.r8 >> 32) as u32,
        vcpu_index: r.r9 as u32,
        sys_rd_available: r.r10 & 1 != 0,
    })
}

/// TDG.MR.RTMR.EXTEND: extend `RTMR[index]` (0..=3) with the 48 bytes at the private `data`
/// GPA (64 B aligned).
pub fn tdg_mr_rtmr_extend<T: Tdcall + ?Sized>(t: &T, data: Gpa, index: u64) -> Result<()> {
    call(
        t,
        TdcallLeaf::TDG_MR_RTMR_EXTEND,
        0,
        regs(data.raw(), index, 0, 0),
    )
    .map(|_| ())
}

/// Output of TDG.VP.VEINFO.GET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdgVeInfo {
    /// The VMX exit reason that caused the #VE (`RCX[31:0]`).
    pub exit_reason: VmxExitReason,
    /// Exit qualification (RDX).
    pub exit_qualification: u64,
    /// Guest linear address (R8).
    pub gla: u64,
    /// Guest physical address (R9).
    pub gpa: Gpa,
    /// Instruction length (`R10[31:0]`).
    pub instruction_length: u32,
    /// Instruction information (`R10[63:32]`).
    pub instruction_info: u32,
}

/// TDG.VP.VEINFO.GET: the information of the current #VE (clears VE_INFO.VALID).
pub fn tdg_vp_veinfo_get<T: Tdcall + ?Sized>(t: &T) -> Result<TdgVeInfo> {
    let (_, r) = call(t, TdcallLeaf::TDG_VP_VEINFO_GET, 0, Regs::default())?;
    Ok(TdgVeInfo {
        exit_reason: VmxExitReason::from_raw(r.rcx as u32),
        exit_qualification: r.rdx,
        gla: r.r8,
        gpa: Gpa(r.r9),
        instruction_length: r.r10 as u32,
        instruction_info: (r.r10 >> 32) as u32,
    })
}

/// TDG.MR.REPORT: write a TDREPORT_STRUCT to `report` (1024 B aligned) with the 64 bytes
/// of REPORTDATA at `report_data` (64 B aligned). `subtype` must be 0.
pub fn tdg_mr_report<T: Tdcall + ?Sized>(
    t: &T,
    report: Gpa,
    report_data: Gpa,
    subtype: u64,
) -> Result<()> {
    call(
        t,
        TdcallLeaf::TDG_MR_REPORT,
        0,
        regs(report.raw(), report_data.raw(), subtype, 0),
    )
    .map(|_| ())
}

/// TDG.VP.CPUIDVE.SET: choose whether CPUID at CPL 0 / CPL > 0 raises #VE.
pub fn tdg_vp_cpuidve_set<T: Tdcall + ?Sized>(t: &T, cpl0: bool, cpl_gt0: bool) -> Result<()> {
    call(
        t,
        TdcallLeaf::TDG_VP_CPUIDVE_SET,
        0,
        regs(cpl0 as u64 | (cpl_gt0 as u64) << 1, 0, 0, 0),
    )
    .map(|_| ())
}

/// Outcome of TDG.MEM.PAGE.ACCEPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The page was PENDING and is now mapped (zeroed).
    Accepted,
    /// TDX_PAGE_ALREADY_ACCEPTED: the page was already mapped at this level (the raw level
    /// the module reported).
    AlreadyAccepted(u32),
}

/// TDG.MEM.PAGE.ACCEPT: accept the PENDING page at `gpa` of size `level` (0..=2).
/// `TDX_PAGE_SIZE_MISMATCH` is an error whose status details carry the actual level.
pub fn tdg_mem_page_accept<T: Tdcall + ?Sized>(
    t: &T,
    gpa: Gpa,
    level: EptLevel,
) -> core::result::Result<AcceptOutcome, AcceptError> {
    let op = GpaAndLevel::new(gpa, level).map_err(AcceptError::Operand)?;
    let (status, _) = call(
        t,
        TdcallLeaf::TDG_MEM_PAGE_ACCEPT,
        0,
        regs(op.raw(), 0, 0, 0),
    )
    .map_err(AcceptError::Tdcall)?;
    if status.code() == StatusCode::PAGE_ALREADY_ACCEPTED {
        Ok(AcceptOutcome::AlreadyAccepted(status.details_l2()))
    } else {
        Ok(AcceptOutcome::Accepted)
    }
}

/// Why TDG.MEM.PAGE.ACCEPT failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// The GPA/level pair is malformed (checked before the call).
    Operand(crate::gpa::GpaAndLevelError),
    /// The module refused the call.
    Tdcall(TdcallError),
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Operand(e) => write!(f, "TDG.MEM.PAGE.ACCEPT operand: {e}"),
            AcceptError::Tdcall(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for AcceptError {}

/// TDG.VM.RD (version 1): read a TD-scope metadata field; returns (value, next field ID).
pub fn tdg_vm_rd<T: Tdcall + ?Sized>(
    t: &T,
    field: MetadataFieldId,
) -> Result<(u64, MetadataFieldId)> {
    let (_, r) = call(t, TdcallLeaf::TDG_VM_RD, 1, regs(0, field.raw(), 0, 0))?;
    Ok((r.r8, MetadataFieldId::from_raw(r.rdx)))
}

/// TDG.VM.WR: write the bits of `mask` of a TD-scope field; returns the old value.
pub fn tdg_vm_wr<T: Tdcall + ?Sized>(
    t: &T,
    field: MetadataFieldId,
    value: u64,
    mask: u64,
) -> Result<u64> {
    call(
        t,
        TdcallLeaf::TDG_VM_WR,
        0,
        regs(0, field.raw(), value, mask),
    )
    .map(|(_, r)| r.r8)
}

/// TDG.VP.RD: read a vCPU-scope field of the calling vCPU; returns (value, next field ID).
pub fn tdg_vp_rd<T: Tdcall + ?Sized>(
    t: &T,
    field: MetadataFieldId,
) -> Result<(u64, MetadataFieldId)> {
    let (_, r) = call(t, TdcallLeaf::TDG_VP_RD, 0, regs(0, field.raw(), 0, 0))?;
    Ok((r.r8, MetadataFieldId::from_raw(r.rdx)))
}

/// TDG.VP.WR: write the bits of `mask` of a vCPU-scope field; returns the old value.
pub fn tdg_vp_wr<T: Tdcall + ?Sized>(
    t: &T,
    field: MetadataFieldId,
    value: u64,
    mask: u64,
) -> Result<u64> {
    call(
        t,
        TdcallLeaf::TDG_VP_WR,
        0,
        regs(0, field.raw(), value, mask),
    )
    .map(|(_, r)| r.r8)
}

/// TDG.SYS.RD: read a global metadata field; returns (value, next field ID).
pub fn tdg_sys_rd<T: Tdcall + ?Sized>(
    t: &T,
    field: MetadataFieldId,
) -> Result<(u64, MetadataFieldId)> {
    let (_, r) = call(t, TdcallLeaf::TDG_SYS_RD, 0, regs(0, field.raw(), 0, 0))?;
    Ok((r.r8, MetadataFieldId::from_raw(r.rdx)))
}

/// TDG.MR.VERIFYREPORT: verify the MAC of the REPORTMACSTRUCT at `report_mac` (private GPA).
pub fn tdg_mr_verifyreport<T: Tdcall + ?Sized>(t: &T, report_mac: Gpa) -> Result<()> {
    call(
        t,
        TdcallLeaf::TDG_MR_VERIFYREPORT,
        0,
        regs(report_mac.raw(), 0, 0, 0),
    )
    .map(|_| ())
}
