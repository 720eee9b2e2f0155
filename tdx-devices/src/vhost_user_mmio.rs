//! A virtio-mmio (v2) register file in front of a vhost-user-blk backend: the TD's driver
//! configures the device through MMIO exits exactly as for [`crate::mmio::MmioTransport`];
//! when it sets `QueueReady` the frontend ([`VhostUserBlk::connect`]) hands the external
//! backend the shared memory table and the ring addresses, and `QueueNotify` kicks it. The
//! backend completes requests on its own (the driver polls the used ring; the `TdVcpu` seam
//! has no interrupt injection yet).
//!
//! Policy, as for the in-process devices in TD mode: the device offers `VERSION_1 |
//! ACCESS_PLATFORM` and FEATURES_OK only sticks if the driver accepted exactly those (the
//! backend itself never sees ACCESS_PLATFORM, see [`crate::vhost_user`]); queue registers are
//! accepted only after FEATURES_OK and before the queue is ready; the queue size must be a
//! power of two ≤ [`MAX_QUEUE`]; every ring must lie in pages the attribute map says are
//! shared, checked through the shared-only view. A refused setup or a backend failure latches
//! DEVICE_NEEDS_RESET. One queue (vhost-user-blk queue 0).
use std::path::PathBuf;

use tdx_memory::shared::SharedGuestMemory;
use vm_memory::GuestAddress;

use crate::features::{ACCESS_PLATFORM, VERSION_1};
use crate::vhost_user::{RingAddresses, VhostUserBlk};

/// Largest queue the device accepts.
pub const MAX_QUEUE: u16 = 256;

const MAGIC: u32 = 0x7472_6976;
const S_ACK: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_NEEDS_RESET: u32 = 0x40;

/// The device.
pub struct VhostUserBlkMmio {
    socket: PathBuf,
    memory: SharedGuestMemory,
    status: u32,
    dev_sel: u32,
    drv_sel: u32,
    driver_features: u64,
    queue_num: u16,
    desc: u64,
    driver: u64,
    device: u64,
    backend: Option<VhostUserBlk>,
    /// Why the device needs a reset, if it does.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for VhostUserBlkMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserBlkMmio")
            .field("socket", &self.socket)
            .field("status", &self.status)
            .field("connected", &self.backend.is_some())
            .finish_non_exhaustive()
    }
}

impl VhostUserBlkMmio {
    /// A device for the backend listening on `socket`; `memory`'s backing must be fd-backed
    /// (it is handed to the backend with SET_MEM_TABLE).
    pub fn new(socket: PathBuf, memory: SharedGuestMemory) -> Self {
        VhostUserBlkMmio {
            socket,
            memory,
            status: 0,
            dev_sel: 0,
            drv_sel: 0,
            driver_features: 0,
            queue_num: 0,
            desc: 0,
            driver: 0,
            device: 0,
            backend: None,
            last_error: None,
        }
    }

    /// Whether the backend is connected (the queue is live).
    pub fn connected(&self) -> bool {
        self.backend.is_some()
    }

    fn offered() -> u64 {
        VERSION_1 | ACCESS_PLATFORM
    }

    fn fail(&mut self, why: String) {
        tracing::warn!(socket = %self.socket.display(), %why, "vhost-user-blk device needs reset");
        self.last_error = Some(why);
        self.status |= S_NEEDS_RESET;
        self.backend = None;
    }

    fn reset(&mut self) {
        *self = VhostUserBlkMmio::new(self.socket.clone(), self.memory.clone());
    }

    /// An MMIO read of `data.len()` (1, 2, 4) bytes at `offset` in the device's window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v: u32 = match offset {
            0x000 => MAGIC,
            0x004 => 2,
            0x008 => 2, // block
            0x00c => 0x4458_4454,
            0x010 => {
                (Self::offered() >> (32 * (self.dev_sel & 1))) as u32 * u32::from(self.dev_sel < 2)
            }
            0x034 => u32::from(MAX_QUEUE),
            0x044 => u32::from(self.backend.is_some()),
            0x060 => 0,
            0x070 => self.status,
            0x0fc => 0,
            _ => 0,
        };
        let b = v.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&b[..n]);
        data[n..].fill(0);
    }

    /// An MMIO write at `offset` (values are little-endian, 4 bytes for registers).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(b);
        let queue_config = self.status & S_FEATURES_OK != 0
            && self.status & S_NEEDS_RESET == 0
            && self.backend.is_none();
        match offset {
            0x014 => self.dev_sel = v,
            0x020 if self.status & S_FEATURES_OK == 0 && self.drv_sel < 2 => {
                let shift = 32 * self.drv_sel;
                self.driver_features =
                    (self.driver_features & !(0xFFFF_FFFFu64 << shift)) | (u64::from(v) << shift);
            }
            0x024 => self.drv_sel = v,
            0x030 => {} // queue 0 only
            0x038 if queue_config => self.queue_num = v.min(u32::from(u16::MAX)) as u16,
            0x080 if queue_config => self.desc = (self.desc & !0xFFFF_FFFF) | u64::from(v),
            0x084 if queue_config => self.desc = (self.desc & 0xFFFF_FFFF) | (u64::from(v) << 32),
            0x090 if queue_config => self.driver = (self.driver & !0xFFFF_FFFF) | u64::from(v),
            0x094 if queue_config => {
                self.driver = (self.driver & 0xFFFF_FFFF) | (u64::from(v) << 32)
            }
            0x0a0 if queue_config => self.device = (self.device & !0xFFFF_FFFF) | u64::from(v),
            0x0a4 if queue_config => {
                self.device = (self.device & 0xFFFF_FFFF) | (u64::from(v) << 32)
            }
            0x044 if queue_config && v == 1 => self.connect(),
            0x050 => {
                if self.status & S_DRIVER_OK != 0 {
                    if let Some(be) = &self.backend {
                        if let Err(e) = be.kick() {
                            self.fail(format!("kick: {e}"));
                        }
                    }
                }
            }
            0x070 => self.write_status(v),
            _ => tracing::trace!(offset, v, "vhost-user-blk: write ignored"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v & !S_NEEDS_RESET;
        if v & S_FEATURES_OK != 0 && self.status & S_FEATURES_OK == 0 {
            // FEATURES_OK sticks only for exactly the offered TD features.
            if self.driver_features != Self::offered() {
                tracing::warn!(
                    features = self.driver_features,
                    "vhost-user-blk: features refused"
                );
                v &= !S_FEATURES_OK;
            }
        }
        if v & S_DRIVER_OK != 0
            && (v & S_FEATURES_OK == 0 || v & (S_ACK | S_DRIVER) != (S_ACK | S_DRIVER))
        {
            v &= !S_DRIVER_OK;
        }
        self.status = v | (self.status & S_NEEDS_RESET);
    }

    fn connect(&mut self) {
        let n = self.queue_num;
        if n == 0 || n > MAX_QUEUE || !n.is_power_of_two() {
            return self.fail(format!(
                "queue size {n}: need a power of two up to {MAX_QUEUE}"
            ));
        }
        let n64 = u64::from(n);
        let rings = [
            (self.desc, 16 * n64, 16u64),
            (self.driver, 6 + 2 * n64, 2),
            (self.device, 6 + 8 * n64, 4),
        ];
        {
            let view = self.memory.view();
            for &(addr, len, align) in &rings {
                if addr % align != 0 || view.check(GuestAddress(addr), len as usize).is_err() {
                    drop(view);
                    return self.fail(format!(
                        "ring at {addr:#x}+{len:#x} is misaligned or not in shared memory"
                    ));
                }
            }
        }
        let ring = RingAddresses {
            size: n,
            desc: self.desc,
            avail: self.driver,
            used: self.device,
        };
        match VhostUserBlk::connect(&self.socket, self.memory.backing(), ring) {
            Ok(be) => self.backend = Some(be),
            Err(e) => self.fail(format!("connect {}: {e}", self.socket.display())),
        }
    }
}
