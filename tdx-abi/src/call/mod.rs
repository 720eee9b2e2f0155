//! The seams between a caller and the TDX module: one SEAMCALL ([`Seamcall`]) or one TDCALL
//! ([`Tdcall`]) with a block of general-purpose registers ([`Regs`]).
//!
//! Typed leaf wrappers are written once, generic over these traits, and run unchanged on the
//! real instructions ([`instr::RealSeamcall`], [`instr::RealTdcall`], x86-64 only) or on an
//! emulated module.
//!
//! # Calling convention
//!
//! On entry RAX holds the leaf and version word (bits 15:0 leaf number, bits 23:16 version,
//! bits 63:24 zero) and the other registers hold the leaf's inputs. On return RAX holds the
//! 64-bit completion status and the other registers hold the leaf's outputs; registers a leaf
//! does not define as outputs are left as the module leaves them (usually unchanged or zero).
//!
//! # Example: a recording mock
//!
//! ```
//! use std::cell::RefCell;
//! use tdx_abi::call::{Regs, Seamcall};
//! use tdx_abi::status::TdxStatus;
//!
//! /// Records every call and answers each with success and R8 = 42.
//! #[derive(Default)]
//! struct Recorder {
//!     calls: RefCell<Vec<Regs>>,
//! }
//!
//! impl Seamcall for Recorder {
//!     fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
//!         self.calls.borrow_mut().push(*regs);
//!         regs.r8 = 42;
//!         regs.rax = TdxStatus::SUCCESS.raw();
//!         TdxStatus::SUCCESS
//!     }
//! }
//!
//! /// A caller written against the trait: TDH.SYS.RD (leaf 34), RDX = field ID, R8 = value.
//! fn read_field(module: &impl Seamcall, field_id: u64) -> (TdxStatus, u64) {
//!     let mut regs = Regs::with_leaf(34);
//!     regs.rdx = field_id;
//!     let status = module.seamcall(&mut regs);
//!     (status, regs.r8)
//! }
//!
//! let mock = Recorder::default();
//! assert_eq!(read_field(&mock, 0x0A00_0003_0000_0000), (TdxStatus::SUCCESS, 42));
//! // `&T` implements the trait too, so a reference can be handed on.
//! assert_eq!(read_field(&&mock, 7).1, 42);
//! let calls = mock.calls.borrow();
//! assert_eq!(calls.len(), 2);
//! assert_eq!(calls[0].rax, 34);
//! assert_eq!(calls[0].rdx, 0x0A00_0003_0000_0000);
//! ```

use crate::status::TdxStatus;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod instr;

/// The general-purpose registers exchanged by one SEAMCALL or TDCALL (all but RSP, which is
/// never an operand). `Default` is all zeros.
///
/// * `rax`: in, the leaf and version word; out, the completion status.
/// * `rcx`, `rdx`, `r8`..`r11`: the operands and results of ordinary leaves (see each leaf).
/// * `rbx`, `rsi`, `rdi`, `r12`..`r15`: used only by TDH.VP.ENTER (the guest registers a
///   TDG.VP.VMCALL exposes to the host, and the values passed back) and by TDG.VP.VMCALL
///   (GHCI arguments and results).
/// * `rbp`: as the previous group, and only when the TD may have it modified (not with
///   `CONFIG_FLAGS.NO_RBP_MOD`).
///
/// Field order is the architectural GPR numbering without RSP (the order of the TDG.VP.VMCALL
/// GPR select mask); see [`Regs::gpr`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Regs {
    /// RAX: leaf and version in, completion status out.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RBX.
    pub rbx: u64,
    /// RBP.
    pub rbp: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

/// Architectural number of RSP, the one GPR [`Regs`] does not hold.
pub const GPR_RSP: u8 = 4;

impl Regs {
    /// All registers zero except RAX = `leaf_and_version` (leaf number in bits 15:0, version
    /// in bits 23:16).
    pub const fn with_leaf(leaf_and_version: u64) -> Self {
        Regs {
            rax: leaf_and_version,
            rcx: 0,
            rdx: 0,
            rbx: 0,
            rbp: 0,
            rsi: 0,
            rdi: 0,
            r8: 0,
            r9: 0,
            r10: 0,
            r11: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
        }
    }

    /// The register with architectural number `n` (0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP,
    /// 6 RSI, 7 RDI, 8..15 R8..R15): bit `n` of the TDG.VP.VMCALL GPR select mask.
    /// `None` for RSP (4) and for `n > 15`.
    pub const fn gpr(&self, n: u8) -> Option<u64> {
        Some(match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => return None,
        })
    }

    /// Mutable access to the register with architectural number `n` (see [`Regs::gpr`]).
    /// `None` for RSP (4) and for `n > 15`.
    pub fn gpr_mut(&mut self, n: u8) -> Option<&mut u64> {
        Some(match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return None,
        })
    }
}

/// Issues one SEAMCALL (host VMM to TDX module).
///
/// On entry `regs.rax` holds the leaf and version word and the other registers the leaf's
/// inputs; on return the registers hold the outputs, and the completion status is both
/// returned and left in `regs.rax`.
///
/// Takes `&self` because one module serves every logical processor: an emulated module is
/// shared by host threads, one per logical processor. The implementation identifies the
/// calling logical processor itself (the real instruction runs on the current CPU; an emulated
/// module looks at the calling thread), so a caller that must stay on one logical processor
/// (TDH.SYS.LP.INIT, TDH.VP.ENTER, TDH.VP.FLUSH) arranges that before calling.
pub trait Seamcall {
    /// Issues the SEAMCALL described by `regs` and returns the completion status.
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus;
}

/// Issues one TDCALL (TD guest to TDX module).
///
/// Same register contract as [`Seamcall`]: `regs.rax` holds the leaf and version word on entry
/// and the completion status on return, which is also returned. The implementation identifies
/// the calling virtual processor itself.
pub trait Tdcall {
    /// Issues the TDCALL described by `regs` and returns the completion status.
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus;
}

impl<T: Seamcall + ?Sized> Seamcall for &T {
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
        (**self).seamcall(regs)
    }
}

impl<T: Tdcall + ?Sized> Tdcall for &T {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        (**self).tdcall(regs)
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Regs>() == 15 * 8);
    assert!(offset_of!(Regs, rax) == 0);
    assert!(offset_of!(Regs, rcx) == 8);
    assert!(offset_of!(Regs, rdx) == 16);
    assert!(offset_of!(Regs, rbx) == 24);
    assert!(offset_of!(Regs, rbp) == 32);
    assert!(offset_of!(Regs, rsi) == 40);
    assert!(offset_of!(Regs, rdi) == 48);
    assert!(offset_of!(Regs, r8) == 56);
    assert!(offset_of!(Regs, r15) == 112);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_numbering() {
        let mut r = Regs::default();
        for n in 0..16u8 {
            if let Some(reg) = r.gpr_mut(n) {
                *reg = 0x100 + n as u64;
            }
        }
        assert_eq!(r.rax, 0x100);
        assert_eq!(r.rcx, 0x101);
        assert_eq!(r.rdx, 0x102);
        assert_eq!(r.rbx, 0x103);
        assert_eq!(r.rbp, 0x105);
        assert_eq!(r.rsi, 0x106);
        assert_eq!(r.rdi, 0x107);
        assert_eq!(r.r8, 0x108);
        assert_eq!(r.r11, 0x10b);
        assert_eq!(r.r15, 0x10f);
        assert_eq!(r.gpr(GPR_RSP), None);
        assert_eq!(r.gpr(16), None);
        assert!(r.gpr_mut(GPR_RSP).is_none());
        assert_eq!(r.gpr(9), Some(0x109));
    }

    #[test]
    fn with_leaf_sets_only_rax() {
        let r = Regs::with_leaf(0x1_000b);
        assert_eq!(
            r,
            Regs {
                rax: 0x1_000b,
                ..Regs::default()
            }
        );
    }
}
