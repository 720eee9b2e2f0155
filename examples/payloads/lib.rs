//! The example TD payload (`examples/td-payload`: a `no_std` ring-0 stub plus a ring-3 Rust
//! body), built from source by this crate's build script for the host's x86-64 target as a
//! static, non-PIE ELF that follows `tdx-vmm`'s ELF payload contract.
//!
//! `tdx-vmm` uses it for `payload = "builtin:td-payload"` in td.toml (the README's main
//! command); tests load it like any payload file.

/// The payload's ELF image.
pub const TD_PAYLOAD_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/td-payload.elf"));

/// The message the payload extends into RTMR 2 (as SHA-384) and puts in REPORTDATA.
pub const TD_PAYLOAD_MESSAGE: &[u8] = b"tdx-host example TD payload";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_a_static_x86_64_executable_at_one_mib() {
        let e = TD_PAYLOAD_ELF;
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(e[4], 2, "ELF64");
        assert_eq!(u16::from_le_bytes([e[16], e[17]]), 2, "ET_EXEC");
        assert_eq!(u16::from_le_bytes([e[18], e[19]]), 62, "EM_X86_64");
        let entry = u64::from_le_bytes(e[24..32].try_into().unwrap());
        assert!(entry >= 0x10_0000, "entry {entry:#x}");
        let phoff = u64::from_le_bytes(e[32..40].try_into().unwrap()) as usize;
        let phnum = u16::from_le_bytes([e[56], e[57]]) as usize;
        let mut loads = 0;
        for i in 0..phnum {
            let p = &e[phoff + 56 * i..phoff + 56 * (i + 1)];
            let ty = u32::from_le_bytes(p[0..4].try_into().unwrap());
            assert!(ty != 3 && ty != 2, "no PT_INTERP / PT_DYNAMIC");
            if ty == 1 {
                loads += 1;
                let paddr = u64::from_le_bytes(p[24..32].try_into().unwrap());
                let filesz = u64::from_le_bytes(p[32..40].try_into().unwrap());
                let memsz = u64::from_le_bytes(p[40..48].try_into().unwrap());
                assert!(paddr >= 0x10_0000);
                assert_eq!(filesz, memsz, ".bss is file-backed");
            }
        }
        assert!(loads >= 2);
    }
}
