//! # tdx-host
//!
//! The host side of TDX: the `TdxBackend` → `TdVm` → `TdVcpu` traits a VMM is written against,
//! the backend over the Linux KVM TDX uAPI (real hardware), and the bundled emulated backend
//! (a software TDX module whose TDs run guest code under ordinary KVM).
//!
//! Status: the traits and backends are being built; see the workspace README for the plan.
#![deny(unsafe_op_in_unsafe_fn)]

pub use tdx_abi;
pub use tdx_memory;
