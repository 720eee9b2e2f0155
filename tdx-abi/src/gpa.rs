//! Guest physical addresses of a TD: GPA width (GPAW), the SHARED bit, EPT levels and the
//! "GPA + level" operand used by the TDH.MEM.* and TDG.MEM.* leaves.
//!
//! A TD's GPA space has two aliases chosen by the SHARED bit: bit 47 when the TD is
//! configured with GPAW 48 (`CONFIG_FLAGS.GPAW = 0`) and bit 51 with GPAW 52. Private pages
//! are mapped by the Secure EPT, shared pages by the ordinary (shared) EPT.

use core::fmt;

/// Size of a 4 KiB page, the TDX base page size.
pub const PAGE_SIZE_4K: u64 = 1 << 12;
/// Size of a 2 MiB page.
pub const PAGE_SIZE_2M: u64 = 1 << 21;
/// Size of a 1 GiB page.
pub const PAGE_SIZE_1G: u64 = 1 << 30;

/// Guest physical address width of a TD (`CONFIG_FLAGS.GPAW`, `TDG.VP.INFO` `RCX[5:0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gpaw {
    /// 48-bit GPA space, SHARED bit = bit 47, 4-level Secure EPT.
    Gpaw48,
    /// 52-bit GPA space, SHARED bit = bit 51, needs 5-level Secure EPT.
    Gpaw52,
}

impl Gpaw {
    /// Width in bits (48 or 52).
    pub const fn bits(self) -> u32 {
        match self {
            Gpaw::Gpaw48 => 48,
            Gpaw::Gpaw52 => 52,
        }
    }

    /// Index of the SHARED bit (47 or 51).
    pub const fn shared_bit(self) -> u32 {
        self.bits() - 1
    }

    /// Mask with only the SHARED bit set (`1 << (GPAW - 1)`).
    pub const fn shared_mask(self) -> u64 {
        1 << self.shared_bit()
    }

    /// Exclusive upper bound of the GPA space (`1 << GPAW`).
    pub const fn limit(self) -> u64 {
        1 << self.bits()
    }

    /// Value of `CONFIG_FLAGS` bit 0 (GPAW) that selects this width.
    pub const fn config_flags_gpaw_bit(self) -> bool {
        matches!(self, Gpaw::Gpaw52)
    }

    /// The width selected by `CONFIG_FLAGS` bit 0.
    pub const fn from_config_flags_gpaw_bit(bit: bool) -> Self {
        if bit {
            Gpaw::Gpaw52
        } else {
            Gpaw::Gpaw48
        }
    }

    /// The width reported in `TDG.VP.INFO` `RCX[5:0]` or the initial RBX of a vCPU.
    /// Returns `None` for any value other than 48 or 52.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            48 => Some(Gpaw::Gpaw48),
            52 => Some(Gpaw::Gpaw52),
            _ => None,
        }
    }

    /// Secure-EPT page-walk length (levels) this width needs: 4 for GPAW 48, 5 for GPAW 52.
    pub const fn page_walk_levels(self) -> u8 {
        match self {
            Gpaw::Gpaw48 => 4,
            Gpaw::Gpaw52 => 5,
        }
    }
}

impl fmt::Display for Gpaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GPAW {}", self.bits())
    }
}

/// A guest physical address of a TD, possibly carrying the SHARED bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Gpa(pub u64);

impl Gpa {
    /// The raw 64-bit value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether the SHARED bit of `gpaw` is set.
    pub const fn is_shared(self, gpaw: Gpaw) -> bool {
        self.0 & gpaw.shared_mask() != 0
    }

    /// The shared alias (SHARED bit set).
    pub const fn to_shared(self, gpaw: Gpaw) -> Gpa {
        Gpa(self.0 | gpaw.shared_mask())
    }

    /// The private alias (SHARED bit clear).
    pub const fn to_private(self, gpaw: Gpaw) -> Gpa {
        Gpa(self.0 & !gpaw.shared_mask())
    }

    /// Whether the address lies inside the GPA space of `gpaw` (below `1 << GPAW`).
    pub const fn is_valid(self, gpaw: Gpaw) -> bool {
        self.0 < gpaw.limit()
    }

    /// Whether the address is aligned to the page size of `level`.
    pub const fn is_aligned(self, level: EptLevel) -> bool {
        self.0 & (level.page_size() - 1) == 0
    }

    /// The address rounded down to the page size of `level`.
    pub const fn align_down(self, level: EptLevel) -> Gpa {
        Gpa(self.0 & !(level.page_size() - 1))
    }

    /// Byte offset inside the 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE_4K - 1)
    }

    /// Adds a byte offset, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Gpa> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Gpa(v)),
            None => None,
        }
    }
}

impl fmt::Display for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl From<u64> for Gpa {
    fn from(v: u64) -> Self {
        Gpa(v)
    }
}

/// EPT level as the TDX module numbers it (`ept_level_t`): 0 is the 4 KiB leaf level.
///
/// TDX level = Linux `pg_level` - 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EptLevel {
    /// Level 0: page-table entry, maps 4 KiB.
    Pt = 0,
    /// Level 1: page-directory entry, maps 2 MiB as a leaf.
    Pd = 1,
    /// Level 2: PDPT entry, maps 1 GiB as a leaf.
    Pdpt = 2,
    /// Level 3: PML4 entry (non-leaf only).
    Pml4 = 3,
    /// Level 4: PML5 entry (non-leaf only, 5-level EPT).
    Pml5 = 4,
}

impl EptLevel {
    /// Decodes the 3-bit level field; `None` for 5..=7.
    pub const fn from_raw(v: u64) -> Option<Self> {
        match v {
            0 => Some(EptLevel::Pt),
            1 => Some(EptLevel::Pd),
            2 => Some(EptLevel::Pdpt),
            3 => Some(EptLevel::Pml4),
            4 => Some(EptLevel::Pml5),
            _ => None,
        }
    }

    /// The raw level number.
    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// Bytes mapped by one entry at this level (4 KiB << 9·level).
    pub const fn page_size(self) -> u64 {
        PAGE_SIZE_4K << (9 * self as u64)
    }

    /// The leaf page size this level maps, for levels that can be leaves (0..=2).
    pub const fn leaf_page_size(self) -> Option<PageSize> {
        match self {
            EptLevel::Pt => Some(PageSize::Size4K),
            EptLevel::Pd => Some(PageSize::Size2M),
            EptLevel::Pdpt => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

/// Page size encoding used by the PAMT and by TDH.PHYMEM.PAGE.RECLAIM / RDMD (`page_size_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageSize {
    /// 0: 4 KiB.
    Size4K = 0,
    /// 1: 2 MiB.
    Size2M = 1,
    /// 2: 1 GiB.
    Size1G = 2,
}

impl PageSize {
    /// Decodes the page-size encoding; `None` for other values.
    pub const fn from_raw(v: u64) -> Option<Self> {
        match v {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size2M),
            2 => Some(PageSize::Size1G),
            _ => None,
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE_4K,
            PageSize::Size2M => PAGE_SIZE_2M,
            PageSize::Size1G => PAGE_SIZE_1G,
        }
    }

    /// The EPT level whose leaf maps a page of this size.
    pub const fn ept_level(self) -> EptLevel {
        match self {
            PageSize::Size4K => EptLevel::Pt,
            PageSize::Size2M => EptLevel::Pd,
            PageSize::Size1G => EptLevel::Pdpt,
        }
    }
}

/// Why a "GPA + level" operand is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpaAndLevelError {
    /// Bits 11:3 or 63:52 are not zero.
    ReservedBitsSet(u64),
    /// The level field is 5, 6 or 7.
    InvalidLevel(u64),
    /// The GPA is not aligned to the page size of the level.
    Misaligned {
        /// The GPA (bits 51:12 of the operand).
        gpa: u64,
        /// The requested level.
        level: EptLevel,
    },
}

impl fmt::Display for GpaAndLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpaAndLevelError::ReservedBitsSet(v) => {
                write!(f, "GPA+level operand {v:#x} has reserved bits set")
            }
            GpaAndLevelError::InvalidLevel(l) => write!(f, "EPT level {l} is not 0..=4"),
            GpaAndLevelError::Misaligned { gpa, level } => write!(
                f,
                "GPA {gpa:#x} is not aligned to the {:#x}-byte page of level {}",
                level.page_size(),
                level.raw()
            ),
        }
    }
}

/// The "GPA + level" operand of the TDH.MEM.* / TDG.MEM.* leaves (`page_info_api_input_t`):
/// bits 2:0 level, 11:3 reserved, 51:12 GPA, 63:52 reserved.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct GpaAndLevel(u64);

impl GpaAndLevel {
    /// Mask of the GPA field (bits 51:12).
    pub const GPA_MASK: u64 = ((1 << 52) - 1) & !(PAGE_SIZE_4K - 1);
    /// Mask of the level field (bits 2:0).
    pub const LEVEL_MASK: u64 = 0x7;

    /// Builds the operand, checking alignment and the GPA range (bits 51:12).
    pub const fn new(gpa: Gpa, level: EptLevel) -> Result<Self, GpaAndLevelError> {
        if gpa.0 & !Self::GPA_MASK & !(level.page_size() - 1) != 0 {
            return Err(GpaAndLevelError::ReservedBitsSet(gpa.0));
        }
        if !gpa.is_aligned(level) {
            return Err(GpaAndLevelError::Misaligned { gpa: gpa.0, level });
        }
        Ok(GpaAndLevel(gpa.0 | level as u64))
    }

    /// Wraps a raw register value without checking it (see [`GpaAndLevel::decode`]).
    pub const fn from_raw(raw: u64) -> Self {
        GpaAndLevel(raw)
    }

    /// The raw register value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The GPA field (bits 51:12).
    pub const fn gpa(self) -> Gpa {
        Gpa(self.0 & Self::GPA_MASK)
    }

    /// Checks the operand as the module does and returns its GPA and level.
    pub const fn decode(self) -> Result<(Gpa, EptLevel), GpaAndLevelError> {
        let reserved = self.0 & !(Self::GPA_MASK | Self::LEVEL_MASK);
        if reserved != 0 {
            return Err(GpaAndLevelError::ReservedBitsSet(self.0));
        }
        let level = match EptLevel::from_raw(self.0 & Self::LEVEL_MASK) {
            Some(l) => l,
            None => return Err(GpaAndLevelError::InvalidLevel(self.0 & Self::LEVEL_MASK)),
        };
        let gpa = self.gpa();
        if !gpa.is_aligned(level) {
            return Err(GpaAndLevelError::Misaligned { gpa: gpa.0, level });
        }
        Ok((gpa, level))
    }
}

impl fmt::Debug for GpaAndLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GpaAndLevel(gpa={:#x}, level={})",
            self.0 & Self::GPA_MASK,
            self.0 & Self::LEVEL_MASK
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bits() {
        assert_eq!(Gpaw::Gpaw48.shared_mask(), 0x8000_0000_0000);
        assert_eq!(Gpaw::Gpaw52.shared_mask(), 0x8_0000_0000_0000);
        let g = Gpa(0x1234_5000);
        assert!(!g.is_shared(Gpaw::Gpaw48));
        assert_eq!(g.to_shared(Gpaw::Gpaw48).raw(), 0x8000_1234_5000);
        assert_eq!(g.to_shared(Gpaw::Gpaw48).to_private(Gpaw::Gpaw48), g);
        assert!(Gpa(1 << 47).is_shared(Gpaw::Gpaw48));
        assert!(!Gpa(1 << 47).is_shared(Gpaw::Gpaw52));
        assert_eq!(Gpaw::from_bits(52), Some(Gpaw::Gpaw52));
        assert_eq!(Gpaw::from_bits(47), None);
        assert!(Gpaw::from_config_flags_gpaw_bit(true) == Gpaw::Gpaw52);
    }

    #[test]
    fn levels_and_sizes() {
        assert_eq!(EptLevel::Pt.page_size(), 4096);
        assert_eq!(EptLevel::Pd.page_size(), 2 << 20);
        assert_eq!(EptLevel::Pdpt.page_size(), 1 << 30);
        assert_eq!(EptLevel::Pml4.page_size(), 512 << 30);
        assert_eq!(EptLevel::from_raw(5), None);
        assert_eq!(PageSize::from_raw(1), Some(PageSize::Size2M));
        assert_eq!(PageSize::Size1G.ept_level(), EptLevel::Pdpt);
    }

    #[test]
    fn gpa_and_level_operand() {
        let op = GpaAndLevel::new(Gpa(0x20_0000), EptLevel::Pd).unwrap();
        assert_eq!(op.raw(), 0x20_0001);
        assert_eq!(op.decode(), Ok((Gpa(0x20_0000), EptLevel::Pd)));
        assert!(matches!(
            GpaAndLevel::new(Gpa(0x1000), EptLevel::Pd),
            Err(GpaAndLevelError::Misaligned { .. })
        ));
        assert!(matches!(
            GpaAndLevel::from_raw(0x1008).decode(),
            Err(GpaAndLevelError::ReservedBitsSet(_))
        ));
        assert!(matches!(
            GpaAndLevel::from_raw(1 << 52).decode(),
            Err(GpaAndLevelError::ReservedBitsSet(_))
        ));
        assert_eq!(
            GpaAndLevel::from_raw(0x1005).decode(),
            Err(GpaAndLevelError::InvalidLevel(5))
        );
    }
}
