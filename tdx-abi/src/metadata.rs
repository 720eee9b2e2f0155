//! Metadata field identifiers (§5.10), the field IDs a host needs (§5.11, §5.11b), and the
//! TDH.SYS.RDALL list format.
//!
//! A field ID is used with TDH.SYS.RD/RDALL, TDH.MNG.RD/WR, TDH.VP.RD/WR and the guest's
//! TDG.*.RD/WR. For single-element access the module ignores ELEMENT_SIZE_CODE, INC_SIZE,
//! WRITE_MASK_VALID and CONTEXT_CODE; the constants here nevertheless carry the full IDs of
//! the module's field tables.
//!
//! ## Metadata list format (TDH.SYS.RDALL output)
//! Checked against the module's `md_dump_list`/`md_dump_sequence`/`md_write_sequence`
//! (`metadata_generic.c`, 1.5 source):
//! * an 8-byte list header {u16 list size in bytes **including** the header, u16 number of
//!   sequences, u32 reserved};
//! * per sequence, a u64 sequence header (a field ID whose LAST_ELEMENT_IN_FIELD and
//!   LAST_FIELD_IN_SEQUENCE give the shape, CONTEXT_CODE the context, WRITE_MASK_VALID 0 in
//!   read lists), followed by `(LAST_FIELD_IN_SEQUENCE + 1) * (LAST_ELEMENT_IN_FIELD + 1)`
//!   elements, **each in a full u64 slot** whatever the element size code says;
//! * element `k` of a sequence has field code `FIELD_CODE + k * (INC_SIZE + 1)` (the fields of
//!   a sequence are consecutive in the module's tables, so the stride runs across fields);
//! * in write lists (TDH.MNG.WR-style imports) a sequence with WRITE_MASK_VALID carries one
//!   extra u64 write mask before each field's elements; this crate writes read lists only.
//!
//! The parser never reads outside the buffer.

use core::fmt;

use crate::open_enum::open_enum;

/// Size of a metadata element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementSize {
    /// Code 0: 1 byte.
    B1,
    /// Code 1: 2 bytes.
    B2,
    /// Code 2: 4 bytes.
    B4,
    /// Code 3: 8 bytes.
    B8,
}

impl ElementSize {
    /// From the 2-bit ELEMENT_SIZE_CODE (higher bits ignored).
    pub const fn from_code(code: u64) -> Self {
        match code & 3 {
            0 => ElementSize::B1,
            1 => ElementSize::B2,
            2 => ElementSize::B4,
            _ => ElementSize::B8,
        }
    }

    /// The 2-bit code.
    pub const fn code(self) -> u64 {
        match self {
            ElementSize::B1 => 0,
            ElementSize::B2 => 1,
            ElementSize::B4 => 2,
            ElementSize::B8 => 3,
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> usize {
        1 << self.code()
    }

    /// Mask of the value bits an element of this size holds.
    pub const fn value_mask(self) -> u64 {
        match self {
            ElementSize::B8 => u64::MAX,
            _ => (1u64 << (8 * self.bytes())) - 1,
        }
    }
}

open_enum! {
    /// CONTEXT_CODE of a field ID (bits 54:52).
    pub struct MetadataContext(u8);
    /// 0: platform (global, TDH.SYS.RD).
    PLATFORM = 0,
    /// 1: TD scope (TDR/TDCS).
    TD = 1,
    /// 2: vCPU scope (TDVPS).
    VCPU = 2,
}

/// A metadata field identifier (`md_field_id_t`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct MetadataFieldId(u64);

/// All-ones ID: as input, "the first field"; as a returned next ID, "no more fields".
pub const FIRST_FIELD: MetadataFieldId = MetadataFieldId(u64::MAX);
/// All-ones ID returned as the next field when the enumeration is done.
pub const NO_MORE_FIELDS: MetadataFieldId = MetadataFieldId(u64::MAX);

impl MetadataFieldId {
    /// FIELD_CODE mask (bits 23:0).
    pub const FIELD_CODE_MASK: u64 = 0xFF_FFFF;
    /// Reserved bits that must be 0: 31:24, 49:47, 55, 62.
    pub const RESERVED_MASK: u64 = (0xFF << 24) | (0x7 << 47) | (1 << 55) | (1 << 62);
    const SIZE_SHIFT: u32 = 32;
    const LAST_ELEM_SHIFT: u32 = 34;
    const LAST_FIELD_SHIFT: u32 = 38;
    const INC_SIZE_BIT: u64 = 1 << 50;
    const WRITE_MASK_VALID_BIT: u64 = 1 << 51;
    const CONTEXT_SHIFT: u32 = 52;
    const CLASS_SHIFT: u32 = 56;
    const NON_ARCH_BIT: u64 = 1 << 63;

    /// Wraps a raw ID.
    pub const fn from_raw(raw: u64) -> Self {
        MetadataFieldId(raw)
    }

    /// The raw ID.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Builds a single-element ID (other bitfields 0); inputs are truncated to their widths.
    pub const fn new(
        non_arch: bool,
        class_code: u8,
        context: MetadataContext,
        element_size: ElementSize,
        field_code: u32,
    ) -> Self {
        MetadataFieldId(0)
            .with_non_arch(non_arch)
            .with_class_code(class_code)
            .with_context(context)
            .with_element_size(element_size)
            .with_field_code(field_code)
    }

    const fn with_bits(self, shift: u32, width: u32, v: u64) -> Self {
        let mask = ((1u64 << width) - 1) << shift;
        MetadataFieldId((self.0 & !mask) | ((v << shift) & mask))
    }

    const fn bits(self, shift: u32, width: u32) -> u64 {
        (self.0 >> shift) & ((1u64 << width) - 1)
    }

    /// FIELD_CODE (bits 23:0).
    pub const fn field_code(self) -> u32 {
        (self.0 & Self::FIELD_CODE_MASK) as u32
    }

    /// With FIELD_CODE replaced (truncated to 24 bits).
    pub const fn with_field_code(self, code: u32) -> Self {
        self.with_bits(0, 24, code as u64)
    }

    /// ELEMENT_SIZE_CODE (bits 33:32).
    pub const fn element_size(self) -> ElementSize {
        ElementSize::from_code(self.bits(Self::SIZE_SHIFT, 2))
    }

    /// With ELEMENT_SIZE_CODE replaced.
    pub const fn with_element_size(self, size: ElementSize) -> Self {
        self.with_bits(Self::SIZE_SHIFT, 2, size.code())
    }

    /// Bytes per element.
    pub const fn element_bytes(self) -> usize {
        self.element_size().bytes()
    }

    /// LAST_ELEMENT_IN_FIELD (bits 37:34).
    pub const fn last_element_in_field(self) -> u8 {
        self.bits(Self::LAST_ELEM_SHIFT, 4) as u8
    }

    /// With LAST_ELEMENT_IN_FIELD replaced (truncated to 4 bits).
    pub const fn with_last_element_in_field(self, v: u8) -> Self {
        self.with_bits(Self::LAST_ELEM_SHIFT, 4, v as u64)
    }

    /// LAST_FIELD_IN_SEQUENCE (bits 46:38).
    pub const fn last_field_in_sequence(self) -> u16 {
        self.bits(Self::LAST_FIELD_SHIFT, 9) as u16
    }

    /// With LAST_FIELD_IN_SEQUENCE replaced (truncated to 9 bits).
    pub const fn with_last_field_in_sequence(self, v: u16) -> Self {
        self.with_bits(Self::LAST_FIELD_SHIFT, 9, v as u64)
    }

    /// INC_SIZE (bit 50).
    pub const fn inc_size(self) -> bool {
        self.0 & Self::INC_SIZE_BIT != 0
    }

    /// With INC_SIZE replaced.
    pub const fn with_inc_size(self, v: bool) -> Self {
        self.with_bits(50, 1, v as u64)
    }

    /// WRITE_MASK_VALID (bit 51).
    pub const fn write_mask_valid(self) -> bool {
        self.0 & Self::WRITE_MASK_VALID_BIT != 0
    }

    /// With WRITE_MASK_VALID replaced.
    pub const fn with_write_mask_valid(self, v: bool) -> Self {
        self.with_bits(51, 1, v as u64)
    }

    /// CONTEXT_CODE (bits 54:52).
    pub const fn context(self) -> MetadataContext {
        MetadataContext(self.bits(Self::CONTEXT_SHIFT, 3) as u8)
    }

    /// With CONTEXT_CODE replaced (truncated to 3 bits).
    pub const fn with_context(self, c: MetadataContext) -> Self {
        self.with_bits(Self::CONTEXT_SHIFT, 3, c.0 as u64)
    }

    /// CLASS_CODE (bits 61:56).
    pub const fn class_code(self) -> u8 {
        self.bits(Self::CLASS_SHIFT, 6) as u8
    }

    /// With CLASS_CODE replaced (truncated to 6 bits).
    pub const fn with_class_code(self, class: u8) -> Self {
        self.with_bits(Self::CLASS_SHIFT, 6, class as u64)
    }

    /// NON_ARCH (bit 63).
    pub const fn non_arch(self) -> bool {
        self.0 & Self::NON_ARCH_BIT != 0
    }

    /// With NON_ARCH replaced.
    pub const fn with_non_arch(self, v: bool) -> Self {
        self.with_bits(63, 1, v as u64)
    }

    /// Whether any reserved bit (31:24, 49:47, 55, 62) is set.
    pub const fn has_reserved_bits(self) -> bool {
        self.0 & Self::RESERVED_MASK != 0
    }

    /// Whether the ID is usable for a single-element read/write: reserved bits 0 and
    /// LAST_ELEMENT_IN_FIELD = LAST_FIELD_IN_SEQUENCE = 0.
    pub const fn is_valid_single_element(self) -> bool {
        !self.has_reserved_bits()
            && self.last_element_in_field() == 0
            && self.last_field_in_sequence() == 0
    }

    /// Number of elements a sequence header with this ID describes:
    /// `(LAST_FIELD_IN_SEQUENCE + 1) * (LAST_ELEMENT_IN_FIELD + 1)` (at most 8192).
    pub const fn sequence_elements(self) -> usize {
        (self.last_field_in_sequence() as usize + 1) * (self.last_element_in_field() as usize + 1)
    }

    /// The ID of element `k` counted from this one: FIELD_CODE + `k` × (INC_SIZE + 1), or
    /// `None` if it overflows 24 bits.
    pub const fn element(self, k: u32) -> Option<Self> {
        let stride = if self.inc_size() { 2 } else { 1 };
        let Some(step) = k.checked_mul(stride) else {
            return None;
        };
        match self.field_code().checked_add(step) {
            Some(c) if c as u64 <= Self::FIELD_CODE_MASK => Some(self.with_field_code(c)),
            _ => None,
        }
    }
}

impl fmt::Debug for MetadataFieldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetadataFieldId({:#018x})", self.0)
    }
}

impl fmt::Display for MetadataFieldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

const fn id(raw: u64) -> MetadataFieldId {
    MetadataFieldId(raw)
}

const fn indexed(base: u64, i: usize, count: usize) -> Option<MetadataFieldId> {
    if i < count {
        Some(MetadataFieldId(base + i as u64))
    } else {
        None
    }
}

/// Global (platform-scope) fields read with TDH.SYS.RD / RDALL (§5.11).
pub mod sys {
    use super::{id, indexed, MetadataFieldId};

    /// VENDOR_ID (u32, 0x8086).
    pub const VENDOR_ID: MetadataFieldId = id(0x0800_0002_0000_0000);
    /// BUILD_DATE (u32).
    pub const BUILD_DATE: MetadataFieldId = id(0x8800_0002_0000_0001);
    /// BUILD_NUM (u16).
    pub const BUILD_NUM: MetadataFieldId = id(0x8800_0001_0000_0002);
    /// MINOR_VERSION (u16).
    pub const MINOR_VERSION: MetadataFieldId = id(0x0800_0001_0000_0003);
    /// MAJOR_VERSION (u16).
    pub const MAJOR_VERSION: MetadataFieldId = id(0x0800_0001_0000_0004);
    /// UPDATE_VERSION (u16).
    pub const UPDATE_VERSION: MetadataFieldId = id(0x0800_0001_0000_0005);
    /// INTERNAL_VERSION (u16).
    pub const INTERNAL_VERSION: MetadataFieldId = id(0x0800_0001_0000_0006);
    /// NUM_PKGS (u32).
    pub const NUM_PKGS: MetadataFieldId = id(0x0000_0002_0000_0000);
    /// `PKG_FMS[0]` (u32); see [`pkg_fms`].
    pub const PKG_FMS: MetadataFieldId = id(0x0000_0002_0000_0001);
    /// SYS_ATTRIBUTES (u32).
    pub const SYS_ATTRIBUTES: MetadataFieldId = id(0x0A00_0002_0000_0000);
    /// NUM_TDX_FEATURES (u8).
    pub const NUM_TDX_FEATURES: MetadataFieldId = id(0x0A00_0000_0000_0001);
    /// TDX_FEATURES0 (u64, see [`crate::attributes::TdxFeatures0`]).
    pub const TDX_FEATURES0: MetadataFieldId = id(0x0A00_0003_0000_0008);
    /// NUM_CMRS (u16).
    pub const NUM_CMRS: MetadataFieldId = id(0x9000_0001_0000_0000);
    /// `CMR_BASE[0]` (u64); see [`cmr_base`].
    pub const CMR_BASE: MetadataFieldId = id(0x9000_0003_0000_0080);
    /// `CMR_SIZE[0]` (u64); see [`cmr_size`].
    pub const CMR_SIZE: MetadataFieldId = id(0x9000_0003_0000_0100);
    /// MAX_TDMRS (u16).
    pub const MAX_TDMRS: MetadataFieldId = id(0x9100_0001_0000_0008);
    /// MAX_RESERVED_PER_TDMR (u16).
    pub const MAX_RESERVED_PER_TDMR: MetadataFieldId = id(0x9100_0001_0000_0009);
    /// PAMT_4K_ENTRY_SIZE (u16).
    pub const PAMT_4K_ENTRY_SIZE: MetadataFieldId = id(0x9100_0001_0000_0010);
    /// PAMT_2M_ENTRY_SIZE (u16).
    pub const PAMT_2M_ENTRY_SIZE: MetadataFieldId = id(0x9100_0001_0000_0011);
    /// PAMT_1G_ENTRY_SIZE (u16).
    pub const PAMT_1G_ENTRY_SIZE: MetadataFieldId = id(0x9100_0001_0000_0012);
    /// TDR_BASE_SIZE (bytes).
    pub const TDR_BASE_SIZE: MetadataFieldId = id(0x9800_0001_0000_0000);
    /// TDCS_BASE_SIZE (bytes).
    pub const TDCS_BASE_SIZE: MetadataFieldId = id(0x9800_0001_0000_0100);
    /// TDCS_SIZE_PER_L2_VM (bytes).
    pub const TDCS_SIZE_PER_L2_VM: MetadataFieldId = id(0x9800_0001_0000_0101);
    /// TDVPS_BASE_SIZE (bytes).
    pub const TDVPS_BASE_SIZE: MetadataFieldId = id(0x9800_0001_0000_0200);
    /// TDVPS_SIZE_PER_L2_VM (bytes).
    pub const TDVPS_SIZE_PER_L2_VM: MetadataFieldId = id(0x9800_0001_0000_0201);
    /// ATTRIBUTES_FIXED0 (u64).
    pub const ATTRIBUTES_FIXED0: MetadataFieldId = id(0x1900_0003_0000_0000);
    /// ATTRIBUTES_FIXED1 (u64).
    pub const ATTRIBUTES_FIXED1: MetadataFieldId = id(0x1900_0003_0000_0001);
    /// XFAM_FIXED0 (u64).
    pub const XFAM_FIXED0: MetadataFieldId = id(0x1900_0003_0000_0002);
    /// XFAM_FIXED1 (u64).
    pub const XFAM_FIXED1: MetadataFieldId = id(0x1900_0003_0000_0003);
    /// NUM_CPUID_CONFIG (u16).
    pub const NUM_CPUID_CONFIG: MetadataFieldId = id(0x9900_0001_0000_0004);
    /// CONFIG_FLAGS_FIXED0 (u64).
    pub const CONFIG_FLAGS_FIXED0: MetadataFieldId = id(0x9900_0003_0000_0006);
    /// CONFIG_FLAGS_FIXED1 (u64).
    pub const CONFIG_FLAGS_FIXED1: MetadataFieldId = id(0x9900_0003_0000_0007);
    /// MAX_VCPUS_PER_TD (u16; read by Linux, not in the 1.5.01 table).
    pub const MAX_VCPUS_PER_TD: MetadataFieldId = id(0x9900_0001_0000_0008);
    /// `CPUID_CONFIG_LEAVES[0]` (u64); see [`cpuid_config_leaves`].
    pub const CPUID_CONFIG_LEAVES: MetadataFieldId = id(0x9900_0003_0000_0400);
    /// `CPUID_CONFIG_VALUES[0][0]` (u64); see [`cpuid_config_values`].
    pub const CPUID_CONFIG_VALUES: MetadataFieldId = id(0x9900_0003_0000_0500);
    /// IA32_ARCH_CAPABILITIES_CONFIG_MASK (u64).
    pub const IA32_ARCH_CAPABILITIES_CONFIG_MASK: MetadataFieldId = id(0x9900_0003_0000_0600);
    /// MAX_SERV_TDS (u16).
    pub const MAX_SERV_TDS: MetadataFieldId = id(0xA100_0001_0000_0000);

    /// Number of PKG_FMS entries.
    pub const MAX_PKGS: usize = 8;
    /// Number of CMR_BASE / CMR_SIZE entries.
    pub const MAX_CMRS: usize = 32;
    /// Room for CPUID_CONFIG_LEAVES entries before the VALUES field codes (0x400..0x500).
    pub const MAX_CPUID_CONFIG_LEAVES: usize = 0x100;
    /// Room for CPUID_CONFIG_VALUES entries (two elements each, 0x500..0x600).
    pub const MAX_CPUID_CONFIG_VALUES: usize = 0x80;

    /// `PKG_FMS[i]`, `i < 8`.
    pub const fn pkg_fms(i: usize) -> Option<MetadataFieldId> {
        indexed(PKG_FMS.raw(), i, MAX_PKGS)
    }

    /// `CMR_BASE[i]`, `i < 32`.
    pub const fn cmr_base(i: usize) -> Option<MetadataFieldId> {
        indexed(CMR_BASE.raw(), i, MAX_CMRS)
    }

    /// `CMR_SIZE[i]`, `i < 32`.
    pub const fn cmr_size(i: usize) -> Option<MetadataFieldId> {
        indexed(CMR_SIZE.raw(), i, MAX_CMRS)
    }

    /// `CPUID_CONFIG_LEAVES[i]` (LEAF in 31:0, SUBLEAF in 63:32; see
    /// [`crate::td_params::CpuidLeafSubleaf`]).
    pub const fn cpuid_config_leaves(i: usize) -> Option<MetadataFieldId> {
        indexed(CPUID_CONFIG_LEAVES.raw(), i, MAX_CPUID_CONFIG_LEAVES)
    }

    /// `CPUID_CONFIG_VALUES[i][j]`: j = 0 is EAX (31:0) + EBX (63:32), j = 1 is ECX + EDX.
    pub const fn cpuid_config_values(i: usize, j: usize) -> Option<MetadataFieldId> {
        if j > 1 {
            return None;
        }
        indexed(
            CPUID_CONFIG_VALUES.raw() + j as u64,
            2 * i,
            2 * MAX_CPUID_CONFIG_VALUES,
        )
    }
}

/// TD-scope fields read with TDH.MNG.RD / written with TDH.MNG.WR (§5.11b).
pub mod td {
    use super::{id, indexed, MetadataFieldId};

    /// TDR NUM_TDCX (u32).
    pub const NUM_TDCX: MetadataFieldId = id(0x8010_0002_0000_0002);
    /// TDR CHLDCNT (u64).
    pub const CHLDCNT: MetadataFieldId = id(0x8010_0003_0000_0004);
    /// TDR LIFECYCLE_STATE (u32, see [`crate::state::TdLifecycleState`]).
    pub const LIFECYCLE_STATE: MetadataFieldId = id(0x8010_0002_0000_0005);
    /// TDR HKID (u16).
    pub const HKID: MetadataFieldId = id(0x8110_0001_0000_0001);
    /// TDCS NUM_VCPUS (u32).
    pub const NUM_VCPUS: MetadataFieldId = id(0x9010_0002_0000_0001);
    /// TDCS NUM_ASSOC_VCPUS (u32).
    pub const NUM_ASSOC_VCPUS: MetadataFieldId = id(0x9010_0002_0000_0002);
    /// TDCS OP_STATE (u32, see [`crate::state::OpState`]).
    pub const OP_STATE: MetadataFieldId = id(0x9010_0002_0000_0004);
    /// ATTRIBUTES (u64).
    pub const ATTRIBUTES: MetadataFieldId = id(0x1110_0003_0000_0000);
    /// XFAM (u64).
    pub const XFAM: MetadataFieldId = id(0x1110_0003_0000_0001);
    /// MAX_VCPUS (u32).
    pub const MAX_VCPUS: MetadataFieldId = id(0x1110_0002_0000_0002);
    /// GPAW (u8).
    pub const GPAW: MetadataFieldId = id(0x1110_0000_0000_0003);
    /// EPTP.
    pub const EPTP: MetadataFieldId = id(0x1110_0003_0000_0004);
    /// TSC_OFFSET.
    pub const TSC_OFFSET: MetadataFieldId = id(0x1110_0003_0000_000A);
    /// TSC_MULTIPLIER.
    pub const TSC_MULTIPLIER: MetadataFieldId = id(0x1110_0003_0000_000B);
    /// TSC_FREQUENCY (u16, 25 MHz units).
    pub const TSC_FREQUENCY: MetadataFieldId = id(0x1110_0001_0000_000C);
    /// NOTIFY_ENABLES (see [`crate::attributes::NotifyEnables`]).
    pub const NOTIFY_ENABLES: MetadataFieldId = id(0x9110_0003_0000_0010);
    /// CONFIG_FLAGS (see [`crate::attributes::ConfigFlags`]).
    pub const CONFIG_FLAGS: MetadataFieldId = id(0x9110_0003_0000_0016);
    /// TD_CTLS (see [`crate::attributes::TdCtls`]).
    pub const TD_CTLS: MetadataFieldId = id(0x9110_0003_0000_0017);
    /// TD_EPOCH.
    pub const TD_EPOCH: MetadataFieldId = id(0x9210_0003_0000_0000);
    /// MRTD element 0 (48 bytes = 6 u64 elements at field codes +0..+5).
    pub const MRTD: MetadataFieldId = id(0x1310_0003_0000_0000);
    /// MRCONFIGID element 0.
    pub const MRCONFIGID: MetadataFieldId = id(0x1310_0003_0000_0010);
    /// MROWNER element 0.
    pub const MROWNER: MetadataFieldId = id(0x1310_0003_0000_0018);
    /// MROWNERCONFIG element 0.
    pub const MROWNERCONFIG: MetadataFieldId = id(0x1310_0003_0000_0020);
    /// RTMR0 element 0.
    pub const RTMR: MetadataFieldId = id(0x1310_0003_0000_0040);
    /// Base of the TD-scope CPUID_VALUES fields; see [`cpuid_values`].
    pub const CPUID_VALUES: MetadataFieldId = id(0x9410_0003_0000_0000);

    /// RTMR`i` element 0, `i < 4`: the four registers are consecutive 6-element fields
    /// (field code 0x40 + 6·i; checked against the module's TDCS field table,
    /// `tdr_tdcs_fields_lookup.c` of the 1.5 source).
    pub const fn rtmr(i: usize) -> Option<MetadataFieldId> {
        if i < 4 {
            Some(id(RTMR.raw() + 6 * i as u64))
        } else {
            None
        }
    }

    /// Element `k` (< 6) of a 48-byte measurement field such as [`MRTD`].
    pub const fn measurement_element(field: MetadataFieldId, k: usize) -> Option<MetadataFieldId> {
        indexed(field.raw(), k, 6)
    }

    /// The TD-scope CPUID_VALUES field of `leaf`/`subleaf`, `element` 0 = EAX (31:0) + EBX
    /// (63:32), 1 = ECX + EDX. Field code: bit 0 element, bits 7:1 subleaf, bit 8 subleaf N/A,
    /// bits 15:9 leaf bits 6:0, bit 16 leaf bit 31. `None` if the leaf is not in 0..=0x7F or
    /// 0x80000000..=0x8000007F, the subleaf is above 0x7F, or `element > 1`.
    pub const fn cpuid_values(
        leaf: u32,
        subleaf: Option<u32>,
        element: u32,
    ) -> Option<MetadataFieldId> {
        if element > 1 || leaf & 0x7FFF_FF80 != 0 {
            return None;
        }
        let sub = match subleaf {
            Some(s) if s <= 0x7F => (s as u64) << 1,
            Some(_) => return None,
            None => 1 << 8,
        };
        let code =
            element as u64 | sub | (((leaf & 0x7F) as u64) << 9) | (((leaf >> 31) as u64) << 16);
        Some(id(CPUID_VALUES.raw() | code))
    }
}

/// vCPU-scope fields read with TDH.VP.RD / written with TDH.VP.WR (§5.7, §5.11b).
pub mod vp {
    use super::{id, indexed, MetadataFieldId};

    /// VE_INFO.EXIT_REASON (u32).
    pub const VE_INFO_EXIT_REASON: MetadataFieldId = id(0x0220_0002_0000_0000);
    /// VE_INFO.VALID (u32).
    pub const VE_INFO_VALID: MetadataFieldId = id(0x0220_0002_0000_0001);
    /// VE_INFO.EXIT_QUALIFICATION (u64; size code from the field width).
    pub const VE_INFO_EXIT_QUALIFICATION: MetadataFieldId = id(0x0220_0003_0000_0002);
    /// VE_INFO.GLA (u64; size code from the field width).
    pub const VE_INFO_GLA: MetadataFieldId = id(0x0220_0003_0000_0003);
    /// VE_INFO.GPA (u64; size code from the field width).
    pub const VE_INFO_GPA: MetadataFieldId = id(0x0220_0003_0000_0004);
    /// VE_INFO.EPTP_INDEX (u16; size code from the field width).
    pub const VE_INFO_EPTP_INDEX: MetadataFieldId = id(0x0220_0001_0000_0005);
    /// Guest RAX (GPR 0); see [`gpr`].
    pub const GPR_BASE: MetadataFieldId = id(0x1020_0003_0000_0000);
    /// Guest XCR0.
    pub const XCR0: MetadataFieldId = id(0x1120_0003_0000_0020);
    /// VCPU_STATE_DETAILS (bit 0 = virtual interrupt pending).
    pub const VCPU_STATE_DETAILS: MetadataFieldId = id(0x9120_0003_0000_0100);
    /// PEND_NMI (u8).
    pub const PEND_NMI: MetadataFieldId = id(0x2020_0000_0000_000B);
    /// VCPU_STATE (u8, see [`crate::state::VcpuState`]).
    pub const VCPU_STATE: MetadataFieldId = id(0xA020_0000_0000_0000);
    /// VCPU_INDEX (u32).
    pub const VCPU_INDEX: MetadataFieldId = id(0xA020_0002_0000_0002);

    /// Guest GPR `n` (0 = RAX .. 15 = R15, in the x86 register numbering).
    pub const fn gpr(n: usize) -> Option<MetadataFieldId> {
        indexed(GPR_BASE.raw(), n, 16)
    }

    /// A TD VMCS field (class 0, context VCPU, 8-byte elements) by its VMCS encoding.
    pub const fn vmcs(encoding: u32) -> MetadataFieldId {
        id((2 << 52) | (3 << 32) | (encoding as u64 & 0xFF_FFFF))
    }
}

/// Values of module 1.5.01 for the global fields (§5.11, §5.17). Read the module's values at
/// run time; these are for tests, emulation and sanity checks.
pub mod values_1_5_01 {
    /// VENDOR_ID.
    pub const VENDOR_ID: u32 = 0x8086;
    /// NUM_TDX_FEATURES.
    pub const NUM_TDX_FEATURES: u8 = 1;
    /// MAX_TDMRS.
    pub const MAX_TDMRS: u16 = 64;
    /// MAX_RESERVED_PER_TDMR.
    pub const MAX_RESERVED_PER_TDMR: u16 = 16;
    /// PAMT_4K_ENTRY_SIZE.
    pub const PAMT_4K_ENTRY_SIZE: u16 = 16;
    /// PAMT_2M_ENTRY_SIZE.
    pub const PAMT_2M_ENTRY_SIZE: u16 = 16;
    /// PAMT_1G_ENTRY_SIZE.
    pub const PAMT_1G_ENTRY_SIZE: u16 = 16;
    /// TDR_BASE_SIZE (1 page).
    pub const TDR_BASE_SIZE: u64 = 4096;
    /// TDCS_BASE_SIZE (6 pages; 4 in 1.0).
    pub const TDCS_BASE_SIZE: u64 = 6 * 4096;
    /// TDCS_SIZE_PER_L2_VM.
    pub const TDCS_SIZE_PER_L2_VM: u64 = 4096;
    /// TDVPS_BASE_SIZE (6 pages).
    pub const TDVPS_BASE_SIZE: u64 = 6 * 4096;
    /// TDVPS_SIZE_PER_L2_VM.
    pub const TDVPS_SIZE_PER_L2_VM: u64 = 3 * 4096;
    /// ATTRIBUTES_FIXED0.
    pub const ATTRIBUTES_FIXED0: u64 = crate::attributes::ATTRIBUTES_FIXED0;
    /// ATTRIBUTES_FIXED1.
    pub const ATTRIBUTES_FIXED1: u64 = crate::attributes::ATTRIBUTES_FIXED1;
    /// XFAM_FIXED0 (before masking with CPU support).
    pub const XFAM_FIXED0: u64 = crate::attributes::XFAM_FIXED0;
    /// XFAM_FIXED1.
    pub const XFAM_FIXED1: u64 = crate::attributes::XFAM_FIXED1;
    /// CONFIG_FLAGS_FIXED0.
    pub const CONFIG_FLAGS_FIXED0: u64 = crate::attributes::CONFIG_FLAGS_FIXED0;
    /// CONFIG_FLAGS_FIXED1.
    pub const CONFIG_FLAGS_FIXED1: u64 = crate::attributes::CONFIG_FLAGS_FIXED1;
    /// NUM_CPUID_CONFIG of the 1.5.01 build.
    pub const NUM_CPUID_CONFIG: u16 = 12;
}

/// Size of the SYS.RDALL list header.
pub const METADATA_LIST_HEADER_SIZE: usize = 8;

/// A metadata list is malformed, or does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetadataListError {
    /// The buffer cannot hold the 8-byte header.
    BufferTooShort {
        /// Buffer length.
        len: usize,
    },
    /// The header's list size is below 8 or beyond the buffer.
    SizeOutOfBounds {
        /// List size from the header.
        size: u16,
        /// Buffer length.
        len: usize,
    },
    /// A sequence header or element extends past the end of the list.
    Truncated {
        /// Offset where the item starts.
        offset: usize,
        /// Bytes the item needs.
        needed: usize,
        /// Bytes left in the list.
        available: usize,
    },
    /// A sequence header has reserved bits set.
    InvalidFieldId {
        /// Offset of the sequence header.
        offset: usize,
        /// The header value.
        id: u64,
    },
    /// FIELD_CODE + element index overflows 24 bits.
    FieldCodeOverflow {
        /// Offset of the sequence header.
        offset: usize,
        /// The header value.
        id: u64,
    },
    /// The writer's buffer is full.
    BufferFull {
        /// Bytes the push needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A push had 0 or more than 512 elements.
    BadElementCount {
        /// Elements pushed.
        count: usize,
    },
    /// A value does not fit the field's element size.
    ValueTooWide {
        /// The value.
        value: u64,
        /// Element size in bytes.
        element_bytes: usize,
    },
    /// The field ID given to the writer is not a valid single-element ID.
    InvalidWriterField {
        /// The ID.
        id: u64,
    },
    /// The writer already holds 65535 sequences.
    TooManySequences,
}

impl fmt::Display for MetadataListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MetadataListError as E;
        match *self {
            E::BufferTooShort { len } => write!(f, "metadata list buffer of {len} bytes has no room for the header"),
            E::SizeOutOfBounds { size, len } => write!(f, "metadata list size {size} is outside 8..={len}"),
            E::Truncated { offset, needed, available } => write!(f, "metadata list truncated at offset {offset}: need {needed} bytes, {available} left"),
            E::InvalidFieldId { offset, id } => write!(f, "metadata sequence at offset {offset} has reserved bits set in field ID {id:#018x}"),
            E::FieldCodeOverflow { offset, id } => write!(f, "metadata sequence at offset {offset} (field ID {id:#018x}) overflows the field code"),
            E::BufferFull { needed, available } => write!(f, "metadata list buffer full: need {needed} bytes, {available} left"),
            E::BadElementCount { count } => write!(f, "metadata sequence of {count} elements (must be 1..=512)"),
            E::ValueTooWide { value, element_bytes } => write!(f, "value {value:#x} does not fit a {element_bytes}-byte element"),
            E::InvalidWriterField { id } => write!(f, "field ID {id:#018x} is not a valid single-element ID"),
            E::TooManySequences => f.write_str("metadata list already has 65535 sequences"),
        }
    }
}

impl core::error::Error for MetadataListError {}

/// A SYS.RDALL metadata list (see the module documentation for the format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataList<'a> {
    /// The list bytes, header included, cut to the header's size.
    bytes: &'a [u8],
    num_sequences: u16,
}

impl<'a> MetadataList<'a> {
    /// Checks the header: the list size must be at least 8 and fit the buffer.
    pub fn parse(buf: &'a [u8]) -> Result<Self, MetadataListError> {
        if buf.len() < METADATA_LIST_HEADER_SIZE {
            return Err(MetadataListError::BufferTooShort { len: buf.len() });
        }
        let size = u16::from_le_bytes([buf[0], buf[1]]);
        let num_sequences = u16::from_le_bytes([buf[2], buf[3]]);
        if (size as usize) < METADATA_LIST_HEADER_SIZE || size as usize > buf.len() {
            return Err(MetadataListError::SizeOutOfBounds {
                size,
                len: buf.len(),
            });
        }
        Ok(MetadataList {
            bytes: &buf[..size as usize],
            num_sequences,
        })
    }

    /// List size in bytes (header included).
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Number of sequences the header announces.
    pub fn num_sequences(&self) -> u16 {
        self.num_sequences
    }

    /// Iterates over every element as (element field ID, value). Stops after the first error.
    pub fn iter(&self) -> MetadataListIter<'a> {
        MetadataListIter {
            bytes: self.bytes,
            offset: METADATA_LIST_HEADER_SIZE,
            sequences_left: self.num_sequences,
            current: None,
            done: false,
        }
    }
}

impl<'a> IntoIterator for &MetadataList<'a> {
    type Item = Result<(MetadataFieldId, u64), MetadataListError>;
    type IntoIter = MetadataListIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Clone, Copy, Debug)]
struct Sequence {
    header: MetadataFieldId,
    header_offset: usize,
    next: usize,
    count: usize,
}

/// Iterator over the elements of a [`MetadataList`].
#[derive(Clone, Debug)]
pub struct MetadataListIter<'a> {
    bytes: &'a [u8],
    offset: usize,
    sequences_left: u16,
    current: Option<Sequence>,
    done: bool,
}

impl MetadataListIter<'_> {
    fn fail(
        &mut self,
        e: MetadataListError,
    ) -> Option<Result<(MetadataFieldId, u64), MetadataListError>> {
        self.done = true;
        Some(Err(e))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], MetadataListError> {
        let available = self.bytes.len() - self.offset;
        if n > available {
            return Err(MetadataListError::Truncated {
                offset: self.offset,
                needed: n,
                available,
            });
        }
        let s = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(s)
    }
}

impl Iterator for MetadataListIter<'_> {
    type Item = Result<(MetadataFieldId, u64), MetadataListError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let seq = match self.current {
            Some(s) if s.next < s.count => s,
            _ => {
                if self.sequences_left == 0 {
                    self.done = true;
                    return None;
                }
                let header_offset = self.offset;
                let raw = match self.take(8) {
                    Ok(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                    Err(e) => return self.fail(e),
                };
                let header = MetadataFieldId(raw);
                if header.has_reserved_bits() {
                    return self.fail(MetadataListError::InvalidFieldId {
                        offset: header_offset,
                        id: raw,
                    });
                }
                self.sequences_left -= 1;
                Sequence {
                    header,
                    header_offset,
                    next: 0,
                    count: header.sequence_elements(),
                }
            }
        };
        // Every element occupies a full u64 slot (md_dump_sequence).
        let value = match self.take(8) {
            Ok(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            Err(e) => return self.fail(e),
        };
        let base = seq
            .header
            .with_last_element_in_field(0)
            .with_last_field_in_sequence(0);
        let Some(id) = base.element(seq.next as u32) else {
            return self.fail(MetadataListError::FieldCodeOverflow {
                offset: seq.header_offset,
                id: seq.header.raw(),
            });
        };
        self.current = Some(Sequence {
            next: seq.next + 1,
            ..seq
        });
        Some(Ok((id, value)))
    }
}

impl core::iter::FusedIterator for MetadataListIter<'_> {}

/// Builds a SYS.RDALL metadata list in a caller buffer (used by emulators and tests).
#[derive(Debug)]
pub struct MetadataListWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    num_sequences: u16,
}

impl<'a> MetadataListWriter<'a> {
    /// Largest list the 16-bit size field can describe.
    pub const MAX_LIST_SIZE: usize = u16::MAX as usize;

    /// Starts an empty list in `buf` (at most [`Self::MAX_LIST_SIZE`] bytes of it are used).
    pub fn new(buf: &'a mut [u8]) -> Self {
        MetadataListWriter {
            buf,
            len: METADATA_LIST_HEADER_SIZE,
            num_sequences: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.buf.len().min(Self::MAX_LIST_SIZE)
    }

    /// Appends one sequence: `values.len()` consecutive single-element fields starting at
    /// `field` (a valid single-element ID), each value in a u64 slot and no wider than
    /// `field`'s element size.
    pub fn push(
        &mut self,
        field: MetadataFieldId,
        values: &[u64],
    ) -> Result<(), MetadataListError> {
        if !field.is_valid_single_element() {
            return Err(MetadataListError::InvalidWriterField { id: field.raw() });
        }
        if values.is_empty() || values.len() > 512 {
            return Err(MetadataListError::BadElementCount {
                count: values.len(),
            });
        }
        if self.num_sequences == u16::MAX {
            return Err(MetadataListError::TooManySequences);
        }
        if field.element(values.len() as u32 - 1).is_none() {
            return Err(MetadataListError::FieldCodeOverflow {
                offset: self.len,
                id: field.raw(),
            });
        }
        let size = field.element_bytes();
        let mask = field.element_size().value_mask();
        if let Some(v) = values.iter().find(|v| **v & !mask != 0) {
            return Err(MetadataListError::ValueTooWide {
                value: *v,
                element_bytes: size,
            });
        }
        let needed = 8 + 8 * values.len();
        let available = self.capacity().saturating_sub(self.len);
        if needed > available {
            return Err(MetadataListError::BufferFull { needed, available });
        }
        let header = field.with_last_field_in_sequence(values.len() as u16 - 1);
        self.buf[self.len..self.len + 8].copy_from_slice(&header.raw().to_le_bytes());
        self.len += 8;
        for v in values {
            self.buf[self.len..self.len + 8].copy_from_slice(&v.to_le_bytes());
            self.len += 8;
        }
        self.num_sequences += 1;
        Ok(())
    }

    /// Writes the header and returns the list size in bytes (0 if the buffer cannot even hold
    /// the header).
    pub fn finish(self) -> usize {
        if self.buf.len() < METADATA_LIST_HEADER_SIZE {
            return 0;
        }
        self.buf[0..2].copy_from_slice(&(self.len as u16).to_le_bytes());
        self.buf[2..4].copy_from_slice(&self.num_sequences.to_le_bytes());
        self.buf[4..8].copy_from_slice(&[0; 4]);
        self.len
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn max_tdmrs_decomposes_and_rebuilds() {
        let m = sys::MAX_TDMRS;
        assert_eq!(m.raw(), 0x9100000100000008);
        assert_eq!(m.class_code(), 0x11);
        assert_eq!(m.context(), MetadataContext::PLATFORM);
        assert_eq!(m.element_size(), ElementSize::B2);
        assert_eq!(m.element_bytes(), 2);
        assert!(m.non_arch());
        assert_eq!(m.field_code(), 8);
        assert!(m.is_valid_single_element());
        let rebuilt =
            MetadataFieldId::new(true, 0x11, MetadataContext::PLATFORM, ElementSize::B2, 8);
        assert_eq!(rebuilt, m);
    }

    #[test]
    fn td_and_vp_ids_decompose() {
        let l = td::LIFECYCLE_STATE;
        assert_eq!(
            (
                l.class_code(),
                l.context(),
                l.element_bytes(),
                l.field_code(),
                l.non_arch()
            ),
            (0, MetadataContext::TD, 4, 5, true)
        );
        let a = td::ATTRIBUTES;
        assert_eq!(
            (a.class_code(), a.context(), a.element_bytes(), a.non_arch()),
            (0x11, MetadataContext::TD, 8, false)
        );
        assert_eq!(
            MetadataFieldId::new(true, 17, MetadataContext::TD, ElementSize::B8, 0x17),
            td::TD_CTLS
        );
        let v = vp::VCPU_STATE;
        assert_eq!(
            (v.class_code(), v.context(), v.element_bytes(), v.non_arch()),
            (0x20, MetadataContext::VCPU, 1, true)
        );
        assert_eq!(vp::gpr(15).unwrap().raw(), 0x102000030000000F);
        assert_eq!(vp::gpr(16), None);
        assert_eq!(vp::VE_INFO_EXIT_REASON.class_code(), 2);
        assert_eq!(vp::vmcs(0x6820).raw(), 0x0020_0003_0000_6820);
        assert!(!MetadataFieldId::from_raw(1 << 62).is_valid_single_element());
        assert!(!MetadataFieldId::from_raw(1 << 40).is_valid_single_element());
        assert_eq!(MetadataFieldId::from_raw(0x3F << 56).class_code(), 0x3F);
    }

    #[test]
    fn indexed_fields() {
        assert_eq!(sys::cmr_base(0).unwrap().raw(), 0x9000000300000080);
        assert_eq!(sys::cmr_base(31).unwrap().raw(), 0x900000030000009F);
        assert_eq!(sys::cmr_base(32), None);
        assert_eq!(sys::cmr_size(3).unwrap().raw(), 0x9000000300000103);
        assert_eq!(
            sys::cpuid_config_leaves(11).unwrap().raw(),
            0x990000030000040B
        );
        assert_eq!(
            sys::cpuid_config_values(3, 1).unwrap().raw(),
            0x9900000300000507
        );
        assert_eq!(sys::cpuid_config_values(0, 2), None);
        assert_eq!(sys::cpuid_config_values(0x80, 0), None);
        assert_eq!(sys::pkg_fms(7).unwrap().raw(), 0x0000_0002_0000_0008);
        assert_eq!(sys::pkg_fms(8), None);
        assert_eq!(td::rtmr(0), Some(td::RTMR));
        assert_eq!(td::rtmr(4), None);
        assert_eq!(
            td::measurement_element(td::MRTD, 5).unwrap().raw(),
            0x1310000300000005
        );
        assert_eq!(td::measurement_element(td::MRTD, 6), None);
    }

    #[test]
    fn td_cpuid_values_field_code() {
        // Leaf 7 subleaf 1 element 1: 1 | (1 << 1) | (7 << 9) = 0xE03.
        assert_eq!(
            td::cpuid_values(7, Some(1), 1).unwrap().raw(),
            0x9410000300000E03
        );
        // Leaf 1, no subleaf, element 0: (1 << 8) | (1 << 9) = 0x300.
        assert_eq!(
            td::cpuid_values(1, None, 0).unwrap().raw(),
            0x9410000300000300
        );
        // Leaf 0x80000008: (8 << 9) | (1 << 16) | (1 << 8) = 0x11100.
        assert_eq!(
            td::cpuid_values(0x8000_0008, None, 0).unwrap().raw(),
            0x9410000300011100
        );
        assert_eq!(td::cpuid_values(0x80, None, 0), None);
        assert_eq!(td::cpuid_values(4, Some(0x80), 0), None);
        assert_eq!(td::cpuid_values(4, Some(0), 2), None);
    }

    fn hand_built() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u16.to_le_bytes()); // size, patched below
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        // MAX_TDMRS..MAX_RESERVED_PER_TDMR: 2 fields of u16 (LAST_FIELD_IN_SEQUENCE = 1).
        b.extend_from_slice(&(0x9100000100000008u64 | (1 << 38)).to_le_bytes());
        // Every element in a u64 slot, whatever its size code.
        b.extend_from_slice(&64u64.to_le_bytes());
        b.extend_from_slice(&16u64.to_le_bytes());
        // ATTRIBUTES_FIXED0, one u64.
        b.extend_from_slice(&0x1900000300000000u64.to_le_bytes());
        b.extend_from_slice(&0x8000_0000_7000_0001u64.to_le_bytes());
        let len = b.len() as u16;
        b[0..2].copy_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn parser_reads_hand_built_list() {
        let b = hand_built();
        assert_eq!(b.len(), 8 + 8 + 16 + 8 + 8);
        let l = MetadataList::parse(&b).unwrap();
        assert_eq!(l.num_sequences(), 2);
        let items: Vec<_> = l.iter().collect();
        assert_eq!(
            items,
            [
                Ok((sys::MAX_TDMRS, 64)),
                Ok((sys::MAX_RESERVED_PER_TDMR, 16)),
                Ok((sys::ATTRIBUTES_FIXED0, 0x8000_0000_7000_0001)),
            ]
        );
    }

    #[test]
    fn parser_rejects_truncated_and_garbage() {
        let b = hand_built();
        assert_eq!(
            MetadataList::parse(&b[..7]),
            Err(MetadataListError::BufferTooShort { len: 7 })
        );
        // Header size larger than the buffer.
        assert_eq!(
            MetadataList::parse(&b[..20]),
            Err(MetadataListError::SizeOutOfBounds { size: 48, len: 20 })
        );
        // Header claims fewer bytes: the second element of the first sequence is cut.
        let mut c = b.clone();
        c[0..2].copy_from_slice(&28u16.to_le_bytes());
        let items: Vec<_> = MetadataList::parse(&c).unwrap().iter().collect();
        assert_eq!(items[0], Ok((sys::MAX_TDMRS, 64)));
        assert_eq!(
            items[1],
            Err(MetadataListError::Truncated {
                offset: 24,
                needed: 8,
                available: 4
            })
        );
        assert_eq!(items.len(), 2);
        // More sequences announced than present.
        let mut d = b.clone();
        d[2..4].copy_from_slice(&3u16.to_le_bytes());
        let last = MetadataList::parse(&d).unwrap().iter().last().unwrap();
        assert_eq!(
            last,
            Err(MetadataListError::Truncated {
                offset: 48,
                needed: 8,
                available: 0
            })
        );
        // Reserved bit 62 in a sequence header.
        let mut e = b.clone();
        e[15] |= 0x40;
        let first = MetadataList::parse(&e).unwrap().iter().next().unwrap();
        assert_eq!(
            first,
            Err(MetadataListError::InvalidFieldId {
                offset: 8,
                id: 0xD100000100000008 | (1 << 38)
            })
        );
        // Field-code overflow.
        let mut g = Vec::new();
        g.extend_from_slice(&32u16.to_le_bytes());
        g.extend_from_slice(&1u16.to_le_bytes());
        g.extend_from_slice(&[0; 4]);
        g.extend_from_slice(&(0x00FF_FFFFu64 | (1 << 38)).to_le_bytes());
        g.extend_from_slice(&1u64.to_le_bytes());
        g.extend_from_slice(&2u64.to_le_bytes());
        let items: Vec<_> = MetadataList::parse(&g).unwrap().iter().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            Err(MetadataListError::FieldCodeOverflow {
                offset: 8,
                id: 0x00FF_FFFF | (1 << 38)
            })
        );
    }

    #[test]
    fn parser_survives_pseudo_random_garbage() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut buf = [0u8; 256];
        for _ in 0..2000 {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let len = (state as usize) % buf.len();
            if let Ok(l) = MetadataList::parse(&buf[..len]) {
                // Bounded: each element consumes at least one byte.
                assert!(l.iter().count() <= len);
            }
        }
    }

    #[test]
    fn writer_parser_round_trip() {
        let mut buf = [0u8; 128];
        let mut w = MetadataListWriter::new(&mut buf);
        w.push(sys::VENDOR_ID, &[0x8086]).unwrap();
        w.push(sys::cmr_base(0).unwrap(), &[0x1000, 0x2000, 0x3000])
            .unwrap();
        w.push(sys::NUM_TDX_FEATURES, &[1]).unwrap();
        assert_eq!(
            w.push(sys::NUM_TDX_FEATURES, &[0x100]),
            Err(MetadataListError::ValueTooWide {
                value: 0x100,
                element_bytes: 1
            })
        );
        assert_eq!(
            w.push(sys::MAX_TDMRS, &[]),
            Err(MetadataListError::BadElementCount { count: 0 })
        );
        let n = w.finish();
        assert_eq!(n, 8 + (8 + 8) + (8 + 24) + (8 + 8));
        let l = MetadataList::parse(&buf[..n]).unwrap();
        let items: Vec<_> = l.iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            items,
            [
                (sys::VENDOR_ID, 0x8086),
                (sys::cmr_base(0).unwrap(), 0x1000),
                (sys::cmr_base(1).unwrap(), 0x2000),
                (sys::cmr_base(2).unwrap(), 0x3000),
                (sys::NUM_TDX_FEATURES, 1),
            ]
        );
        let mut small = [0u8; 28];
        let mut w = MetadataListWriter::new(&mut small);
        w.push(sys::VENDOR_ID, &[1]).unwrap();
        assert_eq!(
            w.push(sys::VENDOR_ID, &[1]),
            Err(MetadataListError::BufferFull {
                needed: 16,
                available: 4
            })
        );
        assert_eq!(w.finish(), 24);
        let mut tiny = [0u8; 4];
        let mut w = MetadataListWriter::new(&mut tiny);
        assert!(matches!(
            w.push(sys::VENDOR_ID, &[1]),
            Err(MetadataListError::BufferFull { .. })
        ));
        assert_eq!(w.finish(), 0);
    }
}
