//! Builders shared by the tdx-vmm integration tests (independent of the crate's own code).
#![allow(dead_code)]

/// An x86-64 ELF64 executable; `phdrs` are (flags, file offset, paddr, filesz, memsz),
/// `class` 2 for 64-bit.
pub fn elf(class: u8, entry: u64, phdrs: &[(u32, u64, u64, u64, u64)], body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = class;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
    for (i, &(flags, off, paddr, filesz, memsz)) in phdrs.iter().enumerate() {
        let o = 64 + 56 * i;
        f[o..o + 4].copy_from_slice(&1u32.to_le_bytes());
        f[o + 4..o + 8].copy_from_slice(&flags.to_le_bytes());
        f[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
        f[o + 16..o + 24].copy_from_slice(&paddr.to_le_bytes());
        f[o + 24..o + 32].copy_from_slice(&paddr.to_le_bytes());
        f[o + 32..o + 40].copy_from_slice(&filesz.to_le_bytes());
        f[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
    }
    f.extend_from_slice(body);
    f
}

/// Assembles the GNU as (Intel syntax, 64-bit) source `src` into flat machine code, or `None`
/// (after a loud SKIPPED line) when binutils is not installed.
pub fn assemble(name: &str, src: &str) -> Option<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("tdx-vmm-asm-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let s = dir.join("g.s");
    let o = dir.join("g.o");
    let bin = dir.join("g.bin");
    std::fs::write(&s, src).ok()?;
    let ok = |c: &mut std::process::Command| c.status().is_ok_and(|st| st.success());
    if !ok(std::process::Command::new("as").arg(&s).arg("-o").arg(&o)) {
        eprintln!("SKIPPED: GNU as is not available to assemble the {name} guest");
        return None;
    }
    assert!(
        ok(std::process::Command::new("objcopy")
            .args(["-O", "binary"])
            .arg(&o)
            .arg(&bin)),
        "objcopy failed on the {name} guest"
    );
    let code = std::fs::read(&bin).ok();
    let _ = std::fs::remove_dir_all(&dir);
    code
}
