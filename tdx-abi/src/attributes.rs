//! TD configuration bit fields: ATTRIBUTES (§5.14), XFAM (§5.15), CONFIG_FLAGS and
//! EPTP_CONTROLS (§5.16), TD_CTLS and NOTIFY_ENABLES (§5.11b), TDX_FEATURES0 (§5.11), and the
//! FIXED0/FIXED1 check the module applies to them.
//!
//! The bit-flag types keep unknown bits (`from_bits_retain`), so a value read from the module
//! survives a round trip even when it uses bits this crate does not name.

use core::fmt;

use crate::gpa::Gpaw;

bitflags::bitflags! {
    /// TD ATTRIBUTES (TD_PARAMS, TDINFO_STRUCT, TDG.VP.INFO RDX), §5.14.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct TdAttributes: u64 {
        /// Bit 0: off-TD debug; the host can read and write TD state and memory.
        const DEBUG = 1 << 0;
        /// Bit 4: HGS+ profiling (newer modules).
        const HGS_PLUS_PROF = 1 << 4;
        /// Bit 5: performance profiling (newer modules).
        const PERF_PROF = 1 << 5;
        /// Bit 6: PMT profiling (newer modules).
        const PMT_PROF = 1 << 6;
        /// Bit 16: ICSSD (newer modules).
        const ICSSD = 1 << 16;
        /// Bit 27: linear-address space separation (newer modules).
        const LASS = 1 << 27;
        /// Bit 28: no #VE on guest access to a PENDING page.
        const SEPT_VE_DISABLE = 1 << 28;
        /// Bit 29: the TD may be migrated (1.5).
        const MIGRATABLE = 1 << 29;
        /// Bit 30: protection keys for supervisor pages.
        const PKS = 1 << 30;
        /// Bit 31: Key Locker (must be 0 in 1.5.01).
        const KL = 1 << 31;
        /// Bit 62: TPA (newer modules).
        const TPA = 1 << 62;
        /// Bit 63: the TD may use the performance-monitoring counters.
        const PERFMON = 1 << 63;
    }
}

bitflags::bitflags! {
    /// XFAM: the extended features a TD may use, in XCR0 / IA32_XSS bit layout (§5.15).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct Xfam: u64 {
        /// Bit 0: x87 state.
        const X87 = 1 << 0;
        /// Bit 1: SSE state.
        const SSE = 1 << 1;
        /// Bit 2: AVX (YMM upper halves).
        const AVX = 1 << 2;
        /// Bit 3: MPX BNDREGS (never allowed).
        const MPX_BNDREGS = 1 << 3;
        /// Bit 4: MPX BNDCSR (never allowed).
        const MPX_BNDCSR = 1 << 4;
        /// Bit 5: AVX-512 opmask registers.
        const AVX512_K = 1 << 5;
        /// Bit 6: AVX-512 upper halves of ZMM0-15.
        const AVX512_ZMM_HI256 = 1 << 6;
        /// Bit 7: AVX-512 ZMM16-31.
        const AVX512_HI16_ZMM = 1 << 7;
        /// Bit 8: Processor Trace.
        const PT = 1 << 8;
        /// Bit 9: PKRU.
        const PKRU = 1 << 9;
        /// Bit 10: PASID (never allowed).
        const PASID = 1 << 10;
        /// Bit 11: CET user state.
        const CET_U = 1 << 11;
        /// Bit 12: CET supervisor state.
        const CET_S = 1 << 12;
        /// Bit 13: HDC (never allowed).
        const HDC = 1 << 13;
        /// Bit 14: user interrupts.
        const UINTR = 1 << 14;
        /// Bit 15: architectural LBRs.
        const LBR = 1 << 15;
        /// Bit 16: HWP (never allowed).
        const HWP = 1 << 16;
        /// Bit 17: AMX TILECFG.
        const AMX_TILECFG = 1 << 17;
        /// Bit 18: AMX TILEDATA.
        const AMX_TILEDATA = 1 << 18;
    }
}

bitflags::bitflags! {
    /// CONFIG_FLAGS (TD_PARAMS offset 32, also called EXEC_CONTROLS), §5.16.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct ConfigFlags: u64 {
        /// Bit 0: GPAW. 0 = 48-bit GPA (SHARED bit 47); 1 = 52-bit (SHARED bit 51, 5-level EPT).
        const GPAW = 1 << 0;
        /// Bit 1: the guest may change the #VE behaviour on PENDING pages (TD_CTLS).
        const FLEXIBLE_PENDING_VE = 1 << 1;
        /// Bit 2: RBP is not clobbered by TDH.VP.ENTER / TDG.VP.VMCALL.
        const NO_RBP_MOD = 1 << 2;
    }
}

impl ConfigFlags {
    /// The GPA width selected by the GPAW bit.
    pub const fn gpaw(self) -> Gpaw {
        Gpaw::from_config_flags_gpaw_bit(self.contains(ConfigFlags::GPAW))
    }

    /// Flags with only the GPAW bit set as `gpaw` requires.
    pub const fn from_gpaw(gpaw: Gpaw) -> Self {
        if gpaw.config_flags_gpaw_bit() {
            ConfigFlags::GPAW
        } else {
            ConfigFlags::empty()
        }
    }
}

bitflags::bitflags! {
    /// TD_CTLS, the guest-writable TD execution controls (TD-scope metadata), §5.11b.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct TdCtls: u64 {
        /// Bit 0: no #VE on access to PENDING pages (EPT violation to the host instead).
        const PENDING_VE_DISABLE = 1 << 0;
        /// Bit 1: CPU topology enumeration is configured.
        const ENUM_TOPOLOGY = 1 << 1;
        /// Bit 2: virtualised CPUID(2).
        const VIRT_CPUID2 = 1 << 2;
        /// Bit 3: reduce the set of #VE-causing events.
        const REDUCE_VE = 1 << 3;
        /// Bit 63: TD_CTLS is locked.
        const LOCK = 1 << 63;
    }
}

bitflags::bitflags! {
    /// NOTIFY_ENABLES (TD-scope metadata), §5.11b.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct NotifyEnables: u64 {
        /// Bit 0: notify the guest of suspected zero-step EPT-fault attacks.
        const NOTIFY_EPT_FAULTS = 1 << 0;
    }
}

bitflags::bitflags! {
    /// TDX_FEATURES0 global metadata: optional module features (§5.11; bits 0-19 from
    /// module 1.5.01, the rest from newer modules).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct TdxFeatures0: u64 {
        /// Bit 0: TD migration.
        const TD_MIGRATION = 1 << 0;
        /// Bit 1: TD-preserving module update.
        const TD_PRESERVING = 1 << 1;
        /// Bit 2: service TDs.
        const SERVICE_TD = 1 << 2;
        /// Bit 3: TDG.VP.RD / TDG.VP.WR.
        const TDG_VP_RDWR = 1 << 3;
        /// Bit 4: relaxed memory-management concurrency.
        const RELAXED_MEM_MNG_CONCURRENCY = 1 << 4;
        /// Bit 5: guest control of CPUID virtualisation.
        const CPUID_VIRT_GUEST_CTRL = 1 << 5;
        /// Bit 7: TD partitioning (L2 VMs).
        const TD_PARTITIONING = 1 << 7;
        /// Bit 8: local attestation.
        const LOCAL_ATTESTATION = 1 << 8;
        /// Bit 9: TD entry enhancements.
        const TD_ENTRY_ENHANCEMENTS = 1 << 9;
        /// Bit 10: host-priority locks.
        const HOST_PRIORITY_LOCKS = 1 << 10;
        /// Bit 11: IA32_ARCH_CAPABILITIES configuration in TD_PARAMS.
        const CONFIG_IA32_ARCH_CAP = 1 << 11;
        /// Bit 12: sealing (newer modules).
        const SEALING = 1 << 12;
        /// Bit 16: pending-EPT-violation reporting v2.
        const PENDING_EPT_VIOLATION_V2 = 1 << 16;
        /// Bit 17: FMS configuration.
        const FMS_CONFIG = 1 << 17;
        /// Bit 18: CONFIG_FLAGS.NO_RBP_MOD supported.
        const NO_RBP_MOD = 1 << 18;
        /// Bit 19: L2 TLB invalidation optimisation.
        const L2_TLB_INVD_OPT = 1 << 19;
        /// Bit 20: topology enumeration (newer modules).
        const TOPOLOGY_ENUM = 1 << 20;
        /// Bit 22: TD signing and SVN (newer modules).
        const TD_SIGNING_AND_SVN = 1 << 22;
        /// Bit 50: 128-bit seal key (newer modules).
        const SEALKEY_128 = 1 << 50;
    }
}

/// ATTRIBUTES_FIXED0 of module 1.5.01: bits {0, 28, 29, 30, 63} may be 1.
pub const ATTRIBUTES_FIXED0: u64 = (1 << 0) | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 63);
/// ATTRIBUTES_FIXED1 of module 1.5.01: no bit is required.
pub const ATTRIBUTES_FIXED1: u64 = 0;
/// XFAM_FIXED0 of module 1.5.01 (before masking with CPU support).
pub const XFAM_FIXED0: u64 = 0x6DBE7;
/// XFAM_FIXED1 of module 1.5.01: x87 and SSE are required.
pub const XFAM_FIXED1: u64 = 0x3;
/// CONFIG_FLAGS_FIXED0 of module 1.5.01: bits {0, 1, 2} may be 1.
pub const CONFIG_FLAGS_FIXED0: u64 = 0x7;
/// CONFIG_FLAGS_FIXED1 of module 1.5.01.
pub const CONFIG_FLAGS_FIXED1: u64 = 0;

/// A value violates its FIXED0/FIXED1 constraints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedBitsError {
    /// Bits set in the value that FIXED0 does not allow (`value & !fixed0`).
    pub not_allowed: u64,
    /// Bits FIXED1 requires that the value lacks (`fixed1 & !value`).
    pub missing: u64,
}

impl fmt::Display for FixedBitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fixed-bit violation: bits {:#x} not allowed, required bits {:#x} missing",
            self.not_allowed, self.missing
        )
    }
}

impl core::error::Error for FixedBitsError {}

/// The module's FIXED0/FIXED1 check: a bit may be 1 only if it is 1 in `fixed0`, and must be
/// 1 if it is 1 in `fixed1` (`(value & !fixed0) == 0 && (value & fixed1) == fixed1`).
pub const fn check_fixed_bits(value: u64, fixed0: u64, fixed1: u64) -> Result<(), FixedBitsError> {
    let not_allowed = value & !fixed0;
    let missing = fixed1 & !value;
    if not_allowed == 0 && missing == 0 {
        Ok(())
    } else {
        Err(FixedBitsError {
            not_allowed,
            missing,
        })
    }
}

/// Why an EPTP_CONTROLS value is rejected (§5.16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptpError {
    /// Bits 2:0 are not 6 (write-back).
    MemoryType(u8),
    /// Bits 5:3 + 1 is not 4 or 5.
    PageWalkLevels(u8),
    /// A bit that must be 0 is set (bit 6 A/D enable, bit 7 SSS, bits 63:8).
    ReservedBits(u64),
}

impl fmt::Display for EptpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EptpError::MemoryType(t) => write!(f, "EPTP memory type {t} is not WB (6)"),
            EptpError::PageWalkLevels(l) => {
                write!(f, "EPTP page-walk length {l} is not 4 or 5 levels")
            }
            EptpError::ReservedBits(b) => write!(f, "EPTP reserved bits {b:#x} set"),
        }
    }
}

impl core::error::Error for EptpError {}

/// EPTP_CONTROLS (TD_PARAMS offset 24), §5.16: bits 2:0 memory type (must be 6 = WB), bits 5:3
/// page-walk length - 1 (3 or 4), everything else 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct EptpControls(pub u64);

impl EptpControls {
    /// Write-back memory type.
    pub const MEMORY_TYPE_WB: u8 = 6;
    const RESERVED_MASK: u64 = !0x3F;

    /// A valid value for a `levels`-level Secure EPT (4 or 5), memory type WB.
    pub const fn for_levels(levels: u8) -> Result<Self, EptpError> {
        match levels {
            4 | 5 => Ok(EptpControls(
                Self::MEMORY_TYPE_WB as u64 | (((levels - 1) as u64) << 3),
            )),
            _ => Err(EptpError::PageWalkLevels(levels)),
        }
    }

    /// Wraps a raw value (not validated).
    pub const fn from_raw(raw: u64) -> Self {
        EptpControls(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Number of page-walk levels (bits 5:3 + 1).
    pub const fn page_walk_levels(self) -> u8 {
        ((self.0 >> 3) & 7) as u8 + 1
    }

    /// Memory type (bits 2:0).
    pub const fn memory_type(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// Checks the value as TDH.MNG.INIT does.
    pub const fn validate(self) -> Result<(), EptpError> {
        if self.memory_type() != Self::MEMORY_TYPE_WB {
            return Err(EptpError::MemoryType(self.memory_type()));
        }
        let l = self.page_walk_levels();
        if l != 4 && l != 5 {
            return Err(EptpError::PageWalkLevels(l));
        }
        if self.0 & Self::RESERVED_MASK != 0 {
            return Err(EptpError::ReservedBits(self.0 & Self::RESERVED_MASK));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_match_fact_sheet() {
        assert_eq!(ATTRIBUTES_FIXED0, 0x8000_0000_7000_0001);
        assert_eq!(
            TdAttributes::from_bits_retain(ATTRIBUTES_FIXED0),
            TdAttributes::DEBUG
                | TdAttributes::SEPT_VE_DISABLE
                | TdAttributes::MIGRATABLE
                | TdAttributes::PKS
                | TdAttributes::PERFMON
        );
        // 0x6DBE7 = bits 0-2, 5-9, 11-12, 14-15, 17-18.
        let allowed = Xfam::X87
            | Xfam::SSE
            | Xfam::AVX
            | Xfam::AVX512_K
            | Xfam::AVX512_ZMM_HI256
            | Xfam::AVX512_HI16_ZMM
            | Xfam::PT
            | Xfam::PKRU
            | Xfam::CET_U
            | Xfam::CET_S
            | Xfam::UINTR
            | Xfam::LBR
            | Xfam::AMX_TILECFG
            | Xfam::AMX_TILEDATA;
        assert_eq!(allowed.bits(), XFAM_FIXED0);
        assert_eq!(TdAttributes::KL.bits(), 0x8000_0000);
        assert_eq!(TdAttributes::TPA.bits(), 1 << 62);
        assert_eq!(TdxFeatures0::NO_RBP_MOD.bits(), 0x4_0000);
        assert_eq!(TdCtls::LOCK.bits(), 0x8000_0000_0000_0000);
    }

    #[test]
    fn fixed_bit_check() {
        assert_eq!(check_fixed_bits(0x3, XFAM_FIXED0, XFAM_FIXED1), Ok(()));
        assert_eq!(check_fixed_bits(0x6DBE7, XFAM_FIXED0, XFAM_FIXED1), Ok(()));
        assert_eq!(
            check_fixed_bits(0x1 | 0x8, XFAM_FIXED0, XFAM_FIXED1),
            Err(FixedBitsError {
                not_allowed: 0x8,
                missing: 0x2
            })
        );
        // KL (bit 31) is not allowed by 1.5.01.
        assert_eq!(
            check_fixed_bits(0x8000_0001, ATTRIBUTES_FIXED0, ATTRIBUTES_FIXED1),
            Err(FixedBitsError {
                not_allowed: 0x8000_0000,
                missing: 0
            })
        );
        assert!(check_fixed_bits(0x7, CONFIG_FLAGS_FIXED0, CONFIG_FLAGS_FIXED1).is_ok());
        assert!(check_fixed_bits(0x8, CONFIG_FLAGS_FIXED0, CONFIG_FLAGS_FIXED1).is_err());
    }

    #[test]
    fn unknown_bits_are_retained() {
        let a = TdAttributes::from_bits_retain(0x0000_0100_0000_0001);
        assert_eq!(a.bits(), 0x0000_0100_0000_0001);
        assert!(a.contains(TdAttributes::DEBUG));
    }

    #[test]
    fn config_flags_gpaw() {
        assert_eq!(ConfigFlags::empty().gpaw(), Gpaw::Gpaw48);
        assert_eq!(ConfigFlags::GPAW.gpaw(), Gpaw::Gpaw52);
        assert_eq!(ConfigFlags::from_gpaw(Gpaw::Gpaw52).bits(), 1);
        assert_eq!(ConfigFlags::from_gpaw(Gpaw::Gpaw48).bits(), 0);
    }

    #[test]
    fn eptp_controls() {
        // 4 levels: WB (6) | (3 << 3) = 0x1E; 5 levels: 6 | (4 << 3) = 0x26.
        assert_eq!(EptpControls::for_levels(4).unwrap().raw(), 0x1E);
        assert_eq!(EptpControls::for_levels(5).unwrap().raw(), 0x26);
        assert_eq!(
            EptpControls::for_levels(3),
            Err(EptpError::PageWalkLevels(3))
        );
        assert_eq!(EptpControls(0x26).page_walk_levels(), 5);
        assert_eq!(EptpControls(0x26).memory_type(), 6);
        assert_eq!(EptpControls(0x1E).validate(), Ok(()));
        assert_eq!(EptpControls(0x18).validate(), Err(EptpError::MemoryType(0)));
        assert_eq!(
            EptpControls(0x16).validate(),
            Err(EptpError::PageWalkLevels(3))
        );
        assert_eq!(
            EptpControls(0x5E).validate(),
            Err(EptpError::ReservedBits(0x40))
        );
        assert_eq!(
            EptpControls(0x1000_001E).validate(),
            Err(EptpError::ReservedBits(0x1000_0000))
        );
    }
}
