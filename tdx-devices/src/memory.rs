//! Where a device gets its guest-memory view from.

use tdx_memory::shared::{SharedGuestMemory, SharedMemoryView};
use vm_memory::bitmap::Bitmap;
use vm_memory::GuestMemory;

/// Hands out a guest-memory view for one bounded batch of device work (one notification, one
/// queue enable). The view is dropped before the transport returns to the exit loop, so it is
/// never held across a blocking wait, and the transport never holds two at once.
pub trait GuestMemoryProvider {
    /// The view type.
    type View<'a>: GuestMemory
    where
        Self: 'a;

    /// Takes a view.
    fn view(&self) -> Self::View<'_>;
}

impl<B: Bitmap + Send + Sync + 'static> GuestMemoryProvider for SharedGuestMemory<B> {
    type View<'a> = SharedMemoryView<'a, B>;

    fn view(&self) -> SharedMemoryView<'_, B> {
        SharedGuestMemory::view(self)
    }
}

impl<P: GuestMemoryProvider + ?Sized> GuestMemoryProvider for std::sync::Arc<P> {
    type View<'a>
        = P::View<'a>
    where
        Self: 'a;

    fn view(&self) -> P::View<'_> {
        (**self).view()
    }
}
