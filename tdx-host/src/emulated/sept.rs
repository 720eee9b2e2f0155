//! The per-TD Secure EPT.
//!
//! Model: every S-EPT page the host hands to TDH.MEM.SEPT.ADD (PAMT type EPT, owner the TDR)
//! and the root (TDCS page 3) is a table of 512 entries kept by the module, keyed by the page's
//! HPA; the entries use the module's 1.5 encoding (tdx-module-abi.md §5.13: R/W/X, memory
//! type, IPAT, PS, HPA, the TDEX/TDBW/TDB/TDP state bits and suppress-#VE). The tables live in
//! module memory rather than in the arena because the host can never read them anyway (the
//! pages are TD-owned: the host view returns zeros); the PAMT accounting of the pages is exact.

use std::collections::HashMap;

/// Suppress #VE.
pub(crate) const SVE: u64 = 1 << 63;
const D: u64 = 1 << 9;
const IPAT: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const TDEX: u64 = 1 << 53;
const TDBW: u64 = 1 << 54;
const TDB: u64 = 1 << 55;
const TDP: u64 = 1 << 56;
/// R, W, Xs (`SEPT_PERMISSIONS_RWX`).
const RWX: u64 = 0b111;
const MT_WB: u64 = 6 << 3;
/// HPA bits 51:12.
pub(crate) const HPA_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// A free entry: state FREE (0x0E) + suppress #VE.
pub(crate) const FREE_ENTRY: u64 = SVE | TDEX | TDBW | TDB;

/// S-EPT entry states (7-bit encodings of §5.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum St {
    Free,
    Removed,
    NlMapped,
    NlBlocked,
    Mapped,
    Blocked,
    BlockedW,
    Pending,
    PendingBlocked,
    PendingBlockedW,
    /// Any other (export/import) encoding.
    Other(u8),
}

impl St {
    /// Reported ("public") state for RDX bits 15:8.
    pub(crate) fn public(self) -> u64 {
        match self {
            St::Free => 0,
            St::Blocked => 1,
            St::Pending => 2,
            St::PendingBlocked => 3,
            St::Mapped => 4,
            St::Removed => 5,
            St::BlockedW => 8,
            St::PendingBlockedW => 16,
            St::NlMapped => 0x84,
            St::NlBlocked => 0x81,
            St::Other(x) => u64::from(x),
        }
    }
    pub(crate) fn is_leaf(self) -> bool {
        matches!(
            self,
            St::Mapped
                | St::Blocked
                | St::BlockedW
                | St::Pending
                | St::PendingBlocked
                | St::PendingBlockedW
        )
    }
    pub(crate) fn is_nl(self) -> bool {
        matches!(self, St::NlMapped | St::NlBlocked)
    }
}

fn state_bits(e: u64) -> u8 {
    let b = |m: u64, v: u8| if e & m != 0 { v } else { 0 };
    b(D, 1) | b(TDEX, 2) | b(TDBW, 4) | b(TDB, 8) | b(TDP, 16) | b(IPAT, 32) | b(PS, 64)
}

/// Decodes the state of an entry.
pub(crate) fn state(e: u64) -> St {
    let s = state_bits(e);
    match s {
        0x0E => St::Free,
        0x0C => St::Removed,
        0x00 => St::NlMapped,
        0x08 => St::NlBlocked,
        0x60 | 0x61 => St::Mapped,
        0x68 | 0x69 => St::Blocked,
        0x64 | 0x65 => St::BlockedW,
        0x70 => St::Pending,
        0x78 => St::PendingBlocked,
        0x74 => St::PendingBlockedW,
        x => St::Other(x),
    }
}

/// A non-leaf entry pointing to the table at `hpa` (`sept_set_mapped_non_leaf`: RWX, SVE).
pub(crate) fn nl_mapped(hpa: u64) -> u64 {
    (hpa & HPA_MASK) | RWX | SVE
}
/// A mapped leaf (`sept_set_leaf_*`: attributes RWX, MT WB, IPAT, SVE).
pub(crate) fn mapped(hpa: u64) -> u64 {
    (hpa & HPA_MASK) | RWX | MT_WB | IPAT | PS | SVE
}
/// A pending leaf (no permissions). #VE on access to it is the module's decision
/// (`td_ept_violation.c`), not the hardware's, so SVE is set as on every leaf.
pub(crate) fn pending(hpa: u64) -> u64 {
    (hpa & HPA_MASK) | MT_WB | IPAT | PS | TDP | SVE
}
/// The blocked form of a blockable entry.
pub(crate) fn blocked(e: u64) -> u64 {
    (e & !RWX & !TDBW) | TDB
}
/// The unblocked form of a blocked entry.
pub(crate) fn unblocked(e: u64) -> u64 {
    match state(e) {
        St::NlBlocked => (e & !TDB) | RWX,
        St::Blocked => (e & !TDB) | RWX,
        St::PendingBlocked => e & !TDB,
        _ => e,
    }
}
/// The HPA of an entry.
pub(crate) fn hpa(e: u64) -> u64 {
    e & HPA_MASK
}

/// The "architectural" entry reported in RCX (§5.13).
pub(crate) fn arch_entry(e: u64) -> u64 {
    let s = state(e);
    if s == St::Free || s == St::Removed {
        SVE
    } else if s.is_leaf() {
        // SEPT_ARCH_ENTRY_LEAF_MASK
        e & (RWX | (7 << 3) | IPAT | PS | HPA_MASK | SVE)
    } else {
        // SEPT_ARCH_ENTRY_NON_LEAF_MASK: no HPA for non-leaf entries
        e & (RWX | PS)
    }
}

/// RDX of SEPT details: level in bits 2:0, public state in 15:8.
pub(crate) fn level_state(level: u8, e: u64) -> u64 {
    u64::from(level) | (state(e).public() << 8)
}

/// Index of the entry for `gpa` in a table at `level`.
pub(crate) fn index(gpa: u64, level: u8) -> usize {
    ((gpa >> (12 + 9 * u32::from(level))) & 511) as usize
}

/// The S-EPT tables of one TD.
#[derive(Debug, Default)]
pub(crate) struct Sept {
    /// Tables keyed by page HPA.
    pub(crate) tables: HashMap<u64, Box<[u64; 512]>>,
    /// HPA of the root table (TDCS page 3); 0 until MNG.INIT.
    pub(crate) root: u64,
    /// Level of the root table (3 for 4-level, 4 for 5-level).
    pub(crate) root_level: u8,
    /// Bumped by every entry write (execution engines skip their resync when unchanged).
    pub(crate) generation: u64,
}

/// Result of a walk towards the entry at a level.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Walk {
    /// Reached: the table holding the entry, the entry index and its value.
    Found { table: u64, idx: usize, entry: u64 },
    /// Stopped above the target at `level` on a non-NL entry.
    Failed { level: u8, entry: u64 },
}

impl Sept {
    /// Creates the root table.
    pub(crate) fn init_root(&mut self, root: u64, root_level: u8) {
        self.root = root;
        self.root_level = root_level;
        self.tables.insert(root, Box::new([FREE_ENTRY; 512]));
    }

    /// Walks from the root to the entry for `gpa` at `level` through NL entries.
    pub(crate) fn walk(&self, gpa: u64, level: u8) -> Walk {
        let mut table = self.root;
        let mut l = self.root_level;
        loop {
            let Some(t) = self.tables.get(&table) else {
                return Walk::Failed {
                    level: l,
                    entry: FREE_ENTRY,
                };
            };
            let idx = index(gpa, l);
            let entry = t[idx];
            if l == level {
                return Walk::Found { table, idx, entry };
            }
            if !state(entry).is_nl() || l == 0 {
                return Walk::Failed { level: l, entry };
            }
            table = hpa(entry);
            l -= 1;
        }
    }

    /// Writes one entry.
    pub(crate) fn set(&mut self, table: u64, idx: usize, value: u64) {
        if let Some(t) = self.tables.get_mut(&table) {
            t[idx] = value;
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// Leaf mappings (GPA, level, entry) of the whole tree, for invariant checks.
    pub(crate) fn leaves(&self) -> Vec<(u64, u8, u64)> {
        let mut out = Vec::new();
        if self.root != 0 {
            self.collect(self.root, self.root_level, 0, &mut out, 0);
        }
        out
    }

    fn collect(&self, table: u64, level: u8, base: u64, out: &mut Vec<(u64, u8, u64)>, depth: u8) {
        let Some(t) = self.tables.get(&table) else {
            return;
        };
        if depth > 5 {
            return;
        }
        for (i, &e) in t.iter().enumerate() {
            let gpa = base | ((i as u64) << (12 + 9 * u32::from(level)));
            let s = state(e);
            if s.is_nl() && level > 0 {
                out.push((gpa, level, e));
                self.collect(hpa(e), level - 1, gpa, out, depth + 1);
            } else if s.is_leaf() {
                out.push((gpa, level, e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_fact_sheet() {
        assert_eq!(state_bits(FREE_ENTRY), 0x0E);
        assert_eq!(state_bits(mapped(0x5000)), 0x60);
        assert_eq!(state_bits(pending(0x5000)), 0x70);
        assert_eq!(state_bits(blocked(mapped(0x5000))), 0x68);
        assert_eq!(state_bits(blocked(pending(0x5000))), 0x78);
        assert_eq!(state_bits(nl_mapped(0x5000)), 0x00);
        assert_eq!(state_bits(blocked(nl_mapped(0x5000))), 0x08);
        assert_eq!(unblocked(blocked(mapped(0x5000))), mapped(0x5000));
        assert_eq!(unblocked(blocked(nl_mapped(0x5000))), nl_mapped(0x5000));
        assert_eq!(arch_entry(FREE_ENTRY), 1 << 63);
        assert_eq!(level_state(1, nl_mapped(0x1000)), 0x8401);
        assert_eq!(level_state(0, pending(0x1000)), 0x0200);
        assert_eq!(arch_entry(nl_mapped(0x7000)), 0x7, "non-leaf: RWX only");
        assert_eq!(arch_entry(mapped(0x7000)), 0x8000_0000_0000_70F7);
    }

    #[test]
    fn walk_stops_at_missing_tables() {
        let mut s = Sept::default();
        s.init_root(0x10000, 3);
        match s.walk(0x4000_0000, 0) {
            Walk::Failed { level, entry } => {
                assert_eq!(level, 3);
                assert_eq!(entry, FREE_ENTRY);
            }
            w => panic!("{w:?}"),
        }
        assert!(matches!(s.walk(0x4000_0000, 3), Walk::Found { idx: 0, .. }));
        assert_eq!(index(0x4000_0000, 2), 1);
    }
}
