//! The KVM execution engine: runs a TD's guest code as an ordinary KVM guest, with the
//! emulated module deciding what the TDX CPU would.
//!
//! One KVM VM per TD (set up by [`ExecutionEngine::configure_td`], dropped by
//! [`ExecutionEngine::release_td`]); one KVM vCPU per TDVPR, created on its first TDH.VP.ENTER
//! in the entry state the TD was configured with. Each TDH.VP.ENTER runs the vCPU on the
//! caller's thread until the next TD exit.
//!
//! # Entry states
//! * [`GuestEntry::ResetVector`]: the TDX initial state for firmware, as the TDX module's
//!   `td_vmcs_init.c` sets it (32-bit protected mode, paging off, flat segments, RIP
//!   0xFFFF_FFF0; details in `cpu::apply_entry`).
//! * [`GuestEntry::Long64 { rip, cr3 }`](GuestEntry::Long64) (emulated backend only, for ELF
//!   payloads): 64-bit mode at CPL 0; CS selector 0x08 (64-bit code, base 0), DS/ES/FS/GS/SS
//!   selector 0x10 (flat data); CR0 = PE | MP | ET | NE | WP | PG, CR4 = PAE | OSFXSR |
//!   OSXMMEXCPT, EFER = LME | LMA | NXE, CR3 = `cr3`, RIP = `rip`, RFLAGS = 0x2 (interrupts
//!   off); GDTR and IDTR base 0 limit 0 (the payload loads its own before it needs them; the
//!   selectors above are what it should put in its GDT); RSP = 0.
//!
//! In both, the GPRs are the TDX initial values from TDH.VP.INIT (tdx-module-abi.md, VP.INIT;
//! `tdh_vp_init.c`): RBX = GPAW (48 or 52), RCX = R8 = the host's VP.INIT RDX (the TD HOB
//! GPA by convention), RDX = CPUID(1).EAX, RSI = vCPU index, all others 0.
//!
//! # Memory
//! See [`memory`]: private GPAs as the S-EPT maps them (holes everywhere else), shared GPAs at
//! GPA | bit 47 from the VMM's shared backing as its attribute map says. GPAW-52 TDs are
//! refused: the guest has a 48-bit MAXPHYADDR here, so bit 51 cannot be the shared bit. The
//! mirror is resynchronised before each KVM_RUN when the S-EPT or attribute generation moved
//! (so after every VP.ENTER and after guest ACCEPTs); a stale mapping until then is the TLB
//! semantics of real hardware.
//!
//! # Exits
//! * Guest TDCALL by the three paths of [`tdx_abi::emulator`] → [`EmulatedModule::guest_tdcall`];
//!   TDG.VP.VMCALL ends the run with [`EngineExit::Vmcall`]; an ACCEPT the host must serve
//!   ends it with the EPT-violation exit and the guest re-executes the TDCALL when resumed.
//! * `KVM_EXIT_MMIO` (no memslot): the module decides (pending private page → #VE, or an
//!   EPT-violation exit when SEPT_VE_DISABLE is set, #DF when VE_INFO is still valid;
//!   unmapped private → EPT-violation exit with the GPA; shared GPA without memory → #VE
//!   with VE_INFO for `TDVMCALL<MMIO>`). The access is completed with `immediate_exit` and the
//!   registers saved before it restored, so the guest's RIP stays on the instruction.
//! * Port I/O to other ports → #VE (exit reason 30, the I/O exit qualification), HLT → #VE
//!   (exit reason 12), as a TDX CPU does for these instructions.
//! * `KVM_EXIT_SHUTDOWN` (triple fault) and instructions KVM cannot emulate → the exit
//!   [`EXIT_REASON_TRIPLE_FAULT`] (2), which the backend reports as a shutdown.
//! * [`ExecutionEngine::kick`] from another thread → EXTERNAL_INTERRUPT (1) exit: the kicker
//!   sets the vCPU's `immediate_exit` and signals the running thread with
//!   [`kick_signal`] (SIGRTMIN + 4; a no-op handler is installed without `SA_RESTART`, so a
//!   process that embeds the engine must leave that signal to it).
//!
//! # Limits and deviations
//! * VE_INFO.GLA is the GPA (KVM does not report the linear address of an MMIO exit).
//! * KVM's instruction emulator commits RIP before an MMIO-*write* exit; the engine finds the
//!   store that ends at RIP by decoding backwards (`insn`), a heuristic for the common integer
//!   store forms. An MMIO write it cannot place ends the run with a triple-fault exit.
//! * The I/O #VE qualification has size, direction, port and the immediate-operand bit; string
//!   and REP I/O are not distinguished.
//! * Guest accesses to poisoned pages are not detected (the module's poison rule applies to
//!   the scripted engine and to TDCALL operands only).
//! * Private GPAs at or above [`memory::PRIVATE_WINDOW`] (1 TiB) are never mapped.
//! * The S-EPT mirror re-lists the TD's mapped leaves when the S-EPT generation moved (cost
//!   proportional to the TD's S-EPT size, then only changed pages and runs touch KVM).
//! * An engine failure (a KVM ioctl, an unplaceable MMIO write, a TD the engine was not
//!   configured for) is logged with `tracing::error!` and reported as a triple-fault exit.

mod cpu;
mod insn;
pub mod memory;

pub use cpu::{apply_entry, LONG64_CR0, LONG64_CR4, LONG64_CS, LONG64_DS, LONG64_EFER, RESET_RIP};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use kvm_bindings::{kvm_regs, kvm_sregs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use tdx_abi::call::Regs;
use tdx_abi::emulator::{ExceptionFrame, TDCALL_DOORBELL_PORT, TDCALL_OPCODE, UD_FORWARD_PORT};
use tdx_abi::phys::Hpa;
use tdx_memory::shared::SharedGuestMemory;
use vm_memory::{Bytes, GuestAddress};

use super::guest::{
    EngineError, EngineExit, EngineVcpu, ExecutionEngine, GuestFault, GuestTdcall, SharedView,
    TdEngineConfig, EXIT_REASON_EXTERNAL_INTERRUPT,
};
use super::state::VeInfoState;
use super::EmulatedModule;
use crate::backend::GuestEntry;
use memory::TdMemory;

/// VMX exit reason the engine reports for a triple fault (and for guest code it cannot run).
pub const EXIT_REASON_TRIPLE_FAULT: u32 = 2;
/// VMX exit reason of HLT (the #VE exit reason for HLT).
pub const EXIT_REASON_HLT: u32 = 12;
/// VMX exit reason of I/O instructions (the #VE exit reason for IN/OUT).
pub const EXIT_REASON_IO: u32 = 30;

/// The signal that interrupts a running KVM_RUN on a kick (SIGRTMIN + 4).
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

const GP_VECTOR: u8 = 13;
const DF_VECTOR: u8 = 8;
const VE_VECTOR: u8 = 20;

fn kerr(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError(format!("{what}: {e}"))
}

/// One KVM vCPU.
#[derive(Debug)]
struct KvmVcpu {
    fd: Mutex<VcpuFd>,
    /// `&kvm_run.immediate_exit` (the vCPU's mmapped run structure; lives as long as `fd`).
    immediate_exit: usize,
    /// The thread inside KVM_RUN, if any (guarded so a kicker signals a live thread).
    runner: Mutex<Option<libc::pthread_t>>,
}

/// One TD's KVM VM.
#[derive(Debug)]
struct KvmTd {
    // Field order matters for drop: the vCPUs and the VM go before the memory they map.
    vcpus: Mutex<HashMap<u64, Arc<KvmVcpu>>>,
    vm: VmFd,
    mem: Mutex<TdMemory>,
    entry: GuestEntry,
    shared: Option<SharedGuestMemory>,
    cpuid: kvm_bindings::CpuId,
}

/// The KVM execution engine (see the module docs).
#[derive(Debug)]
pub struct KvmEngine {
    module: Weak<EmulatedModule>,
    kvm: Kvm,
    tds: Mutex<HashMap<u64, Arc<KvmTd>>>,
    /// Kicks not yet consumed, by TDVPR.
    kicks: Mutex<HashSet<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

extern "C" fn noop_handler(_: libc::c_int) {}

pub(crate) fn install_kick_handler() -> Result<(), EngineError> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we install a
        // handler that does nothing (async-signal-safe) for a real-time signal the engine owns.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop_handler as *const () as usize;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
        }
        Ok(())
    })
    .clone()
    .map_err(|e| {
        EngineError(format!(
            "installing the kick signal handler (SIGRTMIN+4): {e}"
        ))
    })
}

impl KvmEngine {
    /// Opens `/dev/kvm` and checks that a VM can be created; the error says why KVM is
    /// unusable. Install the engine with [`EmulatedModule::set_engine`].
    pub fn new(module: &Arc<EmulatedModule>) -> Result<Arc<KvmEngine>, EngineError> {
        let kvm = Kvm::new().map_err(|e| kerr("opening /dev/kvm", e))?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(EngineError(format!("KVM API version {api}, need 12")));
        }
        drop(
            kvm.create_vm()
                .map_err(|e| kerr("KVM_CREATE_VM (default VM type)", e))?,
        );
        install_kick_handler()?;
        Ok(Arc::new(KvmEngine {
            module: Arc::downgrade(module),
            kvm,
            tds: Mutex::new(HashMap::new()),
            kicks: Mutex::new(HashSet::new()),
        }))
    }

    fn td(&self, tdr: u64) -> Option<Arc<KvmTd>> {
        lock(&self.tds).get(&tdr).cloned()
    }

    fn vcpu(
        &self,
        m: &EmulatedModule,
        tdr: u64,
        td: &KvmTd,
        tdvpr: u64,
    ) -> Result<(Arc<KvmVcpu>, bool), EngineError> {
        let mut vcpus = lock(&td.vcpus);
        if let Some(v) = vcpus.get(&tdvpr) {
            return Ok((Arc::clone(v), false));
        }
        // configure_td may have run before TDH.MNG.INIT fixed the GPAW.
        if m.td_gpaw_attributes(tdr).is_some_and(|(g52, _)| g52) {
            return Err(EngineError(format!(
                "TD {tdr:#x} has GPAW 52: its shared bit 51 is outside this guest's 48-bit \
                 MAXPHYADDR"
            )));
        }
        let id = vcpus.len() as u64;
        let mut fd = td
            .vm
            .create_vcpu(id)
            .map_err(|e| kerr(&format!("KVM_CREATE_VCPU {id}"), e))?;
        fd.set_cpuid2(&td.cpuid)
            .map_err(|e| kerr("KVM_SET_CPUID2", e))?;
        let mut sregs: kvm_sregs = fd.get_sregs().map_err(|e| kerr("KVM_GET_SREGS", e))?;
        let mut regs = kvm_regs::default();
        cpu::apply_entry(&td.entry, &mut sregs, &mut regs);
        fd.set_sregs(&sregs).map_err(|e| kerr("KVM_SET_SREGS", e))?;
        fd.set_regs(&regs).map_err(|e| kerr("KVM_SET_REGS", e))?;
        let immediate_exit = &mut fd.get_kvm_run().immediate_exit as *mut u8 as usize;
        let v = Arc::new(KvmVcpu {
            fd: Mutex::new(fd),
            immediate_exit,
            runner: Mutex::new(None),
        });
        vcpus.insert(tdvpr, Arc::clone(&v));
        Ok((v, true))
    }

    fn take_kick(&self, tdvpr: u64) -> bool {
        lock(&self.kicks).remove(&tdvpr)
    }
}

impl ExecutionEngine for KvmEngine {
    fn run(&self, vcpu: &mut EngineVcpu<'_>) -> EngineExit {
        match self.run_inner(vcpu) {
            Ok(exit) => exit,
            Err(e) => {
                tracing::error!(tdvpr = vcpu.tdvpr, "KVM engine: {e}; reporting a shutdown");
                async_exit(EXIT_REASON_TRIPLE_FAULT, 0, 0)
            }
        }
    }

    fn configure_td(&self, tdr: Hpa, config: &TdEngineConfig) -> Result<(), EngineError> {
        let m = self
            .module
            .upgrade()
            .ok_or_else(|| EngineError("the emulated module is gone".into()))?;
        let gpaw52 = match (&config.shared, m.td_gpaw_attributes(tdr.raw())) {
            (_, Some((g, _))) => g,
            (Some(s), None) => s.gpaw() == tdx_abi::gpa::Gpaw::Gpaw52,
            (None, None) => false,
        };
        if gpaw52 {
            return Err(EngineError(format!(
                "TD {:#x}: GPAW 52 puts the shared bit at 51, outside this guest's 48-bit \
                 MAXPHYADDR; the KVM engine runs GPAW-48 TDs only",
                tdr.raw()
            )));
        }
        let shared_bit = 1u64 << 47;
        let vm = self.kvm.create_vm().map_err(|e| kerr("KVM_CREATE_VM", e))?;
        // Intel needs a TSS area for real-mode emulation; harmless elsewhere.
        let _ = vm.set_tss_address(0xFFFB_D000);
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| kerr("KVM_GET_SUPPORTED_CPUID", e))?;
        let max_slots = u32::try_from(self.kvm.get_nr_memslots()).unwrap_or(u32::MAX);
        let mut mem = TdMemory::new(shared_bit, max_slots)?;
        if let Some(s) = &config.shared {
            mem.sync_shared(&vm, s)?;
        }
        let td = Arc::new(KvmTd {
            vcpus: Mutex::new(HashMap::new()),
            vm,
            mem: Mutex::new(mem),
            entry: config.entry,
            shared: config.shared.clone(),
            cpuid,
        });
        let old = lock(&self.tds).insert(tdr.raw(), td);
        if let Some(old) = old {
            lock(&old.mem).release(&old.vm);
        }
        Ok(())
    }

    fn release_td(&self, tdr: Hpa) {
        let td = lock(&self.tds).remove(&tdr.raw());
        if let Some(td) = td {
            let mut kicks = lock(&self.kicks);
            for tdvpr in lock(&td.vcpus).keys() {
                kicks.remove(tdvpr);
            }
            drop(kicks);
            lock(&td.mem).release(&td.vm);
        }
    }

    fn kick(&self, tdvpr: Hpa) {
        let tdvpr = tdvpr.raw();
        lock(&self.kicks).insert(tdvpr);
        let tds: Vec<Arc<KvmTd>> = lock(&self.tds).values().cloned().collect();
        for td in tds {
            let Some(v) = lock(&td.vcpus).get(&tdvpr).cloned() else {
                continue;
            };
            let runner = lock(&v.runner);
            // SAFETY: `immediate_exit` points into the vCPU's kvm_run mapping, alive as long as
            // `v` (we hold an Arc); KVM documents writing it from another thread to stop
            // KVM_RUN, and the byte is only accessed atomically by the engine.
            unsafe { &*(v.immediate_exit as *const AtomicU8) }.store(1, Ordering::SeqCst);
            if let Some(thread) = *runner {
                // SAFETY: `thread` is inside the run loop (it clears `runner` under this lock
                // before leaving), so it is alive; the signal has a no-op handler.
                unsafe {
                    libc::pthread_kill(thread, kick_signal());
                }
            }
        }
    }
}

fn async_exit(reason: u32, qual: u64, gpa: u64) -> EngineExit {
    EngineExit::Async {
        exit_reason: reason,
        exit_qualification: qual,
        ext_exit_qualification: 0,
        gpa,
        intr_info: 0,
    }
}

/// A KVM exit, copied out of the run structure.
enum Exit {
    Io { port: u16, size: u8, is_in: bool },
    Mmio { gpa: u64, write: bool },
    Hlt,
    Shutdown,
    Internal,
    Interrupted,
    Other(String),
}

fn classify(r: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> Exit {
    match r {
        Ok(VcpuExit::IoOut(port, data)) => Exit::Io {
            port,
            size: data.len() as u8,
            is_in: false,
        },
        Ok(VcpuExit::IoIn(port, data)) => Exit::Io {
            port,
            size: data.len() as u8,
            is_in: true,
        },
        Ok(VcpuExit::MmioRead(gpa, _)) => Exit::Mmio { gpa, write: false },
        Ok(VcpuExit::MmioWrite(gpa, _)) => Exit::Mmio { gpa, write: true },
        Ok(VcpuExit::Hlt) => Exit::Hlt,
        Ok(VcpuExit::Shutdown) => Exit::Shutdown,
        Ok(VcpuExit::InternalError) => Exit::Internal,
        Ok(VcpuExit::Intr) => Exit::Interrupted,
        Ok(other) => Exit::Other(format!("{other:?}")),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Interrupted,
        Err(e) => Exit::Other(format!("KVM_RUN failed: {e}")),
    }
}

/// Translates a guest-virtual address with the guest's paging (4-level long mode or none).
fn translate(mem: &TdMemory, sregs: &kvm_sregs, va: u64) -> Option<u64> {
    if sregs.cr0 & (1 << 31) == 0 {
        return Some(va & 0xFFFF_FFFF);
    }
    if sregs.efer & 0x400 == 0 {
        return None; // 32-bit paging: not used by TD code the engine traps for
    }
    const MASK: u64 = 0x000F_FFFF_FFFF_F000;
    let mut table = sregs.cr3 & MASK;
    for shift in [39u32, 30, 21, 12] {
        let e = mem.read_u64(table + ((va >> shift) & 511) * 8)?;
        if e & 1 == 0 {
            return None;
        }
        let page = 1u64 << shift;
        if shift == 12 || ((shift == 30 || shift == 21) && e & 0x80 != 0) {
            return Some((e & MASK & !(page - 1)) | (va & (page - 1)));
        }
        table = e & MASK;
    }
    None
}

/// Reads guest-virtual memory (false if any page is unmapped).
fn read_virt(mem: &TdMemory, sregs: &kvm_sregs, va: u64, buf: &mut [u8]) -> bool {
    let mut done = 0usize;
    while done < buf.len() {
        let a = va.wrapping_add(done as u64);
        let n = ((4096 - (a & 0xFFF)) as usize).min(buf.len() - done);
        let Some(gpa) = translate(mem, sregs, a) else {
            return false;
        };
        if !mem.read(gpa, &mut buf[done..done + n]) {
            return false;
        }
        done += n;
    }
    true
}

fn to_regs(k: &kvm_regs) -> Regs {
    let g = cpu::store_gprs(k);
    let mut r = Regs::default();
    for n in 0..16u8 {
        if let Some(x) = r.gpr_mut(n) {
            *x = g[usize::from(n)];
        }
    }
    r
}

fn from_regs(k: &mut kvm_regs, r: &Regs) {
    let mut g = cpu::store_gprs(k);
    for n in 0..16u8 {
        if let Some(x) = r.gpr(n) {
            g[usize::from(n)] = x;
        }
    }
    cpu::load_gprs(k, &g);
}

/// One guest run of one vCPU.
struct Runner<'a> {
    engine: &'a KvmEngine,
    m: &'a EmulatedModule,
    td: &'a KvmTd,
    v: &'a KvmVcpu,
    fd: &'a mut VcpuFd,
    tdr: u64,
    tdvpr: u64,
}

/// Consecutive MMIO exits at a GPA the module says is mapped before the engine gives up.
const MAX_STALE_RETRIES: u32 = 4;

impl KvmEngine {
    fn run_inner(&self, ev: &mut EngineVcpu<'_>) -> Result<EngineExit, EngineError> {
        let m = ev.module();
        let td = self.td(ev.tdr).ok_or_else(|| {
            EngineError(format!(
                "TD {:#x} was not configured for the KVM engine (configure_td)",
                ev.tdr
            ))
        })?;
        let (v, _) = self.vcpu(m, ev.tdr, &td, ev.tdvpr)?;
        let mut fd = lock(&v.fd);
        let mut regs = fd.get_regs().map_err(|e| kerr("KVM_GET_REGS", e))?;
        cpu::load_gprs(&mut regs, ev.gprs);
        fd.set_regs(&regs).map_err(|e| kerr("KVM_SET_REGS", e))?;
        let mut r = Runner {
            engine: self,
            m,
            td: &td,
            v: &v,
            fd: &mut fd,
            tdr: ev.tdr,
            tdvpr: ev.tdvpr,
        };
        let exit = r.run_loop()?;
        let regs = fd.get_regs().map_err(|e| kerr("KVM_GET_REGS", e))?;
        *ev.gprs = cpu::store_gprs(&regs);
        Ok(exit)
    }
}

impl Runner<'_> {
    fn set_immediate_exit(&self, val: u8) {
        // SAFETY: see `KvmEngine::kick`: the byte lives in this vCPU's kvm_run mapping, which
        // `self.fd` keeps alive; all engine accesses to it are atomic.
        unsafe { &*(self.v.immediate_exit as *const AtomicU8) }.store(val, Ordering::SeqCst);
    }

    fn get_regs(&self) -> Result<kvm_regs, EngineError> {
        self.fd.get_regs().map_err(|e| kerr("KVM_GET_REGS", e))
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<(), EngineError> {
        self.fd.set_regs(regs).map_err(|e| kerr("KVM_SET_REGS", e))
    }

    fn get_sregs(&self) -> Result<kvm_sregs, EngineError> {
        self.fd.get_sregs().map_err(|e| kerr("KVM_GET_SREGS", e))
    }

    /// Brings the VM's memory in step with the S-EPT and the attribute map.
    fn sync(&self, force: bool) -> Result<(), EngineError> {
        let tdr = Hpa(self.tdr);
        let generation = self
            .m
            .sept_generation(tdr)
            .ok_or_else(|| EngineError(format!("TD {:#x} is gone", self.tdr)))?;
        if force || lock(&self.td.mem).sept_generation() != Some(generation) {
            let maps = self
                .m
                .sept_mappings(tdr)
                .ok_or_else(|| EngineError(format!("TD {:#x} is gone", self.tdr)))?;
            let mut mem = lock(&self.td.mem);
            // Another vCPU may have mirrored a newer generation meanwhile.
            if force || mem.sept_generation().is_none_or(|g| g < maps.generation) {
                mem.sync_private(&self.td.vm, self.m.physical_memory().arena_fd(), &maps)?;
            }
        }
        if let Some(s) = &self.td.shared {
            let mut mem = lock(&self.td.mem);
            if mem.shared_generation() != Some(s.attributes().generation()) {
                mem.sync_shared(&self.td.vm, s)?;
            }
        }
        Ok(())
    }

    /// Completes a pending I/O or MMIO exit (KVM_RUN with `immediate_exit`), so registers can
    /// be rewritten and events injected afterwards.
    fn complete(&mut self) {
        self.set_immediate_exit(1);
        let _ = self.fd.run();
        self.set_immediate_exit(0);
    }

    fn inject(&self, vector: u8, error_code: Option<u32>) -> Result<(), EngineError> {
        let mut ev = self
            .fd
            .get_vcpu_events()
            .map_err(|e| kerr("KVM_GET_VCPU_EVENTS", e))?;
        ev.exception.injected = 1;
        ev.exception.pending = 0;
        ev.exception.nr = vector;
        ev.exception.has_error_code = u8::from(error_code.is_some());
        ev.exception.error_code = error_code.unwrap_or(0);
        self.fd
            .set_vcpu_events(&ev)
            .map_err(|e| kerr(&format!("KVM_SET_VCPU_EVENTS (vector {vector})"), e))
    }

    /// Delivers the module's decision on a fault; `Some` ends the run.
    fn deliver(&self, f: GuestFault) -> Result<Option<EngineExit>, EngineError> {
        match f {
            GuestFault::Ve => self.inject(VE_VECTOR, None).map(|_| None),
            GuestFault::DoubleFault => self.inject(DF_VECTOR, Some(0)).map(|_| None),
            GuestFault::Exit(e) => Ok(Some(e)),
            GuestFault::Retry => Ok(None),
            GuestFault::NotRunning => Ok(Some(async_exit(EXIT_REASON_EXTERNAL_INTERRUPT, 0, 0))),
        }
    }

    fn raise_ve(
        &self,
        exit_reason: u32,
        qual: u64,
        len: u32,
    ) -> Result<Option<EngineExit>, EngineError> {
        let f = self.m.guest_raise_ve(
            self.tdvpr,
            VeInfoState {
                valid: true,
                exit_reason,
                exit_qualification: qual,
                gla: 0,
                gpa: 0,
                eptp_index: 0,
                instruction_length: len,
                instruction_info: 0,
            },
        );
        self.deliver(f)
    }

    /// Performs a guest TDCALL with `regs`; the guest resumes at `after` (completed, or a
    /// VMCALL the host answers) or re-executes at `at` (exit the host must serve first).
    fn tdcall(
        &self,
        regs: &mut kvm_regs,
        after: u64,
        at: u64,
    ) -> Result<Option<EngineExit>, EngineError> {
        let shared = self.td.shared.clone();
        let reader = move |gpa: u64, buf: &mut [u8]| {
            shared
                .as_ref()
                .is_some_and(|s| s.view().read_slice(buf, GuestAddress(gpa)).is_ok())
        };
        let mut r = to_regs(regs);
        let out = match self
            .m
            .guest_tdcall_with(self.tdvpr, &SharedView::Reader(&reader), &mut r)
        {
            GuestTdcall::Done(_) => {
                from_regs(regs, &r);
                regs.rip = after;
                None
            }
            GuestTdcall::Exit(e @ EngineExit::Vmcall { .. }) => {
                regs.rip = after;
                Some(e)
            }
            GuestTdcall::Exit(e) => {
                regs.rip = at;
                Some(e)
            }
        };
        self.set_regs(regs)?;
        // ACCEPT changes the S-EPT: mirror it before the guest touches the page.
        if out.is_none() {
            self.sync(false)?;
        }
        Ok(out)
    }
}

impl Runner<'_> {
    fn run_loop(&mut self) -> Result<EngineExit, EngineError> {
        self.sync(false)?;
        let mut stale = 0u32;
        loop {
            if self.engine.take_kick(self.tdvpr) {
                self.set_immediate_exit(0);
                return Ok(async_exit(EXIT_REASON_EXTERNAL_INTERRUPT, 0, 0));
            }
            self.sync(false)?;
            // SAFETY: pthread_self has no preconditions.
            *lock(&self.v.runner) = Some(unsafe { libc::pthread_self() });
            let exit = classify(self.fd.run());
            *lock(&self.v.runner) = None;
            let done = match exit {
                Exit::Interrupted => {
                    // A kick (handled at the top) or a stray signal: clear a stale request.
                    self.set_immediate_exit(0);
                    None
                }
                Exit::Io { port, size, is_in } => self.on_io(port, size, is_in)?,
                Exit::Mmio { gpa, write } => {
                    let mut regs = self.get_regs()?;
                    self.complete();
                    if write {
                        regs.rip = self.write_start(regs.rip, gpa)?;
                    }
                    self.set_regs(&regs)?;
                    let f = self
                        .m
                        .guest_ept_violation(self.tdvpr, gpa, if write { 2 } else { 1 });
                    if f == GuestFault::Retry {
                        stale += 1;
                        if stale > MAX_STALE_RETRIES {
                            return Err(EngineError(format!(
                                "GPA {gpa:#x} is mapped in the S-EPT but cannot be mapped \
                                 into the KVM VM (beyond the {:#x}-byte private window?)",
                                memory::PRIVATE_WINDOW
                            )));
                        }
                        self.sync(true)?;
                        continue;
                    }
                    self.deliver(f)?
                }
                Exit::Hlt => {
                    let mut regs = self.get_regs()?;
                    regs.rip = regs.rip.wrapping_sub(1);
                    self.set_regs(&regs)?;
                    self.raise_ve(EXIT_REASON_HLT, 0, 1)?
                }
                Exit::Shutdown => Some(async_exit(EXIT_REASON_TRIPLE_FAULT, 0, 0)),
                Exit::Internal => self.on_internal()?,
                Exit::Other(what) => {
                    return Err(EngineError(format!("unexpected KVM exit: {what}")));
                }
            };
            stale = 0;
            if let Some(e) = done {
                return Ok(e);
            }
        }
    }

    fn on_io(
        &mut self,
        port: u16,
        size: u8,
        is_in: bool,
    ) -> Result<Option<EngineExit>, EngineError> {
        if !is_in && port == u16::from(TDCALL_DOORBELL_PORT) {
            self.complete();
            let mut regs = self.get_regs()?;
            // `out imm8, al` (E6 ib) is two bytes.
            let (after, at) = (regs.rip, regs.rip.wrapping_sub(2));
            return self.tdcall(&mut regs, after, at);
        }
        if !is_in && port == u16::from(UD_FORWARD_PORT) {
            self.complete();
            return self.ud_forward();
        }
        // Any other port: #VE with the I/O exit qualification, RIP left on the instruction.
        // Depending on the KVM path RIP is on or after the instruction at exit time, but it is
        // after it once the exit is completed; the GPRs from before completion are kept (an
        // IN would otherwise load data no device provided).
        let mut regs = self.get_regs()?;
        self.complete();
        let after = self.get_regs()?.rip;
        let sregs = self.get_sregs()?;
        let mut tail = [0u8; 3];
        let mem = lock(&self.td.mem);
        let read = read_virt(&mem, &sregs, after.wrapping_sub(3), &mut tail);
        drop(mem);
        let imm_op = matches!(tail[1], 0xE4..=0xE7) && u16::from(tail[2]) == port;
        let (imm, len) = if read && imm_op {
            (true, 2 + u32::from(tail[0] == 0x66))
        } else {
            (false, 1 + u32::from(read && tail[1] == 0x66))
        };
        regs.rip = after.wrapping_sub(u64::from(len));
        self.set_regs(&regs)?;
        let qual = u64::from(size.saturating_sub(1) & 7)
            | (u64::from(is_in) << 3)
            | (u64::from(imm) << 6)
            | (u64::from(port) << 16);
        self.raise_ve(EXIT_REASON_IO, qual, len)
    }

    /// RIP of the memory-writing instruction that ends at `after` (KVM committed RIP before
    /// the MMIO-write exit; see the `insn` module).
    fn write_start(&self, after: u64, gpa: u64) -> Result<u64, EngineError> {
        let sregs = self.get_sregs()?;
        let mem = lock(&self.td.mem);
        // Up to 15 bytes, not reaching back into a page that may be unmapped.
        let mut tail = [0u8; 15];
        let mut n = 15usize;
        if !read_virt(&mem, &sregs, after.wrapping_sub(15), &mut tail) {
            n = 15.min((after & 0xFFF) as usize);
            if !read_virt(
                &mem,
                &sregs,
                after.wrapping_sub(n as u64),
                &mut tail[15 - n..],
            ) {
                n = 0;
            }
        }
        drop(mem);
        let len = insn::write_len_before(&tail[15 - n..]).ok_or_else(|| {
            EngineError(format!(
                "MMIO write to GPA {gpa:#x}: no store instruction found before RIP {after:#x} \
                 (bytes {:02x?})",
                &tail[15 - n..]
            ))
        })?;
        Ok(after.wrapping_sub(len as u64))
    }

    /// The `#UD` forward (see `tdx_abi::emulator`): RSP points at the `#UD` frame.
    fn ud_forward(&mut self) -> Result<Option<EngineExit>, EngineError> {
        let mut regs = self.get_regs()?;
        let mut sregs = self.get_sregs()?;
        let mut raw = [0u8; ExceptionFrame::SIZE];
        let mut insn = [0u8; 4];
        let mem = lock(&self.td.mem);
        let ok = read_virt(&mem, &sregs, regs.rsp, &mut raw);
        let frame = ExceptionFrame::from_bytes(&raw);
        let is_tdcall =
            ok && read_virt(&mem, &sregs, frame.rip, &mut insn) && insn == TDCALL_OPCODE;
        if !is_tdcall {
            return Ok(None); // a genuine #UD: the handler goes on
        }
        if frame.cpl() == 0 {
            drop(mem);
            regs.rsp = frame.rsp;
            regs.rflags = frame.rflags;
            let (after, at) = (frame.rip.wrapping_add(4), frame.rip);
            return self.tdcall(&mut regs, after, at);
        }
        // TDCALL above ring 0: unwind the frame (as IRET would) and raise #GP(0) at it.
        let desc = |sel: u64| -> u64 {
            let idx = sel & !7;
            if idx == 0 || idx + 7 > u64::from(sregs.gdt.limit) {
                return 0;
            }
            let mut b = [0u8; 8];
            if read_virt(&mem, &sregs, sregs.gdt.base + idx, &mut b) {
                u64::from_le_bytes(b)
            } else {
                0
            }
        };
        let (cs_desc, ss_desc) = (desc(frame.cs), desc(frame.ss));
        drop(mem);
        sregs.cs = cpu::seg_from_descriptor(frame.cs as u16, cs_desc);
        sregs.ss = cpu::seg_from_descriptor(frame.ss as u16, ss_desc);
        regs.rip = frame.rip;
        regs.rsp = frame.rsp;
        regs.rflags = frame.rflags;
        self.fd
            .set_sregs(&sregs)
            .map_err(|e| kerr("KVM_SET_SREGS", e))?;
        self.set_regs(&regs)?;
        self.inject(GP_VECTOR, Some(0))?;
        Ok(None)
    }

    /// `KVM_EXIT_INTERNAL_ERROR`: a TDCALL KVM could not emulate (the trapped real opcode).
    fn on_internal(&mut self) -> Result<Option<EngineExit>, EngineError> {
        let (suberror, ndata, data) = {
            let run = self.fd.get_kvm_run();
            // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
            // member of the exit union.
            let i = unsafe { run.__bindgen_anon_1.internal };
            (i.suberror, i.ndata, i.data)
        };
        let mut regs = self.get_regs()?;
        let sregs = self.get_sregs()?;
        let mut insn = [0u8; 4];
        // KVM_INTERNAL_ERROR_EMULATION with the instruction-bytes flag: data[0] = flags,
        // then insn_size (1 byte) and the bytes.
        let from_exit = suberror == 1 && ndata >= 2 && data[0] & 1 != 0 && {
            let b = data[1].to_le_bytes();
            b[0] >= 4 && {
                insn.copy_from_slice(&b[1..5]);
                true
            }
        };
        if !from_exit {
            let mem = lock(&self.td.mem);
            if !read_virt(&mem, &sregs, regs.rip, &mut insn) {
                // No instruction bytes in guest memory: a fetch from a GPA without memory,
                // which the module resolves like any EPT violation (qualification: fetch).
                let gpa = (0..4u64).find_map(|k| {
                    let va = regs.rip.wrapping_add(k);
                    let g = translate(&mem, &sregs, va)?;
                    (!mem.read(g, &mut [0u8])).then_some(g)
                });
                drop(mem);
                if let Some(gpa) = gpa {
                    let f = self.m.guest_ept_violation(self.tdvpr, gpa, 4);
                    if f == GuestFault::Retry {
                        self.sync(true)?;
                    }
                    return self.deliver(f);
                }
                insn = [0; 4];
            }
        }
        if insn != TDCALL_OPCODE {
            tracing::warn!(
                suberror,
                rip = regs.rip,
                bytes = ?insn,
                "KVM could not run a guest instruction; reporting a shutdown"
            );
            return Ok(Some(async_exit(EXIT_REASON_TRIPLE_FAULT, 0, 0)));
        }
        if sregs.cs.selector & 3 != 0 || sregs.cs.dpl != 0 {
            self.inject(GP_VECTOR, Some(0))?;
            return Ok(None);
        }
        let (after, at) = (regs.rip.wrapping_add(4), regs.rip);
        self.tdcall(&mut regs, after, at)
    }
}
