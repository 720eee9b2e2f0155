//! The KVM TDX hardware backend on a machine without TDX: uAPI layouts against the upstream
//! headers (Linux 6.16 `arch/x86/include/uapi/asm/kvm.h`, `include/uapi/linux/kvm.h`), the
//! refusal message, argument checks that run before any ioctl, and exit decoding and
//! completion on synthetic `kvm_run` bytes.
use std::mem::{offset_of, size_of};
use std::path::Path;

use tdx_abi::gpa::Gpaw;
use tdx_host::backend::kvm::uapi::*;
use tdx_host::backend::kvm::{
    check_config, check_initial_pages, ghci_status, init_vm_block, KvmTdxBackend,
};
use tdx_host::backend::{
    BackendError, CpuidEntry, GuestEntry, TdVmConfig, TdxBackend, VmcallStatus,
};

#[test]
fn uapi_layouts_match_the_kernel_headers() {
    assert_eq!(size_of::<KvmTdxCmd>(), 24);
    assert_eq!(offset_of!(KvmTdxCmd, id), 0);
    assert_eq!(offset_of!(KvmTdxCmd, flags), 4);
    assert_eq!(offset_of!(KvmTdxCmd, data), 8);
    assert_eq!(offset_of!(KvmTdxCmd, hw_error), 16);
    assert_eq!(offset_of!(KvmTdxCapabilities, supported_xfam), 8);
    assert_eq!(offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r12), 40);
    assert_eq!(offset_of!(KvmTdxCapabilities, nent), 2048);
    assert_eq!(offset_of!(KvmTdxCapabilities, entries), 2056);
    assert_eq!(
        size_of::<KvmTdxCapabilities>(),
        2056 + 40 * MAX_CPUID_ENTRIES
    );
    assert_eq!(offset_of!(KvmTdxInitVm, reserved), 160);
    assert_eq!(offset_of!(KvmTdxInitVm, nent), 256);
    assert_eq!(offset_of!(KvmTdxInitVm, entries), 264);
    assert_eq!(size_of::<KvmTdxInitMemRegion>(), 24);
    assert_eq!(offset_of!(KvmTdxInitMemRegion, nr_pages), 16);
    // The ioctl number: _IOWR(0xAE, 0xBA, unsigned long).
    assert_eq!(
        KVM_MEMORY_ENCRYPT_OP,
        (3 << 30) | (8 << 16) | (0xAE << 8) | 0xBA
    );
    // kvm_run: the exit union starts at 32, so the TDX member's fields sit where `run_tdx`
    // says; kvm-bindings' own layout agrees on the union's start and the memory-fault member.
    assert_eq!(
        offset_of!(kvm_bindings::kvm_run, exit_reason),
        run_tdx::EXIT_REASON
    );
    assert_eq!(offset_of!(kvm_bindings::kvm_run, __bindgen_anon_1), 32);
    assert_eq!(
        (run_tdx::FLAGS, run_tdx::NR, run_tdx::RET, run_tdx::ARG0),
        (32, 40, 48, 56)
    );
    assert_eq!(KVM_EXIT_TDX, 40);
    assert_eq!(KVM_SYSTEM_EVENT_TDX_FATAL, 7);
    assert_eq!(kvm_bindings::KVM_X86_TDX_VM as u64, KVM_X86_TDX_VM);
    assert_eq!(
        u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE),
        KVM_MEMORY_ATTRIBUTE_PRIVATE
    );
    assert_eq!(kvm_bindings::KVM_MEM_GUEST_MEMFD, KVM_MEM_GUEST_MEMFD);
}

#[test]
fn without_tdx_the_backend_refuses_and_names_what_is_missing() {
    match KvmTdxBackend::open_path(Path::new("/nonexistent/kvm")) {
        Err(BackendError::Unavailable(m)) => assert!(m.contains("/nonexistent/kvm"), "{m}"),
        other => panic!("{other:?}"),
    }
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: no /dev/kvm: only the missing-device refusal was checked");
        return;
    }
    match KvmTdxBackend::open() {
        Err(BackendError::Unavailable(m)) => {
            eprintln!("refusal on this machine: {m}");
            assert!(
                m.contains("KVM_X86_TDX_VM (5)") || m.contains("lacks"),
                "{m}"
            );
            assert!(m.contains("/dev/kvm"), "{m}");
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(b) => {
            eprintln!("this host runs TDs: capabilities {:?}", b.capabilities());
        }
    }
}

#[test]
fn arguments_are_checked_before_any_ioctl() {
    let long = TdVmConfig {
        entry: GuestEntry::Long64 {
            rip: 0x100000,
            cr3: 0x1000,
        },
        ..TdVmConfig::default()
    };
    assert!(matches!(
        check_config(&long),
        Err(BackendError::Invalid { what: "entry", .. })
    ));
    assert!(check_config(&TdVmConfig::default()).is_ok());
    assert!(check_initial_pages(0x1001, 4096).is_err());
    assert!(check_initial_pages(0x1000, 100).is_err());
    assert!(check_initial_pages(0x1000, 0).is_err());
    assert!(check_initial_pages(!0xFFF, 8192).is_err());
    assert_eq!(check_initial_pages(0x1000, 8192).unwrap(), 2);
}

#[test]
fn init_vm_block_carries_the_config_and_selects_gpaw() {
    let mut cfg = TdVmConfig {
        attributes: 1 << 28,
        xfam: 0xE7,
        gpaw: Gpaw::Gpaw52,
        ..TdVmConfig::default()
    };
    cfg.mrconfigid[0] = 0xAB;
    cfg.mrowner[47] = 0xCD;
    cfg.cpuid.push(CpuidEntry {
        leaf: 7,
        subleaf: Some(0),
        regs: [1, 2, 3, 4],
    });
    let b = init_vm_block(&cfg);
    assert_eq!((b.attributes, b.xfam), (1 << 28, 0xE7));
    assert_eq!(b.mrconfigid[0], 0xAB);
    assert_eq!(b.mrowner[5], 0xCD << 56);
    assert_eq!(b.nent, 2);
    assert_eq!(
        (
            b.entries[0].function,
            b.entries[0].index,
            b.entries[0].flags
        ),
        (7, 0, 1)
    );
    assert_eq!(b.entries[0].edx, 4);
    assert_eq!(b.entries[1].function, 0x8000_0008);
    assert_eq!((b.entries[1].eax >> 16) & 0xFF, 52);
    let b = init_vm_block(&TdVmConfig::default());
    assert_eq!((b.entries[0].eax >> 16) & 0xFF, 48);
}

fn run_buf(reason: u32, nr: u64, args: &[u64]) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<kvm_bindings::kvm_run>()];
    b[8..12].copy_from_slice(&reason.to_le_bytes());
    b[40..48].copy_from_slice(&nr.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        b[56 + 8 * i..64 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    b
}

#[test]
fn tdx_exits_decode_and_complete_at_the_right_offsets() {
    let mut b = run_buf(40, 0x10002, &[0x8000, 0x2000]);
    assert_eq!(
        decode_tdx_exit(&b),
        Some(TdxRunExit::GetQuote {
            gpa: 0x8000,
            size: 0x2000
        })
    );
    complete_tdx_exit(&mut b, ghci_status(VmcallStatus::Success), None);
    assert_eq!(&b[48..56], &[0; 8]);
    complete_tdx_exit(&mut b, ghci_status(VmcallStatus::InvalidOperand), None);
    assert_eq!(u64::from_le_bytes(b[48..56].try_into().unwrap()), 1 << 63);
    let b2 = run_buf(40, 0x10004, &[0x30]);
    assert_eq!(
        decode_tdx_exit(&b2),
        Some(TdxRunExit::SetupEventNotifyInterrupt { vector: 0x30 })
    );
    let mut b3 = run_buf(40, 0x10000, &[1]);
    assert_eq!(
        decode_tdx_exit(&b3),
        Some(TdxRunExit::GetTdVmCallInfo { leaf: 1 })
    );
    complete_tdx_exit(&mut b3, 0, Some([2, 3, 4, 5]));
    let q = |o: usize| u64::from_le_bytes(b3[o..o + 8].try_into().unwrap());
    assert_eq!((q(64), q(72), q(80), q(88)), (2, 3, 4, 5));
    assert_eq!(
        decode_tdx_exit(&run_buf(40, 0x12345, &[])),
        Some(TdxRunExit::Unknown { nr: 0x12345 })
    );
    // Not a TDX exit, or too short: nothing.
    assert_eq!(decode_tdx_exit(&run_buf(2, 0x10002, &[])), None);
    assert_eq!(decode_tdx_exit(&b[..64]), None);
    let mut short = vec![0u8; 50];
    complete_tdx_exit(&mut short, 7, Some([1, 1, 1, 1]));
    assert_eq!(short, vec![0u8; 50]);
}

#[test]
fn fatal_error_message_comes_from_the_masked_registers() {
    let mut g = [0u64; 16];
    g[1] = (1 << 14) | (1 << 15) | (1 << 3); // RCX: R14, R15, RBX hold the message
    g[14] = u64::from_le_bytes(*b"guest pa");
    g[15] = u64::from_le_bytes(*b"nicked: ");
    g[3] = u64::from_le_bytes(*b"oops\0\0\0\0");
    g[12] = (1 << 63) | 0x42;
    g[13] = 0x9000;
    let (code, msg, gpa) = fatal_error_from_gprs(&g);
    assert_eq!(code, (1 << 63) | 0x42);
    assert_eq!(msg, "guest panicked: oops");
    assert_eq!(gpa, Some(0x9000));
    let (_, msg, gpa) = fatal_error_from_gprs(&[0; 3]);
    assert_eq!((msg.as_str(), gpa), ("", None));
}

#[test]
fn ghci_status_values() {
    assert_eq!(ghci_status(VmcallStatus::Success), 0);
    assert_eq!(ghci_status(VmcallStatus::Retry), 1);
    assert_eq!(ghci_status(VmcallStatus::GpaInUse), 0x8000_0000_0000_0001);
    assert_eq!(ghci_status(VmcallStatus::AlignError), 0x8000_0000_0000_0002);
}
