//! Host physical addresses and host key IDs as SEAMCALL operands.

use core::fmt;

/// A host physical address (HPA), as passed to SEAMCALLs: page operands such as the TDR,
/// TDCX, TDVPR and TD pages. Unless a leaf says otherwise, the HKID bits above the
/// platform's MAXPA are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Hpa(pub u64);

impl Hpa {
    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether the address is 4 KiB aligned.
    pub const fn is_page_aligned(self) -> bool {
        self.0 & 0xfff == 0
    }

    /// The address with a host key ID placed in bits `hkid_shift..` (for
    /// TDH.PHYMEM.PAGE.WBINVD, which takes the PA including the HKID bits).
    /// Returns `None` when the HKID does not fit in 64 bits at that position.
    pub const fn with_hkid(self, hkid: Hkid, hkid_shift: u32) -> Option<Hpa> {
        if hkid_shift >= 64 {
            return None;
        }
        let bits = (hkid.0 as u64) << hkid_shift;
        if (bits >> hkid_shift) != hkid.0 as u64 {
            return None;
        }
        Some(Hpa(self.0 | bits))
    }
}

impl fmt::Display for Hpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HPA {:#x}", self.0)
    }
}

/// A host key ID (HKID, "KeyID"): bits 15:0 of the HKID operand, the rest must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Hkid(pub u16);

impl Hkid {
    /// The HKID operand register value.
    pub const fn operand(self) -> u64 {
        self.0 as u64
    }

    /// Decodes an HKID operand, refusing nonzero bits 63:16 as the module does.
    pub const fn from_operand(v: u64) -> Option<Hkid> {
        if v >> 16 != 0 {
            None
        } else {
            Some(Hkid(v as u16))
        }
    }
}

impl fmt::Display for Hkid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HKID {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkid_operand_and_pa_bits() {
        assert_eq!(Hkid::from_operand(0x1_0000), None);
        assert_eq!(Hkid::from_operand(5), Some(Hkid(5)));
        assert_eq!(
            Hpa(0x1000).with_hkid(Hkid(3), 46),
            Some(Hpa(0x1000 | (3 << 46)))
        );
        assert_eq!(Hpa(0).with_hkid(Hkid(0xffff), 52), None);
        assert!(Hpa(0x2000).is_page_aligned());
        assert!(!Hpa(0x2001).is_page_aligned());
    }
}
