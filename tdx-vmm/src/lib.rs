//! # tdx-vmm
//!
//! The reference VMM of the TDX host crate family, as a library (the `tdx-vmm` binary is a thin
//! CLI over it):
//!
//! * [`plan`]: the [`plan::LaunchPlan`] — everything needed to launch one TD (TD config, guest
//!   RAM size, the initial image as measured/unmeasured regions, vCPUs, devices). Loaders build
//!   it from `td.toml` and a payload or firmware; the exit loop runs it on any
//!   [`tdx_host::backend::TdxBackend`].
pub mod plan;
