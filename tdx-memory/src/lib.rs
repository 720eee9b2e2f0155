//! # tdx-memory
//!
//! Memory for TDX host VMMs:
//!
//! * [`tdmr`]: plans TDMRs and PAMTs from the TDX-usable memory map the way Linux does, and
//!   validates a plan the way `TDH.SYS.CONFIG` does.
//! * GPA layout, the private/shared attribute map, the shared-only guest memory view that
//!   devices see, and the SWIOTLB-style bounce pool (coming).
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "std")]
pub mod tdmr;
