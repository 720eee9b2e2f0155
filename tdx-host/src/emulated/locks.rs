//! Try-locks (emulation-notes.md §3.4) and the fault injector.
//!
//! Every lock of the module is a try-lock: a failed acquire returns `TDX_OPERAND_BUSY` with
//! the operand id of the object instead of waiting (`helpers/tdx_locks.h`). The emulator keeps
//! one lock word per object in a table inside the module state. A leaf acquires its locks in
//! the module's order while it runs its checks; the dispatcher releases them only after the
//! leaf's effects are done **and** the module-state mutex has been dropped for a short window
//! (a `yield`), so another host thread calling a leaf on the same object in that window sees
//! the object locked and gets BUSY, as on hardware. The effects themselves are applied
//! atomically under the state mutex. For deterministic BUSY in tests use [`FaultInjector`].

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use tdx_abi::status::TdxStatus;

use super::codes::{self, OperandId, StatusCode};

/// One lockable object of the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LockKey {
    /// The PAMT entry of a page (TDR, TDCX, TDVPR, page operands); the TDR lock is the lock
    /// of the TDR page's PAMT entry.
    Page(u64),
    /// The key ownership table.
    Kot,
    /// A TD's `op_state_lock` (keyed by TDR PA).
    OpState(u64),
    /// A TD's Secure-EPT tree lock.
    SeptTree(u64),
    /// A TD's epoch lock.
    Epoch(u64),
    /// One Secure-EPT entry (TDR PA, GPA, level).
    SeptEntry(u64, u64, u8),
}

/// Shared or exclusive acquisition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LockWord {
    shared: u32,
    exclusive: bool,
}

/// The lock words of all currently held locks.
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    words: HashMap<LockKey, LockWord>,
}

impl LockTable {
    /// Tries to take `key` in `mode`.
    pub(crate) fn try_acquire(&mut self, key: LockKey, mode: Mode) -> bool {
        let w = self.words.entry(key).or_default();
        match mode {
            Mode::Exclusive if w.exclusive || w.shared > 0 => false,
            Mode::Shared if w.exclusive => false,
            Mode::Exclusive => {
                w.exclusive = true;
                true
            }
            Mode::Shared => {
                w.shared = w.shared.saturating_add(1);
                true
            }
        }
    }

    /// Releases one acquisition of `key` in `mode`.
    pub(crate) fn release(&mut self, key: LockKey, mode: Mode) {
        if let Some(w) = self.words.get_mut(&key) {
            match mode {
                Mode::Exclusive => w.exclusive = false,
                Mode::Shared => w.shared = w.shared.saturating_sub(1),
            }
            if !w.exclusive && w.shared == 0 {
                self.words.remove(&key);
            }
        }
    }

    /// Number of objects currently locked.
    pub(crate) fn held(&self) -> usize {
        self.words.len()
    }
}

/// The locks one leaf invocation holds; released by the dispatcher after the leaf.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) locks: Vec<(LockKey, Mode)>,
}

impl Held {
    /// Try-lock `key`; on failure `TDX_OPERAND_BUSY` with `operand`.
    pub(crate) fn lock(
        &mut self,
        table: &mut LockTable,
        key: LockKey,
        mode: Mode,
        operand: OperandId,
    ) -> Result<(), TdxStatus> {
        if self.locks.iter().any(|(k, _)| *k == key) {
            // Already held by this leaf (e.g. an implicit and an explicit path to one page).
            return Ok(());
        }
        if table.try_acquire(key, mode) {
            self.locks.push((key, mode));
            Ok(())
        } else {
            codes::err(StatusCode::OPERAND_BUSY, operand)
        }
    }

    /// Releases one lock of this leaf before the leaf ends.
    pub(crate) fn release_early(&mut self, table: &mut LockTable, key: LockKey) {
        if let Some(i) = self.locks.iter().position(|(k, _)| *k == key) {
            let (k, m) = self.locks.swap_remove(i);
            table.release(k, m);
        }
    }

    /// Releases every lock of this leaf.
    pub(crate) fn release_all(&mut self, table: &mut LockTable) {
        for (k, m) in self.locks.drain(..) {
            table.release(k, m);
        }
    }
}

/// What a forced fault makes a leaf return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `TDX_OPERAND_BUSY` with this operand id (e.g. TDR, SEPT_TREE, KOT).
    Busy(OperandId),
    /// `TDX_INTERRUPTED_RESUMABLE`.
    InterruptedResumable,
    /// Any other status, returned verbatim.
    Status(TdxStatus),
}

impl Fault {
    fn status(self) -> TdxStatus {
        match self {
            Fault::Busy(o) => codes::with_operand(StatusCode::OPERAND_BUSY, o),
            Fault::InterruptedResumable => codes::code(StatusCode::INTERRUPTED_RESUMABLE),
            Fault::Status(s) => s,
        }
    }
}

/// Fault-injection knobs: make the next N calls of a leaf fail with a chosen status before
/// the leaf runs (so it has no effect, as a real leaf that fails a lock or is interrupted
/// before its first commit point).
///
/// ```
/// # use tdx_host::emulated::{EmulatedModule, PlatformConfig, Fault};
/// # use tdx_abi::status::OperandId;
/// let m = EmulatedModule::new(PlatformConfig::default()).unwrap();
/// m.faults().force_seamcall(33, Fault::Busy(OperandId::TDR), 2); // TDH.SYS.INIT busy twice
/// assert_eq!(m.faults().pending_seamcall(33), 2);
/// ```
///
/// It also offers a deterministic contention point: [`FaultInjector::pause_in_lock_window`]
/// makes the next call of a leaf stop after its effects while it still holds its try-locks,
/// so a test can issue a conflicting SEAMCALL from another thread and observe
/// `TDX_OPERAND_BUSY`, then [`FaultInjector::resume`] it.
#[derive(Debug, Default)]
pub struct FaultInjector {
    seamcall: Mutex<HashMap<u16, (Fault, u32)>>,
    tdcall: Mutex<HashMap<u16, (Fault, u32)>>,
    pause: Mutex<PauseState>,
    pause_cv: Condvar,
}

#[derive(Debug, Default)]
struct PauseState {
    armed: Option<u16>,
    paused: bool,
    resume: bool,
}

impl FaultInjector {
    /// The next `count` SEAMCALLs of `leaf` (bits 15:0 of RAX) return `fault`'s status.
    pub fn force_seamcall(&self, leaf: u16, fault: Fault, count: u32) {
        let mut m = self.seamcall.lock().unwrap_or_else(|e| e.into_inner());
        if count == 0 {
            m.remove(&leaf);
        } else {
            m.insert(leaf, (fault, count));
        }
    }

    /// The next `count` TDCALLs of `leaf` return `fault`'s status.
    pub fn force_tdcall(&self, leaf: u16, fault: Fault, count: u32) {
        let mut m = self.tdcall.lock().unwrap_or_else(|e| e.into_inner());
        if count == 0 {
            m.remove(&leaf);
        } else {
            m.insert(leaf, (fault, count));
        }
    }

    /// Forced faults left for SEAMCALL `leaf`.
    pub fn pending_seamcall(&self, leaf: u16) -> u32 {
        let m = self.seamcall.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&leaf).map_or(0, |x| x.1)
    }

    /// Removes every forced fault.
    pub fn clear(&self) {
        self.seamcall
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.tdcall
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn take(map: &Mutex<HashMap<u16, (Fault, u32)>>, leaf: u16) -> Option<TdxStatus> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let (fault, left) = m.get_mut(&leaf)?;
        let s = fault.status();
        *left -= 1;
        if *left == 0 {
            m.remove(&leaf);
        }
        Some(s)
    }

    /// Arms a pause: the next SEAMCALL of `leaf` that holds try-locks stops after its
    /// effects, before releasing them, until [`FaultInjector::resume`].
    pub fn pause_in_lock_window(&self, leaf: u16) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        *p = PauseState {
            armed: Some(leaf),
            paused: false,
            resume: false,
        };
    }

    /// Blocks until a call armed with [`FaultInjector::pause_in_lock_window`] is paused.
    pub fn wait_until_paused(&self) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        while !p.paused {
            p = self.pause_cv.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Lets the paused call release its locks and return (also disarms a pending pause).
    pub fn resume(&self) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        p.armed = None;
        p.resume = true;
        self.pause_cv.notify_all();
    }

    /// Called by the dispatcher inside the lock window.
    pub(crate) fn maybe_pause(&self, leaf: u16) {
        let mut p = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        if p.armed != Some(leaf) || p.paused {
            return;
        }
        p.armed = None;
        p.paused = true;
        self.pause_cv.notify_all();
        while !p.resume {
            p = self.pause_cv.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        p.paused = false;
        p.resume = false;
    }

    pub(crate) fn take_seamcall(&self, leaf: u16) -> Option<TdxStatus> {
        Self::take(&self.seamcall, leaf)
    }

    pub(crate) fn take_tdcall(&self, leaf: u16) -> Option<TdxStatus> {
        Self::take(&self.tdcall, leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_and_exclusive() {
        let mut t = LockTable::default();
        let k = LockKey::Page(0x1000);
        assert!(t.try_acquire(k, Mode::Shared));
        assert!(t.try_acquire(k, Mode::Shared));
        assert!(!t.try_acquire(k, Mode::Exclusive));
        t.release(k, Mode::Shared);
        t.release(k, Mode::Shared);
        assert!(t.try_acquire(k, Mode::Exclusive));
        assert!(!t.try_acquire(k, Mode::Shared));
        t.release(k, Mode::Exclusive);
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn held_returns_busy_with_operand() {
        let mut t = LockTable::default();
        let mut a = Held::default();
        let mut b = Held::default();
        a.lock(&mut t, LockKey::Kot, Mode::Exclusive, OperandId::KOT)
            .unwrap();
        let e = b
            .lock(&mut t, LockKey::Kot, Mode::Shared, OperandId::KOT)
            .unwrap_err();
        assert_eq!(e.raw(), 0x8000_0200_0000_00BA);
        a.release_all(&mut t);
        b.lock(&mut t, LockKey::Kot, Mode::Shared, OperandId::KOT)
            .unwrap();
    }

    #[test]
    fn injector_counts_down() {
        let f = FaultInjector::default();
        f.force_seamcall(9, Fault::InterruptedResumable, 2);
        assert_eq!(f.take_seamcall(9).unwrap().raw(), 0x8000_0003_0000_0000);
        assert!(f.take_seamcall(9).is_some());
        assert!(f.take_seamcall(9).is_none());
        assert!(f.take_seamcall(10).is_none());
    }
}
