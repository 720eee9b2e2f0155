//! Guest payloads for TDX tests, built from source by this crate's build script.
//!
//! [`TD_PAYLOAD_ELF`] is the example TD payload of `examples/td-payload`: a static, non-PIE
//! x86-64 ELF linked at 1 MiB whose PT_LOAD segments have file size == memory size (`.bss`
//! lives inside a PROGBITS segment), no relocations and no interpreter. Load its PT_LOAD
//! segments at their physical addresses and enter at `e_entry` with the entry contract
//! documented in `examples/td-payload/src/ring0.rs`:
//!
//! * 64-bit mode, CPL 0, paging on, CR3 → an identity map of GPA [0, 4 GiB) (2 MiB pages,
//!   RW, U=1), interrupts off, no GDT/IDT needed;
//! * RCX = GPA of the TD HOB (PHIT, then resource descriptors; type 7 =
//!   EFI_RESOURCE_MEMORY_UNACCEPTED is accepted by the payload), RSI = vCPU index
//!   (< [`TD_PAYLOAD_MAX_VCPUS`]; others park), RBX = GPAW;
//! * GPAs below 1 MiB free for the loader (page tables, HOB).
//!
//! The payload prints over COM1 (0x3F8, TDVMCALL<Instruction.IO>), ends with a line
//! starting [`TD_PAYLOAD_SUMMARY_PREFIX`] followed by `key=value` results and exits by writing
//! status 0 to port [`TD_PAYLOAD_EXIT_PORT`]; failures are TDVMCALL<ReportFatalError>.

/// The example TD payload ELF.
pub const TD_PAYLOAD_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/td-payload.elf"));

/// Lowest GPA the payload is linked at.
pub const TD_PAYLOAD_LOAD_BASE: u64 = 0x10_0000;

/// vCPUs the payload sets up; vCPUs with a higher index park at CPL 0.
pub const TD_PAYLOAD_MAX_VCPUS: u32 = 4;

/// I/O port the payload writes its exit status byte to (0 = success).
pub const TD_PAYLOAD_EXIT_PORT: u16 = 0x501;

/// Prefix of the payload's final serial line (`key=value` pairs follow).
pub const TD_PAYLOAD_SUMMARY_PREFIX: &str = "td-payload: summary ok=1";
