//! Checks the layout contract of the built TD payload ELF (what the VMM loader relies on).

use object::elf::{
    FileHeader64, ET_EXEC, PT_DYNAMIC, PT_INTERP, PT_LOAD, SHT_NOBITS, SHT_REL, SHT_RELA,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::LittleEndian;
use tdx_payloads::{TD_PAYLOAD_ELF, TD_PAYLOAD_LOAD_BASE};

type Hdr = FileHeader64<LittleEndian>;

#[test]
fn payload_is_a_static_x86_64_executable_entered_inside_a_load_segment() {
    let hdr = Hdr::parse(TD_PAYLOAD_ELF).expect("ELF header");
    let e = hdr.endian().expect("endianness");
    assert!(hdr.is_class_64());
    assert_eq!(hdr.e_machine(e), object::elf::EM_X86_64);
    assert_eq!(hdr.e_type(e), ET_EXEC, "must be ET_EXEC (non-PIE)");
    let entry = hdr.e_entry(e);
    let phdrs = hdr
        .program_headers(e, TD_PAYLOAD_ELF)
        .expect("program headers");
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
    let hdr = Hdr::parse(TD_PAYLOAD_ELF).expect("ELF header");
    let e = hdr.endian().expect("endianness");
    let sections = hdr.sections(e, TD_PAYLOAD_ELF).expect("section table");
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

#[test]
fn payload_entry_starts_with_cli() {
    // The first instruction at the entry is `cli` (0xFA): the ring-0 shim is what is entered.
    let hdr = Hdr::parse(TD_PAYLOAD_ELF).expect("ELF header");
    let e = hdr.endian().expect("endianness");
    let entry = hdr.e_entry(e);
    let phdrs = hdr
        .program_headers(e, TD_PAYLOAD_ELF)
        .expect("program headers");
    let ph = phdrs
        .iter()
        .find(|p| {
            p.p_type(e) == PT_LOAD && (p.p_vaddr(e)..p.p_vaddr(e) + p.p_filesz(e)).contains(&entry)
        })
        .expect("segment holding the entry");
    let off = (ph.p_offset(e) + entry - ph.p_vaddr(e)) as usize;
    assert_eq!(TD_PAYLOAD_ELF.get(off), Some(&0xFA));
}
