//! Glue between the driver and the emulated module: the emulated platform's physical memory as
//! the driver's [`HostMemory`]. Host reads of TD-owned pages return zeros and host writes to
//! them poison the page, exactly as the emulated platform defines; errors (address outside the
//! arena) become [`HostMemoryError`].

use std::sync::Arc;

use super::{HostMemory, HostMemoryError};
use crate::emulated::EmulatedModule;

impl HostMemory for Arc<EmulatedModule> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemoryError> {
        let len = buf.len();
        self.physical_memory()
            .read(pa, buf)
            .map_err(|_| HostMemoryError { pa, len })
    }

    fn write(&self, pa: u64, buf: &[u8]) -> Result<(), HostMemoryError> {
        self.physical_memory()
            .write(pa, buf)
            .map_err(|_| HostMemoryError { pa, len: buf.len() })
    }
}
