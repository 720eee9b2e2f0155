//! The emulated TDX module: a software implementation of the SEAMCALL and TDCALL interfaces
//! with the real module's rules and status codes, on an emulated platform.
//!
//! # Platform
//! [`PlatformConfig`] describes the machine: physical memory (a memfd arena, PA
//! `0..memory_size`), CMRs, packages × LPs, the TDX private HKID range and the per-platform
//! secret that keys TDREPORT MACs. [`EmulatedModule::new`] builds it; host code reaches the
//! module only through SEAMCALLs issued on a [`LogicalProcessor`]
//! (`tdx_abi::call::Seamcall`), and reaches memory only through [`PhysicalMemory`], whose
//! TD-owner rule hides private pages (see [`phys`]).
//!
//! # Fidelity
//! Each leaf handler is one function that makes the module's checks in the module's order
//! (emulation-notes.md §3.5/§3.6; the source file of the 1.5 module is named next to it) and
//! returns the architectural status with its operand id; no register value can make it panic
//! (all arithmetic is checked, every index bounded, every loop bounded by the module's
//! limits). The dispatcher decodes RAX as the module does: bits 63:24 non-zero, an unknown
//! leaf or a version above the leaf's maximum → `TDX_OPERAND_INVALID` (operand RAX); every
//! leaf except the SYS init/enumeration family → `TDX_SYS_NOT_READY` until the last
//! TDH.SYS.KEY.CONFIG (in that order, as `tdx_vmm_dispatcher.c`: an unknown leaf number is
//! refused only after the readiness check). SYS.RD/RDALL check TDH.SYS.LP.INIT on the calling
//! LP themselves; every other LP is initialised before SYS.CONFIG can succeed.
//!
//! Locks are try-locks (see [`FaultInjector`] and the `locks` module): contention returns
//! `TDX_OPERAND_BUSY` with the operand id. A leaf takes its locks in the module's order while
//! it checks, applies its effects atomically, and keeps the locks for a short window after
//! them when another SEAMCALL is in flight, so concurrent host threads see BUSY (a lone
//! caller pays nothing); [`FaultInjector`] forces BUSY /
//! INTERRUPTED_RESUMABLE and can pause a leaf inside that window for deterministic tests.
//!
//! # Facts checked against the 1.5 source (`intel/tdx-module`, tag TDX_1.5.01)
//! Where the fact sheets and the source differ, the source wins: TDH.PHYMEM.PAGE.WBINVD wants
//! a PT_NDA page (`check_and_lock_explicit_4k_private_hpa(.., PT_NDA, ..)`); TDH.SYS.LP.INIT is
//! legal only in SYSINIT_DONE (`TDX_SYS_LP_INIT_NOT_PENDING` after SYS.CONFIG); TDH.VP.INIT
//! associates the vCPU with the calling LP (`associate_vcpu_initial`); TDH.SYS.TDMR.INIT
//! returns RDX rounded down to 1 GiB and memory becomes usable per completed 1 GiB block;
//! GPA_RANGE_ALREADY_BLOCKED carries operand RCX; METADATA_FIELD_ID_INCORRECT carries none;
//! TDH.MR.EXTEND reports EPT_ENTRY_NOT_PRESENT; a PENDING page needs blocking + tracking
//! before TDH.MEM.PAGE.REMOVE while RUNNABLE (`tlb_tracking_required` of state 0x70); the
//! TD_PARAMS checks follow `read_and_set_td_configurations` (MAX_VCPUS only rejects 0;
//! MIGRATABLE excludes DEBUG and PERFMON). Also from the source: shared HPAs (TD_PARAMS,
//! TDMR_INFO arrays, the RDALL buffer, the PAGE.ADD source) may carry a shared KeyID and are
//! accessed with a host key; non-leaf S-EPT entries are RWX+SVE and report only RWX/PS in RCX;
//! every leaf carries SVE; TDG.MEM.PAGE.ACCEPT of a page smaller than a PENDING leaf is an
//! EPT-violation exit (`check_tdaccept_failure` case 1.2), PAGE_SIZE_MISMATCH only for a table
//! at the requested level; GPA_RANGE_ALREADY_BLOCKED returns the entry details; MNG.ADDCX
//! checks OP_STATE only after locking the new page; VP.FLUSH and VP.RD/WR need the full TDVPS
//! (TDCX_NUM_INCORRECT); MNG.RD/WR take the TDR shared and need the TDCS for every field;
//! TDH.MEM.SEPT.ADD reads bit 0 of RDX as "allow existing" in any version and ignores bit 63
//! of R8; TDH.VP.ENTER's RCX bit 52 needs a trap-like last exit and bit 53 an L2 exit.
//!
//! # Deviations from the real module (documented choices)
//! * No encryption: private pages are plain bytes in the arena, hidden from the host by the
//!   TD-owner rule. S-EPT tables live in module memory (see the `sept` module); PAMT entries
//!   are kept by the module, not written into the PAMT areas named in TDMR_INFO.
//! * TD_PARAMS: the CPUID configuration check is the "configurable bits" check against the
//!   emulator's CPUID_CONFIG table ([`sys`]); the per-leaf consistency rules of
//!   `read_and_set_cpuid_configurations` are not reproduced. NUM_L2_VMS 1..3 is accepted (with
//!   the extra TDCS pages) but TD partitioning is not emulated.
//! * The REPORTMACSTRUCT MAC is emulator-defined (HMAC-SHA-256, see [`guest`]).
//! * Host-priority lock bits (BUSY_HOST_PRIORITY) are not modelled; the guest-side ACCEPT takes
//!   the S-EPT entry lock like a host leaf.
//! * TDH.PHYMEM.CACHE.WB completes in one call; RCX = 1 (resume) is accepted at any time.
//! * TDH.SYS.INFO (1.0 enumeration), TDH.MEM.PAGE.PROMOTE/DEMOTE/RELOCATE, TDH.MEM.RD/WR,
//!   export/import and service-TD leaves are not implemented (`TDX_OPERAND_INVALID` on RAX);
//!   TDG.VP.RD/WR and TDG.SYS.RD likewise (TDX_FEATURES0 does not advertise them).
//! * TDCALL memory operands (RTMR.EXTEND data, REPORT buffers) must be mapped private GPAs
//!   (REPORTDATA may be shared); otherwise OPERAND_INVALID on that register.
//!
//! # Contract deviations (tdx-host/emulated-contract)
//! * [`EmulatedModule::lp`] returns `Option<LogicalProcessor>` (None out of range).
//! * [`PamtPageType`] and [`KotState`] are `tdx_abi::state`'s (re-exported).
//! * Extras: [`EmulatedModule::hkid_shift`], [`EmulatedModule::page_owner`],
//!   [`EmulatedModule::locks_held`], [`EmulatedModule::set_engine`] with the
//!   [`ExecutionEngine`] seam, [`FaultInjector::pause_in_lock_window`],
//!   [`ScriptedVcpu::take_vmcall_response`], [`PhysicalMemory::is_poisoned`].
//! * Engines: TDH.VP.ENTER runs its engine with the state mutex released (see [`guest`]);
//!   guest TDCALLs enter through [`EmulatedModule::guest_tdcall`]; engines that mirror guest
//!   memory read [`EmulatedModule::sept_mappings`] / [`EmulatedModule::sept_generation`].
//!   [`kvm::KvmEngine`] runs real guest code under KVM.

pub(crate) mod codes;
pub mod guest;
mod invariants;
pub mod kvm;
pub(crate) mod locks;
mod mem;
pub mod phys;
pub(crate) mod sept;
pub(crate) mod state;
pub mod sys;
mod td;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::status::TdxStatus;

pub use guest::{
    EngineError, EngineExit, EngineVcpu, ExecutionEngine, GuestAccessFault, GuestTdcall,
    ScriptedEngine, ScriptedVcpu, SeptMappings, TdEngineConfig,
};
pub use locks::{Fault, FaultInjector};
pub use phys::{PhysMemError, PhysicalMemory};
pub use tdx_abi::state::{KotState, PamtPageType};

use codes::{OperandId, StatusCode};
use locks::Held;
use state::{Geometry, State, SysState};

/// SEAMCALL leaf numbers, from `tdx_abi::leaf::SeamcallLeaf` (usable in patterns).
pub(crate) mod leaf {
    use tdx_abi::leaf::SeamcallLeaf as L;
    pub(crate) const VP_ENTER: u16 = L::TDH_VP_ENTER.raw();
    pub(crate) const MNG_ADDCX: u16 = L::TDH_MNG_ADDCX.raw();
    pub(crate) const MEM_PAGE_ADD: u16 = L::TDH_MEM_PAGE_ADD.raw();
    pub(crate) const MEM_SEPT_ADD: u16 = L::TDH_MEM_SEPT_ADD.raw();
    pub(crate) const VP_ADDCX: u16 = L::TDH_VP_ADDCX.raw();
    pub(crate) const MEM_PAGE_AUG: u16 = L::TDH_MEM_PAGE_AUG.raw();
    pub(crate) const MEM_RANGE_BLOCK: u16 = L::TDH_MEM_RANGE_BLOCK.raw();
    pub(crate) const MNG_KEY_CONFIG: u16 = L::TDH_MNG_KEY_CONFIG.raw();
    pub(crate) const MNG_CREATE: u16 = L::TDH_MNG_CREATE.raw();
    pub(crate) const VP_CREATE: u16 = L::TDH_VP_CREATE.raw();
    pub(crate) const MNG_RD: u16 = L::TDH_MNG_RD.raw();
    pub(crate) const MNG_WR: u16 = L::TDH_MNG_WR.raw();
    pub(crate) const MR_EXTEND: u16 = L::TDH_MR_EXTEND.raw();
    pub(crate) const MR_FINALIZE: u16 = L::TDH_MR_FINALIZE.raw();
    pub(crate) const VP_FLUSH: u16 = L::TDH_VP_FLUSH.raw();
    pub(crate) const MNG_VPFLUSHDONE: u16 = L::TDH_MNG_VPFLUSHDONE.raw();
    pub(crate) const MNG_KEY_FREEID: u16 = L::TDH_MNG_KEY_FREEID.raw();
    pub(crate) const MNG_INIT: u16 = L::TDH_MNG_INIT.raw();
    pub(crate) const VP_INIT: u16 = L::TDH_VP_INIT.raw();
    pub(crate) const MEM_PAGE_PROMOTE: u16 = L::TDH_MEM_PAGE_PROMOTE.raw();
    pub(crate) const PHYMEM_PAGE_RDMD: u16 = L::TDH_PHYMEM_PAGE_RDMD.raw();
    pub(crate) const MEM_SEPT_RD: u16 = L::TDH_MEM_SEPT_RD.raw();
    pub(crate) const VP_RD: u16 = L::TDH_VP_RD.raw();
    pub(crate) const MNG_KEY_RECLAIMID: u16 = L::TDH_MNG_KEY_RECLAIMID.raw();
    pub(crate) const PHYMEM_PAGE_RECLAIM: u16 = L::TDH_PHYMEM_PAGE_RECLAIM.raw();
    pub(crate) const MEM_PAGE_REMOVE: u16 = L::TDH_MEM_PAGE_REMOVE.raw();
    pub(crate) const MEM_SEPT_REMOVE: u16 = L::TDH_MEM_SEPT_REMOVE.raw();
    pub(crate) const SYS_KEY_CONFIG: u16 = L::TDH_SYS_KEY_CONFIG.raw();
    pub(crate) const SYS_INFO: u16 = L::TDH_SYS_INFO.raw();
    pub(crate) const SYS_INIT: u16 = L::TDH_SYS_INIT.raw();
    pub(crate) const SYS_RD: u16 = L::TDH_SYS_RD.raw();
    pub(crate) const SYS_LP_INIT: u16 = L::TDH_SYS_LP_INIT.raw();
    pub(crate) const SYS_TDMR_INIT: u16 = L::TDH_SYS_TDMR_INIT.raw();
    pub(crate) const SYS_RDALL: u16 = L::TDH_SYS_RDALL.raw();
    pub(crate) const MEM_TRACK: u16 = L::TDH_MEM_TRACK.raw();
    pub(crate) const MEM_RANGE_UNBLOCK: u16 = L::TDH_MEM_RANGE_UNBLOCK.raw();
    pub(crate) const PHYMEM_CACHE_WB: u16 = L::TDH_PHYMEM_CACHE_WB.raw();
    pub(crate) const PHYMEM_PAGE_WBINVD: u16 = L::TDH_PHYMEM_PAGE_WBINVD.raw();
    pub(crate) const VP_WR: u16 = L::TDH_VP_WR.raw();
    pub(crate) const SYS_LP_SHUTDOWN: u16 = L::TDH_SYS_LP_SHUTDOWN.raw();
    pub(crate) const SYS_CONFIG: u16 = L::TDH_SYS_CONFIG.raw();
    pub(crate) const SYS_UPDATE: u16 = L::TDH_SYS_UPDATE.raw();
}

/// Configuration of the emulated platform.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    /// Bytes of emulated physical memory (memfd arena), PA `0..memory_size`; a multiple of
    /// 4 KiB.
    pub memory_size: u64,
    /// `(base, size)` convertible memory ranges, 4 KiB aligned, inside the memory, sorted and
    /// non-overlapping (at most 32). Empty = one CMR `[1 MiB, memory_size)`.
    pub cmrs: Vec<(u64, u64)>,
    /// Number of packages (1..=64).
    pub num_packages: u32,
    /// Logical processors per package (>= 1).
    pub lps_per_package: u32,
    /// First TDX private KeyID; it becomes the global private HKID the host passes to
    /// TDH.SYS.CONFIG.
    pub first_tdx_hkid: u16,
    /// Number of TDX private KeyIDs (>= 2: the global one and at least one for a TD).
    pub num_tdx_hkids: u16,
    /// Per-platform secret keying the REPORTMACSTRUCT MAC.
    pub report_mac_key: [u8; 32],
}

impl Default for PlatformConfig {
    /// 256 MiB, one CMR `[1 MiB, 256 MiB)`, 1 package × 2 LPs, HKIDs 32..48, a random MAC key.
    fn default() -> Self {
        PlatformConfig {
            memory_size: 256 << 20,
            cmrs: Vec::new(),
            num_packages: 1,
            lps_per_package: 2,
            first_tdx_hkid: 32,
            num_tdx_hkids: 16,
            report_mac_key: random_key(),
        }
    }
}

fn random_key() -> [u8; 32] {
    use std::io::Read;
    let mut k = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .is_ok();
    if !ok {
        // Fallback: not secret, but distinct per process and time.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = format!("{t}-{}", std::process::id());
        k = sha2_256(seed.as_bytes());
    }
    k
}

fn sha2_256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// Why a platform could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EmulatedError {
    /// A configuration value is out of range.
    #[error("invalid platform configuration: {0}")]
    InvalidConfig(String),
    /// The memory arena could not be created.
    #[error("cannot create the physical-memory arena: {0}")]
    Arena(#[from] std::io::Error),
}

/// A broken module invariant found by `EmulatedModule::check_invariants`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct InvariantViolation(pub String);

/// The emulated TDX module and its platform. `Send + Sync`; share it as `Arc`.
#[derive(Debug)]
pub struct EmulatedModule {
    pub(crate) geo: Geometry,
    pub(crate) mem: PhysicalMemory,
    pub(crate) state: Mutex<State>,
    pub(crate) faults: FaultInjector,
    pub(crate) mac_key: [u8; 32],
    pub(crate) engine: RwLock<Arc<dyn ExecutionEngine>>,
    /// SEAMCALLs currently inside the dispatcher (the lock window is only needed when another
    /// call could observe it).
    pub(crate) in_flight: AtomicUsize,
}

/// One logical processor of the platform: issues SEAMCALLs with its LP index (SYS.LP.INIT,
/// vCPU association, per-package KEY.CONFIG and CACHE.WB use it).
#[derive(Clone, Debug)]
pub struct LogicalProcessor {
    module: Arc<EmulatedModule>,
    index: u32,
}

impl LogicalProcessor {
    /// This LP's index.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// The module it calls.
    pub fn module(&self) -> &Arc<EmulatedModule> {
        &self.module
    }
}

impl Seamcall for LogicalProcessor {
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
        self.module.seamcall_on(self.index, regs)
    }
}

/// Per-call context handed to leaf handlers.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) lp: u32,
    pub(crate) pkg: u32,
    pub(crate) version: u8,
    pub(crate) held: Held,
    /// Effects that happen when the leaf ends (after its lock window), e.g. the end of the
    /// guest run of a TDH.VP.ENTER.
    pub(crate) on_exit: Vec<OnExit>,
    /// Set by TDH.VP.ENTER: the guest run that happens in the lock window.
    pub(crate) run: Option<RunRequest>,
}

/// A guest run requested by TDH.VP.ENTER (performed with the state mutex released).
#[derive(Debug)]
pub(crate) struct RunRequest {
    pub(crate) tdr: u64,
    pub(crate) tdvpr: u64,
    /// The guest GPRs, handed to the engine and stored back when the run ends.
    pub(crate) gprs: [u64; 16],
}

/// A deferred end-of-leaf effect.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnExit {
    /// A vCPU leaves the guest: drop its reference on the epoch it sampled and make it READY.
    VcpuExit { tdr: u64, tdvpr: u64, epoch: u64 },
}

impl OnExit {
    fn apply(self, st: &mut State) {
        match self {
            OnExit::VcpuExit { tdr, tdvpr, epoch } => {
                if let Some(td) = st.tds.get_mut(&tdr) {
                    let r = &mut td.refcount[(epoch & 1) as usize];
                    *r = r.saturating_sub(1);
                }
                if let Some(v) = st.vcpus.get_mut(&tdvpr) {
                    if v.state == state::vs::ACTIVE {
                        v.state = state::vs::READY;
                    }
                }
            }
        }
    }
}

/// What a handler returns: `Ok` = a success-class status, `Err` = an error status.
pub(crate) type LeafResult = Result<TdxStatus, TdxStatus>;

/// Maximum version of each leaf the dispatcher accepts (1.5.01).
fn max_version(leaf: u16) -> u8 {
    match leaf {
        leaf::MEM_PAGE_PROMOTE
        | leaf::MEM_SEPT_ADD
        | leaf::MEM_SEPT_REMOVE
        | leaf::MNG_RD
        | leaf::VP_RD => 1,
        _ => 0,
    }
}

impl EmulatedModule {
    /// Builds a platform (memory arena, LPs, HKIDs) with the module loaded and not
    /// initialised (SYSINIT_PENDING).
    pub fn new(cfg: PlatformConfig) -> Result<Arc<Self>, EmulatedError> {
        let bad = |m: String| Err(EmulatedError::InvalidConfig(m));
        if cfg.memory_size == 0 || cfg.memory_size % 4096 != 0 {
            return bad(format!(
                "memory_size {:#x} is not a non-zero multiple of 4 KiB",
                cfg.memory_size
            ));
        }
        if cfg.num_packages == 0 || cfg.num_packages > 64 || cfg.lps_per_package == 0 {
            return bad(format!(
                "{} packages x {} LPs: need 1..=64 packages and >= 1 LP each",
                cfg.num_packages, cfg.lps_per_package
            ));
        }
        if cfg
            .num_packages
            .checked_mul(cfg.lps_per_package)
            .is_none_or(|n| n > 4096)
        {
            return bad("more than 4096 logical processors".into());
        }
        if cfg.num_tdx_hkids < 2 || cfg.first_tdx_hkid == 0 {
            return bad(format!(
                "HKIDs {}+{}: need a first HKID > 0 and at least 2 private HKIDs",
                cfg.first_tdx_hkid, cfg.num_tdx_hkids
            ));
        }
        let Some(last_hkid) = cfg.first_tdx_hkid.checked_add(cfg.num_tdx_hkids - 1) else {
            return bad("HKID range overflows 16 bits".into());
        };
        let key_bits = 16 - last_hkid.leading_zeros();
        let hkid_shift = 52 - key_bits;
        if cfg.memory_size > 1u64 << hkid_shift {
            return bad(format!(
                "memory_size reaches the HKID bits (bit {hkid_shift})"
            ));
        }
        let cmrs = if cfg.cmrs.is_empty() {
            if cfg.memory_size <= 1 << 20 {
                return bad("memory_size must exceed 1 MiB for the default CMR".into());
            }
            vec![(1 << 20, cfg.memory_size - (1 << 20))]
        } else {
            cfg.cmrs.clone()
        };
        if cmrs.len() > 32 {
            return bad(format!("{} CMRs (at most 32)", cmrs.len()));
        }
        let mut prev_end = 0u64;
        for &(b, s) in &cmrs {
            let end = b.checked_add(s);
            if b % 4096 != 0
                || s % 4096 != 0
                || s == 0
                || end.is_none_or(|e| e > cfg.memory_size)
                || b < prev_end
            {
                return bad(format!(
                    "CMR {b:#x}+{s:#x} is misaligned, empty, unordered or outside memory"
                ));
            }
            prev_end = b + s;
        }
        let geo = Geometry {
            first_hkid: cfg.first_tdx_hkid,
            num_hkids: cfg.num_tdx_hkids,
            hkid_shift,
            num_packages: cfg.num_packages,
            lps_per_package: cfg.lps_per_package,
        };
        let mem = PhysicalMemory::new(cfg.memory_size, cmrs)?;
        Ok(Arc::new(EmulatedModule {
            state: Mutex::new(State::new(&geo)),
            geo,
            mem,
            faults: FaultInjector::default(),
            mac_key: cfg.report_mac_key,
            engine: RwLock::new(Arc::new(ScriptedEngine)),
            in_flight: AtomicUsize::new(0),
        }))
    }

    /// Logical processor `index` (`None` if out of range).
    pub fn lp(self: &Arc<Self>, index: u32) -> Option<LogicalProcessor> {
        (index < self.num_lps()).then(|| LogicalProcessor {
            module: Arc::clone(self),
            index,
        })
    }

    /// Number of logical processors.
    pub fn num_lps(&self) -> u32 {
        self.geo.num_packages * self.geo.lps_per_package
    }

    /// Package of LP `lp` (LPs are numbered package by package).
    pub fn package_of(&self, lp: u32) -> u32 {
        lp / self.geo.lps_per_package
    }

    /// Number of packages.
    pub fn num_packages(&self) -> u32 {
        self.geo.num_packages
    }

    /// First HKID bit of a physical address (`MAX_PA` 52 minus the KeyID bits).
    pub fn hkid_shift(&self) -> u32 {
        self.geo.hkid_shift
    }

    /// The host's view of physical memory.
    pub fn physical_memory(&self) -> &PhysicalMemory {
        &self.mem
    }

    /// The fault-injection knobs.
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// The PAMT type of the 4 KiB page at `pa` (None outside TDMRs or before its PAMT block
    /// is initialised).
    pub fn page_type(&self, pa: u64) -> Option<PamtPageType> {
        self.lock()
            .pamt_of(pa)
            .map(|e| PamtPageType::from_raw(u64::from(e.ty)))
    }

    /// The PAMT owner (TDR PA) of the page at `pa`, if any.
    pub fn page_owner(&self, pa: u64) -> Option<u64> {
        self.lock().pamt_of(pa).map(|e| e.owner)
    }

    /// The KOT state of `hkid` (None if it is not a TDX private HKID).
    pub fn hkid_state(&self, hkid: u16) -> Option<KotState> {
        let st = self.lock();
        if !self.geo.is_private_hkid(u64::from(hkid)) {
            return None;
        }
        st.kot
            .get(usize::from(hkid - self.geo.first_hkid))
            .map(|k| KotState::from_raw(k.state))
    }

    /// Number of try-locks currently held (0 between calls).
    pub fn locks_held(&self) -> usize {
        self.lock().locks.held()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One SEAMCALL on LP `lp`.
    pub(crate) fn seamcall_on(&self, lp: u32, regs: &mut Regs) -> TdxStatus {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let status = self.dispatch(lp, regs);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        regs.rax = status.raw();
        status
    }

    fn dispatch(&self, lp: u32, regs: &mut Regs) -> TdxStatus {
        // tdx_vmm_dispatcher.c: leaf and version decode.
        let rax = regs.rax;
        if rax >> 24 != 0 {
            return state::invalid(OperandId::RAX);
        }
        let leaf_no = (rax & 0xFFFF) as u16;
        let version = ((rax >> 16) & 0xFF) as u8;
        if version > max_version(leaf_no) {
            return state::invalid(OperandId::RAX);
        }
        let mut ctx = Ctx {
            lp,
            pkg: self.package_of(lp),
            version,
            held: Held::default(),
            on_exit: Vec::new(),
            run: None,
        };
        let result = {
            let mut st = self.lock();
            // Before SYS_READY only the SYS init/enumeration leaves pass (an unknown leaf
            // number included: it is refused after this check).
            let sys_leaf = matches!(
                leaf_no,
                leaf::SYS_INIT
                    | leaf::SYS_LP_INIT
                    | leaf::SYS_RD
                    | leaf::SYS_RDALL
                    | leaf::SYS_INFO
                    | leaf::SYS_CONFIG
                    | leaf::SYS_KEY_CONFIG
                    | leaf::SYS_LP_SHUTDOWN
                    | leaf::SYS_UPDATE
            );
            if !sys_leaf && st.sys != SysState::SysReady {
                return codes::code(StatusCode::SYS_NOT_READY);
            }
            let Some(handler) = handler_of(leaf_no) else {
                return state::invalid(OperandId::RAX);
            };
            if let Some(forced) = self.faults.take_seamcall(leaf_no) {
                return forced;
            }
            let r = handler(self, &mut ctx, &mut st, regs);
            if ctx.held.locks.is_empty() && ctx.on_exit.is_empty() {
                return r.unwrap_or_else(|e| e);
            }
            r
        };
        // TDH.VP.ENTER: the guest runs with the mutex released and the leaf's locks held.
        let mut run = ctx.run.take();
        let exit = match (&result, run.as_mut()) {
            (Ok(_), Some(run)) => Some(guest::run_engine(self, run)),
            _ => None,
        };
        // The locks stay held for a short window after the effects (see `locks`).
        self.faults.maybe_pause(leaf_no);
        if self.in_flight.load(Ordering::SeqCst) > 1 {
            std::thread::yield_now();
        }
        let mut st = self.lock();
        let result = match (run, exit) {
            (Some(run), Some(exit)) => guest::finish_vp_enter(&mut st, &run, exit, regs),
            _ => result,
        };
        for e in ctx.on_exit.drain(..) {
            e.apply(&mut st);
        }
        ctx.held.release_all(&mut st.locks);
        result.unwrap_or_else(|e| e)
    }
}

type Handler = fn(&EmulatedModule, &mut Ctx, &mut State, &mut Regs) -> LeafResult;

fn handler_of(leaf_no: u16) -> Option<Handler> {
    use leaf::*;
    Some(match leaf_no {
        SYS_INIT => sys::tdh_sys_init,
        SYS_LP_INIT => sys::tdh_sys_lp_init,
        SYS_RD => sys::tdh_sys_rd,
        SYS_RDALL => sys::tdh_sys_rdall,
        SYS_CONFIG => sys::tdh_sys_config,
        SYS_KEY_CONFIG => sys::tdh_sys_key_config,
        SYS_TDMR_INIT => sys::tdh_sys_tdmr_init,
        MNG_CREATE => td::tdh_mng_create,
        MNG_KEY_CONFIG => td::tdh_mng_key_config,
        MNG_ADDCX => td::tdh_mng_addcx,
        MNG_INIT => td::tdh_mng_init,
        MNG_RD => td::tdh_mng_rd,
        MNG_WR => td::tdh_mng_wr,
        VP_CREATE => td::tdh_vp_create,
        VP_ADDCX => td::tdh_vp_addcx,
        VP_INIT => td::tdh_vp_init,
        VP_RD => td::tdh_vp_rd,
        VP_WR => td::tdh_vp_wr,
        VP_FLUSH => td::tdh_vp_flush,
        MNG_VPFLUSHDONE => td::tdh_mng_vpflushdone,
        PHYMEM_CACHE_WB => td::tdh_phymem_cache_wb,
        MNG_KEY_FREEID => td::tdh_mng_key_freeid,
        MNG_KEY_RECLAIMID => td::tdh_mng_key_reclaimid,
        PHYMEM_PAGE_RECLAIM => td::tdh_phymem_page_reclaim,
        PHYMEM_PAGE_WBINVD => td::tdh_phymem_page_wbinvd,
        PHYMEM_PAGE_RDMD => td::tdh_phymem_page_rdmd,
        MEM_SEPT_ADD => mem::tdh_mem_sept_add,
        MEM_PAGE_ADD => mem::tdh_mem_page_add,
        MR_EXTEND => mem::tdh_mr_extend,
        MR_FINALIZE => mem::tdh_mr_finalize,
        MEM_PAGE_AUG => mem::tdh_mem_page_aug,
        MEM_RANGE_BLOCK => mem::tdh_mem_range_block,
        MEM_RANGE_UNBLOCK => mem::tdh_mem_range_unblock,
        MEM_TRACK => mem::tdh_mem_track,
        MEM_PAGE_REMOVE => mem::tdh_mem_page_remove,
        MEM_SEPT_REMOVE => mem::tdh_mem_sept_remove,
        MEM_SEPT_RD => mem::tdh_mem_sept_rd,
        VP_ENTER => guest::tdh_vp_enter,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
