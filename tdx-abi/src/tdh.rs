//! Typed wrappers of the host-side SEAMCALL leaves (`TDH.*`), generic over any [`Seamcall`].
//!
//! Each wrapper places its typed inputs in the registers the leaf defines, issues one
//! SEAMCALL, and returns typed outputs. A failed call returns a [`SeamcallError`] that keeps
//! the leaf, the completion status and the output registers, which carry the module's extended
//! error information (for example the Secure-EPT entry and its level/state on `TDH.MEM.*`
//! errors, or the offending CPUID leaf on `TDH.MNG.INIT`). Success-class warnings such as
//! `TDX_KEY_CONFIGURED` are successes; wrappers whose callers care return the status too.
//!
//! The wrappers cover the leaves used to bring the module up, to build, run and tear down a TD.

use core::fmt;

use crate::call::{Regs, Seamcall};
use crate::gpa::{Gpa, GpaAndLevel, PageSize};
use crate::leaf::{LeafAndVersion, SeamcallLeaf, VmxExitReason};
use crate::metadata::MetadataFieldId;
use crate::phys::{Hkid, Hpa};
use crate::sept::{ExtendedExitQualification, SeptEntry, SeptEntryInfo};
use crate::state::PamtPageType;
use crate::status::{StatusClass, StatusCode, TdxStatus};

/// A SEAMCALL that did not succeed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SeamcallError {
    /// The leaf that was called.
    pub leaf: SeamcallLeaf,
    /// The completion status (RAX).
    pub status: TdxStatus,
    /// The output registers that carry extended error information.
    pub out: ErrorRegs,
}

/// The output registers of a failed call that carry extended error information (the S-EPT
/// entry and its level/state, the offending CPUID leaf, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorRegs {
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
}

impl From<&Regs> for ErrorRegs {
    fn from(r: &Regs) -> Self {
        ErrorRegs {
            rcx: r.rcx,
            rdx: r.rdx,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
        }
    }
}

impl SeamcallError {
    /// The Secure-EPT entry and its level/state that `TDH.MEM.*` leaves report in RCX/RDX on
    /// SEPT-class errors (class 0x0B), if this is such an error.
    pub fn sept_details(&self) -> Option<(SeptEntry, SeptEntryInfo)> {
        if self.status.class() == StatusClass::SEPT {
            Some((
                SeptEntry::from_raw(self.out.rcx),
                SeptEntryInfo::from_raw(self.out.rdx),
            ))
        } else {
            None
        }
    }

    /// The extended error information register RCX (e.g. the CPUID leaf/subleaf that
    /// `TDH.MNG.INIT` refused).
    pub fn extended_error_info(&self) -> u64 {
        self.out.rcx
    }

    /// Whether retrying the same call may succeed (busy, interrupted, no entropy, …).
    pub fn is_recoverable(&self) -> bool {
        self.status.is_recoverable()
    }
}

impl fmt::Display for SeamcallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.leaf, self.status)?;
        if let Some((entry, info)) = self.sept_details() {
            write!(f, "; SEPT entry {:#x} ({info})", entry.raw())?;
        } else if self.out.rcx != 0 && self.status.code() == StatusCode::OPERAND_INVALID {
            write!(f, "; extended error info {:#x}", self.out.rcx)?;
        }
        Ok(())
    }
}

impl fmt::Debug for SeamcallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SeamcallError({self}; status {:#018x})",
            self.status.raw()
        )
    }
}

impl core::error::Error for SeamcallError {}

/// Result of a typed SEAMCALL wrapper.
pub type Result<T> = core::result::Result<T, SeamcallError>;

/// Issues `leaf` (version `version`) with `regs` and checks the status.
/// Returns the (success-class) status and the output registers.
pub fn call<S: Seamcall + ?Sized>(
    s: &S,
    leaf: SeamcallLeaf,
    version: u8,
    mut regs: Regs,
) -> Result<(TdxStatus, Regs)> {
    regs.rax = LeafAndVersion::new(leaf).with_version(version).raw();
    let status = s.seamcall(&mut regs);
    if status.is_error() {
        Err(SeamcallError {
            leaf,
            status,
            out: ErrorRegs::from(&regs),
        })
    } else {
        Ok((status, regs))
    }
}

/// A register block with the usual operand registers set (RCX, RDX, R8, R9), the rest 0.
pub(crate) fn regs(rcx: u64, rdx: u64, r8: u64, r9: u64) -> Regs {
    Regs {
        rcx,
        rdx,
        r8,
        r9,
        ..Regs::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Module bring-up
// ---------------------------------------------------------------------------------------------

/// TDH.SYS.INIT: global initialisation, once per platform (RCX = SYS attributes = 0).
pub fn tdh_sys_init<S: Seamcall + ?Sized>(s: &S) -> Result<()> {
    call(s, SeamcallLeaf::TDH_SYS_INIT, 0, Regs::default()).map(|_| ())
}

/// TDH.SYS.LP.INIT: initialise the calling logical processor.
pub fn tdh_sys_lp_init<S: Seamcall + ?Sized>(s: &S) -> Result<()> {
    call(s, SeamcallLeaf::TDH_SYS_LP_INIT, 0, Regs::default()).map(|_| ())
}

/// Output of a metadata read (TDH.SYS.RD, TDH.MNG.RD v1, TDH.VP.RD v1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataRead {
    /// The field value (R8).
    pub value: u64,
    /// The next readable field ID (RDX), or all-ones when there are no more.
    pub next: MetadataFieldId,
    /// The status: TDX_SUCCESS, or TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT when the request
    /// asked for the first field.
    pub status: TdxStatus,
}

/// TDH.SYS.RD: read one global metadata field.
pub fn tdh_sys_rd<S: Seamcall + ?Sized>(s: &S, field: MetadataFieldId) -> Result<MetadataRead> {
    let (status, r) = call(s, SeamcallLeaf::TDH_SYS_RD, 0, regs(0, field.raw(), 0, 0))?;
    Ok(MetadataRead {
        value: r.r8,
        next: MetadataFieldId::from_raw(r.rdx),
        status,
    })
}

/// TDH.SYS.RDALL: dump global metadata into the 4 KiB list buffer at `list` starting at
/// `start`; returns the next field ID to continue from.
pub fn tdh_sys_rdall<S: Seamcall + ?Sized>(
    s: &S,
    list: Hpa,
    start: MetadataFieldId,
) -> Result<MetadataFieldId> {
    let (_, r) = call(
        s,
        SeamcallLeaf::TDH_SYS_RDALL,
        0,
        regs(0, list.raw(), start.raw(), 0),
    )?;
    Ok(MetadataFieldId::from_raw(r.r8))
}

/// TDH.SYS.INFO (TDX 1.0 enumeration): fills TDSYSINFO_STRUCT at `sysinfo` (`sysinfo_len`
/// bytes, ≥ 1024) and the CMR_INFO array at `cmr_info` (`cmr_slots` ≥ 32 entries).
/// Returns (bytes written, CMR entries written).
pub fn tdh_sys_info<S: Seamcall + ?Sized>(
    s: &S,
    sysinfo: Hpa,
    sysinfo_len: u64,
    cmr_info: Hpa,
    cmr_slots: u64,
) -> Result<(u64, u64)> {
    let (_, r) = call(
        s,
        SeamcallLeaf::TDH_SYS_INFO,
        0,
        regs(sysinfo.raw(), sysinfo_len, cmr_info.raw(), cmr_slots),
    )?;
    Ok((r.rdx, r.r9))
}

/// TDH.SYS.CONFIG: hand the module the TDMR list (`tdmr_pa_array` = PA of an array of
/// `num_tdmrs` 8-byte TDMR_INFO addresses) and the global private HKID.
pub fn tdh_sys_config<S: Seamcall + ?Sized>(
    s: &S,
    tdmr_pa_array: Hpa,
    num_tdmrs: u64,
    global_hkid: Hkid,
) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_SYS_CONFIG,
        0,
        regs(tdmr_pa_array.raw(), num_tdmrs, global_hkid.operand(), 0),
    )
    .map(|_| ())
}

/// TDH.SYS.KEY.CONFIG: configure the global key on the calling package. Returns
/// `TDX_KEY_CONFIGURED` (a success) when this package was already done.
pub fn tdh_sys_key_config<S: Seamcall + ?Sized>(s: &S) -> Result<TdxStatus> {
    call(s, SeamcallLeaf::TDH_SYS_KEY_CONFIG, 0, Regs::default()).map(|(st, _)| st)
}

/// Progress of TDH.SYS.TDMR.INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdmrInitProgress {
    /// The next address to initialise (RDX).
    pub next: u64,
    /// The status (TDX_SUCCESS, or TDX_TDMR_ALREADY_INITIALIZED when the TDMR is done).
    pub status: TdxStatus,
}

/// TDH.SYS.TDMR.INIT: initialise the next chunk of the PAMT of the TDMR at `tdmr_base`.
/// Repeat until `next >= base + size`.
pub fn tdh_sys_tdmr_init<S: Seamcall + ?Sized>(s: &S, tdmr_base: Hpa) -> Result<TdmrInitProgress> {
    let (status, r) = call(
        s,
        SeamcallLeaf::TDH_SYS_TDMR_INIT,
        0,
        regs(tdmr_base.raw(), 0, 0, 0),
    )?;
    Ok(TdmrInitProgress {
        next: r.rdx,
        status,
    })
}

/// TDH.SYS.LP.SHUTDOWN: shut the module down on the calling logical processor.
pub fn tdh_sys_lp_shutdown<S: Seamcall + ?Sized>(s: &S) -> Result<()> {
    call(s, SeamcallLeaf::TDH_SYS_LP_SHUTDOWN, 0, Regs::default()).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// TD creation and configuration
// ---------------------------------------------------------------------------------------------

/// TDH.MNG.CREATE: turn the page at `tdr` into the TD root page with key `hkid`.
pub fn tdh_mng_create<S: Seamcall + ?Sized>(s: &S, tdr: Hpa, hkid: Hkid) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MNG_CREATE,
        0,
        regs(tdr.raw(), hkid.operand(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.MNG.KEY.CONFIG: program the TD's key on the calling package. Returns
/// `TDX_KEY_CONFIGURED` (a success) when this package was already done.
pub fn tdh_mng_key_config<S: Seamcall + ?Sized>(s: &S, tdr: Hpa) -> Result<TdxStatus> {
    call(
        s,
        SeamcallLeaf::TDH_MNG_KEY_CONFIG,
        0,
        regs(tdr.raw(), 0, 0, 0),
    )
    .map(|(st, _)| st)
}

/// TDH.MNG.ADDCX: add one TDCS page.
pub fn tdh_mng_addcx<S: Seamcall + ?Sized>(s: &S, tdcx: Hpa, tdr: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MNG_ADDCX,
        0,
        regs(tdcx.raw(), tdr.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.MNG.INIT: initialise the TD from the TD_PARAMS at `td_params` (1 KiB aligned, shared).
/// On `TDX_OPERAND_INVALID` for CPUID_CONFIG, [`SeamcallError::extended_error_info`] names the
/// offending CPUID leaf/subleaf.
pub fn tdh_mng_init<S: Seamcall + ?Sized>(s: &S, tdr: Hpa, td_params: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MNG_INIT,
        0,
        regs(tdr.raw(), td_params.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.MNG.RD (version 1): read a TD-scope metadata field; also returns the next field ID.
pub fn tdh_mng_rd<S: Seamcall + ?Sized>(
    s: &S,
    tdr: Hpa,
    field: MetadataFieldId,
) -> Result<MetadataRead> {
    let (status, r) = call(
        s,
        SeamcallLeaf::TDH_MNG_RD,
        1,
        regs(tdr.raw(), field.raw(), 0, 0),
    )?;
    Ok(MetadataRead {
        value: r.r8,
        next: MetadataFieldId::from_raw(r.rdx),
        status,
    })
}

/// TDH.MNG.WR: write the bits of `mask` of a TD-scope field; returns the previous value.
pub fn tdh_mng_wr<S: Seamcall + ?Sized>(
    s: &S,
    tdr: Hpa,
    field: MetadataFieldId,
    value: u64,
    mask: u64,
) -> Result<u64> {
    call(
        s,
        SeamcallLeaf::TDH_MNG_WR,
        0,
        regs(tdr.raw(), field.raw(), value, mask),
    )
    .map(|(_, r)| r.r8)
}

/// TDH.VP.CREATE: turn the page at `tdvpr` into a vCPU root page of the TD.
pub fn tdh_vp_create<S: Seamcall + ?Sized>(s: &S, tdvpr: Hpa, tdr: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_VP_CREATE,
        0,
        regs(tdvpr.raw(), tdr.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.VP.ADDCX: add one TDVPS page to the vCPU.
pub fn tdh_vp_addcx<S: Seamcall + ?Sized>(s: &S, tdcx: Hpa, tdvpr: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_VP_ADDCX,
        0,
        regs(tdcx.raw(), tdvpr.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.VP.INIT: initialise the vCPU; `initial_rcx` becomes the guest's initial RCX and R8.
pub fn tdh_vp_init<S: Seamcall + ?Sized>(s: &S, tdvpr: Hpa, initial_rcx: u64) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_VP_INIT,
        0,
        regs(tdvpr.raw(), initial_rcx, 0, 0),
    )
    .map(|_| ())
}

/// TDH.VP.RD (version 1): read a vCPU-scope metadata field; also returns the next field ID.
pub fn tdh_vp_rd<S: Seamcall + ?Sized>(
    s: &S,
    tdvpr: Hpa,
    field: MetadataFieldId,
) -> Result<MetadataRead> {
    let (status, r) = call(
        s,
        SeamcallLeaf::TDH_VP_RD,
        1,
        regs(tdvpr.raw(), field.raw(), 0, 0),
    )?;
    Ok(MetadataRead {
        value: r.r8,
        next: MetadataFieldId::from_raw(r.rdx),
        status,
    })
}

/// TDH.VP.WR: write the bits of `mask` of a vCPU-scope field; returns the previous value.
pub fn tdh_vp_wr<S: Seamcall + ?Sized>(
    s: &S,
    tdvpr: Hpa,
    field: MetadataFieldId,
    value: u64,
    mask: u64,
) -> Result<u64> {
    call(
        s,
        SeamcallLeaf::TDH_VP_WR,
        0,
        regs(tdvpr.raw(), field.raw(), value, mask),
    )
    .map(|(_, r)| r.r8)
}

// ---------------------------------------------------------------------------------------------
// TD memory
// ---------------------------------------------------------------------------------------------

/// TDH.MEM.SEPT.ADD: add the Secure-EPT page `sept_page` below the entry at `gpa_level`
/// (the level of the entry that will point to the new page).
pub fn tdh_mem_sept_add<S: Seamcall + ?Sized>(
    s: &S,
    gpa_level: GpaAndLevel,
    tdr: Hpa,
    sept_page: Hpa,
) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_SEPT_ADD,
        0,
        regs(gpa_level.raw(), tdr.raw(), sept_page.raw(), 0),
    )
    .map(|_| ())
}

/// TDH.MEM.PAGE.ADD: copy the 4 KiB `source` page into the private page `target` mapped at
/// `gpa` (4 KiB level) and extend MRTD with the GPA (before TDH.MR.FINALIZE only).
pub fn tdh_mem_page_add<S: Seamcall + ?Sized>(
    s: &S,
    gpa: Gpa,
    tdr: Hpa,
    target: Hpa,
    source: Hpa,
) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_PAGE_ADD,
        0,
        regs(gpa.raw(), tdr.raw(), target.raw(), source.raw()),
    )
    .map(|_| ())
}

/// TDH.MR.EXTEND: extend MRTD with the 256 bytes at `gpa` (256 B aligned, in a mapped page).
pub fn tdh_mr_extend<S: Seamcall + ?Sized>(s: &S, gpa: Gpa, tdr: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MR_EXTEND,
        0,
        regs(gpa.raw(), tdr.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.MR.FINALIZE: finalise MRTD; the TD becomes RUNNABLE.
pub fn tdh_mr_finalize<S: Seamcall + ?Sized>(s: &S, tdr: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MR_FINALIZE,
        0,
        regs(tdr.raw(), 0, 0, 0),
    )
    .map(|_| ())
}

/// TDH.MEM.PAGE.AUG: add `page` as a PENDING private page at `gpa_level` (4 KiB or 2 MiB);
/// the guest accepts it with TDG.MEM.PAGE.ACCEPT.
pub fn tdh_mem_page_aug<S: Seamcall + ?Sized>(
    s: &S,
    gpa_level: GpaAndLevel,
    tdr: Hpa,
    page: Hpa,
) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_PAGE_AUG,
        0,
        regs(gpa_level.raw(), tdr.raw(), page.raw(), 0),
    )
    .map(|_| ())
}

/// TDH.MEM.RANGE.BLOCK: block the entry at `gpa_level` for removal. Returns
/// `TDX_GPA_RANGE_ALREADY_BLOCKED` (a success) if it already was.
pub fn tdh_mem_range_block<S: Seamcall + ?Sized>(
    s: &S,
    gpa_level: GpaAndLevel,
    tdr: Hpa,
) -> Result<TdxStatus> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_RANGE_BLOCK,
        0,
        regs(gpa_level.raw(), tdr.raw(), 0, 0),
    )
    .map(|(st, _)| st)
}

/// TDH.MEM.RANGE.UNBLOCK: undo TDH.MEM.RANGE.BLOCK (after TLB tracking).
pub fn tdh_mem_range_unblock<S: Seamcall + ?Sized>(
    s: &S,
    gpa_level: GpaAndLevel,
    tdr: Hpa,
) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_RANGE_UNBLOCK,
        0,
        regs(gpa_level.raw(), tdr.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.MEM.TRACK: advance the TD's TLB epoch. Fails with `TDX_PREVIOUS_TLB_EPOCH_BUSY` while
/// vCPUs still run in the previous epoch.
pub fn tdh_mem_track<S: Seamcall + ?Sized>(s: &S, tdr: Hpa) -> Result<()> {
    call(s, SeamcallLeaf::TDH_MEM_TRACK, 0, regs(tdr.raw(), 0, 0, 0)).map(|_| ())
}

/// TDH.MEM.PAGE.REMOVE: remove the private page at `gpa_level` (blocked and tracked once the
/// TD runs); the page returns to the host as PT_NDA.
pub fn tdh_mem_page_remove<S: Seamcall + ?Sized>(
    s: &S,
    gpa_level: GpaAndLevel,
    tdr: Hpa,
) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_PAGE_REMOVE,
        0,
        regs(gpa_level.raw(), tdr.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.MEM.SEPT.REMOVE: remove the Secure-EPT page below the entry at `gpa_level`.
pub fn tdh_mem_sept_remove<S: Seamcall + ?Sized>(
    s: &S,
    gpa_level: GpaAndLevel,
    tdr: Hpa,
) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_SEPT_REMOVE,
        0,
        regs(gpa_level.raw(), tdr.raw(), 0, 0),
    )
    .map(|_| ())
}

/// TDH.MEM.SEPT.RD: read the Secure-EPT entry at `gpa_level` (architectural form) and its
/// level/state.
pub fn tdh_mem_sept_rd<S: Seamcall + ?Sized>(
    s: &S,
    gpa_level: GpaAndLevel,
    tdr: Hpa,
) -> Result<(SeptEntry, SeptEntryInfo)> {
    let (_, r) = call(
        s,
        SeamcallLeaf::TDH_MEM_SEPT_RD,
        0,
        regs(gpa_level.raw(), tdr.raw(), 0, 0),
    )?;
    Ok((SeptEntry::from_raw(r.rcx), SeptEntryInfo::from_raw(r.rdx)))
}

/// TDH.MEM.RD: read 8 bytes of a debug TD's private memory at `gpa`.
pub fn tdh_mem_rd<S: Seamcall + ?Sized>(s: &S, gpa: Gpa, tdr: Hpa) -> Result<u64> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_RD,
        0,
        regs(gpa.raw(), tdr.raw(), 0, 0),
    )
    .map(|(_, r)| r.r8)
}

/// TDH.MEM.WR: write 8 bytes of a debug TD's private memory at `gpa`; returns the old value.
pub fn tdh_mem_wr<S: Seamcall + ?Sized>(s: &S, gpa: Gpa, tdr: Hpa, value: u64) -> Result<u64> {
    call(
        s,
        SeamcallLeaf::TDH_MEM_WR,
        0,
        regs(gpa.raw(), tdr.raw(), value, 0),
    )
    .map(|(_, r)| r.r8)
}

// ---------------------------------------------------------------------------------------------
// Running a vCPU
// ---------------------------------------------------------------------------------------------

/// Input of TDH.VP.ENTER.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VpEnterInput {
    /// The vCPU's TDVPR page.
    pub tdvpr: Hpa,
    /// RCX bit 52: host recoverability hint.
    pub host_recoverability_hint: bool,
    /// RCX bit 53: resume L1 (TD partitioning).
    pub resume_l1: bool,
    /// After a TDVMCALL exit: the GPRs handed back to the guest (its selected registers get
    /// these values; see [`crate::tdvmcall::TdVmCallResponse::apply`]). RAX and RCX are ignored.
    pub regs: Regs,
}

impl VpEnterInput {
    /// The RCX operand: TDVPR PA bits 51:12 plus the flag bits.
    pub fn rcx(&self) -> u64 {
        (self.tdvpr.raw() & 0x000f_ffff_ffff_f000)
            | (self.host_recoverability_hint as u64) << 52
            | (self.resume_l1 as u64) << 53
    }
}

/// How TDH.VP.ENTER returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VpEnterExit {
    /// The guest called TDG.VP.VMCALL: `regs` holds its selected registers (RCX = the select
    /// mask); decode them with [`crate::tdvmcall::TdVmCallRequest::decode`].
    Tdvmcall {
        /// The guest's selected GPRs.
        regs: Regs,
    },
    /// An asynchronous exit (EPT violation, external interrupt, …).
    Async {
        /// The VMX basic exit reason (RAX bits 31:0).
        exit_reason: VmxExitReason,
        /// RCX: exit qualification.
        exit_qualification: u64,
        /// RDX: extended exit qualification.
        extended_exit_qualification: ExtendedExitQualification,
        /// R8: the GPA (EPT violations).
        gpa: Gpa,
        /// R9: VM-exit interruption information.
        interruption_info: u64,
        /// The full status (success class; may carry TDX_PENDING_INTERRUPT-style details).
        status: TdxStatus,
    },
}

/// TDH.VP.ENTER: run the vCPU until the next TD exit.
pub fn tdh_vp_enter<S: Seamcall + ?Sized>(s: &S, input: &VpEnterInput) -> Result<VpEnterExit> {
    let mut regs = input.regs;
    regs.rcx = input.rcx();
    let (status, r) = call(s, SeamcallLeaf::TDH_VP_ENTER, 0, regs)?;
    let exit_reason = VmxExitReason::from_raw(status.details_l2());
    if exit_reason == VmxExitReason::TDCALL {
        Ok(VpEnterExit::Tdvmcall { regs: r })
    } else {
        Ok(VpEnterExit::Async {
            exit_reason,
            exit_qualification: r.rcx,
            extended_exit_qualification: ExtendedExitQualification::from_raw(r.rdx),
            gpa: Gpa(r.r8),
            interruption_info: r.r9,
            status,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------------------------

/// TDH.VP.FLUSH: flush and dissociate the vCPU from the calling logical processor.
pub fn tdh_vp_flush<S: Seamcall + ?Sized>(s: &S, tdvpr: Hpa) -> Result<()> {
    call(s, SeamcallLeaf::TDH_VP_FLUSH, 0, regs(tdvpr.raw(), 0, 0, 0)).map(|_| ())
}

/// TDH.MNG.VPFLUSHDONE: all vCPUs are flushed; the TD becomes TD_BLOCKED.
pub fn tdh_mng_vpflushdone<S: Seamcall + ?Sized>(s: &S, tdr: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MNG_VPFLUSHDONE,
        0,
        regs(tdr.raw(), 0, 0, 0),
    )
    .map(|_| ())
}

/// Outcome of TDH.PHYMEM.CACHE.WB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheWbOutcome {
    /// The write-back completed (or nothing needed it: TDX_NO_HKID_READY_TO_WBCACHE).
    Done(TdxStatus),
    /// TDX_INTERRUPTED_RESUMABLE: call again with `resume = true`.
    Interrupted,
}

/// TDH.PHYMEM.CACHE.WB on the calling package (`resume` = continue an interrupted one).
pub fn tdh_phymem_cache_wb<S: Seamcall + ?Sized>(s: &S, resume: bool) -> Result<CacheWbOutcome> {
    match call(
        s,
        SeamcallLeaf::TDH_PHYMEM_CACHE_WB,
        0,
        regs(resume as u64, 0, 0, 0),
    ) {
        Ok((st, _)) => Ok(CacheWbOutcome::Done(st)),
        Err(e) if e.status.code() == StatusCode::INTERRUPTED_RESUMABLE => {
            Ok(CacheWbOutcome::Interrupted)
        }
        Err(e) => Err(e),
    }
}

/// TDH.MNG.KEY.FREEID: free the TD's HKID; the TD enters TD_TEARDOWN.
pub fn tdh_mng_key_freeid<S: Seamcall + ?Sized>(s: &S, tdr: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_MNG_KEY_FREEID,
        0,
        regs(tdr.raw(), 0, 0, 0),
    )
    .map(|_| ())
}

/// A page's PAMT information (TDH.PHYMEM.PAGE.RECLAIM and TDH.PHYMEM.PAGE.RDMD outputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageMetadata {
    /// The PAMT page type the page had (RCX).
    pub page_type: PamtPageType,
    /// Its owner, the TDR PA (RDX).
    pub owner: Hpa,
    /// Its page size (R8), if a valid encoding.
    pub page_size: Option<PageSize>,
    /// The raw page-size value (R8).
    pub page_size_raw: u64,
    /// BEPOCH (R9; RDMD only, 0 for RECLAIM).
    pub bepoch: u64,
}

fn page_metadata(r: &Regs, with_bepoch: bool) -> PageMetadata {
    PageMetadata {
        page_type: PamtPageType::from_raw(r.rcx),
        owner: Hpa(r.rdx),
        page_size: PageSize::from_raw(r.r8),
        page_size_raw: r.r8,
        bepoch: if with_bepoch { r.r9 } else { 0 },
    }
}

/// TDH.PHYMEM.PAGE.RECLAIM: take a TD page back (TD_TEARDOWN only; the TDR last).
pub fn tdh_phymem_page_reclaim<S: Seamcall + ?Sized>(s: &S, page: Hpa) -> Result<PageMetadata> {
    let (_, r) = call(
        s,
        SeamcallLeaf::TDH_PHYMEM_PAGE_RECLAIM,
        0,
        regs(page.raw(), 0, 0, 0),
    )?;
    Ok(page_metadata(&r, false))
}

/// TDH.PHYMEM.PAGE.WBINVD: write back and invalidate the cache lines of one page;
/// `page_with_hkid` includes the HKID bits (see [`Hpa::with_hkid`]).
pub fn tdh_phymem_page_wbinvd<S: Seamcall + ?Sized>(s: &S, page_with_hkid: Hpa) -> Result<()> {
    call(
        s,
        SeamcallLeaf::TDH_PHYMEM_PAGE_WBINVD,
        0,
        regs(page_with_hkid.raw(), 0, 0, 0),
    )
    .map(|_| ())
}

/// TDH.PHYMEM.PAGE.RDMD: read a page's PAMT metadata.
pub fn tdh_phymem_page_rdmd<S: Seamcall + ?Sized>(s: &S, page: Hpa) -> Result<PageMetadata> {
    let (_, r) = call(
        s,
        SeamcallLeaf::TDH_PHYMEM_PAGE_RDMD,
        0,
        regs(page.raw(), 0, 0, 0),
    )?;
    Ok(page_metadata(&r, true))
}
