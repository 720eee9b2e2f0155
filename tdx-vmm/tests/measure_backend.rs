//! `tdx-vmm measure` predicts, byte for byte, the MRTD the emulated backend's TDH.MR.FINALIZE
//! reports for the same plan: the plan's initial image is added through the `TdxBackend`
//! traits exactly as the exit loop adds it (regions in order, each page PAGE.ADD then
//! MR.EXTEND when measured), for an ELF payload and for Debian's OVMF.
use std::path::Path;
use std::sync::Arc;

use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
use tdx_host::backend::{TdVm, TdxBackend};
use tdx_host::emulated::PlatformConfig;
use tdx_memory::attributes::AttributeMap;
use tdx_memory::shared::SharedGuestMemory;
use tdx_vmm::config::TdConfig;
use tdx_vmm::image;
use tdx_vmm::measure;
use tdx_vmm::plan::LaunchPlan;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// Adds the plan's initial image to a TD on the emulated backend and returns its MRTD.
fn backend_mrtd(plan: &LaunchPlan) -> tdx_abi::measure::Measurement {
    let backend = EmulatedBackend::new(EmulatedBackendConfig {
        platform: PlatformConfig {
            memory_size: 128 << 20,
            report_mac_key: [7; 32],
            ..PlatformConfig::default()
        },
        engine: EngineChoice::Scripted,
        ..EmulatedBackendConfig::default()
    })
    .expect("emulated backend");
    let vm = backend.create_vm(&plan.vm).expect("create_vm");
    let mut ranges = vec![(GuestAddress(0), plan.memory_size as usize)];
    ranges.extend(
        image::regions_outside_ram(plan)
            .into_iter()
            .map(|(gpa, len)| (GuestAddress(gpa), len as usize)),
    );
    let mmap = GuestMemoryMmap::<()>::from_ranges(&ranges).expect("guest memory");
    let mem = SharedGuestMemory::new(Arc::new(AttributeMap::new(plan.vm.gpaw)), mmap)
        .expect("shared memory");
    vm.set_memory(&mem).expect("set_memory");
    let _vcpus: Vec<_> = (0..plan.vcpus)
        .map(|i| vm.create_vcpu(i, plan.vcpu_rcx).expect("create_vcpu"))
        .collect();
    for r in &plan.initial {
        vm.add_initial_pages(r.gpa, &r.data, r.measure)
            .unwrap_or_else(|e| panic!("add {} at {:#x}: {e}", r.name, r.gpa));
    }
    vm.finalize()
        .expect("finalize")
        .expect("the emulated backend reports MRTD")
}

fn config(text: &str) -> TdConfig {
    TdConfig::parse(text, Path::new("td.toml"), Path::new("/")).expect("td.toml")
}

/// A two-segment x86-64 payload at 1 MiB.
fn payload() -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&2u16.to_le_bytes());
    for (i, (flags, off, gpa, filesz, memsz)) in [
        (5u32, 0x1000u64, 0x10_0000u64, 0x1800u64, 0x1800u64),
        (6, 0x2800, 0x10_2000, 0x800, 0x3000),
    ]
    .into_iter()
    .enumerate()
    {
        let o = 64 + 56 * i;
        f[o..o + 4].copy_from_slice(&1u32.to_le_bytes());
        f[o + 4..o + 8].copy_from_slice(&flags.to_le_bytes());
        f[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
        f[o + 16..o + 24].copy_from_slice(&gpa.to_le_bytes());
        f[o + 24..o + 32].copy_from_slice(&gpa.to_le_bytes());
        f[o + 32..o + 40].copy_from_slice(&filesz.to_le_bytes());
        f[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
    }
    f.extend((0..0x2000u32).map(|i| (i * 13 % 255) as u8));
    f
}

#[test]
fn elf_payload_mrtd_equals_the_backend_finalize() {
    let c = config("payload = \"p.elf\"\nmemory = \"32M\"\nvcpus = 2\n[td]\ndebug = true\n");
    let plan = image::payload_plan(&c, &payload()).expect("plan");
    let offline = measure::mrtd(&plan).expect("measure").mrtd;
    assert_eq!(backend_mrtd(&plan), offline);
    // The comparison can fail: another payload byte, another MRTD on both sides.
    let mut other = payload();
    other[0x1100] ^= 1;
    let plan2 = image::payload_plan(&c, &other).expect("plan");
    assert_ne!(measure::mrtd(&plan2).expect("measure").mrtd, offline);
}

#[test]
fn ovmf_mrtd_equals_the_backend_finalize() {
    let img = match std::fs::read(OVMF) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED: {OVMF} unavailable ({e}); install Debian's `ovmf` package");
            return;
        }
    };
    let c = config("firmware = \"fw\"\nmemory = \"64M\"\n");
    let plan = image::firmware_plan(&c, &img).expect("plan");
    assert!(!image::regions_outside_ram(&plan).is_empty());
    assert_eq!(
        backend_mrtd(&plan),
        measure::mrtd(&plan).expect("measure").mrtd
    );
}
