//! Emulated physical memory: one memfd (`memfd_create` + `mmap`) covering PA `0..size`.
//!
//! The arena itself has no notion of ownership; [`super::PhysicalMemory`] (the host's view)
//! and the module's internal accessors add the TD-owner rules on top.

use std::io;

/// A shared anonymous mapping of a memfd, PA `0..size`.
pub(crate) struct Arena {
    base: *mut u8,
    size: u64,
    fd: libc::c_int,
}

// SAFETY: `base` points to a private mapping owned by this value for its whole life; every access
// goes through `read`/`write`/`zero` with bounds checks, and callers serialise accesses to the same
// bytes with the module's state lock (the only other accessor).
unsafe impl Send for Arena {}
// SAFETY: as above; shared references only copy bytes in or out through raw-pointer copies.
unsafe impl Sync for Arena {}

impl Arena {
    /// Creates an arena of `size` bytes (a multiple of 4 KiB, not zero).
    pub(crate) fn new(size: u64) -> io::Result<Self> {
        if size == 0 || size % 4096 != 0 || usize::try_from(size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("arena size {size:#x} is not a non-zero multiple of 4 KiB"),
            ));
        }
        let name = c"tdx-emulated-phys";
        // SAFETY: `name` is a valid NUL-terminated string; the call has no memory side effects.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let Ok(len) = libc::off_t::try_from(size) else {
            // SAFETY: `fd` is the descriptor just created and owned here.
            unsafe { libc::close(fd) };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "arena too large",
            ));
        };
        // SAFETY: `fd` is a valid memfd owned by us.
        if unsafe { libc::ftruncate(fd, len) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is owned here and not used afterwards.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        // SAFETY: mapping a fresh, sized memfd with a kernel-chosen address; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is owned here and not used afterwards.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Ok(Arena {
            base: base.cast(),
            size,
            fd,
        })
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The byte offset of `pa..pa+len`, if the range lies inside the arena.
    fn range(&self, pa: u64, len: usize) -> Option<usize> {
        let end = pa.checked_add(len as u64)?;
        (end <= self.size).then_some(pa as usize)
    }

    /// Copies `buf.len()` bytes at `pa` into `buf`; `false` if out of range.
    pub(crate) fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Some(off) = self.range(pa, buf.len()) else {
            return false;
        };
        // SAFETY: `off + buf.len() <= size` (checked above), the mapping is live for `self`'s
        // lifetime, and `buf` is a distinct Rust allocation so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(off), buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `buf` to `pa`; `false` if out of range.
    pub(crate) fn write(&self, pa: u64, buf: &[u8]) -> bool {
        let Some(off) = self.range(pa, buf.len()) else {
            return false;
        };
        // SAFETY: as in `read`, with the copy going the other way.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.base.add(off), buf.len()) };
        true
    }

    /// Fills `len` bytes at `pa` with `byte`; `false` if out of range.
    pub(crate) fn fill(&self, pa: u64, len: usize, byte: u8) -> bool {
        let Some(off) = self.range(pa, len) else {
            return false;
        };
        // SAFETY: `off + len <= size` (checked above) and the mapping is live.
        unsafe { std::ptr::write_bytes(self.base.add(off), byte, len) };
        true
    }

    /// Reads a little-endian u64 at `pa`.
    pub(crate) fn read_u64(&self, pa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b).then(|| u64::from_le_bytes(b))
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` describe the mapping created in `new`, unmapped exactly once here;
        // `fd` is owned and closed exactly once.
        unsafe {
            libc::munmap(self.base.cast(), self.size as usize);
            libc::close(self.fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_bounds() {
        let a = Arena::new(1 << 20).unwrap();
        assert!(a.write(0x1000, &[1, 2, 3]));
        let mut b = [0u8; 3];
        assert!(a.read(0x1000, &mut b));
        assert_eq!(b, [1, 2, 3]);
        assert!(!a.read((1 << 20) - 2, &mut b));
        assert!(!a.write(u64::MAX, &[0]));
        assert!(Arena::new(123).is_err());
        assert!(Arena::new(0).is_err());
    }
}
