//! #VE information (`VE_INFO` of the TDVPS, read by the guest with TDG.VP.VEINFO.GET), §5.7.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// `VALID` value of a valid VE_INFO; while valid, a new #VE is not delivered (it becomes a
/// #DF-like TD exit instead).
pub const VE_INFO_VALID: u32 = 0xFFFF_FFFF;
/// Vector of the virtualization exception (#VE).
pub const VE_VECTOR: u8 = 20;

/// VE_INFO (`tdvps_ve_info_t`, 128 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VeInfo {
    /// EXIT_REASON: VMX basic exit reason of the event that caused the #VE.
    pub exit_reason: u32,
    /// VALID: [`VE_INFO_VALID`] when valid, 0 when consumed.
    pub valid: u32,
    /// EXIT_QUALIFICATION.
    pub exit_qualification: u64,
    /// GLA: guest linear address.
    pub gla: u64,
    /// GPA: guest physical address.
    pub gpa: u64,
    /// EPTP_INDEX.
    pub eptp_index: u16,
    /// Reserved.
    pub reserved_0: u16,
    /// INSTRUCTION_LENGTH (non-architectural).
    pub instruction_length: u32,
    /// INSTRUCTION_INFO (non-architectural).
    pub instruction_info: u32,
    /// Reserved, up to 128 bytes.
    pub reserved_1: [u8; 84],
}

impl Default for VeInfo {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl VeInfo {
    /// Whether `valid` is [`VE_INFO_VALID`].
    pub const fn is_valid(&self) -> bool {
        self.valid == VE_INFO_VALID
    }
}

const _: () = {
    assert!(size_of::<VeInfo>() == 128);
    assert!(offset_of!(VeInfo, exit_reason) == 0);
    assert!(offset_of!(VeInfo, valid) == 4);
    assert!(offset_of!(VeInfo, exit_qualification) == 8);
    assert!(offset_of!(VeInfo, gla) == 16);
    assert!(offset_of!(VeInfo, gpa) == 24);
    assert!(offset_of!(VeInfo, eptp_index) == 32);
    assert!(offset_of!(VeInfo, reserved_0) == 34);
    assert!(offset_of!(VeInfo, instruction_length) == 36);
    assert!(offset_of!(VeInfo, instruction_info) == 40);
    assert!(offset_of!(VeInfo, reserved_1) == 44);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&48u32.to_le_bytes());
        b[4..8].copy_from_slice(&[0xFF; 4]);
        b[24..32].copy_from_slice(&0x1234_5000u64.to_le_bytes());
        b[36..40].copy_from_slice(&3u32.to_le_bytes());
        let v = VeInfo::read_from_bytes(&b).unwrap();
        assert_eq!(v.exit_reason, 48);
        assert!(v.is_valid());
        assert_eq!(v.gpa, 0x1234_5000);
        assert_eq!(v.instruction_length, 3);
        assert_eq!(v.as_bytes(), &b[..]);
        assert!(!VeInfo::default().is_valid());
        assert!(VeInfo::read_from_bytes(&b[..127]).is_err());
    }
}
