//! Checks the layout contract of the built TD payload ELF (what the VMM loader relies on).

use object::elf::{
    FileHeader64, ET_EXEC, PT_DYNAMIC, PT_INTERP, PT_LOAD, SHT_NOBITS, SHT_REL, SHT_RELA,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::LittleEndian;

/// The ELF bytes, 8-byte aligned (`include_bytes!` data may not be, and `object` parses the
/// 64-bit headers in place).
fn elf() -> &'static [u8] {
    let src = tdx_payloads::TD_PAYLOAD_ELF;
    let words: &'static mut [u64] = Box::leak(vec![0u64; src.len().div_ceil(8)].into_boxed_slice());
    // SAFETY: `words` is a live, exclusively owned allocation of at least `src.len()` bytes;
    // u8 has no alignment or validity requirements.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), src.len()) };
    bytes.copy_from_slice(src);
    bytes
}

/// The loader keeps GPAs below 1 MiB for its page tables and the TD HOB.
const TD_PAYLOAD_LOAD_BASE: u64 = 0x10_0000;

type Hdr = FileHeader64<LittleEndian>;

#[test]
fn payload_is_a_static_x86_64_executable_entered_inside_a_load_segment() {
    let hdr = Hdr::parse(elf()).expect("ELF header");
    let e = hdr.endian().expect("endianness");
    assert!(hdr.is_class_64());
    assert_eq!(hdr.e_machine(e), object::elf::EM_X86_64);
    assert_eq!(hdr.e_type(e), ET_EXEC, "must be ET_EXEC (non-PIE)");
    let entry = hdr.e_entry(e);
    let phdrs = hdr.program_headers(e, elf()).expect("program headers");
    let mut loads = 0;
    let mut entry_in_exec_load = false;
    for ph in phdrs {
        let kind = ph.p_type(e);
        assert_ne!(kind, PT_INTERP, "no interpreter");
        assert_ne!(kind, PT_DYNAMIC, "no dynamic section");
        if kind != PT_LOAD {
            continue;
        }
        loads += 1;
        let (vaddr, paddr) = (ph.p_vaddr(e), ph.p_paddr(e));
        let (filesz, memsz) = (ph.p_filesz(e), ph.p_memsz(e));
        assert!(
            paddr >= TD_PAYLOAD_LOAD_BASE,
            "PT_LOAD at {paddr:#x} below 1 MiB"
        );
        assert_eq!(vaddr, paddr, "identity-mapped: vaddr == paddr");
        assert_eq!(
            filesz, memsz,
            "PT_LOAD at {paddr:#x}: filesz != memsz (.bss outside the image)"
        );
        assert!(
            paddr + memsz <= 4 << 30,
            "PT_LOAD at {paddr:#x} beyond 4 GiB"
        );
        if ph.p_flags(e) & object::elf::PF_X != 0 && (paddr..paddr + memsz).contains(&entry) {
            entry_in_exec_load = true;
        }
    }
    assert!(loads >= 1, "no PT_LOAD segment");
    assert!(
        entry_in_exec_load,
        "entry {entry:#x} not in an executable PT_LOAD"
    );
    assert_eq!(
        entry, TD_PAYLOAD_LOAD_BASE,
        "_start is first in .text at the load base"
    );
}

#[test]
fn payload_has_no_relocations_and_no_nobits_allocated_sections() {
    let hdr = Hdr::parse(elf()).expect("ELF header");
    let e = hdr.endian().expect("endianness");
    let sections = hdr.sections(e, elf()).expect("section table");
    for s in sections.iter() {
        let name = sections.section_name(e, s).unwrap_or(b"?");
        let name = String::from_utf8_lossy(name);
        let t = s.sh_type(e);
        assert!(t != SHT_RELA && t != SHT_REL, "relocation section {name}");
        if s.sh_flags(e) & u64::from(object::elf::SHF_ALLOC) != 0 {
            assert_ne!(
                t, SHT_NOBITS,
                "allocated NOBITS section {name} would not be loaded"
            );
        }
    }
}
