//! The host's pool of TDX private HKIDs (Linux: an IDA over the TDX KeyID range minus the
//! global KeyID), built on `vm-allocator`'s [`IdAllocator`].

use vm_allocator::IdAllocator;

/// Why an HKID could not be allocated or freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HkidError {
    /// The TDX KeyID range has fewer than two KeyIDs (one is the global KeyID).
    #[error(
        "TDX KeyID range of {count} KeyIDs starting at {first} is unusable (need >= 2, below 2^16)"
    )]
    InvalidRange {
        /// First TDX KeyID.
        first: u16,
        /// Number of TDX KeyIDs.
        count: u16,
    },
    /// Every private HKID is in use.
    #[error("all {0} private HKIDs are in use")]
    Exhausted(u32),
    /// The HKID was not allocated from this pool.
    #[error("HKID {0} is not allocated from this pool")]
    NotAllocated(u16),
}

/// The TDX KeyID range of a platform: `first` is the global KeyID (given to TDH.SYS.CONFIG),
/// `first + 1 .. first + count` are the private HKIDs handed to TDs.
#[derive(Debug)]
pub struct HkidPool {
    global: u16,
    first_private: u16,
    count_private: u32,
    ids: IdAllocator,
    in_use: u32,
}

impl HkidPool {
    /// Builds the pool for `count` TDX KeyIDs starting at `first`.
    pub fn new(first: u16, count: u16) -> Result<Self, HkidError> {
        let bad = HkidError::InvalidRange { first, count };
        if count < 2 || u32::from(first) + u32::from(count) > 1 << 16 {
            return Err(bad);
        }
        let first_private = first + 1;
        let last = u32::from(first) + u32::from(count) - 1;
        let ids = IdAllocator::new(u32::from(first_private), last).map_err(|_| bad)?;
        Ok(Self {
            global: first,
            first_private,
            count_private: u32::from(count) - 1,
            ids,
            in_use: 0,
        })
    }

    /// The global (private) KeyID used for PAMTs and TDRs.
    pub fn global_hkid(&self) -> u16 {
        self.global
    }

    /// Number of private HKIDs in the pool.
    pub fn capacity(&self) -> u32 {
        self.count_private
    }

    /// Number of private HKIDs currently allocated.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Allocates the lowest free private HKID.
    pub fn allocate(&mut self) -> Result<u16, HkidError> {
        let id = self
            .ids
            .allocate_id()
            .map_err(|_| HkidError::Exhausted(self.count_private))?;
        let id = u16::try_from(id).map_err(|_| HkidError::Exhausted(self.count_private))?;
        self.in_use += 1;
        Ok(id)
    }

    /// Returns `hkid` to the pool.
    pub fn free(&mut self, hkid: u16) -> Result<(), HkidError> {
        if hkid < self.first_private {
            return Err(HkidError::NotAllocated(hkid));
        }
        self.ids
            .free_id(u32::from(hkid))
            .map_err(|_| HkidError::NotAllocated(hkid))?;
        self.in_use -= 1;
        Ok(())
    }

    /// Whether `hkid` is currently allocated.
    pub fn is_allocated(&self, hkid: u16) -> bool {
        self.ids.is_allocated(u32::from(hkid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_is_first_and_private_ids_cycle() {
        let mut p = HkidPool::new(32, 3).unwrap();
        assert_eq!(p.global_hkid(), 32);
        assert_eq!(p.allocate(), Ok(33));
        assert_eq!(p.allocate(), Ok(34));
        assert_eq!(p.allocate(), Err(HkidError::Exhausted(2)));
        assert_eq!(p.free(33), Ok(()));
        assert_eq!(p.free(33), Err(HkidError::NotAllocated(33)));
        assert_eq!(p.free(32), Err(HkidError::NotAllocated(32)));
        assert_eq!(p.allocate(), Ok(33));
        assert_eq!(p.in_use(), 2);
        assert!(HkidPool::new(5, 1).is_err());
    }
}
