//! # tdx-devices
//!
//! Hardened virtio-mmio devices for Trust Domains (virtio-blk, virtio-console) and a
//! vhost-user-blk frontend. Devices reach guest memory only through `tdx-memory`'s shared-only
//! view ([`tdx_memory::shared::SharedMemoryView`]), so a device can never read or write a TD's
//! private pages.
//!
//! * [`mmio`]: the virtio-mmio (version 2) register file, feature negotiation and queue
//!   configuration checks, the NEEDS_RESET latch.
//! * [`queue`]: the hardened split-queue front end: every chain is walked once, snapshotted into
//!   host memory and validated there (virtio-hardening checklist §2.1 C–F, H, I).
//! * [`blk`]: virtio-blk on a raw file (positioned I/O).
//! * [`console`]: virtio-console, port 0 output to a `Write` sink.
//! * [`vhost_user`]: a vhost-user-blk frontend that hands the backend only shared memory.
//!
//! Device logic is generic over `M: vm_memory::GuestMemory`; the transport obtains one view per
//! notification from a [`GuestMemoryProvider`] and drops it before returning.
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

pub mod blk;
pub mod console;
pub mod interrupt;
pub mod memory;
pub mod mmio;
pub mod queue;
pub mod vhost_user;
pub mod vhost_user_mmio;

pub use interrupt::{Interrupt, InterruptKind};
pub use memory::GuestMemoryProvider;
pub use tdx_memory;
pub use virtio_queue;
pub use vm_memory;

/// virtio feature bits used by the transport (virtio 1.x §6 "Reserved Feature Bits").
pub mod features {
    /// `VIRTIO_F_INDIRECT_DESC` (bit 28).
    pub const INDIRECT_DESC: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
    /// `VIRTIO_F_EVENT_IDX` (bit 29).
    pub const EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
    /// `VIRTIO_F_VERSION_1` (bit 32).
    pub const VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    /// `VIRTIO_F_ACCESS_PLATFORM` (bit 33).
    pub const ACCESS_PLATFORM: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_ACCESS_PLATFORM;
    /// `VIRTIO_F_RING_PACKED` (bit 34); never offered.
    pub const RING_PACKED: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED;
}
