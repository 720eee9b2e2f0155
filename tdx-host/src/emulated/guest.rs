//! TDH.VP.ENTER, the execution-engine seam, the scripted engine ([`ScriptedVcpu`]) and the
//! guest-side (TDCALL) leaves.
//!
//! # How a test interleaves host and guest (scripted engine)
//! Everything is deterministic and single-threaded; the guest is "running" whenever its TD is
//! RUNNABLE and its vCPU initialised:
//! 1. The test, acting as the guest, calls [`ScriptedVcpu::tdcall`], [`ScriptedVcpu::read`]
//!    and [`ScriptedVcpu::write`]. Leaves that complete in the module (VP.INFO, MR.REPORT,
//!    ACCEPT of a pending page, …) return at once with their status.
//! 2. An action that needs the host — TDG.VP.VMCALL, an EPT violation (unmapped/blocked GPA,
//!    a pending GPA when #VE is disabled, ACCEPT of a GPA the host has not AUGed) — queues a
//!    TD exit on the vCPU. `tdcall` then returns `TDX_SUCCESS` for VMCALL (the host's answer
//!    is read later with [`ScriptedVcpu::take_vmcall_response`]) and
//!    `TDX_INTERRUPTED_RESTARTABLE` for a TDCALL that exited (the guest re-issues it after the
//!    host resumed it); guest memory accesses return [`GuestAccessFault::EptViolation`].
//! 3. The host's next TDH.VP.ENTER on that vCPU returns the oldest queued exit; with none
//!    queued it returns an asynchronous EXTERNAL_INTERRUPT exit (reason 1), as a real guest
//!    preempted by a host interrupt would. A VP.ENTER that follows a VMCALL exit first copies
//!    the registers the guest selected from the host's registers into the guest (the GHCI
//!    response).
//! 4. To act *while* the vCPU is inside TDH.VP.ENTER (for races with MEM.TRACK, VP.FLUSH, …),
//!    pause the VP.ENTER in its lock window with `FaultInjector::pause_in_lock_window(0)` from
//!    another thread: until `resume()`, the vCPU is ACTIVE, holds its TDVPR (and TDR) shared
//!    and keeps its reference on the TD epoch it entered in, exactly as a vCPU running in
//!    the guest does; guest actions made meanwhile are exits for the next VP.ENTER.
//!
//! # Engines and the state mutex
//! TDH.VP.ENTER makes its checks and marks the vCPU ACTIVE under the module's state mutex,
//! then runs the engine ([`ExecutionEngine::run`]) in the leaf's lock window: the mutex is
//! released while the vCPU's TDVPR and TDR stay held shared and its epoch reference is
//! held, so other host threads can issue SEAMCALLs (AUG, MEM.TRACK, …) while the guest runs.
//! A guest TDCALL made during the run enters the module through
//! [`EmulatedModule::guest_tdcall`], which takes the mutex itself and returns
//! [`GuestTdcall::Exit`] for leaves that need the host. After the run the mutex is taken
//! again to store the guest GPRs and produce the outputs below.
//!
//! # VP.ENTER outputs
//! TDVMCALL exit: RAX = 77 (VMX exit reason TDCALL), RCX = the guest's GPR select mask, the
//! selected GPRs copied from the guest, all other GPRs 0. Asynchronous exit: RAX = exit
//! reason (48 EPT violation, 1 external interrupt), RCX = exit qualification, RDX = extended
//! exit qualification (type 1 = ACCEPT, info in bits 63:32), R8 = GPA, R9 = interruption
//! info (0), other GPRs 0.
//!
//! # TDREPORT
//! TDINFO from the TDCS; TEE_TCB_INFO of the emulated module (VALID = 0xFFFE: TEE_TCB_SVN,
//! MRSEAM, MRSIGNERSEAM and ATTRIBUTES populated; TEE_TCB_SVN = {1, 5, 1, 0…} for 1.5.01;
//! MRSEAM = SHA-384 of `"tdx-host emulated TDX module 1.5.01"`; MRSIGNERSEAM and ATTRIBUTES
//! 0); REPORTMACSTRUCT TYPE 0x81, SUBTYPE 0, VERSION 0, CPUSVN = {1, 5, 0…},
//! TEE_TCB_INFO_HASH = SHA-384 of the 239-byte TEE_TCB_INFO, TEE_INFO_HASH = SHA-384 of
//! TDINFO. MAC (**emulator-defined**; the real algorithm and key are CPU-internal and
//! unconfirmed): HMAC-SHA-256 over bytes 0..224 of REPORTMACSTRUCT keyed by the platform's
//! `report_mac_key`; [`EmulatedModule::verify_report_mac`] checks it.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tdx_abi::call::{Regs, Tdcall};
use tdx_abi::gpa::Gpa;
use tdx_abi::leaf::{TdcallLeaf as G, VmxExitReason};
use tdx_abi::measure::{rtmr_extend, sha384, Measurement};
use tdx_abi::phys::Hpa;
use tdx_abi::report::ReportMacStruct;
use tdx_abi::status::TdxStatus;
use zerocopy::IntoBytes;

use super::codes::{self, OperandId, StatusCode};
use super::locks::{Held, LockKey, Mode};
use super::sept::{self, St, Walk};
use super::state::{ops, pt, vs, LastExit, PendingExit, State, Td, MIN_TDVPS_PAGES};
use super::td::td_field_access;
use super::{Ctx, EmulatedModule, LeafResult};

/// VMX exit reason of TDCALL (TDG.VP.VMCALL exits).
pub const EXIT_REASON_TDCALL: u32 = VmxExitReason::TDCALL.raw();
/// VMX exit reason of an EPT violation.
pub const EXIT_REASON_EPT_VIOLATION: u32 = VmxExitReason::EPT_VIOLATION.raw();
/// VMX exit reason of an external interrupt.
pub const EXIT_REASON_EXTERNAL_INTERRUPT: u32 = VmxExitReason::EXTERNAL_INTERRUPT.raw();
/// #VE vector.
pub const VE_VECTOR: u8 = 20;
/// `TDX_INTERRUPTED_RESTARTABLE`: what [`ScriptedVcpu::tdcall`] returns for a TDCALL that
/// caused a TD exit instead of completing (re-issue it after the host's next VP.ENTER).
pub const TDCALL_EXITED: TdxStatus = TdxStatus::from_code(StatusCode::INTERRUPTED_RESTARTABLE);

/// MRSEAM of the emulated module.
pub fn emulated_mrseam() -> Measurement {
    sha384(b"tdx-host emulated TDX module 1.5.01")
}

/// A guest memory access that did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestAccessFault {
    /// The vCPU cannot run (TD not RUNNABLE, vCPU not initialised, or TDR gone).
    #[error("the vCPU is not running")]
    NotRunning,
    /// EPT violation: the access became a TD exit to the host (queued for VP.ENTER).
    #[error("EPT violation at GPA {gpa:#x}: TD exit to the host")]
    EptViolation {
        /// The faulting GPA.
        gpa: u64,
    },
    /// A #VE (vector 20) was injected; VE_INFO holds the details (TDG.VP.VEINFO.GET).
    #[error("#VE at GPA {gpa:#x}")]
    VirtualizationException {
        /// The faulting GPA.
        gpa: u64,
    },
    /// A #VE was due while VE_INFO was still valid: #DF.
    #[error("#DF: #VE while VE_INFO is valid")]
    DoubleFault,
    /// #PF with RSVD: GPA bits above GPAW.
    #[error("#PF (reserved bits) at GPA {gpa:#x}")]
    PageFault {
        /// The faulting GPA.
        gpa: u64,
    },
    /// The page was poisoned by a host write: the TD is now fatal.
    #[error("access to a poisoned page at GPA {gpa:#x}: the TD is fatal")]
    Fatal {
        /// The faulting GPA.
        gpa: u64,
    },
    /// A shared GPA outside the emulated physical memory.
    #[error("shared GPA {gpa:#x} is outside physical memory")]
    OutOfRange {
        /// The GPA.
        gpa: u64,
    },
}

/// A TD exit reported by an execution engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineExit {
    /// TDG.VP.VMCALL with this GPR/XMM select mask (the guest GPRs are in the vCPU state).
    Vmcall {
        /// RCX of the TDCALL.
        mask: u64,
    },
    /// Asynchronous exit.
    Async {
        /// VMX basic exit reason.
        exit_reason: u32,
        /// Exit qualification.
        exit_qualification: u64,
        /// Extended exit qualification.
        ext_exit_qualification: u64,
        /// Guest physical address.
        gpa: u64,
        /// VM-exit interruption information.
        intr_info: u32,
    },
}

/// The vCPU state an engine runs. The engine runs with the module's state mutex released;
/// guest TDCALLs go through [`EmulatedModule::guest_tdcall`], which takes it.
#[derive(Debug)]
pub struct EngineVcpu<'a> {
    /// TDVPR PA (identifies the vCPU).
    pub tdvpr: u64,
    /// TDR PA of the vCPU's TD.
    pub tdr: u64,
    /// Guest GPRs in architectural order (index 4, RSP, unused by the module). On entry they
    /// are the module's values (the VP.INIT values, or the host's answer to a TDG.VP.VMCALL
    /// with RAX = 0); the engine stores the guest's values back before it returns.
    pub gprs: &'a mut [u64; 16],
    module: &'a EmulatedModule,
}

impl EngineVcpu<'_> {
    /// The module the vCPU belongs to.
    pub fn module(&self) -> &EmulatedModule {
        self.module
    }

    /// Takes the oldest TD exit queued by a [`ScriptedVcpu`] (takes the state mutex).
    fn pop_queued(&self) -> Option<PendingExit> {
        let mut st = self.module.lock();
        st.vcpus.get_mut(&self.tdvpr)?.exits.pop_front()
    }
}

/// The seam between TDH.VP.ENTER and the thing that runs guest code. TDH.VP.ENTER makes its
/// state checks, calls `run`, and turns the returned [`EngineExit`] into its outputs.
pub trait ExecutionEngine: Send + Sync + std::fmt::Debug {
    /// Runs the vCPU until its next TD exit. Called on the thread that issued TDH.VP.ENTER,
    /// with the module's state mutex released (the vCPU is ACTIVE; its TDVPR and TDR are held
    /// shared), so the engine may call [`EmulatedModule::guest_tdcall`] and other module
    /// APIs, and other threads may issue SEAMCALLs meanwhile.
    fn run(&self, vcpu: &mut EngineVcpu<'_>) -> EngineExit;

    /// Prepares the engine for the TD whose TDR is at `tdr` before any of its vCPUs is
    /// entered: how its vCPUs start and where its shared memory is. Engines that need no
    /// per-TD state accept anything.
    fn configure_td(&self, tdr: Hpa, config: &TdEngineConfig) -> Result<(), EngineError> {
        let _ = (tdr, config);
        Ok(())
    }

    /// Forgets the TD whose TDR is at `tdr` (its KVM VM, mappings, …); called on teardown.
    fn release_td(&self, tdr: Hpa) {
        let _ = tdr;
    }

    /// Makes the current (or next) TDH.VP.ENTER of the vCPU whose TDVPR is at `tdvpr` return
    /// soon with an asynchronous EXTERNAL_INTERRUPT exit, as a host IPI does on hardware.
    fn kick(&self, tdvpr: Hpa) {
        let _ = tdvpr;
    }
}

/// What an engine needs to know about a TD before running it.
#[derive(Debug, Clone, Default)]
pub struct TdEngineConfig {
    /// How the vCPUs start.
    pub entry: crate::backend::GuestEntry,
    /// The VMM's shared backing and the TD's attribute map; shared GPAs (shared bit set) reach
    /// the pages of this memory that the map says are shared.
    pub shared: Option<tdx_memory::shared::SharedGuestMemory>,
}

/// An engine refused a TD or failed to set it up.
#[derive(Debug, thiserror::Error)]
#[error("execution engine: {0}")]
pub struct EngineError(pub String);

/// The scripted engine: returns the exits the test queued through [`ScriptedVcpu`], or an
/// external-interrupt exit when none is queued.
#[derive(Debug, Default)]
pub struct ScriptedEngine;

impl ExecutionEngine for ScriptedEngine {
    fn run(&self, vcpu: &mut EngineVcpu<'_>) -> EngineExit {
        match vcpu.pop_queued() {
            Some(PendingExit::Vmcall { regs, mask }) => {
                for n in 0..16u8 {
                    if let Some(v) = regs.gpr(n) {
                        vcpu.gprs[usize::from(n)] = v;
                    }
                }
                EngineExit::Vmcall { mask }
            }
            Some(PendingExit::Async {
                reason,
                qual,
                ext_qual,
                gpa,
            }) => EngineExit::Async {
                exit_reason: reason,
                exit_qualification: qual,
                ext_exit_qualification: ext_qual,
                gpa,
                intr_info: 0,
            },
            None => EngineExit::Async {
                exit_reason: EXIT_REASON_EXTERNAL_INTERRUPT,
                exit_qualification: 0,
                ext_exit_qualification: 0,
                gpa: 0,
                intr_info: 0,
            },
        }
    }
}

/// TDH.VP.ENTER (`td_transitions/tdh_vp_enter.c`): RCX = TDVPR PA (bits 51:12), bit 52 host
/// recoverability hint (legal only after an asynchronous trap-like exit; the emulator counts
/// external-interrupt exits as such), bit 53 resume L1 (never legal: no L2 VMs are run).
pub(crate) fn tdh_vp_enter(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let rcx = regs.rcx;
    if rcx & 0xFFF != 0 || rcx >> 54 != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let tdvpr = rcx & sept::HPA_MASK;
    let loc = st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        tdvpr,
        OperandId::RCX,
        Mode::Shared,
        pt::TDVPR,
    )?;
    let tdr = st.pamt(loc).owner;
    ctx.held.lock(
        &mut st.locks,
        LockKey::Page(tdr),
        Mode::Shared,
        OperandId::TDR,
    )?;
    if !st.tds.contains_key(&tdr) || !st.vcpus.contains_key(&tdvpr) {
        return codes::err(StatusCode::PAGE_METADATA_INCORRECT, OperandId::RCX);
    }
    st.check_td_state(
        &mut ctx.held,
        tdr,
        Some(Mode::Shared),
        &[ops::RUNNABLE, 3, 9],
    )?;
    let v = &st.vcpus[&tdvpr];
    if 1 + v.tdcx.len() < MIN_TDVPS_PAGES {
        return Err(codes::code(StatusCode::TDCX_NUM_INCORRECT));
    }
    if v.state != vs::READY {
        return Err(codes::code(StatusCode::VCPU_STATE_INCORRECT));
    }
    if v.assoc_lp.is_some_and(|lp| lp != ctx.lp) {
        return Err(codes::code(StatusCode::VCPU_ASSOCIATED));
    }
    // Bit 52 (host recoverability hint) is legal only after an asynchronous trap-like exit;
    // bit 53 (resume L1) only after an exit from L2, which the emulator never produces.
    if (rcx >> 52) & 1 != 0 && v.last_exit != LastExit::AsyncTrap {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    if (rcx >> 53) & 1 != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let newly_associated = v.assoc_lp.is_none();
    ctx.held.lock(
        &mut st.locks,
        LockKey::Epoch(tdr),
        Mode::Shared,
        OperandId::TD_EPOCH,
    )?;
    // All checks passed: associate, sample the epoch, run.
    let epoch = {
        let td = st.td_mut(tdr);
        if newly_associated {
            td.num_assoc_vcpus += 1;
        }
        let e = td.td_epoch;
        td.refcount[(e & 1) as usize] += 1;
        e
    };
    // The epoch lock is held only while sampling; the reference on the epoch lasts until the
    // vCPU leaves the guest (the end of this leaf, after its lock window): MEM.TRACK meanwhile
    // advances the epoch once, then gets PREVIOUS_TLB_EPOCH_BUSY.
    ctx.held.release_early(&mut st.locks, LockKey::Epoch(tdr));
    ctx.on_exit
        .push(super::OnExit::VcpuExit { tdr, tdvpr, epoch });
    let v = st.vcpus.get_mut(&tdvpr).expect("checked above");
    v.assoc_lp = Some(ctx.lp);
    v.epoch = epoch;
    v.vp_enter_count += 1;
    v.state = vs::ACTIVE;
    if let Some(mask) = v.vmcall_in_progress.take() {
        // GHCI response: the selected GPRs come from the host; RAX = TDX_SUCCESS to the guest.
        for n in 0..16u8 {
            if mask & (1 << n) != 0 {
                if let Some(val) = regs.gpr(n) {
                    v.gprs[usize::from(n)] = val;
                }
            }
        }
        v.gprs[0] = 0;
        let mut resp = Regs::default();
        for n in 0..16u8 {
            if let Some(r) = resp.gpr_mut(n) {
                *r = v.gprs[usize::from(n)];
            }
        }
        v.vmcall_response = Some(resp);
    }
    // The guest runs in the lock window (state mutex released): see `finish_vp_enter`.
    ctx.run = Some(super::RunRequest {
        tdr,
        tdvpr,
        gprs: v.gprs,
    });
    Ok(TdxStatus::SUCCESS)
}

/// The guest run of a TDH.VP.ENTER, in the leaf's lock window: the state mutex is released,
/// the vCPU ACTIVE, its TDVPR and TDR held shared and its epoch reference held.
pub(crate) fn run_engine(m: &EmulatedModule, run: &mut super::RunRequest) -> EngineExit {
    let engine = m.engine();
    let mut ev = EngineVcpu {
        tdvpr: run.tdvpr,
        tdr: run.tdr,
        gprs: &mut run.gprs,
        module: m,
    };
    engine.run(&mut ev)
}

/// The end of TDH.VP.ENTER, with the state mutex held again: stores the guest GPRs and
/// produces the VP.ENTER outputs of the engine's exit (see the module docs).
pub(crate) fn finish_vp_enter(
    st: &mut State,
    run: &super::RunRequest,
    exit: EngineExit,
    regs: &mut Regs,
) -> LeafResult {
    let Some(v) = st.vcpus.get_mut(&run.tdvpr) else {
        return Err(codes::code(StatusCode::VCPU_STATE_INCORRECT));
    };
    v.gprs = run.gprs;
    v.last_exit = match exit {
        EngineExit::Vmcall { .. } => LastExit::TdVmCall,
        EngineExit::Async { exit_reason, .. } if exit_reason == EXIT_REASON_EXTERNAL_INTERRUPT => {
            LastExit::AsyncTrap
        }
        EngineExit::Async { .. } => LastExit::AsyncFault,
    };
    let gprs = v.gprs;
    let out = match exit {
        EngineExit::Vmcall { mask } => {
            v.vmcall_in_progress = Some(mask);
            let mut r = Regs {
                rcx: mask,
                ..Regs::default()
            };
            for n in 2..16u8 {
                if mask & (1 << n) != 0 {
                    if let Some(x) = r.gpr_mut(n) {
                        *x = gprs[usize::from(n)];
                    }
                }
            }
            r.rax = u64::from(EXIT_REASON_TDCALL);
            r
        }
        EngineExit::Async {
            exit_reason,
            exit_qualification,
            ext_exit_qualification,
            gpa,
            intr_info,
        } => Regs {
            rax: u64::from(exit_reason),
            rcx: exit_qualification,
            rdx: ext_exit_qualification,
            r8: gpa,
            r9: u64::from(intr_info),
            ..Regs::default()
        },
    };
    *regs = out;
    Ok(TdxStatus::from_raw(out.rax))
}

/// A synthetic guest vCPU driven by a test (see the module docs for the interleaving rules).
#[derive(Debug, Clone)]
pub struct ScriptedVcpu {
    module: Arc<EmulatedModule>,
    tdvpr: u64,
    shared_base: u64,
}

impl EmulatedModule {
    /// The scripted engine's view of the vCPU whose TDVPR is at `tdvpr`.
    pub fn scripted_vcpu(self: &Arc<Self>, tdvpr: Hpa) -> ScriptedVcpu {
        ScriptedVcpu {
            module: Arc::clone(self),
            tdvpr: tdvpr.raw(),
            shared_base: 0,
        }
    }

    /// Replaces the execution engine used by TDH.VP.ENTER (default: [`ScriptedEngine`]).
    pub fn set_engine(&self, engine: Arc<dyn ExecutionEngine>) {
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = engine;
    }

    pub(crate) fn engine(&self) -> Arc<dyn ExecutionEngine> {
        Arc::clone(&self.engine.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The emulated platform's quote-signing key: HMAC-SHA-256 of a fixed label under the
    /// platform secret (so quotes made with it are tied to this platform, and the report MAC
    /// key itself is never handed out). Emulator-defined; real quotes come from Intel's
    /// quoting enclave.
    pub fn quote_signing_key(&self) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key size");
        mac.update(b"tdx-host emulated platform quote signing key");
        mac.finalize().into_bytes().into()
    }

    /// Checks the MAC of a REPORTMACSTRUCT (the first 256 bytes of a TDREPORT_STRUCT)
    /// produced by this platform's TDG.MR.REPORT: HMAC-SHA-256 keyed by the platform secret
    /// over the first [`ReportMacStruct::MAC_INPUT_LEN`] bytes.
    pub fn verify_report_mac(&self, report: &ReportMacStruct) -> bool {
        let bytes = report.as_bytes();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key size");
        mac.update(&bytes[..ReportMacStruct::MAC_INPUT_LEN]);
        mac.verify_slice(&report.mac).is_ok()
    }
}

/// The vCPU, its TD and the checks every guest action makes.
fn running(st: &mut State, tdvpr: u64) -> Option<(u64, &mut State)> {
    let tdr = st.vcpus.get(&tdvpr)?.tdr;
    let td = st.tds.get(&tdr)?;
    let v = &st.vcpus[&tdvpr];
    if td.op_state != ops::RUNNABLE || td.fatal || !(v.state == vs::READY || v.state == vs::ACTIVE)
    {
        return None;
    }
    Some((tdr, st))
}

fn shared_bit(td: &Td) -> u64 {
    if td.config.gpaw52 {
        1 << 51
    } else {
        1 << 47
    }
}

/// Result of translating a private GPA for a guest access.
enum Xlate {
    Mapped(u64),
    Pending,
    NotMapped,
}

fn translate(td: &Td, gpa: u64) -> Xlate {
    let mut level = td.sept.root_level;
    loop {
        match td.sept.walk(gpa, level) {
            Walk::Failed { .. } => return Xlate::NotMapped,
            Walk::Found { entry, .. } => {
                let s = sept::state(entry);
                if s == St::NlMapped && level > 0 {
                    level -= 1;
                    continue;
                }
                let off = gpa & ((1u64 << (12 + 9 * u32::from(level))) - 1);
                return match s {
                    St::Mapped | St::BlockedW => Xlate::Mapped(sept::hpa(entry) + off),
                    St::Pending => Xlate::Pending,
                    _ => Xlate::NotMapped,
                };
            }
        }
    }
}

impl ScriptedVcpu {
    /// TDVPR PA of this vCPU.
    pub fn tdvpr(&self) -> Hpa {
        Hpa(self.tdvpr)
    }

    /// Shared GPAs (shared bit set) access physical memory at `base + (GPA without the shared
    /// bit)` through the host view ([`super::PhysicalMemory`]); default 0 (identity).
    pub fn set_shared_base(&mut self, base: u64) {
        self.shared_base = base;
    }

    /// The registers the guest sees after the host answered its last TDG.VP.VMCALL (taken
    /// once).
    pub fn take_vmcall_response(&self) -> Option<Regs> {
        let mut st = self.module.lock();
        st.vcpus.get_mut(&self.tdvpr)?.vmcall_response.take()
    }

    /// Number of TD exits queued for the host's next VP.ENTERs.
    pub fn queued_exits(&self) -> usize {
        let st = self.module.lock();
        st.vcpus.get(&self.tdvpr).map_or(0, |v| v.exits.len())
    }

    /// Guest read (see [`GuestAccessFault`]).
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), GuestAccessFault> {
        self.access(gpa.raw(), Access::Read(buf))
    }

    /// Guest write (see [`GuestAccessFault`]).
    pub fn write(&self, gpa: Gpa, buf: &[u8]) -> Result<(), GuestAccessFault> {
        self.access(gpa.raw(), Access::Write(buf))
    }

    fn access(&self, gpa: u64, mut acc: Access<'_>) -> Result<(), GuestAccessFault> {
        let m = &self.module;
        let mut st = m.lock();
        let (tdr, st) = running(&mut st, self.tdvpr).ok_or(GuestAccessFault::NotRunning)?;
        let len = acc.len() as u64;
        let mut done = 0u64;
        while done < len {
            let g = gpa
                .checked_add(done)
                .ok_or(GuestAccessFault::PageFault { gpa })?;
            let n = (4096 - (g & 0xFFF)).min(len - done);
            let range = done as usize..(done + n) as usize;
            let td = st.td(tdr);
            let sbit = shared_bit(td);
            let bits = if td.config.gpaw52 { 52 } else { 48 };
            if g >> bits != 0 {
                return Err(GuestAccessFault::PageFault { gpa: g });
            }
            if g & sbit != 0 {
                let pa = self
                    .shared_base
                    .checked_add(g & !sbit)
                    .ok_or(GuestAccessFault::OutOfRange { gpa: g })?;
                let r = match &mut acc {
                    Access::Read(b) => m.mem.read(pa, &mut b[range]),
                    Access::Write(b) => m.mem.write(pa, &b[range]),
                };
                r.map_err(|_| GuestAccessFault::OutOfRange { gpa: g })?;
            } else {
                let write = matches!(acc, Access::Write(_));
                match translate(td, g) {
                    Xlate::Mapped(hpa) => {
                        if m.mem.is_poisoned(hpa & !0xFFF) {
                            st.td_mut(tdr).fatal = true;
                            return Err(GuestAccessFault::Fatal { gpa: g });
                        }
                        let _ = match &mut acc {
                            Access::Read(b) => m.mem.raw_read(hpa, &mut b[range]),
                            Access::Write(b) => m.mem.raw_write(hpa, &b[range]),
                        };
                    }
                    Xlate::Pending => {
                        let qual = if write { 2 } else { 1 };
                        let ve_disabled =
                            td.config.attributes & (1 << 28) != 0 || td.td_ctls & 1 != 0;
                        let v = st.vcpus.get_mut(&self.tdvpr).expect("running");
                        if ve_disabled {
                            v.exits.push_back(PendingExit::Async {
                                reason: EXIT_REASON_EPT_VIOLATION,
                                qual,
                                ext_qual: 0,
                                gpa: g,
                            });
                            return Err(GuestAccessFault::EptViolation { gpa: g });
                        }
                        if v.ve_info.valid {
                            return Err(GuestAccessFault::DoubleFault);
                        }
                        v.ve_info = super::state::VeInfoState {
                            valid: true,
                            exit_reason: EXIT_REASON_EPT_VIOLATION,
                            exit_qualification: qual,
                            gla: g,
                            gpa: g,
                            eptp_index: 0,
                            instruction_length: 0,
                            instruction_info: 0,
                        };
                        return Err(GuestAccessFault::VirtualizationException { gpa: g });
                    }
                    Xlate::NotMapped => {
                        let qual = if write { 2 } else { 1 };
                        let v = st.vcpus.get_mut(&self.tdvpr).expect("running");
                        v.exits.push_back(PendingExit::Async {
                            reason: EXIT_REASON_EPT_VIOLATION,
                            qual,
                            ext_qual: 0,
                            gpa: g,
                        });
                        return Err(GuestAccessFault::EptViolation { gpa: g });
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Issues a TDCALL as the guest on this vCPU would. RAX = leaf (bits 15:0) and version
    /// (23:16); outputs per leaf. See the module docs for VMCALL and exiting TDCALLs.
    pub fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        let shared = SharedView::Phys(self.shared_base);
        let s = match guest_tdcall_on(&self.module, self.tdvpr, &shared, regs) {
            (s, None) => s,
            (s, Some(exit)) => {
                let mut st = self.module.lock();
                if let Some(v) = st.vcpus.get_mut(&self.tdvpr) {
                    v.exits.push_back(exit);
                }
                s
            }
        };
        regs.rax = s.raw();
        s
    }
}

/// What a guest TDCALL made through [`EmulatedModule::guest_tdcall`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestTdcall {
    /// The TDCALL completed in the module with this status (also in RAX); the guest continues
    /// after the instruction.
    Done(TdxStatus),
    /// The TDCALL is a TD exit to the host. For [`EngineExit::Vmcall`] the guest continues
    /// after the instruction when the host resumes it (the host's answer arrives in the GPRs
    /// of the next VP.ENTER); for an asynchronous exit (ACCEPT of a GPA the host has not
    /// AUGed) the guest re-executes the TDCALL after the host resumes it.
    Exit(EngineExit),
}

/// How a TDCALL's shared-memory operands (REPORTDATA at a shared GPA) are read.
pub(crate) enum SharedView<'a> {
    /// Shared GPAs (without the shared bit) are at `base + GPA` of physical memory.
    Phys(u64),
    /// Shared GPAs are read through this callback (GPA without the shared bit, buffer).
    Reader(&'a (dyn Fn(u64, &mut [u8]) -> bool + Sync)),
}

impl EmulatedModule {
    /// A TDCALL issued by the guest on the vCPU whose TDVPR is at `tdvpr`, for an execution
    /// engine running it (inside TDH.VP.ENTER, with the state mutex released): takes the
    /// module's state mutex itself. RAX = leaf and version; outputs per leaf, RAX = status.
    /// Leaves that need the host (TDG.VP.VMCALL, an ACCEPT of a GPA the host has not AUGed)
    /// return [`GuestTdcall::Exit`] for the engine to end the run with.
    pub fn guest_tdcall(&self, tdvpr: Hpa, regs: &mut Regs) -> GuestTdcall {
        self.guest_tdcall_with(tdvpr.raw(), &SharedView::Phys(0), regs)
    }

    pub(crate) fn guest_tdcall_with(
        &self,
        tdvpr: u64,
        shared: &SharedView<'_>,
        regs: &mut Regs,
    ) -> GuestTdcall {
        let (s, exit) = guest_tdcall_on(self, tdvpr, shared, regs);
        match exit {
            None => {
                regs.rax = s.raw();
                GuestTdcall::Done(s)
            }
            Some(PendingExit::Vmcall { mask, .. }) => {
                GuestTdcall::Exit(EngineExit::Vmcall { mask })
            }
            Some(PendingExit::Async {
                reason,
                qual,
                ext_qual,
                gpa,
            }) => GuestTdcall::Exit(EngineExit::Async {
                exit_reason: reason,
                exit_qualification: qual,
                ext_exit_qualification: ext_qual,
                gpa,
                intr_info: 0,
            }),
        }
    }
}

/// One guest TDCALL: its status and, when it is a TD exit, the exit (not queued).
fn guest_tdcall_on(
    m: &EmulatedModule,
    tdvpr: u64,
    shared: &SharedView<'_>,
    regs: &mut Regs,
) -> (TdxStatus, Option<PendingExit>) {
    let mut g = GuestCall {
        module: m,
        tdvpr,
        shared,
        exit: None,
    };
    let s = g.tdcall_inner(regs);
    (s, g.exit)
}

/// The context of one guest TDCALL.
struct GuestCall<'a> {
    module: &'a EmulatedModule,
    tdvpr: u64,
    shared: &'a SharedView<'a>,
    /// The TD exit the TDCALL caused, if any.
    exit: Option<PendingExit>,
}

impl GuestCall<'_> {
    fn tdcall_inner(&mut self, regs: &mut Regs) -> TdxStatus {
        let rax = regs.rax;
        if rax >> 24 != 0 {
            return codes::with_operand(StatusCode::OPERAND_INVALID, OperandId::RAX);
        }
        let leaf = (rax & 0xFFFF) as u16;
        let version = ((rax >> 16) & 0xFF) as u8;
        let max_version = if leaf == G::TDG_VM_RD.raw() { 1 } else { 0 };
        if version > max_version {
            return codes::with_operand(StatusCode::OPERAND_INVALID, OperandId::RAX);
        }
        let m = self.module;
        let mut guard = m.lock();
        let Some((tdr, st)) = running(&mut guard, self.tdvpr) else {
            if let Some(td) = guard
                .vcpus
                .get(&self.tdvpr)
                .and_then(|v| guard.tds.get(&v.tdr))
            {
                if td.fatal {
                    return codes::code(StatusCode::TD_FATAL);
                }
            }
            return codes::code(StatusCode::VCPU_STATE_INCORRECT);
        };
        if let Some(forced) = m.faults.take_tdcall(leaf) {
            return forced;
        }
        let r = match leaf {
            x if x == G::TDG_VP_VMCALL.raw() => self.tdg_vp_vmcall(st, tdr, regs),
            x if x == G::TDG_VP_INFO.raw() => self.tdg_vp_info(st, tdr, regs),
            x if x == G::TDG_MR_RTMR_EXTEND.raw() => self.tdg_mr_rtmr_extend(st, tdr, regs),
            x if x == G::TDG_VP_VEINFO_GET.raw() => self.tdg_vp_veinfo_get(st, regs),
            x if x == G::TDG_MR_REPORT.raw() => self.tdg_mr_report(st, tdr, regs),
            x if x == G::TDG_VP_CPUIDVE_SET.raw() => {
                if regs.rcx >> 2 != 0 {
                    codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX)
                } else {
                    Ok(TdxStatus::SUCCESS)
                }
            }
            x if x == G::TDG_MEM_PAGE_ACCEPT.raw() => self.tdg_mem_page_accept(st, tdr, regs),
            x if x == G::TDG_VM_RD.raw() || x == G::TDG_VM_WR.raw() => {
                tdg_vm_rdwr(st, tdr, regs, leaf == G::TDG_VM_WR.raw(), version)
            }
            _ => codes::err(StatusCode::OPERAND_INVALID, OperandId::RAX),
        };
        r.unwrap_or_else(|e| e)
    }

    /// TDG.VP.VMCALL (`tdg_vp_vmcall.c`): RCX = GPR/XMM select mask.
    fn tdg_vp_vmcall(&mut self, st: &mut State, tdr: u64, regs: &mut Regs) -> LeafResult {
        let mask = regs.rcx;
        let no_rbp_mod = st.td(tdr).config.config_flags & 4 != 0;
        let forbidden = 0b1_0011 | if no_rbp_mod { 1 << 5 } else { 0 };
        if mask >> 32 != 0 || mask & forbidden != 0 {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        }
        self.exit = Some(PendingExit::Vmcall { regs: *regs, mask });
        Ok(TdxStatus::SUCCESS)
    }

    /// TDG.VP.INFO (`tdg_vp_info.c`).
    fn tdg_vp_info(&self, st: &mut State, tdr: u64, regs: &mut Regs) -> LeafResult {
        let td = st.td(tdr);
        let v = &st.vcpus[&self.tdvpr];
        regs.rcx = if td.config.gpaw52 { 52 } else { 48 };
        regs.rdx = td.config.attributes;
        regs.r8 = u64::from(td.num_vcpus) | (u64::from(td.config.max_vcpus) << 32);
        regs.r9 = u64::from(v.index);
        regs.r10 = 0;
        regs.r11 = 0;
        Ok(TdxStatus::SUCCESS)
    }

    /// TDG.VP.VEINFO.GET (`tdg_vp_veinfo_get.c`).
    fn tdg_vp_veinfo_get(&self, st: &mut State, regs: &mut Regs) -> LeafResult {
        let v = st.vcpus.get_mut(&self.tdvpr).expect("running");
        if !v.ve_info.valid {
            return Err(codes::code(StatusCode::NO_VALID_VE_INFO));
        }
        let ve = v.ve_info;
        regs.rcx = u64::from(ve.exit_reason);
        regs.rdx = ve.exit_qualification;
        regs.r8 = ve.gla;
        regs.r9 = ve.gpa;
        regs.r10 = u64::from(ve.instruction_length) | (u64::from(ve.instruction_info) << 32);
        v.ve_info.valid = false;
        Ok(TdxStatus::SUCCESS)
    }

    /// Reads private guest memory for a TDCALL operand; unmapped → OPERAND_INVALID(operand).
    fn read_private(
        &self,
        st: &mut State,
        tdr: u64,
        gpa: u64,
        buf: &mut [u8],
        operand: OperandId,
    ) -> Result<(), TdxStatus> {
        match translate(st.td(tdr), gpa) {
            Xlate::Mapped(hpa) => {
                if self.module.mem.is_poisoned(hpa & !0xFFF) {
                    st.td_mut(tdr).fatal = true;
                    return Err(codes::code(StatusCode::TD_FATAL));
                }
                self.module
                    .mem
                    .raw_read(hpa, buf)
                    .map_err(|_| codes::with_operand(StatusCode::OPERAND_INVALID, operand))
            }
            _ => codes::err(StatusCode::OPERAND_INVALID, operand),
        }
    }

    /// TDG.MR.RTMR.EXTEND (`tdg_mr_rtmr_extend.c`): RCX = GPA of 48 bytes (64-aligned,
    /// private), RDX = index 0..3.
    fn tdg_mr_rtmr_extend(&self, st: &mut State, tdr: u64, regs: &mut Regs) -> LeafResult {
        let gpa = regs.rcx;
        let td = st.td(tdr);
        if gpa % 64 != 0
            || gpa & shared_bit(td) != 0
            || gpa >> (if td.config.gpaw52 { 52 } else { 48 }) != 0
        {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        }
        let idx = regs.rdx;
        if idx > 3 {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
        }
        let mut data = [0u8; 48];
        self.read_private(st, tdr, gpa, &mut data, OperandId::RCX)?;
        let td = st.td_mut(tdr);
        td.rtmr[idx as usize] = rtmr_extend(&td.rtmr[idx as usize], &data);
        Ok(TdxStatus::SUCCESS)
    }

    /// TDG.MR.REPORT (`tdg_mr_report.c`): RCX = TDREPORT GPA (1024-aligned, private), RDX =
    /// REPORTDATA GPA (64-aligned, private or shared), R8 = subtype (0).
    fn tdg_mr_report(&self, st: &mut State, tdr: u64, regs: &mut Regs) -> LeafResult {
        let (out, data_gpa) = (regs.rcx, regs.rdx);
        let td = st.td(tdr);
        let sbit = shared_bit(td);
        if out % 1024 != 0 || out & sbit != 0 {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        }
        if data_gpa % 64 != 0 {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
        }
        if regs.r8 != 0 {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::R8);
        }
        let mut report_data = [0u8; 64];
        if data_gpa & sbit != 0 {
            let ok = match self.shared {
                SharedView::Phys(base) => {
                    let pa = base.wrapping_add(data_gpa & !sbit);
                    self.module.mem.read(pa, &mut report_data).is_ok()
                }
                SharedView::Reader(f) => f(data_gpa & !sbit, &mut report_data),
            };
            if !ok {
                return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
            }
        } else {
            self.read_private(st, tdr, data_gpa, &mut report_data, OperandId::RDX)?;
        }
        let Xlate::Mapped(out_hpa) = translate(st.td(tdr), out) else {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        };
        let report = build_report(self.module, st.td(tdr), &report_data);
        let _ = self.module.mem.raw_write(out_hpa, &report);
        Ok(TdxStatus::SUCCESS)
    }

    /// TDG.MEM.PAGE.ACCEPT (`tdg_mem_page_accept.c`): RCX = GPA+lvl (0..2). As
    /// `check_tdaccept_failure`: a guest-accessible leaf at or above the requested size →
    /// PAGE_ALREADY_ACCEPTED (its level in bits 31:0); a table at the requested level →
    /// PAGE_SIZE_MISMATCH (level); a missing table, or a non-accessible leaf (a larger PENDING
    /// page included), or a non-PENDING entry → EPT-violation TD exit (ACCEPT qualification).
    fn tdg_mem_page_accept(&mut self, st: &mut State, tdr: u64, regs: &mut Regs) -> LeafResult {
        let raw = regs.rcx;
        if raw & 0xFF8 != 0 || raw >> 52 != 0 || raw & 7 > 2 {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        }
        let req = (raw & 7) as u8;
        let gpa = raw & sept::HPA_MASK;
        let td = st.td(tdr);
        let bits = if td.config.gpaw52 { 52 } else { 48 };
        if gpa & ((1u64 << (12 + 9 * u32::from(req))) - 1) != 0
            || gpa & shared_bit(td) != 0
            || gpa >> bits != 0
        {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        }
        let mut level = td.sept.root_level;
        let (table, idx, entry) = loop {
            let (table, idx, entry) = match td.sept.walk(gpa, level) {
                Walk::Found { table, idx, entry } => (table, idx, entry),
                Walk::Failed { level: l, entry } => {
                    return Ok(self.accept_exit(st, gpa, req, l, entry));
                }
            };
            let s = sept::state(entry);
            if level > req {
                match s {
                    St::NlMapped => {
                        level -= 1;
                        continue;
                    }
                    St::Mapped | St::BlockedW => {
                        return Ok(StatusCode::PAGE_ALREADY_ACCEPTED.with_details(u32::from(level)));
                    }
                    // check_tdaccept_failure case 1.2: a non-guest-accessible leaf (a PENDING
                    // 2M page for a 4K request included) or a missing table above the
                    // requested size is an EPT violation for the host to resolve.
                    _ => return Ok(self.accept_exit(st, gpa, req, level, entry)),
                }
            }
            match s {
                St::Pending => break (table, idx, entry),
                St::Mapped | St::BlockedW => {
                    return Ok(StatusCode::PAGE_ALREADY_ACCEPTED.with_details(u32::from(level)));
                }
                St::NlMapped | St::NlBlocked => {
                    return Err(StatusCode::PAGE_SIZE_MISMATCH.with_details(u32::from(level)));
                }
                _ => return Ok(self.accept_exit(st, gpa, req, level, entry)),
            }
        };
        let mut held = Held::default();
        held.lock(
            &mut st.locks,
            LockKey::SeptEntry(tdr, gpa, req),
            Mode::Exclusive,
            OperandId::RCX,
        )?;
        held.release_all(&mut st.locks);
        let hpa = sept::hpa(entry);
        let size = 1u64 << (12 + 9 * u32::from(req));
        let _ = self.module.mem.raw_fill(hpa, size, 0);
        self.module.mem.clear_poison(hpa, size / 4096);
        st.td_mut(tdr).sept.set(table, idx, sept::mapped(hpa));
        Ok(TdxStatus::SUCCESS)
    }

    /// ACCEPT of a GPA the host has not provided: EPT-violation TD exit with the ACCEPT
    /// extended exit qualification (type 1; info: requested level 2:0, error level 5:3, SEPT
    /// state 13:6, is-leaf 14).
    fn accept_exit(
        &mut self,
        st: &mut State,
        gpa: u64,
        req: u8,
        level: u8,
        entry: u64,
    ) -> TdxStatus {
        let s = sept::state(entry);
        let info = u64::from(req)
            | (u64::from(level) << 3)
            | ((s.public() & 0xFF) << 6)
            | (u64::from(s.is_leaf()) << 14);
        let _ = st;
        self.exit = Some(PendingExit::Async {
            reason: EXIT_REASON_EPT_VIOLATION,
            qual: 2,
            ext_qual: 1 | (info << 32),
            gpa,
        });
        TDCALL_EXITED
    }
}

impl Tdcall for ScriptedVcpu {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        ScriptedVcpu::tdcall(self, regs)
    }
}

enum Access<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Access<'_> {
    fn len(&self) -> usize {
        match self {
            Access::Read(b) => b.len(),
            Access::Write(b) => b.len(),
        }
    }
}

/// TDG.VM.RD / TDG.VM.WR (`tdg_vm_rd.c`, `tdg_vm_wr.c`): RCX = VM index (0), RDX = field,
/// R8 = value, R9 = mask.
fn tdg_vm_rdwr(st: &mut State, tdr: u64, regs: &mut Regs, write: bool, version: u8) -> LeafResult {
    if regs.rcx != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let w = write.then_some((regs.r8, regs.r9));
    let (old, next) = td_field_access(st.td_mut(tdr), regs.rdx, w, true)?;
    regs.r8 = old;
    if !write && version >= 1 {
        regs.rdx = next;
    }
    Ok(TdxStatus::SUCCESS)
}

/// TEE_TCB_INFO of the emulated module (239 bytes, see the module docs).
fn tee_tcb_info() -> [u8; 239] {
    let mut t = [0u8; 239];
    t[0..8].copy_from_slice(&0xFFFEu64.to_le_bytes());
    t[8] = 1;
    t[9] = 5;
    t[10] = 1;
    t[24..72].copy_from_slice(emulated_mrseam().as_bytes());
    t
}

/// TDINFO_STRUCT (512 bytes) of a TD.
pub(crate) fn tdinfo(td: &Td) -> [u8; 512] {
    let mut t = [0u8; 512];
    t[0..8].copy_from_slice(&td.config.attributes.to_le_bytes());
    t[8..16].copy_from_slice(&td.config.xfam.to_le_bytes());
    t[16..64].copy_from_slice(td.mrtd.as_bytes());
    t[64..112].copy_from_slice(td.config.mrconfigid.as_bytes());
    t[112..160].copy_from_slice(td.config.mrowner.as_bytes());
    t[160..208].copy_from_slice(td.config.mrownerconfig.as_bytes());
    for (i, r) in td.rtmr.iter().enumerate() {
        t[208 + 48 * i..256 + 48 * i].copy_from_slice(r.as_bytes());
    }
    t
}

/// TDREPORT_STRUCT (1024 bytes).
fn build_report(m: &EmulatedModule, td: &Td, report_data: &[u8; 64]) -> [u8; 1024] {
    let mut r = [0u8; 1024];
    let tcb = tee_tcb_info();
    let info = tdinfo(td);
    r[0] = 0x81;
    r[16] = 1;
    r[17] = 5;
    r[32..80].copy_from_slice(sha384(&tcb).as_bytes());
    r[80..128].copy_from_slice(sha384(&info).as_bytes());
    r[128..192].copy_from_slice(report_data);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&m.mac_key).expect("any key size");
    mac.update(&r[..224]);
    r[224..256].copy_from_slice(&mac.finalize().into_bytes());
    r[256..495].copy_from_slice(&tcb);
    r[512..1024].copy_from_slice(&info);
    r
}

/// A TD's private memory as its S-EPT maps it (see [`EmulatedModule::sept_mappings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeptMappings {
    /// The S-EPT generation these mappings were read at.
    pub generation: u64,
    /// Guest-accessible leaves (MAPPED, or write-blocked) as `(GPA, HPA, size in bytes)`, in
    /// GPA order.
    pub pages: Vec<(u64, u64, u64)>,
}

/// What the module decided for a guest access an engine could not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestFault {
    /// The GPA is mapped now (the engine's view was stale): resync and retry.
    Retry,
    /// Deliver #VE (vector 20); VE_INFO is set.
    Ve,
    /// #VE while VE_INFO was valid: deliver #DF.
    DoubleFault,
    /// A TD exit to the host.
    Exit(EngineExit),
    /// The vCPU is not running (TD not RUNNABLE, fatal, or gone).
    NotRunning,
}

impl EmulatedModule {
    /// The S-EPT generation of the TD whose TDR is at `tdr` (changes whenever an S-EPT entry
    /// does); `None` if there is no such TD.
    pub fn sept_generation(&self, tdr: Hpa) -> Option<u64> {
        self.lock().tds.get(&tdr.raw()).map(|td| td.sept.generation)
    }

    /// The guest-accessible private mappings of the TD whose TDR is at `tdr`, for an execution
    /// engine that mirrors them; `None` if there is no such TD.
    pub fn sept_mappings(&self, tdr: Hpa) -> Option<SeptMappings> {
        let st = self.lock();
        let td = st.tds.get(&tdr.raw())?;
        let mut pages: Vec<(u64, u64, u64)> = td
            .sept
            .leaves()
            .into_iter()
            .filter(|&(_, _, e)| matches!(sept::state(e), St::Mapped | St::BlockedW))
            .map(|(gpa, level, e)| (gpa, sept::hpa(e), 1u64 << (12 + 9 * u32::from(level))))
            .collect();
        pages.sort_unstable();
        Some(SeptMappings {
            generation: td.sept.generation,
            pages,
        })
    }

    /// `(GPAW is 52, ATTRIBUTES)` of the TD whose TDR is at `tdr`.
    pub(crate) fn td_gpaw_attributes(&self, tdr: u64) -> Option<(bool, u64)> {
        let st = self.lock();
        let td = st.tds.get(&tdr)?;
        Some((td.config.gpaw52, td.config.attributes))
    }

    /// Records a #VE for the vCPU: sets VE_INFO, or reports #DF when it is still valid.
    pub(crate) fn guest_raise_ve(&self, tdvpr: u64, info: super::state::VeInfoState) -> GuestFault {
        let mut st = self.lock();
        let Some(v) = st.vcpus.get_mut(&tdvpr) else {
            return GuestFault::NotRunning;
        };
        if v.ve_info.valid {
            return GuestFault::DoubleFault;
        }
        v.ve_info = super::state::VeInfoState {
            valid: true,
            ..info
        };
        GuestFault::Ve
    }

    /// A guest access to `gpa` that the engine found unbacked (`td_ept_violation.c`): a mapped
    /// private GPA → retry (stale view); a pending one → #VE (EPT-violation exit when the TD
    /// disabled #VE for S-EPT violations), #DF if VE_INFO is still valid; any other private
    /// GPA → EPT-violation exit for the host to AUG; a shared GPA (MMIO) → #VE.
    /// `qual` is the EPT-violation qualification of the access (1 read, 2 write, 4 fetch).
    pub(crate) fn guest_ept_violation(&self, tdvpr: u64, gpa: u64, qual: u64) -> GuestFault {
        let mut st = self.lock();
        let Some((tdr, st)) = running(&mut st, tdvpr) else {
            return GuestFault::NotRunning;
        };
        let td = st.td(tdr);
        let exit = EngineExit::Async {
            exit_reason: EXIT_REASON_EPT_VIOLATION,
            exit_qualification: qual,
            ext_exit_qualification: 0,
            gpa,
            intr_info: 0,
        };
        let shared = gpa & shared_bit(td) != 0;
        if !shared {
            match translate(td, gpa) {
                Xlate::Mapped(_) => return GuestFault::Retry,
                Xlate::NotMapped => return GuestFault::Exit(exit),
                Xlate::Pending => {
                    if td.config.attributes & (1 << 28) != 0 || td.td_ctls & 1 != 0 {
                        return GuestFault::Exit(exit);
                    }
                }
            }
        }
        let Some(v) = st.vcpus.get_mut(&tdvpr) else {
            return GuestFault::NotRunning;
        };
        if v.ve_info.valid {
            return GuestFault::DoubleFault;
        }
        v.ve_info = super::state::VeInfoState {
            valid: true,
            exit_reason: EXIT_REASON_EPT_VIOLATION,
            exit_qualification: qual,
            gla: gpa,
            gpa,
            eptp_index: 0,
            instruction_length: 0,
            instruction_info: 0,
        };
        GuestFault::Ve
    }
}
