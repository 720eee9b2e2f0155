//! vhost-user-blk frontend (vhost 0.18 [`Frontend`]) over shared memory only.
//!
//! The frontend hands an external backend (e.g. `qemu-storage-daemon`) the TD's **shared**
//! backing only: the regions of the `GuestMemoryMmap` that [`tdx_memory::shared`] wraps, which
//! by construction never contains private memory (the guest_memfd half is not mappable). Each
//! region must be fd-backed (a memfd or an unlinked tmpfs file) so its fd can be passed with
//! `VHOST_USER_SET_MEM_TABLE`.
//!
//! # Feature policy for TDs
//!
//! * `VIRTIO_F_ACCESS_PLATFORM` (bit 33) is **never** negotiated with the backend. In
//!   vhost-user, negotiating it switches the backend to IOMMU mode: ring and buffer addresses
//!   become IOVAs translated through `VHOST_USER_IOTLB_MSG` updates sent by the frontend
//!   (which also needs the BACKEND_REQ and REPLY_ACK protocol features for IOTLB misses). This
//!   frontend does not speak IOTLB, so it keeps the backend in plain-GPA mode, where the
//!   backend can only reach what the memory table contains — the shared regions.
//! * A backend that does not offer `VIRTIO_F_VERSION_1` or `VHOST_USER_F_PROTOCOL_FEATURES`
//!   is refused ([`VhostUserError::MissingBackendFeature`]). vhost-user has no way for a
//!   backend to *require* a feature; a backend that cannot work without IOTLB shows up as one
//!   that fails `SET_FEATURES` without ACCESS_PLATFORM, which is reported as
//!   [`VhostUserError::Backend`] and the backend is not used.
//! * Protocol features: only [`ACCEPTED_PROTOCOL_FEATURES`] (MQ, REPLY_ACK, CONFIG,
//!   CONFIGURE_MEM_SLOTS) are accepted; in particular BACKEND_REQ, BACKEND_SEND_FD,
//!   HOST_NOTIFIER, PAGEFAULT (postcopy), INFLIGHT_SHMFD, SHARED_OBJECT, DEVICE_STATE, SHMEM and
//!   XEN_MMAP are never negotiated: each either gives the backend a channel to request
//!   mappings or memory from the frontend, or needs state this frontend does not keep.
//! * virtio features: only [`ACCEPTED_FEATURES`] (VERSION_1 and the blk geometry/flush/RO/
//!   write-zeroes bits); never EVENT_IDX, INDIRECT_DESC or RING_PACKED (the ring driver is the
//!   VMM's and does not use them).

use std::os::unix::io::AsRawFd;
use std::path::Path;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::blk::blk_features;
use crate::features::VERSION_1;

/// `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30 of the virtio feature word in vhost-user).
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// virtio features the frontend may negotiate with a vhost-user-blk backend.
pub const ACCEPTED_FEATURES: u64 = VERSION_1
    | VHOST_USER_F_PROTOCOL_FEATURES
    | blk_features::SIZE_MAX
    | blk_features::SEG_MAX
    | blk_features::BLK_SIZE
    | blk_features::FLUSH
    | blk_features::RO
    | blk_features::WRITE_ZEROES;

/// Protocol features the frontend may negotiate.
pub const ACCEPTED_PROTOCOL_FEATURES: VhostUserProtocolFeatures = VhostUserProtocolFeatures::MQ
    .union(VhostUserProtocolFeatures::REPLY_ACK)
    .union(VhostUserProtocolFeatures::CONFIG)
    .union(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS);

/// Why the frontend could not set up the backend.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The backend does not offer a feature the frontend needs.
    #[error("backend does not offer required feature bits {0:#x}")]
    MissingBackendFeature(u64),
    /// A guest memory region is not fd-backed or not mapped.
    #[error("shared region at {0:#x} is not fd-backed")]
    RegionNotFdBacked(u64),
    /// A ring address is outside the shared regions.
    #[error("ring address {0:#x} is not in shared memory")]
    RingNotShared(u64),
    /// The backend rejected a request or the connection failed.
    #[error("vhost-user backend error: {0}")]
    Backend(#[from] vhost::Error),
    /// Creating an eventfd failed.
    #[error("eventfd: {0}")]
    EventFd(#[from] std::io::Error),
}

/// The feature words the frontend accepts from a backend's offer (pure policy).
pub fn negotiate(
    backend_features: u64,
    backend_protocol: VhostUserProtocolFeatures,
) -> Result<(u64, VhostUserProtocolFeatures), VhostUserError> {
    let required = VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;
    let missing = required & !backend_features;
    if missing != 0 {
        return Err(VhostUserError::MissingBackendFeature(missing));
    }
    Ok((
        backend_features & ACCEPTED_FEATURES,
        backend_protocol & ACCEPTED_PROTOCOL_FEATURES,
    ))
}

/// Guest addresses of one split ring, in the shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAddresses {
    /// Queue size.
    pub size: u16,
    /// Descriptor table GPA.
    pub desc: u64,
    /// Avail ring GPA.
    pub avail: u64,
    /// Used ring GPA.
    pub used: u64,
}

/// A connected, configured vhost-user-blk backend with one queue.
pub struct VhostUserBlk {
    frontend: Frontend,
    features: u64,
    protocol: VhostUserProtocolFeatures,
    kick: EventFd,
    call: EventFd,
}

impl std::fmt::Debug for VhostUserBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserBlk")
            .field("features", &self.features)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl VhostUserBlk {
    /// Connects to `socket`, negotiates, sends the memory table of `shared` (the shared
    /// backing only), sets up queue 0 at `ring` and enables it.
    pub fn connect<B: Bitmap>(
        socket: &Path,
        shared: &GuestMemoryMmap<B>,
        ring: RingAddresses,
    ) -> Result<Self, VhostUserError> {
        let mut frontend = Frontend::connect(socket, 1)?;
        frontend.set_owner()?;
        let offered = frontend.get_features()?;
        let offered_protocol = frontend.get_protocol_features()?;
        let (features, protocol) = negotiate(offered, offered_protocol)?;
        frontend.set_features(features)?;
        frontend.set_protocol_features(protocol)?;

        let mut regions = Vec::new();
        for r in shared.iter() {
            let info = VhostUserMemoryRegionInfo::from_guest_region(r).map_err(|_| {
                VhostUserError::RegionNotFdBacked(vm_memory::GuestMemoryRegion::start_addr(r).0)
            })?;
            regions.push(info);
        }
        frontend.set_mem_table(&regions)?;

        // vhost-user ring addresses are frontend virtual addresses, translated by the backend
        // through the memory table.
        let hva = |gpa: u64, len: usize| -> Result<u64, VhostUserError> {
            if !GuestMemoryBackend::check_range(shared, GuestAddress(gpa), len) {
                return Err(VhostUserError::RingNotShared(gpa));
            }
            shared
                .get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|_| VhostUserError::RingNotShared(gpa))
        };
        let n = usize::from(ring.size);
        let config = VringConfigData {
            queue_max_size: ring.size,
            queue_size: ring.size,
            flags: 0,
            desc_table_addr: hva(ring.desc, 16 * n)?,
            used_ring_addr: hva(ring.used, 6 + 8 * n)?,
            avail_ring_addr: hva(ring.avail, 6 + 2 * n)?,
            log_addr: None,
        };
        let kick = EventFd::new(libc::EFD_NONBLOCK)?;
        let call = EventFd::new(libc::EFD_NONBLOCK)?;
        frontend.set_vring_num(0, ring.size)?;
        frontend.set_vring_addr(0, &config)?;
        frontend.set_vring_base(0, 0)?;
        frontend.set_vring_call(0, &call)?;
        frontend.set_vring_kick(0, &kick)?;
        frontend.set_vring_enable(0, true)?;
        Ok(VhostUserBlk {
            frontend,
            features,
            protocol,
            kick,
            call,
        })
    }

    /// The negotiated virtio features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The negotiated protocol features.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// Kicks queue 0 (the backend then reads the avail ring).
    pub fn kick(&self) -> std::io::Result<()> {
        self.kick.write(1)
    }

    /// The call eventfd the backend signals on completions (for the VMM's interrupt path).
    pub fn call_fd(&self) -> i32 {
        self.call.as_raw_fd()
    }

    /// The underlying frontend.
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.frontend
    }
}
