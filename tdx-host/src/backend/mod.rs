//! The seam a VMM is written against: [`TdxBackend`] → [`TdVm`] → [`TdVcpu`], and the
//! [`TdExit`] a vCPU run returns.
//!
//! Two backends implement it: the Linux KVM TDX uAPI on TDX hardware, and the emulated backend
//! (the host driver over the software TDX module, with guest code executed by an execution
//! engine). The shape follows what both can do:
//!
//! 1. [`TdxBackend::create_vm`] with a [`TdVmConfig`] (TD attributes, XFAM, CPUID, vCPU
//!    count, GPA width). On KVM: `KVM_CREATE_VM` type 5 and `KVM_TDX_INIT_VM`; emulated:
//!    TDH.MNG.CREATE … TDH.MNG.INIT.
//! 2. [`TdVm::set_memory`] with the VMM's shared backing ([`SharedGuestMemory`], which carries
//!    the private/shared [`AttributeMap`](tdx_memory::attributes::AttributeMap)). Private
//!    backing is the backend's business (guest_memfd on KVM, TDX-module pages on the
//!    emulator); devices only ever see the shared view.
//! 3. [`TdVm::create_vcpu`] for every vCPU, with its initial RCX (TDVF: the TD HOB's GPA).
//! 4. [`TdVm::add_initial_pages`] for the initial image: TDH.MEM.PAGE.ADD per page, then (when
//!    `measure`) TDH.MR.EXTEND over it, the order KVM uses and the VMM's offline MRTD predicts.
//! 5. [`TdVm::finalize`] (TDH.MR.FINALIZE): MRTD is sealed, vCPUs may run.
//! 6. Each vCPU on its own thread: [`TdVcpu::run`] until an exit the VMM handles; the data of
//!    an exit that needs an answer (port read, MMIO read, CPUID, …) is written into the exit's
//!    buffers and goes back to the guest on the next `run`. A [`VcpuKicker`] makes a running
//!    vCPU return [`TdExit::Interrupted`] from another thread.
//! 7. Conversions: the guest asks with `TDG.VP.VMCALL<MapGPA>` ([`TdExit::MapGpa`]); the VMM
//!    decides and calls [`TdVm::convert`], which updates the attribute map and the private
//!    backing together.
//!
//! Exits that the host kernel (KVM) handles itself on hardware are handled inside the
//! backend on the emulator too: an EPT violation on a private GPA that is not mapped yet is
//! answered with TDH.MEM.PAGE.AUG (lazy accept), as KVM does on a guest_memfd fault.
use std::fmt;

pub mod emulated;
pub mod kvm;

use tdx_abi::gpa::Gpaw;
use tdx_abi::measure::Measurement;
use tdx_memory::attributes::PageState;
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::SharedGuestMemory;

/// What a backend can create, as it reports before any TD exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TdxCapabilities {
    /// TD ATTRIBUTES bits the host may set (`KVM_TDX_CAPABILITIES.supported_attrs`).
    pub supported_attributes: u64,
    /// XFAM bits the host may set.
    pub supported_xfam: u64,
    /// Highest number of vCPUs per TD.
    pub max_vcpus: u32,
    /// GPA widths the backend runs.
    pub gpaws: Vec<Gpaw>,
    /// CPUID leaves the host may configure: (leaf, subleaf or `None`, EAX/EBX/ECX/EDX masks).
    pub configurable_cpuid: Vec<(u32, Option<u32>, [u32; 4])>,
}

/// One CPUID value the host gives the TD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidEntry {
    /// Leaf (EAX).
    pub leaf: u32,
    /// Subleaf (ECX), `None` for leaves without subleaves.
    pub subleaf: Option<u32>,
    /// EAX, EBX, ECX, EDX.
    pub regs: [u32; 4],
}

/// How the vCPUs of a TD start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GuestEntry {
    /// The TDX initial state: 32-bit protected mode, paging off, RIP = 0xFFFF_FFF0 (TDVF).
    /// The only entry real TDX hardware offers.
    #[default]
    ResetVector,
    /// Emulated backend only: 64-bit mode at CPL 0 with paging on (see the engine's docs
    /// for the exact register state), for ELF payloads.
    Long64 {
        /// Entry point.
        rip: u64,
        /// CR3: GPA of the PML4 (the page tables must be in the initial image).
        cr3: u64,
    },
}

/// A TD's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdVmConfig {
    /// TD ATTRIBUTES (DEBUG bit 0, SEPT_VE_DISABLE bit 28, …).
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// Number of vCPUs the TD will have (MAX_VCPUS).
    pub max_vcpus: u16,
    /// GPA width (selects the shared bit: 47 for [`Gpaw::Gpaw48`], 51 for [`Gpaw::Gpaw52`]).
    pub gpaw: Gpaw,
    /// TSC frequency in Hz (0: the backend's default).
    pub tsc_hz: u64,
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// CPUID values; each must be one the backend lists as configurable.
    pub cpuid: Vec<CpuidEntry>,
    /// How the vCPUs start.
    pub entry: GuestEntry,
}

impl Default for TdVmConfig {
    fn default() -> Self {
        TdVmConfig {
            attributes: 0,
            xfam: 0x3,
            max_vcpus: 1,
            gpaw: Gpaw::Gpaw48,
            tsc_hz: 0,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            cpuid: Vec::new(),
            entry: GuestEntry::ResetVector,
        }
    }
}

/// Why a backend call failed. Messages name the operation and the value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The platform cannot run TDs through this backend; says what is missing.
    #[error("TDX unavailable: {0}")]
    Unavailable(String),
    /// The configuration or an argument was refused before reaching the module or kernel.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why, with the value.
        why: String,
    },
    /// A call was made in the wrong phase (e.g. adding pages after finalize).
    #[error("{op} not allowed: {why}")]
    State {
        /// The operation.
        op: &'static str,
        /// The phase it met.
        why: String,
    },
    /// A kernel call failed.
    #[error("{op}: {source}")]
    Kvm {
        /// The ioctl or operation.
        op: &'static str,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// The TDX module refused a SEAMCALL (emulated: the driver's error; KVM: `hw_error`).
    #[error("{op}: TDX module: {status}")]
    Module {
        /// The operation.
        op: &'static str,
        /// The decoded status.
        status: String,
    },
    /// The TD can no longer run (fatal error, teardown, poisoned page).
    #[error("the TD is dead: {0}")]
    Dead(String),
}

/// The answer of a TDG.VP.VMCALL the VMM completes (GHCI status in R10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VmcallStatus {
    /// TDG.VP.VMCALL_SUCCESS.
    #[default]
    Success,
    /// TDG.VP.VMCALL_RETRY (MapGPA: R11 = the GPA to retry from).
    Retry,
    /// TDG.VP.VMCALL_INVALID_OPERAND.
    InvalidOperand,
    /// TDG.VP.VMCALL_GPA_INUSE.
    GpaInUse,
    /// TDG.VP.VMCALL_ALIGN_ERROR.
    AlignError,
}

/// Why a vCPU stopped running. Data the guest waits for is written into the `&mut` fields and
/// returned to the guest by the next [`TdVcpu::run`].
#[derive(Debug)]
#[non_exhaustive]
pub enum TdExit<'a> {
    /// Port read (TDVMCALL<Instruction.IO>, or KVM_EXIT_IO): fill `data`.
    IoIn {
        /// Port.
        port: u16,
        /// 1, 2 or 4 bytes to fill.
        data: &'a mut [u8],
    },
    /// Port write.
    IoOut {
        /// Port.
        port: u16,
        /// 1, 2 or 4 bytes written.
        data: &'a [u8],
    },
    /// MMIO read at a shared GPA (shared bit cleared): fill `data`.
    MmioRead {
        /// GPA (without the shared bit).
        gpa: u64,
        /// 1, 2, 4 or 8 bytes to fill.
        data: &'a mut [u8],
    },
    /// MMIO write at a shared GPA (shared bit cleared).
    MmioWrite {
        /// GPA (without the shared bit).
        gpa: u64,
        /// 1, 2, 4 or 8 bytes written.
        data: &'a [u8],
    },
    /// CPUID the module left to the host (TDVMCALL<Instruction.CPUID>): fill `regs`.
    Cpuid {
        /// Leaf.
        leaf: u32,
        /// Subleaf.
        subleaf: u32,
        /// EAX, EBX, ECX, EDX to return.
        regs: &'a mut [u32; 4],
    },
    /// RDMSR: fill `value` or set `status`.
    RdMsr {
        /// MSR index.
        index: u32,
        /// The value.
        value: &'a mut u64,
        /// GHCI status.
        status: &'a mut VmcallStatus,
    },
    /// WRMSR.
    WrMsr {
        /// MSR index.
        index: u32,
        /// The value.
        value: u64,
        /// GHCI status.
        status: &'a mut VmcallStatus,
    },
    /// `TDG.VP.VMCALL<MapGPA>`: the guest asks for `[gpa, gpa + size)` to become shared or
    /// private. The VMM calls [`TdVm::convert`] (or refuses) and sets `status`
    /// ([`VmcallStatus::Retry`] with `retry_gpa` for a partial conversion).
    MapGpa {
        /// Start (shared bit cleared).
        gpa: u64,
        /// Size in bytes.
        size: u64,
        /// Requested state.
        to: PageState,
        /// GHCI status.
        status: &'a mut VmcallStatus,
        /// Where to retry from ([`VmcallStatus::Retry`]).
        retry_gpa: &'a mut u64,
    },
    /// `TDG.VP.VMCALL<GetQuote>`: the shared buffer `[gpa, gpa + size)` holds a GetQuote header
    /// and the TDREPORT; the VMM writes the quote there (or its status in the header).
    GetQuote {
        /// Buffer GPA (shared bit cleared).
        gpa: u64,
        /// Buffer size.
        size: u64,
        /// GHCI status.
        status: &'a mut VmcallStatus,
    },
    /// `TDG.VP.VMCALL<SetupEventNotifyInterrupt>`.
    SetupEventNotifyInterrupt {
        /// Vector the guest wants for event notification.
        vector: u8,
        /// GHCI status.
        status: &'a mut VmcallStatus,
    },
    /// `TDG.VP.VMCALL<ReportFatalError>`: the TD is dead.
    ReportFatalError {
        /// R12: error code.
        error_code: u64,
        /// The guest's message (from R14..R15/RBX… per GHCI), empty when none.
        message: String,
        /// R13: GPA of additional data, when valid.
        data_gpa: Option<u64>,
    },
    /// The vCPU halted (TDVMCALL<Instruction.HLT>) with interrupts blocked or nothing pending.
    Hlt,
    /// The TD asked to shut down or reset, or triple-faulted.
    Shutdown,
    /// [`VcpuKicker::kick`] made the run return.
    Interrupted,
}

/// Makes a running vCPU return [`TdExit::Interrupted`] from another thread.
pub trait VcpuKicker: Send + Sync + fmt::Debug {
    /// Kick: the vCPU's current or next `run` returns soon with [`TdExit::Interrupted`].
    fn kick(&self);
}

/// A TDX backend: creates TDs.
pub trait TdxBackend: Send + Sync {
    /// The TD type.
    type Vm: TdVm;

    /// Short name (`"kvm"`, `"emulated"`).
    fn name(&self) -> &'static str;

    /// What the backend offers.
    fn capabilities(&self) -> Result<TdxCapabilities, BackendError>;

    /// Creates and initialises a TD (not finalized, no memory, no vCPUs).
    fn create_vm(&self, config: &TdVmConfig) -> Result<Self::Vm, BackendError>;
}

/// A TD under construction or running.
pub trait TdVm: Send + Sync {
    /// The vCPU type.
    type Vcpu: TdVcpu;

    /// Gives the TD its guest RAM: `memory`'s regions are the shared backing at their GPAs,
    /// its attribute map the private/shared state (pages start private). Called once, before
    /// pages are added.
    fn set_memory(&self, memory: &SharedGuestMemory) -> Result<(), BackendError>;

    /// Creates vCPU `index` (0-based, below `max_vcpus`) with initial RCX `rcx`.
    fn create_vcpu(&self, index: u32, rcx: u64) -> Result<Self::Vcpu, BackendError>;

    /// Adds `data` (a multiple of 4 KiB) as initial private pages at `gpa` (4 KiB aligned):
    /// TDH.MEM.PAGE.ADD per page, then 16 × TDH.MR.EXTEND per page when `measure`.
    fn add_initial_pages(&self, gpa: u64, data: &[u8], measure: bool) -> Result<(), BackendError>;

    /// Seals the measurement (TDH.MR.FINALIZE). Returns MRTD where the backend can read it
    /// (emulated; KVM has no interface for it and returns `None`).
    fn finalize(&self) -> Result<Option<Measurement>, BackendError>;

    /// Converts `range` to `to`: updates the attribute map and the private backing (on the
    /// emulator, private→shared removes the S-EPT mappings: BLOCK, TRACK, kick, REMOVE).
    fn convert(&self, range: GpaRange, to: PageState) -> Result<(), BackendError>;
}

/// A vCPU of a TD. Runs on one thread at a time.
pub trait TdVcpu: Send {
    /// Runs the guest until the next exit the VMM must see.
    fn run(&mut self) -> Result<TdExit<'_>, BackendError>;

    /// A handle that interrupts [`TdVcpu::run`] from another thread.
    fn kicker(&self) -> std::sync::Arc<dyn VcpuKicker>;

    /// The vCPU's index.
    fn index(&self) -> u32;
}
