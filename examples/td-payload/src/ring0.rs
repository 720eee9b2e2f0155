//! The ring-0 part of the payload: `global_asm!` only (guest ring-0 code is interpreted by KVM's
//! emulator on the development host: no SSE, ~1.4 MIPS, so it is kept short and Rust-free).
//!
//! # Entry contract (provided by the VMM loader and the engine)
//!
//! 64-bit mode at CPL 0, paging on with CR3 pointing at an identity map of GPA [0, 4 GiB)
//! (2 MiB pages, RW, U=1), interrupts off, no GDT/IDT loaded, RIP = ELF entry (`_start`),
//! RCX = GPA of the TD HOB, RSI = vCPU index, RBX = GPAW. Every vCPU enters here.
//!
//! # What `_start` does
//!
//! Picks this vCPU's ring-0 stack (vCPU index < [`MAX_CPUS`], else it parks), records the HOB,
//! GPAW and CR3 (BSP), enables SSE for ring 3 (CR0.EM=0, CR0.MP=1, CR4.OSFXSR|OSXMMEXCPT),
//! loads the GDT (ring-0/ring-3 code and data, one TSS per vCPU whose RSP0 is the ring-0
//! stack), fills and loads the IDT and `iretq`s into [`crate::body::body_main`] at CPL 3 on
//! this vCPU's user stack with RDI = vCPU index.
//!
//! # Handlers
//!
//! * `#UD` (6): first instruction `out 0xDD, al` (the engine's `#UD` forward, see
//!   `tdx_abi::emulator`); a genuine `#UD` is fatal.
//! * `#GP` (13): if the faulting RIP is [`GP_EXPECT_RIP`] and the fault came from CPL 3 (the
//!   body's deliberate `tdcall`), count it in [`GP_COUNT`], clear the marker, skip the 4-byte
//!   instruction; otherwise fatal.
//! * `#VE` (20): TDG.VP.VEINFO.GET; an EPT violation on a private GPA (shared bit
//!   [`SHARED_MASK`] clear) is a pending page: TDG.MEM.PAGE.ACCEPT of its 4 KiB page (already
//!   accepted is fine), count it in [`VE_COUNT`], return to retry. Anything else is fatal.
//! * `#DF` (8), `#PF` (14): fatal.
//! * `#UD` at the body's `td_gate_ud2` from CPL 3 is the TDCALL gate (a CPL-3 `int n` raises
//!   #UD under PVM): skips the `ud2`, executes `tdcall` with the caller's registers and
//!   returns them (RSP is the only register a TDCALL never uses).
//!
//! Fatal means TDVMCALL<ReportFatalError> with R12 = faulting RIP << 8 | vector, R13 = 0 and a fixed message,
//! then a spin (the VMM stops the TD).

use core::sync::atomic::AtomicU64;

/// The largest number of vCPUs the payload sets up (per-vCPU stacks and TSS slots).
pub const MAX_CPUS: usize = 4;
/// Bytes of ring-0 stack per vCPU.
pub const KSTACK_SIZE: usize = 8192;
/// Bytes of ring-3 stack per vCPU.
pub const USTACK_SIZE: usize = 65536;

/// GPA of the TD HOB (RCX at the BSP's entry).
pub static BOOT_HOB: AtomicU64 = AtomicU64::new(0);
/// GPAW (RBX at the BSP's entry).
pub static BOOT_GPAW: AtomicU64 = AtomicU64::new(0);
/// CR3 at the BSP's entry (the loader's identity map; ring 3 adds the shared-alias window).
pub static BOOT_CR3: AtomicU64 = AtomicU64::new(0);
/// The shared bit of a GPA; set by the body after TDG.VP.INFO, read by the `#VE` handler.
pub static SHARED_MASK: AtomicU64 = AtomicU64::new(0);
/// Number of `#VE`s handled by accepting a pending page.
pub static VE_COUNT: AtomicU64 = AtomicU64::new(0);
/// Number of deliberate CPL-3 `tdcall` `#GP`s handled.
pub static GP_COUNT: AtomicU64 = AtomicU64::new(0);
/// RIP of the body's deliberate CPL-3 `tdcall` (0 = none expected).
pub static GP_EXPECT_RIP: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(4096))]
struct Stacks<const N: usize>([u8; N]);

/// Ring-0 stacks, [`KSTACK_SIZE`] per vCPU.
static mut KSTACKS: Stacks<{ KSTACK_SIZE * MAX_CPUS }> = Stacks([0; KSTACK_SIZE * MAX_CPUS]);
/// Ring-3 stacks, [`USTACK_SIZE`] per vCPU.
static mut USTACKS: Stacks<{ USTACK_SIZE * MAX_CPUS }> = Stacks([0; USTACK_SIZE * MAX_CPUS]);

/// GDT selectors.
const KCODE: u64 = 0x08;
const KDATA: u64 = 0x10;
const UDATA: u64 = 0x18;
const UCODE: u64 = 0x20;
const TSS0: u64 = 0x28;

core::arch::global_asm!(
    // ---------------------------------------------------------------- data
    ".section .data.ring0,\"aw\"",
    ".balign 16",
    "td_gdt:",
    ".quad 0",
    ".quad 0x00AF9A000000FFFF", // 0x08 ring-0 code, 64-bit
    ".quad 0x00CF92000000FFFF", // 0x10 ring-0 data
    ".quad 0x00CFF2000000FFFF", // 0x18 ring-3 data
    ".quad 0x00AFFA000000FFFF", // 0x20 ring-3 code, 64-bit
    ".fill {max_cpus} * 2, 8, 0", // 0x28.. one 16-byte TSS descriptor per vCPU
    "td_gdt_end:",
    ".balign 16",
    "td_gdtr:",
    ".word td_gdt_end - td_gdt - 1",
    ".quad td_gdt",
    ".balign 16",
    "td_idtr:",
    ".word 256 * 16 - 1",
    ".quad td_idt",
    ".balign 4096",
    "td_idt:",
    ".fill 256 * 2, 8, 0",
    ".balign 128",
    "td_tss:",
    ".fill {max_cpus} * 16, 8, 0", // 128 bytes per vCPU (104 used)
    "td_fatal_msg:",
    ".ascii \"td-payload: fatal CPU exception (R12 = RIP<<8|vector)\"",
    ".fill 64, 1, 0",
    // ---------------------------------------------------------------- entry
    ".section .text.entry,\"ax\"",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    "cmp rsi, {max_cpus}",
    "jae td_park",
    "mov r12, rsi",
    // This vCPU's ring-0 stack top.
    "lea rsp, [rip + {kstacks}]",
    "mov rax, r12",
    "inc rax",
    "imul rax, rax, {kstack}",
    "add rsp, rax",
    "test r12, r12",
    "jnz 2f",
    "mov [rip + {hob}], rcx",
    "mov [rip + {gpaw}], rbx",
    "mov rax, cr3",
    "mov [rip + {cr3}], rax",
    "2:",
    // SSE for the ring-3 body.
    "mov rax, cr0",
    "and rax, ~4",
    "or rax, 2",
    "mov cr0, rax",
    "mov rax, cr4",
    "or rax, 0x600",
    "mov cr4, rax",
    // This vCPU's TSS: RSP0 = the ring-0 stack top, no I/O bitmap.
    "lea rbx, [rip + td_tss]",
    "mov rax, r12",
    "shl rax, 7",
    "add rbx, rax",
    "mov [rbx + 4], rsp",
    "mov word ptr [rbx + 102], 104",
    // Its descriptor at GDT + 0x28 + 16 * vCPU (available 64-bit TSS, limit 103).
    "lea rdi, [rip + td_gdt + {tss0}]",
    "mov rax, r12",
    "shl rax, 4",
    "add rdi, rax",
    "mov rax, rbx",
    "and eax, 0xFFFFFF",
    "shl rax, 16",
    "or rax, 103",
    "mov rcx, 0x89",
    "shl rcx, 40",
    "or rax, rcx",
    "mov rcx, rbx",
    "shr rcx, 24",
    "and ecx, 0xFF",
    "shl rcx, 56",
    "or rax, rcx",
    "mov [rdi], rax",
    "mov rax, rbx",
    "shr rax, 32",
    "mov [rdi + 8], rax",
    // GDT, segments, TSS.
    "lgdt [rip + td_gdtr]",
    "push {kcode}",
    "lea rax, [rip + 3f]",
    "push rax",
    "retfq",
    "3:",
    "mov eax, {kdata}",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "xor eax, eax",
    "mov fs, ax",
    "mov gs, ax",
    "mov rax, r12",
    "shl rax, 4",
    "add rax, {tss0}",
    "ltr ax",
    // IDT (every vCPU writes the same values).
    "mov edi, 6",
    "lea rsi, [rip + td_ud]",
    "mov edx, 0x8E",
    "call td_set_gate",
    "mov edi, 8",
    "lea rsi, [rip + td_df]",
    "mov edx, 0x8E",
    "call td_set_gate",
    "mov edi, 13",
    "lea rsi, [rip + td_gp]",
    "mov edx, 0x8E",
    "call td_set_gate",
    "mov edi, 14",
    "lea rsi, [rip + td_pf]",
    "mov edx, 0x8E",
    "call td_set_gate",
    "mov edi, 20",
    "lea rsi, [rip + td_ve]",
    "mov edx, 0x8E",
    "call td_set_gate",
    "lidt [rip + td_idtr]",
    // iretq into the body at CPL 3: SS, RSP, RFLAGS (IF=0, IOPL=0), CS, RIP.
    "lea rcx, [rip + {ustacks}]",
    "mov rax, r12",
    "inc rax",
    "imul rax, rax, {ustack}",
    "add rcx, rax",
    "sub rcx, 8",
    "push {udata} | 3",
    "push rcx",
    "push 2",
    "push {ucode} | 3",
    "lea rax, [rip + {body}]",
    "push rax",
    "mov rdi, r12",
    "iretq",
    "td_park:",
    "pause",
    "jmp td_park",
    // td_set_gate(rdi = vector, rsi = handler, rdx = type/attributes byte): 64-bit gate, CS 0x08.
    "td_set_gate:",
    "lea rax, [rip + td_idt]",
    "shl rdi, 4",
    "add rdi, rax",
    "mov rax, rsi",
    "and eax, 0xFFFF",
    "mov rcx, {kcode}",
    "shl rcx, 16",
    "or rax, rcx",
    "mov rcx, rdx",
    "shl rcx, 40",
    "or rax, rcx",
    "mov rcx, rsi",
    "shr rcx, 16",
    "and ecx, 0xFFFF",
    "shl rcx, 48",
    "or rax, rcx",
    "mov [rdi], rax",
    "mov rax, rsi",
    "shr rax, 32",
    "mov [rdi + 8], rax",
    "ret",
    // ---------------------------------------------------------------- handlers
    ".balign 16",
    "td_ud:",
    "out 0xDD, al", // the #UD forward: must stay the first instruction
    // The TDCALL gate: the body's `ud2` at td_gate_ud2, from CPL 3.
    "push rax",
    "lea rax, [rip + td_gate_ud2]",
    "cmp rax, [rsp + 8]",
    "jne 8f",
    "test byte ptr [rsp + 16], 3",
    "jz 8f",
    "pop rax",
    "add qword ptr [rsp], 2",
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "iretq",
    "8:",
    "pop rax",
    "mov rsi, [rsp]",
    "mov edi, 6",
    "jmp td_fatal",
    ".balign 16",
    "td_df:",
    "mov rsi, [rsp + 8]",
    "mov edi, 8",
    "jmp td_fatal",
    ".balign 16",
    "td_pf:",
    "mov rsi, [rsp + 8]",
    "mov edi, 14",
    "jmp td_fatal",
    ".balign 16",
    // #GP: [rsp] error code, [rsp+8] RIP, [rsp+16] CS.
    "td_gp:",
    "push rax",
    "mov rax, [rsp + 16]",
    "cmp rax, [rip + {gp_expect}]",
    "jne 4f",
    "test byte ptr [rsp + 24], 3",
    "jz 4f",
    "add rax, 4",
    "mov [rsp + 16], rax",
    "mov qword ptr [rip + {gp_expect}], 0",
    "lock inc qword ptr [rip + {gp_count}]",
    "pop rax",
    "add rsp, 8",
    "iretq",
    "4:",
    "pop rax",
    "mov rsi, [rsp + 8]",
    "mov edi, 13",
    "jmp td_fatal",
    ".balign 16",
    // #VE: accept a pending private page and retry; anything else is fatal.
    "td_ve:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rbx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "mov eax, 3", // TDG.VP.VEINFO.GET
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "test rax, rax",
    "jnz 6f",
    "cmp ecx, 48", // EPT violation
    "jne 6f",
    "mov rax, [rip + {shared}]",
    "test r9, rax",
    "jnz 6f",
    "mov rcx, r9",
    "and rcx, -4096", // 4 KiB page, level 0 in RCX[2:0]
    "mov eax, 6", // TDG.MEM.PAGE.ACCEPT
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "test rax, rax",
    "jz 5f",
    "shr rax, 32",
    "cmp eax, 0x00000B0A", // TDX_PAGE_ALREADY_ACCEPTED (another vCPU won the race)
    "jne 6f",
    "5:",
    "lock inc qword ptr [rip + {ve_count}]",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rbx",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    "6:",
    "mov rsi, [rsp + 80]",
    "mov edi, 20",
    "jmp td_fatal",
    // td_fatal(edi = vector, rsi = faulting RIP): TDVMCALL<ReportFatalError> with
    // R12 = RIP << 8 | vector, then spin.
    "td_fatal:",
    "mov r12, rsi",
    "shl r12, 8",
    "or r12, rdi",
    "xor r13d, r13d",
    "lea rax, [rip + td_fatal_msg]",
    "mov r14, [rax]",
    "mov r15, [rax + 8]",
    "mov rbx, [rax + 16]",
    "mov rdi, [rax + 24]",
    "mov rsi, [rax + 32]",
    "mov r8, [rax + 40]",
    "mov r9, [rax + 48]",
    "mov rdx, [rax + 56]",
    "mov ecx, 0xFFCC", // R10-R15, RBX, RDI, RSI, R8, R9, RDX
    "xor r10d, r10d",
    "mov r11d, 0x10003", // ReportFatalError
    "xor eax, eax", // TDG.VP.VMCALL
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "7:",
    "pause",
    "jmp 7b",
    max_cpus = const MAX_CPUS,
    kstack = const KSTACK_SIZE,
    ustack = const USTACK_SIZE,
    kstacks = sym KSTACKS,
    ustacks = sym USTACKS,
    hob = sym BOOT_HOB,
    gpaw = sym BOOT_GPAW,
    cr3 = sym BOOT_CR3,
    shared = sym SHARED_MASK,
    ve_count = sym VE_COUNT,
    gp_count = sym GP_COUNT,
    gp_expect = sym GP_EXPECT_RIP,
    body = sym crate::body::body_main,
    kcode = const KCODE,
    kdata = const KDATA,
    udata = const UDATA,
    ucode = const UCODE,
    tss0 = const TSS0,
);
