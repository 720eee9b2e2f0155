//! # tdx-memory
//!
//! Memory for TDX host VMMs:
//!
//! * [`tdmr`]: plans TDMRs and PAMTs from the TDX-usable memory map the way Linux does, and
//!   validates a plan the way `TDH.SYS.CONFIG` does.
//! * [`layout`] (`no_std`): checked GPA ranges, shared/private aliases, canonicalisation of
//!   device-visible addresses.
//! * [`attributes`]: the private/shared attribute map of a TD's GPA space (interval map,
//!   thread safe, conversion listeners).
//! * [`shared`]: the shared-only vm-memory `GuestMemory` that devices see; every access to a
//!   page that is not currently shared fails.
//! * [`bounce`] (core `no_std`, no alloc): a SWIOTLB-style bounce pool over caller storage.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "std")]
pub mod tdmr;

#[cfg(feature = "std")]
pub mod attributes;
pub mod bounce;
pub mod layout;
#[cfg(feature = "std")]
pub mod shared;

#[cfg(feature = "std")]
pub use attributes::{AttributeMap, ConversionListener, ConversionOutcome, PageState};
pub use bounce::{BounceError, BouncePool, DmaDirection};
pub use layout::GpaRange;
#[cfg(feature = "std")]
pub use shared::{SharedAccessError, SharedGuestMemory, SharedMemoryView};
