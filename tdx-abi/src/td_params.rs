//! TD_PARAMS, the input of TDH.MNG.INIT (§5.1), and the CPUID configuration encodings (§5.2).
//!
//! The layout is module 1.5's `td_params_t`: 1024 bytes, 1024-byte aligned, naturally aligned
//! fields only. In 1.0, NUM_L2_VMS, MSR_CONFIG_CTLS and IA32_ARCH_CAPABILITIES_CONFIG are
//! reserved and must be 0.

use core::fmt;
use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::attributes::{ConfigFlags, EptpControls, TdAttributes, Xfam};

/// Number of CPUID_VALUES entries that fit in TD_PARAMS (bytes 256..1024).
pub const MAX_CPUID_VALUES_IN_TD_PARAMS: usize = 48;
/// SUBLEAF value meaning "this leaf has no subleaf" (`CPUID_SUBLEAF_NA`).
pub const SUBLEAF_NA: u32 = 0xFFFF_FFFF;
/// TSC_FREQUENCY unit: 25 MHz.
pub const TSC_FREQUENCY_UNIT_HZ: u64 = 25_000_000;
/// Smallest valid TSC_FREQUENCY (4 x 25 MHz = 100 MHz).
pub const TSC_FREQUENCY_MIN: u16 = 4;
/// Largest valid TSC_FREQUENCY (400 x 25 MHz = 10 GHz).
pub const TSC_FREQUENCY_MAX: u16 = 400;

/// One CPUID_VALUES entry of TD_PARAMS (16 bytes): the values the VMM chooses for one
/// configurable leaf/subleaf, in the order of the module's CPUID_CONFIG list.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CpuidValues {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// One CPUID_CONFIG entry of TDSYSINFO_STRUCT (24 bytes): a configurable leaf/subleaf and the
/// bits of each register the VMM may set.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CpuidConfig {
    /// LEAF.
    pub leaf: u32,
    /// SUBLEAF ([`SUBLEAF_NA`] = none).
    pub subleaf: u32,
    /// Configurable EAX bits.
    pub eax: u32,
    /// Configurable EBX bits.
    pub ebx: u32,
    /// Configurable ECX bits.
    pub ecx: u32,
    /// Configurable EDX bits.
    pub edx: u32,
}

impl CpuidConfig {
    /// The leaf and subleaf of this entry.
    pub const fn leaf_subleaf(&self) -> CpuidLeafSubleaf {
        CpuidLeafSubleaf::from_parts(self.leaf, self.subleaf)
    }

    /// The configurable bits as a [`CpuidValues`].
    pub const fn values(&self) -> CpuidValues {
        CpuidValues {
            eax: self.eax,
            ebx: self.ebx,
            ecx: self.ecx,
            edx: self.edx,
        }
    }
}

/// A CPUID leaf and optional subleaf, as encoded in the CPUID_CONFIG_LEAVES metadata fields:
/// LEAF in bits 31:0, SUBLEAF in bits 63:32 (0xFFFFFFFF = no subleaf).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuidLeafSubleaf {
    /// CPUID leaf (EAX input).
    pub leaf: u32,
    /// CPUID subleaf (ECX input), `None` if the leaf has no subleaves.
    pub subleaf: Option<u32>,
}

impl CpuidLeafSubleaf {
    /// A leaf without subleaf.
    pub const fn leaf(leaf: u32) -> Self {
        CpuidLeafSubleaf {
            leaf,
            subleaf: None,
        }
    }

    /// A leaf with a subleaf.
    pub const fn with_subleaf(leaf: u32, subleaf: u32) -> Self {
        CpuidLeafSubleaf {
            leaf,
            subleaf: Some(subleaf),
        }
    }

    /// From LEAF and SUBLEAF words ([`SUBLEAF_NA`] maps to `None`).
    pub const fn from_parts(leaf: u32, subleaf: u32) -> Self {
        CpuidLeafSubleaf {
            leaf,
            subleaf: if subleaf == SUBLEAF_NA {
                None
            } else {
                Some(subleaf)
            },
        }
    }

    /// The SUBLEAF word ([`SUBLEAF_NA`] for `None`).
    pub const fn subleaf_raw(self) -> u32 {
        match self.subleaf {
            Some(s) => s,
            None => SUBLEAF_NA,
        }
    }

    /// The 64-bit CPUID_CONFIG_LEAVES encoding.
    pub const fn encode(self) -> u64 {
        self.leaf as u64 | ((self.subleaf_raw() as u64) << 32)
    }

    /// Decodes the 64-bit CPUID_CONFIG_LEAVES encoding.
    pub const fn decode(raw: u64) -> Self {
        Self::from_parts(raw as u32, (raw >> 32) as u32)
    }
}

impl fmt::Display for CpuidLeafSubleaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subleaf {
            Some(s) => write!(f, "{:#x}.{:#x}", self.leaf, s),
            None => write!(f, "{:#x}", self.leaf),
        }
    }
}

/// The configurable CPUID list of the module 1.5.01 build, as an *example* (the fact sheet's
/// enumeration of `cpuid_configurations.c`). Real code must read the list from the module
/// (`CPUID_CONFIG_LEAVES` metadata or TDSYSINFO) instead of relying on this order.
pub const CPUID_CONFIG_LEAVES_1_5_01: [CpuidLeafSubleaf; 12] = [
    CpuidLeafSubleaf::leaf(0x1),
    CpuidLeafSubleaf::with_subleaf(0x4, 0),
    CpuidLeafSubleaf::with_subleaf(0x4, 1),
    CpuidLeafSubleaf::with_subleaf(0x4, 2),
    CpuidLeafSubleaf::with_subleaf(0x4, 3),
    CpuidLeafSubleaf::with_subleaf(0x7, 0),
    CpuidLeafSubleaf::with_subleaf(0x7, 1),
    CpuidLeafSubleaf::leaf(0xA),
    CpuidLeafSubleaf::leaf(0x1C),
    CpuidLeafSubleaf::leaf(0x8000_0008),
    CpuidLeafSubleaf::with_subleaf(0x7, 2),
    CpuidLeafSubleaf::with_subleaf(0x23, 0),
];

/// TSC_FREQUENCY is not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TscFrequencyError {
    /// The frequency in Hz is not a multiple of 25 MHz.
    NotMultipleOf25MHz(u64),
    /// The frequency is outside 100 MHz ..= 10 GHz (value in Hz).
    OutOfRange(u64),
}

impl fmt::Display for TscFrequencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TscFrequencyError::NotMultipleOf25MHz(hz) => {
                write!(f, "TSC frequency {hz} Hz is not a multiple of 25 MHz")
            }
            TscFrequencyError::OutOfRange(hz) => {
                write!(f, "TSC frequency {hz} Hz is outside 100 MHz..=10 GHz")
            }
        }
    }
}

impl core::error::Error for TscFrequencyError {}

/// Converts a TSC frequency in Hz to the TSC_FREQUENCY field (25 MHz units, 4..=400).
pub const fn tsc_frequency_from_hz(hz: u64) -> Result<u16, TscFrequencyError> {
    if hz % TSC_FREQUENCY_UNIT_HZ != 0 {
        return Err(TscFrequencyError::NotMultipleOf25MHz(hz));
    }
    let units = hz / TSC_FREQUENCY_UNIT_HZ;
    if units < TSC_FREQUENCY_MIN as u64 || units > TSC_FREQUENCY_MAX as u64 {
        return Err(TscFrequencyError::OutOfRange(hz));
    }
    Ok(units as u16)
}

/// TD_PARAMS (`td_params_t`, 1024 bytes, 1024-byte aligned): input of TDH.MNG.INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(1024))]
pub struct TdParams {
    /// ATTRIBUTES (§5.14).
    pub attributes: u64,
    /// XFAM (§5.15).
    pub xfam: u64,
    /// MAX_VCPUS.
    pub max_vcpus: u16,
    /// NUM_L2_VMS (1.5; reserved in 1.0).
    pub num_l2_vms: u8,
    /// MSR_CONFIG_CTLS: bit 0 = use IA32_ARCH_CAPABILITIES_CONFIG (1.5).
    pub msr_config_ctls: u8,
    /// Reserved, 0.
    pub reserved_0: [u8; 4],
    /// EPTP_CONTROLS (§5.16).
    pub eptp_controls: u64,
    /// CONFIG_FLAGS / EXEC_CONTROLS (§5.16).
    pub config_flags: u64,
    /// TSC_FREQUENCY in 25 MHz units (4..=400).
    pub tsc_frequency: u16,
    /// Reserved, 0.
    pub reserved_1: [u8; 38],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// IA32_ARCH_CAPABILITIES_CONFIG (1.5; reserved in 1.0).
    pub ia32_arch_capabilities_config: u64,
    /// Reserved, 0.
    pub reserved_2: [u8; 24],
    /// CPUID_VALUES, in the order of the module's CPUID_CONFIG list; entries beyond
    /// NUM_CPUID_CONFIG are reserved and must be 0.
    pub cpuid_values: [CpuidValues; MAX_CPUID_VALUES_IN_TD_PARAMS],
}

impl Default for TdParams {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl TdParams {
    /// ATTRIBUTES as flags (unknown bits kept).
    pub const fn td_attributes(&self) -> TdAttributes {
        TdAttributes::from_bits_retain(self.attributes)
    }

    /// XFAM as flags (unknown bits kept).
    pub const fn td_xfam(&self) -> Xfam {
        Xfam::from_bits_retain(self.xfam)
    }

    /// EPTP_CONTROLS.
    pub const fn eptp(&self) -> EptpControls {
        EptpControls(self.eptp_controls)
    }

    /// CONFIG_FLAGS as flags (unknown bits kept).
    pub const fn td_config_flags(&self) -> ConfigFlags {
        ConfigFlags::from_bits_retain(self.config_flags)
    }

    /// TSC frequency in Hz (TSC_FREQUENCY x 25 MHz).
    pub const fn tsc_frequency_hz(&self) -> u64 {
        self.tsc_frequency as u64 * TSC_FREQUENCY_UNIT_HZ
    }

    /// Byte offset of the first non-zero byte in the fixed reserved fields (`reserved_0`,
    /// `reserved_1`, `reserved_2`), or `None` if they are all zero. CPUID_VALUES entries beyond
    /// NUM_CPUID_CONFIG are checked by [`TdParams::first_nonzero_cpuid_value_beyond`].
    pub fn first_nonzero_reserved(&self) -> Option<usize> {
        let fields: [(usize, &[u8]); 3] = [
            (offset_of!(TdParams, reserved_0), &self.reserved_0),
            (offset_of!(TdParams, reserved_1), &self.reserved_1),
            (offset_of!(TdParams, reserved_2), &self.reserved_2),
        ];
        fields
            .iter()
            .find_map(|(off, bytes)| bytes.iter().position(|b| *b != 0).map(|i| off + i))
    }

    /// Byte offset of the first non-zero byte in CPUID_VALUES entries at index `>= n` (reserved
    /// when the module has `n` configurable leaves), or `None`.
    pub fn first_nonzero_cpuid_value_beyond(&self, n: usize) -> Option<usize> {
        let start = n.min(MAX_CPUID_VALUES_IN_TD_PARAMS);
        let base = offset_of!(TdParams, cpuid_values) + start * size_of::<CpuidValues>();
        IntoBytes::as_bytes(&self.cpuid_values[start..])
            .iter()
            .position(|b| *b != 0)
            .map(|i| base + i)
    }
}

const _: () = {
    assert!(size_of::<CpuidValues>() == 16);
    assert!(offset_of!(CpuidValues, eax) == 0);
    assert!(offset_of!(CpuidValues, ebx) == 4);
    assert!(offset_of!(CpuidValues, ecx) == 8);
    assert!(offset_of!(CpuidValues, edx) == 12);

    assert!(size_of::<CpuidConfig>() == 24);
    assert!(offset_of!(CpuidConfig, leaf) == 0);
    assert!(offset_of!(CpuidConfig, subleaf) == 4);
    assert!(offset_of!(CpuidConfig, eax) == 8);
    assert!(offset_of!(CpuidConfig, ebx) == 12);
    assert!(offset_of!(CpuidConfig, ecx) == 16);
    assert!(offset_of!(CpuidConfig, edx) == 20);

    assert!(size_of::<TdParams>() == 1024);
    assert!(core::mem::align_of::<TdParams>() == 1024);
    assert!(offset_of!(TdParams, attributes) == 0);
    assert!(offset_of!(TdParams, xfam) == 8);
    assert!(offset_of!(TdParams, max_vcpus) == 16);
    assert!(offset_of!(TdParams, num_l2_vms) == 18);
    assert!(offset_of!(TdParams, msr_config_ctls) == 19);
    assert!(offset_of!(TdParams, reserved_0) == 20);
    assert!(offset_of!(TdParams, eptp_controls) == 24);
    assert!(offset_of!(TdParams, config_flags) == 32);
    assert!(offset_of!(TdParams, tsc_frequency) == 40);
    assert!(offset_of!(TdParams, reserved_1) == 42);
    assert!(offset_of!(TdParams, mr_config_id) == 80);
    assert!(offset_of!(TdParams, mr_owner) == 128);
    assert!(offset_of!(TdParams, mr_owner_config) == 176);
    assert!(offset_of!(TdParams, ia32_arch_capabilities_config) == 224);
    assert!(offset_of!(TdParams, reserved_2) == 232);
    assert!(offset_of!(TdParams, cpuid_values) == 256);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_frequency() {
        assert_eq!(tsc_frequency_from_hz(2_500_000_000), Ok(100));
        assert_eq!(tsc_frequency_from_hz(100_000_000), Ok(4));
        assert_eq!(tsc_frequency_from_hz(10_000_000_000), Ok(400));
        assert_eq!(
            tsc_frequency_from_hz(75_000_000),
            Err(TscFrequencyError::OutOfRange(75_000_000))
        );
        assert_eq!(
            tsc_frequency_from_hz(10_025_000_000),
            Err(TscFrequencyError::OutOfRange(10_025_000_000))
        );
        assert_eq!(
            tsc_frequency_from_hz(2_100_000_001),
            Err(TscFrequencyError::NotMultipleOf25MHz(2_100_000_001))
        );
        let p = TdParams {
            tsc_frequency: 100,
            ..Default::default()
        };
        assert_eq!(p.tsc_frequency_hz(), 2_500_000_000);
    }

    #[test]
    fn cpuid_leaf_subleaf_encoding() {
        assert_eq!(CpuidLeafSubleaf::leaf(1).encode(), 0xFFFF_FFFF_0000_0001);
        assert_eq!(
            CpuidLeafSubleaf::with_subleaf(7, 1).encode(),
            0x0000_0001_0000_0007
        );
        assert_eq!(
            CpuidLeafSubleaf::decode(0xFFFF_FFFF_8000_0008),
            CpuidLeafSubleaf::leaf(0x8000_0008)
        );
        assert_eq!(
            CpuidLeafSubleaf::decode(0x0000_0003_0000_0004),
            CpuidLeafSubleaf::with_subleaf(4, 3)
        );
        for l in CPUID_CONFIG_LEAVES_1_5_01 {
            assert_eq!(CpuidLeafSubleaf::decode(l.encode()), l);
        }
        assert_eq!(
            CPUID_CONFIG_LEAVES_1_5_01[11],
            CpuidLeafSubleaf::with_subleaf(0x23, 0)
        );
        let c = CpuidConfig {
            leaf: 0xA,
            subleaf: 0xFFFF_FFFF,
            ..Default::default()
        };
        assert_eq!(c.leaf_subleaf(), CpuidLeafSubleaf::leaf(0xA));
    }

    #[test]
    fn typed_getters_and_reserved_check() {
        let mut p = TdParams {
            attributes: 1 << 28,
            xfam: 0x3,
            eptp_controls: 0x1E,
            config_flags: 1,
            ..Default::default()
        };
        assert_eq!(p.td_attributes(), TdAttributes::SEPT_VE_DISABLE);
        assert_eq!(p.td_xfam(), Xfam::X87 | Xfam::SSE);
        assert_eq!(p.eptp().page_walk_levels(), 4);
        assert_eq!(p.td_config_flags(), ConfigFlags::GPAW);
        assert_eq!(p.first_nonzero_reserved(), None);
        p.reserved_1[5] = 1;
        assert_eq!(p.first_nonzero_reserved(), Some(47));
        p.reserved_0[3] = 1;
        assert_eq!(p.first_nonzero_reserved(), Some(23));
        p.reserved_0 = [0; 4];
        p.reserved_1 = [0; 38];
        p.reserved_2[23] = 9;
        assert_eq!(p.first_nonzero_reserved(), Some(255));
        p.cpuid_values[12].ecx = 1;
        assert_eq!(
            p.first_nonzero_cpuid_value_beyond(12),
            Some(256 + 12 * 16 + 8)
        );
        assert_eq!(p.first_nonzero_cpuid_value_beyond(13), None);
        assert_eq!(p.first_nonzero_cpuid_value_beyond(1000), None);
    }
}
