//! The real `seamcall` and `tdcall` instructions (x86-64 only).
//!
//! This is the only module of the crate with `unsafe` code. Nothing here is executed by the
//! tests: outside SEAM-capable VMX root (SEAMCALL) or a TD (TDCALL) the instructions raise
//! #UD. The tests run the same register exchange around harmless instructions instead.
//!
//! # Register exchange
//!
//! All fifteen registers of [`Regs`] are loaded before the instruction and stored after it.
//! LLVM reserves RBX (and RBP as the frame pointer), so they cannot be asm operands: the asm
//! block saves them on the stack, loads every register from the [`Regs`] block through a
//! pointer in RDI (itself loaded last), and after the instruction parks the output RDI on the
//! stack, reloads the pointer, stores every register, and restores RBX and RBP. MOV, PUSH and
//! POP leave the flags alone, so CF of the instruction is still valid when it is read at the
//! end. All other general-purpose registers, the vector and x87/MMX registers (TDG.VP.VMCALL
//! may pass XMM registers) and the flags are declared clobbered.

use core::arch::asm;
use core::mem::offset_of;

use super::{Regs, Seamcall, Tdcall};
use crate::status::TdxStatus;

/// The status reported when SEAMCALL fails with VMfailInvalid (CF = 1: no TDX module is
/// loaded). Software-defined (class byte 0xFF is never used by the module); the value is
/// Linux's `TDX_SEAMCALL_VMFAILINVALID`.
pub const SEAMCALL_VMFAILINVALID: TdxStatus = TdxStatus::from_raw(0x8000_FF00_FFFF_0000);

/// Loads every register of the [`Regs`] block behind the `*mut Regs` `$regs`, executes the
/// template lines `$insn`, stores every register back into the block and evaluates to the
/// carry flag left by `$insn` (0 or 1) as a `u64`.
///
/// Must be expanded inside an `unsafe` block whose caller guarantees that `$insn` may be
/// executed and that `$regs` points to a valid, exclusively borrowed `Regs`.
macro_rules! exchange_regs {
    ($regs:expr, $($insn:literal),+ $(,)?) => {{
        let ptr: *mut Regs = $regs;
        let cf: u64;
        asm!(
            "push rbx",
            "push rbp",
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
            $($insn,)+
            // Flags must survive from here to SETC: only MOV, PUSH and POP until then.
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
            "setc al",
            "movzx eax, al",
            "add rsp, 8",
            "pop rbp",
            "pop rbx",
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
            inout("rdi") ptr => _,
            out("rax") cf,
            out("rcx") _,
            out("rdx") _,
            out("rsi") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
        cf
    }};
}

/// SEAMCALL executed by the CPU: the host side in VMX root operation at CPL 0.
///
/// Zero-sized; holding one is the caller's promise (made once, in [`RealSeamcall::new`]) that
/// the instruction may be executed. The calling logical processor is the one the thread runs
/// on.
#[derive(Clone, Copy, Debug)]
pub struct RealSeamcall {
    _private: (),
}

impl RealSeamcall {
    /// Creates the real SEAMCALL.
    ///
    /// # Safety
    ///
    /// Every later [`Seamcall::seamcall`] through the value (or a copy) must run in VMX root
    /// operation at CPL 0 on a CPU with SEAM support and a loaded TDX module (if no module is
    /// loaded the call reports [`SEAMCALL_VMFAILINVALID`]; elsewhere the instruction raises
    /// #UD or #GP). The caller is also responsible for the side effects of the leaves it
    /// issues (physical pages handed to the module, host state a TDH.VP.ENTER changes).
    pub const unsafe fn new() -> Self {
        RealSeamcall { _private: () }
    }
}

impl Seamcall for RealSeamcall {
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
        // SAFETY: the creator of `self` promised (RealSeamcall::new) that SEAMCALL may be
        // executed here. `regs` is an exclusive reference, so the asm block may read and write
        // the whole block through the pointer; it restores RBX, RBP and RSP and declares every
        // other register it or the module may change as clobbered.
        let cf = unsafe { exchange_regs!(regs, ".byte 0x66, 0x0f, 0x01, 0xcf") };
        if cf != 0 {
            // VMfailInvalid: no module answered, RAX still holds the leaf.
            regs.rax = SEAMCALL_VMFAILINVALID.raw();
        }
        TdxStatus::from_raw(regs.rax)
    }
}

/// TDCALL executed by the CPU: the guest side, inside a TD at CPL 0.
///
/// Zero-sized; holding one is the caller's promise (made once, in [`RealTdcall::new`]) that
/// the instruction may be executed. The calling virtual processor is the one the code runs on.
#[derive(Clone, Copy, Debug)]
pub struct RealTdcall {
    _private: (),
}

impl RealTdcall {
    /// Creates the real TDCALL.
    ///
    /// # Safety
    ///
    /// Every later [`Tdcall::tdcall`] through the value (or a copy) must run inside a TD at
    /// CPL 0 (elsewhere the instruction raises #UD, or #GP at CPL > 0). The caller is also
    /// responsible for the effects of the leaves it issues (pages accepted or converted,
    /// memory the module writes such as a TDREPORT).
    pub const unsafe fn new() -> Self {
        RealTdcall { _private: () }
    }
}

impl Tdcall for RealTdcall {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        // SAFETY: the creator of `self` promised (RealTdcall::new) that TDCALL may be executed
        // here. `regs` is an exclusive reference, so the asm block may read and write the whole
        // block through the pointer; it restores RBX, RBP and RSP and declares every other
        // register it or the module may change (including XMM, for TDG.VP.VMCALL) clobbered.
        unsafe { exchange_regs!(regs, ".byte 0x66, 0x0f, 0x01, 0xcc") };
        TdxStatus::from_raw(regs.rax)
    }
}

/// TDCALL through the emulated backend's doorbell (see [`crate::emulator`]): `out 0xDC, al`
/// with the TDCALL registers loaded. For TD payloads at CPL 0 on the emulated backend's KVM
/// engine, where it avoids the `#UD` round trip of the real instruction on VMX/SVM hosts.
#[derive(Clone, Copy, Debug)]
pub struct DoorbellTdcall {
    _private: (),
}

impl DoorbellTdcall {
    /// Creates the doorbell transport.
    ///
    /// # Safety
    ///
    /// Every later [`Tdcall::tdcall`] through the value must run at CPL 0 inside a TD on the
    /// emulated backend (elsewhere the port write goes to whatever owns port 0xDC). The caller
    /// is responsible for the effects of the leaves it issues, as with [`RealTdcall`].
    pub const unsafe fn new() -> Self {
        DoorbellTdcall { _private: () }
    }
}

impl Tdcall for DoorbellTdcall {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        // SAFETY: the creator of `self` promised (DoorbellTdcall::new) that the doorbell may
        // be rung here. The register contract is RealTdcall's: the block is exclusively
        // borrowed, RBX/RBP/RSP are restored, every other register is declared clobbered.
        unsafe { exchange_regs!(regs, "out 0xdc, al") };
        TdxStatus::from_raw(regs.rax)
    }
}

/// Compile-time check that both implementations exist with the trait signatures (their asm
/// blocks are assembled whenever the crate is built for x86-64).
#[cfg(test)]
const _: fn(&RealSeamcall, &mut Regs) -> TdxStatus = <RealSeamcall as Seamcall>::seamcall;
#[cfg(test)]
const _: fn(&RealTdcall, &mut Regs) -> TdxStatus = <RealTdcall as Tdcall>::tdcall;
#[cfg(test)]
const _: fn(&DoorbellTdcall, &mut Regs) -> TdxStatus = <DoorbellTdcall as Tdcall>::tdcall;

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the register exchange around a harmless stand-in for the instruction that changes
    /// every register (RAX..R15 += 1..15, clobbering RBX and RBP too) and sets or clears CF.
    fn exchange_with_standin(regs: &mut Regs, set_cf: bool) -> u64 {
        if set_cf {
            // SAFETY: the stand-in only does register arithmetic and STC; `regs` is exclusive.
            unsafe {
                exchange_regs!(
                    regs,
                    "add rax, 1",
                    "add rcx, 2",
                    "add rdx, 3",
                    "add rbx, 4",
                    "add rbp, 5",
                    "add rsi, 6",
                    "add rdi, 7",
                    "add r8, 8",
                    "add r9, 9",
                    "add r10, 10",
                    "add r11, 11",
                    "add r12, 12",
                    "add r13, 13",
                    "add r14, 14",
                    "add r15, 15",
                    "stc",
                )
            }
        } else {
            // SAFETY: the stand-in only does register arithmetic and CLC; `regs` is exclusive.
            unsafe {
                exchange_regs!(
                    regs,
                    "add rax, 1",
                    "add rcx, 2",
                    "add rdx, 3",
                    "add rbx, 4",
                    "add rbp, 5",
                    "add rsi, 6",
                    "add rdi, 7",
                    "add r8, 8",
                    "add r9, 9",
                    "add r10, 10",
                    "add r11, 11",
                    "add r12, 12",
                    "add r13, 13",
                    "add r14, 14",
                    "add r15, 15",
                    "clc",
                )
            }
        }
    }

    fn numbered() -> Regs {
        let mut r = Regs::default();
        for n in 0..16u8 {
            if let Some(reg) = r.gpr_mut(n) {
                *reg = 0x1111_0000_0000_0000 * u64::from(n % 8) + (u64::from(n) << 8);
            }
        }
        r
    }

    #[test]
    fn every_register_goes_in_and_comes_out() {
        // Locals kept alive across the asm block: if RBX/RBP/RSP were not restored, these (or
        // the frame) would be corrupted.
        let guard = core::hint::black_box([0xDEAD_BEEF_u64; 4]);
        for set_cf in [false, true] {
            let input = numbered();
            let mut regs = input;
            let cf = exchange_with_standin(&mut regs, set_cf);
            assert_eq!(cf, u64::from(set_cf));
            let expected = [
                (0u8, 1u64),
                (1, 2),
                (2, 3),
                (3, 4),
                (5, 5),
                (6, 6),
                (7, 7),
                (8, 8),
                (9, 9),
                (10, 10),
                (11, 11),
                (12, 12),
                (13, 13),
                (14, 14),
                (15, 15),
            ];
            for (n, delta) in expected {
                assert_eq!(
                    regs.gpr(n),
                    Some(input.gpr(n).unwrap().wrapping_add(delta)),
                    "register {n}"
                );
            }
        }
        assert_eq!(core::hint::black_box(guard), [0xDEAD_BEEF_u64; 4]);
    }

    #[test]
    fn vmfailinvalid_value() {
        assert_eq!(SEAMCALL_VMFAILINVALID.raw(), 0x8000_FF00_FFFF_0000);
        assert_eq!(core::mem::size_of::<RealSeamcall>(), 0);
        assert_eq!(core::mem::size_of::<RealTdcall>(), 0);
    }
}
