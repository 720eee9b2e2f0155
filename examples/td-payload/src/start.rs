//! The ring-0 part: entry, GDT/TSS, IDT, exception handlers and the TDCALL gate.
//!
//! Ring-0 code on the emulated backend's KVM engine (over PVM) is interpreted by KVM's
//! instruction emulator: slow and without SSE. So it is `global_asm!` only, short and free of
//! Rust code; everything else runs at ring 3 (natively) and reaches the TDX module through the
//! `int 0x80` gate below.
//!
//! # Entry contract (provided by the VMM's ELF loader and the engine's 64-bit entry)
//!
//! * 64-bit mode at CPL 0, CR0.PG = 1, CR4.PAE | OSFXSR | OSXMMEXCPT (ring-3 Rust may use SSE),
//!   EFER.LME | LMA | NXE, interrupts off, no GDT or IDT loaded (we load our own before
//!   anything can fault).
//! * CR3: the loader's identity map of GPA [0, 4 GiB) with 2 MiB pages, RW, U = 1 (the ring-3
//!   body reads and writes every page through it, shared GPAs included only via TDVMCALLs).
//! * RIP = the ELF entry [`_start`](self), RCX = GPA of the TD HOB, RSI = vCPU index,
//!   RBX = GPAW (48 or 52). Every vCPU enters here at the same time.
//! * Only PT_LOAD segments exist in the TD; the stacks, GDT, TSS and IDT live in .bss, which
//!   the linker script makes file-backed (see `link.ld`).
//!
//! # Per-vCPU state
//!
//! vCPU `i < MAX_CPUS` gets kernel stack `i`, user stack `i`, TSS `i` and GDT selector
//! `0x30 + 16 i`. Every vCPU writes the IDT with the same values (idempotent, so the APs need
//! not wait for the BSP). A vCPU with index `>= MAX_CPUS` reports a fatal error.
//!
//! # Handlers
//!
//! * `#UD` (6): first instruction `out 0xDD, al` (the engine's `#UD` forward, see
//!   `tdx_abi::emulator`); an `int 0x80` that raised #UD (PVM hosts do that for `int n` at
//!   CPL 3) is served as the gate, an `int 0x81` as a TLB flush (CR3 reload) for the body;
//!   any other `#UD` is fatal.
//! * `#GP` (13): if the faulting RIP equals [`crate::GP_EXPECT_RIP`] (set by the body just
//!   before its deliberate CPL-3 `tdcall`), counts it in [`crate::GP_COUNT`], clears the marker
//!   and resumes 4 bytes later; otherwise fatal.
//! * `#VE` (20): TDG.VP.VEINFO.GET; an EPT violation on a private GPA (a PENDING page) is
//!   accepted as one 4 KiB page with TDG.MEM.PAGE.ACCEPT (success or ALREADY_ACCEPTED), counted
//!   in [`crate::VE_COUNT`], and the access retried; anything else is fatal.
//! * `#PF` (14), `#DF` (8): fatal.
//! * Gate `int 0x80` (DPL 3): executes `tdcall` with the caller's registers and returns them
//!   (the engine performs a CPL-0 `tdcall`, see `tdx_abi::call::instr::RealTdcall`).
//!
//! Fatal errors are reported with TDVMCALL<ReportFatalError>: R12 = `(rip << 8) | vector`,
//! message "ring0 exception"; the vCPU then halts.

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// Number of vCPUs the payload supports.
pub const MAX_CPUS: usize = 4;
/// Ring-0 stack size per vCPU.
pub const KSTACK_SIZE: usize = 16 * 1024;
/// Ring-3 stack size per vCPU.
pub const USTACK_SIZE: usize = 64 * 1024;
/// Bytes reserved per TSS (a 64-bit TSS is 104 bytes).
const TSS_STRIDE: usize = 128;

/// The SHARED bit of a GPA (`1 << (GPAW - 1)`), set by the entry from RBX.
pub static SHARED_MASK: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(4096))]
struct Area<const N: usize>([u8; N]);

#[no_mangle]
static mut KSTACKS: Area<{ KSTACK_SIZE * MAX_CPUS }> = Area([0; KSTACK_SIZE * MAX_CPUS]);
#[no_mangle]
static mut USTACKS: Area<{ USTACK_SIZE * MAX_CPUS }> = Area([0; USTACK_SIZE * MAX_CPUS]);
#[no_mangle]
static mut TSS_AREA: Area<{ TSS_STRIDE * MAX_CPUS }> = Area([0; TSS_STRIDE * MAX_CPUS]);
#[no_mangle]
static mut IDT: Area<{ 256 * 16 }> = Area([0; 256 * 16]);

/// First 8 message bytes of a ring-0 fatal error.
const FATAL_MSG0: u64 = u64::from_le_bytes(*b"ring0 ex");
/// Last 8 message bytes of a ring-0 fatal error.
const FATAL_MSG1: u64 = u64::from_le_bytes(*b"ception\0");

// Entry, GDT/TSS, IDT and the switch to ring 3.
global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    cli
    cld
    mov r12, rcx
    mov r13, rsi
    mov r14, rbx
    cmp r13, {max_cpus}
    jae .Ltoo_many
    lea rsp, [rip + {kstacks}]
    mov rax, r13
    inc rax
    imul rax, rax, {ksz}
    add rsp, rax
    lea ecx, [r14d - 1]
    mov eax, 1
    shl rax, cl
    mov [rip + {shared}], rax
    lgdt [rip + .Lgdtr]
    push 0x08
    lea rax, [rip + .Lreload_cs]
    push rax
    .byte 0x48, 0xcb
.Lreload_cs:
    mov eax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rdi, [rip + {tss}]
    mov rax, r13
    shl rax, 7
    add rdi, rax
    mov [rdi + 4], rsp
    mov word ptr [rdi + 102], 104
    mov rax, rdi
    and rax, 0xffffff
    shl rax, 16
    or rax, 103
    mov rdx, 0x89
    shl rdx, 40
    or rax, rdx
    mov rdx, rdi
    shr rdx, 24
    and edx, 0xff
    shl rdx, 56
    or rax, rdx
    lea r8, [rip + .Lgdt_tss]
    mov rdx, r13
    shl rdx, 4
    add r8, rdx
    mov [r8], rax
    mov rdx, rdi
    shr rdx, 32
    mov [r8 + 8], rdx
    mov rax, r13
    shl rax, 4
    add rax, 0x30
    ltr ax
    mov edi, 6
    lea rsi, [rip + .Lud_entry]
    mov edx, 0x8e
    call .Lset_idt
    mov edi, 8
    lea rsi, [rip + .Ldf_entry]
    mov edx, 0x8e
    call .Lset_idt
    mov edi, 13
    lea rsi, [rip + .Lgp_entry]
    mov edx, 0x8e
    call .Lset_idt
    mov edi, 14
    lea rsi, [rip + .Lpf_entry]
    mov edx, 0x8e
    call .Lset_idt
    mov edi, 20
    lea rsi, [rip + .Lve_entry]
    mov edx, 0x8e
    call .Lset_idt
    mov edi, 0x80
    lea rsi, [rip + .Lgate_entry]
    mov edx, 0xee
    call .Lset_idt
    lidt [rip + .Lidtr]
    lea rax, [rip + {ustacks}]
    mov rdx, r13
    inc rdx
    imul rdx, rdx, {usz}
    add rax, rdx
    push 0x23
    push rax
    push 0x2
    push 0x2b
    lea rax, [rip + .Lring3_entry]
    push rax
    mov rdi, r13
    mov rsi, r12
    mov rdx, r14
    iretq

.Ltoo_many:
    mov r12, r13
    shl r12, 8
    or r12, 0xff
    jmp .Lfatal

    // rdi = vector, rsi = handler, rdx = type/attribute byte; selector 0x08, IST 0.
.Lset_idt:
    lea r8, [rip + {idt}]
    shl rdi, 4
    add r8, rdi
    mov rax, rsi
    and eax, 0xffff
    mov ecx, 0x08
    shl rcx, 16
    or rax, rcx
    shl rdx, 40
    or rax, rdx
    mov rcx, rsi
    shr rcx, 16
    and ecx, 0xffff
    shl rcx, 48
    or rax, rcx
    mov [r8], rax
    mov rcx, rsi
    shr rcx, 32
    mov [r8 + 8], rcx
    ret

    // r12 = error code. TDVMCALL<ReportFatalError>, then halt forever. Uses no stack.
.Lfatal:
    xor eax, eax
    mov ecx, 0xfc00
    xor r10d, r10d
    mov r11d, 0x10003
    xor r13d, r13d
    movabs r14, {msg0}
    movabs r15, {msg1}
    .byte 0x66, 0x0f, 0x01, 0xcc
.Lhalt:
    hlt
    jmp .Lhalt

.Lud_entry:
    out 0xdd, al
    // Hosts whose CPU raises #UD for `int 0x80` at CPL 3 (PVM) deliver the gate here: the
    // faulting instruction is `cd 80`, so do the gate's work and resume after it.
    push rax
    mov rax, [rsp + 8]
    cmp word ptr [rax], 0x81cd
    je .Lud_flush
    cmp word ptr [rax], 0x80cd
    jne .Lud_fatal
    add rax, 2
    mov [rsp + 8], rax
    pop rax
    .byte 0x66, 0x0f, 0x01, 0xcc
    iretq
    // `int 0x81` (same delivery): reload CR3, i.e. flush the TLB after the body changed the
    // page tables (PVM's shadow MMU resynchronises on it).
.Lud_flush:
    add rax, 2
    mov [rsp + 8], rax
    mov rax, cr3
    mov cr3, rax
    pop rax
    iretq
.Lud_fatal:
    pop rax
    mov r12, [rsp]
    shl r12, 8
    or r12, 6
    jmp .Lfatal

.Ldf_entry:
    mov r12, [rsp + 8]
    shl r12, 8
    or r12, 8
    jmp .Lfatal

.Lpf_entry:
    mov r12, [rsp + 8]
    shl r12, 8
    or r12, 14
    jmp .Lfatal

.Lgp_entry:
    push rax
    mov rax, [rsp + 16]
    test rax, rax
    jz .Lgp_fatal
    cmp rax, [rip + {gp_expect}]
    jne .Lgp_fatal
    add rax, 4
    mov [rsp + 16], rax
    mov qword ptr [rip + {gp_expect}], 0
    lock inc qword ptr [rip + {gp_count}]
    pop rax
    add rsp, 8
    iretq
.Lgp_fatal:
    mov r12, [rsp + 16]
    shl r12, 8
    or r12, 13
    jmp .Lfatal

.Lve_entry:
    push rax
    push rcx
    push rdx
    push r8
    push r9
    push r10
    push r11
    mov eax, 3
    .byte 0x66, 0x0f, 0x01, 0xcc
    test rax, rax
    jnz .Lve_fatal
    cmp ecx, 48
    jne .Lve_fatal
    mov rax, [rip + {shared}]
    test r9, rax
    jnz .Lve_fatal
    mov rcx, r9
    and rcx, -4096
    mov eax, 6
    .byte 0x66, 0x0f, 0x01, 0xcc
    test rax, rax
    jz .Lve_done
    shr rax, 32
    cmp eax, 0xb0a
    jne .Lve_fatal
.Lve_done:
    lock inc qword ptr [rip + {ve_count}]
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdx
    pop rcx
    pop rax
    iretq
.Lve_fatal:
    mov r12, [rsp + 56]
    shl r12, 8
    or r12, 20
    jmp .Lfatal

    // The TDCALL gate: the caller's registers in, the module's registers out.
.Lgate_entry:
    .byte 0x66, 0x0f, 0x01, 0xcc
    iretq

    .section .text, "ax"
.Lring3_entry:
    call {body}
    ud2

    .section .data.gdt, "aw"
    .balign 16
.Lgdt_start:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0
    .quad 0x00cff3000000ffff
    .quad 0x00affb000000ffff
.Lgdt_tss:
    .fill {max_cpus} * 2, 8, 0
.Lgdt_end:
    .balign 8
    .word 0
    .word 0
    .word 0
.Lgdtr:
    .word .Lgdt_end - .Lgdt_start - 1
    .quad .Lgdt_start
    .word 0
    .word 0
    .word 0
.Lidtr:
    .word 256 * 16 - 1
    .quad {idt}
    .text
"#,
    max_cpus = const MAX_CPUS,
    ksz = const KSTACK_SIZE,
    usz = const USTACK_SIZE,
    kstacks = sym KSTACKS,
    ustacks = sym USTACKS,
    tss = sym TSS_AREA,
    idt = sym IDT,
    shared = sym SHARED_MASK,
    gp_expect = sym crate::GP_EXPECT_RIP,
    gp_count = sym crate::GP_COUNT,
    ve_count = sym crate::VE_COUNT,
    body = sym crate::body_entry,
    msg0 = const FATAL_MSG0,
    msg1 = const FATAL_MSG1,
);
