//! `TDG.VP.VMCALL` (GHCI): the TD asks the host for I/O and services.
//!
//! One encoding serves both sides: the guest builds a [`TdVmCallRequest`] and sends it with
//! [`tdvmcall`] over any [`Tdcall`]; the host (a backend or VMM) decodes the registers of a
//! TDVMCALL exit with [`TdVmCallRequest::decode`] — the registers are guest-controlled, so
//! decoding checks every field and returns a typed error instead of trusting them — and answers
//! with a [`TdVmCallResponse`] written back by [`TdVmCallResponse::apply`].
//!
//! Register convention (GHCI): R10 = 0 for a standard call (non-zero = vendor-specific), R11 =
//! sub-function, arguments in R12..R15 (ReportFatalError also uses RBX, RDI, RSI, R8, R9, RDX
//! for its message). On return R10 = [`TdVmCallStatus`], R11 = primary output, R12..R15 more.

use core::fmt;

use crate::call::{Regs, Tdcall};
use crate::gpa::{Gpa, Gpaw, PAGE_SIZE_4K};
use crate::leaf::{LeafAndVersion, TdVmCallStatus, TdVmCallSubFunction, TdcallLeaf};
use crate::status::TdxStatus;

/// TDVMCALL GPR-select mask bit of each register (TDG.VP.VMCALL RCX bits 15:0).
pub mod select {
    /// RDX.
    pub const RDX: u64 = 1 << 2;
    /// RBX.
    pub const RBX: u64 = 1 << 3;
    /// RBP (not selectable when CONFIG_FLAGS.NO_RBP_MOD is set).
    pub const RBP: u64 = 1 << 5;
    /// RSI.
    pub const RSI: u64 = 1 << 6;
    /// RDI.
    pub const RDI: u64 = 1 << 7;
    /// R8.
    pub const R8: u64 = 1 << 8;
    /// R9.
    pub const R9: u64 = 1 << 9;
    /// R10 .. R15.
    pub const R10_R15: u64 = 0xfc00;
    /// The registers a standard GHCI call exposes: R10..R15.
    pub const STANDARD: u64 = R10_R15;
    /// The registers ReportFatalError exposes: R10..R15 plus the message registers.
    pub const REPORT_FATAL_ERROR: u64 = R10_R15 | RBX | RDI | RSI | R8 | R9 | RDX;
    /// Bits that must be 0 in the mask: RAX, RCX, RSP and bits 63:32.
    pub const MUST_BE_ZERO: u64 = 0b1_0011 | 0xffff_ffff_0000_0000;
}

/// Direction of an I/O or MMIO access (R13 of Instruction.IO / #VE.RequestMMIO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// 0: the guest reads.
    Read,
    /// 1: the guest writes.
    Write,
}

/// Maximum length of the ASCII message of ReportFatalError (8 registers of 8 bytes).
pub const FATAL_ERROR_MESSAGE_MAX: usize = 64;

/// Bit 63 of ReportFatalError's error code: R13 holds a valid GPA.
pub const FATAL_ERROR_GPA_VALID: u64 = 1 << 63;

/// A typed TDVMCALL request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdVmCallRequest {
    /// Instruction.CPUID: EAX (leaf) and ECX (subleaf).
    Cpuid {
        /// The CPUID leaf.
        leaf: u32,
        /// The CPUID subleaf.
        subleaf: u32,
    },
    /// Instruction.HLT.
    Hlt {
        /// The guest had interrupts blocked (RFLAGS.IF = 0).
        interrupts_blocked: bool,
    },
    /// Instruction.IO: port I/O of 1, 2 or 4 bytes.
    Io {
        /// Access size in bytes (1, 2 or 4).
        size: u8,
        /// Read or write.
        direction: Direction,
        /// The port.
        port: u16,
        /// The data written (0 for a read).
        data: u32,
    },
    /// Instruction.RDMSR.
    Rdmsr {
        /// The MSR index.
        index: u32,
    },
    /// Instruction.WRMSR.
    Wrmsr {
        /// The MSR index.
        index: u32,
        /// The value.
        value: u64,
    },
    /// #VE.RequestMMIO: an MMIO access of 1, 2, 4 or 8 bytes to a shared GPA.
    Mmio {
        /// Access size in bytes (1, 2, 4 or 8).
        size: u8,
        /// Read or write.
        direction: Direction,
        /// The GPA as the guest gave it (with the SHARED bit).
        gpa: Gpa,
        /// The data written (0 for a read).
        data: u64,
    },
    /// Instruction.WBINVD (`invalidate` false = WBNOINVD).
    Wbinvd {
        /// True for WBINVD (R12 = 0), false for WBNOINVD (R12 = 1).
        invalidate: bool,
    },
    /// GetTdVmCallInfo.
    GetTdVmCallInfo {
        /// The leaf (R12): 0 or 1.
        leaf: u64,
    },
    /// MapGPA: convert `[start, start + size)` to shared (SHARED bit set in `start`) or
    /// private (clear).
    MapGpa {
        /// Start GPA, 4 KiB aligned, SHARED bit selects the direction.
        start: Gpa,
        /// Size in bytes, a multiple of 4 KiB.
        size: u64,
    },
    /// GetQuote: a shared buffer holding a TDREPORT in and the quote out.
    GetQuote {
        /// Shared GPA of the buffer.
        gpa: Gpa,
        /// Buffer size in bytes.
        size: u64,
    },
    /// ReportFatalError: the guest is terminating.
    ReportFatalError {
        /// The error code (R12; 0 = panic; bit 63 = `gpa` valid).
        code: u64,
        /// Optional GPA with more information (R13), valid when bit 63 of `code` is set.
        gpa: Gpa,
        /// ASCII message bytes (R14, R15, RBX, RDI, RSI, R8, R9, RDX), NUL-padded.
        message: [u8; FATAL_ERROR_MESSAGE_MAX],
    },
    /// SetupEventNotifyInterrupt: the vector (32..=255) the host injects for events.
    SetupEventNotifyInterrupt {
        /// The interrupt vector.
        vector: u8,
    },
    /// Service: a command/response pair in shared memory.
    Service {
        /// Shared GPA of the command buffer.
        command: Gpa,
        /// Shared GPA of the response buffer.
        response: Gpa,
        /// Notification vector, 0 = blocking.
        vector: u64,
        /// Timeout.
        timeout: u64,
    },
    /// A sub-function this crate does not decode (still forwarded with its raw registers).
    Other {
        /// The sub-function (R11).
        sub_function: TdVmCallSubFunction,
        /// Arguments R12..R15.
        args: [u64; 4],
    },
    /// A vendor-specific call (R10 != 0; KVM treats it as a KVM hypercall number).
    Vendor {
        /// R10.
        r10: u64,
        /// R11..R15.
        args: [u64; 5],
    },
}

/// Why the registers of a TDVMCALL exit do not form a valid request. Each variant names the
/// offending value; the host answers such a call with `TDG.VP.VMCALL_INVALID_OPERAND` (or
/// ALIGN_ERROR, see [`TdVmCallDecodeError::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdVmCallDecodeError {
    /// Access size not allowed for this sub-function.
    InvalidSize {
        /// The sub-function.
        sub_function: TdVmCallSubFunction,
        /// The size given in R12.
        size: u64,
    },
    /// Direction (R13) is neither 0 nor 1.
    InvalidDirection(u64),
    /// Port (R14) above 0xFFFF.
    InvalidPort(u64),
    /// MSR index (R12) above 32 bits.
    InvalidMsr(u64),
    /// CPUID leaf or subleaf (R12/R13) above 32 bits.
    InvalidCpuid {
        /// R12.
        leaf: u64,
        /// R13.
        subleaf: u64,
    },
    /// WBINVD selector (R12) is neither 0 nor 1.
    InvalidWbinvd(u64),
    /// MapGPA start or size not 4 KiB aligned, or zero size.
    MapGpaMisaligned {
        /// R12.
        start: u64,
        /// R13.
        size: u64,
    },
    /// MapGPA range wraps around or crosses the SHARED bit.
    MapGpaInvalidRange {
        /// R12.
        start: u64,
        /// R13.
        size: u64,
    },
    /// A GPA above the TD's GPA width.
    GpaOutOfRange(u64),
    /// A GPA that must be shared is private.
    GpaNotShared(u64),
    /// SetupEventNotifyInterrupt vector outside 32..=255.
    InvalidVector(u64),
}

impl TdVmCallDecodeError {
    /// The TDVMCALL status a host returns to the guest for this error.
    pub fn status(&self) -> TdVmCallStatus {
        match self {
            TdVmCallDecodeError::MapGpaMisaligned { .. } => TdVmCallStatus::ALIGN_ERROR,
            _ => TdVmCallStatus::INVALID_OPERAND,
        }
    }
}

impl fmt::Display for TdVmCallDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TdVmCallDecodeError::InvalidSize { sub_function, size } => {
                write!(f, "{sub_function}: access size {size} is not allowed")
            }
            TdVmCallDecodeError::InvalidDirection(d) => {
                write!(f, "direction {d:#x} is neither 0 (read) nor 1 (write)")
            }
            TdVmCallDecodeError::InvalidPort(p) => write!(f, "port {p:#x} is above 0xffff"),
            TdVmCallDecodeError::InvalidMsr(m) => write!(f, "MSR index {m:#x} is above 32 bits"),
            TdVmCallDecodeError::InvalidCpuid { leaf, subleaf } => {
                write!(
                    f,
                    "CPUID leaf {leaf:#x} / subleaf {subleaf:#x} is above 32 bits"
                )
            }
            TdVmCallDecodeError::InvalidWbinvd(v) => {
                write!(f, "WBINVD selector {v:#x} is neither 0 nor 1")
            }
            TdVmCallDecodeError::MapGpaMisaligned { start, size } => write!(
                f,
                "MapGPA start {start:#x} / size {size:#x} is not a non-empty 4 KiB-aligned range"
            ),
            TdVmCallDecodeError::MapGpaInvalidRange { start, size } => write!(
                f,
                "MapGPA range {start:#x} + {size:#x} wraps or crosses the SHARED bit"
            ),
            TdVmCallDecodeError::GpaOutOfRange(g) => {
                write!(f, "GPA {g:#x} is outside the TD's GPA width")
            }
            TdVmCallDecodeError::GpaNotShared(g) => {
                write!(f, "GPA {g:#x} must be shared (SHARED bit set)")
            }
            TdVmCallDecodeError::InvalidVector(v) => {
                write!(f, "interrupt vector {v} is outside 32..=255")
            }
        }
    }
}

impl core::error::Error for TdVmCallDecodeError {}

fn direction(v: u64) -> Result<Direction, TdVmCallDecodeError> {
    match v {
        0 => Ok(Direction::Read),
        1 => Ok(Direction::Write),
        other => Err(TdVmCallDecodeError::InvalidDirection(other)),
    }
}

fn shared_gpa(v: u64, gpaw: Gpaw) -> Result<Gpa, TdVmCallDecodeError> {
    let gpa = Gpa(v);
    if !gpa.is_valid(gpaw) {
        return Err(TdVmCallDecodeError::GpaOutOfRange(v));
    }
    if !gpa.is_shared(gpaw) {
        return Err(TdVmCallDecodeError::GpaNotShared(v));
    }
    Ok(gpa)
}

impl TdVmCallRequest {
    /// The sub-function of this request (R11); vendor calls report R11 as given.
    pub fn sub_function(&self) -> TdVmCallSubFunction {
        use TdVmCallSubFunction as S;
        match self {
            TdVmCallRequest::Cpuid { .. } => S::INSTRUCTION_CPUID,
            TdVmCallRequest::Hlt { .. } => S::INSTRUCTION_HLT,
            TdVmCallRequest::Io { .. } => S::INSTRUCTION_IO,
            TdVmCallRequest::Rdmsr { .. } => S::INSTRUCTION_RDMSR,
            TdVmCallRequest::Wrmsr { .. } => S::INSTRUCTION_WRMSR,
            TdVmCallRequest::Mmio { .. } => S::VE_REQUEST_MMIO,
            TdVmCallRequest::Wbinvd { .. } => S::INSTRUCTION_WBINVD,
            TdVmCallRequest::GetTdVmCallInfo { .. } => S::GET_TD_VM_CALL_INFO,
            TdVmCallRequest::MapGpa { .. } => S::MAP_GPA,
            TdVmCallRequest::GetQuote { .. } => S::GET_QUOTE,
            TdVmCallRequest::ReportFatalError { .. } => S::REPORT_FATAL_ERROR,
            TdVmCallRequest::SetupEventNotifyInterrupt { .. } => S::SETUP_EVENT_NOTIFY_INTERRUPT,
            TdVmCallRequest::Service { .. } => S::SERVICE,
            TdVmCallRequest::Other { sub_function, .. } => *sub_function,
            TdVmCallRequest::Vendor { args, .. } => S::from_raw(args[0]),
        }
    }

    /// Decodes the guest registers of a TDVMCALL exit. `gpaw` is the TD's GPA width (needed
    /// for the SHARED bit). Only the registers the guest selected are meaningful; the module
    /// zeroes the others, so unselected registers read as 0 here.
    pub fn decode(regs: &Regs, gpaw: Gpaw) -> Result<Self, TdVmCallDecodeError> {
        use TdVmCallSubFunction as S;
        if regs.r10 != 0 {
            return Ok(TdVmCallRequest::Vendor {
                r10: regs.r10,
                args: [regs.r11, regs.r12, regs.r13, regs.r14, regs.r15],
            });
        }
        let sub = S::from_raw(regs.r11);
        let (r12, r13, r14, r15) = (regs.r12, regs.r13, regs.r14, regs.r15);
        let req = match sub {
            S::INSTRUCTION_CPUID => {
                if r12 > u32::MAX as u64 || r13 > u32::MAX as u64 {
                    return Err(TdVmCallDecodeError::InvalidCpuid {
                        leaf: r12,
                        subleaf: r13,
                    });
                }
                TdVmCallRequest::Cpuid {
                    leaf: r12 as u32,
                    subleaf: r13 as u32,
                }
            }
            S::INSTRUCTION_HLT => TdVmCallRequest::Hlt {
                interrupts_blocked: r12 & 1 != 0,
            },
            S::INSTRUCTION_IO => {
                let size = match r12 {
                    1 | 2 | 4 => r12 as u8,
                    _ => {
                        return Err(TdVmCallDecodeError::InvalidSize {
                            sub_function: sub,
                            size: r12,
                        })
                    }
                };
                let direction = direction(r13)?;
                if r14 > u16::MAX as u64 {
                    return Err(TdVmCallDecodeError::InvalidPort(r14));
                }
                let data = match direction {
                    Direction::Write => (r15 & size_mask(size)) as u32,
                    Direction::Read => 0,
                };
                TdVmCallRequest::Io {
                    size,
                    direction,
                    port: r14 as u16,
                    data,
                }
            }
            S::INSTRUCTION_RDMSR => {
                if r12 > u32::MAX as u64 {
                    return Err(TdVmCallDecodeError::InvalidMsr(r12));
                }
                TdVmCallRequest::Rdmsr { index: r12 as u32 }
            }
            S::INSTRUCTION_WRMSR => {
                if r12 > u32::MAX as u64 {
                    return Err(TdVmCallDecodeError::InvalidMsr(r12));
                }
                TdVmCallRequest::Wrmsr {
                    index: r12 as u32,
                    value: r13,
                }
            }
            S::VE_REQUEST_MMIO => {
                let size = match r12 {
                    1 | 2 | 4 | 8 => r12 as u8,
                    _ => {
                        return Err(TdVmCallDecodeError::InvalidSize {
                            sub_function: sub,
                            size: r12,
                        })
                    }
                };
                let direction = direction(r13)?;
                let gpa = shared_gpa(r14, gpaw)?;
                let data = match direction {
                    Direction::Write => r15 & size_mask(size),
                    Direction::Read => 0,
                };
                TdVmCallRequest::Mmio {
                    size,
                    direction,
                    gpa,
                    data,
                }
            }
            S::INSTRUCTION_WBINVD => match r12 {
                0 => TdVmCallRequest::Wbinvd { invalidate: true },
                1 => TdVmCallRequest::Wbinvd { invalidate: false },
                v => return Err(TdVmCallDecodeError::InvalidWbinvd(v)),
            },
            S::GET_TD_VM_CALL_INFO => TdVmCallRequest::GetTdVmCallInfo { leaf: r12 },
            S::MAP_GPA => {
                if r12 & (PAGE_SIZE_4K - 1) != 0 || r13 & (PAGE_SIZE_4K - 1) != 0 || r13 == 0 {
                    return Err(TdVmCallDecodeError::MapGpaMisaligned {
                        start: r12,
                        size: r13,
                    });
                }
                let start = Gpa(r12);
                let last = match r12.checked_add(r13 - 1) {
                    Some(l) => Gpa(l),
                    None => {
                        return Err(TdVmCallDecodeError::MapGpaInvalidRange {
                            start: r12,
                            size: r13,
                        })
                    }
                };
                if !last.is_valid(gpaw) {
                    return Err(TdVmCallDecodeError::GpaOutOfRange(last.raw()));
                }
                if start.is_shared(gpaw) != last.is_shared(gpaw) {
                    return Err(TdVmCallDecodeError::MapGpaInvalidRange {
                        start: r12,
                        size: r13,
                    });
                }
                TdVmCallRequest::MapGpa { start, size: r13 }
            }
            S::GET_QUOTE => TdVmCallRequest::GetQuote {
                gpa: shared_gpa(r12, gpaw)?,
                size: r13,
            },
            S::REPORT_FATAL_ERROR => {
                let mut message = [0u8; FATAL_ERROR_MESSAGE_MAX];
                let words = [
                    regs.r14, regs.r15, regs.rbx, regs.rdi, regs.rsi, regs.r8, regs.r9, regs.rdx,
                ];
                for (chunk, w) in message.chunks_exact_mut(8).zip(words) {
                    chunk.copy_from_slice(&w.to_le_bytes());
                }
                TdVmCallRequest::ReportFatalError {
                    code: r12,
                    gpa: Gpa(r13),
                    message,
                }
            }
            S::SETUP_EVENT_NOTIFY_INTERRUPT => {
                if !(32..=255).contains(&r12) {
                    return Err(TdVmCallDecodeError::InvalidVector(r12));
                }
                TdVmCallRequest::SetupEventNotifyInterrupt { vector: r12 as u8 }
            }
            S::SERVICE => TdVmCallRequest::Service {
                command: shared_gpa(r12, gpaw)?,
                response: shared_gpa(r13, gpaw)?,
                vector: r14,
                timeout: r15,
            },
            other => TdVmCallRequest::Other {
                sub_function: other,
                args: [r12, r13, r14, r15],
            },
        };
        Ok(req)
    }

    /// Writes this request into a register block for TDG.VP.VMCALL (RAX = leaf 0, RCX = the
    /// select mask, R10/R11 and arguments).
    pub fn encode(&self) -> Regs {
        let mut r = Regs {
            rax: LeafAndVersion::new(TdcallLeaf::TDG_VP_VMCALL).raw(),
            rcx: select::STANDARD,
            r11: self.sub_function().raw(),
            ..Regs::default()
        };
        let dir = |d: &Direction| match d {
            Direction::Read => 0,
            Direction::Write => 1,
        };
        match self {
            TdVmCallRequest::Cpuid { leaf, subleaf } => {
                r.r12 = *leaf as u64;
                r.r13 = *subleaf as u64;
            }
            TdVmCallRequest::Hlt { interrupts_blocked } => r.r12 = *interrupts_blocked as u64,
            TdVmCallRequest::Io {
                size,
                direction,
                port,
                data,
            } => {
                r.r12 = *size as u64;
                r.r13 = dir(direction);
                r.r14 = *port as u64;
                r.r15 = *data as u64;
            }
            TdVmCallRequest::Rdmsr { index } => r.r12 = *index as u64,
            TdVmCallRequest::Wrmsr { index, value } => {
                r.r12 = *index as u64;
                r.r13 = *value;
            }
            TdVmCallRequest::Mmio {
                size,
                direction,
                gpa,
                data,
            } => {
                r.r12 = *size as u64;
                r.r13 = dir(direction);
                r.r14 = gpa.raw();
                r.r15 = *data;
            }
            TdVmCallRequest::Wbinvd { invalidate } => r.r12 = !*invalidate as u64,
            TdVmCallRequest::GetTdVmCallInfo { leaf } => r.r12 = *leaf,
            TdVmCallRequest::MapGpa { start, size } => {
                r.r12 = start.raw();
                r.r13 = *size;
            }
            TdVmCallRequest::GetQuote { gpa, size } => {
                r.r12 = gpa.raw();
                r.r13 = *size;
            }
            TdVmCallRequest::ReportFatalError { code, gpa, message } => {
                r.rcx = select::REPORT_FATAL_ERROR;
                r.r12 = *code;
                r.r13 = gpa.raw();
                let mut words = [0u64; 8];
                for (w, chunk) in words.iter_mut().zip(message.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    *w = u64::from_le_bytes(b);
                }
                r.r14 = words[0];
                r.r15 = words[1];
                r.rbx = words[2];
                r.rdi = words[3];
                r.rsi = words[4];
                r.r8 = words[5];
                r.r9 = words[6];
                r.rdx = words[7];
            }
            TdVmCallRequest::SetupEventNotifyInterrupt { vector } => r.r12 = *vector as u64,
            TdVmCallRequest::Service {
                command,
                response,
                vector,
                timeout,
            } => {
                r.r12 = command.raw();
                r.r13 = response.raw();
                r.r14 = *vector;
                r.r15 = *timeout;
            }
            TdVmCallRequest::Other { args, .. } => {
                r.r12 = args[0];
                r.r13 = args[1];
                r.r14 = args[2];
                r.r15 = args[3];
            }
            TdVmCallRequest::Vendor { r10, args } => {
                r.r10 = *r10;
                r.r11 = args[0];
                r.r12 = args[1];
                r.r13 = args[2];
                r.r14 = args[3];
                r.r15 = args[4];
            }
        }
        r
    }

    /// The message of a ReportFatalError request up to the first NUL, if it is UTF-8.
    pub fn fatal_error_message(&self) -> Option<&str> {
        match self {
            TdVmCallRequest::ReportFatalError { message, .. } => {
                let len = message
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(message.len());
                core::str::from_utf8(&message[..len]).ok()
            }
            _ => None,
        }
    }
}

fn size_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// The host's answer to a TDVMCALL: R10 = status, R11 = primary output, R12..R15 = more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdVmCallResponse {
    /// Status returned in R10.
    pub status: TdVmCallStatus,
    /// R11: read data, MSR value, or (MapGPA RETRY/error) the GPA where processing stopped.
    pub r11: u64,
    /// R12..R15: CPUID EAX, EBX, ECX, EDX; GetTdVmCallInfo outputs.
    pub r12_r15: [u64; 4],
}

impl TdVmCallResponse {
    /// SUCCESS with no output.
    pub const fn success() -> Self {
        Self::with_status(TdVmCallStatus::SUCCESS)
    }

    /// A bare status with no output.
    pub const fn with_status(status: TdVmCallStatus) -> Self {
        TdVmCallResponse {
            status,
            r11: 0,
            r12_r15: [0; 4],
        }
    }

    /// SUCCESS with R11 = `value` (I/O or MMIO read data, RDMSR value).
    pub const fn value(value: u64) -> Self {
        TdVmCallResponse {
            status: TdVmCallStatus::SUCCESS,
            r11: value,
            r12_r15: [0; 4],
        }
    }

    /// SUCCESS with the four CPUID output registers in R12..R15.
    pub const fn cpuid(eax: u32, ebx: u32, ecx: u32, edx: u32) -> Self {
        TdVmCallResponse {
            status: TdVmCallStatus::SUCCESS,
            r11: 0,
            r12_r15: [eax as u64, ebx as u64, ecx as u64, edx as u64],
        }
    }

    /// Writes the response into the registers passed back to the guest by TDH.VP.ENTER.
    pub fn apply(&self, regs: &mut Regs) {
        regs.r10 = self.status.raw();
        regs.r11 = self.r11;
        regs.r12 = self.r12_r15[0];
        regs.r13 = self.r12_r15[1];
        regs.r14 = self.r12_r15[2];
        regs.r15 = self.r12_r15[3];
    }

    /// Reads a response from the registers the guest sees after TDG.VP.VMCALL returns.
    pub fn from_regs(regs: &Regs) -> Self {
        TdVmCallResponse {
            status: TdVmCallStatus::from_raw(regs.r10),
            r11: regs.r11,
            r12_r15: [regs.r12, regs.r13, regs.r14, regs.r15],
        }
    }
}

/// Why a guest-side TDVMCALL failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdVmCallError {
    /// The TDCALL itself failed (the module refused TDG.VP.VMCALL, e.g. a bad select mask).
    Tdcall(TdxStatus),
    /// The host answered with an error or RETRY status.
    Host {
        /// The sub-function that was called.
        sub_function: TdVmCallSubFunction,
        /// The status in R10.
        status: TdVmCallStatus,
        /// R11 (for MapGPA: the GPA where processing stopped).
        r11: u64,
    },
}

impl fmt::Display for TdVmCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TdVmCallError::Tdcall(s) => write!(f, "TDG.VP.VMCALL failed: {s}"),
            TdVmCallError::Host {
                sub_function,
                status,
                r11,
            } => write!(f, "{sub_function} returned {status} (R11 {r11:#x})"),
        }
    }
}

impl core::error::Error for TdVmCallError {}

/// Issues one TDG.VP.VMCALL with `request` and returns the host's response if its status is
/// SUCCESS.
pub fn tdvmcall<T: Tdcall + ?Sized>(
    tdcall: &T,
    request: &TdVmCallRequest,
) -> Result<TdVmCallResponse, TdVmCallError> {
    let mut regs = request.encode();
    let status = tdcall.tdcall(&mut regs);
    if status.raw() != TdxStatus::SUCCESS.raw() {
        return Err(TdVmCallError::Tdcall(status));
    }
    let resp = TdVmCallResponse::from_regs(&regs);
    if resp.status != TdVmCallStatus::SUCCESS {
        return Err(TdVmCallError::Host {
            sub_function: request.sub_function(),
            status: resp.status,
            r11: resp.r11,
        });
    }
    Ok(resp)
}

/// Instruction.CPUID: returns EAX, EBX, ECX, EDX as the host emulates them.
pub fn tdvmcall_cpuid<T: Tdcall + ?Sized>(
    t: &T,
    leaf: u32,
    subleaf: u32,
) -> Result<[u32; 4], TdVmCallError> {
    let r = tdvmcall(t, &TdVmCallRequest::Cpuid { leaf, subleaf })?;
    Ok(r.r12_r15.map(|v| v as u32))
}

/// Instruction.HLT.
pub fn tdvmcall_hlt<T: Tdcall + ?Sized>(
    t: &T,
    interrupts_blocked: bool,
) -> Result<(), TdVmCallError> {
    tdvmcall(t, &TdVmCallRequest::Hlt { interrupts_blocked }).map(|_| ())
}

/// Instruction.IO read of `size` (1, 2, 4) bytes from `port`.
pub fn tdvmcall_io_read<T: Tdcall + ?Sized>(
    t: &T,
    port: u16,
    size: u8,
) -> Result<u32, TdVmCallError> {
    let r = tdvmcall(
        t,
        &TdVmCallRequest::Io {
            size,
            direction: Direction::Read,
            port,
            data: 0,
        },
    )?;
    Ok((r.r11 & size_mask(size)) as u32)
}

/// Instruction.IO write of `size` (1, 2, 4) bytes to `port`.
pub fn tdvmcall_io_write<T: Tdcall + ?Sized>(
    t: &T,
    port: u16,
    size: u8,
    data: u32,
) -> Result<(), TdVmCallError> {
    tdvmcall(
        t,
        &TdVmCallRequest::Io {
            size,
            direction: Direction::Write,
            port,
            data,
        },
    )
    .map(|_| ())
}

/// #VE.RequestMMIO read of `size` (1, 2, 4, 8) bytes at the shared `gpa`.
pub fn tdvmcall_mmio_read<T: Tdcall + ?Sized>(
    t: &T,
    gpa: Gpa,
    size: u8,
) -> Result<u64, TdVmCallError> {
    let r = tdvmcall(
        t,
        &TdVmCallRequest::Mmio {
            size,
            direction: Direction::Read,
            gpa,
            data: 0,
        },
    )?;
    Ok(r.r11 & size_mask(size))
}

/// #VE.RequestMMIO write of `size` (1, 2, 4, 8) bytes at the shared `gpa`.
pub fn tdvmcall_mmio_write<T: Tdcall + ?Sized>(
    t: &T,
    gpa: Gpa,
    size: u8,
    data: u64,
) -> Result<(), TdVmCallError> {
    tdvmcall(
        t,
        &TdVmCallRequest::Mmio {
            size,
            direction: Direction::Write,
            gpa,
            data,
        },
    )
    .map(|_| ())
}

/// Instruction.RDMSR.
pub fn tdvmcall_rdmsr<T: Tdcall + ?Sized>(t: &T, index: u32) -> Result<u64, TdVmCallError> {
    tdvmcall(t, &TdVmCallRequest::Rdmsr { index }).map(|r| r.r11)
}

/// Instruction.WRMSR.
pub fn tdvmcall_wrmsr<T: Tdcall + ?Sized>(
    t: &T,
    index: u32,
    value: u64,
) -> Result<(), TdVmCallError> {
    tdvmcall(t, &TdVmCallRequest::Wrmsr { index, value }).map(|_| ())
}

/// GetTdVmCallInfo: returns R11..R14.
pub fn tdvmcall_get_td_vm_call_info<T: Tdcall + ?Sized>(
    t: &T,
    leaf: u64,
) -> Result<[u64; 4], TdVmCallError> {
    let r = tdvmcall(t, &TdVmCallRequest::GetTdVmCallInfo { leaf })?;
    Ok([r.r11, r.r12_r15[0], r.r12_r15[1], r.r12_r15[2]])
}

/// MapGPA of `[start, start + size)`: to shared if `start` carries the SHARED bit, else to
/// private. The host may answer RETRY with R11 = the GPA to resume from; this function
/// resumes until the whole range is converted, at most `max_retries` times.
pub fn tdvmcall_map_gpa<T: Tdcall + ?Sized>(
    t: &T,
    start: Gpa,
    size: u64,
    max_retries: usize,
) -> Result<(), TdVmCallError> {
    let end = start.raw().saturating_add(size);
    let mut cur = start;
    let mut retries = 0;
    loop {
        let req = TdVmCallRequest::MapGpa {
            start: cur,
            size: end - cur.raw(),
        };
        match tdvmcall(t, &req) {
            Ok(_) => return Ok(()),
            Err(TdVmCallError::Host { status, r11, .. })
                if status == TdVmCallStatus::RETRY
                    && retries < max_retries
                    && r11 > cur.raw()
                    && r11 < end =>
            {
                retries += 1;
                cur = Gpa(r11);
            }
            Err(e) => return Err(e),
        }
    }
}

/// GetQuote on the shared buffer at `gpa` of `size` bytes (asynchronous: poll the buffer's
/// status field, see [`crate::leaf::GetQuoteStatus`]).
pub fn tdvmcall_get_quote<T: Tdcall + ?Sized>(
    t: &T,
    gpa: Gpa,
    size: u64,
) -> Result<(), TdVmCallError> {
    tdvmcall(t, &TdVmCallRequest::GetQuote { gpa, size }).map(|_| ())
}

/// SetupEventNotifyInterrupt with `vector` (32..=255).
pub fn tdvmcall_setup_event_notify_interrupt<T: Tdcall + ?Sized>(
    t: &T,
    vector: u8,
) -> Result<(), TdVmCallError> {
    tdvmcall(t, &TdVmCallRequest::SetupEventNotifyInterrupt { vector }).map(|_| ())
}

/// ReportFatalError with `code` and up to 64 bytes of ASCII `message` (longer messages are
/// truncated). A host does not return from this call; if it does, its answer is returned.
pub fn tdvmcall_report_fatal_error<T: Tdcall + ?Sized>(
    t: &T,
    code: u64,
    gpa: Option<Gpa>,
    message: &[u8],
) -> Result<(), TdVmCallError> {
    let mut buf = [0u8; FATAL_ERROR_MESSAGE_MAX];
    let n = message.len().min(FATAL_ERROR_MESSAGE_MAX);
    buf[..n].copy_from_slice(&message[..n]);
    let (code, gpa) = match gpa {
        Some(g) => (code | FATAL_ERROR_GPA_VALID, g),
        None => (code & !FATAL_ERROR_GPA_VALID, Gpa(0)),
    };
    tdvmcall(
        t,
        &TdVmCallRequest::ReportFatalError {
            code,
            gpa,
            message: buf,
        },
    )
    .map(|_| ())
}
