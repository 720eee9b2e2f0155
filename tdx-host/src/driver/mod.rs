//! The host driver: brings a TDX module up and builds, runs and tears down TDs, written only
//! against [`tdx_abi::call::Seamcall`] and host physical memory ([`HostMemory`]), so the same
//! code would run over the real SEAMCALL instruction in ring 0.
//!
//! * [`TdxModule::init`]: module bring-up exactly as Linux does (kvm-tdx-host.md §2.4):
//!   TDH.SYS.INIT, TDH.SYS.LP.INIT on every logical processor, metadata with TDH.SYS.RD into
//!   a [`TdxModuleInfo`], the TDMR/PAMT plan of `tdx_memory::tdmr` with PAMTs from the
//!   [`FrameAllocator`], the TDMR_INFO array and PA array in host memory (512-byte aligned),
//!   TDH.SYS.CONFIG, TDH.SYS.KEY.CONFIG once per package, TDH.SYS.TDMR.INIT loops.
//! * [`bring_up`]: an emulated platform and its module brought up by [`TdxModule::init`] in one
//!   call (tests, benches, the emulated backend).
//! * [`TdBuilder`] / [`Td`]: TD creation (HKID from the [`HkidPool`], TDCS, TD_PARAMS),
//!   vCPUs, S-EPT on demand, measured initial pages with an offline MRTD prediction,
//!   finalization, runtime AUG/removal and teardown with reclaim.
//!
//! Transient statuses (`TDX_RND_NO_ENTROPY`, key-generation failures, and `TDX_OPERAND_BUSY`
//! where KVM retries it) are retried a bounded number of times ([`RetryPolicy`]); everything
//! else is a typed [`DriverError`] naming the leaf and status. Nothing panics.

pub mod emulated_glue;
pub mod hkid;
pub mod memory;
pub mod module;
pub mod seam;
pub mod td;

pub use emulated_glue::{bring_up, BringUpError, EmulatedTdxModule};
pub use hkid::{HkidError, HkidPool};
pub use memory::{FrameAllocator, FrameError, HostMemory, HostMemoryError, FRAME_SIZE};
pub use module::{
    BringUpStep, CpuidConfig, LogicalCpu, PlatformDesc, RetryPolicy, TdxModule, TdxModuleInfo,
    TdxModuleVersion,
};
pub use seam::SeamcallFailure;
pub use td::{CpuidValue, PrivatePage, Td, TdBuilder, TdConfig, VcpuId, VcpuPages};

/// Everything that can go wrong in the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A SEAMCALL failed.
    #[error(transparent)]
    Seamcall(#[from] SeamcallFailure),
    /// A bring-up SEAMCALL failed.
    #[error("module bring-up failed at {step:?}: {source}")]
    BringUp {
        /// Which step.
        step: BringUpStep,
        /// The failing SEAMCALL.
        source: SeamcallFailure,
    },
    /// The platform has no logical processors.
    #[error("no logical processors")]
    NoLogicalCpus,
    /// A logical-processor index is out of range.
    #[error("no logical processor {0}")]
    NoSuchLp(u32),
    /// The module lacks a feature Linux requires.
    #[error("TDX_FEATURES0 {features0:#x} lacks required bit {bit}")]
    MissingFeature {
        /// TDX_FEATURES0 as read.
        features0: u64,
        /// The missing bit.
        bit: u32,
    },
    /// A metadata value is unusable.
    #[error("metadata field {field:#x} = {value:#x}: {why}")]
    BadMetadata {
        /// Field id.
        field: u64,
        /// Value read.
        value: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The TDMR limits read from the module are unusable.
    #[error(transparent)]
    Constraints(#[from] tdx_memory::tdmr::ConstraintsError),
    /// The TDMR/PAMT plan failed.
    #[error(transparent)]
    Plan(#[from] tdx_memory::tdmr::PlanError),
    /// The TDMR_INFO layout failed.
    #[error(transparent)]
    Layout(#[from] tdx_memory::tdmr::LayoutError),
    /// TDH.SYS.TDMR.INIT did not finish within its bound.
    #[error("TDH.SYS.TDMR.INIT of TDMR {tdmr_base:#x} did not finish in {calls} calls")]
    TdmrInitNoProgress {
        /// TDMR base.
        tdmr_base: u64,
        /// Calls made.
        calls: u64,
    },
    /// TDH.PHYMEM.CACHE.WB kept asking to be resumed.
    #[error("TDH.PHYMEM.CACHE.WB not complete after {resumes} resumptions")]
    CacheWbNoProgress {
        /// Resumptions made.
        resumes: u32,
    },
    /// Frame allocation failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// HKID allocation failed.
    #[error(transparent)]
    Hkid(#[from] HkidError),
    /// Host memory access failed.
    #[error(transparent)]
    HostMemory(#[from] HostMemoryError),
    /// The TD configuration does not fit the module.
    #[error("invalid TD configuration: {what} = {value:#x}")]
    InvalidTdConfig {
        /// What is wrong.
        what: &'static str,
        /// The offending value.
        value: u64,
    },
    /// No private page at this GPA.
    #[error("no private page at GPA {0:#x}")]
    NoSuchPage(u64),
    /// The offline measurement refused an input.
    #[error("measurement: {0}")]
    Measure(tdx_abi::measure::MeasureError),
}

impl DriverError {
    pub(crate) fn bring_up(step: BringUpStep, source: SeamcallFailure) -> Self {
        Self::BringUp { step, source }
    }

    /// The failing SEAMCALL, if this error is one.
    pub fn seamcall(&self) -> Option<&SeamcallFailure> {
        match self {
            Self::Seamcall(s) | Self::BringUp { source: s, .. } => Some(s),
            _ => None,
        }
    }
}
