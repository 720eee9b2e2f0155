//! # tdx-host
//!
//! The host side of TDX:
//!
//! * [`emulated`]: a software TDX module that implements the SEAMCALL and TDCALL interfaces
//!   with the real module's rules and status codes, on an emulated platform (physical memory,
//!   CMRs, logical processors, HKIDs). Host code reaches it only through
//!   [`tdx_abi::call::Seamcall`].
//! * [`driver`]: the host driver, written only against [`tdx_abi::call::Seamcall`] and the typed
//!   wrappers: it brings a TDX module up as Linux does and builds, runs and tears down TDs. The
//!   same code would run over the real instruction in ring 0.
//! * [`backend`]: the `TdxBackend` → `TdVm` → `TdVcpu` traits a VMM is written against, and
//!   the [`backend::TdExit`] a vCPU run returns.
#![deny(unsafe_op_in_unsafe_fn)]

pub use tdx_abi;
pub use tdx_memory;

pub mod backend;
pub mod driver;
pub mod emulated;
