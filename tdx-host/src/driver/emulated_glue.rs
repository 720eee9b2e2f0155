//! Glue between the driver and the emulated module: the emulated platform's physical memory as
//! the driver's [`HostMemory`], and [`bring_up`] (platform + driver bring-up in one call). Host reads of TD-owned pages return zeros and host writes to
//! them poison the page, exactly as the emulated platform defines; errors (address outside the
//! arena) become [`HostMemoryError`].

use std::sync::Arc;

use super::module::{LogicalCpu, PlatformDesc, RetryPolicy, TdxModule};
use super::{DriverError, HostMemory, HostMemoryError};
use crate::emulated::{EmulatedError, EmulatedModule, LogicalProcessor, PlatformConfig};

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

/// The driver's view of an emulated platform: its logical processors and physical memory.
pub type EmulatedTdxModule = TdxModule<LogicalProcessor, Arc<EmulatedModule>>;

/// Why [`bring_up`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BringUpError {
    /// The platform configuration was refused.
    #[error(transparent)]
    Platform(#[from] EmulatedError),
    /// The driver's bring-up failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// Builds an emulated platform from `config` and brings its module up with the host driver
/// exactly as on hardware ([`TdxModule::init`]): every logical processor, the whole CMR space
/// as TDX-usable memory, the platform's TDX HKID range.
pub fn bring_up(
    config: PlatformConfig,
    retry: RetryPolicy,
) -> Result<(Arc<EmulatedModule>, Arc<EmulatedTdxModule>), BringUpError> {
    let first_tdx_hkid = config.first_tdx_hkid;
    let num_tdx_hkids = config.num_tdx_hkids;
    let m = EmulatedModule::new(config)?;
    let module = init_driver(&m, first_tdx_hkid, num_tdx_hkids, retry)?;
    Ok((m, Arc::new(module)))
}

/// [`TdxModule::init`] on an existing emulated platform whose TDX HKIDs are
/// `first_tdx_hkid..first_tdx_hkid + num_tdx_hkids`.
pub fn init_driver(
    m: &Arc<EmulatedModule>,
    first_tdx_hkid: u16,
    num_tdx_hkids: u16,
    retry: RetryPolicy,
) -> Result<EmulatedTdxModule, DriverError> {
    let lps = (0..m.num_lps())
        .filter_map(|i| {
            m.lp(i).map(|seamcall| LogicalCpu {
                seamcall,
                package: m.package_of(i),
            })
        })
        .collect();
    let desc = PlatformDesc {
        usable_ranges: m
            .physical_memory()
            .cmrs()
            .iter()
            .map(|&(b, s)| (b, b + s))
            .collect(),
        first_tdx_hkid,
        num_tdx_hkids,
        hkid_shift: m.hkid_shift(),
    };
    TdxModule::init(lps, Arc::clone(m), &desc, retry)
}
