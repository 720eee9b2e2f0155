//! The hardened split virtqueue front end (virtio-hardening.md §2.1 C–F, H, I).
//!
//! [`VirtQueue`] wraps virtio-queue's [`Queue`] for the ring state (`next_avail`, `add_used`,
//! notification suppression) but reads the avail ring and walks every descriptor chain itself,
//! so that each failure is typed and the device knows *why* a chain stopped (virtio-queue's
//! iterator returns `None` both at the end of a chain and on a malformed one).
//!
//! * Queue configuration is validated when the driver sets `QueueReady` ([`VirtQueue::enable`]):
//!   size a non-zero power of two ≤ the device maximum, every ring address written, alignment
//!   (16/2/4, through the `try_set_*` setters), no arithmetic overflow, no two rings
//!   overlapping, and every ring inside shared memory (through `QueueT::is_valid`, i.e. the
//!   view's `check_range`).
//! * `avail.idx` is read once per batch (Acquire); `avail.idx − next_avail` must be ≤ the size.
//! * Each head must be < size and not already in flight (duplicate heads are refused).
//! * Each chain is walked **once** and snapshotted into host memory as a [`ChainSnapshot`]
//!   (address, length, direction of every non-empty descriptor). Devices act only on the
//!   snapshot, so a guest that rewrites descriptors while a request is in flight changes
//!   nothing the device already decided.
//! * Structural corruption ([`QueueError`]) latches the queue: the transport sets
//!   DEVICE_NEEDS_RESET. Defects of a well-formed chain ([`RequestDefect`]) are reported in the
//!   snapshot so the device completes the request with an error status and the slot is not
//!   lost.
//! * Work per notification is bounded by a budget of chains.

use std::fmt;
use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// `VIRTQ_DESC_F_NEXT`.
pub const DESC_F_NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
/// `VIRTQ_DESC_F_WRITE`.
pub const DESC_F_WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
/// `VIRTQ_DESC_F_INDIRECT`.
pub const DESC_F_INDIRECT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;
/// Size of one split-ring descriptor.
pub const DESC_SIZE: u64 = 16;
/// virtio-queue's (and the spec's) largest split queue.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Which ring structure an address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ring {
    /// The descriptor table.
    Descriptors,
    /// The available (driver) ring.
    Avail,
    /// The used (device) ring.
    Used,
    /// An indirect descriptor table.
    IndirectTable,
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ring::Descriptors => "descriptor table",
            Ring::Avail => "available ring",
            Ring::Used => "used ring",
            Ring::IndirectTable => "indirect table",
        })
    }
}

/// Why the driver's queue configuration was refused at `QueueReady` (§2.1 C).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueConfigError {
    /// `QueueNum` is zero, not a power of two, or above `QueueNumMax`.
    #[error("queue size {size} is not a power of two in 1..={max}")]
    InvalidSize {
        /// The size the driver wrote.
        size: u16,
        /// `QueueNumMax`.
        max: u16,
    },
    /// A ring address was never written.
    #[error("{0} address was never written")]
    MissingAddress(Ring),
    /// A ring address is not aligned (descriptors 16, avail 2, used 4).
    #[error("{ring} address {addr:#x} is misaligned")]
    Misaligned {
        /// The ring.
        ring: Ring,
        /// The address.
        addr: u64,
    },
    /// A ring's end overflows the address space.
    #[error("{ring} at {addr:#x} overflows the address space")]
    Overflow {
        /// The ring.
        ring: Ring,
        /// The address.
        addr: u64,
    },
    /// Two rings overlap.
    #[error("{0} overlaps the {1}")]
    Overlap(Ring, Ring),
    /// A ring is not entirely in shared, backed memory.
    #[error("rings are not entirely in shared guest memory")]
    NotInSharedMemory,
}

/// Structural corruption of a queue: the device latches the queue and sets
/// DEVICE_NEEDS_RESET (§2.1 D, E, H).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A ring or descriptor-table access failed (not shared, not backed).
    #[error("cannot access the {ring} at {addr:#x}")]
    RingAccess {
        /// Which structure.
        ring: Ring,
        /// The guest address of the failed access.
        addr: u64,
    },
    /// `avail.idx` is more than the queue size ahead of the device.
    #[error("avail.idx {avail_idx} is more than {size} ahead of next_avail {next_avail}")]
    InvalidAvailIndex {
        /// `avail.idx` as read.
        avail_idx: u16,
        /// The device's next avail position.
        next_avail: u16,
        /// The queue size.
        size: u16,
    },
    /// A head index from the avail ring is not < size.
    #[error("head {head} is not below the queue size {size}")]
    HeadOutOfRange {
        /// The head index.
        head: u16,
        /// The queue size.
        size: u16,
    },
    /// A head was made available while it is still in flight.
    #[error("head {head} made available while in flight")]
    DuplicateHead {
        /// The head index.
        head: u16,
    },
    /// A descriptor's `next` is not < the table size.
    #[error("descriptor {index} has next {next}, table size {size}")]
    NextOutOfRange {
        /// The descriptor holding the bad `next`.
        index: u16,
        /// The `next` value.
        next: u16,
        /// The table size.
        size: u16,
    },
    /// The chain is longer than its table (this includes every loop).
    #[error("chain at head {head} is longer than {limit} descriptors (loop?)")]
    ChainTooLong {
        /// The head index.
        head: u16,
        /// The table size.
        limit: u16,
    },
    /// A descriptor has flags other than NEXT, WRITE, INDIRECT.
    #[error("descriptor {index} has unknown flags {flags:#x}")]
    UnknownFlags {
        /// The descriptor index.
        index: u16,
        /// The flags.
        flags: u16,
    },
    /// INDIRECT used although VIRTIO_F_INDIRECT_DESC was not negotiated.
    #[error("descriptor {index} is indirect but INDIRECT_DESC was not negotiated")]
    IndirectNotNegotiated {
        /// The descriptor index.
        index: u16,
    },
    /// INDIRECT combined with NEXT.
    #[error("descriptor {index} has both INDIRECT and NEXT")]
    IndirectWithNext {
        /// The descriptor index.
        index: u16,
    },
    /// INDIRECT inside an indirect table.
    #[error("nested indirect descriptor {index}")]
    NestedIndirect {
        /// The index inside the indirect table.
        index: u16,
    },
    /// INDIRECT on a descriptor that is not the chain's head (refused by policy, as by the
    /// Linux driver's usage).
    #[error("indirect descriptor {index} is not the head of its chain")]
    IndirectNotHead {
        /// The descriptor index.
        index: u16,
    },
    /// An indirect table length that is 0, not a multiple of 16 or longer than the queue.
    #[error("indirect table length {len} is invalid")]
    IndirectBadLength {
        /// The length.
        len: u32,
    },
}

/// A defect of a structurally sound chain: the device completes the request with an error
/// status (§2.1 H: the slot is not lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestDefect {
    /// A device-readable descriptor follows a device-writable one.
    #[error("readable descriptor {index} follows a writable one")]
    ReadableAfterWritable {
        /// Position in the chain.
        index: u16,
    },
    /// The chain's total length exceeds 2^32 − 1 or the device's request cap.
    #[error("chain total {total} bytes exceeds {limit}")]
    TooLarge {
        /// Total bytes (saturating).
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// A buffer is not entirely in shared, backed memory.
    #[error("buffer {addr:#x}+{len:#x} is not in shared memory")]
    BufferInaccessible {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
}

/// One non-empty buffer of a chain, as snapshotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest (device) address.
    pub addr: u64,
    /// Length in bytes (> 0).
    pub len: u32,
}

/// A descriptor chain copied once into host memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSnapshot {
    /// The head index (what goes into the used ring).
    pub head: u16,
    /// Device-readable buffers in order (zero-length descriptors skipped).
    pub readable: Vec<Segment>,
    /// Device-writable buffers in order (zero-length descriptors skipped).
    pub writable: Vec<Segment>,
    /// Descriptors walked (including zero-length and the indirect descriptor).
    pub descriptors: u32,
    /// The first defect found, if any.
    pub defect: Option<RequestDefect>,
}

impl ChainSnapshot {
    /// Total device-readable bytes.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total device-writable bytes.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// Per-device limits applied while snapshotting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLimits {
    /// Largest total chain length the device accepts (≤ 2^32 − 1).
    pub max_total_bytes: u64,
    /// Whether VIRTIO_F_INDIRECT_DESC was negotiated.
    pub indirect: bool,
}

/// What one batch popped.
#[derive(Debug, Default)]
pub struct Batch {
    /// Chains snapshotted (and now in flight), in avail-ring order.
    pub chains: Vec<ChainSnapshot>,
    /// The structural error that stopped the batch, if any.
    pub error: Option<QueueError>,
}

/// A split virtqueue with driver-written configuration and hardened processing.
#[derive(Debug)]
pub struct VirtQueue {
    queue: Queue,
    max_size: u16,
    size: u16,
    desc: Option<u64>,
    avail: Option<u64>,
    used: Option<u64>,
    desc_lo_hi: [Option<u32>; 2],
    avail_lo_hi: [Option<u32>; 2],
    used_lo_hi: [Option<u32>; 2],
    ready: bool,
    in_flight: Vec<bool>,
    in_flight_count: usize,
}

fn combine(lo_hi: [Option<u32>; 2]) -> Option<u64> {
    match lo_hi {
        [None, None] => None,
        [lo, hi] => Some(u64::from(lo.unwrap_or(0)) | (u64::from(hi.unwrap_or(0)) << 32)),
    }
}

impl VirtQueue {
    /// A queue whose `QueueNumMax` is `max_size` (clamped to 1..=32768, rounded down to a power
    /// of two).
    pub fn new(max_size: u16) -> Self {
        let m = max_size.clamp(1, MAX_QUEUE_SIZE);
        let max_size = 1u16 << (15 - m.leading_zeros().min(15));
        let max_size = if max_size > m {
            max_size >> 1
        } else {
            max_size
        };
        // Cannot fail: max_size is a power of two in 1..=32768.
        let queue = Queue::new(max_size).unwrap_or_else(|_| unreachable_queue());
        VirtQueue {
            queue,
            max_size,
            size: max_size,
            desc: None,
            avail: None,
            used: None,
            desc_lo_hi: [None; 2],
            avail_lo_hi: [None; 2],
            used_lo_hi: [None; 2],
            ready: false,
            in_flight: Vec::new(),
            in_flight_count: 0,
        }
    }

    /// Back to the state after [`VirtQueue::new`].
    pub fn reset(&mut self) {
        *self = VirtQueue::new(self.max_size);
    }

    /// `QueueNumMax`.
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// `QueueNum` as last written (defaults to the maximum).
    pub fn size(&self) -> u16 {
        self.size
    }

    /// `QueueReady`.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight_count
    }

    /// The device's next avail position.
    pub fn next_avail(&self) -> u16 {
        self.queue.next_avail()
    }

    /// The device's next used position.
    pub fn next_used(&self) -> u16 {
        self.queue.next_used()
    }

    /// Records `QueueNum` (validated at [`VirtQueue::enable`]). Ignored while ready.
    pub fn set_size(&mut self, size: u16) {
        if !self.ready {
            self.size = size;
        }
    }

    /// Records half of a ring address (`high` selects the upper 32 bits). Ignored while ready.
    pub fn set_address_half(&mut self, ring: Ring, high: bool, value: u32) {
        if self.ready {
            return;
        }
        let slot = match ring {
            Ring::Descriptors => &mut self.desc_lo_hi,
            Ring::Avail => &mut self.avail_lo_hi,
            Ring::Used => &mut self.used_lo_hi,
            Ring::IndirectTable => return,
        };
        slot[usize::from(high)] = Some(value);
        self.desc = combine(self.desc_lo_hi);
        self.avail = combine(self.avail_lo_hi);
        self.used = combine(self.used_lo_hi);
    }

    /// The ring address as written so far (0 if never written), for register read-back.
    pub fn address(&self, ring: Ring) -> u64 {
        match ring {
            Ring::Descriptors => self.desc,
            Ring::Avail => self.avail,
            Ring::Used => self.used,
            Ring::IndirectTable => None,
        }
        .unwrap_or(0)
    }

    /// Validates the configuration and makes the queue ready (§2.1 C). On error the queue
    /// stays not ready.
    pub fn enable<M: GuestMemory>(&mut self, mem: &M) -> Result<(), QueueConfigError> {
        if self.ready {
            return Ok(());
        }
        let size = self.size;
        if self.queue.try_set_size(size).is_err() {
            return Err(QueueConfigError::InvalidSize {
                size,
                max: self.max_size,
            });
        }
        let desc = self
            .desc
            .ok_or(QueueConfigError::MissingAddress(Ring::Descriptors))?;
        let avail = self
            .avail
            .ok_or(QueueConfigError::MissingAddress(Ring::Avail))?;
        let used = self
            .used
            .ok_or(QueueConfigError::MissingAddress(Ring::Used))?;
        let n = u64::from(size);
        let rings = [
            (Ring::Descriptors, desc, DESC_SIZE * n),
            // flags, idx, ring[n], used_event (virtio 1.x §2.7: 6 + 2 * size)
            (Ring::Avail, avail, 6 + 2 * n),
            // flags, idx, ring[n] of 8-byte elements, avail_event (6 + 8 * size)
            (Ring::Used, used, 6 + 8 * n),
        ];
        let misaligned = |ring, addr| QueueConfigError::Misaligned { ring, addr };
        self.queue
            .try_set_desc_table_address(GuestAddress(desc))
            .map_err(|_| misaligned(Ring::Descriptors, desc))?;
        self.queue
            .try_set_avail_ring_address(GuestAddress(avail))
            .map_err(|_| misaligned(Ring::Avail, avail))?;
        self.queue
            .try_set_used_ring_address(GuestAddress(used))
            .map_err(|_| misaligned(Ring::Used, used))?;
        let mut ends = [0u64; 3];
        for (i, (ring, addr, len)) in rings.iter().enumerate() {
            ends[i] = addr.checked_add(*len).ok_or(QueueConfigError::Overflow {
                ring: *ring,
                addr: *addr,
            })?;
        }
        for i in 0..3 {
            for j in (i + 1)..3 {
                if rings[i].1 < ends[j] && rings[j].1 < ends[i] {
                    return Err(QueueConfigError::Overlap(rings[i].0, rings[j].0));
                }
            }
        }
        self.queue.set_event_idx(false);
        self.queue.set_ready(true);
        if !self.queue.is_valid(mem) {
            self.queue.set_ready(false);
            return Err(QueueConfigError::NotInSharedMemory);
        }
        self.ready = true;
        self.in_flight = vec![false; usize::from(size)];
        self.in_flight_count = 0;
        Ok(())
    }

    /// Stops the queue (`QueueReady` = 0). Ring positions are kept.
    pub fn disable(&mut self) {
        self.ready = false;
        self.queue.set_ready(false);
        self.in_flight.iter_mut().for_each(|b| *b = false);
        self.in_flight_count = 0;
    }

    /// Pops and snapshots up to `budget` chains. Stops at the first structural error, which
    /// is returned in [`Batch::error`] together with the chains snapshotted before it (those
    /// are in flight and must be completed).
    pub fn pop_batch<M: GuestMemory>(
        &mut self,
        mem: &M,
        budget: u16,
        limits: ChainLimits,
    ) -> Batch {
        let mut batch = Batch::default();
        if !self.ready {
            return batch;
        }
        let size = self.queue.size();
        let avail = self.queue.avail_ring();
        let avail_idx = match self.queue.avail_idx(mem, Ordering::Acquire) {
            Ok(i) => i.0,
            Err(_) => {
                batch.error = Some(QueueError::RingAccess {
                    ring: Ring::Avail,
                    addr: avail.wrapping_add(2),
                });
                return batch;
            }
        };
        let next_avail = self.queue.next_avail();
        let pending = avail_idx.wrapping_sub(next_avail);
        if pending > size {
            batch.error = Some(QueueError::InvalidAvailIndex {
                avail_idx,
                next_avail,
                size,
            });
            return batch;
        }
        let n = pending.min(budget);
        batch.chains.reserve(usize::from(n));
        for i in 0..n {
            let pos = Wrapping(next_avail) + Wrapping(i);
            let slot = u64::from(pos.0 % size);
            let addr = avail.wrapping_add(4 + 2 * slot);
            let head = match mem.load::<u16>(GuestAddress(addr), Ordering::Acquire) {
                Ok(h) => u16::from_le(h),
                Err(_) => {
                    batch.error = Some(QueueError::RingAccess {
                        ring: Ring::Avail,
                        addr,
                    });
                    return batch;
                }
            };
            if head >= size {
                batch.error = Some(QueueError::HeadOutOfRange { head, size });
                return batch;
            }
            if self.in_flight[usize::from(head)] {
                batch.error = Some(QueueError::DuplicateHead { head });
                return batch;
            }
            match snapshot_chain(mem, self.queue.desc_table(), size, head, limits) {
                Ok(chain) => {
                    self.in_flight[usize::from(head)] = true;
                    self.in_flight_count += 1;
                    self.queue.set_next_avail(pos.0.wrapping_add(1));
                    batch.chains.push(chain);
                }
                Err(e) => {
                    batch.error = Some(e);
                    return batch;
                }
            }
        }
        batch
    }

    /// Returns an in-flight head to the driver with `len` bytes written.
    pub fn complete<M: GuestMemory>(
        &mut self,
        mem: &M,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        if let Some(slot) = self.in_flight.get_mut(usize::from(head)) {
            if *slot {
                *slot = false;
                self.in_flight_count -= 1;
            }
        }
        let used = self.queue.used_ring();
        let at = used.wrapping_add(4 + 8 * u64::from(self.queue.next_used() % self.queue.size()));
        self.queue
            .add_used(mem, head, len)
            .map_err(|_| QueueError::RingAccess {
                ring: Ring::Used,
                addr: at,
            })
    }

    /// Whether the driver wants an interrupt for the entries added since the last call.
    pub fn needs_notification<M: GuestMemory>(&mut self, mem: &M) -> bool {
        self.queue.needs_notification(mem).unwrap_or(true)
    }
}

#[cold]
fn unreachable_queue() -> Queue {
    // Queue::new only fails for sizes that are not powers of two in 1..=32768, which
    // VirtQueue::new never passes. Fall back to the spec's smallest queue, never panic.
    Queue::new(1).unwrap_or_else(|_| unreachable_queue())
}

/// Walks the chain at `head` once, validates it and copies it into host memory.
pub fn snapshot_chain<M: GuestMemory>(
    mem: &M,
    desc_table: u64,
    queue_size: u16,
    head: u16,
    limits: ChainLimits,
) -> Result<ChainSnapshot, QueueError> {
    let cap = limits.max_total_bytes.min(u64::from(u32::MAX));
    let mut snap = ChainSnapshot {
        head,
        readable: Vec::new(),
        writable: Vec::new(),
        descriptors: 0,
        defect: None,
    };
    let mut table = desc_table;
    let mut table_len = queue_size;
    let mut ring = Ring::Descriptors;
    let mut idx = head;
    let mut walked: u16 = 0; // descriptors read from the current table
    let mut position: u16 = 0; // descriptors of the chain proper (after indirection)
    let mut total: u64 = 0;
    let mut in_indirect = false;
    loop {
        if walked >= table_len {
            return Err(QueueError::ChainTooLong {
                head,
                limit: table_len,
            });
        }
        let addr = table.wrapping_add(DESC_SIZE * u64::from(idx));
        let d: SplitDescriptor = mem
            .read_obj(GuestAddress(addr))
            .map_err(|_| QueueError::RingAccess { ring, addr })?;
        walked += 1;
        snap.descriptors += 1;
        let flags = d.flags();
        if flags & !(DESC_F_NEXT | DESC_F_WRITE | DESC_F_INDIRECT) != 0 {
            return Err(QueueError::UnknownFlags { index: idx, flags });
        }
        if flags & DESC_F_INDIRECT != 0 {
            if in_indirect {
                return Err(QueueError::NestedIndirect { index: idx });
            }
            if !limits.indirect {
                return Err(QueueError::IndirectNotNegotiated { index: idx });
            }
            if flags & DESC_F_NEXT != 0 {
                return Err(QueueError::IndirectWithNext { index: idx });
            }
            if walked != 1 {
                return Err(QueueError::IndirectNotHead { index: idx });
            }
            let len = d.len();
            let entries = len / DESC_SIZE as u32;
            if len == 0 || len % DESC_SIZE as u32 != 0 || entries > u32::from(queue_size) {
                return Err(QueueError::IndirectBadLength { len });
            }
            let taddr = d.addr().raw_value();
            if !mem.check_range(GuestAddress(taddr), len as usize, Permissions::Read) {
                return Err(QueueError::RingAccess {
                    ring: Ring::IndirectTable,
                    addr: taddr,
                });
            }
            in_indirect = true;
            table = taddr;
            // entries ≤ queue_size ≤ 32768 fits u16.
            table_len = entries as u16;
            ring = Ring::IndirectTable;
            idx = 0;
            walked = 0;
            continue;
        }
        let len = d.len();
        if len > 0 {
            total = total.saturating_add(u64::from(len));
            let baddr = d.addr().raw_value();
            let seg = Segment { addr: baddr, len };
            let writable = flags & DESC_F_WRITE != 0;
            if snap.defect.is_none() {
                if total > cap {
                    snap.defect = Some(RequestDefect::TooLarge { total, limit: cap });
                } else if !writable && !snap.writable.is_empty() {
                    snap.defect = Some(RequestDefect::ReadableAfterWritable { index: position });
                } else {
                    let perm = if writable {
                        Permissions::Write
                    } else {
                        Permissions::Read
                    };
                    if !mem.check_range(GuestAddress(baddr), len as usize, perm) {
                        snap.defect = Some(RequestDefect::BufferInaccessible { addr: baddr, len });
                    }
                }
            } else if let Some(RequestDefect::TooLarge { total: t, .. }) = &mut snap.defect {
                *t = total;
            }
            if writable {
                snap.writable.push(seg);
            } else {
                snap.readable.push(seg);
            }
        }
        position = position.saturating_add(1);
        if flags & DESC_F_NEXT == 0 {
            return Ok(snap);
        }
        let next = d.next();
        if next >= table_len {
            return Err(QueueError::NextOutOfRange {
                index: idx,
                next,
                size: table_len,
            });
        }
        idx = next;
    }
}

/// Copies `dst.len()` bytes starting `skip` bytes into the concatenation of `segs` into `dst`.
/// Returns the bytes copied (less than `dst.len()` if the segments end first).
pub fn read_from_segments<M: GuestMemory>(
    mem: &M,
    segs: &[Segment],
    mut skip: u64,
    dst: &mut [u8],
) -> Result<usize, vm_memory::GuestMemoryError> {
    let mut done = 0usize;
    for s in segs {
        if done == dst.len() {
            break;
        }
        let l = u64::from(s.len);
        if skip >= l {
            skip -= l;
            continue;
        }
        let n = ((l - skip) as usize).min(dst.len() - done);
        mem.read_slice(
            &mut dst[done..done + n],
            GuestAddress(s.addr.wrapping_add(skip)),
        )?;
        done += n;
        skip = 0;
    }
    Ok(done)
}

/// Copies `src` into the concatenation of `segs`, starting `skip` bytes in. Returns the bytes
/// copied.
pub fn write_to_segments<M: GuestMemory>(
    mem: &M,
    segs: &[Segment],
    mut skip: u64,
    src: &[u8],
) -> Result<usize, vm_memory::GuestMemoryError> {
    let mut done = 0usize;
    for s in segs {
        if done == src.len() {
            break;
        }
        let l = u64::from(s.len);
        if skip >= l {
            skip -= l;
            continue;
        }
        let n = ((l - skip) as usize).min(src.len() - done);
        mem.write_slice(
            &src[done..done + n],
            GuestAddress(s.addr.wrapping_add(skip)),
        )?;
        done += n;
        skip = 0;
    }
    Ok(done)
}
