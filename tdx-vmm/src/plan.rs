//! The launch plan: the seam between the loaders (td.toml, TDVF, ELF, TD HOB) and the exit
//! loop that runs a TD on a backend.
//!
//! A plan is pure data. `tdx-vmm measure` computes the MRTD a plan will produce from
//! [`LaunchPlan::initial`] alone (PAGE.ADD then, for measured regions, MR.EXTEND per page in
//! ascending GPA order within each region, regions in list order — the order the backends
//! add them); `tdx-vmm launch` hands the same plan to the exit loop.
use std::path::PathBuf;

use tdx_host::backend::TdVmConfig;

/// One region of the initial image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialRegion {
    /// Guest physical address (4 KiB aligned).
    pub gpa: u64,
    /// Contents; a multiple of 4 KiB.
    pub data: Vec<u8>,
    /// Extend MRTD with the contents (TDH.MR.EXTEND), not only with the page's GPA.
    pub measure: bool,
    /// What it is (for logs and `inspect`): "page tables", "TD HOB", "BFV", "PT_LOAD #1", ….
    pub name: String,
}

/// A virtio-blk disk backed by a raw file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkDisk {
    /// Path of the raw image.
    pub path: PathBuf,
    /// Refuse writes (VIRTIO_BLK_F_RO).
    pub read_only: bool,
}

/// The devices of a TD. virtio-mmio devices are placed in order at
/// [`VIRTIO_MMIO_BASE`] + n × [`VIRTIO_MMIO_STRIDE`]: blk disks first, then vhost-user-blk
/// sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicesPlan {
    /// Serial console on port 0x3F8 (output to the VMM's stdout and the captured log).
    pub serial: bool,
    /// virtio-blk disks.
    pub blk: Vec<BlkDisk>,
    /// vhost-user-blk backends (Unix socket paths, e.g. qemu-storage-daemon).
    pub vhost_user_blk: Vec<PathBuf>,
}

/// Where the final report goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReportSink {
    /// Printed as a table to stdout.
    #[default]
    Stdout,
    /// Written as JSON to this file.
    JsonFile(PathBuf),
}

/// Everything needed to launch one TD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    /// TD configuration (attributes, XFAM, CPUID, entry, vCPU count in `max_vcpus`).
    pub vm: TdVmConfig,
    /// Guest RAM: GPAs `[0, memory_size)` (4 KiB multiple, below [`VIRTIO_MMIO_BASE`]).
    pub memory_size: u64,
    /// Number of vCPUs to create and run (≤ `vm.max_vcpus`).
    pub vcpus: u32,
    /// Initial RCX of every vCPU (the TD HOB's GPA).
    pub vcpu_rcx: u64,
    /// The initial image, added in this order.
    pub initial: Vec<InitialRegion>,
    /// Devices.
    pub devices: DevicesPlan,
    /// Report destination.
    pub report: ReportSink,
}

/// First virtio-mmio device window.
pub const VIRTIO_MMIO_BASE: u64 = 0xFEB0_0000;
/// Distance between virtio-mmio device windows.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// Most virtio-mmio devices.
pub const VIRTIO_MMIO_MAX: u64 = 8;
/// The serial console's port.
pub const SERIAL_PORT: u16 = 0x3F8;
/// Port whose byte write ends the TD with that exit status (0 = success), like QEMU's
/// isa-debug-exit.
pub const EXIT_PORT: u16 = 0x501;
