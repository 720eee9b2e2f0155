//! The ring-3 side of the TDCALL gate: [`GateTdcall`] loads a [`Regs`] block, executes
//! the gate `ud2` (the ring-0 #UD handler executes `tdcall` with these registers) and stores them back.

use core::mem::offset_of;

use tdx_abi::call::{Regs, Tdcall};
use tdx_abi::status::TdxStatus;

/// TDCALL from ring 3 through the `ud2` gate that the #UD handler of [`crate::ring0`] serves.
#[derive(Clone, Copy, Debug)]
pub struct GateTdcall;

impl Tdcall for GateTdcall {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        // SAFETY: `td_gate_call` reads and writes the exclusively borrowed block and follows
        // the C ABI (callee-saved registers restored); the ring-0 #UD handler performs the
        // TDCALL for its `ud2` only and resumes after it.
        unsafe { td_gate_call(regs) };
        TdxStatus::from_raw(regs.rax)
    }
}

extern "C" {
    /// Loads the block, executes the gate `ud2` (`td_gate_ud2`), stores the block back.
    fn td_gate_call(regs: *mut Regs);
}

// Ring-3 code. `ud2` at `td_gate_ud2` is the gate: under PVM a CPL-3 `int n` raises #UD, so
// the #UD handler recognises this one RIP (from CPL 3) as the TDCALL gate.
core::arch::global_asm!(
    ".section .text.gate,\"ax\"",
    ".global td_gate_call",
    ".global td_gate_ud2",
    "td_gate_call:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, [rdi + {o_rax}]",
    "mov rcx, [rdi + {o_rcx}]",
    "mov rdx, [rdi + {o_rdx}]",
    "mov rbx, [rdi + {o_rbx}]",
    "mov rbp, [rdi + {o_rbp}]",
    "mov rsi, [rdi + {o_rsi}]",
    "mov r8, [rdi + {o_r8}]",
    "mov r9, [rdi + {o_r9}]",
    "mov r10, [rdi + {o_r10}]",
    "mov r11, [rdi + {o_r11}]",
    "mov r12, [rdi + {o_r12}]",
    "mov r13, [rdi + {o_r13}]",
    "mov r14, [rdi + {o_r14}]",
    "mov r15, [rdi + {o_r15}]",
    "mov rdi, [rdi + {o_rdi}]",
    "td_gate_ud2:",
    "ud2",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi + {o_rax}], rax",
    "mov [rdi + {o_rcx}], rcx",
    "mov [rdi + {o_rdx}], rdx",
    "mov [rdi + {o_rbx}], rbx",
    "mov [rdi + {o_rbp}], rbp",
    "mov [rdi + {o_rsi}], rsi",
    "mov [rdi + {o_r8}], r8",
    "mov [rdi + {o_r9}], r9",
    "mov [rdi + {o_r10}], r10",
    "mov [rdi + {o_r11}], r11",
    "mov [rdi + {o_r12}], r12",
    "mov [rdi + {o_r13}], r13",
    "mov [rdi + {o_r14}], r14",
    "mov [rdi + {o_r15}], r15",
    "pop rax",
    "mov [rdi + {o_rdi}], rax",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    o_rax = const offset_of!(Regs, rax),
    o_rcx = const offset_of!(Regs, rcx),
    o_rdx = const offset_of!(Regs, rdx),
    o_rbx = const offset_of!(Regs, rbx),
    o_rbp = const offset_of!(Regs, rbp),
    o_rsi = const offset_of!(Regs, rsi),
    o_rdi = const offset_of!(Regs, rdi),
    o_r8 = const offset_of!(Regs, r8),
    o_r9 = const offset_of!(Regs, r9),
    o_r10 = const offset_of!(Regs, r10),
    o_r11 = const offset_of!(Regs, r11),
    o_r12 = const offset_of!(Regs, r12),
    o_r13 = const offset_of!(Regs, r13),
    o_r14 = const offset_of!(Regs, r14),
    o_r15 = const offset_of!(Regs, r15),
);
