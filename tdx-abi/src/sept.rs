//! Secure EPT entries as the 1.5 module encodes them internally, their 7-bit state, the
//! "public" state reported to the host, and the related detail registers (§5.13): the
//! SEPT entry info of RDX, and the extended exit qualification of TDH.VP.ENTER.
//!
//! TDX 1.0 used a different internal layout; these types describe 1.5 only.

use core::fmt;

use crate::gpa::EptLevel;
use crate::open_enum::open_enum;

open_enum! {
    /// 7-bit SEPT entry state encoding of module 1.5 (`SEPT_STATE_*_ENCODING`): bit 0 = D,
    /// bit 1 = TDEX, bit 2 = TDBW, bit 3 = TDB, bit 4 = TDP, bit 5 = IPAT, bit 6 = PS.
    pub struct SeptState(u8);
    /// Free (never mapped or removed by SEPT.REMOVE).
    FREE = 0x0E,
    /// Leaf, blocked (TDB).
    BLOCKED = 0x68,
    /// Leaf, pending guest acceptance (TDP).
    PENDING = 0x70,
    /// Leaf, pending and blocked.
    PENDING_BLOCKED = 0x78,
    /// Leaf, mapped (the D bit is ignored: 0x61 is also MAPPED, see [`SeptState::normalized`]).
    MAPPED = 0x60,
    /// Removed by TDH.MEM.PAGE.REMOVE, may be re-added by AUG.
    REMOVED = 0x0C,
    /// Leaf, blocked for writes (TDBW).
    BLOCKEDW = 0x64,
    /// Leaf, exported and blocked for writes.
    EXPORTED_BLOCKEDW = 0x66,
    /// Leaf, exported and dirtied since.
    EXPORTED_DIRTY = 0x63,
    /// Leaf, exported, dirty and blocked for writes.
    EXPORTED_DIRTY_BLOCKEDW = 0x67,
    /// Leaf, pending and blocked for writes.
    PENDING_BLOCKEDW = 0x74,
    /// Leaf, pending, exported and blocked for writes.
    PENDING_EXPORTED_BLOCKEDW = 0x76,
    /// Leaf, pending, exported and dirty.
    PENDING_EXPORTED_DIRTY = 0x73,
    /// Leaf, pending, exported, dirty and blocked for writes.
    PENDING_EXPORTED_DIRTY_BLOCKEDW = 0x77,
    /// Non-leaf, mapped.
    NL_MAPPED = 0x00,
    /// Non-leaf, blocked.
    NL_BLOCKED = 0x08,
}

open_enum! {
    /// SEPT entry state as reported to the host (RDX bits 15:8 of SEPT errors and
    /// TDH.MEM.SEPT.RD) and in the ACCEPT extended exit qualification.
    pub struct SeptPublicState(u8);
    /// 0.
    FREE = 0,
    /// 1.
    BLOCKED = 1,
    /// 2.
    PENDING = 2,
    /// 3.
    PENDING_BLOCKED = 3,
    /// 4 ("PRESENT" in TDX 1.0).
    MAPPED = 4,
    /// 5.
    REMOVED = 5,
    /// 8.
    BLOCKEDW = 8,
    /// 9.
    EXPORTED_BLOCKEDW = 9,
    /// 11.
    EXPORTED_DIRTY = 11,
    /// 12.
    EXPORTED_DIRTY_BLOCKEDW = 12,
    /// 16.
    PENDING_BLOCKEDW = 16,
    /// 17.
    PENDING_EXPORTED_BLOCKEDW = 17,
    /// 19.
    PENDING_EXPORTED_DIRTY = 19,
    /// 20.
    PENDING_EXPORTED_DIRTY_BLOCKEDW = 20,
    /// 0x81: non-leaf, blocked.
    NL_BLOCKED = 0x81,
    /// 0x84: non-leaf, mapped.
    NL_MAPPED = 0x84,
}

/// Internal state ↔ public state, the fact sheet's §5.13 table.
const STATE_TABLE: [(SeptState, SeptPublicState); 16] = [
    (SeptState::FREE, SeptPublicState::FREE),
    (SeptState::BLOCKED, SeptPublicState::BLOCKED),
    (SeptState::PENDING, SeptPublicState::PENDING),
    (SeptState::PENDING_BLOCKED, SeptPublicState::PENDING_BLOCKED),
    (SeptState::MAPPED, SeptPublicState::MAPPED),
    (SeptState::REMOVED, SeptPublicState::REMOVED),
    (SeptState::BLOCKEDW, SeptPublicState::BLOCKEDW),
    (
        SeptState::EXPORTED_BLOCKEDW,
        SeptPublicState::EXPORTED_BLOCKEDW,
    ),
    (SeptState::EXPORTED_DIRTY, SeptPublicState::EXPORTED_DIRTY),
    (
        SeptState::EXPORTED_DIRTY_BLOCKEDW,
        SeptPublicState::EXPORTED_DIRTY_BLOCKEDW,
    ),
    (
        SeptState::PENDING_BLOCKEDW,
        SeptPublicState::PENDING_BLOCKEDW,
    ),
    (
        SeptState::PENDING_EXPORTED_BLOCKEDW,
        SeptPublicState::PENDING_EXPORTED_BLOCKEDW,
    ),
    (
        SeptState::PENDING_EXPORTED_DIRTY,
        SeptPublicState::PENDING_EXPORTED_DIRTY,
    ),
    (
        SeptState::PENDING_EXPORTED_DIRTY_BLOCKEDW,
        SeptPublicState::PENDING_EXPORTED_DIRTY_BLOCKEDW,
    ),
    (SeptState::NL_MAPPED, SeptPublicState::NL_MAPPED),
    (SeptState::NL_BLOCKED, SeptPublicState::NL_BLOCKED),
];

impl SeptState {
    /// State bit 0: D (dirty; meaningful only in the exported states).
    pub const D: u8 = 1 << 0;
    /// State bit 1: TDEX (exported).
    pub const TDEX: u8 = 1 << 1;
    /// State bit 2: TDBW (blocked for writes).
    pub const TDBW: u8 = 1 << 2;
    /// State bit 3: TDB (blocked).
    pub const TDB: u8 = 1 << 3;
    /// State bit 4: TDP (pending).
    pub const TDP: u8 = 1 << 4;
    /// State bit 5: IPAT.
    pub const IPAT: u8 = 1 << 5;
    /// State bit 6: PS (leaf).
    pub const PS: u8 = 1 << 6;

    /// The state with the D bit dropped where it is only the hardware dirty flag: for a leaf
    /// (PS) state that is not exported (TDEX clear), e.g. 0x61 becomes MAPPED (0x60). Other
    /// values are returned unchanged. Only the MAPPED case is confirmed by the fact sheet; the
    /// same rule for BLOCKED/BLOCKEDW/PENDING* with D set is this crate's reading.
    pub const fn normalized(self) -> SeptState {
        let v = self.0 & 0x7F;
        if v & Self::PS != 0 && v & Self::TDEX == 0 {
            SeptState(v & !Self::D)
        } else {
            SeptState(v)
        }
    }

    /// Whether the state describes a leaf entry (PS).
    pub const fn is_leaf(self) -> bool {
        self.0 & Self::PS != 0
    }

    /// Whether the state is any pending state (TDP).
    pub const fn is_pending(self) -> bool {
        self.0 & Self::TDP != 0
    }

    /// Whether the state is blocked (TDB).
    pub const fn is_blocked(self) -> bool {
        self.0 & Self::TDB != 0
    }

    /// The reported ("public") state, or an unnamed `SeptPublicState(0xFF)` for an encoding
    /// that is not a SEPT state.
    pub const fn public_state(self) -> SeptPublicState {
        let n = self.normalized();
        let mut i = 0;
        while i < STATE_TABLE.len() {
            if STATE_TABLE[i].0 .0 == n.0 {
                return STATE_TABLE[i].1;
            }
            i += 1;
        }
        SeptPublicState(0xFF)
    }
}

impl SeptPublicState {
    /// The internal encoding of this reported state, or `None` for an unknown value.
    pub const fn internal_state(self) -> Option<SeptState> {
        let mut i = 0;
        while i < STATE_TABLE.len() {
            if STATE_TABLE[i].1 .0 == self.0 {
                return Some(STATE_TABLE[i].0);
            }
            i += 1;
        }
        None
    }
}

/// A Secure EPT entry in module 1.5's internal layout (`ia32e_sept_t`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct SeptEntry(u64);

macro_rules! sept_bit {
    ($(#[$m:meta])* $name:ident, $bit:expr) => {
        $(#[$m])*
        pub const fn $name(self) -> bool {
            self.0 & (1 << $bit) != 0
        }
    };
}

impl SeptEntry {
    /// Bit 0: R.
    pub const R: u64 = 1 << 0;
    /// Bit 1: W.
    pub const W: u64 = 1 << 1;
    /// Bit 2: X (supervisor execute).
    pub const X: u64 = 1 << 2;
    /// Bits 5:3: memory type.
    pub const MT_MASK: u64 = 0x7 << 3;
    /// Bit 6: IPAT (state bit 5).
    pub const IPAT: u64 = 1 << 6;
    /// Bit 7: PS (leaf; state bit 6).
    pub const PS: u64 = 1 << 7;
    /// Bit 8: accessed / guest-side lock.
    pub const A: u64 = 1 << 8;
    /// Bit 9: D (state bit 0).
    pub const D: u64 = 1 << 9;
    /// Bit 10: XU (user execute).
    pub const XU: u64 = 1 << 10;
    /// Bit 11: TDEL entry lock.
    pub const TDEL: u64 = 1 << 11;
    /// Bits 51:12: HPA.
    pub const HPA_MASK: u64 = ((1 << 52) - 1) & !0xFFF;
    /// Bit 52: host priority (with TDEL).
    pub const TDHP: u64 = 1 << 52;
    /// Bit 53: TDEX exported (state bit 1).
    pub const TDEX: u64 = 1 << 53;
    /// Bit 54: TDBW blocked for writes (state bit 2).
    pub const TDBW: u64 = 1 << 54;
    /// Bit 55: TDB blocked (state bit 3).
    pub const TDB: u64 = 1 << 55;
    /// Bit 56: TDP pending (state bit 4).
    pub const TDP: u64 = 1 << 56;
    /// Bit 57: VPW (verify paging write).
    pub const VPW: u64 = 1 << 57;
    /// Bit 58: PW (paging write).
    pub const PW: u64 = 1 << 58;
    /// Bit 59: saved W.
    pub const SAVED_W: u64 = 1 << 59;
    /// Bit 60: SSS / SEPT alias.
    pub const SSS: u64 = 1 << 60;
    /// Bit 61: TDUP.
    pub const TDUP: u64 = 1 << 61;
    /// Bit 63: suppress #VE.
    pub const SUPPRESS_VE: u64 = 1 << 63;
    /// Write-back memory type.
    pub const MEMORY_TYPE_WB: u8 = 6;
    /// All bits that carry the 7-bit state.
    pub const STATE_MASK: u64 =
        Self::D | Self::TDEX | Self::TDBW | Self::TDB | Self::TDP | Self::IPAT | Self::PS;

    /// Wraps a raw entry.
    pub const fn from_raw(raw: u64) -> Self {
        SeptEntry(raw)
    }

    /// The raw entry.
    pub const fn raw(self) -> u64 {
        self.0
    }

    sept_bit!(/// R (bit 0).
        r, 0);
    sept_bit!(/// W (bit 1).
        w, 1);
    sept_bit!(/// X (bit 2).
        x, 2);
    sept_bit!(/// IPAT (bit 6).
        ipat, 6);
    sept_bit!(/// PS (bit 7): leaf entry.
        is_leaf, 7);
    sept_bit!(/// A / guest-side lock (bit 8).
        accessed, 8);
    sept_bit!(/// D (bit 9).
        dirty, 9);
    sept_bit!(/// XU (bit 10).
        xu, 10);
    sept_bit!(/// TDEL entry lock (bit 11).
        tdel, 11);
    sept_bit!(/// Host priority (bit 52).
        tdhp, 52);
    sept_bit!(/// TDEX exported (bit 53).
        tdex, 53);
    sept_bit!(/// TDBW blocked for writes (bit 54).
        tdbw, 54);
    sept_bit!(/// TDB blocked (bit 55).
        tdb, 55);
    sept_bit!(/// TDP pending (bit 56).
        tdp, 56);
    sept_bit!(/// VPW (bit 57).
        vpw, 57);
    sept_bit!(/// PW (bit 58).
        pw, 58);
    sept_bit!(/// Saved W (bit 59).
        saved_w, 59);
    sept_bit!(/// SSS / SEPT alias (bit 60).
        sss, 60);
    sept_bit!(/// TDUP (bit 61).
        tdup, 61);
    sept_bit!(/// Suppress #VE (bit 63).
        suppress_ve, 63);

    /// Memory type (bits 5:3).
    pub const fn memory_type(self) -> u8 {
        ((self.0 >> 3) & 7) as u8
    }

    /// Host physical address (bits 51:12).
    pub const fn hpa(self) -> u64 {
        self.0 & Self::HPA_MASK
    }

    /// The 7-bit state gathered from D, TDEX, TDBW, TDB, TDP, IPAT and PS (not normalized).
    pub const fn state(self) -> SeptState {
        let v = self.0;
        SeptState(
            (((v >> 9) & 1)
                | (((v >> 53) & 0xF) << 1)
                | (((v >> 56) & 1) << 4)
                | (((v >> 6) & 1) << 5)
                | (((v >> 7) & 1) << 6)) as u8,
        )
    }

    /// The entry with its state bits replaced by `state` (other bits kept).
    pub const fn with_state(self, state: SeptState) -> Self {
        let s = state.0 as u64;
        let bits = ((s & 1) << 9)
            | (((s >> 1) & 0xF) << 53)
            | (((s >> 4) & 1) << 56)
            | (((s >> 5) & 1) << 6)
            | (((s >> 6) & 1) << 7);
        SeptEntry((self.0 & !Self::STATE_MASK) | bits)
    }

    /// A FREE entry: the FREE state bits and suppress-#VE, nothing else.
    pub const fn free() -> Self {
        SeptEntry(Self::SUPPRESS_VE).with_state(SeptState::FREE)
    }

    /// A REMOVED entry: the REMOVED state bits and suppress-#VE.
    pub const fn removed() -> Self {
        SeptEntry(Self::SUPPRESS_VE).with_state(SeptState::REMOVED)
    }

    /// Access permissions implied by a state: none while blocked or pending (and for FREE /
    /// REMOVED), R+X while blocked for writes, otherwise R+W+X.
    const fn permissions_for(state: SeptState) -> u64 {
        let s = state.0;
        if s == SeptState::FREE.0
            || s == SeptState::REMOVED.0
            || s & (SeptState::TDB | SeptState::TDP) != 0
        {
            0
        } else if s & SeptState::TDBW != 0 {
            Self::R | Self::X
        } else {
            Self::R | Self::W | Self::X
        }
    }

    /// A leaf entry mapping `hpa` (bits 51:12 used) in `state`, memory type WB, with the
    /// permissions the state implies and suppress-#VE set when the entry is not readable
    /// (the module sets SVE to "not present").
    pub const fn leaf(hpa: u64, state: SeptState) -> Self {
        let perms = Self::permissions_for(state);
        let sve = if perms & Self::R == 0 {
            Self::SUPPRESS_VE
        } else {
            0
        };
        SeptEntry(
            (hpa & Self::HPA_MASK) | ((Self::MEMORY_TYPE_WB as u64) << 3) | perms | sve | Self::PS,
        )
        .with_state(state)
    }

    /// A non-leaf entry pointing at the SEPT page `hpa` in `state` (normally NL_MAPPED or
    /// NL_BLOCKED), R+W+X when not blocked.
    pub const fn non_leaf(hpa: u64, state: SeptState) -> Self {
        let perms = Self::permissions_for(state);
        let sve = if perms & Self::R == 0 {
            Self::SUPPRESS_VE
        } else {
            0
        };
        SeptEntry((hpa & Self::HPA_MASK) | perms | sve).with_state(state)
    }

    /// The "architectural" entry reported in RCX on SEPT errors and by TDH.MEM.SEPT.RD: FREE
    /// gives only bit 63; a leaf keeps R/W/X/XU, memory type, IPAT, PS, HPA and suppress-#VE;
    /// a non-leaf keeps R/W/X/XU and PS. (The module's permission mask includes XU, bit 10;
    /// checked in the 1.5 source.)
    pub const fn architectural(self) -> u64 {
        let rwx = Self::R | Self::W | Self::X | Self::XU;
        if self.state().normalized().0 == SeptState::FREE.0 {
            Self::SUPPRESS_VE
        } else if self.is_leaf() {
            self.0
                & (rwx | Self::MT_MASK | Self::IPAT | Self::PS | Self::HPA_MASK | Self::SUPPRESS_VE)
        } else {
            self.0 & (rwx | Self::PS)
        }
    }
}

impl fmt::Debug for SeptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SeptEntry({:#018x}: {}, hpa {:#x})",
            self.0,
            self.state(),
            self.hpa()
        )
    }
}

/// SEPT entry information reported in RDX on SEPT errors and by TDH.MEM.SEPT.RD: bits 2:0
/// level, bits 15:8 public state, bits 17:16 VM index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct SeptEntryInfo(u64);

impl SeptEntryInfo {
    /// Wraps a raw RDX value.
    pub const fn from_raw(raw: u64) -> Self {
        SeptEntryInfo(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Builds the value (`vm` is truncated to 2 bits).
    pub const fn new(level: EptLevel, state: SeptPublicState, vm: u8) -> Self {
        SeptEntryInfo(level.raw() as u64 | ((state.0 as u64) << 8) | (((vm & 3) as u64) << 16))
    }

    /// The raw level field (bits 2:0).
    pub const fn level_raw(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// The level, or `None` for 5..=7.
    pub const fn level(self) -> Option<EptLevel> {
        EptLevel::from_raw(self.0 & 7)
    }

    /// The public state (bits 15:8).
    pub const fn state(self) -> SeptPublicState {
        SeptPublicState(((self.0 >> 8) & 0xFF) as u8)
    }

    /// The VM index (bits 17:16; 0 = the L1 TD).
    pub const fn vm(self) -> u8 {
        ((self.0 >> 16) & 3) as u8
    }
}

impl fmt::Display for SeptEntryInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {}, state {}", self.level_raw(), self.state())?;
        if self.vm() != 0 {
            write!(f, ", vm {}", self.vm())?;
        }
        Ok(())
    }
}

open_enum! {
    /// Extended exit qualification type (TDH.VP.ENTER RDX bits 3:0, `vmx_eeq_type_t`).
    pub struct EeqType(u8);
    /// 0: none.
    NONE = 0,
    /// 1: TDG.MEM.PAGE.ACCEPT failed (info = [`AcceptInfo`]).
    ACCEPT = 1,
    /// 2: GPA details.
    GPA_DETAILS = 2,
    /// 3: MSR load failure on TD entry.
    MSR_LOAD_FAIL = 3,
    /// 4: XSTATE load failure on TD entry.
    XSTATE_LOAD_FAIL = 4,
    /// 5: TDG.MEM.PAGE.ATTR.WR.
    ATTR_WR = 5,
    /// 6: pending EPT violation.
    PENDING_EPT_VIOLATION = 6,
}

/// Information of an ACCEPT extended exit qualification (`tdaccept_vmx_eeq_info_t`):
/// bits 2:0 requested level, 5:3 error level, 13:6 SEPT state, 14 is-leaf, 21:20 VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AcceptInfo {
    /// Level the guest asked to accept (raw, 3 bits).
    pub requested_level: u8,
    /// Level at which the walk failed (raw, 3 bits).
    pub error_level: u8,
    /// Public state of the entry found.
    pub sept_state: SeptPublicState,
    /// Whether the entry found is a leaf.
    pub is_leaf: bool,
    /// VM index (2 bits).
    pub vm: u8,
}

impl AcceptInfo {
    /// Encodes the 32-bit info field (out-of-range inputs are truncated to their widths).
    pub const fn encode(self) -> u32 {
        (self.requested_level as u32 & 7)
            | ((self.error_level as u32 & 7) << 3)
            | ((self.sept_state.0 as u32) << 6)
            | ((self.is_leaf as u32) << 14)
            | ((self.vm as u32 & 3) << 20)
    }

    /// Decodes the 32-bit info field.
    pub const fn decode(info: u32) -> Self {
        AcceptInfo {
            requested_level: (info & 7) as u8,
            error_level: ((info >> 3) & 7) as u8,
            sept_state: SeptPublicState(((info >> 6) & 0xFF) as u8),
            is_leaf: (info >> 14) & 1 != 0,
            vm: ((info >> 20) & 3) as u8,
        }
    }
}

/// Extended exit qualification (TDH.VP.ENTER RDX on some exits): bits 3:0 type, 63:32 info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct ExtendedExitQualification(u64);

impl ExtendedExitQualification {
    /// Wraps a raw value.
    pub const fn from_raw(raw: u64) -> Self {
        ExtendedExitQualification(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// From a type and 32-bit info.
    pub const fn new(kind: EeqType, info: u32) -> Self {
        ExtendedExitQualification((kind.0 as u64 & 0xF) | ((info as u64) << 32))
    }

    /// An ACCEPT qualification.
    pub const fn accept(info: AcceptInfo) -> Self {
        Self::new(EeqType::ACCEPT, info.encode())
    }

    /// The type (bits 3:0).
    pub const fn kind(self) -> EeqType {
        EeqType((self.0 & 0xF) as u8)
    }

    /// The info field (bits 63:32).
    pub const fn info(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The info decoded as [`AcceptInfo`] (meaningful when `kind()` is ACCEPT).
    pub const fn accept_info(self) -> AcceptInfo {
        AcceptInfo::decode(self.info())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn state_table_matches_fact_sheet() {
        // (internal, public) typed from §5.13.
        let table: [(u8, u8); 16] = [
            (0x0E, 0),
            (0x68, 1),
            (0x70, 2),
            (0x78, 3),
            (0x60, 4),
            (0x0C, 5),
            (0x64, 8),
            (0x66, 9),
            (0x63, 11),
            (0x67, 12),
            (0x74, 16),
            (0x76, 17),
            (0x73, 19),
            (0x77, 20),
            (0x00, 0x84),
            (0x08, 0x81),
        ];
        for (int, public) in table {
            let s = SeptState::from_raw(int);
            assert!(s.is_known(), "{int:#x}");
            assert_eq!(s.public_state().raw(), public, "{int:#x}");
            assert_eq!(SeptPublicState::from_raw(public).internal_state(), Some(s));
            // The state survives a trip through an entry.
            assert_eq!(SeptEntry::free().with_state(s).state(), s);
        }
        assert_eq!(SeptState::from_raw(0x61).normalized(), SeptState::MAPPED);
        assert_eq!(
            SeptState::from_raw(0x61).public_state(),
            SeptPublicState::MAPPED
        );
        assert_eq!(
            SeptState::EXPORTED_DIRTY.normalized(),
            SeptState::EXPORTED_DIRTY
        );
        assert_eq!(SeptState::from_raw(0x01).public_state().raw(), 0xFF);
        assert_eq!(SeptPublicState::from_raw(6).internal_state(), None);
        assert_eq!(format!("{}", SeptState::PENDING), "PENDING");
        assert_eq!(format!("{}", SeptPublicState::from_raw(6)), "0x6");
    }

    #[test]
    fn entry_bits_and_state() {
        // MAPPED leaf at 0x1234_5000: RWX, WB (6 << 3), IPAT, PS.
        let e = SeptEntry::leaf(0x1234_5000, SeptState::MAPPED);
        assert_eq!(e.raw(), 0x1234_5000 | 0x7 | 0x30 | 0x40 | 0x80);
        assert!(e.r() && e.w() && e.x() && e.ipat() && e.is_leaf());
        assert!(!e.suppress_ve());
        assert_eq!(e.memory_type(), 6);
        assert_eq!(e.hpa(), 0x1234_5000);
        assert_eq!(e.state(), SeptState::MAPPED);
        // PENDING: TDP (bit 56), no permissions, SVE.
        let p = SeptEntry::leaf(0x2000, SeptState::PENDING);
        assert_eq!(p.raw(), (1 << 63) | (1 << 56) | 0x2000 | 0x30 | 0x40 | 0x80);
        assert!(p.tdp() && !p.r());
        // FREE: bit 63 + TDEX, TDBW, TDB (bits 53..55).
        let f = SeptEntry::free();
        assert_eq!(f.raw(), (1 << 63) | (0x7 << 53));
        assert_eq!(f.state(), SeptState::FREE);
        assert_eq!(SeptEntry::removed().raw(), (1 << 63) | (0x3 << 54));
        // Dirty MAPPED entry.
        let d = SeptEntry::from_raw(e.raw() | (1 << 9));
        assert!(d.dirty());
        assert_eq!(d.state().raw(), 0x61);
        assert_eq!(d.state().public_state(), SeptPublicState::MAPPED);
        // Non-leaf.
        let nl = SeptEntry::non_leaf(0x5000, SeptState::NL_MAPPED);
        assert_eq!(nl.raw(), 0x5007);
        assert_eq!(nl.state(), SeptState::NL_MAPPED);
        let nlb = SeptEntry::non_leaf(0x5000, SeptState::NL_BLOCKED);
        assert!(nlb.tdb() && !nlb.r());
        assert_eq!(nlb.state(), SeptState::NL_BLOCKED);
        // BLOCKEDW keeps R and X.
        let bw = SeptEntry::leaf(0x3000, SeptState::BLOCKEDW);
        assert!(bw.r() && !bw.w() && bw.x() && bw.tdbw());
    }

    #[test]
    fn architectural_view() {
        assert_eq!(SeptEntry::free().architectural(), 1 << 63);
        let e = SeptEntry::leaf(0x1234_5000, SeptState::MAPPED);
        let locked = SeptEntry::from_raw(e.raw() | (1 << 11) | (1 << 9) | (1 << 61));
        assert_eq!(locked.architectural(), 0x1234_5000 | 0xF7);
        let nl = SeptEntry::from_raw(SeptEntry::non_leaf(0x5000, SeptState::NL_MAPPED).raw());
        assert_eq!(nl.architectural(), 0x7);
    }

    #[test]
    fn entry_info_and_display() {
        let i = SeptEntryInfo::new(EptLevel::Pt, SeptPublicState::MAPPED, 0);
        assert_eq!(i.raw(), 0x400);
        assert_eq!(format!("{i}"), "level 0, state MAPPED");
        let j = SeptEntryInfo::from_raw(0x2_8102);
        assert_eq!(j.level(), Some(EptLevel::Pdpt));
        assert_eq!(j.state(), SeptPublicState::NL_BLOCKED);
        assert_eq!(j.vm(), 2);
        assert_eq!(format!("{j}"), "level 2, state NL_BLOCKED, vm 2");
        assert_eq!(SeptEntryInfo::from_raw(7).level(), None);
        assert_eq!(
            format!("{}", SeptEntryInfo::from_raw(0x605)),
            "level 5, state 0x6"
        );
    }

    #[test]
    fn extended_exit_qualification() {
        let info = AcceptInfo {
            requested_level: 1,
            error_level: 0,
            sept_state: SeptPublicState::MAPPED,
            is_leaf: true,
            vm: 0,
        };
        // 1 | (4 << 6) | (1 << 14) = 0x4101.
        let q = ExtendedExitQualification::accept(info);
        assert_eq!(q.raw(), 0x0000_4101_0000_0001);
        assert_eq!(q.kind(), EeqType::ACCEPT);
        assert_eq!(q.info(), 0x4101);
        assert_eq!(q.accept_info(), info);
        let r = ExtendedExitQualification::from_raw(0x0030_0000_0000_0006);
        assert_eq!(r.kind(), EeqType::PENDING_EPT_VIOLATION);
        assert_eq!(r.accept_info().vm, 3);
        assert_eq!(ExtendedExitQualification::from_raw(0xF).kind().name(), None);
    }
}
