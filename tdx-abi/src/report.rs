//! TDREPORT_STRUCT and its parts (§5.3-§5.6): REPORTMACSTRUCT, TEE_TCB_INFO and
//! TDINFO_STRUCT, as produced by TDG.MR.REPORT.
//!
//! TEE_TCB_INFO is 239 bytes architecturally (the 1.5 module's C struct declares 256 bytes,
//! the extra 17 being [`TdReport::reserved`]); all parts are byte arrays or naturally aligned
//! integers, so the layouts have no padding. A report read from a guest is untrusted input:
//! [`TdReport::from_bytes`] checks the length and never panics.

use core::fmt;
use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::attributes::{TdAttributes, Xfam};
use crate::measure::{self, Measurement, TDINFO_STRUCT_SIZE, TEE_TCB_INFO_SIZE};

/// Size of TDREPORT_STRUCT.
pub const TD_REPORT_SIZE: usize = 1024;
/// Size of REPORTMACSTRUCT.
pub const REPORT_MAC_STRUCT_SIZE: usize = 256;
/// Size of REPORTDATA, the caller-supplied data bound into the report.
pub const REPORT_DATA_SIZE: usize = 64;

/// REPORTTYPE (4 bytes at the start of REPORTMACSTRUCT).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ReportType {
    /// TYPE: [`ReportType::TYPE_SGX`] or [`ReportType::TYPE_TDX`].
    pub type_: u8,
    /// SUBTYPE (0).
    pub subtype: u8,
    /// VERSION: 0 = no service TD bound, 1 = with service TDs (1.5).
    pub version: u8,
    /// Reserved.
    pub reserved: u8,
}

impl ReportType {
    /// TYPE of an SGX report.
    pub const TYPE_SGX: u8 = 0x00;
    /// TYPE of a TDX report.
    pub const TYPE_TDX: u8 = 0x81;

    /// Whether TYPE is [`ReportType::TYPE_TDX`].
    pub const fn is_tdx(&self) -> bool {
        self.type_ == Self::TYPE_TDX
    }
}

/// REPORTMACSTRUCT (256 bytes): the MAC-protected header of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportMacStruct {
    /// REPORTTYPE.
    pub report_type: ReportType,
    /// Reserved.
    pub reserved_0: [u8; 12],
    /// CPUSVN.
    pub cpusvn: [u8; 16],
    /// TEE_TCB_INFO_HASH: SHA-384 of the 239-byte TEE_TCB_INFO.
    pub tee_tcb_info_hash: [u8; 48],
    /// TEE_INFO_HASH: SHA-384 of TDINFO_STRUCT.
    pub tee_info_hash: [u8; 48],
    /// REPORTDATA supplied by the caller of TDG.MR.REPORT.
    pub report_data: [u8; REPORT_DATA_SIZE],
    /// Reserved.
    pub reserved_1: [u8; 32],
    /// MAC over the first [`ReportMacStruct::MAC_INPUT_LEN`] bytes.
    pub mac: [u8; 32],
}

impl ReportMacStruct {
    /// Number of leading bytes the MAC covers *in this project's emulated module* (everything
    /// before `mac`). UNCONFIRMED for real hardware: the MAC is produced inside the CPU and
    /// the public sources document it only as a model-specific MAC.
    pub const MAC_INPUT_LEN: usize = 224;
}

impl Default for ReportMacStruct {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

/// TEE_TCB_INFO (239 bytes architectural): the TDX module's identity and TCB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TeeTcbInfo {
    /// VALID: bit i set = the 8-byte-granular field starting at offset 8·i is populated.
    pub valid: [u8; 8],
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module.
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM (0 for the Intel module).
    pub mr_signer_seam: [u8; 48],
    /// ATTRIBUTES of the module (0 for the Intel module).
    pub attributes: [u8; 8],
    /// TEE_TCB_SVN2 (1.5).
    pub tee_tcb_svn2: [u8; 16],
    /// Reserved.
    pub reserved: [u8; 95],
}

impl TeeTcbInfo {
    /// The VALID bitmap as a number.
    pub const fn valid_bitmap(&self) -> u64 {
        u64::from_le_bytes(self.valid)
    }

    /// TEE_TCB_INFO_HASH: SHA-384 of the 239 bytes.
    pub fn hash(&self) -> Measurement {
        let mut b = [0u8; TEE_TCB_INFO_SIZE];
        b.copy_from_slice(IntoBytes::as_bytes(self));
        measure::tee_tcb_info_hash(&b)
    }
}

impl Default for TeeTcbInfo {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

/// TDINFO_STRUCT (512 bytes): the TD's identity and measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TdInfo {
    /// ATTRIBUTES (see [`TdAttributes`]).
    pub attributes: u64,
    /// XFAM (see [`Xfam`]).
    pub xfam: u64,
    /// MRTD: build-time measurement.
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0..RTMR3.
    pub rtmr: [[u8; 48]; 4],
    /// SERVTD_HASH (0 without service TDs).
    pub servtd_hash: [u8; 48],
    /// Reserved.
    pub reserved: [u8; 64],
}

impl TdInfo {
    /// ATTRIBUTES as flags (unknown bits kept).
    pub const fn td_attributes(&self) -> TdAttributes {
        TdAttributes::from_bits_retain(self.attributes)
    }

    /// XFAM as flags (unknown bits kept).
    pub const fn td_xfam(&self) -> Xfam {
        Xfam::from_bits_retain(self.xfam)
    }

    /// MRTD.
    pub const fn mrtd(&self) -> Measurement {
        Measurement(self.mr_td)
    }

    /// RTMR `i`, or `None` for `i >= 4`.
    pub const fn rtmr(&self, i: usize) -> Option<Measurement> {
        if i < 4 {
            Some(Measurement(self.rtmr[i]))
        } else {
            None
        }
    }

    /// TEE_INFO_HASH: SHA-384 of the 512 bytes.
    pub fn hash(&self) -> Measurement {
        let mut b = [0u8; TDINFO_STRUCT_SIZE];
        b.copy_from_slice(IntoBytes::as_bytes(self));
        measure::tee_info_hash(&b)
    }
}

impl Default for TdInfo {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

/// TDREPORT_STRUCT (1024 bytes, 1024-byte aligned), output of TDG.MR.REPORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(1024))]
pub struct TdReport {
    /// REPORTMACSTRUCT.
    pub report_mac_struct: ReportMacStruct,
    /// TEE_TCB_INFO (239 bytes).
    pub tee_tcb_info: TeeTcbInfo,
    /// Reserved (the module's 256-byte TEE_TCB_INFO tail).
    pub reserved: [u8; 17],
    /// TDINFO_STRUCT.
    pub td_info: TdInfo,
}

/// A TDREPORT could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportError {
    /// The input is not exactly [`TD_REPORT_SIZE`] bytes.
    WrongLength {
        /// Bytes supplied.
        actual: usize,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::WrongLength { actual } => {
                write!(f, "TDREPORT is {actual} bytes, expected {TD_REPORT_SIZE}")
            }
        }
    }
}

impl core::error::Error for ReportError {}

impl TdReport {
    /// Decodes exactly [`TD_REPORT_SIZE`] bytes (any alignment).
    pub fn from_bytes(bytes: &[u8]) -> Result<TdReport, ReportError> {
        TdReport::read_from_bytes(bytes).map_err(|_| ReportError::WrongLength {
            actual: bytes.len(),
        })
    }

    /// The 1024 bytes of the report.
    pub fn as_bytes(&self) -> &[u8] {
        IntoBytes::as_bytes(self)
    }

    /// Whether TEE_TCB_INFO_HASH and TEE_INFO_HASH match the report's own TEE_TCB_INFO and
    /// TDINFO_STRUCT (does not check the MAC).
    pub fn hashes_consistent(&self) -> bool {
        self.tee_tcb_info.hash().0 == self.report_mac_struct.tee_tcb_info_hash
            && self.td_info.hash().0 == self.report_mac_struct.tee_info_hash
    }
}

impl Default for TdReport {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

const _: () = {
    assert!(size_of::<ReportType>() == 4);
    assert!(offset_of!(ReportType, type_) == 0);
    assert!(offset_of!(ReportType, subtype) == 1);
    assert!(offset_of!(ReportType, version) == 2);
    assert!(offset_of!(ReportType, reserved) == 3);

    assert!(size_of::<ReportMacStruct>() == REPORT_MAC_STRUCT_SIZE);
    assert!(offset_of!(ReportMacStruct, report_type) == 0);
    assert!(offset_of!(ReportMacStruct, reserved_0) == 4);
    assert!(offset_of!(ReportMacStruct, cpusvn) == 16);
    assert!(offset_of!(ReportMacStruct, tee_tcb_info_hash) == 32);
    assert!(offset_of!(ReportMacStruct, tee_info_hash) == 80);
    assert!(offset_of!(ReportMacStruct, report_data) == 128);
    assert!(offset_of!(ReportMacStruct, reserved_1) == 192);
    assert!(offset_of!(ReportMacStruct, mac) == 224);
    assert!(offset_of!(ReportMacStruct, mac) == ReportMacStruct::MAC_INPUT_LEN);

    assert!(size_of::<TeeTcbInfo>() == TEE_TCB_INFO_SIZE);
    assert!(offset_of!(TeeTcbInfo, valid) == 0);
    assert!(offset_of!(TeeTcbInfo, tee_tcb_svn) == 8);
    assert!(offset_of!(TeeTcbInfo, mr_seam) == 24);
    assert!(offset_of!(TeeTcbInfo, mr_signer_seam) == 72);
    assert!(offset_of!(TeeTcbInfo, attributes) == 120);
    assert!(offset_of!(TeeTcbInfo, tee_tcb_svn2) == 128);
    assert!(offset_of!(TeeTcbInfo, reserved) == 144);

    assert!(size_of::<TdInfo>() == TDINFO_STRUCT_SIZE);
    assert!(offset_of!(TdInfo, attributes) == 0);
    assert!(offset_of!(TdInfo, xfam) == 8);
    assert!(offset_of!(TdInfo, mr_td) == 16);
    assert!(offset_of!(TdInfo, mr_config_id) == 64);
    assert!(offset_of!(TdInfo, mr_owner) == 112);
    assert!(offset_of!(TdInfo, mr_owner_config) == 160);
    assert!(offset_of!(TdInfo, rtmr) == 208);
    assert!(offset_of!(TdInfo, servtd_hash) == 400);
    assert!(offset_of!(TdInfo, reserved) == 448);

    assert!(size_of::<TdReport>() == TD_REPORT_SIZE);
    assert!(offset_of!(TdReport, report_mac_struct) == 0);
    assert!(offset_of!(TdReport, tee_tcb_info) == 256);
    assert!(offset_of!(TdReport, reserved) == 495);
    assert!(offset_of!(TdReport, td_info) == 512);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_bytes_checks_length_and_round_trips() {
        let mut b = [0u8; 1024];
        b[0] = 0x81;
        b[2] = 1;
        b[128..192].copy_from_slice(&[0xAB; 64]);
        b[256..264].copy_from_slice(&0x1u64.to_le_bytes());
        b[512..520].copy_from_slice(&1u64.to_le_bytes()); // DEBUG
        b[520..528].copy_from_slice(&3u64.to_le_bytes()); // x87 | SSE
        b[720..768].copy_from_slice(&[7; 48]); // RTMR0
        let r = TdReport::from_bytes(&b).unwrap();
        assert!(r.report_mac_struct.report_type.is_tdx());
        assert_eq!(r.report_mac_struct.report_type.version, 1);
        assert_eq!(r.report_mac_struct.report_data, [0xAB; 64]);
        assert_eq!(r.tee_tcb_info.valid_bitmap(), 1);
        assert_eq!(r.td_info.td_attributes(), TdAttributes::DEBUG);
        assert_eq!(r.td_info.td_xfam(), Xfam::X87 | Xfam::SSE);
        assert_eq!(r.td_info.rtmr(0), Some(Measurement([7; 48])));
        assert_eq!(r.td_info.rtmr(4), None);
        assert_eq!(r.as_bytes(), &b[..]);
        // Unaligned input works too.
        let mut big = [0u8; 1025];
        big[1..].copy_from_slice(&b);
        assert_eq!(TdReport::from_bytes(&big[1..]), Ok(r));
        assert_eq!(
            TdReport::from_bytes(&b[..1023]),
            Err(ReportError::WrongLength { actual: 1023 })
        );
        assert_eq!(
            TdReport::from_bytes(&big),
            Err(ReportError::WrongLength { actual: 1025 })
        );
        assert_eq!(
            TdReport::from_bytes(&[]),
            Err(ReportError::WrongLength { actual: 0 })
        );
    }

    #[test]
    fn hash_consistency() {
        let mut r = TdReport::default();
        r.td_info.mr_td = [1; 48];
        assert!(!r.hashes_consistent());
        r.report_mac_struct.tee_tcb_info_hash = r.tee_tcb_info.hash().0;
        r.report_mac_struct.tee_info_hash = r.td_info.hash().0;
        assert!(r.hashes_consistent());
        r.td_info.rtmr[3][0] ^= 1;
        assert!(!r.hashes_consistent());
    }
}
