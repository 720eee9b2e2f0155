//! A bounded reader of the TD HOB (UEFI PI HOB list) handed over in RCX: the PHIT, then
//! resource descriptors. The HOB is VMM input: every length and count is checked and bounded.

/// HOB type of the PHIT (handoff information table).
pub const HOB_TYPE_HANDOFF: u16 = 0x0001;
/// HOB type of a resource descriptor.
pub const HOB_TYPE_RESOURCE_DESCRIPTOR: u16 = 0x0003;
/// HOB type that ends the list.
pub const HOB_TYPE_END_OF_HOB_LIST: u16 = 0xFFFF;
/// EFI_RESOURCE_SYSTEM_MEMORY.
#[allow(dead_code)]
pub const RESOURCE_SYSTEM_MEMORY: u32 = 0;
/// EFI_RESOURCE_MEMORY_UNACCEPTED.
pub const RESOURCE_MEMORY_UNACCEPTED: u32 = 7;

/// The most HOB bytes read.
pub const MAX_HOB_BYTES: u64 = 64 * 1024;
/// The most HOBs walked.
pub const MAX_HOBS: usize = 1024;

/// One resource descriptor.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// EFI_RESOURCE_TYPE.
    pub kind: u32,
    /// PhysicalStart.
    pub start: u64,
    /// ResourceLength.
    pub length: u64,
}

/// Why the HOB list was rejected.
#[derive(Clone, Copy, Debug)]
pub enum HobError {
    /// The HOB GPA is zero, unaligned or outside the identity map.
    BadAddress(u64),
    /// The first HOB is not a PHIT.
    NoPhit(u16),
    /// A HOB header at `offset` has an impossible length.
    BadLength { offset: u64, length: u16 },
    /// The list did not end within [`MAX_HOB_BYTES`] / [`MAX_HOBS`].
    Unterminated,
}

impl core::fmt::Display for HobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HobError::BadAddress(a) => write!(f, "HOB address {a:#x} is unusable"),
            HobError::NoPhit(t) => write!(f, "first HOB has type {t:#x}, not the PHIT"),
            HobError::BadLength { offset, length } => {
                write!(f, "HOB at offset {offset:#x} has length {length}")
            }
            HobError::Unterminated => write!(f, "HOB list has no end within the bounds"),
        }
    }
}

fn read_u16(addr: u64) -> u16 {
    // SAFETY: callers only pass addresses inside the bounded HOB window, which lies in the
    // identity-mapped [0, 4 GiB) and is readable at CPL 3 (U=1).
    unsafe { (addr as *const u16).read_unaligned() }
}

fn read_u32(addr: u64) -> u32 {
    // SAFETY: as read_u16.
    unsafe { (addr as *const u32).read_unaligned() }
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: as read_u16.
    unsafe { (addr as *const u64).read_unaligned() }
}

/// Walks the HOB list at `hob` and calls `f` for every resource descriptor.
pub fn for_each_resource(hob: u64, mut f: impl FnMut(Resource)) -> Result<(), HobError> {
    if hob == 0 || !hob.is_multiple_of(8) || hob.saturating_add(MAX_HOB_BYTES) > (4 << 30) {
        return Err(HobError::BadAddress(hob));
    }
    let t = read_u16(hob);
    if t != HOB_TYPE_HANDOFF {
        return Err(HobError::NoPhit(t));
    }
    let mut off: u64 = 0;
    for _ in 0..MAX_HOBS {
        if off + 8 > MAX_HOB_BYTES {
            break;
        }
        let at = hob + off;
        let kind = read_u16(at);
        let length = read_u16(at + 2);
        if kind == HOB_TYPE_END_OF_HOB_LIST {
            return Ok(());
        }
        if length < 8 || !length.is_multiple_of(8) || off + u64::from(length) > MAX_HOB_BYTES {
            return Err(HobError::BadLength {
                offset: off,
                length,
            });
        }
        if kind == HOB_TYPE_RESOURCE_DESCRIPTOR {
            if length < 48 {
                return Err(HobError::BadLength {
                    offset: off,
                    length,
                });
            }
            f(Resource {
                kind: read_u32(at + 24),
                start: read_u64(at + 32),
                length: read_u64(at + 40),
            });
        }
        off += u64::from(length);
    }
    Err(HobError::Unterminated)
}
