//! virtio-blk (virtio 1.x §5.2) on a raw file with positioned I/O.
//!
//! The request header (`virtio_blk_outhdr`: type, ioprio, sector) is copied once from the
//! chain's readable bytes into host memory and every decision is taken from that copy. Data is
//! moved between guest buffers and the file through one host bounce buffer of `size_max` bytes
//! owned by the device (bounded host memory per request, however large the request). The status
//! byte is the last byte of the last writable buffer.
//!
//! Outcomes (status byte, used `len` = bytes the device wrote into the chain):
//! * malformed request (chain defect, short header, data not a multiple of 512, range beyond
//!   the capacity, more than `seg_max` data segments, a data segment above `size_max`,
//!   buffers in the wrong direction, write to a read-only disk): `VIRTIO_BLK_S_IOERR`, len 1;
//! * unknown request type: `VIRTIO_BLK_S_UNSUPP`, len 1;
//! * no writable byte for the status (or the status byte not writable): len 0, nothing done.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use tracing::debug;
use virtio_bindings::virtio_blk as vb;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::mmio::VirtioDevice;
use crate::queue::{read_from_segments, write_to_segments, ChainSnapshot, Segment};

/// virtio device ID of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Size of `virtio_blk_outhdr`.
pub const OUTHDR_SIZE: usize = 16;
/// Default `size_max`: the SWIOTLB maximum mapping of a TD guest (256 KiB).
pub const DEFAULT_SIZE_MAX: u32 = 256 * 1024;
/// Default queue size.
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Size of the device configuration space exposed (`virtio_blk_config` up to and including
/// `unused1`).
pub const CONFIG_SIZE: usize = 60;
/// Largest write-zeroes request, in sectors (32 MiB).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 65536;

const _: () = {
    use core::mem::offset_of;
    use vb::virtio_blk_config as C;
    assert!(offset_of!(C, capacity) == 0);
    assert!(offset_of!(C, size_max) == 8);
    assert!(offset_of!(C, seg_max) == 12);
    assert!(offset_of!(C, blk_size) == 20);
    assert!(offset_of!(C, num_queues) == 34);
    assert!(offset_of!(C, max_write_zeroes_sectors) == 48);
    assert!(offset_of!(C, max_write_zeroes_seg) == 52);
    assert!(offset_of!(C, write_zeroes_may_unmap) == 56);
    assert!(core::mem::size_of::<vb::virtio_blk_outhdr>() == OUTHDR_SIZE);
};

/// Request types (`virtio_blk_outhdr.type`) as an open type: unknown values survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestType(pub u32);

impl RequestType {
    /// `VIRTIO_BLK_T_IN`.
    pub const IN: Self = Self(vb::VIRTIO_BLK_T_IN);
    /// `VIRTIO_BLK_T_OUT`.
    pub const OUT: Self = Self(vb::VIRTIO_BLK_T_OUT);
    /// `VIRTIO_BLK_T_FLUSH`.
    pub const FLUSH: Self = Self(vb::VIRTIO_BLK_T_FLUSH);
    /// `VIRTIO_BLK_T_GET_ID`.
    pub const GET_ID: Self = Self(vb::VIRTIO_BLK_T_GET_ID);
    /// `VIRTIO_BLK_T_DISCARD` (not offered).
    pub const DISCARD: Self = Self(vb::VIRTIO_BLK_T_DISCARD);
    /// `VIRTIO_BLK_T_WRITE_ZEROES`.
    pub const WRITE_ZEROES: Self = Self(vb::VIRTIO_BLK_T_WRITE_ZEROES);
}

/// Status byte values.
pub mod blk_status {
    /// `VIRTIO_BLK_S_OK`.
    pub const OK: u8 = super::vb::VIRTIO_BLK_S_OK as u8;
    /// `VIRTIO_BLK_S_IOERR`.
    pub const IOERR: u8 = super::vb::VIRTIO_BLK_S_IOERR as u8;
    /// `VIRTIO_BLK_S_UNSUPP`.
    pub const UNSUPP: u8 = super::vb::VIRTIO_BLK_S_UNSUPP as u8;
}

/// virtio-blk feature bits offered.
pub mod blk_features {
    use super::vb;
    /// `VIRTIO_BLK_F_SIZE_MAX`.
    pub const SIZE_MAX: u64 = 1 << vb::VIRTIO_BLK_F_SIZE_MAX;
    /// `VIRTIO_BLK_F_SEG_MAX`.
    pub const SEG_MAX: u64 = 1 << vb::VIRTIO_BLK_F_SEG_MAX;
    /// `VIRTIO_BLK_F_RO`.
    pub const RO: u64 = 1 << vb::VIRTIO_BLK_F_RO;
    /// `VIRTIO_BLK_F_BLK_SIZE`.
    pub const BLK_SIZE: u64 = 1 << vb::VIRTIO_BLK_F_BLK_SIZE;
    /// `VIRTIO_BLK_F_FLUSH`.
    pub const FLUSH: u64 = 1 << vb::VIRTIO_BLK_F_FLUSH;
    /// `VIRTIO_BLK_F_WRITE_ZEROES`.
    pub const WRITE_ZEROES: u64 = 1 << vb::VIRTIO_BLK_F_WRITE_ZEROES;
}

/// The storage behind the device. Implemented for [`RawFile`]; tests use their own.
pub trait BlockBackend {
    /// Size in bytes (the capacity is this divided by 512, rounded down).
    fn len(&self) -> u64;
    /// Whether the backend is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable.
    fn flush(&mut self) -> io::Result<()>;
}

/// A raw disk image (positioned I/O: `pread`/`pwrite`).
#[derive(Debug)]
pub struct RawFile {
    file: File,
    len: u64,
}

impl RawFile {
    /// Wraps an open file; its current size is the disk size.
    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(RawFile { file, len })
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl BlockBackend for RawFile {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Block device settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    /// Offer `VIRTIO_BLK_F_RO` and fail every write.
    pub read_only: bool,
    /// The serial returned by GET_ID (20 bytes, NUL padded).
    pub id: [u8; 20],
    /// `QueueNumMax` (power of two).
    pub queue_size: u16,
    /// `size_max`: largest data segment.
    pub size_max: u32,
    /// `seg_max`: most data segments per request.
    pub seg_max: u32,
}

impl Default for BlkConfig {
    fn default() -> Self {
        BlkConfig {
            read_only: false,
            id: *b"tdx-devices-blk\0\0\0\0\0",
            queue_size: DEFAULT_QUEUE_SIZE,
            size_max: DEFAULT_SIZE_MAX,
            seg_max: u32::from(DEFAULT_QUEUE_SIZE) - 2,
        }
    }
}

/// Per-device counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Requests completed with OK.
    pub ok: u64,
    /// Requests completed with IOERR.
    pub ioerr: u64,
    /// Requests completed with UNSUPP.
    pub unsupp: u64,
    /// Requests completed without a status (no writable status byte).
    pub no_status: u64,
}

/// A virtio-blk device.
#[derive(Debug)]
pub struct BlkDevice<F: BlockBackend = RawFile> {
    backend: F,
    config: BlkConfig,
    queue_sizes: [u16; 1],
    bounce: Vec<u8>,
    stats: BlkStats,
    features: u64,
}

/// How a request ended.
enum Outcome {
    /// Status byte and data bytes written into the chain before it.
    Status(u8, u32),
}

impl<F: BlockBackend> BlkDevice<F> {
    /// A block device on `backend`. `size_max` is clamped to ≥ 512, `seg_max` to ≥ 1.
    pub fn new(backend: F, config: BlkConfig) -> Self {
        let config = BlkConfig {
            size_max: config.size_max.max(SECTOR_SIZE as u32),
            seg_max: config.seg_max.max(1),
            ..config
        };
        BlkDevice {
            backend,
            queue_sizes: [config.queue_size],
            bounce: vec![0; config.size_max as usize],
            config,
            stats: BlkStats::default(),
            features: 0,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &F {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut F {
        &mut self.backend
    }

    /// Counters.
    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.backend.len() / SECTOR_SIZE
    }

    /// The configuration space bytes (little-endian `virtio_blk_config`).
    pub fn config_space(&self) -> [u8; CONFIG_SIZE] {
        let mut c = [0u8; CONFIG_SIZE];
        c[0..8].copy_from_slice(&self.capacity().to_le_bytes());
        c[8..12].copy_from_slice(&self.config.size_max.to_le_bytes());
        c[12..16].copy_from_slice(&self.config.seg_max.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes());
        if !self.config.read_only {
            c[48..52].copy_from_slice(&MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
            c[52..56].copy_from_slice(&1u32.to_le_bytes());
        }
        c
    }

    fn execute<M: GuestMemory>(&mut self, chain: &ChainSnapshot, mem: &M) -> Outcome {
        use blk_status::*;
        let ioerr = |why: &str| {
            debug!(head = chain.head, why, "virtio-blk request failed");
            Outcome::Status(IOERR, 0)
        };
        if let Some(d) = chain.defect {
            debug!(head = chain.head, defect = %d, "virtio-blk chain defect");
            return Outcome::Status(IOERR, 0);
        }
        // Header: copied once into host memory.
        let mut hdr = [0u8; OUTHDR_SIZE];
        match read_from_segments(mem, &chain.readable, 0, &mut hdr) {
            Ok(OUTHDR_SIZE) => {}
            _ => return ioerr("short or unreadable header"),
        }
        let rtype = RequestType(u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]));
        let sector = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        let readable_data = chain.readable_len() - OUTHDR_SIZE as u64;
        // Writable data excludes the status byte (the caller made sure there is one).
        let writable_data = chain.writable_len() - 1;
        let data_segs = |segs: &[Segment], skip: u64, len: u64| -> (u64, u64) {
            // (number of segments touched, largest part) of [skip, skip + len).
            let (mut count, mut largest, mut pos) = (0u64, 0u64, 0u64);
            for s in segs {
                let (a, b) = (pos, pos + u64::from(s.len));
                pos = b;
                let lo = a.max(skip);
                let hi = b.min(skip + len);
                if hi > lo {
                    count += 1;
                    largest = largest.max(hi - lo);
                }
            }
            (count, largest)
        };
        let check_range = |this: &Self, len: u64| -> Result<u64, &'static str> {
            if len % SECTOR_SIZE != 0 {
                return Err("data length not a multiple of 512");
            }
            let off = sector.checked_mul(SECTOR_SIZE).ok_or("sector overflows")?;
            let end = off.checked_add(len).ok_or("range overflows")?;
            if end > this.capacity() * SECTOR_SIZE {
                return Err("range beyond capacity");
            }
            Ok(off)
        };
        let seg_limits = |this: &Self, segs: (u64, u64)| -> Result<(), &'static str> {
            if segs.0 > u64::from(this.config.seg_max) {
                return Err("more data segments than seg_max");
            }
            if segs.1 > u64::from(this.config.size_max) {
                return Err("data segment larger than size_max");
            }
            Ok(())
        };
        match rtype {
            RequestType::IN => {
                if readable_data != 0 {
                    return ioerr("IN with device-readable data");
                }
                let off = match check_range(self, writable_data) {
                    Ok(o) => o,
                    Err(e) => return ioerr(e),
                };
                if let Err(e) = seg_limits(self, data_segs(&chain.writable, 0, writable_data)) {
                    return ioerr(e);
                }
                let mut done = 0u64;
                while done < writable_data {
                    let n = (writable_data - done).min(self.bounce.len() as u64) as usize;
                    if self
                        .backend
                        .read_at(&mut self.bounce[..n], off + done)
                        .is_err()
                    {
                        return Outcome::Status(IOERR, done as u32);
                    }
                    match write_to_segments(mem, &chain.writable, done, &self.bounce[..n]) {
                        Ok(w) if w == n => {}
                        _ => return Outcome::Status(IOERR, done as u32),
                    }
                    done += n as u64;
                }
                Outcome::Status(OK, writable_data as u32)
            }
            RequestType::OUT => {
                if self.config.read_only {
                    return ioerr("write to a read-only disk");
                }
                if writable_data != 0 {
                    return ioerr("OUT with device-writable data");
                }
                let off = match check_range(self, readable_data) {
                    Ok(o) => o,
                    Err(e) => return ioerr(e),
                };
                let segs = data_segs(&chain.readable, OUTHDR_SIZE as u64, readable_data);
                if let Err(e) = seg_limits(self, segs) {
                    return ioerr(e);
                }
                let mut done = 0u64;
                while done < readable_data {
                    let n = (readable_data - done).min(self.bounce.len() as u64) as usize;
                    match read_from_segments(
                        mem,
                        &chain.readable,
                        OUTHDR_SIZE as u64 + done,
                        &mut self.bounce[..n],
                    ) {
                        Ok(r) if r == n => {}
                        _ => return ioerr("guest buffer unreadable"),
                    }
                    if self
                        .backend
                        .write_at(&self.bounce[..n], off + done)
                        .is_err()
                    {
                        return ioerr("backend write failed");
                    }
                    done += n as u64;
                }
                Outcome::Status(OK, 0)
            }
            RequestType::FLUSH => {
                if readable_data != 0 || writable_data != 0 {
                    return ioerr("FLUSH with data");
                }
                match self.backend.flush() {
                    Ok(()) => Outcome::Status(OK, 0),
                    Err(_) => ioerr("flush failed"),
                }
            }
            RequestType::GET_ID => {
                if readable_data != 0 || writable_data == 0 {
                    return ioerr("GET_ID without an id buffer");
                }
                let n = writable_data.min(self.config.id.len() as u64) as usize;
                match write_to_segments(mem, &chain.writable, 0, &self.config.id[..n]) {
                    Ok(w) if w == n => Outcome::Status(OK, n as u32),
                    _ => Outcome::Status(IOERR, 0),
                }
            }
            RequestType::WRITE_ZEROES => {
                if self.config.read_only || self.features & blk_features::WRITE_ZEROES == 0 {
                    return Outcome::Status(UNSUPP, 0);
                }
                if readable_data != 16 || writable_data != 0 {
                    return ioerr("WRITE_ZEROES needs exactly one 16-byte segment");
                }
                let mut seg = [0u8; 16];
                match read_from_segments(mem, &chain.readable, OUTHDR_SIZE as u64, &mut seg) {
                    Ok(16) => {}
                    _ => return ioerr("segment unreadable"),
                }
                let start = u64::from_le_bytes([
                    seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
                ]);
                let num = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
                let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
                // Only the UNMAP flag (bit 0) is defined.
                if flags & !1 != 0 {
                    return Outcome::Status(UNSUPP, 0);
                }
                if num > MAX_WRITE_ZEROES_SECTORS {
                    return ioerr("write-zeroes larger than advertised");
                }
                let Some(off) = start.checked_mul(SECTOR_SIZE) else {
                    return ioerr("sector overflows");
                };
                let len = u64::from(num) * SECTOR_SIZE;
                match off.checked_add(len) {
                    Some(end) if end <= self.capacity() * SECTOR_SIZE => {}
                    _ => return ioerr("range beyond capacity"),
                }
                self.bounce.fill(0);
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(self.bounce.len() as u64) as usize;
                    if self
                        .backend
                        .write_at(&self.bounce[..n], off + done)
                        .is_err()
                    {
                        return ioerr("backend write failed");
                    }
                    done += n as u64;
                }
                Outcome::Status(OK, 0)
            }
            _ => Outcome::Status(UNSUPP, 0),
        }
    }
}

impl<F: BlockBackend> VirtioDevice for BlkDevice<F> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        use blk_features::*;
        let mut f = SIZE_MAX | SEG_MAX | BLK_SIZE | FLUSH;
        if self.config.read_only {
            f |= RO;
        } else {
            f |= WRITE_ZEROES;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_space();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        for (i, b) in data.iter_mut().enumerate() {
            *b = start
                .checked_add(i)
                .and_then(|j| c.get(j))
                .copied()
                .unwrap_or(0);
        }
    }

    fn max_request_bytes(&self, _queue: usize) -> u64 {
        // Header + status + seg_max full segments.
        u64::from(self.config.seg_max) * u64::from(self.config.size_max) + OUTHDR_SIZE as u64 + 1
    }

    fn activate(&mut self, features: u64) {
        self.features = features;
    }

    fn handle_chain<M: GuestMemory>(
        &mut self,
        _queue: usize,
        chain: &ChainSnapshot,
        mem: &M,
    ) -> u32 {
        // The status byte: last byte of the last writable buffer.
        let Some(last) = chain.writable.last() else {
            self.stats.no_status += 1;
            return 0;
        };
        let status_addr = last.addr.wrapping_add(u64::from(last.len) - 1);
        let Outcome::Status(status, written) = self.execute(chain, mem);
        if mem.write_obj(status, GuestAddress(status_addr)).is_err() {
            self.stats.no_status += 1;
            return written;
        }
        match status {
            blk_status::OK => self.stats.ok += 1,
            blk_status::IOERR => self.stats.ioerr += 1,
            _ => self.stats.unsupp += 1,
        }
        written.saturating_add(1)
    }

    fn reset(&mut self) {
        self.features = 0;
    }
}
