//! Locating the memory-writing instruction that ends at a given RIP.
//!
//! KVM's instruction emulator commits RIP before it exits to userspace for an MMIO *write*
//! (`x86_emulate_instruction`: only reads skip the writeback), so at the exit RIP is after the
//! instruction, while TDX reports #VE and EPT violations with RIP on it. The engine therefore
//! searches the up-to-15 bytes before RIP for a start from which one instruction of a
//! memory-writing form ends exactly at RIP, taking the earliest such start (so prefixes are
//! included). This is a heuristic: the forms decoded are the integer stores compilers emit
//! (MOV, MOV imm, ALU r/m ops, XCHG, INC/DEC/NOT/NEG, shifts, SETcc, CMPXCHG, XADD, BTS/BTR/BTC,
//! MOVS/STOS, MOV moffs); an instruction outside them, or a previous instruction's last bytes
//! that happen to read as a prefix, give a wrong or no start.

/// Legacy prefixes.
fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65
    )
}

/// Length of the ModRM + SIB + displacement bytes at `b` (64-bit addressing), and whether the
/// operand is in memory.
fn modrm_len(b: &[u8], addr32: bool) -> Option<(usize, bool, u8)> {
    let m = *b.first()?;
    let (md, reg, rm) = (m >> 6, (m >> 3) & 7, m & 7);
    if md == 3 {
        return Some((1, false, reg));
    }
    let _ = addr32; // 67h changes the registers, not the encoding lengths, in 64-bit mode
    let mut len = 1;
    let mut base5 = rm == 5;
    if rm == 4 {
        let sib = *b.get(1)?;
        len += 1;
        base5 = sib & 7 == 5;
    }
    len += match md {
        0 if base5 => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    Some((len, true, reg))
}

/// Decodes one instruction at `b`; returns its length if it is a memory-writing form.
fn decode_write(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut opsize16 = false;
    let mut addr32 = false;
    while i < 4 && b.get(i).copied().is_some_and(is_legacy_prefix) {
        opsize16 |= b[i] == 0x66;
        addr32 |= b[i] == 0x67;
        i += 1;
    }
    let mut rex_w = false;
    if let Some(r @ 0x40..=0x4F) = b.get(i).copied() {
        rex_w = r & 8 != 0;
        i += 1;
    }
    let op = *b.get(i)?;
    i += 1;
    let imm_z = if opsize16 && !rex_w { 2 } else { 4 };
    let modrm = |i: usize, imm: usize| -> Option<usize> {
        let (l, mem, _) = modrm_len(b.get(i..)?, addr32)?;
        mem.then_some(i + l + imm)
    };
    match op {
        // ALU r/m, r (ADD OR ADC SBB AND SUB XOR), XCHG, MOV r/m, r / sreg.
        0x00 | 0x01 | 0x08 | 0x09 | 0x10 | 0x11 | 0x18 | 0x19 | 0x20 | 0x21 | 0x28 | 0x29
        | 0x30 | 0x31 | 0x86 | 0x87 | 0x88 | 0x89 | 0x8C => modrm(i, 0),
        0x80 | 0x83 | 0xC6 | 0xC0 | 0xC1 => modrm(i, 1),
        0x81 | 0xC7 => modrm(i, imm_z),
        0xD0..=0xD3 | 0xFE | 0xFF => modrm(i, 0),
        0xF6 | 0xF7 => {
            let (l, mem, reg) = modrm_len(b.get(i..)?, addr32)?;
            let imm = match (op, reg) {
                (0xF6, 0 | 1) => 1,
                (0xF7, 0 | 1) => imm_z,
                _ => 0,
            };
            mem.then_some(i + l + imm)
        }
        0xA4 | 0xA5 | 0xAA | 0xAB => Some(i),
        0xA2 | 0xA3 => Some(i + if addr32 { 4 } else { 8 }),
        0x0F => {
            let op2 = *b.get(i)?;
            i += 1;
            match op2 {
                0x90..=0x9F | 0xB0 | 0xB1 | 0xC0 | 0xC1 | 0xAB | 0xB3 | 0xBB => modrm(i, 0),
                0xBA => modrm(i, 1),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Given the (up to 15) bytes that end at RIP, the length of the memory-writing instruction
/// that ends there (see the module docs), or `None`.
pub(super) fn write_len_before(tail: &[u8]) -> Option<usize> {
    let n = tail.len();
    (1..=n.min(15))
        .rev()
        .find(|&len| decode_write(&tail[n - len..]) == Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_common_stores() {
        // mov ebx, 0x40100000 ; mov [rbx], rax
        let t = [0xbb, 0x00, 0x00, 0x10, 0x40, 0x48, 0x89, 0x03];
        assert_eq!(write_len_before(&t), Some(3));
        // mov dword [rip+0x10], 5
        let t = [0x90, 0xc7, 0x05, 0x10, 0, 0, 0, 5, 0, 0, 0];
        assert_eq!(write_len_before(&t), Some(10));
        // rep stosq
        assert_eq!(write_len_before(&[0x90, 0xf3, 0x48, 0xab]), Some(3));
        // mov [rsp+8], r12
        assert_eq!(
            write_len_before(&[0x90, 0x4c, 0x89, 0x64, 0x24, 0x08]),
            Some(5)
        );
        // a register-only instruction is no store
        assert_eq!(write_len_before(&[0x90, 0x48, 0x89, 0xc3]), None);
    }
}
