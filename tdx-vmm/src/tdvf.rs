//! TDVF metadata: the section table a TDX-enabled OVMF (or td-shim) image carries, which tells
//! the VMM where each part of the image goes in the TD and whether it is measured.
//!
//! Layout (the fact sheet `kvm-tdx-host.md` §3.1–3.2; EDK2 `ResetVectorVtf0.asm`,
//! `IntelTdxMetadata.asm`):
//!
//! * The image ends (last byte at 4 GiB − 1 in the guest) with OVMF's GUIDed table: the footer
//!   GUID at `end − 0x30`, the table's total length (u16) at `end − 0x32`, and below that
//!   entries walked downwards, each `data, u16 length (data + 18), GUID`.
//! * The TDX metadata entry (GUID `e47a6535-…`) holds a u32: the distance from the end of the
//!   image to the TDVF descriptor.
//! * The descriptor is 16 bytes (`"TDVF"`, length = 16 + 32 × N, version 1, N sections)
//!   followed by N 32-byte section entries (data offset, raw size, GPA, memory size, type,
//!   attributes).
//!
//! The image is hostile input: every offset and size is checked against the file and for
//! overflow, the section count is bounded, and a refused image gets a [`TdvfError`] that says
//! which structure or section and which value is wrong. Nothing here panics on any input.

use std::fmt;

/// Largest firmware image accepted (bytes). OVMF images are 2–4 MiB; the image is mapped
/// below 4 GiB.
pub const MAX_IMAGE_SIZE: usize = 64 << 20;
/// Most section entries accepted (OVMF has 6; td-shim fewer than 16).
pub const MAX_SECTIONS: u32 = 64;
/// Section GPAs must lie below this (the shared bit of a 48-bit-GPAW TD).
pub const MAX_GPA: u64 = 1 << 47;

/// OVMF's table footer GUID 96b582de-1fb2-45f7-baea-a366c55a082d, as stored (mixed-endian).
pub const OVMF_TABLE_FOOTER_GUID: [u8; 16] = guid_bytes(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// The TDX metadata offset entry GUID e47a6535-984a-4798-865e-4685a7bf8ec2, as stored.
pub const TDX_METADATA_OFFSET_GUID: [u8; 16] = guid_bytes(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);
/// The TDX metadata GUID e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae that precedes the descriptor.
pub const TDX_METADATA_GUID: [u8; 16] = guid_bytes(
    0xe9ea_f9f3,
    0x168e,
    0x44d5,
    [0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae],
);

/// The descriptor signature, "TDVF".
pub const TDVF_SIGNATURE: [u8; 4] = *b"TDVF";
/// Size of the descriptor header.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Size of one section entry.
pub const SECTION_ENTRY_SIZE: usize = 32;
/// Section attribute bit 0: add the pages and extend MRTD with their contents.
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
/// Section attribute bit 1: the pages are not added before finalize; the guest accepts them
/// after TDH.MEM.PAGE.AUG.
pub const ATTR_PAGE_AUG: u32 = 1 << 1;

/// An EFI GUID in its stored (mixed-endian) byte order.
pub const fn guid_bytes(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// The type of a TDVF section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionType {
    /// 0: boot firmware volume (contains the reset vector); raw data, usually measured.
    Bfv,
    /// 1: configuration firmware volume (UEFI variables); raw data.
    Cfv,
    /// 2: where the VMM writes the TD HOB; no raw data.
    TdHob,
    /// 3: temporary memory (stack, heap, mailbox, early page tables); no raw data.
    TempMem,
    /// 4: permanent memory owned by the firmware (td-shim); no raw data.
    PermMem,
    /// 5: the payload (kernel) of td-shim.
    Payload,
    /// 6: the payload's parameters (command line) of td-shim.
    PayloadParam,
    /// 7: TD_INFO of newer td-shim.
    TdInfo,
}

impl SectionType {
    /// The type with this number.
    pub const fn from_raw(raw: u32) -> Option<SectionType> {
        Some(match raw {
            0 => SectionType::Bfv,
            1 => SectionType::Cfv,
            2 => SectionType::TdHob,
            3 => SectionType::TempMem,
            4 => SectionType::PermMem,
            5 => SectionType::Payload,
            6 => SectionType::PayloadParam,
            7 => SectionType::TdInfo,
            _ => return None,
        })
    }

    /// The name used by the TDVF spec, EDK2 and `inspect`.
    pub const fn name(self) -> &'static str {
        match self {
            SectionType::Bfv => "BFV",
            SectionType::Cfv => "CFV",
            SectionType::TdHob => "TD_HOB",
            SectionType::TempMem => "TempMem",
            SectionType::PermMem => "PermMem",
            SectionType::Payload => "Payload",
            SectionType::PayloadParam => "PayloadParam",
            SectionType::TdInfo => "TdInfo",
        }
    }

    /// Whether sections of this type carry bytes from the file.
    pub const fn has_raw_data(self) -> bool {
        matches!(
            self,
            SectionType::Bfv | SectionType::Cfv | SectionType::Payload | SectionType::TdInfo
        )
    }
}

impl fmt::Display for SectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One checked section entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdvfSection {
    /// Index in the section table (0-based).
    pub index: u32,
    /// File offset of the raw data.
    pub data_offset: u32,
    /// Bytes of raw data in the file.
    pub raw_data_size: u32,
    /// GPA (4 KiB aligned).
    pub memory_address: u64,
    /// Bytes of guest memory (4 KiB multiple, at least `raw_data_size`).
    pub memory_data_size: u64,
    /// Type.
    pub section_type: SectionType,
    /// Attributes ([`ATTR_MR_EXTEND`], [`ATTR_PAGE_AUG`]).
    pub attributes: u32,
}

impl TdvfSection {
    /// The pages are measured (MR.EXTEND).
    pub const fn mr_extend(&self) -> bool {
        self.attributes & ATTR_MR_EXTEND != 0
    }

    /// The pages are added lazily after finalize (PAGE.AUG).
    pub const fn page_aug(&self) -> bool {
        self.attributes & ATTR_PAGE_AUG != 0
    }

    /// End GPA (exclusive); checked not to overflow when parsed.
    pub const fn memory_end(&self) -> u64 {
        self.memory_address + self.memory_data_size
    }

    /// The section's raw bytes within `image` (the image it was parsed from).
    pub fn raw_data<'a>(&self, image: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.data_offset as usize;
        image.get(start..start.checked_add(self.raw_data_size as usize)?)
    }
}

/// The parsed metadata of a TDVF image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdvfMetadata {
    /// File offset of the descriptor.
    pub descriptor_offset: usize,
    /// Descriptor version (1).
    pub version: u32,
    /// The sections, in table order.
    pub sections: Vec<TdvfSection>,
}

impl TdvfMetadata {
    /// The TD_HOB section, if any (at most one).
    pub fn td_hob(&self) -> Option<&TdvfSection> {
        self.sections
            .iter()
            .find(|s| s.section_type == SectionType::TdHob)
    }
}

/// Why a firmware image was refused. Each message names the structure or section and the
/// value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TdvfError {
    /// Too small to hold the OVMF footer.
    #[error("the image is {len} bytes, too small to hold the OVMF GUID table footer (0x32 bytes)")]
    TooSmall {
        /// Image size.
        len: usize,
    },
    /// Larger than [`MAX_IMAGE_SIZE`].
    #[error("the image is {len} bytes, larger than the {max} a firmware image may be")]
    TooLarge {
        /// Image size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No OVMF footer GUID at `end − 0x30`: not an OVMF/TDVF image, or truncated.
    #[error(
        "no OVMF GUID table footer (96b582de-…) at offset {offset:#x} (end − 0x30): not a TDVF \
         image, or truncated"
    )]
    NoFooter {
        /// Where it was looked for.
        offset: usize,
    },
    /// The GUID table's length does not fit the image.
    #[error("the OVMF GUID table length {len:#x} is invalid (must be 18..={max:#x})")]
    BadTableLength {
        /// The stored length.
        len: u16,
        /// Most it could be.
        max: usize,
    },
    /// A GUID table entry's length is invalid.
    #[error(
        "the OVMF GUID table entry ending at offset {end:#x} has length {len:#x}, which is \
         below 18 or runs past the table's start"
    )]
    BadEntryLength {
        /// File offset just past the entry (its GUID's end).
        end: usize,
        /// The stored length.
        len: u16,
    },
    /// No TDX metadata entry in the GUID table.
    #[error(
        "the OVMF GUID table has no TDX metadata entry (e47a6535-…): firmware built without TDX \
         support"
    )]
    NoTdxEntry,
    /// The TDX metadata entry is shorter than its u32 offset.
    #[error("the TDX metadata entry has length {len}, too short for its 4-byte offset")]
    ShortTdxEntry {
        /// The stored length.
        len: u16,
    },
    /// The descriptor offset points outside the image.
    #[error(
        "the TDVF descriptor offset {from_end:#x} (from the end) points outside the \
         {image_len:#x}-byte image"
    )]
    BadDescriptorOffset {
        /// The stored distance from the end.
        from_end: u32,
        /// Image size.
        image_len: usize,
    },
    /// Descriptor signature not "TDVF".
    #[error("the TDVF descriptor at {offset:#x} has signature {found:02x?}, not \"TDVF\"")]
    BadSignature {
        /// File offset of the descriptor.
        offset: usize,
        /// What was there.
        found: [u8; 4],
    },
    /// Unsupported descriptor version.
    #[error("the TDVF descriptor has version {0}; only version 1 is known")]
    BadVersion(u32),
    /// Zero or too many sections.
    #[error("the TDVF descriptor lists {count} sections; 1..={max} are accepted")]
    BadSectionCount {
        /// The stored count.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// The descriptor length does not match its section count.
    #[error(
        "the TDVF descriptor length is {length} but {count} sections need 16 + 32 × {count} = \
         {expected}"
    )]
    BadDescriptorLength {
        /// The stored length.
        length: u32,
        /// The section count.
        count: u32,
        /// 16 + 32 × count.
        expected: u64,
    },
    /// The section table runs past the end of the image.
    #[error(
        "the TDVF section table ({count} entries at {offset:#x}) runs past the end of the \
         {image_len:#x}-byte image"
    )]
    TableTruncated {
        /// File offset of the first section entry.
        offset: usize,
        /// The section count.
        count: u32,
        /// Image size.
        image_len: usize,
    },
    /// A section's raw data runs past the end of the image.
    #[error(
        "TDVF section #{index} ({ty}): raw data at offset {data_offset:#x} + size {size:#x} runs \
         past the end of the {image_len:#x}-byte image"
    )]
    SectionPastEnd {
        /// Section index.
        index: u32,
        /// Section type name (or "type N").
        ty: String,
        /// DataOffset.
        data_offset: u32,
        /// RawDataSize.
        size: u32,
        /// Image size.
        image_len: usize,
    },
    /// A section entry is inconsistent.
    #[error("TDVF section #{index} ({ty}): {why}")]
    Section {
        /// Section index.
        index: u32,
        /// Section type name (or "type N").
        ty: String,
        /// What is wrong, with the value.
        why: String,
    },
}

fn u16_at(image: &[u8], offset: usize) -> Option<u16> {
    let b = image.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(image: &[u8], offset: usize) -> Option<u32> {
    let b = image.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(image: &[u8], offset: usize) -> Option<u64> {
    let b = image.get(offset..offset.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Finds the TDVF descriptor's file offset through the OVMF GUID table.
pub fn find_descriptor(image: &[u8]) -> Result<usize, TdvfError> {
    let len = image.len();
    if len > MAX_IMAGE_SIZE {
        return Err(TdvfError::TooLarge {
            len,
            max: MAX_IMAGE_SIZE,
        });
    }
    if len < 0x32 {
        return Err(TdvfError::TooSmall { len });
    }
    let footer = len - 0x30;
    if image[footer..footer + 16] != OVMF_TABLE_FOOTER_GUID {
        return Err(TdvfError::NoFooter { offset: footer });
    }
    // The table length counts the entries, the u16 itself and the footer GUID; the table
    // ends at the footer GUID's end (end − 0x20).
    let table_len = u16_at(image, len - 0x32).ok_or(TdvfError::TooSmall { len })?;
    let table_end = len - 0x20;
    if (table_len as usize) < 18 || table_len as usize > table_end {
        return Err(TdvfError::BadTableLength {
            len: table_len,
            max: table_end,
        });
    }
    let table_start = table_end - table_len as usize;
    // Entries start below the length field; each is data, u16 length, GUID, walked down.
    let mut pos = len - 0x32;
    // Each entry is at least 18 bytes, so the walk ends after at most table_len / 18 steps.
    while pos >= table_start + 18 {
        let guid = &image[pos - 16..pos];
        let entry_len = u16_at(image, pos - 18).ok_or(TdvfError::TooSmall { len })?;
        if (entry_len as usize) < 18 || pos - table_start < entry_len as usize {
            return Err(TdvfError::BadEntryLength {
                end: pos,
                len: entry_len,
            });
        }
        let entry_start = pos - entry_len as usize;
        if guid == TDX_METADATA_OFFSET_GUID {
            if entry_len < 22 {
                return Err(TdvfError::ShortTdxEntry { len: entry_len });
            }
            let from_end = u32_at(image, entry_start).ok_or(TdvfError::TooSmall { len })?;
            let from_end_usize = from_end as usize;
            if from_end_usize < DESCRIPTOR_SIZE || from_end_usize > len {
                return Err(TdvfError::BadDescriptorOffset {
                    from_end,
                    image_len: len,
                });
            }
            return Ok(len - from_end_usize);
        }
        pos = entry_start;
    }
    Err(TdvfError::NoTdxEntry)
}

fn type_name(raw: u32) -> String {
    match SectionType::from_raw(raw) {
        Some(t) => t.name().to_string(),
        None => format!("type {raw}"),
    }
}

/// Parses and checks the TDVF metadata of `image`.
///
/// Checks, beyond the structure: every section's GPA is 4 KiB aligned, its memory size a
/// non-zero 4 KiB multiple no smaller than its raw data, its range below [`MAX_GPA`] without
/// overflow, and not overlapping another section; raw data lies inside the file; BFV/CFV
/// have raw data and TD_HOB/TempMem/PermMem none (as QEMU requires); attributes use only
/// MR.EXTEND and PAGE.AUG, never both, and PAGE.AUG only on sections without raw data; at
/// most one TD_HOB; at least one BFV.
pub fn parse(image: &[u8]) -> Result<TdvfMetadata, TdvfError> {
    let len = image.len();
    let offset = find_descriptor(image)?;
    let desc = image
        .get(offset..offset.saturating_add(DESCRIPTOR_SIZE))
        .ok_or(TdvfError::BadDescriptorOffset {
            from_end: (len - offset) as u32,
            image_len: len,
        })?;
    let found = [desc[0], desc[1], desc[2], desc[3]];
    if found != TDVF_SIGNATURE {
        return Err(TdvfError::BadSignature { offset, found });
    }
    let length = u32_at(desc, 4).unwrap_or(0);
    let version = u32_at(desc, 8).unwrap_or(0);
    let count = u32_at(desc, 12).unwrap_or(0);
    if version != 1 {
        return Err(TdvfError::BadVersion(version));
    }
    if count == 0 || count > MAX_SECTIONS {
        return Err(TdvfError::BadSectionCount {
            count,
            max: MAX_SECTIONS,
        });
    }
    let expected = DESCRIPTOR_SIZE as u64 + SECTION_ENTRY_SIZE as u64 * u64::from(count);
    if u64::from(length) != expected {
        return Err(TdvfError::BadDescriptorLength {
            length,
            count,
            expected,
        });
    }
    let table = offset + DESCRIPTOR_SIZE;
    // count ≤ MAX_SECTIONS, so this cannot overflow.
    if table + SECTION_ENTRY_SIZE * count as usize > len {
        return Err(TdvfError::TableTruncated {
            offset: table,
            count,
            image_len: len,
        });
    }
    let mut sections: Vec<TdvfSection> = Vec::with_capacity(count as usize);
    for index in 0..count {
        let at = table + SECTION_ENTRY_SIZE * index as usize;
        let e = &image[at..at + SECTION_ENTRY_SIZE];
        let raw_type = u32_at(e, 24).unwrap_or(0);
        let section = check_section(
            image,
            index,
            raw_type,
            TdvfSection {
                index,
                data_offset: u32_at(e, 0).unwrap_or(0),
                raw_data_size: u32_at(e, 4).unwrap_or(0),
                memory_address: u64_at(e, 8).unwrap_or(0),
                memory_data_size: u64_at(e, 16).unwrap_or(0),
                section_type: SectionType::Bfv, // replaced by check_section
                attributes: u32_at(e, 28).unwrap_or(0),
            },
        )?;
        let bad = |why: String| TdvfError::Section {
            index,
            ty: section.section_type.name().to_string(),
            why,
        };
        if let Some(other) = sections.iter().find(|o| {
            o.memory_address < section.memory_end() && section.memory_address < o.memory_end()
        }) {
            return Err(bad(format!(
                "memory [{:#x}, {:#x}) overlaps section #{} ({}) at [{:#x}, {:#x})",
                section.memory_address,
                section.memory_end(),
                other.index,
                other.section_type,
                other.memory_address,
                other.memory_end()
            )));
        }
        if section.section_type == SectionType::TdHob {
            if let Some(first) = sections
                .iter()
                .find(|o| o.section_type == SectionType::TdHob)
            {
                return Err(bad(format!(
                    "a second TD_HOB section (the first is #{})",
                    first.index
                )));
            }
        }
        sections.push(section);
    }
    if !sections.iter().any(|s| s.section_type == SectionType::Bfv) {
        return Err(TdvfError::Section {
            index: 0,
            ty: "BFV".to_string(),
            why: "the section table has no BFV (boot firmware volume) section".to_string(),
        });
    }
    Ok(TdvfMetadata {
        descriptor_offset: offset,
        version,
        sections,
    })
}

fn check_section(
    image: &[u8],
    index: u32,
    raw_type: u32,
    mut s: TdvfSection,
) -> Result<TdvfSection, TdvfError> {
    let ty = type_name(raw_type);
    let bad = |why: String| TdvfError::Section {
        index,
        ty: ty.clone(),
        why,
    };
    s.section_type =
        SectionType::from_raw(raw_type).ok_or_else(|| bad(format!("unknown type {raw_type}")))?;
    let t = s.section_type;
    if s.attributes & !(ATTR_MR_EXTEND | ATTR_PAGE_AUG) != 0 {
        return Err(bad(format!(
            "attributes {:#x} have bits other than MR.EXTEND (0x1) and PAGE.AUG (0x2)",
            s.attributes
        )));
    }
    if s.mr_extend() && s.page_aug() {
        return Err(bad(format!(
            "attributes {:#x} ask for both MR.EXTEND and PAGE.AUG",
            s.attributes
        )));
    }
    if s.memory_address % 4096 != 0 {
        return Err(bad(format!(
            "MemoryAddress {:#x} is not 4 KiB aligned",
            s.memory_address
        )));
    }
    if s.memory_data_size == 0 || s.memory_data_size % 4096 != 0 {
        return Err(bad(format!(
            "MemoryDataSize {:#x} is not a non-zero multiple of 4 KiB",
            s.memory_data_size
        )));
    }
    match s.memory_address.checked_add(s.memory_data_size) {
        Some(end) if end <= MAX_GPA => {}
        _ => {
            return Err(bad(format!(
                "memory [MemoryAddress {:#x} + MemoryDataSize {:#x}] runs past GPA {MAX_GPA:#x}",
                s.memory_address, s.memory_data_size
            )))
        }
    }
    if u64::from(s.raw_data_size) > s.memory_data_size {
        return Err(bad(format!(
            "RawDataSize {:#x} is larger than MemoryDataSize {:#x}",
            s.raw_data_size, s.memory_data_size
        )));
    }
    if t.has_raw_data() {
        if s.raw_data_size == 0 && matches!(t, SectionType::Bfv | SectionType::Cfv) {
            return Err(bad(
                "RawDataSize is 0; BFV and CFV carry bytes from the image".to_string(),
            ));
        }
        let end = u64::from(s.data_offset) + u64::from(s.raw_data_size);
        if end > image.len() as u64 {
            return Err(TdvfError::SectionPastEnd {
                index,
                ty,
                data_offset: s.data_offset,
                size: s.raw_data_size,
                image_len: image.len(),
            });
        }
        if s.page_aug() {
            return Err(bad(format!(
                "attributes {:#x} ask for PAGE.AUG, but a section with raw data must be added",
                s.attributes
            )));
        }
    } else if s.raw_data_size != 0 || s.data_offset != 0 {
        return Err(bad(format!(
            "DataOffset {:#x} / RawDataSize {:#x}: a {t} section has no raw data (both must be 0)",
            s.data_offset, s.raw_data_size
        )));
    }
    Ok(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// (data_offset, raw_size, gpa, mem_size, type, attributes)
    pub(crate) type Spec = (u32, u32, u64, u64, u32, u32);

    /// A synthetic TDVF image: `size` bytes of 0xCC, the descriptor at `size − 0x1000`, the
    /// OVMF footer table with one TDX entry at the end.
    pub(crate) fn image(size: usize, sections: &[Spec]) -> Vec<u8> {
        let mut img = vec![0xCC; size];
        let d = size - 0x1000;
        img[d - 16..d].copy_from_slice(&TDX_METADATA_GUID);
        img[d..d + 4].copy_from_slice(b"TDVF");
        let n = sections.len() as u32;
        img[d + 4..d + 8].copy_from_slice(&(16 + 32 * n).to_le_bytes());
        img[d + 8..d + 12].copy_from_slice(&1u32.to_le_bytes());
        img[d + 12..d + 16].copy_from_slice(&n.to_le_bytes());
        for (i, s) in sections.iter().enumerate() {
            let e = d + 16 + 32 * i;
            img[e..e + 4].copy_from_slice(&s.0.to_le_bytes());
            img[e + 4..e + 8].copy_from_slice(&s.1.to_le_bytes());
            img[e + 8..e + 16].copy_from_slice(&s.2.to_le_bytes());
            img[e + 16..e + 24].copy_from_slice(&s.3.to_le_bytes());
            img[e + 24..e + 28].copy_from_slice(&s.4.to_le_bytes());
            img[e + 28..e + 32].copy_from_slice(&s.5.to_le_bytes());
        }
        img[size - 0x30..size - 0x20].copy_from_slice(&OVMF_TABLE_FOOTER_GUID);
        img[size - 0x32..size - 0x30].copy_from_slice(&(22u16 + 18).to_le_bytes());
        img[size - 0x42..size - 0x32].copy_from_slice(&TDX_METADATA_OFFSET_GUID);
        img[size - 0x44..size - 0x42].copy_from_slice(&22u16.to_le_bytes());
        img[size - 0x48..size - 0x44].copy_from_slice(&((size - d) as u32).to_le_bytes());
        img
    }

    /// A small well-formed image: BFV (measured, the last 32 KiB), CFV, TD_HOB, TempMem.
    pub(crate) fn good() -> Vec<u8> {
        image(
            0x10000,
            &[
                (0x8000, 0x8000, 0xFFFF_8000, 0x8000, 0, ATTR_MR_EXTEND),
                (0, 0x2000, 0xFFFF_0000, 0x2000, 1, 0),
                (0, 0, 0x80_9000, 0x2000, 2, 0),
                (0, 0, 0x80_0000, 0x6000, 3, 0),
            ],
        )
    }

    #[test]
    fn parses_good_image() {
        let img = good();
        let m = parse(&img).unwrap();
        assert_eq!(m.descriptor_offset, 0xF000);
        assert_eq!(m.sections.len(), 4);
        assert_eq!(m.sections[0].section_type, SectionType::Bfv);
        assert!(m.sections[0].mr_extend());
        assert_eq!(m.sections[0].raw_data(&img).unwrap().len(), 0x8000);
        assert_eq!(m.td_hob().unwrap().memory_address, 0x80_9000);
        assert_eq!(m.sections[3].section_type, SectionType::TempMem);
    }

    #[test]
    fn guid_byte_order() {
        // The stored form of 96b582de-1fb2-45f7-baea-a366c55a082d.
        assert_eq!(
            OVMF_TABLE_FOOTER_GUID,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
    }

    #[test]
    fn truncated_images_are_refused() {
        let img = good();
        for cut in [0usize, 1, 0x31, 0x100, 0x8000, img.len() - 1] {
            // A truncated image loses its footer (it sits at the end).
            assert!(parse(&img[..cut]).is_err(), "cut at {cut}");
        }
        // Cut from the front: the footer survives, the descriptor offset points before 0.
        let e = parse(&img[0xF800..]).unwrap_err();
        assert!(matches!(e, TdvfError::BadDescriptorOffset { .. }), "{e}");
    }

    #[test]
    fn section_past_end_names_section_and_values() {
        let img = image(0x10000, &[(0xC000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1)]);
        let e = parse(&img).unwrap_err();
        assert_eq!(
            e,
            TdvfError::SectionPastEnd {
                index: 0,
                ty: "BFV".into(),
                data_offset: 0xC000,
                size: 0x8000,
                image_len: 0x10000
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("#0 (BFV)") && msg.contains("0xc000") && msg.contains("0x8000"));
        // Offset + size overflowing u32 is also past the end, not a wrap.
        let img = image(0x10000, &[(0xFFFF_F000, 0x2000, 0, 0x2000, 0, 1)]);
        assert!(matches!(parse(&img), Err(TdvfError::SectionPastEnd { .. })));
    }

    fn section_err(spec: Spec) -> String {
        let img = image(
            0x10000,
            &[(0x8000, 0x1000, 0xFFFF_F000, 0x1000, 0, 1), spec],
        );
        parse(&img).unwrap_err().to_string()
    }

    #[test]
    fn corrupt_sections() {
        let e = section_err((0, 0, 0x1001, 0x1000, 3, 0));
        assert!(e.contains("#1 (TempMem)") && e.contains("0x1001"), "{e}");
        let e = section_err((0, 0, 0x1000, 0x1800, 3, 0));
        assert!(e.contains("MemoryDataSize 0x1800"), "{e}");
        let e = section_err((0, 0, 0x1000, 0, 3, 0));
        assert!(e.contains("MemoryDataSize 0x0"), "{e}");
        let e = section_err((0, 0, 0xFFFF_FFFF_FFFF_F000, 0x2000, 3, 0));
        assert!(e.contains("runs past GPA"), "{e}");
        let e = section_err((0, 0, 0x1000, 0x1000, 9, 0));
        assert!(e.contains("unknown type 9"), "{e}");
        let e = section_err((0, 0, 0x1000, 0x1000, 3, 4));
        assert!(e.contains("attributes 0x4"), "{e}");
        let e = section_err((0, 0, 0x1000, 0x1000, 3, 3));
        assert!(e.contains("both"), "{e}");
        let e = section_err((0, 0x2000, 0x1000, 0x1000, 1, 0));
        assert!(e.contains("RawDataSize 0x2000"), "{e}");
        let e = section_err((0, 0, 0x1000, 0x1000, 1, 0));
        assert!(e.contains("RawDataSize is 0"), "{e}");
        let e = section_err((0x100, 0x100, 0x1000, 0x1000, 3, 0));
        assert!(e.contains("no raw data"), "{e}");
        let e = section_err((0, 0x1000, 0x1000, 0x1000, 1, 2));
        assert!(e.contains("PAGE.AUG"), "{e}");
        let e = section_err((0, 0, 0xFFFF_F000, 0x1000, 3, 0));
        assert!(e.contains("overlaps section #0 (BFV)"), "{e}");
    }

    #[test]
    fn corrupt_metadata() {
        let mut img = good();
        img[0xF000] = b'X';
        assert!(matches!(parse(&img), Err(TdvfError::BadSignature { .. })));
        let mut img = good();
        img[0xF008] = 2;
        assert_eq!(parse(&img), Err(TdvfError::BadVersion(2)));
        let mut img = good();
        img[0xF00C..0xF010].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            parse(&img),
            Err(TdvfError::BadSectionCount { .. })
        ));
        let mut img = good();
        img[0xF004] = 0x50;
        assert!(matches!(
            parse(&img),
            Err(TdvfError::BadDescriptorLength { .. })
        ));
        let mut img = good();
        let n = img.len();
        img[n - 0x30] ^= 1;
        assert!(matches!(parse(&img), Err(TdvfError::NoFooter { .. })));
        let mut img = good();
        img[n - 0x42] ^= 1;
        assert_eq!(parse(&img), Err(TdvfError::NoTdxEntry));
        let mut img = good();
        img[n - 0x44..n - 0x42].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(matches!(parse(&img), Err(TdvfError::BadEntryLength { .. })));
        let mut img = good();
        img[n - 0x32..n - 0x30].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(matches!(parse(&img), Err(TdvfError::BadTableLength { .. })));
        let mut img = good();
        img[n - 0x48..n - 0x44].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        assert!(matches!(
            parse(&img),
            Err(TdvfError::BadDescriptorOffset { .. })
        ));
        // The descriptor offset points so near the end that the table cannot fit.
        let mut img = good();
        img[n - 0x48..n - 0x44].copy_from_slice(&0x20u32.to_le_bytes());
        assert!(parse(&img).is_err());
    }

    #[test]
    fn no_bfv_and_two_hobs() {
        let img = image(0x10000, &[(0, 0, 0x1000, 0x1000, 3, 0)]);
        assert!(parse(&img).unwrap_err().to_string().contains("no BFV"));
        let img = image(
            0x10000,
            &[
                (0x8000, 0x1000, 0xFFFF_F000, 0x1000, 0, 1),
                (0, 0, 0x1000, 0x1000, 2, 0),
                (0, 0, 0x2000, 0x1000, 2, 0),
            ],
        );
        assert!(parse(&img)
            .unwrap_err()
            .to_string()
            .contains("second TD_HOB"));
    }
}
