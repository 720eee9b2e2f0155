//! The ring-3 body's TDCALL: `int 0x80` into the ring-0 gate (`start`), which executes
//! `tdcall` with the caller's registers (RBX and RBP are reserved by LLVM and never carry
//! TDCALL operands in this payload).
use core::arch::asm;

use tdx_abi::call::{Regs, Tdcall};
use tdx_abi::status::TdxStatus;

/// The gate.
#[derive(Clone, Copy, Debug)]
pub struct Gate;

impl Tdcall for Gate {
    fn tdcall(&self, r: &mut Regs) -> TdxStatus {
        // SAFETY: `int 0x80` enters the payload's own DPL-3 gate, which executes TDCALL and
        // returns with `iretq`; every register the TDCALL may change is an operand here,
        // RBX/RBP/RSP are not touched by the module for the leaves this payload uses.
        unsafe {
            asm!(
                "int 0x80",
                inout("rax") r.rax,
                inout("rcx") r.rcx,
                inout("rdx") r.rdx,
                inout("rsi") r.rsi,
                inout("rdi") r.rdi,
                inout("r8") r.r8,
                inout("r9") r.r9,
                inout("r10") r.r10,
                inout("r11") r.r11,
                inout("r12") r.r12,
                inout("r13") r.r13,
                inout("r14") r.r14,
                inout("r15") r.r15,
            );
        }
        TdxStatus::from_raw(r.rax)
    }
}
