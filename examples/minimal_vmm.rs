//! A minimal VMM written once against `TdxBackend`: create the TD, give it memory, create a
//! vCPU, add the initial image, finalize, and run — serial output, MapGPA conversions,
//! fatal errors and shutdown handled in one small loop.
//!
//! ```sh
//! cargo run -p tdx-examples --example minimal_vmm -- /usr/share/ovmf/OVMF.fd   # KVM TDX backend
//! cargo run -p tdx-examples --example minimal_vmm -- --emulated                # emulated backend
//! ```
//! With a TDVF image it uses the KVM hardware backend; on a host without TDX it prints why
//! (e.g. "no KVM_X86_TDX_VM (5)") and exits with status 1. `--emulated` runs a built-in
//! 64-bit guest (it prints a line over TDVMCALL port I/O and exits) on the emulated backend
//! with the KVM execution engine — the same loop, the other backend.
use std::error::Error;
use std::sync::Arc;

use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
use tdx_host::backend::kvm::KvmTdxBackend;
use tdx_host::backend::{GuestEntry, TdExit, TdVcpu, TdVm, TdVmConfig, TdxBackend, VmcallStatus};
use tdx_memory::{AttributeMap, GpaRange, SharedGuestMemory};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// A guest image: regions (GPA, bytes, measured), the vCPU's RCX and entry.
struct Image {
    regions: Vec<(u64, Vec<u8>, bool)>,
    rcx: u64,
    entry: GuestEntry,
    memory: u64,
    above_ram: Vec<(u64, u64)>,
}

/// The loop, generic over the backend.
fn run<B: TdxBackend>(backend: &B, image: &Image) -> Result<u8, Box<dyn Error>> {
    let config = TdVmConfig {
        entry: image.entry,
        attributes: 1 << 28, // SEPT_VE_DISABLE
        ..TdVmConfig::default()
    };
    let vm = backend.create_vm(&config)?;
    let mut ranges = vec![(GuestAddress(0), image.memory as usize)];
    ranges.extend(
        image
            .above_ram
            .iter()
            .map(|&(g, l)| (GuestAddress(g), l as usize)),
    );
    let ram = GuestMemoryMmap::<()>::from_ranges(&ranges)?;
    let memory = SharedGuestMemory::new(Arc::new(AttributeMap::new(config.gpaw)), ram)?;
    vm.set_memory(&memory)?;
    let mut vcpu = vm.create_vcpu(0, image.rcx)?;
    for (gpa, data, measure) in &image.regions {
        vm.add_initial_pages(*gpa, data, *measure)?;
    }
    if let Some(mrtd) = vm.finalize()? {
        eprintln!("MRTD {mrtd}");
    }
    loop {
        match vcpu.run()? {
            TdExit::IoOut { port: 0x3F8, data } => print!("{}", String::from_utf8_lossy(data)),
            TdExit::IoOut { port: 0x501, data } => return Ok(data.first().copied().unwrap_or(0)),
            TdExit::IoIn { port, data } => data.fill(if port == 0x3FD { 0x60 } else { 0xFF }),
            TdExit::MmioRead { data, .. } => data.fill(0xFF),
            TdExit::MapGpa {
                gpa,
                size,
                to,
                status,
                ..
            } => {
                *status = match GpaRange::new(tdx_abi::gpa::Gpa(gpa), size) {
                    Ok(r) if vm.convert(r, to).is_ok() => VmcallStatus::Success,
                    _ => VmcallStatus::InvalidOperand,
                }
            }
            TdExit::ReportFatalError {
                error_code,
                message,
                ..
            } => return Err(format!("guest fatal error {error_code:#x}: {message}").into()),
            TdExit::Hlt | TdExit::Shutdown => return Ok(0),
            _ => {}
        }
    }
}

/// 64-bit ring-0 guest: TDG.VP.VMCALL<Instruction.IO> writes of "hi\n" to port 0x3F8 and 0 to
/// port 0x501, through the emulated backend's TDCALL doorbell (`out 0xdc, al`).
fn hello_guest() -> Vec<u8> {
    let mut code = Vec::new();
    for (port, byte) in [(0x3F8u32, b'h'), (0x3F8, b'i'), (0x3F8, b'\n'), (0x501, 0)] {
        code.extend_from_slice(&[0x31, 0xC0]); // xor eax, eax (TDG.VP.VMCALL)
        code.extend_from_slice(&[0xB9, 0x00, 0xFC, 0x00, 0x00]); // mov ecx, 0xfc00
        code.extend_from_slice(&[0x45, 0x31, 0xD2]); // xor r10d, r10d
        code.extend_from_slice(&[0x41, 0xBB, 30, 0, 0, 0]); // mov r11d, 30 (Instruction.IO)
        code.extend_from_slice(&[0x41, 0xBC, 1, 0, 0, 0]); // mov r12d, 1 (size)
        code.extend_from_slice(&[0x41, 0xBD, 1, 0, 0, 0]); // mov r13d, 1 (write)
        code.extend_from_slice(&[0x41, 0xBE]); // mov r14d, port
        code.extend_from_slice(&port.to_le_bytes());
        code.extend_from_slice(&[0x41, 0xBF, byte, 0, 0, 0]); // mov r15d, byte
        code.extend_from_slice(&[0xE6, 0xDC]); // out 0xdc, al
    }
    code.push(0xF4); // hlt
    code.resize(4096, 0);
    code
}

fn main() -> Result<(), Box<dyn Error>> {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let code = if arg == "--emulated" {
        let backend = EmulatedBackend::new(EmulatedBackendConfig {
            engine: EngineChoice::Kvm,
            ..EmulatedBackendConfig::default()
        })?;
        let image = Image {
            regions: vec![
                (0x1000, tdx_vmm::image::identity_page_tables(), true),
                (0x10_0000, hello_guest(), true),
            ],
            rcx: 0,
            entry: GuestEntry::Long64 {
                rip: 0x10_0000,
                cr3: 0x1000,
            },
            memory: 16 << 20,
            above_ram: Vec::new(),
        };
        run(&backend, &image)?
    } else if !arg.is_empty() {
        let backend = match KvmTdxBackend::open() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("minimal_vmm: {e}");
                std::process::exit(1);
            }
        };
        let toml = format!("backend = \"kvm\"\nmemory = \"256M\"\nfirmware = {arg:?}\n");
        let config = tdx_vmm::config::TdConfig::parse(&toml, "td.toml".as_ref(), "/".as_ref())?;
        let plan = tdx_vmm::image::build_plan(&config)?;
        let image = Image {
            regions: plan
                .initial
                .iter()
                .map(|r| (r.gpa, r.data.clone(), r.measure))
                .collect(),
            rcx: plan.vcpu_rcx,
            entry: GuestEntry::ResetVector,
            memory: plan.memory_size,
            above_ram: tdx_vmm::image::regions_outside_ram(&plan),
        };
        run(&backend, &image)?
    } else {
        eprintln!("usage: minimal_vmm TDVF-IMAGE | --emulated");
        std::process::exit(2);
    };
    std::process::exit(i32::from(code));
}
