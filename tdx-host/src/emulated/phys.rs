//! Emulated physical memory: a memfd arena, and the host's view of it with the TD-owner rule.
//!
//! The arena is an anonymous memory file (`memfd_create`) of the configured size, sparse until
//! written. The module and the host access it with positioned reads and writes
//! (`pread`/`pwrite`), so no Rust reference ever aliases memory another thread writes; an
//! execution engine that needs a mapping (the KVM engine) maps the file descriptor itself
//! ([`PhysicalMemory::arena_fd`]).
//!
//! **TD-owner rule.** Every 4 KiB page whose PAMT type is a TD-owned type (REG, TDR, TDCX,
//! TDVPR, EPT) carries an owner bit. [`PhysicalMemory::read`] returns zeros for such pages
//! (real hardware returns ciphertext or poison, never plaintext), and
//! [`PhysicalMemory::write`] to such a page does not change the TD's data but poisons the
//! page: the module marks the owning TD fatal on the TD's next access to it (real hardware:
//! the integrity check fails on the TD's next read of a line written with another key).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Size of the pages the owner and poison bits are kept for.
pub const PAGE_SIZE: u64 = 4096;

/// A host access to emulated physical memory that cannot be done.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PhysMemError {
    /// The range is not inside `0..size`.
    #[error("physical range {pa:#x}+{len:#x} is outside the emulated memory of {size:#x} bytes")]
    OutOfRange {
        /// First byte of the access.
        pa: u64,
        /// Length of the access.
        len: u64,
        /// Size of the emulated memory.
        size: u64,
    },
    /// The memory file could not be read or written.
    #[error("arena I/O at {pa:#x}: {msg}")]
    Io {
        /// First byte of the access.
        pa: u64,
        /// The OS error.
        msg: String,
    },
}

#[derive(Debug, Default)]
struct PageBits {
    owned: Vec<u64>,
    poisoned: Vec<u64>,
}

impl PageBits {
    fn get(v: &[u64], page: u64) -> bool {
        let (w, b) = ((page / 64) as usize, page % 64);
        v.get(w).is_some_and(|x| x & (1 << b) != 0)
    }
    fn set(v: &mut [u64], page: u64, on: bool) {
        let (w, b) = ((page / 64) as usize, page % 64);
        if let Some(x) = v.get_mut(w) {
            if on {
                *x |= 1 << b;
            } else {
                *x &= !(1 << b);
            }
        }
    }
}

/// The host's access to emulated physical memory (see the module docs for the TD-owner rule).
#[derive(Debug)]
pub struct PhysicalMemory {
    file: File,
    size: u64,
    cmrs: Vec<(u64, u64)>,
    bits: Mutex<PageBits>,
}

impl PhysicalMemory {
    /// Creates a zero-filled arena of `size` bytes (a multiple of 4 KiB).
    pub(crate) fn new(size: u64, cmrs: Vec<(u64, u64)>) -> std::io::Result<Self> {
        // SAFETY: memfd_create only reads the NUL-terminated name we pass; the returned
        // descriptor (checked for -1) is owned by nobody else, so OwnedFd may take it.
        let fd = unsafe { libc::memfd_create(c"tdx-emulated-phys".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor returned by memfd_create above, owned only here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = File::from(owned);
        file.set_len(size)?;
        let words = (size / PAGE_SIZE).div_ceil(64) as usize;
        Ok(PhysicalMemory {
            file,
            size,
            cmrs,
            bits: Mutex::new(PageBits {
                owned: vec![0; words],
                poisoned: vec![0; words],
            }),
        })
    }

    /// Bytes of emulated physical memory (addresses `0..size`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The convertible memory ranges, as `(base, size)`.
    pub fn cmrs(&self) -> Vec<(u64, u64)> {
        self.cmrs.clone()
    }

    /// The memory file, for an execution engine that maps the arena.
    pub fn arena_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn check(&self, pa: u64, len: usize) -> Result<(), PhysMemError> {
        let len = len as u64;
        match pa.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(PhysMemError::OutOfRange {
                pa,
                len,
                size: self.size,
            }),
        }
    }

    fn pages(pa: u64, len: usize) -> std::ops::Range<u64> {
        if len == 0 {
            return 0..0;
        }
        pa / PAGE_SIZE..(pa + len as u64 - 1) / PAGE_SIZE + 1
    }

    /// Host read: bytes of TD-owned pages read as zeros.
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysMemError> {
        self.check(pa, buf.len())?;
        self.raw_read(pa, buf)?;
        let bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        for page in Self::pages(pa, buf.len()) {
            if PageBits::get(&bits.owned, page) {
                let start = (page * PAGE_SIZE).max(pa) - pa;
                let end = ((page + 1) * PAGE_SIZE).min(pa + buf.len() as u64) - pa;
                buf[start as usize..end as usize].fill(0);
            }
        }
        Ok(())
    }

    /// Host write: bytes for pages not owned by a TD are written; a TD-owned page is left
    /// unchanged and becomes poisoned.
    pub fn write(&self, pa: u64, buf: &[u8]) -> Result<(), PhysMemError> {
        self.check(pa, buf.len())?;
        let mut bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        for page in Self::pages(pa, buf.len()) {
            let start = (page * PAGE_SIZE).max(pa) - pa;
            let end = ((page + 1) * PAGE_SIZE).min(pa + buf.len() as u64) - pa;
            if PageBits::get(&bits.owned, page) {
                PageBits::set(&mut bits.poisoned, page, true);
            } else {
                self.raw_write(pa + start, &buf[start as usize..end as usize])?;
            }
        }
        Ok(())
    }

    /// True if the host wrote to this page while a TD owned it (and the module has not
    /// re-initialised it since).
    pub fn is_poisoned(&self, pa: u64) -> bool {
        let bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        PageBits::get(&bits.poisoned, pa / PAGE_SIZE)
    }

    /// True if the page is TD-owned (host reads return zeros).
    pub fn is_td_owned(&self, pa: u64) -> bool {
        let bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        PageBits::get(&bits.owned, pa / PAGE_SIZE)
    }

    /// Module-side: a copy of the owner bitmap (bit `n` = page `n`), for invariant checks.
    pub(crate) fn owner_bitmap(&self) -> Vec<u64> {
        self.bits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .owned
            .clone()
    }

    /// Module-side: sets the owner bit of `pages` 4 KiB pages from `pa`.
    pub(crate) fn set_owned(&self, pa: u64, pages: u64, owned: bool) {
        let mut bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        for p in pa / PAGE_SIZE..pa / PAGE_SIZE + pages {
            PageBits::set(&mut bits.owned, p, owned);
        }
    }

    /// Module-side: clears the poison of `pages` pages (the module re-initialised them).
    pub(crate) fn clear_poison(&self, pa: u64, pages: u64) {
        let mut bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        for p in pa / PAGE_SIZE..pa / PAGE_SIZE + pages {
            PageBits::set(&mut bits.poisoned, p, false);
        }
    }

    /// Module-side read, ignoring the owner rule (the module reads with the right key).
    pub(crate) fn raw_read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysMemError> {
        self.check(pa, buf.len())?;
        self.file
            .read_exact_at(buf, pa)
            .map_err(|e| PhysMemError::Io {
                pa,
                msg: e.to_string(),
            })
    }

    /// Module-side write, ignoring the owner rule.
    pub(crate) fn raw_write(&self, pa: u64, buf: &[u8]) -> Result<(), PhysMemError> {
        self.check(pa, buf.len())?;
        self.file
            .write_all_at(buf, pa)
            .map_err(|e| PhysMemError::Io {
                pa,
                msg: e.to_string(),
            })
    }

    /// Module-side: fills `len` bytes at `pa` with `byte`.
    pub(crate) fn raw_fill(&self, pa: u64, len: u64, byte: u8) -> Result<(), PhysMemError> {
        let chunk = [byte; PAGE_SIZE as usize];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(PAGE_SIZE);
            self.raw_write(pa + off, &chunk[..n as usize])?;
            off += n;
        }
        Ok(())
    }

    /// Module-side: reads a little-endian u64.
    pub(crate) fn raw_read_u64(&self, pa: u64) -> Result<u64, PhysMemError> {
        let mut b = [0u8; 8];
        self.raw_read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_rule_zeroes_reads_and_poisons_writes() {
        let m = PhysicalMemory::new(64 * 1024, vec![(0, 64 * 1024)]).unwrap();
        m.write(0x1000, &[0xAB; 8192]).unwrap();
        m.set_owned(0x2000, 1, true);
        let mut buf = [0u8; 8192];
        m.read(0x1000, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0xAB));
        assert!(buf[4096..].iter().all(|&b| b == 0));
        m.write(0x1FF0, &[0x11; 32]).unwrap();
        assert!(m.is_poisoned(0x2000));
        assert!(!m.is_poisoned(0x1000));
        let mut raw = [0u8; 16];
        m.raw_read(0x2000, &mut raw).unwrap();
        assert_eq!(
            raw, [0xAB; 16],
            "the TD's bytes are not changed by the host write"
        );
        m.raw_read(0x1FF0, &mut raw).unwrap();
        assert_eq!(raw, [0x11; 16]);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let m = PhysicalMemory::new(8192, vec![]).unwrap();
        let mut b = [0u8; 2];
        assert!(matches!(
            m.read(8191, &mut b),
            Err(PhysMemError::OutOfRange { .. })
        ));
        assert!(m.write(u64::MAX, &b).is_err());
        assert_eq!(m.size(), 8192);
    }
}
