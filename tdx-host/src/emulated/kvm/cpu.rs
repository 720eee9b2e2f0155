//! vCPU register state: the TD entry states, GPR conversion and segment loading.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use crate::backend::GuestEntry;

/// CR0 of the 64-bit entry: PE | MP | ET | NE | WP | PG.
pub const LONG64_CR0: u64 = 1 | 2 | 0x10 | 0x20 | (1 << 16) | (1 << 31);
/// CR4 of the 64-bit entry: PAE | OSFXSR | OSXMMEXCPT.
pub const LONG64_CR4: u64 = 0x20 | 0x200 | 0x400;
/// EFER of the 64-bit entry: LME | LMA | NXE.
pub const LONG64_EFER: u64 = 0x100 | 0x400 | 0x800;
/// CS selector of the 64-bit entry.
pub const LONG64_CS: u16 = 0x08;
/// Data-segment selector of the 64-bit entry (DS, ES, FS, GS, SS).
pub const LONG64_DS: u16 = 0x10;

/// RIP of the reset-vector entry (`td_vmcs_init.c`: GUEST_RIP 0xFFFFFFF0).
pub const RESET_RIP: u64 = 0xFFFF_FFF0;

/// A segment from its VMX access-rights word (type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13,
/// D/B 14, G 15, unusable 16), as the TDX module's VMCS initialisation writes them.
fn seg_from_ar(selector: u16, base: u64, limit: u32, ar: u32) -> kvm_segment {
    kvm_segment {
        base,
        limit,
        selector,
        type_: (ar & 0xF) as u8,
        s: ((ar >> 4) & 1) as u8,
        dpl: ((ar >> 5) & 3) as u8,
        present: ((ar >> 7) & 1) as u8,
        avl: ((ar >> 12) & 1) as u8,
        l: ((ar >> 13) & 1) as u8,
        db: ((ar >> 14) & 1) as u8,
        g: ((ar >> 15) & 1) as u8,
        unusable: ((ar >> 16) & 1) as u8,
        padding: 0,
    }
}

/// Applies the entry state to `sregs`/`regs` (GPRs come from the module: VP.INIT's values).
///
/// * [`GuestEntry::ResetVector`]: the values of the TDX module's `td_vmcs_init.c`
///   (`td_vmcs_migrated_state_init_map` / `..._non_migrated_...`, tag TDX_1.5.01): RIP
///   0xFFFFFFF0, RFLAGS 0x2, CS limit 0xFFFFFFFF AR 0xC09B (32-bit code), DS/ES/FS/GS/SS limit
///   0xFFFFFFFF AR 0xC093, LDTR limit 0xFFFF AR 0x10082 (unusable), TR limit 0xFFFF AR 0x8B,
///   GDTR limit 0xFFFF, selectors and bases 0, CR0 0x21 (PE | NE), CR4 0x40 (MCE; the VMXE bit
///   of the VMCS value is the host's and hidden from the guest), EFER 0x901 (SCE | LME | NXE,
///   paging off so LMA stays 0).
/// * [`GuestEntry::Long64`]: see [`super::KvmEngine`].
pub fn apply_entry(entry: &GuestEntry, sregs: &mut kvm_sregs, regs: &mut kvm_regs) {
    regs.rflags = 2;
    sregs.ldt = seg_from_ar(0, 0, 0xFFFF, 0x1_0082);
    sregs.tr = seg_from_ar(0, 0, 0xFFFF, 0x8B);
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.gdt.base = 0;
    match *entry {
        GuestEntry::ResetVector => {
            regs.rip = RESET_RIP;
            sregs.cs = seg_from_ar(0, 0, 0xFFFF_FFFF, 0xC09B);
            let ds = seg_from_ar(0, 0, 0xFFFF_FFFF, 0xC093);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (ds, ds, ds, ds, ds);
            sregs.gdt.limit = 0xFFFF;
            sregs.cr0 = 0x21;
            sregs.cr3 = 0;
            sregs.cr4 = 0x40;
            sregs.efer = 0x901;
        }
        GuestEntry::Long64 { rip, cr3 } => {
            regs.rip = rip;
            // 64-bit code: P, S, DPL 0, type 0xB, L = 1, D = 0, G = 1.
            sregs.cs = seg_from_ar(LONG64_CS, 0, 0xFFFF_FFFF, 0xA09B);
            let ds = seg_from_ar(LONG64_DS, 0, 0xFFFF_FFFF, 0xC093);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (ds, ds, ds, ds, ds);
            sregs.gdt.limit = 0;
            sregs.cr0 = LONG64_CR0;
            sregs.cr3 = cr3;
            sregs.cr4 = LONG64_CR4;
            sregs.efer = LONG64_EFER;
        }
    }
}

/// Copies the module's GPRs (architectural order, RSP slot skipped) into `regs`.
pub(super) fn load_gprs(regs: &mut kvm_regs, g: &[u64; 16]) {
    regs.rax = g[0];
    regs.rcx = g[1];
    regs.rdx = g[2];
    regs.rbx = g[3];
    regs.rbp = g[5];
    regs.rsi = g[6];
    regs.rdi = g[7];
    regs.r8 = g[8];
    regs.r9 = g[9];
    regs.r10 = g[10];
    regs.r11 = g[11];
    regs.r12 = g[12];
    regs.r13 = g[13];
    regs.r14 = g[14];
    regs.r15 = g[15];
}

/// The GPRs of `regs` in architectural order (RSP included at index 4).
pub(super) fn store_gprs(regs: &kvm_regs) -> [u64; 16] {
    [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ]
}

/// A segment register loaded from an 8-byte GDT descriptor, as the CPU would on IRET (64-bit
/// code segments use L; data segments ignore base and limit in 64-bit mode).
pub(super) fn seg_from_descriptor(selector: u16, desc: u64) -> kvm_segment {
    let limit_raw = ((desc & 0xFFFF) | ((desc >> 32) & 0xF_0000)) as u32;
    let base = ((desc >> 16) & 0xFF_FFFF) | (((desc >> 56) & 0xFF) << 24);
    let ar = ((desc >> 40) & 0xFF) as u32 | ((((desc >> 52) & 0xF) as u32) << 12);
    let g = (ar >> 15) & 1 != 0;
    let limit = if g {
        (limit_raw << 12) | 0xFFF
    } else {
        limit_raw
    };
    seg_from_ar(selector, base, limit, ar)
}
