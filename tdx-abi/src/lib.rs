//! # tdx-abi
//!
//! The Intel TDX module ABI as exact Rust types, for host hypervisors (SEAMCALL, `TDH.*`) and
//! for TD guests (TDCALL, `TDG.*`, and `TDG.VP.VMCALL` per the GHCI).
//!
//! * [`leaf`]: leaf numbers with their version bits, TDG.VP.VMCALL sub-functions and status.
//! * [`status`]: the 64-bit completion status with class, details and operand id.
//! * Structures with byte-exact layouts: [`td_params`], [`report`], [`ve`], [`tdmr`],
//!   [`sysinfo`], [`sept`], [`attributes`], [`metadata`], [`state`], [`gpa`].
//! * [`measure`]: MRTD and RTMR computation, byte-exact with the module's.
//! * [`call`]: the [`call::Seamcall`] and [`call::Tdcall`] traits (one SEAMCALL / TDCALL with a
//!   register block) and their real-instruction implementations.
//! * Typed wrappers generic over those traits: [`tdh`] (every host leaf used to bring the module
//!   up and to build, run and tear down a TD), [`tdg`] (guest leaves) and [`tdvmcall`]
//!   (`TDG.VP.VMCALL` requests: encoded by the guest, decoded and checked by the host).
//! * [`emulator`]: how a TD payload's TDCALLs reach the emulated backend's module (the
//!   trapped instruction, the `#UD` forward, the doorbell).
//! * [`phys`]: host physical addresses and HKIDs; [`metadata::MetadataList`] parses
//!   TDH.SYS.RDALL output.
//!
//! Names mirror the specification: `TDH.MEM.PAGE.ADD` is `tdh_mem_page_add`, `TD_PARAMS` is
//! [`td_params::TdParams`]. Values the specification numbers (leaves, status codes, states)
//! are open: an unknown value read from hardware survives a round trip and prints as a number.
//!
//! The crate is `no_std` and has no `unsafe` code outside the module that executes the
//! `seamcall` and `tdcall` instructions.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod attributes;
pub mod call;
pub mod emulator;
pub mod gpa;
pub mod leaf;
pub mod measure;
pub mod metadata;
mod open_enum;
pub mod phys;
pub mod report;
pub mod sept;
pub mod state;
pub mod status;
pub mod sysinfo;
pub mod td_params;
pub mod tdg;
pub mod tdh;
pub mod tdmr;
pub mod tdvmcall;
pub mod ve;

pub use gpa::{EptLevel, Gpa, GpaAndLevel, Gpaw, PageSize};
