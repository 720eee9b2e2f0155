//! The Linux KVM TDX uAPI (merged in 6.16) that kvm-bindings 0.14 does not carry: the
//! `KVM_MEMORY_ENCRYPT_OP` command block and TDX payloads, the `KVM_EXIT_TDX` member of
//! `kvm_run`, and the constants around them. Layouts follow
//! `arch/x86/include/uapi/asm/kvm.h` and `include/uapi/linux/kvm.h` of Linux 6.16 (as
//! synced into QEMU's linux-headers); every size and offset is asserted below and in
//! `tests/kvm_tdx_uapi.rs`.
use kvm_bindings::kvm_cpuid_entry2;

/// `KVM_X86_TDX_VM`: the VM type of a TD.
pub const KVM_X86_TDX_VM: u64 = 5;
/// `KVM_CAP_VM_TYPES` (bitmap of supported VM types).
pub const KVM_CAP_VM_TYPES: u64 = 235;
/// `KVM_CAP_GUEST_MEMFD`.
pub const KVM_CAP_GUEST_MEMFD: u64 = 234;
/// `KVM_CAP_MEMORY_ATTRIBUTES` (bitmask of supported attributes).
pub const KVM_CAP_MEMORY_ATTRIBUTES: u64 = 233;
/// `KVM_CAP_USER_MEMORY2`.
pub const KVM_CAP_USER_MEMORY2: u64 = 231;
/// `KVM_CAP_EXIT_HYPERCALL` (bitmask of hypercalls that may exit to userspace).
pub const KVM_CAP_EXIT_HYPERCALL: u32 = 201;
/// `KVM_CAP_SPLIT_IRQCHIP`.
pub const KVM_CAP_SPLIT_IRQCHIP: u32 = 121;
/// `KVM_HC_MAP_GPA_RANGE`.
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED` in `args[2]` (the range becomes private).
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE`.
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE` in a memory-fault exit.
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
/// `KVM_MEM_GUEST_MEMFD` memslot flag.
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;
/// `KVM_EXIT_TDX`.
pub const KVM_EXIT_TDX: u32 = 40;
/// `KVM_SYSTEM_EVENT_SHUTDOWN`.
pub const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// `KVM_SYSTEM_EVENT_RESET`.
pub const KVM_SYSTEM_EVENT_RESET: u32 = 2;
/// `KVM_SYSTEM_EVENT_TDX_FATAL`: `TDG.VP.VMCALL<ReportFatalError>`; data = the guest GPRs.
pub const KVM_SYSTEM_EVENT_TDX_FATAL: u32 = 7;
/// `KVM_MEMORY_ENCRYPT_OP` = `_IOWR(0xAE, 0xBA, unsigned long)`.
pub const KVM_MEMORY_ENCRYPT_OP: u64 = 0xC008_AEBA;

/// `enum kvm_tdx_cmd_id`.
pub mod cmd {
    /// VM fd: fill `kvm_tdx_capabilities`.
    pub const KVM_TDX_CAPABILITIES: u32 = 0;
    /// VM fd: TDH.MNG.CREATE … TDH.MNG.INIT from `kvm_tdx_init_vm`.
    pub const KVM_TDX_INIT_VM: u32 = 1;
    /// vCPU fd: TDH.VP.CREATE … TDH.VP.INIT, data = initial RCX.
    pub const KVM_TDX_INIT_VCPU: u32 = 2;
    /// vCPU fd: TDH.MEM.PAGE.ADD (+ TDH.MR.EXTEND with the MEASURE flag).
    pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
    /// VM fd: TDH.MR.FINALIZE.
    pub const KVM_TDX_FINALIZE_VM: u32 = 4;
    /// vCPU fd: the CPUID values the module presents.
    pub const KVM_TDX_GET_CPUID: u32 = 5;
}

/// `KVM_TDX_MEASURE_MEMORY_REGION` flag of INIT_MEM_REGION.
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1;

/// `struct kvm_tdx_cmd` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmTdxCmd {
    /// Sub-command ([`cmd`]).
    pub id: u32,
    /// Per-command flags.
    pub flags: u32,
    /// Immediate value or user pointer.
    pub data: u64,
    /// Out: the TDX module's status of the failing SEAMCALL (must be 0 in).
    pub hw_error: u64,
}

/// Most CPUID entries exchanged (`KVM_MAX_CPUID_ENTRIES`).
pub const MAX_CPUID_ENTRIES: usize = 256;

/// `struct kvm_tdx_capabilities` with room for [`MAX_CPUID_ENTRIES`] CPUID entries.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KvmTdxCapabilities {
    /// TD ATTRIBUTES bits the host may set.
    pub supported_attrs: u64,
    /// XFAM bits the host may set.
    pub supported_xfam: u64,
    /// GetTdVmCallInfo leaf-1 R11 bits KVM implements.
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// GetTdVmCallInfo leaf-1 R11 bits KVM forwards to userspace.
    pub user_tdvmcallinfo_1_r11: u64,
    /// GetTdVmCallInfo leaf-1 R12 bits KVM implements.
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// GetTdVmCallInfo leaf-1 R12 bits KVM forwards.
    pub user_tdvmcallinfo_1_r12: u64,
    /// Reserved.
    pub reserved: [u64; 250],
    /// `kvm_cpuid2.nent`: capacity in, count out.
    pub nent: u32,
    /// `kvm_cpuid2.padding`.
    pub padding: u32,
    /// The configurable CPUID bits.
    pub entries: [kvm_cpuid_entry2; MAX_CPUID_ENTRIES],
}

/// `struct kvm_tdx_init_vm` with room for [`MAX_CPUID_ENTRIES`] CPUID entries.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KvmTdxInitVm {
    /// TD ATTRIBUTES.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRCONFIGID.
    pub mrconfigid: [u64; 6],
    /// MROWNER.
    pub mrowner: [u64; 6],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u64; 6],
    /// Reserved, zero.
    pub reserved: [u64; 12],
    /// `kvm_cpuid2.nent`.
    pub nent: u32,
    /// `kvm_cpuid2.padding`.
    pub padding: u32,
    /// CPUID values.
    pub entries: [kvm_cpuid_entry2; MAX_CPUID_ENTRIES],
}

/// `struct kvm_tdx_init_mem_region` (24 bytes); written back with the remaining range.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmTdxInitMemRegion {
    /// Host VA of the initial contents (page aligned).
    pub source_addr: u64,
    /// Private GPA (page aligned).
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub nr_pages: u64,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<KvmTdxCmd>() == 24);
    assert!(offset_of!(KvmTdxCmd, data) == 8);
    assert!(offset_of!(KvmTdxCmd, hw_error) == 16);
    assert!(size_of::<kvm_cpuid_entry2>() == 40);
    assert!(offset_of!(KvmTdxCapabilities, reserved) == 48);
    assert!(offset_of!(KvmTdxCapabilities, nent) == 2048);
    assert!(offset_of!(KvmTdxCapabilities, entries) == 2056);
    assert!(offset_of!(KvmTdxInitVm, mrconfigid) == 16);
    assert!(offset_of!(KvmTdxInitVm, mrowner) == 64);
    assert!(offset_of!(KvmTdxInitVm, mrownerconfig) == 112);
    assert!(offset_of!(KvmTdxInitVm, reserved) == 160);
    assert!(offset_of!(KvmTdxInitVm, nent) == 256);
    assert!(offset_of!(KvmTdxInitVm, entries) == 264);
    assert!(size_of::<KvmTdxInitMemRegion>() == 24);
};

/// `kvm_run` offsets of the `KVM_EXIT_TDX` member (absolute): flags, nr (the TDVMCALL leaf),
/// ret (R10 to the guest), then the variant fields.
pub mod run_tdx {
    /// `kvm_run.exit_reason`.
    pub const EXIT_REASON: usize = 8;
    /// `tdx.flags`.
    pub const FLAGS: usize = 32;
    /// `tdx.nr`.
    pub const NR: usize = 40;
    /// `tdx.<variant>.ret`.
    pub const RET: usize = 48;
    /// `get_quote.gpa` / `setup_event_notify.vector` / `get_tdvmcall_info.leaf`.
    pub const ARG0: usize = 56;
    /// `get_quote.size` / `get_tdvmcall_info.r11`.
    pub const ARG1: usize = 64;
    /// `get_tdvmcall_info.r12`.
    pub const ARG2: usize = 72;
    /// `get_tdvmcall_info.r13`.
    pub const ARG3: usize = 80;
    /// `get_tdvmcall_info.r14`.
    pub const ARG4: usize = 88;
    /// End of the fields used.
    pub const END: usize = 96;
}

/// TDVMCALL leaf numbers that reach userspace as `KVM_EXIT_TDX`.
pub mod tdx_nr {
    /// GetTdVmCallInfo (leaf 1 only).
    pub const GET_TD_VM_CALL_INFO: u64 = 0x10000;
    /// GetQuote.
    pub const GET_QUOTE: u64 = 0x10002;
    /// SetupEventNotifyInterrupt.
    pub const SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 0x10004;
}

/// A `KVM_EXIT_TDX` exit read from `kvm_run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdxRunExit {
    /// GetQuote on a shared buffer (GPA with the shared bit stripped).
    GetQuote {
        /// Buffer GPA.
        gpa: u64,
        /// Buffer size.
        size: u64,
    },
    /// GetTdVmCallInfo leaf 1.
    GetTdVmCallInfo {
        /// R12 leaf.
        leaf: u64,
    },
    /// SetupEventNotifyInterrupt.
    SetupEventNotifyInterrupt {
        /// Vector.
        vector: u64,
    },
    /// A leaf this crate does not know.
    Unknown {
        /// The TDVMCALL leaf.
        nr: u64,
    },
}

fn rd(run: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&run[off..off + 8]);
    u64::from_le_bytes(b)
}

fn wr(run: &mut [u8], off: usize, v: u64) {
    run[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Decodes the `KVM_EXIT_TDX` member of the `kvm_run` bytes `run`; `None` if `run` is
/// shorter than the member or the exit is not `KVM_EXIT_TDX`.
pub fn decode_tdx_exit(run: &[u8]) -> Option<TdxRunExit> {
    if run.len() < run_tdx::END {
        return None;
    }
    let reason = u32::from_le_bytes([run[8], run[9], run[10], run[11]]);
    if reason != KVM_EXIT_TDX {
        return None;
    }
    let nr = rd(run, run_tdx::NR);
    Some(match nr {
        tdx_nr::GET_QUOTE => TdxRunExit::GetQuote {
            gpa: rd(run, run_tdx::ARG0),
            size: rd(run, run_tdx::ARG1),
        },
        tdx_nr::GET_TD_VM_CALL_INFO => TdxRunExit::GetTdVmCallInfo {
            leaf: rd(run, run_tdx::ARG0),
        },
        tdx_nr::SETUP_EVENT_NOTIFY_INTERRUPT => TdxRunExit::SetupEventNotifyInterrupt {
            vector: rd(run, run_tdx::ARG0),
        },
        nr => TdxRunExit::Unknown { nr },
    })
}

/// Writes the completion of a `KVM_EXIT_TDX` exit: `ret` (R10 to the guest) and, for
/// GetTdVmCallInfo, R11..R14. Does nothing if `run` is too short.
pub fn complete_tdx_exit(run: &mut [u8], ret: u64, info: Option<[u64; 4]>) {
    if run.len() < run_tdx::END {
        return;
    }
    wr(run, run_tdx::RET, ret);
    if let Some([r11, r12, r13, r14]) = info {
        wr(run, run_tdx::ARG1, r11);
        wr(run, run_tdx::ARG2, r12);
        wr(run, run_tdx::ARG3, r13);
        wr(run, run_tdx::ARG4, r14);
    }
}

/// The message of a ReportFatalError system event: `data` are the guest GPRs in KVM order
/// (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15); RCX is the mask of registers holding
/// the ASCII message, in the GHCI order R14, R15, RBX, RDI, RSI, R8, R9, RDX (≤ 64 bytes);
/// R12 is the error code, R13 the data GPA when R12 bit 63 is set.
pub fn fatal_error_from_gprs(data: &[u64]) -> (u64, String, Option<u64>) {
    let g = |i: usize| data.get(i).copied().unwrap_or(0);
    let (rcx, r12, r13) = (g(1), g(12), g(13));
    // KVM register index of each message register, in message order.
    let order = [14usize, 15, 3, 7, 6, 8, 9, 2];
    let mut bytes = Vec::new();
    for &reg in &order {
        if rcx & (1 << reg) != 0 {
            bytes.extend_from_slice(&g(reg).to_le_bytes());
        }
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let message = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let data_gpa = (r12 >> 63 != 0).then_some(r13);
    (r12, message, data_gpa)
}
