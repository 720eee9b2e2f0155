//! The emulated backend: [`TdxBackend`] over the host driver ([`crate::driver`]) and the
//! software TDX module ([`crate::emulated`]), with guest code run by an [`ExecutionEngine`].
//!
//! [`EmulatedBackend::new`] builds an emulated platform, brings its module up exactly as Linux
//! does ([`crate::driver::bring_up`]) and installs the chosen engine. Every TD operation is
//! the driver's SEAMCALL sequence, the one KVM issues on hardware:
//!
//! | trait call | SEAMCALLs |
//! |---|---|
//! | [`TdxBackend::create_vm`] | MNG.CREATE, MNG.KEY.CONFIG per package, MNG.ADDCX, MNG.INIT |
//! | [`TdVm::create_vcpu`] | VP.CREATE, VP.ADDCX, VP.INIT on the vCPU's logical processor |
//! | [`TdVm::add_initial_pages`] | SEPT.ADD as needed, MEM.PAGE.ADD, 16 × MR.EXTEND per page |
//! | [`TdVm::finalize`] | MR.FINALIZE, MNG.RD of MRTD (checked against the offline prediction) |
//! | [`TdVm::convert`] to shared | RANGE.BLOCK, MEM.TRACK, kick, PAGE.REMOVE per mapped page |
//! | [`TdVcpu::run`] | VP.ENTER; MEM.PAGE.AUG on a private EPT violation (lazy accept) |
//! | drop of the last handle | VP.FLUSH, VPFLUSHDONE, CACHE.WB, KEY.FREEID, RECLAIM of every page |
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig};
//! use tdx_host::backend::{TdExit, TdVcpu, TdVm, TdVmConfig, TdxBackend};
//! use tdx_host::tdx_abi::tdvmcall::{Direction, TdVmCallRequest};
//! use tdx_host::tdx_memory::{AttributeMap, SharedGuestMemory};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! // The scripted engine: the example plays the guest.
//! let backend = EmulatedBackend::new(EmulatedBackendConfig::default())?;
//! let config = TdVmConfig::default();
//! let vm = backend.create_vm(&config)?;
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
//! let mem = SharedGuestMemory::new(Arc::new(AttributeMap::new(config.gpaw)), ram).unwrap();
//! vm.set_memory(&mem)?;
//! let mut vcpu = vm.create_vcpu(0, 0)?;
//! vm.add_initial_pages(0x10_0000, &[0xF4; 4096], true)?;
//! let mrtd = vm.finalize()?;
//! assert!(mrtd.is_some());
//!
//! let guest = backend.module().scripted_vcpu(vcpu.tdvpr());
//! let mut regs = TdVmCallRequest::Io { size: 1, direction: Direction::Write, port: 0x3F8, data: b'A'.into() }
//!     .encode();
//! guest.tdcall(&mut regs);
//! match vcpu.run()? {
//!     TdExit::IoOut { port: 0x3F8, data } => assert_eq!(data, b"A"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), tdx_host::backend::BackendError>(())
//! ```
//!
//! # GPA widths
//! The module runs GPAW 48 and 52 and [`TdxBackend::capabilities`] lists both; an engine may
//! refuse a width when the TD gets its memory (`ExecutionEngine::configure_td`, called by
//! [`TdVm::set_memory`], which then fails with [`BackendError::Unavailable`]).
//!
//! # Logical processors
//! vCPU `i` is created (TDH.VP.INIT associates it) and always entered on logical processor
//! `i mod num_lps`. vCPUs are never migrated (that would need TDH.VP.FLUSH on the old LP, as
//! KVM does when a vCPU thread moves); two vCPUs that share an LP may still run on two host
//! threads, the emulated LP being only an index. Memory SEAMCALLs of the VMM's threads
//! (conversions) go to LP 0; the AUG of a lazy accept goes to the faulting vCPU's LP.
//!
//! # Exits handled inside the backend (as KVM handles them in the kernel)
//! * **TDG.VP.VMCALL** is decoded with [`TdVmCallRequest::decode`]. A malformed call (bad
//!   size, direction, port, MSR index, a private GPA where a shared one is needed, …) is
//!   answered with the decoder's status (`TDG.VP.VMCALL_INVALID_OPERAND`, or `ALIGN_ERROR` for
//!   a misaligned MapGPA) and logged with `tracing`; the VMM never sees it. GetTdVmCallInfo
//!   (leaf 0: R11..R14 = 0; leaf 1: R11 = GetQuote | SetupEventNotifyInterrupt) and
//!   Instruction.WBINVD are answered here; Service, vendor-specific (R10 ≠ 0) and unknown
//!   sub-functions get `TDG.VP.VMCALL_SUBFUNC_UNSUPPORTED`, as KVM answers them.
//! * **EPT violation, private GPA whose attribute is private**: TDH.MEM.PAGE.AUG of the 4 KiB
//!   page and re-entry (lazy accept; KVM does the same on a guest_memfd fault). Only GPAs
//!   inside the regions given to [`TdVm::set_memory`] are backed; a private access elsewhere
//!   is [`BackendError::Invalid`] (KVM: `KVM_EXIT_MEMORY_FAULT` on a GPA without a memslot, on
//!   which QEMU stops the vCPU). A page already mapped is simply re-entered.
//! * **EPT violation whose alias does not match the attribute** (a private access to a shared
//!   page, or a shared access to a private page): KVM reports `KVM_EXIT_MEMORY_FAULT` and QEMU
//!   answers it with an *implicit conversion* of the page to the state of the access
//!   (`kvm_convert_memory`) before re-entering. The backend does the same (logged with
//!   `tracing::warn`): the 4 KiB page is converted exactly as [`TdVm::convert`] would, then the
//!   private access is AUGed as above. A shared access to a page that is already shared is the
//!   engine's business (it maps shared memory itself) and is re-entered.
//! * **EXTERNAL_INTERRUPT**: [`TdExit::Interrupted`] when the vCPU's kicker fired, otherwise
//!   re-entry. With [`EngineChoice::Scripted`] an external interrupt means the scripted guest
//!   has nothing queued, and `run` returns [`TdExit::Interrupted`] so the test regains control.
//! * **Triple fault** (VMX reason 2): [`TdExit::Shutdown`]; the TD is dead afterwards.
//!
//! Re-entries without progress (the same EPT violation again after it was resolved) are
//! bounded by [`MAX_STALLED_ENTRIES`]; `TDX_OPERAND_BUSY` from TDH.VP.ENTER (a concurrent
//! TDH.MEM.TRACK holding the epoch lock) is retried [`MAX_BUSY_RETRIES`] times.
//!
//! # Answers
//! The VMM writes the answer of an exit into its `&mut` fields; the next [`TdVcpu::run`] puts
//! it into the GHCI registers given to TDH.VP.ENTER: R10 = status, R11 = the read data / MSR
//! value / MapGPA retry GPA (with the shared bit when converting to shared, as the guest
//! expects), R12..R15 = CPUID EAX..EDX. Registers the answer does not define are returned to
//! the guest as the guest sent them (KVM reuses its exit argument block the same way).
//!
//! # Teardown
//! The TD is torn down when the [`EmulatedVm`] and all its vCPUs are dropped: the engine
//! forgets the TD first (`release_td`, so no engine mapping outlives it), then the driver
//! flushes the vCPUs, frees the HKID and reclaims every page (see [`crate::driver::Td`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tdx_abi::call::Regs;
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_abi::leaf::{TdVmCallStatus, VmxExitReason};
use tdx_abi::measure::Measurement;
use tdx_abi::phys::Hpa;
use tdx_abi::status::StatusCode;
use tdx_abi::tdh::{tdh_vp_enter, SeamcallError, VpEnterExit, VpEnterInput};
use tdx_abi::tdvmcall::{Direction, TdVmCallRequest, FATAL_ERROR_GPA_VALID};
use tdx_memory::attributes::PageState;
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::{SharedAccessError, SharedGuestMemory};
use vm_memory::GuestAddress;

use super::{
    BackendError, TdExit, TdVcpu, TdVm, TdVmConfig, TdxBackend, TdxCapabilities, VcpuKicker,
    VmcallStatus,
};
use crate::driver::module::RetryPolicy;
use crate::driver::{
    bring_up, BringUpError, CpuidValue, DriverError, EmulatedTdxModule, Td, TdBuilder, TdConfig,
};
use crate::emulated::{
    EmulatedModule, EngineError, ExecutionEngine, LogicalProcessor, PlatformConfig, ScriptedEngine,
    TdEngineConfig,
};

/// Consecutive re-entries without progress (the same unresolvable EPT violation) before
/// [`TdVcpu::run`] gives up with [`BackendError::Dead`].
pub const MAX_STALLED_ENTRIES: u32 = 64;
/// Retries of TDH.VP.ENTER on `TDX_OPERAND_BUSY`.
pub const MAX_BUSY_RETRIES: u32 = 10_000;
/// TSC frequency used when [`TdVmConfig::tsc_hz`] is 0: 2.5 GHz.
pub const DEFAULT_TSC_HZ: u64 = 2_500_000_000;
/// TD_PARAMS.TSC_FREQUENCY unit: 25 MHz.
pub const TSC_UNIT_HZ: u64 = 25_000_000;

/// GetTdVmCallInfo leaf 1, R11 bit 0: GetQuote is supported.
pub const TDVMCALLINFO_GET_QUOTE: u64 = 1 << 0;
/// GetTdVmCallInfo leaf 1, R11 bit 1: SetupEventNotifyInterrupt is supported.
pub const TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 1 << 1;

/// Builds the execution engine once the platform exists (the KVM engine needs the module's
/// memory arena).
pub type EngineConstructor =
    Box<dyn FnOnce(&Arc<EmulatedModule>) -> Result<Arc<dyn ExecutionEngine>, EngineError> + Send>;

/// Which execution engine runs guest code.
///
/// An engine with a constructor `fn new(&Arc<EmulatedModule>) -> Result<Arc<E>, EngineError>`
/// fits [`EngineChoice::Custom`] directly:
/// `EngineChoice::custom(|m| Ok(E::new(m)? as Arc<dyn ExecutionEngine>))`.
pub enum EngineChoice {
    /// The scripted engine: a test plays the guest through
    /// [`ScriptedVcpu`](crate::emulated::ScriptedVcpu).
    Scripted,
    /// The KVM execution engine ([`crate::emulated::kvm::KvmEngine`]): TD guest code runs as
    /// an ordinary KVM guest. Fails with [`BackendError::Unavailable`] naming the reason when
    /// `/dev/kvm` is unusable.
    Kvm,
    /// An engine built by the constructor, e.g.
    /// `EngineChoice::custom(|m| Ok(Arc::new(MyEngine::new(m)?)))`.
    Custom(EngineConstructor),
}

impl EngineChoice {
    /// [`EngineChoice::Custom`] from a closure.
    pub fn custom(
        f: impl FnOnce(&Arc<EmulatedModule>) -> Result<Arc<dyn ExecutionEngine>, EngineError>
            + Send
            + 'static,
    ) -> Self {
        EngineChoice::Custom(Box::new(f))
    }
}

impl std::fmt::Debug for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineChoice::Scripted => "Scripted",
            EngineChoice::Kvm => "Kvm",
            EngineChoice::Custom(_) => "Custom(..)",
        })
    }
}

/// Configuration of an [`EmulatedBackend`].
#[derive(Debug)]
pub struct EmulatedBackendConfig {
    /// The emulated platform (memory size, LPs, HKIDs, report MAC key).
    pub platform: PlatformConfig,
    /// The execution engine.
    pub engine: EngineChoice,
    /// The driver's retry bounds.
    pub retry: RetryPolicy,
}

impl Default for EmulatedBackendConfig {
    /// The default platform with the scripted engine.
    fn default() -> Self {
        EmulatedBackendConfig {
            platform: PlatformConfig::default(),
            engine: EngineChoice::Scripted,
            retry: RetryPolicy::default(),
        }
    }
}

/// The emulated TDX backend: one emulated platform with its module brought up by the driver
/// and an execution engine. `Send + Sync`.
#[derive(Debug)]
pub struct EmulatedBackend {
    module: Arc<EmulatedModule>,
    driver: Arc<EmulatedTdxModule>,
    engine: Arc<dyn ExecutionEngine>,
    scripted: bool,
}

/// A driver failure as a [`BackendError`]: configuration refusals become
/// [`BackendError::Invalid`], everything else [`BackendError::Module`] with the decoded
/// status.
fn driver_error(op: &'static str, e: DriverError) -> BackendError {
    match e {
        DriverError::InvalidTdConfig { what, value } => BackendError::Invalid {
            what,
            why: format!("{value:#x} refused by the driver ({op})"),
        },
        e => BackendError::Module {
            op,
            status: e.to_string(),
        },
    }
}

fn seamcall_error(op: &'static str, e: &SeamcallError) -> BackendError {
    BackendError::Module {
        op,
        status: e.to_string(),
    }
}

impl EmulatedBackend {
    /// Builds the platform, brings its module up with the host driver and installs the engine.
    pub fn new(config: EmulatedBackendConfig) -> Result<Self, BackendError> {
        let (module, driver) = bring_up(config.platform, config.retry).map_err(|e| match e {
            BringUpError::Platform(e) => BackendError::Invalid {
                what: "platform",
                why: e.to_string(),
            },
            BringUpError::Driver(e) => driver_error("TDX module bring-up", e),
        })?;
        let (engine, scripted): (Arc<dyn ExecutionEngine>, bool) = match config.engine {
            EngineChoice::Scripted => (Arc::new(ScriptedEngine), true),
            EngineChoice::Kvm => (
                crate::emulated::kvm::KvmEngine::new(&module)
                    .map_err(|e| BackendError::Unavailable(e.to_string()))?,
                false,
            ),
            EngineChoice::Custom(make) => (
                make(&module).map_err(|e| BackendError::Unavailable(e.to_string()))?,
                false,
            ),
        };
        module.set_engine(Arc::clone(&engine));
        Ok(EmulatedBackend {
            module,
            driver,
            engine,
            scripted,
        })
    }

    /// The emulated module and platform (introspection for tests, scripted vCPUs).
    pub fn module(&self) -> &Arc<EmulatedModule> {
        &self.module
    }

    /// The host driver's module (frame allocator, HKID pool, metadata).
    pub fn driver(&self) -> &Arc<EmulatedTdxModule> {
        &self.driver
    }

    /// The execution engine.
    pub fn engine(&self) -> &Arc<dyn ExecutionEngine> {
        &self.engine
    }

    /// Checks `config` against the module's metadata and turns it into the driver's
    /// [`TdConfig`]; every refusal names the field and the value.
    pub fn td_config(&self, config: &TdVmConfig) -> Result<TdConfig, BackendError> {
        let info = self.driver.info();
        let invalid = |what: &'static str, why: String| Err(BackendError::Invalid { what, why });
        let a = config.attributes;
        if a & !info.attributes_fixed0 != 0 {
            return invalid(
                "attributes",
                format!(
                    "{a:#x} sets bits {:#x} the module does not allow (ATTRIBUTES_FIXED0 {:#x})",
                    a & !info.attributes_fixed0,
                    info.attributes_fixed0
                ),
            );
        }
        if a & info.attributes_fixed1 != info.attributes_fixed1 {
            return invalid(
                "attributes",
                format!(
                    "{a:#x} lacks bits {:#x} the module requires (ATTRIBUTES_FIXED1)",
                    info.attributes_fixed1 & !a
                ),
            );
        }
        let x = config.xfam;
        if x & !info.xfam_fixed0 != 0 {
            return invalid(
                "xfam",
                format!(
                    "{x:#x} sets bits {:#x} the module does not allow (XFAM_FIXED0 {:#x})",
                    x & !info.xfam_fixed0,
                    info.xfam_fixed0
                ),
            );
        }
        if x & info.xfam_fixed1 != info.xfam_fixed1 {
            return invalid(
                "xfam",
                format!(
                    "{x:#x} lacks bits {:#x} the module requires (XFAM_FIXED1)",
                    info.xfam_fixed1 & !x
                ),
            );
        }
        let max = info.max_vcpus_per_td.unwrap_or(576);
        if config.max_vcpus == 0 || config.max_vcpus > max {
            return invalid(
                "max_vcpus",
                format!("{} is outside 1..={max}", config.max_vcpus),
            );
        }
        let hz = if config.tsc_hz == 0 {
            DEFAULT_TSC_HZ
        } else {
            config.tsc_hz
        };
        if hz % TSC_UNIT_HZ != 0 {
            return invalid(
                "tsc_hz",
                format!("{hz} Hz is not a multiple of 25 MHz (TD_PARAMS.TSC_FREQUENCY unit)"),
            );
        }
        let units = hz / TSC_UNIT_HZ;
        if !(4..=400).contains(&units) {
            return invalid(
                "tsc_hz",
                format!("{hz} Hz is outside 100 MHz..=10 GHz (TSC_FREQUENCY 4..=400)"),
            );
        }
        let mut cpuid = Vec::with_capacity(config.cpuid.len());
        for (n, e) in config.cpuid.iter().enumerate() {
            let Some(c) = info
                .cpuid_configs
                .iter()
                .find(|c| c.leaf == e.leaf && c.subleaf == e.subleaf)
            else {
                return invalid(
                    "cpuid",
                    format!(
                        "entry {n}: leaf {:#x} subleaf {:?} is not configurable",
                        e.leaf, e.subleaf
                    ),
                );
            };
            for (r, (v, ok)) in e.regs.iter().zip(c.allowed).enumerate() {
                if v & !ok != 0 {
                    return invalid(
                        "cpuid",
                        format!(
                            "entry {n}: leaf {:#x} subleaf {:?} {} = {v:#x} sets bits {:#x} \
                             the module does not allow",
                            e.leaf,
                            e.subleaf,
                            ["EAX", "EBX", "ECX", "EDX"][r],
                            v & !ok
                        ),
                    );
                }
            }
            if config.cpuid[..n]
                .iter()
                .any(|p| p.leaf == e.leaf && p.subleaf == e.subleaf)
            {
                return invalid(
                    "cpuid",
                    format!(
                        "entry {n}: leaf {:#x} subleaf {:?} is given twice",
                        e.leaf, e.subleaf
                    ),
                );
            }
            cpuid.push(CpuidValue {
                leaf: e.leaf,
                subleaf: e.subleaf,
                regs: e.regs,
            });
        }
        Ok(TdConfig {
            attributes: a,
            xfam: x,
            max_vcpus: config.max_vcpus,
            gpaw: config.gpaw,
            tsc_frequency: units as u16,
            mrconfigid: config.mrconfigid,
            mrowner: config.mrowner,
            mrownerconfig: config.mrownerconfig,
            cpuid,
        })
    }
}

impl TdxBackend for EmulatedBackend {
    type Vm = EmulatedVm;

    fn name(&self) -> &'static str {
        "emulated"
    }

    fn capabilities(&self) -> Result<TdxCapabilities, BackendError> {
        let info = self.driver.info();
        Ok(TdxCapabilities {
            supported_attributes: info.attributes_fixed0,
            supported_xfam: info.xfam_fixed0,
            max_vcpus: u32::from(info.max_vcpus_per_td.unwrap_or(576)),
            gpaws: vec![Gpaw::Gpaw48, Gpaw::Gpaw52],
            configurable_cpuid: info
                .cpuid_configs
                .iter()
                .map(|c| (c.leaf, c.subleaf, c.allowed))
                .collect(),
        })
    }

    fn create_vm(&self, config: &TdVmConfig) -> Result<EmulatedVm, BackendError> {
        let td_config = self.td_config(config)?;
        let td = TdBuilder::new(&self.driver)
            .config(td_config)
            .build()
            .map_err(|e| driver_error("TD creation (TDH.MNG.CREATE .. TDH.MNG.INIT)", e))?;
        Ok(EmulatedVm {
            inner: Arc::new(VmInner {
                td,
                engine: Arc::clone(&self.engine),
                config: config.clone(),
                scripted: self.scripted,
                state: Mutex::new(VmState::default()),
                mem_lock: Mutex::new(()),
            }),
        })
    }
}

/// What a vCPU shares with its kicker and with conversions.
#[derive(Debug)]
struct VcpuShared {
    tdvpr: u64,
    kicked: AtomicBool,
}

#[derive(Debug, Default)]
struct VmState {
    memory: Option<SharedGuestMemory>,
    vcpus: BTreeMap<u32, Arc<VcpuShared>>,
    finalized: bool,
    /// Why the TD can no longer run.
    dead: Option<String>,
}

#[derive(Debug)]
struct VmInner {
    td: Td<LogicalProcessor, Arc<EmulatedModule>>,
    engine: Arc<dyn ExecutionEngine>,
    config: TdVmConfig,
    scripted: bool,
    state: Mutex<VmState>,
    /// Serialises conversions against the lazy AUG of the vCPU threads, so a page is never
    /// AUGed after a conversion to shared checked it (KVM: the MMU lock and invalidation
    /// sequence). Taken before `state`.
    mem_lock: Mutex<()>,
}

/// A TD of the [`EmulatedBackend`]. Dropping it (and all its vCPUs) tears the TD down.
#[derive(Debug, Clone)]
pub struct EmulatedVm {
    inner: Arc<VmInner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VmInner {
    fn st(&self) -> MutexGuard<'_, VmState> {
        lock(&self.state)
    }

    fn gpaw(&self) -> Gpaw {
        self.config.gpaw
    }

    fn lp0(&self) -> u32 {
        0
    }

    fn mark_dead(&self, why: String) {
        let mut st = self.st();
        if st.dead.is_none() {
            st.dead = Some(why);
        }
    }

    /// Kicks every vCPU of the TD out of the guest (the engine's IPI; the vCPUs re-enter
    /// without reporting it to the VMM).
    fn kick_all(&self) {
        let tdvprs: Vec<u64> = self.st().vcpus.values().map(|v| v.tdvpr).collect();
        for t in tdvprs {
            self.engine.kick(Hpa(t));
        }
    }

    /// The attribute map and whether `[start, start + len)` lies inside the memory regions.
    fn memory(&self, op: &'static str) -> Result<SharedGuestMemory, BackendError> {
        self.st().memory.clone().ok_or(BackendError::State {
            op,
            why: "the TD has no memory yet (set_memory)".into(),
        })
    }

    /// Whether every page of `[start, start + len)` (canonical, page-aligned) has backing in
    /// `mem` (shared or private: the private backing exists where the shared one does, as a
    /// guest_memfd beside each memslot).
    fn in_regions(mem: &SharedGuestMemory, start: u64, len: u64) -> bool {
        let view = mem.view();
        let pages = len / 4096;
        (0..pages).all(|i| {
            let g = start + 4096 * i;
            matches!(
                view.check(GuestAddress(g), 4096),
                Ok(_) | Err(SharedAccessError::Private { .. })
            )
        })
    }

    /// Converts `range` (canonical, validated) with `mem_lock` held.
    fn convert_locked(
        &self,
        mem: &SharedGuestMemory,
        range: GpaRange,
        to: PageState,
    ) -> Result<(), BackendError> {
        if to == PageState::Shared {
            let (s, e) = (range.start().raw(), range.end().raw());
            for (gpa, page) in self.td.private_pages_in(s, e) {
                let size = 4096u64 << (9 * u32::from(page.level));
                if gpa < s || gpa + size > e {
                    return Err(BackendError::Invalid {
                        what: "conversion range",
                        why: format!(
                            "{range} splits the {size:#x}-byte private page at GPA {gpa:#x}"
                        ),
                    });
                }
                self.td
                    .remove_page_kicking(self.lp0(), Gpa(gpa), &|| self.kick_all())
                    .map_err(|e| driver_error("conversion to shared (BLOCK, TRACK, REMOVE)", e))?;
            }
        }
        mem.attributes()
            .convert(range, to)
            .map_err(|e| BackendError::Invalid {
                what: "conversion range",
                why: e.to_string(),
            })?;
        Ok(())
    }
}

impl Drop for VmInner {
    fn drop(&mut self) {
        let tdr = Hpa(self.td.tdr());
        self.engine.release_td(tdr);
        if let Err(e) = self.td.teardown() {
            tracing::error!(tdr = tdr.raw(), error = %e, "TD teardown failed");
        }
    }
}

impl EmulatedVm {
    /// The driver's TD (TDR, HKID, pages, offline MRTD prediction).
    pub fn td(&self) -> &Td<LogicalProcessor, Arc<EmulatedModule>> {
        &self.inner.td
    }

    /// TDR physical address.
    pub fn tdr(&self) -> Hpa {
        Hpa(self.inner.td.tdr())
    }

    /// The configuration the TD was created with.
    pub fn config(&self) -> &TdVmConfig {
        &self.inner.config
    }

    /// Why the TD can no longer run, if it cannot.
    pub fn dead(&self) -> Option<String> {
        self.inner.st().dead.clone()
    }

    fn check_page_range(
        &self,
        op: &'static str,
        gpa: u64,
        len: u64,
    ) -> Result<GpaRange, BackendError> {
        GpaRange::new_pages(Gpa(gpa), len, self.inner.gpaw()).map_err(|e| BackendError::Invalid {
            what: "GPA range",
            why: format!("{op}: {e}"),
        })
    }
}

impl TdVm for EmulatedVm {
    type Vcpu = EmulatedVcpu;

    fn set_memory(&self, memory: &SharedGuestMemory) -> Result<(), BackendError> {
        let vm = &self.inner;
        let mut st = vm.st();
        if st.memory.is_some() {
            return Err(BackendError::State {
                op: "set_memory",
                why: "the TD already has its memory".into(),
            });
        }
        if memory.gpaw() != vm.gpaw() {
            return Err(BackendError::Invalid {
                what: "memory",
                why: format!(
                    "its attribute map is for {:?}, the TD was created with {:?}",
                    memory.gpaw(),
                    vm.gpaw()
                ),
            });
        }
        let cfg = TdEngineConfig {
            entry: vm.config.entry,
            shared: Some(memory.clone()),
        };
        vm.engine
            .configure_td(Hpa(vm.td.tdr()), &cfg)
            .map_err(|e| BackendError::Unavailable(format!("the engine refused the TD: {e}")))?;
        st.memory = Some(memory.clone());
        Ok(())
    }

    fn create_vcpu(&self, index: u32, rcx: u64) -> Result<EmulatedVcpu, BackendError> {
        let vm = &self.inner;
        let mut st = vm.st();
        if st.finalized {
            return Err(BackendError::State {
                op: "create_vcpu",
                why: "the TD is finalized (TDH.VP.CREATE needs OP_STATE INITIALIZED)".into(),
            });
        }
        if index >= u32::from(vm.config.max_vcpus) {
            return Err(BackendError::Invalid {
                what: "vCPU index",
                why: format!("{index} is not below max_vcpus {}", vm.config.max_vcpus),
            });
        }
        if st.vcpus.contains_key(&index) {
            return Err(BackendError::State {
                op: "create_vcpu",
                why: format!("vCPU {index} exists already"),
            });
        }
        let num_lps = vm.td.module().num_lps().max(1);
        let lp = index % num_lps;
        let id = vm
            .td
            .create_vcpu(lp, rcx)
            .map_err(|e| driver_error("vCPU creation (TDH.VP.CREATE .. TDH.VP.INIT)", e))?;
        let tdvpr = vm
            .td
            .vcpu(id)
            .map(|v| v.tdvpr)
            .ok_or_else(|| BackendError::Module {
                op: "create_vcpu",
                status: format!("the driver lost vCPU {id}"),
            })?;
        let shared = Arc::new(VcpuShared {
            tdvpr,
            kicked: AtomicBool::new(false),
        });
        st.vcpus.insert(index, Arc::clone(&shared));
        drop(st);
        Ok(EmulatedVcpu {
            vm: Arc::clone(vm),
            index,
            lp,
            shared,
            pending: None,
            represent: false,
            resume: None,
            exit_regs: Regs::default(),
            data: [0; 8],
            cpuid: [0; 4],
            value: 0,
            status: VmcallStatus::Success,
            retry_gpa: 0,
        })
    }

    fn add_initial_pages(&self, gpa: u64, data: &[u8], measure: bool) -> Result<(), BackendError> {
        let op = "add_initial_pages";
        let vm = &self.inner;
        let range = self.check_page_range(op, gpa, data.len() as u64)?;
        let mem = vm.memory(op)?;
        if vm.st().finalized {
            return Err(BackendError::State {
                op,
                why: "the TD is finalized (TDH.MEM.PAGE.ADD needs OP_STATE INITIALIZED)".into(),
            });
        }
        if !VmInner::in_regions(&mem, range.start().raw(), range.len()) {
            return Err(BackendError::Invalid {
                what: "GPA range",
                why: format!("{op}: {range} is not inside the TD's memory regions"),
            });
        }
        let private = mem
            .attributes()
            .is_all(range, PageState::Private)
            .map_err(|e| BackendError::Invalid {
                what: "GPA range",
                why: format!("{op}: {e}"),
            })?;
        if !private {
            return Err(BackendError::Invalid {
                what: "GPA range",
                why: format!("{op}: {range} is not all private"),
            });
        }
        let _g = lock(&vm.mem_lock);
        for (i, chunk) in data.chunks_exact(4096).enumerate() {
            let page: &[u8; 4096] = chunk.try_into().map_err(|_| BackendError::Invalid {
                what: "initial page",
                why: format!("chunk {i} is not 4 KiB"),
            })?;
            let g = range.start().raw() + 4096 * i as u64;
            vm.td
                .add_page(Gpa(g), page, measure)
                .map_err(|e| driver_error("TDH.MEM.PAGE.ADD / TDH.MR.EXTEND", e))?;
        }
        Ok(())
    }

    fn finalize(&self) -> Result<Option<Measurement>, BackendError> {
        let vm = &self.inner;
        let mut st = vm.st();
        if st.finalized {
            return Err(BackendError::State {
                op: "finalize",
                why: "the TD is finalized already".into(),
            });
        }
        let mrtd = vm
            .td
            .finalize()
            .map_err(|e| driver_error("TDH.MR.FINALIZE", e))?;
        st.finalized = true;
        let predicted = vm.td.predicted_mrtd();
        if mrtd != predicted {
            return Err(BackendError::Module {
                op: "TDH.MR.FINALIZE",
                status: format!(
                    "MRTD {} differs from the offline prediction {}",
                    hex(mrtd.as_bytes()),
                    hex(predicted.as_bytes())
                ),
            });
        }
        Ok(Some(mrtd))
    }

    fn convert(&self, range: GpaRange, to: PageState) -> Result<(), BackendError> {
        let vm = &self.inner;
        let range = self.check_page_range("convert", range.start().raw(), range.len())?;
        let mem = vm.memory("convert")?;
        let _g = lock(&vm.mem_lock);
        vm.convert_locked(&mem, range, to)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An exit the VMM is answering; its answer goes into the next TDH.VP.ENTER.
#[derive(Clone, Copy, Debug)]
enum Pending {
    IoIn { port: u16, size: u8 },
    IoOut { port: u16, size: u8 },
    MmioRead { gpa: u64, size: u8 },
    MmioWrite { gpa: u64, size: u8 },
    Cpuid { leaf: u32, subleaf: u32 },
    RdMsr { index: u32 },
    WrMsr { index: u32, value: u64 },
    MapGpa { gpa: u64, size: u64, to: PageState },
    GetQuote { gpa: u64, size: u64 },
    SetupEventNotify { vector: u8 },
    Hlt,
}

/// What a TDVMCALL exit turned into.
enum Vmcall {
    /// The VMM must see it.
    Exit(Pending),
    /// Answered by the backend; re-enter.
    Answered,
    /// ReportFatalError.
    Fatal {
        error_code: u64,
        message: String,
        data_gpa: Option<u64>,
    },
}

/// What an EPT violation came to.
enum Fault {
    /// Resolved (AUG or conversion): re-enter.
    Resolved,
    /// Nothing to do (the page is already there): re-enter, counting towards the stall bound.
    Stalled,
}

/// A vCPU of an [`EmulatedVm`].
#[derive(Debug)]
pub struct EmulatedVcpu {
    vm: Arc<VmInner>,
    index: u32,
    lp: u32,
    shared: Arc<VcpuShared>,
    /// The exit the VMM is answering.
    pending: Option<Pending>,
    /// The VMM's answer to `pending` was invalid: show the exit again.
    represent: bool,
    /// Registers for the next TDH.VP.ENTER (a GHCI response).
    resume: Option<Regs>,
    /// The guest's registers of the last TDVMCALL exit (echoed where the answer is silent).
    exit_regs: Regs,
    data: [u8; 8],
    cpuid: [u32; 4],
    value: u64,
    status: VmcallStatus,
    retry_gpa: u64,
}

#[derive(Debug)]
struct EmulatedKicker {
    engine: Arc<dyn ExecutionEngine>,
    shared: Arc<VcpuShared>,
}

impl VcpuKicker for EmulatedKicker {
    fn kick(&self) {
        self.shared.kicked.store(true, Ordering::SeqCst);
        self.engine.kick(Hpa(self.shared.tdvpr));
    }
}

fn status_raw(s: VmcallStatus) -> u64 {
    match s {
        VmcallStatus::Success => TdVmCallStatus::SUCCESS,
        VmcallStatus::Retry => TdVmCallStatus::RETRY,
        VmcallStatus::InvalidOperand => TdVmCallStatus::INVALID_OPERAND,
        VmcallStatus::GpaInUse => TdVmCallStatus::GPA_INUSE,
        VmcallStatus::AlignError => TdVmCallStatus::ALIGN_ERROR,
    }
    .raw()
}

fn le_value(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

impl EmulatedVcpu {
    /// TDVPR physical address (identifies the vCPU to the module and the engine; a test makes
    /// a [`ScriptedVcpu`](crate::emulated::ScriptedVcpu) of it).
    pub fn tdvpr(&self) -> Hpa {
        Hpa(self.shared.tdvpr)
    }

    /// The logical processor the vCPU is entered on.
    pub fn lp(&self) -> u32 {
        self.lp
    }

    /// Prepares the exit buffers and returns the VMM's view of `p`.
    fn exit_view(&mut self, p: Pending) -> TdExit<'_> {
        self.pending = Some(p);
        self.status = VmcallStatus::Success;
        self.cpuid = [0; 4];
        self.value = 0;
        match p {
            Pending::IoIn { port, size } => {
                self.data = [0; 8];
                TdExit::IoIn {
                    port,
                    data: &mut self.data[..usize::from(size)],
                }
            }
            Pending::IoOut { port, size } => TdExit::IoOut {
                port,
                data: &self.data[..usize::from(size)],
            },
            Pending::MmioRead { gpa, size } => {
                self.data = [0; 8];
                TdExit::MmioRead {
                    gpa,
                    data: &mut self.data[..usize::from(size)],
                }
            }
            Pending::MmioWrite { gpa, size } => TdExit::MmioWrite {
                gpa,
                data: &self.data[..usize::from(size)],
            },
            Pending::Cpuid { leaf, subleaf } => TdExit::Cpuid {
                leaf,
                subleaf,
                regs: &mut self.cpuid,
            },
            Pending::RdMsr { index } => TdExit::RdMsr {
                index,
                value: &mut self.value,
                status: &mut self.status,
            },
            Pending::WrMsr { index, value } => TdExit::WrMsr {
                index,
                value,
                status: &mut self.status,
            },
            Pending::MapGpa { gpa, size, to } => {
                self.retry_gpa = gpa;
                TdExit::MapGpa {
                    gpa,
                    size,
                    to,
                    status: &mut self.status,
                    retry_gpa: &mut self.retry_gpa,
                }
            }
            Pending::GetQuote { gpa, size } => TdExit::GetQuote {
                gpa,
                size,
                status: &mut self.status,
            },
            Pending::SetupEventNotify { vector } => TdExit::SetupEventNotifyInterrupt {
                vector,
                status: &mut self.status,
            },
            Pending::Hlt => TdExit::Hlt,
        }
    }

    /// The GHCI response registers for the VMM's answer to `p`.
    fn answer(&self, p: Pending) -> Result<Regs, BackendError> {
        let mut r = self.exit_regs;
        r.r10 = status_raw(self.status);
        match p {
            Pending::IoIn { size, .. } | Pending::MmioRead { size, .. } => {
                r.r10 = TdVmCallStatus::SUCCESS.raw();
                r.r11 = le_value(&self.data[..usize::from(size)]);
            }
            Pending::IoOut { .. } | Pending::MmioWrite { .. } | Pending::Hlt => {
                r.r10 = TdVmCallStatus::SUCCESS.raw();
            }
            Pending::Cpuid { .. } => {
                r.r10 = TdVmCallStatus::SUCCESS.raw();
                r.r12 = u64::from(self.cpuid[0]);
                r.r13 = u64::from(self.cpuid[1]);
                r.r14 = u64::from(self.cpuid[2]);
                r.r15 = u64::from(self.cpuid[3]);
            }
            Pending::RdMsr { .. } => {
                r.r11 = if self.status == VmcallStatus::Success {
                    self.value
                } else {
                    0
                };
            }
            Pending::MapGpa { gpa, size, to } => {
                let sbit = match to {
                    PageState::Shared => self.vm.gpaw().shared_mask(),
                    PageState::Private => 0,
                };
                match self.status {
                    VmcallStatus::Success => {}
                    VmcallStatus::Retry => {
                        let g = self.retry_gpa;
                        if g % 4096 != 0 || g < gpa || g >= gpa.saturating_add(size) {
                            return Err(BackendError::Invalid {
                                what: "MapGPA retry_gpa",
                                why: format!(
                                    "{g:#x} is not a page inside the requested \
                                     [{gpa:#x}, {:#x})",
                                    gpa.saturating_add(size)
                                ),
                            });
                        }
                        r.r11 = g | sbit;
                    }
                    // Where processing stopped: the start, nothing was converted.
                    _ => r.r11 = gpa | sbit,
                }
            }
            Pending::WrMsr { .. } | Pending::GetQuote { .. } | Pending::SetupEventNotify { .. } => {
            }
        }
        Ok(r)
    }
}

impl EmulatedVcpu {
    /// Answers the TDVMCALL of the last exit from the backend: R10 = `status`, R11..R15 =
    /// `out` when given, other registers as the guest sent them.
    fn answered(&mut self, status: TdVmCallStatus, out: Option<[u64; 5]>) -> Vmcall {
        let mut r = self.exit_regs;
        r.r10 = status.raw();
        if let Some([r11, r12, r13, r14, r15]) = out {
            (r.r11, r.r12, r.r13, r.r14, r.r15) = (r11, r12, r13, r14, r15);
        }
        self.resume = Some(r);
        Vmcall::Answered
    }

    /// Decodes a TDVMCALL exit; sets `resume` when the backend answers it itself.
    fn vmcall(&mut self, regs: Regs) -> Vmcall {
        self.exit_regs = regs;
        let gpaw = self.vm.gpaw();
        let sbit = gpaw.shared_mask();
        let req = match TdVmCallRequest::decode(&regs, gpaw) {
            Ok(req) => req,
            Err(e) => {
                tracing::warn!(
                    vcpu = self.index,
                    sub_function = regs.r11,
                    error = %e,
                    "malformed TDG.VP.VMCALL answered with {}",
                    e.status()
                );
                return self.answered(e.status(), None);
            }
        };
        let pending = match req {
            TdVmCallRequest::Cpuid { leaf, subleaf } => Pending::Cpuid { leaf, subleaf },
            TdVmCallRequest::Hlt { .. } => Pending::Hlt,
            TdVmCallRequest::Io {
                size,
                direction,
                port,
                data,
            } => match direction {
                Direction::Read => Pending::IoIn { port, size },
                Direction::Write => {
                    self.data = [0; 8];
                    self.data[..4].copy_from_slice(&data.to_le_bytes());
                    Pending::IoOut { port, size }
                }
            },
            TdVmCallRequest::Rdmsr { index } => Pending::RdMsr { index },
            TdVmCallRequest::Wrmsr { index, value } => Pending::WrMsr { index, value },
            TdVmCallRequest::Mmio {
                size,
                direction,
                gpa,
                data,
            } => {
                let gpa = gpa.raw() & !sbit;
                match direction {
                    Direction::Read => Pending::MmioRead { gpa, size },
                    Direction::Write => {
                        self.data = data.to_le_bytes();
                        Pending::MmioWrite { gpa, size }
                    }
                }
            }
            TdVmCallRequest::Wbinvd { .. } => {
                // KVM handles WBINVD in the kernel (nothing to write back on the emulator).
                return self.answered(TdVmCallStatus::SUCCESS, None);
            }
            TdVmCallRequest::GetTdVmCallInfo { leaf } => {
                return match leaf {
                    0 => self.answered(TdVmCallStatus::SUCCESS, Some([0; 5])),
                    1 => self.answered(
                        TdVmCallStatus::SUCCESS,
                        Some([
                            TDVMCALLINFO_GET_QUOTE | TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT,
                            0,
                            0,
                            0,
                            0,
                        ]),
                    ),
                    _ => self.answered(TdVmCallStatus::INVALID_OPERAND, None),
                };
            }
            TdVmCallRequest::MapGpa { start, size } => {
                let to = if start.is_shared(gpaw) {
                    PageState::Shared
                } else {
                    PageState::Private
                };
                Pending::MapGpa {
                    gpa: start.raw() & !sbit,
                    size,
                    to,
                }
            }
            TdVmCallRequest::GetQuote { gpa, size } => {
                // KVM (`tdx_get_quote`): page-aligned buffer, non-zero page-multiple size.
                if gpa.raw() % 4096 != 0 || size == 0 || size % 4096 != 0 {
                    tracing::warn!(
                        vcpu = self.index,
                        gpa = gpa.raw(),
                        size,
                        "GetQuote buffer not page-aligned: INVALID_OPERAND"
                    );
                    return self.answered(TdVmCallStatus::INVALID_OPERAND, None);
                }
                Pending::GetQuote {
                    gpa: gpa.raw() & !sbit,
                    size,
                }
            }
            TdVmCallRequest::ReportFatalError { code, gpa, message } => {
                let text = req
                    .fatal_error_message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        let n = message
                            .iter()
                            .position(|&b| b == 0)
                            .unwrap_or(message.len());
                        String::from_utf8_lossy(&message[..n]).into_owned()
                    });
                return Vmcall::Fatal {
                    error_code: code,
                    message: text,
                    data_gpa: (code & FATAL_ERROR_GPA_VALID != 0).then_some(gpa.raw()),
                };
            }
            TdVmCallRequest::SetupEventNotifyInterrupt { vector } => {
                Pending::SetupEventNotify { vector }
            }
            TdVmCallRequest::Service { .. }
            | TdVmCallRequest::Other { .. }
            | TdVmCallRequest::Vendor { .. } => {
                tracing::debug!(
                    vcpu = self.index,
                    r10 = regs.r10,
                    r11 = regs.r11,
                    "unsupported TDG.VP.VMCALL sub-function"
                );
                return self.answered(TdVmCallStatus::SUBFUNC_UNSUPPORTED, None);
            }
        };
        Vmcall::Exit(pending)
    }

    /// An EPT violation at `gpa` (see the module docs).
    fn ept_violation(&self, gpa: u64) -> Result<Fault, BackendError> {
        let vm = &self.vm;
        let gpaw = vm.gpaw();
        if !Gpa(gpa).is_valid(gpaw) {
            return Err(BackendError::Module {
                op: "TDH.VP.ENTER",
                status: format!("EPT violation at GPA {gpa:#x} outside {gpaw:?}"),
            });
        }
        let shared_access = Gpa(gpa).is_shared(gpaw);
        let page = gpa & !gpaw.shared_mask() & !0xFFF;
        let mem = vm.memory("guest memory access")?;
        let _g = lock(&vm.mem_lock);
        let state = mem
            .attributes()
            .state(Gpa(page))
            .map_err(|e| BackendError::Module {
                op: "TDH.VP.ENTER",
                status: format!("EPT violation at GPA {gpa:#x}: {e}"),
            })?;
        let range = self.vm_page(page)?;
        if shared_access {
            if state == PageState::Shared {
                return Ok(Fault::Stalled);
            }
            tracing::warn!(
                vcpu = self.index,
                gpa,
                "shared access to a private page: implicit conversion to shared"
            );
            vm.convert_locked(&mem, range, PageState::Shared)?;
            return Ok(Fault::Resolved);
        }
        if !VmInner::in_regions(&mem, page, 4096) {
            return Err(BackendError::Invalid {
                what: "guest private access",
                why: format!(
                    "vCPU {} faulted at private GPA {gpa:#x}, outside the TD's memory",
                    self.index
                ),
            });
        }
        if state == PageState::Shared {
            tracing::warn!(
                vcpu = self.index,
                gpa,
                "private access to a shared page: implicit conversion to private"
            );
            vm.convert_locked(&mem, range, PageState::Private)?;
        }
        if vm.td.private_page_covering(page).is_some() {
            return Ok(Fault::Stalled);
        }
        vm.td
            .aug_page(self.lp, Gpa(page), 0)
            .map_err(|e| driver_error("TDH.MEM.PAGE.AUG (lazy accept)", e))?;
        Ok(Fault::Resolved)
    }

    fn vm_page(&self, page: u64) -> Result<GpaRange, BackendError> {
        GpaRange::new_pages(Gpa(page), 4096, self.vm.gpaw()).map_err(|e| BackendError::Module {
            op: "TDH.VP.ENTER",
            status: format!("EPT violation at GPA {page:#x}: {e}"),
        })
    }

    /// TDH.VP.ENTER on the vCPU's LP, retrying `TDX_OPERAND_BUSY`.
    fn enter(&mut self) -> Result<VpEnterExit, BackendError> {
        let lp = self
            .vm
            .td
            .module()
            .lp(self.lp)
            .ok_or_else(|| BackendError::Module {
                op: "TDH.VP.ENTER",
                status: format!("no logical processor {}", self.lp),
            })?;
        let input = VpEnterInput {
            tdvpr: Hpa(self.shared.tdvpr),
            host_recoverability_hint: false,
            resume_l1: false,
            regs: self.resume.take().unwrap_or_default(),
        };
        let mut busy = 0;
        loop {
            match tdh_vp_enter(lp, &input) {
                Ok(exit) => return Ok(exit),
                Err(e)
                    if e.status.code() == StatusCode::OPERAND_BUSY && busy < MAX_BUSY_RETRIES =>
                {
                    busy += 1;
                    std::thread::yield_now();
                }
                Err(e) => {
                    // The answer was not delivered: keep it for the next attempt.
                    self.resume = Some(input.regs);
                    if e.status.code() == StatusCode::TD_FATAL {
                        let why = format!("TDH.VP.ENTER: {e}");
                        self.vm.mark_dead(why.clone());
                        return Err(BackendError::Dead(why));
                    }
                    return Err(seamcall_error("TDH.VP.ENTER", &e));
                }
            }
        }
    }
}

impl TdVcpu for EmulatedVcpu {
    fn run(&mut self) -> Result<TdExit<'_>, BackendError> {
        {
            let st = self.vm.st();
            if let Some(why) = &st.dead {
                return Err(BackendError::Dead(why.clone()));
            }
            if !st.finalized {
                return Err(BackendError::State {
                    op: "run",
                    why: "the TD is not finalized (TDH.MR.FINALIZE)".into(),
                });
            }
            if st.memory.is_none() {
                return Err(BackendError::State {
                    op: "run",
                    why: "the TD has no memory (set_memory), the engine is not configured".into(),
                });
            }
        }
        if let Some(p) = self.pending {
            if std::mem::take(&mut self.represent) {
                return Ok(self.exit_view(p));
            }
            match self.answer(p) {
                Ok(regs) => {
                    self.pending = None;
                    self.resume = Some(regs);
                }
                Err(e) => {
                    // The guest has not seen the answer: the next run shows the same exit
                    // again so the VMM can answer it correctly.
                    self.represent = true;
                    return Err(e);
                }
            }
        }
        if self.shared.kicked.swap(false, Ordering::SeqCst) {
            return Ok(TdExit::Interrupted);
        }
        let mut stalled = 0u32;
        loop {
            let exit = self.enter()?;
            match exit {
                VpEnterExit::Tdvmcall { regs } => match self.vmcall(regs) {
                    Vmcall::Exit(p) => return Ok(self.exit_view(p)),
                    Vmcall::Answered => stalled = 0,
                    Vmcall::Fatal {
                        error_code,
                        message,
                        data_gpa,
                    } => {
                        self.vm.mark_dead(format!(
                            "the guest reported a fatal error {error_code:#x}: {message}"
                        ));
                        return Ok(TdExit::ReportFatalError {
                            error_code,
                            message,
                            data_gpa,
                        });
                    }
                },
                VpEnterExit::Async {
                    exit_reason, gpa, ..
                } => match exit_reason {
                    VmxExitReason::EXTERNAL_INTERRUPT => {
                        if self.shared.kicked.swap(false, Ordering::SeqCst) || self.vm.scripted {
                            return Ok(TdExit::Interrupted);
                        }
                        stalled = 0;
                    }
                    VmxExitReason::TRIPLE_FAULT => {
                        self.vm
                            .mark_dead(format!("vCPU {} triple-faulted", self.index));
                        return Ok(TdExit::Shutdown);
                    }
                    VmxExitReason::EPT_VIOLATION => match self.ept_violation(gpa.raw())? {
                        Fault::Resolved => stalled = 0,
                        Fault::Stalled => {
                            stalled += 1;
                            if stalled > MAX_STALLED_ENTRIES {
                                return Err(BackendError::Dead(format!(
                                    "vCPU {} makes no progress: EPT violation at GPA {:#x} \
                                     {stalled} times with nothing left to map",
                                    self.index,
                                    gpa.raw()
                                )));
                            }
                        }
                    },
                    other => {
                        return Err(BackendError::Module {
                            op: "TDH.VP.ENTER",
                            status: format!("unexpected exit reason {other}"),
                        })
                    }
                },
            }
        }
    }

    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        Arc::new(EmulatedKicker {
            engine: Arc::clone(&self.vm.engine),
            shared: Arc::clone(&self.shared),
        })
    }

    fn index(&self) -> u32 {
        self.index
    }
}
