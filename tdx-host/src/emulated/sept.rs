//! Secure-EPT entries in the module's internal 1.5 encoding (tdx-module-abi.md §5.13).
//!
//! An entry is a `u64`: R/W/X in bits 2:0, memory type in 5:3, IPAT (6), PS (7), D (9),
//! HPA in 51:12, TDEX (53), TDBW (54), TDB (55), TDP (56), suppress-#VE (63). The state is the
//! 7-bit value {D, TDEX, TDBW, TDB, TDP, IPAT, PS}.

/// Entries per SEPT page.
pub(crate) const ENTRIES: usize = 512;
/// Suppress-#VE.
pub(crate) const SVE: u64 = 1 << 63;
const RWX: u64 = 0x7;
const MT_WB: u64 = 6 << 3;
const IPAT: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const D: u64 = 1 << 9;
const TDEX: u64 = 1 << 53;
const TDBW: u64 = 1 << 54;
const TDB: u64 = 1 << 55;
const TDP: u64 = 1 << 56;
/// HPA bits 51:12.
pub(crate) const HPA_MASK: u64 = ((1 << 52) - 1) & !0xFFF;

/// SEPT entry states of 1.5 without the migration (EXPORTED_*) variants, which this module
/// never produces. Values are the internal 7-bit encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Free = 0x0E,
    Removed = 0x0C,
    NlMapped = 0x00,
    NlBlocked = 0x08,
    Mapped = 0x60,
    Blocked = 0x68,
    BlockedW = 0x64,
    Pending = 0x70,
    PendingBlocked = 0x78,
    PendingBlockedW = 0x74,
    /// Any other encoding (not produced by this module).
    Other = 0xFF,
}

impl State {
    /// The state of `entry`.
    pub(crate) fn of(entry: u64) -> State {
        let mut code = u64::from(entry & D != 0)
            | (u64::from(entry & TDEX != 0) << 1)
            | (u64::from(entry & TDBW != 0) << 2)
            | (u64::from(entry & TDB != 0) << 3)
            | (u64::from(entry & TDP != 0) << 4)
            | (u64::from(entry & IPAT != 0) << 5)
            | (u64::from(entry & PS != 0) << 6);
        if code & 0x2 == 0 {
            code &= !1; // D is ignored outside the exported states
        }
        match code {
            0x0E => State::Free,
            0x0C => State::Removed,
            0x00 => State::NlMapped,
            0x08 => State::NlBlocked,
            0x60 => State::Mapped,
            0x68 => State::Blocked,
            0x64 => State::BlockedW,
            0x70 => State::Pending,
            0x78 => State::PendingBlocked,
            0x74 => State::PendingBlockedW,
            _ => State::Other,
        }
    }

    /// The reported ("public") state of RDX bits 15:8 (§5.13).
    pub(crate) fn public(self) -> u64 {
        match self {
            State::Free => 0,
            State::Blocked => 1,
            State::Pending => 2,
            State::PendingBlocked => 3,
            State::Mapped => 4,
            State::Removed => 5,
            State::BlockedW => 8,
            State::PendingBlockedW => 16,
            State::NlMapped => 0x84,
            State::NlBlocked => 0x81,
            State::Other => 0xFF,
        }
    }

    /// True for a leaf state.
    pub(crate) fn is_leaf(self) -> bool {
        !matches!(
            self,
            State::Free | State::Removed | State::NlMapped | State::NlBlocked | State::Other
        )
    }
}

/// A FREE entry (fresh SEPT page content).
pub(crate) const FREE_ENTRY: u64 = SVE | TDEX | TDBW | TDB;
/// A REMOVED entry.
#[allow(dead_code)]
pub(crate) const REMOVED_ENTRY: u64 = SVE | TDBW | TDB;

/// A non-leaf entry pointing at the SEPT page `hpa`.
pub(crate) fn nl_mapped(hpa: u64) -> u64 {
    (hpa & HPA_MASK) | RWX | SVE
}

/// A MAPPED leaf at `hpa` (RWX, WB, IPAT).
pub(crate) fn mapped(hpa: u64) -> u64 {
    (hpa & HPA_MASK) | RWX | MT_WB | IPAT | PS | SVE
}

/// A PENDING leaf at `hpa` (no permissions).
pub(crate) fn pending(hpa: u64) -> u64 {
    (hpa & HPA_MASK) | MT_WB | IPAT | PS | TDP | SVE
}

/// The HPA an entry points at.
pub(crate) fn hpa(entry: u64) -> u64 {
    entry & HPA_MASK
}

/// The entry after TDH.MEM.RANGE.BLOCK (permissions cleared, TDB set), or `None` if the state
/// cannot be blocked.
pub(crate) fn block(entry: u64) -> Option<u64> {
    let h = hpa(entry);
    match State::of(entry) {
        State::NlMapped => Some((h) | TDB | SVE),
        State::Mapped | State::BlockedW => Some(h | MT_WB | IPAT | PS | TDB | SVE),
        State::Pending | State::PendingBlockedW => Some(h | MT_WB | IPAT | PS | TDP | TDB | SVE),
        _ => None,
    }
}

/// The entry after TDH.MEM.RANGE.UNBLOCK, or `None` if not blocked.
pub(crate) fn unblock(entry: u64) -> Option<u64> {
    let h = hpa(entry);
    match State::of(entry) {
        State::NlBlocked => Some(nl_mapped(h)),
        State::Blocked => Some(mapped(h)),
        State::PendingBlocked => Some(pending(h)),
        _ => None,
    }
}

/// The "architectural" entry reported in RCX (§5.13): FREE → only bit 63; leaf → R/W/X, MT,
/// IPAT, PS, HPA, SVE; non-leaf → R/W/X, PS.
pub(crate) fn arch_entry(entry: u64) -> u64 {
    let s = State::of(entry);
    match s {
        State::Free | State::Removed => SVE,
        State::NlMapped | State::NlBlocked => entry & (RWX | PS),
        _ => entry & (RWX | MT_WB | IPAT | PS | HPA_MASK | SVE),
    }
}

/// RDX of the SEPT details: level in 2:0, public state in 15:8.
pub(crate) fn level_state(entry: u64, level: u8) -> u64 {
    u64::from(level) | (State::of(entry).public() << 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_fact_sheet() {
        assert_eq!(State::of(FREE_ENTRY), State::Free);
        assert_eq!(State::of(REMOVED_ENTRY), State::Removed);
        assert_eq!(State::of(nl_mapped(0x5000)), State::NlMapped);
        assert_eq!(State::of(mapped(0x5000)), State::Mapped);
        assert_eq!(State::of(mapped(0x5000) | D), State::Mapped);
        assert_eq!(State::of(pending(0x5000)), State::Pending);
        assert_eq!(State::of(block(mapped(0x5000)).unwrap()), State::Blocked);
        assert_eq!(
            State::of(block(pending(0x5000)).unwrap()),
            State::PendingBlocked
        );
        assert_eq!(
            State::of(block(nl_mapped(0x5000)).unwrap()),
            State::NlBlocked
        );
        assert_eq!(
            unblock(block(mapped(0x5000)).unwrap()),
            Some(mapped(0x5000))
        );
        // Public states (§5.13).
        assert_eq!(State::NlMapped.public(), 0x84);
        assert_eq!(State::NlBlocked.public(), 0x81);
        assert_eq!(State::PendingBlocked.public(), 3);
        assert_eq!(arch_entry(FREE_ENTRY), 1 << 63);
        assert_eq!(level_state(mapped(0x5000), 1), 0x401);
        assert_eq!(hpa(mapped(0x1234_5000)), 0x1234_5000);
    }
}
