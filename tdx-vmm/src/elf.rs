//! The ELF payload loader: an x86-64 ELF64 executable (`ET_EXEC`) whose `PT_LOAD` segments
//! are copied, at their physical addresses, into the TD's initial image.
//!
//! The file is hostile input. Refused, with a message naming the segment and the value: not
//! ELF, not 64-bit, not little-endian, not x86-64, not an executable, more than
//! [`MAX_PROGRAM_HEADERS`] program headers or [`MAX_LOAD_SEGMENTS`] `PT_LOAD` segments, a
//! segment whose file bytes run past the file, `p_filesz > p_memsz`, `p_vaddr != p_paddr` (the
//! payload runs identity-mapped), a segment below [`MIN_LOAD_GPA`] (1 MiB; the page tables
//! and the TD HOB live below) or past the end of RAM, overlapping segments, and an entry
//! point outside every executable segment, and a dynamically linked file (`PT_INTERP`,
//! `PT_DYNAMIC`).
//!
//! The rest of the contract (page tables, HOB, registers) is in [`crate::image`] and the
//! crate README ("ELF payload contract").
use object::elf::{
    FileHeader64, ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_EXEC, PF_X, PT_DYNAMIC, PT_INTERP, PT_LOAD,
};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use crate::plan::InitialRegion;

/// Lowest GPA a segment may occupy: below it are the page tables (0x1000–0x6FFF) and the TD
/// HOB (0x8000).
pub const MIN_LOAD_GPA: u64 = 0x10_0000;
/// Most program headers accepted.
pub const MAX_PROGRAM_HEADERS: usize = 256;
/// Most `PT_LOAD` segments accepted.
pub const MAX_LOAD_SEGMENTS: usize = 32;
/// 4 KiB.
const PAGE: u64 = 4096;

/// One `PT_LOAD` segment, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of its program header.
    pub index: usize,
    /// GPA (`p_paddr`, equal to `p_vaddr`).
    pub gpa: u64,
    /// File offset of its bytes.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zero).
    pub memsz: u64,
    /// `p_flags` (PF_X 1, PF_W 2, PF_R 4).
    pub flags: u32,
}

impl Segment {
    /// End GPA (exclusive); checked not to overflow when parsed.
    pub const fn end(&self) -> u64 {
        self.gpa + self.memsz
    }
}

/// A checked ELF payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfPayload {
    /// Entry point (`e_entry`), inside an executable segment.
    pub entry: u64,
    /// The `PT_LOAD` segments with `p_memsz > 0`, sorted by GPA.
    pub segments: Vec<Segment>,
}

/// Why an ELF payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// No ELF magic.
    #[error("not an ELF file (first bytes {0:02x?}, expected 7f 45 4c 46)")]
    NotElf(Vec<u8>),
    /// ELF class is not 64-bit.
    #[error("ELF class {0} is not ELFCLASS64: a 32-bit ELF cannot be a TD payload")]
    Not64Bit(u8),
    /// Not little-endian.
    #[error("ELF data encoding {0} is not little-endian (ELFDATA2LSB)")]
    NotLittleEndian(u8),
    /// Not x86-64.
    #[error("ELF machine {0} is not x86-64 (EM_X86_64 = 62)")]
    NotX86_64(u16),
    /// Not an executable.
    #[error("ELF type {0} is not an executable (ET_EXEC = 2); relocatable and PIE payloads are not supported")]
    NotExecutable(u16),
    /// The headers are malformed (truncated file, bad sizes).
    #[error("malformed ELF: {0}")]
    Malformed(String),
    /// Too many program headers.
    #[error("{count} program headers, more than the {max} accepted")]
    TooManyHeaders {
        /// e_phnum.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Too many `PT_LOAD` segments.
    #[error("{count} PT_LOAD segments, more than the {max} accepted")]
    TooManySegments {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is dynamically linked (PT_INTERP or PT_DYNAMIC): nothing would relocate it.
    #[error(
        "program header #{index} is PT_INTERP/PT_DYNAMIC: the payload is dynamically linked; \
         link it static and non-PIE"
    )]
    Dynamic {
        /// The program header index.
        index: usize,
    },
    /// No loadable segment.
    #[error("no PT_LOAD segment with memory: nothing to load")]
    NoSegments,
    /// A segment is unacceptable.
    #[error("PT_LOAD segment #{index}: {why}")]
    Segment {
        /// Its program header index.
        index: usize,
        /// What is wrong, with the value.
        why: String,
    },
    /// Two segments overlap.
    #[error(
        "PT_LOAD segment #{a} [{a_start:#x}, {a_end:#x}) overlaps segment #{b} [{b_start:#x}, \
         {b_end:#x})"
    )]
    Overlap {
        /// First segment's program header index.
        a: usize,
        /// Its start.
        a_start: u64,
        /// Its end.
        a_end: u64,
        /// Second segment's program header index.
        b: usize,
        /// Its start.
        b_start: u64,
        /// Its end.
        b_end: u64,
    },
    /// The entry point is in no executable segment.
    #[error("entry point {0:#x} is not inside an executable (PF_X) PT_LOAD segment")]
    EntryOutside(u64),
}

/// Parses and checks an ELF payload for a TD with `memory_size` bytes of RAM.
pub fn parse(data: &[u8], memory_size: u64) -> Result<ElfPayload, ElfError> {
    if data.len() < 16 || data[..4] != [0x7f, b'E', b'L', b'F'] {
        return Err(ElfError::NotElf(data[..data.len().min(4)].to_vec()));
    }
    if data[4] != ELFCLASS64.0 {
        return Err(ElfError::Not64Bit(data[4]));
    }
    if data[5] != ELFDATA2LSB.0 {
        return Err(ElfError::NotLittleEndian(data[5]));
    }
    let malformed = |e: object::read::Error| ElfError::Malformed(e.to_string());
    let header = FileHeader64::<Endianness>::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let machine = header.e_machine(endian);
    if machine != EM_X86_64 {
        return Err(ElfError::NotX86_64(machine.0));
    }
    let e_type = header.e_type(endian);
    if e_type != ET_EXEC {
        return Err(ElfError::NotExecutable(e_type.0));
    }
    let phnum = header.phnum(endian, data).map_err(malformed)? as usize;
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::TooManyHeaders {
            count: phnum,
            max: MAX_PROGRAM_HEADERS,
        });
    }
    let phdrs = header.program_headers(endian, data).map_err(malformed)?;
    let loads = phdrs.iter().filter(|p| p.p_type(endian) == PT_LOAD).count();
    if loads > MAX_LOAD_SEGMENTS {
        return Err(ElfError::TooManySegments {
            count: loads,
            max: MAX_LOAD_SEGMENTS,
        });
    }
    let mut segments = Vec::with_capacity(loads);
    for (index, p) in phdrs.iter().enumerate() {
        let p_type = p.p_type(endian);
        if p_type == PT_INTERP || p_type == PT_DYNAMIC {
            return Err(ElfError::Dynamic { index });
        }
        if p_type != PT_LOAD {
            continue;
        }
        let bad = |why: String| ElfError::Segment { index, why };
        let s = Segment {
            index,
            gpa: p.p_paddr(endian),
            offset: p.p_offset(endian),
            filesz: p.p_filesz(endian),
            memsz: p.p_memsz(endian),
            flags: p.p_flags(endian).0,
        };
        let vaddr = p.p_vaddr(endian);
        if s.memsz == 0 {
            if s.filesz != 0 {
                return Err(bad(format!("p_filesz {:#x} > p_memsz 0", s.filesz)));
            }
            continue;
        }
        if vaddr != s.gpa {
            return Err(bad(format!(
                "p_vaddr {vaddr:#x} differs from p_paddr {:#x}; payloads run identity-mapped",
                s.gpa
            )));
        }
        if s.filesz > s.memsz {
            return Err(bad(format!(
                "p_filesz {:#x} is larger than p_memsz {:#x}",
                s.filesz, s.memsz
            )));
        }
        match s.offset.checked_add(s.filesz) {
            Some(end) if end <= data.len() as u64 => {}
            _ => {
                return Err(bad(format!(
                    "file bytes [p_offset {:#x} + p_filesz {:#x}] run past the end of the \
                     {:#x}-byte file",
                    s.offset,
                    s.filesz,
                    data.len()
                )))
            }
        }
        if s.gpa < MIN_LOAD_GPA {
            return Err(bad(format!(
                "p_paddr {:#x} is below 1 MiB ({MIN_LOAD_GPA:#x}), where the page tables and the \
                 TD HOB live",
                s.gpa
            )));
        }
        match s.gpa.checked_add(s.memsz) {
            Some(end) if end <= memory_size => {}
            _ => {
                return Err(bad(format!(
                    "[p_paddr {:#x} + p_memsz {:#x}] runs past the end of RAM ({memory_size:#x} \
                     bytes; raise `memory` in td.toml)",
                    s.gpa, s.memsz
                )))
            }
        }
        segments.push(s);
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    segments.sort_by_key(|s| s.gpa);
    for pair in segments.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.gpa < a.end() {
            return Err(ElfError::Overlap {
                a: a.index,
                a_start: a.gpa,
                a_end: a.end(),
                b: b.index,
                b_start: b.gpa,
                b_end: b.end(),
            });
        }
    }
    let entry = header.e_entry(endian);
    if !segments
        .iter()
        .any(|s| s.flags & PF_X.0 != 0 && s.gpa <= entry && entry < s.end())
    {
        return Err(ElfError::EntryOutside(entry));
    }
    Ok(ElfPayload { entry, segments })
}

impl ElfPayload {
    /// The initial-image regions of the segments: page-granular, zero-padded, measured.
    /// Segments sharing a page are coalesced into one region (named after all of them).
    /// `data` must be the file the payload was parsed from; a segment whose bytes it does not
    /// hold is refused.
    pub fn regions(&self, data: &[u8]) -> Result<Vec<InitialRegion>, ElfError> {
        let mut regions: Vec<(u64, u64, Vec<&Segment>)> = Vec::new();
        for s in &self.segments {
            let start = s.gpa & !(PAGE - 1);
            // end ≤ memory_size ≤ u64::MAX − PAGE (checked at parse time).
            let end = s.end().div_ceil(PAGE) * PAGE;
            match regions.last_mut() {
                Some(last) if start < last.1 => {
                    last.1 = last.1.max(end);
                    last.2.push(s);
                }
                _ => regions.push((start, end, vec![s])),
            }
        }
        regions
            .into_iter()
            .map(|(start, end, segs)| {
                let mut bytes = vec![0u8; (end - start) as usize];
                for s in &segs {
                    // Inside the region by construction; the file range is checked here
                    // against `data` rather than trusted from parse time.
                    let at = (s.gpa - start) as usize;
                    let src = usize::try_from(s.offset)
                        .ok()
                        .and_then(|from| data.get(from..from.checked_add(s.filesz as usize)?));
                    let (Some(src), Some(dst)) = (src, bytes.get_mut(at..at + s.filesz as usize))
                    else {
                        return Err(ElfError::Segment {
                            index: s.index,
                            why: format!(
                                "file bytes [{:#x}, +{:#x}) are not in the {:#x} bytes given",
                                s.offset,
                                s.filesz,
                                data.len()
                            ),
                        });
                    };
                    dst.copy_from_slice(src);
                }
                let names: Vec<String> = segs.iter().map(|s| format!("#{}", s.index)).collect();
                Ok(InitialRegion {
                    gpa: start,
                    data: bytes,
                    measure: true,
                    name: format!("PT_LOAD {}", names.join("+")),
                })
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// (p_type, p_flags, p_offset, p_paddr, p_filesz, p_memsz); p_vaddr = p_paddr.
    pub(crate) type Ph = (u32, u32, u64, u64, u64, u64);

    /// A minimal ELF64 x86-64 executable: header, program headers, then `body` at 0x1000.
    pub(crate) fn elf(entry: u64, phdrs: &[Ph], body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        for (i, p) in phdrs.iter().enumerate() {
            let o = 64 + 56 * i;
            f[o..o + 4].copy_from_slice(&p.0.to_le_bytes());
            f[o + 4..o + 8].copy_from_slice(&p.1.to_le_bytes());
            f[o + 8..o + 16].copy_from_slice(&p.2.to_le_bytes());
            f[o + 16..o + 24].copy_from_slice(&p.3.to_le_bytes());
            f[o + 24..o + 32].copy_from_slice(&p.3.to_le_bytes());
            f[o + 32..o + 40].copy_from_slice(&p.4.to_le_bytes());
            f[o + 40..o + 48].copy_from_slice(&p.5.to_le_bytes());
            f[o + 48..o + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        f.extend_from_slice(body);
        f
    }

    const MEM: u64 = 64 << 20;

    /// Text (RX) at 1 MiB, data (RW, with .bss) sharing its last page, a second data segment.
    pub(crate) fn good() -> Vec<u8> {
        let body: Vec<u8> = (0..0x3000u32).map(|i| (i % 251) as u8 + 1).collect();
        elf(
            0x10_0010,
            &[
                (1, 5, 0x1000, 0x10_0000, 0x1800, 0x1800),
                (1, 6, 0x2800, 0x10_1800, 0x400, 0x1000),
                (4, 4, 0x1000, 0, 0x10, 0x10), // PT_NOTE: ignored
                (1, 6, 0x3000, 0x20_0000, 0x1000, 0x3000),
            ],
            &body,
        )
    }

    #[test]
    fn loads_and_coalesces_segments() {
        let f = good();
        let p = parse(&f, MEM).unwrap();
        assert_eq!(p.entry, 0x10_0010);
        assert_eq!(p.segments.len(), 3);
        let r = p.regions(&f).unwrap();
        assert_eq!(r.len(), 2);
        // Bytes other than the parsed file's are refused, not indexed out of bounds.
        assert!(p.regions(&f[..0x2000]).is_err());
        assert_eq!(r[0].name, "PT_LOAD #0+#1");
        assert_eq!(r[0].gpa, 0x10_0000);
        assert_eq!(r[0].data.len(), 0x3000);
        assert_eq!(&r[0].data[..0x1800], &f[0x1000..0x2800]);
        assert_eq!(&r[0].data[0x1800..0x1C00], &f[0x2800..0x2C00]);
        assert!(r[0].data[0x1C00..].iter().all(|&b| b == 0));
        assert!(r[0].measure);
        assert_eq!(r[1].name, "PT_LOAD #3");
        assert_eq!(r[1].gpa, 0x20_0000);
        assert_eq!(r[1].data.len(), 0x3000);
        assert_eq!(&r[1].data[..0x1000], &f[0x3000..0x4000]);
        assert!(r[1].data[0x1000..].iter().all(|&b| b == 0));
    }

    fn err(f: &[u8]) -> String {
        parse(f, MEM).unwrap_err().to_string()
    }

    #[test]
    fn bad_files() {
        assert!(err(b"#!/bin/sh\necho hi\n").contains("not an ELF"));
        assert!(err(b"").contains("not an ELF"));
        let mut f = good();
        f[4] = 1;
        assert!(err(&f).contains("32-bit"));
        let mut f = good();
        f[5] = 2;
        assert!(err(&f).contains("little-endian"));
        let mut f = good();
        f[18] = 3;
        assert!(err(&f).contains("machine 3"));
        let mut f = good();
        f[16] = 3;
        assert!(err(&f).contains("type 3"));
        let mut f = good();
        f[56..58].copy_from_slice(&1000u16.to_le_bytes());
        let e = err(&f);
        assert!(e.contains("malformed") || e.contains("1000"), "{e}");
        assert!(err(&good()[..40]).contains("malformed"));
    }

    #[test]
    fn bad_segments() {
        let body = [0x90u8; 0x1000];
        let one = |ph: Ph| {
            err(&elf(
                0x10_0000,
                &[(1, 5, 0x1000, 0x10_0000, 0x10, 0x10), ph],
                &body,
            ))
        };
        let e = one((1, 6, 0x1000, 0x8000, 0x10, 0x10));
        assert!(
            e.contains("#1") && e.contains("0x8000") && e.contains("below 1 MiB"),
            "{e}"
        );
        let e = one((1, 6, 0x1000, 0x20_0000, 0x20, 0x10));
        assert!(e.contains("#1") && e.contains("p_filesz 0x20"), "{e}");
        let e = one((1, 6, 0x1800, 0x20_0000, 0x1000, 0x1000));
        assert!(e.contains("#1") && e.contains("past the end"), "{e}");
        let e = one((1, 6, 0x1000, MEM - 0x1000, 0x10, 0x2000));
        assert!(e.contains("#1") && e.contains("end of RAM"), "{e}");
        let e = one((1, 6, 0x1000, u64::MAX - 0xF, 0x10, 0x20));
        assert!(e.contains("end of RAM"), "{e}");
        let e = one((1, 6, 0x1000, 0x10_0008, 0x10, 0x10));
        assert!(
            e.contains("overlaps") && e.contains("#0") && e.contains("#1"),
            "{e}"
        );
        let e = err(&elf(
            0x30_0000,
            &[(1, 5, 0x1000, 0x10_0000, 0x10, 0x10)],
            &body,
        ));
        assert!(e.contains("0x300000"), "{e}");
        // Entry in a non-executable segment.
        let e = err(&elf(
            0x10_0000,
            &[(1, 6, 0x1000, 0x10_0000, 0x10, 0x10)],
            &body,
        ));
        assert!(e.contains("entry point"), "{e}");
        let e = err(&elf(0x10_0000, &[(4, 4, 0x1000, 0, 0x10, 0x10)], &body));
        assert!(e.contains("no PT_LOAD"), "{e}");
        let e = one((3, 4, 0x1000, 0, 0x10, 0x10));
        assert!(e.contains("#1") && e.contains("dynamically linked"), "{e}");
        let e = one((2, 6, 0x1000, 0, 0x10, 0x10));
        assert!(e.contains("dynamically linked"), "{e}");
        let many: Vec<Ph> = (0..33)
            .map(|i| (1, 5, 0x1000, 0x10_0000 + 0x1000 * i, 0x10, 0x10))
            .collect();
        assert!(err(&elf(0x10_0000, &many, &body)).contains("33 PT_LOAD"));
        let mut f = elf(0x10_0000, &[(1, 5, 0x1000, 0x10_0000, 0x10, 0x10)], &body);
        f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        f[64 + 16..64 + 24].copy_from_slice(&0x20_0000u64.to_le_bytes()); // p_vaddr ≠ p_paddr
        assert!(err(&f).contains("p_vaddr"));
    }
}
