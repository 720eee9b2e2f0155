//! Interrupt delivery, abstracted so the devices do not know the host (tdx-host) side.

use std::sync::Arc;

/// Why the device interrupts the driver (virtio-mmio `InterruptStatus` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterruptKind {
    /// Used buffer notification (`InterruptStatus` bit 0).
    Vring,
    /// Configuration change notification (`InterruptStatus` bit 1); also sent on
    /// DEVICE_NEEDS_RESET.
    Config,
}

impl InterruptKind {
    /// The `InterruptStatus` bit of this kind.
    pub const fn status_bit(self) -> u32 {
        match self {
            InterruptKind::Vring => 1,
            InterruptKind::Config => 2,
        }
    }
}

/// Raises the device's interrupt line / message towards the guest.
pub trait Interrupt {
    /// Signals the guest. Called with the `InterruptStatus` bit already set.
    fn trigger(&self, kind: InterruptKind);
}

impl<T: Interrupt + ?Sized> Interrupt for Arc<T> {
    fn trigger(&self, kind: InterruptKind) {
        (**self).trigger(kind)
    }
}

impl<T: Interrupt + ?Sized> Interrupt for &T {
    fn trigger(&self, kind: InterruptKind) {
        (**self).trigger(kind)
    }
}

/// An interrupt sink that drops every interrupt (for polling users, benches and fuzzing).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn trigger(&self, _kind: InterruptKind) {}
}
