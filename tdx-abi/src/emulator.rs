//! The guest-side transport of the emulated backend's KVM execution engine.
//!
//! On a CPU without TDX the `tdcall` instruction (`66 0F 01 CC`) does not exist. The emulated
//! backend runs a TD as an ordinary KVM guest, so a TDCALL reaches its software TDX module by
//! one of three paths, all documented here because guest payloads and the engine must agree:
//!
//! 1. **The real instruction, trapped by the host.** Where KVM reports the instruction as an
//!    emulation failure with its bytes (guest ring-0 code on a PVM host, as on the project's
//!    development machine) the engine recognises the opcode and performs the TDCALL with the
//!    vCPU's registers. Payloads just execute `tdcall` ([`crate::call::instr::RealTdcall`]).
//! 2. **The `#UD` forward.** Where `tdcall` raises `#UD` inside the guest (VMX/SVM hosts, and
//!    any CPL > 0 code), the guest's `#UD` handler executes `out` [`UD_FORWARD_PORT`]`, al` as
//!    its *first* instruction, so RSP still points at the hardware exception frame (RIP, CS,
//!    RFLAGS, RSP, SS; `#UD` pushes no error code). The engine reads the instruction at the
//!    frame's RIP:
//!    * a `tdcall` at CPL 0: the engine performs the TDCALL with the registers as they are
//!      (RSP taken from the frame), unwinds the frame and resumes after the instruction, as
//!      if the instruction had executed;
//!    * a `tdcall` at CPL > 0: the engine unwinds the frame and injects `#GP(0)` at the
//!      instruction, which is what a TDX CPU does for TDCALL outside ring 0;
//!    * anything else: the handler continues after the `out` and handles a genuine `#UD`.
//! 3. **The doorbell.** Ring-0 code may skip the trap and execute `out`
//!    [`TDCALL_DOORBELL_PORT`]`, al` with the TDCALL registers loaded
//!    ([`crate::call::instr::DoorbellTdcall`]); the engine performs the TDCALL and the guest
//!    continues after the `out`. An `out` at CPL > 0 raises `#GP` in the guest as usual
//!    (IOPL 0), so the doorbell is no way around the ring-0 rule.
//!
//! The ports are 8-bit immediates so that no TDCALL input register (RDX in particular) is
//! needed to name them. Both are reserved by the engine: port I/O to them never reaches a
//! VMM as a TDVMCALL.

/// I/O port of the TDCALL doorbell (`out 0xDC, al` at CPL 0 with the TDCALL registers).
pub const TDCALL_DOORBELL_PORT: u8 = 0xDC;

/// I/O port of the `#UD` forward (`out 0xDD, al`, the first instruction of the `#UD`
/// handler).
pub const UD_FORWARD_PORT: u8 = 0xDD;

/// The TDCALL opcode bytes.
pub const TDCALL_OPCODE: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];

/// Vector of the virtualization exception.
pub const VE_VECTOR: u8 = 20;

/// Vector of the invalid-opcode exception.
pub const UD_VECTOR: u8 = 6;

/// Vector of the general-protection exception.
pub const GP_VECTOR: u8 = 13;

/// The exception frame the `#UD` forward finds at RSP (64-bit mode, no error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ExceptionFrame {
    /// RIP of the faulting instruction.
    pub rip: u64,
    /// CS selector (its RPL is the CPL of the interrupted code).
    pub cs: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RSP of the interrupted code.
    pub rsp: u64,
    /// SS selector.
    pub ss: u64,
}

impl ExceptionFrame {
    /// Size in bytes.
    pub const SIZE: usize = 40;

    /// Parses the frame from its little-endian bytes.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let q = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        ExceptionFrame {
            rip: q(0),
            cs: q(1),
            rflags: q(2),
            rsp: q(3),
            ss: q(4),
        }
    }

    /// Privilege level of the interrupted code.
    pub fn cpl(&self) -> u8 {
        (self.cs & 3) as u8
    }
}

const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == ExceptionFrame::SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let mut b = [0u8; 40];
        for (i, v) in [0x1000u64, 0x2b, 0x202, 0x7000, 0x23].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        let f = ExceptionFrame::from_bytes(&b);
        assert_eq!(f.rip, 0x1000);
        assert_eq!(f.cpl(), 3);
        assert_eq!(f.rsp, 0x7000);
    }

    #[test]
    fn ports_distinct_and_opcode() {
        assert_ne!(TDCALL_DOORBELL_PORT, UD_FORWARD_PORT);
        assert_eq!(TDCALL_OPCODE, [0x66, 0x0f, 0x01, 0xcc]);
    }
}
