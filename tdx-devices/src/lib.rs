//! # tdx-devices
//!
//! Hardened virtio-mmio devices for Trust Domains (virtio-blk, virtio-console) and a
//! vhost-user-blk frontend. Devices reach guest memory only through `tdx-memory`'s shared-only
//! view, so a device can never read or write a TD's private pages.
//!
//! Status: being built; see the workspace README for the plan.
#![deny(unsafe_op_in_unsafe_fn)]

pub use tdx_memory;
