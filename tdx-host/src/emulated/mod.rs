//! The emulated TDX module: a software implementation of the SEAMCALL (and, through the scripted
//! engine, TDCALL) interface with the real module's rules and status codes, on an emulated
//! platform (a memfd arena as physical memory, CMRs, packages and logical processors, HKIDs).
//!
//! Host code reaches it only through [`tdx_abi::call::Seamcall`], implemented by
//! [`LogicalProcessor`] (one per emulated LP; the LP index is the "current CPU" for SYS.LP.INIT,
//! KEY.CONFIG / CACHE.WB per package, vCPU association) and, for convenience, by
//! [`EmulatedModule`] itself (as LP 0).
//!
//! # Fidelity
//!
//! Every leaf is one function named after the spec (`tdh_mem_page_aug`, ...) citing the module
//! source file whose checks it mirrors, in the order of emulation-notes.md §3.5–3.6:
//!
//! * Dispatcher (`tdx_vmm_dispatcher.c`): RAX bits 63:24 must be 0 and the version may not
//!   exceed the leaf's maximum (1 for MEM.SEPT.ADD/REMOVE, MNG.RD, VP.RD, VP.INIT, PROMOTE),
//!   else `TDX_OPERAND_INVALID` on RAX; unknown leaves likewise. Before SYS_READY only the
//!   SYS.* init/info leaves pass (`TDX_SYS_NOT_READY`); every leaf but SYS.INIT/LP.INIT needs
//!   SYS.LP.INIT on the calling LP.
//! * PAMT: page types NDA/RSVD/REG/TDR/TDCX/TDVPR/EPT with owner and BEPOCH, over the TDMRs of
//!   SYS.CONFIG; reserved areas and PAMT blocks are RSVD. Memory is usable once SYS.TDMR.INIT
//!   has covered it (4 MiB per call). The PAMT is kept module-side in a sparse map (absent =
//!   NDA) instead of in the PAMT blocks of the arena — the host cannot observe the difference
//!   (PAMT blocks are RSVD, host reads of them return whatever the host wrote).
//! * KOT, TD lifecycle, OP_STATE, vCPU states, SEPT entry states (1.5 encoding), TLB epochs,
//!   try-locks: see each leaf. A wrong call returns the architectural status with operand id,
//!   never a panic, for any register input.
//!
//! # Concurrency and BUSY
//!
//! One mutex serialises leaves, so a leaf is atomic. Locks that the real module holds across a
//! long operation are modelled explicitly: a vCPU inside TDH.VP.ENTER holds its TDVPR and (via
//! it) its TDR shared, so an exclusive taker (VP.FLUSH, MNG.VPFLUSHDONE, RECLAIM, ...) gets
//! `TDX_OPERAND_BUSY` with the operand id, and a vCPU running in an epoch keeps
//! `TDX_PREVIOUS_TLB_EPOCH_BUSY` for TDH.MEM.TRACK. Any other BUSY (KOT, SEPT tree, TD_EPOCH,
//! OP_STATE, …) and `TDX_INTERRUPTED_RESUMABLE` are produced on demand with the
//! [`FaultInjector`].
//!
//! # Deviations from the contract / notes (documented for the lead)
//!
//! * `PamtPageType` and `KotState` are defined here until `tdx_abi::state` lands.
//! * TDH.PHYMEM.PAGE.WBINVD accepts any PAMT type (Linux calls it right after RECLAIM, when the
//!   page is NDA); it checks alignment, TDMR and that the HKID bits name a TDX HKID.
//! * TDH.PHYMEM.CACHE.WB always completes in one call (unless a fault is injected); RCX = 1
//!   (resume) is accepted at any time.
//! * HKID bits of a PA start at bit `52 - k`, `k` = bits needed for `first_tdx_hkid +
//!   num_tdx_hkids`; TDMRs/PAMTs must lie below that (the `max_pa_bits` of the validator).
//! * MEM.PAGE.REMOVE while RUNNABLE: MAPPED/BLOCKEDW need blocking first, PENDING may be removed
//!   directly, BLOCKED/PENDING_BLOCKED must be tracked.
//! * TD_PARAMS: NUM_L2_VMS must be 0 (no TD partitioning, operand 71); every CPUID bit is
//!   configurable; IA32_ARCH_CAPABILITIES_CONFIG must be 0 (operand 72); other reserved bytes
//!   give OPERAND_INVALID on RDX.
//! * API shapes until `tdx_abi::phys`/`gpa`/`report` are used here: `scripted_vcpu` takes the
//!   TDVPR as `u64`, [`ScriptedVcpu::read`]/[`ScriptedVcpu::write`] take a GPA as `u64`,
//!   `verify_report_mac` takes the 256 REPORTMACSTRUCT bytes; `lp()` returns `Option`. Extras:
//!   [`EmulatedModule::hkid_shift`], [`LogicalProcessor::index`], [`InjectedFault`].
//! * VP.INIT associates the vCPU with the calling LP (`associate_vcpu_initial`, confirmed in the
//!   1.5 source), so VP.FLUSH must run on that LP even if the vCPU never entered.
//! * TDCALL memory operands (REPORT, RTMR.EXTEND data) must be mapped private GPAs; otherwise
//!   OPERAND_INVALID on that register (the module would walk and possibly exit). Shared GPAs are
//!   not modelled by the scripted engine.
//! * REPORTMACSTRUCT: CPUSVN 0; TEE_TCB_INFO is emulator-defined (VALID = 0xFFFE, TEE_TCB_SVN
//!   {5, 1}, MRSEAM = SHA-384 of a fixed string, MRSIGNERSEAM/ATTRIBUTES 0); MAC =
//!   HMAC-SHA-256 over bytes 0..224 keyed by [`PlatformConfig::report_mac_key`].
//! * TDH.VP.ENTER on a vCPU without an attached execution engine returns at once with an
//!   asynchronous exit, VMX exit reason 1 (external interrupt): the vCPU was "kicked" before it
//!   ran a single instruction.

mod abi_shim;
mod arena;
mod guest;
mod mem;
mod sept;
mod state;
mod sys;
mod td;
mod vp;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::status::TdxStatus;

use abi_shim::*;
pub use guest::{GuestAccessFault, ScriptedVcpu};
pub use state::{KotState, PamtPageType};
use state::{LeafResult, State, SysState};

/// Configuration of the emulated platform.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    /// Bytes of emulated physical memory (PA `0..memory_size`), a multiple of 4 KiB.
    pub memory_size: u64,
    /// Convertible memory ranges (base, size), 4 KiB aligned, inside the arena.
    pub cmrs: Vec<(u64, u64)>,
    /// Number of packages (sockets), 1..=64.
    pub num_packages: u32,
    /// Logical processors per package, at least 1.
    pub lps_per_package: u32,
    /// First TDX private KeyID.
    pub first_tdx_hkid: u16,
    /// Number of TDX private KeyIDs (at least 2: the global one and one for a TD).
    pub num_tdx_hkids: u16,
    /// Per-platform secret keying the REPORTMACSTRUCT MAC (HMAC-SHA-256).
    pub report_mac_key: [u8; 32],
}

impl Default for PlatformConfig {
    /// 256 MiB, one CMR `[1 MiB, 256 MiB)`, 1 package × 2 LPs, HKIDs 32..48, a random MAC key.
    fn default() -> Self {
        let memory_size = 256 << 20;
        PlatformConfig {
            memory_size,
            cmrs: vec![(1 << 20, memory_size - (1 << 20))],
            num_packages: 1,
            lps_per_package: 2,
            first_tdx_hkid: 32,
            num_tdx_hkids: 16,
            report_mac_key: random_key(),
        }
    }
}

/// A per-process random key (no RNG dependency: std's randomly seeded SipHash keys).
fn random_key() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

/// Why an emulated platform could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EmulatedError {
    /// The configuration is inconsistent.
    #[error("invalid platform configuration: {0}")]
    Config(String),
    /// Creating the memfd arena failed.
    #[error("cannot create the physical-memory arena: {0}")]
    Arena(#[from] std::io::Error),
}

/// Error of a host physical-memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhysMemError {
    /// The range is not inside the emulated physical memory.
    #[error("physical range {pa:#x}+{len:#x} is outside memory")]
    OutOfRange {
        /// Start PA.
        pa: u64,
        /// Length in bytes.
        len: u64,
    },
}

/// A fault the [`FaultInjector`] forces on a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// `TDX_OPERAND_BUSY` with this operand id (e.g. 1 = RCX, 146 = SEPT tree, 169 = TD_EPOCH).
    Busy {
        /// Operand id in the low 32 bits.
        operand: u32,
    },
    /// `TDX_INTERRUPTED_RESUMABLE` (the leaf did nothing; call it again).
    InterruptedResumable,
}

impl InjectedFault {
    fn status(self) -> u64 {
        match self {
            InjectedFault::Busy { operand } => status(OPERAND_BUSY, operand),
            InjectedFault::InterruptedResumable => status(INTERRUPTED_RESUMABLE, 0),
        }
    }
}

/// Forces faults on the next calls of a leaf, so host retry paths can be tested. A forced call
/// has no other effect; it is counted after the dispatcher's RAX and readiness checks.
#[derive(Debug, Default)]
pub struct FaultInjector {
    queue: Mutex<HashMap<u16, VecDeque<InjectedFault>>>,
}

impl FaultInjector {
    /// Makes the next `count` calls of SEAMCALL leaf `leaf` fail with `fault`.
    pub fn inject(&self, leaf: u16, fault: InjectedFault, count: u32) {
        let mut q = lock(&self.queue);
        let e = q.entry(leaf).or_default();
        for _ in 0..count {
            e.push_back(fault);
        }
    }

    /// Removes every pending fault.
    pub fn clear(&self) {
        lock(&self.queue).clear();
    }

    pub(crate) fn take(&self, leaf: u16) -> Option<InjectedFault> {
        lock(&self.queue)
            .get_mut(&leaf)
            .and_then(VecDeque::pop_front)
    }
}

/// Locks a mutex, recovering from poisoning (a panicking test thread must not wedge the module).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A broken module invariant found by [`EmulatedModule::check_invariants`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct InvariantViolation(pub String);

/// The host's access to emulated physical memory. Reads of a page the PAMT says a TD owns (REG,
/// TDR, TDCX, TDVPR, EPT) return zeros; writes to such a page poison it (the TD's next access is
/// fatal) and do not change it. Other pages read and write normally.
pub struct PhysicalMemory {
    arena: Arc<arena::Arena>,
    state: Arc<Mutex<State>>,
    cmrs: Vec<(u64, u64)>,
}

fn td_owned(t: Option<PamtPageType>) -> bool {
    matches!(
        t,
        Some(
            PamtPageType::Reg
                | PamtPageType::Tdr
                | PamtPageType::Tdcx
                | PamtPageType::Tdvpr
                | PamtPageType::Ept
        )
    )
}

impl PhysicalMemory {
    /// Reads `buf.len()` bytes at `pa` (zeros for TD-owned pages).
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysMemError> {
        let st = lock(&self.state);
        if !self.arena.read(pa, buf) {
            return Err(PhysMemError::OutOfRange {
                pa,
                len: buf.len() as u64,
            });
        }
        let mut off = 0usize;
        while off < buf.len() {
            let cur = pa + off as u64;
            let n = ((4096 - (cur & 0xFFF)) as usize).min(buf.len() - off);
            if td_owned(st.page_type(cur)) {
                buf[off..off + n].fill(0);
            }
            off += n;
        }
        Ok(())
    }

    /// Writes `buf` at `pa`; TD-owned pages are poisoned instead of written.
    pub fn write(&self, pa: u64, buf: &[u8]) -> Result<(), PhysMemError> {
        let mut st = lock(&self.state);
        let oor = PhysMemError::OutOfRange {
            pa,
            len: buf.len() as u64,
        };
        if pa
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.arena.size())
        {
            return Err(oor);
        }
        let mut off = 0usize;
        while off < buf.len() {
            let cur = pa + off as u64;
            let n = ((4096 - (cur & 0xFFF)) as usize).min(buf.len() - off);
            if td_owned(st.page_type(cur)) {
                st.poisoned.insert(cur & !0xFFF);
            } else {
                self.arena.write(cur, &buf[off..off + n]);
            }
            off += n;
        }
        Ok(())
    }

    /// Size of physical memory in bytes.
    pub fn size(&self) -> u64 {
        self.arena.size()
    }

    /// The CMRs (base, size).
    pub fn cmrs(&self) -> Vec<(u64, u64)> {
        self.cmrs.clone()
    }
}

/// The emulated TDX module and its platform. `Send + Sync`; share it as `Arc`.
pub struct EmulatedModule {
    state: Arc<Mutex<State>>,
    phys: PhysicalMemory,
    faults: FaultInjector,
    report_mac_key: [u8; 32],
    num_lps: u32,
    lps_per_package: u32,
    pub(crate) engines: vp::Engines,
}

/// One logical processor of the platform: issues SEAMCALLs as that LP.
#[derive(Clone)]
pub struct LogicalProcessor {
    module: Arc<EmulatedModule>,
    index: u32,
}

impl LogicalProcessor {
    /// The LP index.
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl Seamcall for LogicalProcessor {
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
        self.module.seamcall_on(self.index, regs)
    }
}

impl Seamcall for EmulatedModule {
    /// A SEAMCALL on LP 0.
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
        self.seamcall_on(0, regs)
    }
}

/// Maximum version of each implemented SEAMCALL leaf (`None` = unknown leaf).
fn max_version(leaf: u16) -> Option<u8> {
    Some(match leaf {
        TDH_MEM_SEPT_ADD | TDH_MEM_SEPT_REMOVE | TDH_MNG_RD | TDH_VP_RD | TDH_VP_INIT
        | TDH_MEM_PAGE_PROMOTE => 1,
        0..=45 => 0,
        _ => return None,
    })
}

impl EmulatedModule {
    /// Creates a platform with its module in SYSINIT_PENDING.
    pub fn new(cfg: PlatformConfig) -> Result<Arc<Self>, EmulatedError> {
        let bad = |s: &str| Err(EmulatedError::Config(s.to_string()));
        if cfg.num_packages == 0 || cfg.num_packages > 64 || cfg.lps_per_package == 0 {
            return bad("need 1..=64 packages and at least one LP per package");
        }
        let Some(num_lps) = cfg.num_packages.checked_mul(cfg.lps_per_package) else {
            return bad("too many logical processors");
        };
        if cfg.num_tdx_hkids < 2 {
            return bad("need at least two TDX HKIDs");
        }
        let Some(hkid_end) = u32::from(cfg.first_tdx_hkid).checked_add(cfg.num_tdx_hkids.into())
        else {
            return bad("HKID range overflows");
        };
        if cfg.first_tdx_hkid == 0 || hkid_end > 1 << 15 {
            return bad("HKID range must be within 1..32768");
        }
        let keyid_bits = 32 - (hkid_end - 1).leading_zeros();
        let hkid_shift = 52 - keyid_bits;
        if cfg.memory_size >> hkid_shift != 0 {
            return bad("memory reaches into the HKID bits");
        }
        for &(b, s) in &cfg.cmrs {
            if b % 4096 != 0
                || s % 4096 != 0
                || s == 0
                || b.checked_add(s).is_none_or(|e| e > cfg.memory_size)
            {
                return bad("every CMR must be 4 KiB aligned, non-empty and inside memory");
            }
        }
        if cfg.cmrs.len() > 32 {
            return bad("at most 32 CMRs");
        }
        let arena = Arc::new(arena::Arena::new(cfg.memory_size)?);
        let state = State {
            num_lps,
            lps_per_package: cfg.lps_per_package,
            num_packages: cfg.num_packages,
            first_tdx_hkid: cfg.first_tdx_hkid,
            num_tdx_hkids: cfg.num_tdx_hkids,
            hkid_shift,
            cmrs: cfg.cmrs.clone(),
            sys_state: SysState::SysinitPending,
            lp_init: vec![false; num_lps as usize],
            pkg_key_config: vec![false; cfg.num_packages as usize],
            global_hkid: None,
            tdmrs: Vec::new(),
            pamt: BTreeMap::new(),
            kot: vec![(KotState::Free, 0); hkid_end as usize],
            tds: HashMap::new(),
            vcpus: HashMap::new(),
            sept_pages: HashMap::new(),
            poisoned: HashSet::new(),
            arena: arena.clone(),
        };
        let state = Arc::new(Mutex::new(state));
        Ok(Arc::new(EmulatedModule {
            phys: PhysicalMemory {
                arena,
                state: state.clone(),
                cmrs: cfg.cmrs.clone(),
            },
            state,
            faults: FaultInjector::default(),
            report_mac_key: cfg.report_mac_key,
            num_lps,
            lps_per_package: cfg.lps_per_package,
            engines: vp::Engines::default(),
        }))
    }

    /// Logical processor `index`, or `None` if out of range.
    pub fn lp(self: &Arc<Self>, index: u32) -> Option<LogicalProcessor> {
        (index < self.num_lps).then(|| LogicalProcessor {
            module: self.clone(),
            index,
        })
    }

    /// Number of logical processors.
    pub fn num_lps(&self) -> u32 {
        self.num_lps
    }

    /// The package of LP `lp`.
    pub fn package_of(&self, lp: u32) -> u32 {
        lp / self.lps_per_package
    }

    /// The host's view of physical memory.
    pub fn physical_memory(&self) -> &PhysicalMemory {
        &self.phys
    }

    /// The fault-injection knobs.
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// The PAMT type of the frame at `pa` (`None` outside TDMRs or before TDMR.INIT covers it).
    pub fn page_type(&self, pa: u64) -> Option<PamtPageType> {
        lock(&self.state).page_type(pa & !0xFFF)
    }

    /// The KOT state of `hkid` (`None` outside the TDX HKID range).
    pub fn hkid_state(&self, hkid: u16) -> Option<KotState> {
        let st = lock(&self.state);
        st.is_private_hkid(hkid.into())
            .then(|| st.kot[usize::from(hkid)].0)
    }

    /// The HKID-bit shift of this platform: a PA with KeyID `k` is `pa | (k << shift)`.
    pub fn hkid_shift(&self) -> u32 {
        lock(&self.state).hkid_shift
    }

    pub(crate) fn report_mac_key(&self) -> &[u8; 32] {
        &self.report_mac_key
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Checks the module's invariants: every TD-owned frame belongs to an existing TD, PAMT and
    /// S-EPT agree (every REG/EPT frame is referenced by exactly one entry of its owner's SEPT
    /// and vice versa), CHLDCNT equals the frames each TD owns, KOT and TDs agree.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let st = lock(&self.state);
        let v = |s: String| Err(InvariantViolation(s));
        let mut owned: HashMap<u64, u64> = HashMap::new();
        for (&pfn, e) in &st.pamt {
            let pa = pfn << 12;
            match e.ty {
                PamtPageType::Tdr => {
                    if !st.tds.contains_key(&pa) {
                        return v(format!("TDR frame {pa:#x} without a TD"));
                    }
                }
                PamtPageType::Nda | PamtPageType::Rsvd => {}
                _ => {
                    if !st.tds.contains_key(&e.owner) {
                        return v(format!("frame {pa:#x} owned by missing TDR {:#x}", e.owner));
                    }
                    *owned.entry(e.owner).or_default() += 1;
                }
            }
        }
        // Frames referenced by SEPT entries.
        let mut referenced: HashMap<u64, u64> = HashMap::new();
        for (&tdr, td) in &st.tds {
            if owned.get(&tdr).copied().unwrap_or(0) != td.chldcnt {
                return v(format!(
                    "TD {tdr:#x}: CHLDCNT {} but {} frames owned",
                    td.chldcnt,
                    owned.get(&tdr).copied().unwrap_or(0)
                ));
            }
            let kot = st.kot.get(usize::from(td.hkid)).map(|k| k.0);
            let want = match td.lifecycle {
                state::Lifecycle::HkidAssigned | state::Lifecycle::KeysConfigured => {
                    Some(KotState::Assigned)
                }
                state::Lifecycle::Blocked => Some(KotState::Flushed),
                state::Lifecycle::Teardown => None,
            };
            if want.is_some() && kot != want {
                return v(format!("TD {tdr:#x}: KOT state {kot:?}, expected {want:?}"));
            }
            // After TDH.MNG.VPFLUSHDONE pages are reclaimed in any order: the S-EPT is dead.
            if !matches!(
                td.lifecycle,
                state::Lifecycle::HkidAssigned | state::Lifecycle::KeysConfigured
            ) {
                continue;
            }
            let Some(root) = td.sept_root() else { continue };
            let mut stack = vec![root];
            while let Some(page) = stack.pop() {
                let Some(p) = st.sept_pages.get(&page) else {
                    return v(format!("SEPT page {page:#x} missing"));
                };
                for &e in p.iter() {
                    let s = sept::State::of(e);
                    if matches!(s, sept::State::NlMapped | sept::State::NlBlocked) {
                        let c = sept::hpa(e);
                        *referenced.entry(c).or_default() += 1;
                        let pe = st.pamt_entry(c);
                        if pe.ty != PamtPageType::Ept || pe.owner != tdr {
                            return v(format!("SEPT child {c:#x} has PAMT {pe:?}"));
                        }
                        stack.push(c);
                    } else if s.is_leaf() {
                        let h = sept::hpa(e);
                        *referenced.entry(h).or_default() += 1;
                        let pe = st.pamt_entry(h);
                        if pe.ty != PamtPageType::Reg || pe.owner != tdr {
                            return v(format!("SEPT leaf {h:#x} has PAMT {pe:?}"));
                        }
                    }
                }
            }
        }
        for (&pfn, e) in &st.pamt {
            let pa = pfn << 12;
            if matches!(e.ty, PamtPageType::Reg | PamtPageType::Ept)
                && e.head == pa
                && st.tds.get(&e.owner).is_some_and(|t| {
                    t.lifecycle != state::Lifecycle::Teardown
                        && t.lifecycle != state::Lifecycle::Blocked
                })
                && referenced.get(&pa).copied().unwrap_or(0) != 1
            {
                return v(format!(
                    "{:?} frame {pa:#x} referenced {} times by the SEPT",
                    e.ty,
                    referenced.get(&pa).copied().unwrap_or(0)
                ));
            }
        }
        for (hkid, (s, _)) in st.kot.iter().enumerate() {
            if *s == KotState::Assigned && !st.tds.values().any(|t| usize::from(t.hkid) == hkid) {
                return v(format!("HKID {hkid} ASSIGNED without a TD"));
            }
        }
        Ok(())
    }

    /// Runs one SEAMCALL as LP `lp`.
    fn seamcall_on(self: &EmulatedModule, lp: u32, regs: &mut Regs) -> TdxStatus {
        let status = self.dispatch(lp, regs);
        regs.rax = status;
        TdxStatus::from_raw(status)
    }

    fn dispatch(&self, lp: u32, regs: &mut Regs) -> u64 {
        let rax = regs.rax;
        let leaf = (rax & 0xFFFF) as u16;
        let version = ((rax >> 16) & 0xFF) as u8;
        if rax >> 24 != 0 || max_version(leaf).is_none_or(|m| version > m) {
            return status(OPERAND_INVALID, OP_RAX);
        }
        if leaf == TDH_VP_ENTER {
            return vp::tdh_vp_enter(self, lp, regs);
        }
        let mut st = lock(&self.state);
        let pre_ready = matches!(
            leaf,
            TDH_SYS_INFO
                | TDH_SYS_RD
                | TDH_SYS_RDALL
                | TDH_SYS_INIT
                | TDH_SYS_LP_INIT
                | TDH_SYS_CONFIG
                | TDH_SYS_KEY_CONFIG
                | TDH_SYS_LP_SHUTDOWN
                | TDH_SYS_UPDATE
        );
        if st.sys_state != SysState::SysReady && !pre_ready {
            return abi_shim::status(SYS_NOT_READY, 0);
        }
        if !matches!(leaf, TDH_SYS_INIT | TDH_SYS_LP_INIT)
            && st.sys_state != SysState::SysinitPending
            && !st.lp_init.get(lp as usize).copied().unwrap_or(false)
        {
            return abi_shim::status(SYS_LP_INIT_NOT_DONE, 0);
        }
        if let Some(f) = self.faults.take(leaf) {
            return f.status();
        }
        let r: LeafResult = match leaf {
            TDH_SYS_INIT => sys::tdh_sys_init(&mut st, regs),
            TDH_SYS_LP_INIT => sys::tdh_sys_lp_init(&mut st, lp),
            TDH_SYS_RD => sys::tdh_sys_rd(&mut st, lp, regs),
            TDH_SYS_RDALL => sys::tdh_sys_rdall(&mut st, lp, regs),
            TDH_SYS_CONFIG => sys::tdh_sys_config(&mut st, regs),
            TDH_SYS_KEY_CONFIG => sys::tdh_sys_key_config(&mut st, lp),
            TDH_SYS_TDMR_INIT => sys::tdh_sys_tdmr_init(&mut st, regs),
            TDH_MNG_CREATE => td::tdh_mng_create(&mut st, regs),
            TDH_MNG_KEY_CONFIG => td::tdh_mng_key_config(&mut st, lp, regs),
            TDH_MNG_ADDCX => td::tdh_mng_addcx(&mut st, regs),
            TDH_MNG_INIT => td::tdh_mng_init(&mut st, regs),
            TDH_MNG_RD => td::tdh_mng_rd(&mut st, regs),
            TDH_MNG_WR => td::tdh_mng_wr(&mut st, regs),
            TDH_VP_CREATE => td::tdh_vp_create(&mut st, regs),
            TDH_VP_ADDCX => td::tdh_vp_addcx(&mut st, regs),
            TDH_VP_INIT => td::tdh_vp_init(&mut st, lp, regs),
            TDH_VP_RD => td::tdh_vp_rd(&mut st, regs),
            TDH_VP_WR => td::tdh_vp_wr(&mut st, regs),
            TDH_VP_FLUSH => td::tdh_vp_flush(&mut st, lp, regs),
            TDH_MNG_VPFLUSHDONE => td::tdh_mng_vpflushdone(&mut st, regs),
            TDH_PHYMEM_CACHE_WB => td::tdh_phymem_cache_wb(&mut st, lp, regs),
            TDH_MNG_KEY_FREEID => td::tdh_mng_key_freeid(&mut st, regs),
            TDH_MNG_KEY_RECLAIMID => Ok(0),
            TDH_PHYMEM_PAGE_RECLAIM => td::tdh_phymem_page_reclaim(&mut st, regs),
            TDH_PHYMEM_PAGE_WBINVD => td::tdh_phymem_page_wbinvd(&mut st, regs),
            TDH_PHYMEM_PAGE_RDMD => td::tdh_phymem_page_rdmd(&mut st, regs),
            TDH_MEM_SEPT_ADD => mem::tdh_mem_sept_add(&mut st, version, regs),
            TDH_MEM_PAGE_ADD => mem::tdh_mem_page_add(&mut st, regs),
            TDH_MR_EXTEND => mem::tdh_mr_extend(&mut st, regs),
            TDH_MR_FINALIZE => mem::tdh_mr_finalize(&mut st, regs),
            TDH_MEM_PAGE_AUG => mem::tdh_mem_page_aug(&mut st, regs),
            TDH_MEM_RANGE_BLOCK => mem::tdh_mem_range_block(&mut st, regs),
            TDH_MEM_TRACK => mem::tdh_mem_track(&mut st, regs),
            TDH_MEM_RANGE_UNBLOCK => mem::tdh_mem_range_unblock(&mut st, regs),
            TDH_MEM_PAGE_REMOVE => mem::tdh_mem_page_remove(&mut st, regs),
            TDH_MEM_SEPT_REMOVE => mem::tdh_mem_sept_remove(&mut st, regs),
            TDH_MEM_SEPT_RD => mem::tdh_mem_sept_rd(&mut st, regs),
            // Leaves of the numbering that this emulator does not implement (SYS.INFO, MEM.RD/WR,
            // PROMOTE/DEMOTE/RELOCATE, SEPT.WR, SYS.LP.SHUTDOWN, ...).
            _ => Err(abi_shim::status(OPERAND_INVALID, OP_RAX)),
        };
        match r {
            Ok(s) | Err(s) => s,
        }
    }
}

#[cfg(test)]
mod tests;
