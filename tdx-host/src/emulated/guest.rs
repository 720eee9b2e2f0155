//! The scripted engine ([`ScriptedVcpu`]): a synthetic guest vCPU driven by a test, and the
//! TDCALL leaves it issues (`td_dispatcher/vm_exits/tdg_*.c`).
//!
//! # Interleaving host and guest deterministically
//!
//! Guest code runs only while the host is inside TDH.VP.ENTER for that vCPU, as on hardware:
//!
//! 1. The host thread calls TDH.VP.ENTER; the module checks and associates the vCPU, then
//!    blocks, handing the CPU to the guest.
//! 2. The guest thread (the test) calls [`ScriptedVcpu::tdcall`], [`ScriptedVcpu::read`] or
//!    [`ScriptedVcpu::write`]; each first waits until the vCPU runs. Leaves that complete in the
//!    module (TDG.VP.INFO, TDG.MR.REPORT, an ACCEPT of a PENDING page, ...) return at once.
//! 3. A TDG.VP.VMCALL, or an EPT violation (access to a non-present private GPA, ACCEPT of a
//!    page the host has not AUGed), becomes a TD exit: TDH.VP.ENTER returns on the host thread
//!    with the exit registers, and the guest call blocks until the host enters again. On that
//!    entry a VMCALL returns the registers the host passed in (for the GPRs the guest selected)
//!    and an EPT-violating access or ACCEPT is retried.
//!
//! Turns strictly alternate, so a test with one host thread and one guest thread is
//! deterministic. Exit registers: VMCALL → RAX = VMX exit reason 77 (TDCALL), RCX = the GPR
//! select mask, the selected GPRs; EPT violation → RAX = 48, RCX = exit qualification (bit 0
//! read, bit 1 write), RDX = extended exit qualification (type 1 ACCEPT with its info in bits
//! 63:32, else 0), R8 = GPA; all other GPRs 0.
//!
//! Shared GPAs are not modelled: an access with the shared bit set returns
//! [`GuestAccessFault::SharedGpa`].

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384};
use tdx_abi::call::{Regs, Tdcall};
use tdx_abi::measure::rtmr_extend;
use tdx_abi::status::TdxStatus;

use super::abi_shim::*;
use super::sept::{self, State as S};
use super::state::*;
use super::vp::Channel;
use super::{lock, EmulatedModule};

/// Size of TDREPORT_STRUCT.
const TDREPORT_SIZE: usize = 1024;
/// Emulator-defined MRSEAM: SHA-384 of this string (the "module image").
const MRSEAM_SEED: &[u8] = b"tdx-host emulated TDX module 1.5.01";
/// Emulator-defined TEE_TCB_SVN: {minor 5, major 1, ...}.
const TEE_TCB_SVN: [u8; 16] = [5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Why a guest memory access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestAccessFault {
    /// The page is PENDING: a #VE (vector 20) was injected; VE_INFO holds the GPA (read it with
    /// TDG.VP.VEINFO.GET).
    #[error("#VE on access to pending GPA {gpa:#x}")]
    VirtualizationException {
        /// Faulting GPA.
        gpa: u64,
    },
    /// A #VE was due while VE_INFO was still valid: #DF.
    #[error("#DF: #VE while VE_INFO still valid (GPA {gpa:#x})")]
    DoubleFault {
        /// Faulting GPA.
        gpa: u64,
    },
    /// The page was poisoned by a host write (or the TD is fatal): the TD is now fatal.
    #[error("fatal: integrity failure on GPA {gpa:#x}")]
    Fatal {
        /// Faulting GPA.
        gpa: u64,
    },
    /// The GPA is above the GPA width (a #PF with RSVD on hardware).
    #[error("GPA {gpa:#x} is outside the TD's GPA width")]
    InvalidGpa {
        /// Faulting GPA.
        gpa: u64,
    },
    /// Shared GPAs are not modelled by the scripted engine.
    #[error("shared GPA {gpa:#x} is not modelled")]
    SharedGpa {
        /// Faulting GPA.
        gpa: u64,
    },
    /// The vCPU no longer exists.
    #[error("the vCPU was removed")]
    NoVcpu,
}

/// A synthetic guest vCPU driven by the test (see the module documentation for the protocol).
#[derive(Clone)]
pub struct ScriptedVcpu {
    module: Arc<EmulatedModule>,
    tdvpr: u64,
    chan: Arc<Channel>,
}

/// Outcome of one guest attempt.
enum Step<T> {
    Done(T),
    /// TD exit with (exit reason, qualification, extended qualification, GPA); retry on re-entry.
    EptViolation(u64, u64, u64),
}

impl EmulatedModule {
    /// Attaches the scripted engine to the vCPU whose TDVPR is at `tdvpr`: from now on
    /// TDH.VP.ENTER on it blocks until this guest exits.
    pub fn scripted_vcpu(self: &Arc<Self>, tdvpr: u64) -> ScriptedVcpu {
        let chan = lock(&self.engines.by_tdvpr)
            .entry(tdvpr)
            .or_insert_with(|| Arc::new(Channel::new()))
            .clone();
        ScriptedVcpu {
            module: self.clone(),
            tdvpr,
            chan,
        }
    }

    /// Verifies the MAC of a 256-byte REPORTMACSTRUCT produced by TDG.MR.REPORT on this
    /// platform: HMAC-SHA-256 over bytes 0..224 keyed by the platform secret (emulator-defined;
    /// the hardware algorithm is model-specific).
    pub fn verify_report_mac(&self, report_mac_struct: &[u8; 256]) -> bool {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.report_mac_key()) else {
            return false;
        };
        mac.update(&report_mac_struct[..224]);
        mac.verify_slice(&report_mac_struct[224..]).is_ok()
    }
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

impl ScriptedVcpu {
    /// The TDVPR PA of this vCPU.
    pub fn tdvpr(&self) -> u64 {
        self.tdvpr
    }

    /// Issues a TDCALL as the guest (waits until the vCPU runs).
    pub fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        self.chan.wait_running();
        loop {
            let step = {
                let mut st = self.module.state();
                tdcall_step(&mut st, self.module.report_mac_key(), self.tdvpr, regs)
            };
            match step {
                Step::Done(Some(status)) => {
                    regs.rax = status;
                    return TdxStatus::from_raw(status);
                }
                Step::Done(None) => {
                    // TDG.VP.VMCALL: exit with the selected GPRs, resume with the host's values.
                    let mask = regs.rcx & 0xFFFF;
                    let mut out = Regs {
                        rcx: regs.rcx,
                        ..Regs::default()
                    };
                    for n in 2..16u8 {
                        if mask & (1 << n) != 0 {
                            if let (Some(d), Some(v)) = (out.gpr_mut(n), regs.gpr(n)) {
                                *d = v;
                            }
                        }
                    }
                    let entry = self
                        .chan
                        .exit_and_wait(status(SUCCESS, EXIT_REASON_TDCALL), out);
                    for n in 2..16u8 {
                        if mask & (1 << n) != 0 {
                            if let (Some(d), Some(v)) = (regs.gpr_mut(n), entry.gpr(n)) {
                                *d = v;
                            }
                        }
                    }
                    regs.rax = 0;
                    return TdxStatus::SUCCESS;
                }
                Step::EptViolation(qual, eeq, gpa) => {
                    self.ept_exit(qual, eeq, gpa);
                }
            }
        }
    }

    fn ept_exit(&self, qual: u64, eeq: u64, gpa: u64) -> Regs {
        let out = Regs {
            rcx: qual,
            rdx: eeq,
            r8: gpa,
            ..Regs::default()
        };
        self.chan
            .exit_and_wait(status(SUCCESS, EXIT_REASON_EPT_VIOLATION), out)
    }

    /// Reads guest memory at a private GPA through the S-EPT (waits until the vCPU runs).
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestAccessFault> {
        self.access(gpa, buf.len(), false, |arena, hpa, off, n| {
            arena.read(hpa, &mut buf[off..off + n]);
        })
    }

    /// Writes guest memory at a private GPA through the S-EPT (waits until the vCPU runs).
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestAccessFault> {
        self.access(gpa, buf.len(), true, |arena, hpa, off, n| {
            arena.write(hpa, &buf[off..off + n]);
        })
    }

    fn access(
        &self,
        gpa: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&super::arena::Arena, u64, usize, usize),
    ) -> Result<(), GuestAccessFault> {
        self.chan.wait_running();
        let mut off = 0usize;
        while off < len {
            let cur = gpa
                .checked_add(off as u64)
                .ok_or(GuestAccessFault::InvalidGpa { gpa })?;
            let n = ((4096 - (cur & 0xFFF)) as usize).min(len - off);
            let step = {
                let mut st = self.module.state();
                translate(&mut st, self.tdvpr, cur, write)
            };
            match step? {
                Step::Done(hpa) => {
                    let st = self.module.state();
                    f(&st.arena, hpa, off, n);
                    off += n;
                }
                Step::EptViolation(q, e, g) => {
                    self.ept_exit(q, e, g);
                }
            }
        }
        Ok(())
    }
}

impl Tdcall for ScriptedVcpu {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        ScriptedVcpu::tdcall(self, regs)
    }
}

/// Translates a private GPA for a guest access: the HPA, an EPT-violation exit, or a fault.
fn translate(
    st: &mut State,
    tdvpr: u64,
    gpa: u64,
    write: bool,
) -> Result<Step<u64>, GuestAccessFault> {
    let v = st.vcpus.get(&tdvpr).ok_or(GuestAccessFault::NoVcpu)?;
    let tdr = v.tdr;
    let td = st.tds.get(&tdr).ok_or(GuestAccessFault::NoVcpu)?;
    let bits = td.cfg.gpaw_bits();
    if gpa >> bits != 0 {
        return Err(GuestAccessFault::InvalidGpa { gpa });
    }
    if gpa >> (bits - 1) != 0 {
        return Err(GuestAccessFault::SharedGpa { gpa });
    }
    if td.fatal {
        return Err(GuestAccessFault::Fatal { gpa });
    }
    let sept_ve_disable = td.cfg.attributes & (1 << 28) != 0 || td.td_ctls & 1 != 0;
    let qual = if write { 2 } else { 1 };
    let (slot, level) = match st.sept_walk_leaf(tdr, gpa) {
        Ok(x) => x,
        Err(_) => return Ok(Step::EptViolation(qual, 0, gpa & !0xFFF)),
    };
    let e = st.entry(slot);
    match S::of(e) {
        S::Mapped => {
            let mask = (1u64 << (12 + 9 * u32::from(level))) - 1;
            let hpa = sept::hpa(e) + (gpa & mask);
            if st.poisoned.contains(&(hpa & !0xFFF)) {
                if let Some(td) = st.tds.get_mut(&tdr) {
                    td.fatal = true;
                }
                return Err(GuestAccessFault::Fatal { gpa });
            }
            Ok(Step::Done(hpa))
        }
        S::Pending if !sept_ve_disable => {
            let v = st.vcpus.get_mut(&tdvpr).ok_or(GuestAccessFault::NoVcpu)?;
            if v.ve_info.valid {
                return Err(GuestAccessFault::DoubleFault { gpa });
            }
            v.ve_info = VeInfo {
                exit_reason: EXIT_REASON_EPT_VIOLATION,
                valid: true,
                exit_qualification: qual,
                gla: 0,
                gpa,
                eptp_index: 0,
            };
            Err(GuestAccessFault::VirtualizationException { gpa })
        }
        _ => Ok(Step::EptViolation(qual, 0, gpa & !0xFFF)),
    }
}

/// Reads `N` bytes of private guest memory for a TDCALL operand (mapped pages only).
fn guest_bytes<const N: usize>(st: &State, tdr: u64, gpa: u64) -> Option<[u8; N]> {
    let (slot, level) = st.sept_walk_leaf(tdr, gpa).ok()?;
    let e = st.entry(slot);
    if S::of(e) != S::Mapped {
        return None;
    }
    let mask = (1u64 << (12 + 9 * u32::from(level))) - 1;
    let mut b = [0u8; N];
    st.arena
        .read(sept::hpa(e) + (gpa & mask), &mut b)
        .then_some(b)
}

/// HPA of a mapped private guest page for a TDCALL output operand.
fn guest_hpa(st: &State, tdr: u64, gpa: u64) -> Option<u64> {
    let (slot, level) = st.sept_walk_leaf(tdr, gpa).ok()?;
    let e = st.entry(slot);
    let mask = (1u64 << (12 + 9 * u32::from(level))) - 1;
    (S::of(e) == S::Mapped).then(|| sept::hpa(e) + (gpa & mask))
}

/// One TDCALL: `Done(Some(status))`, `Done(None)` for a TDG.VP.VMCALL exit, or an EPT
/// violation exit (ACCEPT of a non-AUGed page).
fn tdcall_step(st: &mut State, key: &[u8; 32], tdvpr: u64, regs: &mut Regs) -> Step<Option<u64>> {
    let r = tdcall_leaf(st, key, tdvpr, regs);
    match r {
        Ok(x) => x,
        Err(s) => Step::Done(Some(s)),
    }
}

fn tdcall_leaf(
    st: &mut State,
    key: &[u8; 32],
    tdvpr: u64,
    regs: &mut Regs,
) -> Result<Step<Option<u64>>, u64> {
    let rax = regs.rax;
    let leaf = (rax & 0xFFFF) as u16;
    let version = ((rax >> 16) & 0xFF) as u8;
    let max_version = if leaf == TDG_VM_RD { 1 } else { 0 };
    if rax >> 24 != 0 || version > max_version {
        return fail(OPERAND_INVALID, OP_RAX);
    }
    let v = st
        .vcpus
        .get(&tdvpr)
        .ok_or(status(VCPU_STATE_INCORRECT, 0))?;
    if v.state != VCPU_ACTIVE {
        return fail(VCPU_STATE_INCORRECT, 0);
    }
    let tdr = v.tdr;
    let done = |s: u64| Ok(Step::Done(Some(s)));
    match leaf {
        TDG_VP_VMCALL => tdg_vp_vmcall(st, tdr, regs),
        TDG_VP_INFO => done(tdg_vp_info(st, tdvpr, tdr, regs)?),
        TDG_MR_RTMR_EXTEND => done(tdg_mr_rtmr_extend(st, tdr, regs)?),
        TDG_VP_VEINFO_GET => done(tdg_vp_veinfo_get(st, tdvpr, regs)?),
        TDG_MR_REPORT => done(tdg_mr_report(st, key, tdr, regs)?),
        TDG_MEM_PAGE_ACCEPT => tdg_mem_page_accept(st, tdr, regs),
        TDG_VM_RD => done(tdg_vm_rd(st, tdr, regs)?),
        TDG_VM_WR => done(tdg_vm_wr(st, tdr, regs)?),
        _ => fail(OPERAND_INVALID, OP_RAX),
    }
}

// tdg_vp_vmcall.c: mask checks, then a TD exit to the host.
fn tdg_vp_vmcall(st: &State, tdr: u64, regs: &Regs) -> Result<Step<Option<u64>>, u64> {
    let mask = regs.rcx;
    let no_rbp_mod = st.td(tdr)?.cfg.config_flags & 4 != 0;
    let forbidden = 0b1_0011 | if no_rbp_mod { 1 << 5 } else { 0 };
    if mask >> 32 != 0 || mask & forbidden != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    Ok(Step::Done(None))
}

// tdg_vp_info.c
fn tdg_vp_info(st: &State, tdvpr: u64, tdr: u64, regs: &mut Regs) -> LeafResult {
    let td = st.td(tdr)?;
    let v = &st.vcpus[&tdvpr];
    regs.rcx = u64::from(td.cfg.gpaw_bits());
    regs.rdx = td.cfg.attributes;
    regs.r8 = u64::from(td.num_vcpus) | (u64::from(td.cfg.max_vcpus) << 32);
    regs.r9 = u64::from(v.index);
    regs.r10 = 0;
    regs.r11 = 0;
    Ok(0)
}

// tdg_mr_rtmr_extend.c
fn tdg_mr_rtmr_extend(st: &mut State, tdr: u64, regs: &mut Regs) -> LeafResult {
    let gpa = regs.rcx;
    if gpa % 64 != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    if regs.rdx > 3 {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    let Some(data) = guest_bytes::<48>(st, tdr, gpa) else {
        return fail(OPERAND_INVALID, OP_RCX);
    };
    let td = st.td_mut(tdr)?;
    let i = regs.rdx as usize;
    let cur = tdx_abi::measure::Measurement(td.rtmr[i]);
    td.rtmr[i] = rtmr_extend(&cur, &data).to_bytes();
    Ok(0)
}

// tdg_vp_veinfo_get.c
fn tdg_vp_veinfo_get(st: &mut State, tdvpr: u64, regs: &mut Regs) -> LeafResult {
    let v = st
        .vcpus
        .get_mut(&tdvpr)
        .ok_or(status(VCPU_STATE_INCORRECT, 0))?;
    if !v.ve_info.valid {
        return fail(NO_VALID_VE_INFO, 0);
    }
    let ve = v.ve_info;
    v.ve_info.valid = false;
    regs.rcx = u64::from(ve.exit_reason);
    regs.rdx = ve.exit_qualification;
    regs.r8 = ve.gla;
    regs.r9 = ve.gpa;
    regs.r10 = 0;
    Ok(0)
}

/// TDINFO_STRUCT (§5.6) of a TD.
pub(crate) fn tdinfo(td: &Td) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..8].copy_from_slice(&td.cfg.attributes.to_le_bytes());
    b[8..16].copy_from_slice(&td.cfg.xfam.to_le_bytes());
    b[16..64].copy_from_slice(&td.mrtd);
    b[64..112].copy_from_slice(&td.cfg.mrconfigid);
    b[112..160].copy_from_slice(&td.cfg.mrowner);
    b[160..208].copy_from_slice(&td.cfg.mrownerconfig);
    for (i, r) in td.rtmr.iter().enumerate() {
        b[208 + 48 * i..256 + 48 * i].copy_from_slice(r);
    }
    // SERVTD_HASH (400..448) = 0: no service TDs.
    b
}

/// The emulator's TEE_TCB_INFO (§5.5, 239 bytes): VALID marks TEE_TCB_SVN, MRSEAM,
/// MRSIGNERSEAM and ATTRIBUTES (8-byte granules 1..=15).
pub(crate) fn tee_tcb_info() -> [u8; 239] {
    let mut b = [0u8; 239];
    b[0..8].copy_from_slice(&0xFFFEu64.to_le_bytes());
    b[8..24].copy_from_slice(&TEE_TCB_SVN);
    b[24..72].copy_from_slice(&sha384(MRSEAM_SEED));
    b
}

// tdg_mr_report.c
fn tdg_mr_report(st: &State, key: &[u8; 32], tdr: u64, regs: &mut Regs) -> LeafResult {
    let (report_gpa, data_gpa, subtype) = (regs.rcx, regs.rdx, regs.r8);
    if report_gpa % 1024 != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    if data_gpa % 64 != 0 {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    if subtype != 0 {
        return fail(OPERAND_INVALID, OP_R8);
    }
    let Some(report_data) = guest_bytes::<64>(st, tdr, data_gpa) else {
        return fail(OPERAND_INVALID, OP_RDX);
    };
    let Some(out) = guest_hpa(st, tdr, report_gpa) else {
        return fail(OPERAND_INVALID, OP_RCX);
    };
    let td = st.td(tdr)?;
    let info = tdinfo(td);
    let tcb = tee_tcb_info();
    let mut r = [0u8; TDREPORT_SIZE];
    r[0] = 0x81; // TYPE: TDX
    r[1] = 0; // SUBTYPE
    r[2] = 0; // VERSION: no service TDs
    r[32..80].copy_from_slice(&sha384(&tcb));
    r[80..128].copy_from_slice(&sha384(&info));
    r[128..192].copy_from_slice(&report_data);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return fail(OPERAND_INVALID, OP_RCX);
    };
    mac.update(&r[..224]);
    r[224..256].copy_from_slice(&mac.finalize().into_bytes());
    r[256..495].copy_from_slice(&tcb);
    r[512..1024].copy_from_slice(&info);
    st.arena.write(out, &r);
    Ok(0)
}

// tdg_mem_page_accept.c
fn tdg_mem_page_accept(
    st: &mut State,
    tdr: u64,
    regs: &mut Regs,
) -> Result<Step<Option<u64>>, u64> {
    let raw = regs.rcx;
    let level = (raw & 7) as u8;
    let gpa = raw & !0xFFF;
    let td = st.td(tdr)?;
    let bits = td.cfg.gpaw_bits();
    if raw & 0xFF8 != 0
        || raw >> 52 != 0
        || level > 2
        || gpa & ((1u64 << (12 + 9 * u32::from(level))) - 1) != 0
        || gpa >> (bits - 1) != 0
    {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    let Some(mut table) = td.sept_root() else {
        return fail(OPERAND_INVALID, OP_RCX);
    };
    let accept_exit = |err_level: u8, e: u64| {
        let info = u64::from(level)
            | (u64::from(err_level) << 3)
            | ((S::of(e).public() & 0xFF) << 6)
            | (u64::from(S::of(e).is_leaf()) << 14);
        Ok(Step::EptViolation(2, 1 | (info << 32), gpa))
    };
    let mut l = td.cfg.pwl() - 1;
    loop {
        let slot = (table, ((gpa >> (12 + 9 * u32::from(l))) & 511) as usize);
        let e = st.entry(slot);
        let s = S::of(e);
        if l > level {
            match s {
                S::NlMapped => {
                    table = sept::hpa(e);
                    l -= 1;
                    continue;
                }
                S::Mapped => return Ok(Step::Done(Some(status(PAGE_ALREADY_ACCEPTED, l.into())))),
                S::Pending => return fail(PAGE_SIZE_MISMATCH, l.into()),
                _ => return accept_exit(l, e),
            }
        }
        return match s {
            S::NlMapped | S::NlBlocked => fail(PAGE_SIZE_MISMATCH, l.into()),
            S::Mapped => Ok(Step::Done(Some(status(PAGE_ALREADY_ACCEPTED, l.into())))),
            S::Pending => {
                let hpa = sept::hpa(e);
                let size = 1usize << (12 + 9 * u32::from(l));
                st.arena.fill(hpa, size, 0);
                st.set_entry(slot, sept::mapped(hpa));
                Ok(Step::Done(Some(0)))
            }
            _ => accept_exit(l, e),
        };
    }
}

/// Guest-readable TD fields (execution controls, epoch, measurements) via TDG.VM.RD.
fn tdg_vm_rd(st: &State, tdr: u64, regs: &mut Regs) -> LeafResult {
    if regs.rcx != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    let class = (regs.rdx >> 56) & 0x3F;
    if class < 0x11 {
        return fail(METADATA_FIELD_NOT_READABLE, OP_RDX);
    }
    regs.r8 = super::td::td_field_value(st, tdr, regs.rdx)?;
    Ok(0)
}

// tdg_vm_wr.c: NOTIFY_ENABLES (bit 0) and TD_CTLS (bits 3:0) are guest-writable.
fn tdg_vm_wr(st: &mut State, tdr: u64, regs: &mut Regs) -> LeafResult {
    if regs.rcx != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    let class = (regs.rdx >> 56) & 0x3F;
    let code = regs.rdx & 0xFF_FFFF;
    let (value, mask) = (regs.r8, regs.r9);
    let td = st.td_mut(tdr)?;
    let (field, writable) = match (class, code) {
        (0x11, 0x10) => (&mut td.notify_enables, 1u64),
        (0x11, 0x17) => (&mut td.td_ctls, 0xF),
        (0x11, _) | (0x12, _) | (0x13, _) => return fail(METADATA_FIELD_NOT_WRITABLE, OP_RDX),
        _ => return fail(METADATA_FIELD_ID_INCORRECT, OP_RDX),
    };
    if mask & !writable != 0 {
        return fail(OPERAND_INVALID, OP_R9);
    }
    let old = *field;
    *field = (old & !mask) | (value & mask);
    regs.r8 = old;
    Ok(0)
}
