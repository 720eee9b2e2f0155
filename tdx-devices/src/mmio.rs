//! The virtio-mmio transport, version 2 (virtio 1.x §4.2.2), with the TD policy.
//!
//! [`MmioTransport::read`] / [`MmioTransport::write`] are the entry points for the VMM's MMIO
//! exit loop (`offset` relative to the device's window). Register accesses must be 4 bytes
//! wide and 4-byte aligned; anything else, unknown offsets, and writes to read-only registers
//! are ignored (reads return zeros) and logged, never a panic.
//!
//! TD policy (virtio-hardening.md §2.1 B): in [`DeviceMode::Td`] the device offers
//! `VERSION_1 | ACCESS_PLATFORM` on top of the device's own features; setting FEATURES_OK fails
//! (the bit does not stick) unless the driver accepted both, or if it accepted any feature that
//! was not offered. Feature writes after FEATURES_OK are ignored. Queue configuration is
//! validated when `QueueReady` is set ([`VirtQueue::enable`]); kicks before DRIVER_OK, for
//! unknown or not-ready queues, or while DEVICE_NEEDS_RESET is set are ignored.
//!
//! Structural ring corruption sets DEVICE_NEEDS_RESET (0x40), sets the configuration-change
//! bit in `InterruptStatus`, triggers [`InterruptKind::Config`] and latches the device: no
//! queue is processed until the driver resets it (writes 0 to `Status`), which restores a
//! pristine state.

use tracing::{debug, warn};
use vm_memory::GuestMemory;

use crate::features::{ACCESS_PLATFORM, INDIRECT_DESC, VERSION_1};
use crate::interrupt::{Interrupt, InterruptKind};
use crate::memory::GuestMemoryProvider;
use crate::queue::{ChainLimits, ChainSnapshot, QueueConfigError, QueueError, Ring, VirtQueue};

/// `MagicValue`: "virt" little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// `Version` of the non-legacy interface.
pub const MMIO_VERSION: u32 = 2;
/// Offset of the device-specific configuration space.
pub const MMIO_CONFIG_OFFSET: u64 = 0x100;

/// Register offsets (virtio 1.x §4.2.2, table "MMIO Device Register Layout").
pub mod reg {
    use virtio_bindings::virtio_mmio as m;
    /// MagicValue.
    pub const MAGIC_VALUE: u64 = m::VIRTIO_MMIO_MAGIC_VALUE as u64;
    /// Version.
    pub const VERSION: u64 = m::VIRTIO_MMIO_VERSION as u64;
    /// DeviceID.
    pub const DEVICE_ID: u64 = m::VIRTIO_MMIO_DEVICE_ID as u64;
    /// VendorID.
    pub const VENDOR_ID: u64 = m::VIRTIO_MMIO_VENDOR_ID as u64;
    /// DeviceFeatures.
    pub const DEVICE_FEATURES: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES as u64;
    /// DeviceFeaturesSel.
    pub const DEVICE_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
    /// DriverFeatures.
    pub const DRIVER_FEATURES: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES as u64;
    /// DriverFeaturesSel.
    pub const DRIVER_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
    /// QueueSel.
    pub const QUEUE_SEL: u64 = m::VIRTIO_MMIO_QUEUE_SEL as u64;
    /// QueueNumMax.
    pub const QUEUE_NUM_MAX: u64 = m::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
    /// QueueNum.
    pub const QUEUE_NUM: u64 = m::VIRTIO_MMIO_QUEUE_NUM as u64;
    /// QueueReady.
    pub const QUEUE_READY: u64 = m::VIRTIO_MMIO_QUEUE_READY as u64;
    /// QueueNotify.
    pub const QUEUE_NOTIFY: u64 = m::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
    /// InterruptStatus.
    pub const INTERRUPT_STATUS: u64 = m::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
    /// InterruptACK.
    pub const INTERRUPT_ACK: u64 = m::VIRTIO_MMIO_INTERRUPT_ACK as u64;
    /// Status.
    pub const STATUS: u64 = m::VIRTIO_MMIO_STATUS as u64;
    /// QueueDescLow.
    pub const QUEUE_DESC_LOW: u64 = m::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
    /// QueueDescHigh.
    pub const QUEUE_DESC_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
    /// QueueDriverLow (avail ring).
    pub const QUEUE_DRIVER_LOW: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
    /// QueueDriverHigh.
    pub const QUEUE_DRIVER_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
    /// QueueDeviceLow (used ring).
    pub const QUEUE_DEVICE_LOW: u64 = m::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
    /// QueueDeviceHigh.
    pub const QUEUE_DEVICE_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
    /// ConfigGeneration.
    pub const CONFIG_GENERATION: u64 = m::VIRTIO_MMIO_CONFIG_GENERATION as u64;
}

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    use virtio_bindings::virtio_config as c;
    /// ACKNOWLEDGE.
    pub const ACKNOWLEDGE: u32 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// DRIVER.
    pub const DRIVER: u32 = c::VIRTIO_CONFIG_S_DRIVER;
    /// DRIVER_OK.
    pub const DRIVER_OK: u32 = c::VIRTIO_CONFIG_S_DRIVER_OK;
    /// FEATURES_OK.
    pub const FEATURES_OK: u32 = c::VIRTIO_CONFIG_S_FEATURES_OK;
    /// DEVICE_NEEDS_RESET.
    pub const NEEDS_RESET: u32 = c::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// FAILED.
    pub const FAILED: u32 = c::VIRTIO_CONFIG_S_FAILED;
}

/// A virtio device behind the transport. Devices only see validated [`ChainSnapshot`]s.
pub trait VirtioDevice {
    /// virtio device ID (2 = block, 3 = console).
    fn device_type(&self) -> u32;
    /// `QueueNumMax` of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific feature bits (the transport adds VERSION_1 / ACCESS_PLATFORM).
    fn device_features(&self) -> u64;
    /// Reads device configuration space at `offset`; bytes outside it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space (ignored by default).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Largest total chain length accepted on `queue` (≤ 2^32 − 1).
    fn max_request_bytes(&self, queue: usize) -> u64;
    /// Whether notifications on `queue` should pop chains (e.g. a console without input
    /// leaves its receive queue alone).
    fn processes_queue(&self, queue: usize) -> bool {
        let _ = queue;
        true
    }
    /// Called at DRIVER_OK with the negotiated features.
    fn activate(&mut self, features: u64) {
        let _ = features;
    }
    /// Handles one request; returns the number of bytes written into the chain's writable
    /// buffers (the used-ring `len`).
    fn handle_chain<M: GuestMemory>(&mut self, queue: usize, chain: &ChainSnapshot, mem: &M)
        -> u32;
    /// Returns the device to its initial state.
    fn reset(&mut self);
}

/// Whether the device serves a TD (ACCESS_PLATFORM offered and required) or a legacy VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceMode {
    /// TD: offer and require VERSION_1 | ACCESS_PLATFORM.
    #[default]
    Td,
    /// Ordinary VM: offer and require VERSION_1 only.
    Normal,
}

/// Transport settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioConfig {
    /// TD or normal VM.
    pub mode: DeviceMode,
    /// Chains processed per notification at most (≥ 1).
    pub budget: u16,
    /// Offer VIRTIO_F_INDIRECT_DESC (opt-in; off by default, as in the TD guest's hardened
    /// profile).
    pub offer_indirect: bool,
    /// `VendorID`.
    pub vendor_id: u32,
}

impl Default for MmioConfig {
    fn default() -> Self {
        MmioConfig {
            mode: DeviceMode::Td,
            budget: 64,
            offer_indirect: false,
            // "TDXD": any value is allowed; the Linux driver ignores it.
            vendor_id: 0x4458_4454,
        }
    }
}

/// Counters, for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioStats {
    /// Notifications that processed a queue.
    pub notifications: u64,
    /// Notifications ignored (before DRIVER_OK, unknown/not-ready queue, NEEDS_RESET).
    pub ignored_notifications: u64,
    /// Chains completed.
    pub completed: u64,
    /// Register accesses ignored (bad width/offset, read-only, wrong state).
    pub ignored_accesses: u64,
}

/// Why the last FEATURES_OK or QueueReady was refused, or why the device needs a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The driver accepted features that were not offered.
    #[error("driver accepted unoffered features {0:#x}")]
    UnofferedFeatures(u64),
    /// A required feature (VERSION_1, or ACCESS_PLATFORM in a TD) was not accepted.
    #[error("driver did not accept required features {0:#x}")]
    MissingRequiredFeatures(u64),
    /// A queue configuration was refused.
    #[error("queue {queue}: {error}")]
    QueueConfig {
        /// Queue index.
        queue: u16,
        /// Why.
        error: QueueConfigError,
    },
    /// A queue was found corrupt; DEVICE_NEEDS_RESET is set.
    #[error("queue {queue} corrupt: {error}")]
    Corrupt {
        /// Queue index.
        queue: u16,
        /// Why.
        error: QueueError,
    },
}

/// The virtio-mmio register file around a [`VirtioDevice`].
#[derive(Debug)]
pub struct MmioTransport<D, P, I> {
    device: D,
    memory: P,
    interrupt: I,
    config: MmioConfig,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<VirtQueue>,
    interrupt_status: u32,
    config_generation: u32,
    stats: MmioStats,
    last_error: Option<TransportError>,
}

impl<D: VirtioDevice, P: GuestMemoryProvider, I: Interrupt> MmioTransport<D, P, I> {
    /// A transport in the reset state.
    pub fn new(device: D, memory: P, interrupt: I, config: MmioConfig) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&m| VirtQueue::new(m))
            .collect();
        let config = MmioConfig {
            budget: config.budget.max(1),
            ..config
        };
        MmioTransport {
            device,
            memory,
            interrupt,
            config,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            config_generation: 0,
            stats: MmioStats::default(),
            last_error: None,
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The memory provider.
    pub fn memory(&self) -> &P {
        &self.memory
    }

    /// The `Status` register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The features the device offers.
    pub fn offered_features(&self) -> u64 {
        let mut f = self.device.device_features() | VERSION_1;
        if self.config.mode == DeviceMode::Td {
            f |= ACCESS_PLATFORM;
        }
        if self.config.offer_indirect {
            f |= INDIRECT_DESC;
        }
        f
    }

    /// The features the driver accepted (meaningful once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// A queue.
    pub fn queue(&self, index: usize) -> Option<&VirtQueue> {
        self.queues.get(index)
    }

    /// Counters.
    pub fn stats(&self) -> MmioStats {
        self.stats
    }

    /// The last refusal or corruption, if any (cleared by reset).
    pub fn last_error(&self) -> Option<TransportError> {
        self.last_error
    }

    /// Handles a guest read of `data.len()` bytes at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= MMIO_CONFIG_OFFSET {
            if data.len() > 8 {
                self.ignore("config read wider than 8 bytes", offset);
                return;
            }
            self.device.read_config(offset - MMIO_CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            self.ignore("register read not 4 bytes aligned", offset);
            return;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v: u32 = match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => self.config.vendor_id,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            reg::QUEUE_NUM => q.map_or(0, |q| u32::from(q.size())),
            reg::QUEUE_DESC_LOW => q.map_or(0, |q| q.address(Ring::Descriptors) as u32),
            reg::QUEUE_DESC_HIGH => q.map_or(0, |q| (q.address(Ring::Descriptors) >> 32) as u32),
            reg::QUEUE_DRIVER_LOW => q.map_or(0, |q| q.address(Ring::Avail) as u32),
            reg::QUEUE_DRIVER_HIGH => q.map_or(0, |q| (q.address(Ring::Avail) >> 32) as u32),
            reg::QUEUE_DEVICE_LOW => q.map_or(0, |q| q.address(Ring::Used) as u32),
            reg::QUEUE_DEVICE_HIGH => q.map_or(0, |q| (q.address(Ring::Used) >> 32) as u32),
            _ => {
                self.ignore("read of unknown or write-only register", offset);
                return;
            }
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// Handles a guest write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= MMIO_CONFIG_OFFSET {
            if data.len() > 8 {
                self.ignore("config write wider than 8 bytes", offset);
                return;
            }
            self.device.write_config(offset - MMIO_CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.ignore("register write not 4 bytes", offset);
            return;
        };
        if offset % 4 != 0 {
            self.ignore("register write misaligned", offset);
            return;
        }
        let v = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => self.write_driver_features(v),
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NOTIFY => self.notify(v),
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => self.write_status(v),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_reg(offset, v),
            _ => self.ignore("write of unknown or read-only register", offset),
        }
    }

    fn ignore(&mut self, why: &str, offset: u64) {
        self.stats.ignored_accesses += 1;
        debug!(offset, why, "virtio-mmio access ignored");
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status & (status::FEATURES_OK | status::FAILED) != 0 {
            return self.ignore("driver features after FEATURES_OK", reg::DRIVER_FEATURES);
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            _ => self.ignore("driver features select > 1", reg::DRIVER_FEATURES),
        }
    }

    fn negotiation_error(&self) -> Option<TransportError> {
        let offered = self.offered_features();
        let extra = self.driver_features & !offered;
        if extra != 0 {
            return Some(TransportError::UnofferedFeatures(extra));
        }
        let mut required = VERSION_1;
        if self.config.mode == DeviceMode::Td {
            required |= ACCESS_PLATFORM;
        }
        let missing = required & !self.driver_features;
        (missing != 0).then_some(TransportError::MissingRequiredFeatures(missing))
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // The driver cannot set NEEDS_RESET, nor clear bits (other than by a reset).
        let v = v & !status::NEEDS_RESET;
        let keep = self.status & status::NEEDS_RESET;
        if v & self.status & !status::NEEDS_RESET != self.status & !status::NEEDS_RESET {
            return self.ignore("status write clears bits", reg::STATUS);
        }
        let added = v & !self.status;
        let mut new = self.status | added;
        if added & status::FEATURES_OK != 0 {
            if let Some(e) = self.negotiation_error() {
                warn!(error = %e, "virtio feature negotiation refused");
                self.last_error = Some(e);
                new &= !status::FEATURES_OK;
            }
        }
        if added & status::DRIVER_OK != 0 {
            if new & status::FEATURES_OK == 0 {
                self.ignore("DRIVER_OK without FEATURES_OK", reg::STATUS);
                new &= !status::DRIVER_OK;
            } else {
                self.device.activate(self.driver_features);
            }
        }
        self.status = new | keep;
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) {
        if self.status & status::FEATURES_OK == 0 || self.status & status::NEEDS_RESET != 0 {
            return self.ignore("queue register before FEATURES_OK", offset);
        }
        let sel = self.queue_sel;
        let Some(q) = self.queues.get_mut(sel as usize) else {
            return self.ignore("queue register for a queue that does not exist", offset);
        };
        if q.ready() && offset != reg::QUEUE_READY {
            return self.ignore("queue register while queue ready", offset);
        }
        match offset {
            reg::QUEUE_NUM => q.set_size(v.min(u32::from(u16::MAX)) as u16),
            reg::QUEUE_DESC_LOW => q.set_address_half(Ring::Descriptors, false, v),
            reg::QUEUE_DESC_HIGH => q.set_address_half(Ring::Descriptors, true, v),
            reg::QUEUE_DRIVER_LOW => q.set_address_half(Ring::Avail, false, v),
            reg::QUEUE_DRIVER_HIGH => q.set_address_half(Ring::Avail, true, v),
            reg::QUEUE_DEVICE_LOW => q.set_address_half(Ring::Used, false, v),
            reg::QUEUE_DEVICE_HIGH => q.set_address_half(Ring::Used, true, v),
            reg::QUEUE_READY => {
                if v == 0 {
                    q.disable();
                } else {
                    let mem = self.memory.view();
                    if let Err(error) = q.enable(&mem) {
                        warn!(queue = sel, %error, "queue configuration refused");
                        self.last_error = Some(TransportError::QueueConfig {
                            queue: sel as u16,
                            error,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Handles `QueueNotify` for queue `index`.
    pub fn notify(&mut self, index: u32) {
        let ok = self.status & status::DRIVER_OK != 0
            && self.status & status::NEEDS_RESET == 0
            && self.queues.get(index as usize).is_some_and(|q| q.ready())
            && self.device.processes_queue(index as usize);
        if !ok {
            self.stats.ignored_notifications += 1;
            return;
        }
        self.stats.notifications += 1;
        let qi = index as usize;
        let limits = ChainLimits {
            max_total_bytes: self.device.max_request_bytes(qi).min(u64::from(u32::MAX)),
            indirect: self.driver_features & INDIRECT_DESC != 0,
        };
        let mem = self.memory.view();
        let q = &mut self.queues[qi];
        let batch = q.pop_batch(&mem, self.config.budget, limits);
        let mut error = batch.error;
        let mut used = false;
        for chain in &batch.chains {
            let len = self.device.handle_chain(qi, chain, &mem);
            match q.complete(&mem, chain.head, len) {
                Ok(()) => {
                    used = true;
                    self.stats.completed += 1;
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let notify = used && q.needs_notification(&mem);
        drop(mem);
        if notify {
            self.interrupt_status |= InterruptKind::Vring.status_bit();
            self.interrupt.trigger(InterruptKind::Vring);
        }
        if let Some(error) = error {
            self.needs_reset(index as u16, error);
        }
    }

    fn needs_reset(&mut self, queue: u16, error: QueueError) {
        warn!(queue, %error, "virtio queue corrupt: DEVICE_NEEDS_RESET");
        self.last_error = Some(TransportError::Corrupt { queue, error });
        if self.status & status::NEEDS_RESET != 0 {
            return;
        }
        self.status |= status::NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= InterruptKind::Config.status_bit();
            self.interrupt.trigger(InterruptKind::Config);
        }
    }

    /// Device reset (driver wrote 0 to `Status`): pristine queue and negotiation state.
    pub fn reset(&mut self) {
        self.device.reset();
        self.queues.iter_mut().for_each(VirtQueue::reset);
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.last_error = None;
    }
}
