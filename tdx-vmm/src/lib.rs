//! # tdx-vmm
//!
//! The reference VMM of the TDX host crate family, as a library (the `tdx-vmm` binary is a thin
//! CLI over it):
//!
//! * [`cli`]: the `tdx-vmm` command line (`launch`, `measure`, `inspect`).
//! * [`config`]: `td.toml`, the description of one TD.
//! * [`tdvf`]: the TDVF metadata of a firmware image (OVMF footer table, section table).
//! * [`hob`]: the TD HOB handed to the firmware or payload in RCX.
//! * [`elf`]: the ELF payload loader (x86-64 executables, the "ELF payload contract").
//! * [`image`]: a config and its payload or firmware turned into a [`plan::LaunchPlan`].
//! * [`measure`]: the MRTD a plan produces, computed offline.
//! * [`plan`]: the [`plan::LaunchPlan`] — everything needed to launch one TD (TD config, guest
//!   RAM size, the initial image as measured/unmeasured regions, vCPUs, devices). Loaders build
//!   it from `td.toml` and a payload or firmware; the exit loop runs it on any
//!   [`tdx_host::backend::TdxBackend`].
pub mod bench;
pub mod cli;
pub mod config;
pub mod elf;
pub mod hob;
pub mod image;
pub mod measure;
pub mod plan;
pub mod tdvf;
pub mod vmm;
