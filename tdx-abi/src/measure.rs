//! TD measurement: MRTD (build time), RTMR extension (run time) and the SHA-384 hashes that
//! appear in a TDREPORT (TEE_INFO_HASH, TEE_TCB_INFO_HASH, SERVTD_HASH).
//!
//! # MRTD
//!
//! TDH.MNG.INIT starts an incremental SHA-384; every later update is one or more whole
//! 128-byte blocks, and TDH.MR.FINALIZE applies the standard SHA-384 padding. MRTD is therefore
//! the plain SHA-384 of all blocks in call order:
//!
//! * TDH.MEM.PAGE.ADD hashes one block ([`mem_page_add_block`]): the GPA only, **not** the page
//!   contents.
//! * TDH.MR.EXTEND hashes three blocks: a header ([`mr_extend_header_block`]) and the 256 bytes
//!   of TD memory at a 256-byte aligned GPA. A 4 KiB page takes 16 calls.
//!
//! Nothing from TD_PARAMS enters MRTD. Order matters: adding and extending each page in turn
//! ("single pass", as KVM does) and adding all pages before extending any ("two pass") give
//! different MRTDs. [`MrtdBuilder`] reproduces the module's computation so that a VMM can
//! predict MRTD offline and the emulated module can compute it.
//!
//! # RTMR
//!
//! TDG.MR.RTMR.EXTEND replaces an RTMR by the SHA-384 of its old value followed by 48 bytes of
//! data ([`rtmr_extend`]); every RTMR starts as [`RTMR_INITIAL`] (zeros).

use core::fmt;
use core::str::FromStr;

use sha2::{Digest, Sha384};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::gpa::{Gpa, PAGE_SIZE_4K};

/// Size of a SHA-384 value (MRTD, RTMR, the report hashes): 48 bytes.
pub const MEASUREMENT_SIZE: usize = 48;
/// Size of one block hashed into MRTD (the SHA-384 block size): 128 bytes.
pub const MEASUREMENT_BLOCK_SIZE: usize = 128;
/// Bytes of TD memory measured by one TDH.MR.EXTEND (Linux `TDX_EXTENDMR_CHUNKSIZE`).
pub const MR_EXTEND_CHUNK_SIZE: usize = 256;
/// Size of the data operand of TDG.MR.RTMR.EXTEND (Linux `TDX_EXTEND_RTMR_DATA_LEN`).
pub const RTMR_EXTEND_DATA_SIZE: usize = 48;
/// Number of RTMRs of a TD.
pub const NUM_RTMRS: usize = 4;
/// Size of TDINFO_STRUCT, the input of TEE_INFO_HASH.
pub const TDINFO_STRUCT_SIZE: usize = 512;
/// Architectural size of TEE_TCB_INFO, the input of TEE_TCB_INFO_HASH.
pub const TEE_TCB_INFO_SIZE: usize = 239;
/// Size of one record of the SERVTD_HASH input (`servtd_hash_buff_t`).
pub const SERVTD_RECORD_SIZE: usize = 58;

/// ASCII tag in the block TDH.MEM.PAGE.ADD hashes (12 bytes, no terminator).
pub const MEM_PAGE_ADD_TAG: &[u8; 12] = b"MEM.PAGE.ADD";
/// ASCII tag in the header block TDH.MR.EXTEND hashes (9 bytes, no terminator).
pub const MR_EXTEND_TAG: &[u8; 9] = b"MR.EXTEND";
/// Offset of the tag field in a measurement header block (16 bytes, zero padded).
const BLOCK_TAG_OFFSET: usize = 0;
/// Offset of the little-endian GPA in a measurement header block.
const BLOCK_GPA_OFFSET: usize = 16;

/// A 48-byte SHA-384 value: MRTD, an RTMR, MRCONFIGID/MROWNER/MROWNERCONFIG, or one of the
/// report hashes. Displays (and parses) as 96 hexadecimal digits.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(transparent)]
pub struct Measurement(pub [u8; MEASUREMENT_SIZE]);

impl Measurement {
    /// All zeros: the initial RTMR value and the SERVTD_HASH of a TD without service TDs.
    pub const ZERO: Measurement = Measurement([0; MEASUREMENT_SIZE]);

    /// The 48 bytes.
    pub const fn as_bytes(&self) -> &[u8; MEASUREMENT_SIZE] {
        &self.0
    }

    /// The 48 bytes, by value.
    pub const fn to_bytes(self) -> [u8; MEASUREMENT_SIZE] {
        self.0
    }

    /// Parses exactly 96 hexadecimal digits (either case, no prefix, no separators), as found
    /// in configuration files and attestation policies.
    pub fn from_hex(s: &str) -> Result<Self, ParseMeasurementError> {
        let digits = s.as_bytes();
        if digits.len() != 2 * MEASUREMENT_SIZE {
            return Err(ParseMeasurementError::WrongLength(digits.len()));
        }
        let mut out = [0u8; MEASUREMENT_SIZE];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(ParseMeasurementError::InvalidDigit {
                index: 2 * i,
                byte: pair[0],
            })?;
            let lo = hex_value(pair[1]).ok_or(ParseMeasurementError::InvalidDigit {
                index: 2 * i + 1,
                byte: pair[1],
            })?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Measurement(out))
    }

    /// Whether all 48 bytes are zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; MEASUREMENT_SIZE]
    }
}

const fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Default for Measurement {
    fn default() -> Self {
        Measurement::ZERO
    }
}

impl From<[u8; MEASUREMENT_SIZE]> for Measurement {
    fn from(bytes: [u8; MEASUREMENT_SIZE]) -> Self {
        Measurement(bytes)
    }
}

impl From<Measurement> for [u8; MEASUREMENT_SIZE] {
    fn from(m: Measurement) -> Self {
        m.0
    }
}

impl AsRef<[u8]> for Measurement {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({self})")
    }
}

impl FromStr for Measurement {
    type Err = ParseMeasurementError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Measurement::from_hex(s)
    }
}

/// Why a string is not a hexadecimal [`Measurement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseMeasurementError {
    /// The string is not exactly 96 bytes long (the value is its length in bytes).
    WrongLength(usize),
    /// A byte is not a hexadecimal digit.
    InvalidDigit {
        /// Byte offset in the string.
        index: usize,
        /// The offending byte.
        byte: u8,
    },
}

impl fmt::Display for ParseMeasurementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseMeasurementError::WrongLength(len) => write!(
                f,
                "a measurement is {} hex digits, got {len} bytes",
                2 * MEASUREMENT_SIZE
            ),
            ParseMeasurementError::InvalidDigit { index, byte } => {
                write!(f, "byte {byte:#04x} at offset {index} is not a hex digit")
            }
        }
    }
}

impl core::error::Error for ParseMeasurementError {}

/// Why an MRTD update was refused (the module would fail the SEAMCALL and measure nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasureError {
    /// The GPA is not aligned as the operation requires.
    MisalignedGpa {
        /// The GPA given.
        gpa: u64,
        /// The required alignment in bytes (4096 for a page, 256 for an MR.EXTEND chunk).
        alignment: u64,
    },
}

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasureError::MisalignedGpa { gpa, alignment } => {
                write!(f, "GPA {gpa:#x} is not {alignment}-byte aligned")
            }
        }
    }
}

impl core::error::Error for MeasureError {}

fn check_aligned(gpa: Gpa, alignment: u64) -> Result<(), MeasureError> {
    if gpa.raw() & (alignment - 1) == 0 {
        Ok(())
    } else {
        Err(MeasureError::MisalignedGpa {
            gpa: gpa.raw(),
            alignment,
        })
    }
}

/// A measurement header block: `tag` zero-padded to 16 bytes, the GPA as u64 little-endian
/// at bytes 16..24, zeros to 128 (the module's `sha384_128B_block_t`).
const fn header_block(tag: &[u8], gpa: Gpa) -> [u8; MEASUREMENT_BLOCK_SIZE] {
    let mut block = [0u8; MEASUREMENT_BLOCK_SIZE];
    let mut i = 0;
    while i < tag.len() {
        block[BLOCK_TAG_OFFSET + i] = tag[i];
        i += 1;
    }
    let gpa = gpa.raw().to_le_bytes();
    let mut j = 0;
    while j < gpa.len() {
        block[BLOCK_GPA_OFFSET + j] = gpa[j];
        j += 1;
    }
    block
}

/// The 128-byte block TDH.MEM.PAGE.ADD hashes into MRTD: bytes 0..12 ASCII `MEM.PAGE.ADD`,
/// 12..16 zero, 16..24 the GPA as u64 little-endian, 24..128 zero.
///
/// The GPA is used as given; the module only measures 4 KiB-aligned GPAs without level bits.
pub const fn mem_page_add_block(gpa: Gpa) -> [u8; MEASUREMENT_BLOCK_SIZE] {
    header_block(MEM_PAGE_ADD_TAG, gpa)
}

/// The first of the three 128-byte blocks TDH.MR.EXTEND hashes into MRTD: bytes 0..9 ASCII
/// `MR.EXTEND`, 9..16 zero, 16..24 the GPA as u64 little-endian, 24..128 zero. The 256 bytes of
/// TD memory at the GPA follow as two more blocks.
///
/// The GPA is used as given; the module only measures 256-byte aligned GPAs.
pub const fn mr_extend_header_block(gpa: Gpa) -> [u8; MEASUREMENT_BLOCK_SIZE] {
    header_block(MR_EXTEND_TAG, gpa)
}

/// Incremental MRTD computation, block by block as the module does between TDH.MNG.INIT
/// ([`MrtdBuilder::new`]) and TDH.MR.FINALIZE ([`MrtdBuilder::finalize`]).
///
/// `Clone`, so a VMM can fork a partial measurement (e.g. the common firmware prefix of many
/// TDs). A refused update (misaligned GPA) hashes nothing, as the failing SEAMCALL would.
#[derive(Clone, Debug, Default)]
pub struct MrtdBuilder {
    hasher: Sha384,
    blocks: u64,
}

impl MrtdBuilder {
    /// An empty measurement, as TDH.MNG.INIT starts it.
    pub fn new() -> Self {
        MrtdBuilder::default()
    }

    fn hash_block(&mut self, block: &[u8]) {
        debug_assert_eq!(block.len(), MEASUREMENT_BLOCK_SIZE);
        self.hasher.update(block);
        self.blocks += 1;
    }

    /// The measurement of TDH.MEM.PAGE.ADD of the 4 KiB page at `gpa`: one block
    /// ([`mem_page_add_block`]). The page contents are not measured.
    pub fn mem_page_add(&mut self, gpa: Gpa) -> Result<(), MeasureError> {
        check_aligned(gpa, PAGE_SIZE_4K)?;
        self.hash_block(&mem_page_add_block(gpa));
        Ok(())
    }

    /// The measurement of one TDH.MR.EXTEND of the 256 bytes `chunk` at `gpa` (256-byte
    /// aligned): the header block then the chunk as two blocks.
    pub fn mr_extend(
        &mut self,
        gpa: Gpa,
        chunk: &[u8; MR_EXTEND_CHUNK_SIZE],
    ) -> Result<(), MeasureError> {
        check_aligned(gpa, MR_EXTEND_CHUNK_SIZE as u64)?;
        self.hash_chunk(gpa, chunk);
        Ok(())
    }

    /// Hashes one MR.EXTEND (header + 256 bytes); `gpa` is already checked.
    fn hash_chunk(&mut self, gpa: Gpa, chunk: &[u8]) {
        debug_assert_eq!(chunk.len(), MR_EXTEND_CHUNK_SIZE);
        self.hash_block(&mr_extend_header_block(gpa));
        for half in chunk.chunks_exact(MEASUREMENT_BLOCK_SIZE) {
            self.hash_block(half);
        }
    }

    /// The 16 TDH.MR.EXTEND calls that measure the contents of the 4 KiB page at `gpa`
    /// (4 KiB aligned), in address order: `gpa`, `gpa + 0x100`, ..., `gpa + 0xF00`.
    pub fn extend_page(
        &mut self,
        gpa: Gpa,
        page: &[u8; PAGE_SIZE_4K as usize],
    ) -> Result<(), MeasureError> {
        check_aligned(gpa, PAGE_SIZE_4K)?;
        let mut offset = 0u64;
        for chunk in page.chunks_exact(MR_EXTEND_CHUNK_SIZE) {
            // A 4 KiB-aligned GPA ORed with an offset below 4 KiB: 256-aligned, no overflow.
            self.hash_chunk(Gpa(gpa.raw() | offset), chunk);
            offset += MR_EXTEND_CHUNK_SIZE as u64;
        }
        Ok(())
    }

    /// Adds one initial page in the order KVM uses: TDH.MEM.PAGE.ADD, then (if
    /// `measure_content`) the 16 TDH.MR.EXTEND of its contents. `gpa` must be 4 KiB aligned.
    pub fn add_page(
        &mut self,
        gpa: Gpa,
        page: &[u8; PAGE_SIZE_4K as usize],
        measure_content: bool,
    ) -> Result<(), MeasureError> {
        self.mem_page_add(gpa)?;
        if measure_content {
            self.extend_page(gpa, page)?;
        }
        Ok(())
    }

    /// Number of 128-byte blocks hashed so far.
    pub const fn blocks_hashed(&self) -> u64 {
        self.blocks
    }

    /// TDH.MR.FINALIZE: pads the stream and returns MRTD.
    pub fn finalize(self) -> Measurement {
        Measurement(self.hasher.finalize().into())
    }
}

/// The initial value of every RTMR (set at TDH.MNG.INIT): 48 zero bytes.
pub const RTMR_INITIAL: Measurement = Measurement::ZERO;

/// TDG.MR.RTMR.EXTEND: the new RTMR value, SHA-384 of the 96-byte message `current || data`.
pub fn rtmr_extend(current: &Measurement, data: &[u8; RTMR_EXTEND_DATA_SIZE]) -> Measurement {
    let mut h = Sha384::new();
    h.update(current.0);
    h.update(data);
    Measurement(h.finalize().into())
}

/// SHA-384 of `data` in one piece.
pub fn sha384(data: &[u8]) -> Measurement {
    Measurement(Sha384::digest(data).into())
}

/// TEE_INFO_HASH of a TDREPORT: SHA-384 of the 512-byte TDINFO_STRUCT.
pub fn tee_info_hash(tdinfo: &[u8; TDINFO_STRUCT_SIZE]) -> Measurement {
    sha384(tdinfo)
}

/// TEE_TCB_INFO_HASH of a TDREPORT: SHA-384 of the 239-byte architectural TEE_TCB_INFO
/// (bytes 256..495 of the TDREPORT, not the 17 reserved bytes after it).
///
/// UNCONFIRMED: the hash is produced inside the CPU (SEAMOPS), so the module source does not
/// show its coverage, and module 1.5 declares the structure as 256 bytes. The 239-byte
/// coverage is what the public verifiers assume (MigTD's report verification hashes the
/// 239-byte `tee_tcb_info` field of td-shim's report layout and compares it with this hash).
pub fn tee_tcb_info_hash(tee_tcb_info: &[u8; TEE_TCB_INFO_SIZE]) -> Measurement {
    sha384(tee_tcb_info)
}

/// SERVTD_TYPE of a migration TD (MigTD).
pub const SERVTD_TYPE_MIGTD: u16 = 0;

/// One bound (or pre-bound) service TD as it enters SERVTD_HASH (`servtd_hash_buff_t`, 58 bytes
/// packed: SERVTD_INFO_HASH, SERVTD_TYPE u16 LE, SERVTD_ATTR u64 LE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServtdRecord {
    /// SERVTD_INFO_HASH: hash of the service TD's TDINFO_STRUCT (with its ignore masks).
    pub info_hash: Measurement,
    /// SERVTD_TYPE (0 = MigTD; other values are carried as they are).
    pub servtd_type: u16,
    /// SERVTD_ATTR, the binding attributes.
    pub attributes: u64,
}

impl ServtdRecord {
    /// The 58 bytes hashed for this record.
    pub fn to_bytes(&self) -> [u8; SERVTD_RECORD_SIZE] {
        let mut b = [0u8; SERVTD_RECORD_SIZE];
        b[..MEASUREMENT_SIZE].copy_from_slice(&self.info_hash.0);
        b[MEASUREMENT_SIZE..MEASUREMENT_SIZE + 2].copy_from_slice(&self.servtd_type.to_le_bytes());
        b[MEASUREMENT_SIZE + 2..].copy_from_slice(&self.attributes.to_le_bytes());
        b
    }
}

/// SERVTD_HASH, computed at TDH.MR.FINALIZE (and on import): zeros if no service TD is bound,
/// else the SHA-384 of the 58-byte records sorted by SERVTD_TYPE, then by SERVTD_INFO_HASH.
///
/// Sorts `records` in place (that is the order hashed). The secondary key compares the hashes
/// as byte strings; module 1.5.01 binds at most one service TD, so no module observed so far
/// exercises that comparison.
pub fn servtd_hash(records: &mut [ServtdRecord]) -> Measurement {
    if records.is_empty() {
        return Measurement::ZERO;
    }
    records.sort_unstable_by(|a, b| {
        a.servtd_type
            .cmp(&b.servtd_type)
            .then_with(|| a.info_hash.0.cmp(&b.info_hash.0))
    });
    let mut h = Sha384::new();
    for r in records.iter() {
        h.update(r.to_bytes());
    }
    Measurement(h.finalize().into())
}

const _: () = {
    assert!(core::mem::size_of::<Measurement>() == MEASUREMENT_SIZE);
    assert!(PAGE_SIZE_4K as usize % MR_EXTEND_CHUNK_SIZE == 0);
    assert!(MR_EXTEND_CHUNK_SIZE == 2 * MEASUREMENT_BLOCK_SIZE);
    assert!(MEASUREMENT_SIZE + 2 + 8 == SERVTD_RECORD_SIZE);
    assert!(MEM_PAGE_ADD_TAG.len() <= BLOCK_GPA_OFFSET && MR_EXTEND_TAG.len() <= BLOCK_GPA_OFFSET);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let mut bytes = [0u8; 48];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        let m = Measurement(bytes);
        let s = std::format!("{m}");
        assert_eq!(s.len(), 96);
        assert!(s.starts_with("00254a6f94"));
        assert_eq!(Measurement::from_hex(&s), Ok(m));
        assert_eq!(Measurement::from_hex(&s.to_uppercase()), Ok(m));
        assert_eq!(
            Measurement::from_hex("00"),
            Err(ParseMeasurementError::WrongLength(2))
        );
        let mut bad = s.clone();
        bad.replace_range(5..6, "g");
        assert_eq!(
            bad.parse::<Measurement>(),
            Err(ParseMeasurementError::InvalidDigit {
                index: 5,
                byte: b'g'
            })
        );
        // A multi-byte character must not panic (byte-wise parsing).
        let uni = std::format!("é{}", &s[2..]);
        assert!(matches!(
            Measurement::from_hex(&uni),
            Err(ParseMeasurementError::InvalidDigit { index: 0, .. })
        ));
    }

    #[test]
    fn block_counts() {
        let mut b = MrtdBuilder::new();
        b.add_page(Gpa(0x2000), &[0; 4096], true).unwrap();
        assert_eq!(b.blocks_hashed(), 1 + 16 * 3);
        b.add_page(Gpa(0x3000), &[0; 4096], false).unwrap();
        assert_eq!(b.blocks_hashed(), 2 + 16 * 3);
        assert_eq!(
            b.add_page(Gpa(0x3100), &[0; 4096], true),
            Err(MeasureError::MisalignedGpa {
                gpa: 0x3100,
                alignment: 4096
            })
        );
        assert_eq!(b.blocks_hashed(), 2 + 16 * 3);
    }
}
