//! `tdx-vmm bench`: the same guest work as a TD on the emulated backend (KVM engine) and as a
//! plain, non-confidential KVM VM, in one run, reported as ratios (TD ÷ plain VM), plus the
//! module figures against their floors.
//!
//! Guests are tiny ring-0 64-bit programs generated here (encodings listed in [`Code`]), run
//! from 1 MiB with the same identity page tables in both VMs:
//! * Every program first writes a marker to port 0x80; times are taken at the VMM's exits, so
//!   "launch to first guest exit" is from the start of the launch to the marker's exit and the
//!   loops are timed from the marker's exit to the final exit. Each figure is the best of
//!   [`BenchOptions::repeats`] runs.
//! * **exit round trip**: a loop of N TDG.VP.VMCALL<Instruction.IO> port writes (the TD,
//!   through the engine's TDCALL doorbell, VP.ENTER exit, the backend's GHCI decode, the
//!   VMM's exit loop and back) vs a loop of N `out 0x80, al` (a plain KVM_EXIT_IO); per exit =
//!   loop time / (N + 1).
//! * **lazy accept per 4 KiB page**: M × (TDG.MEM.PAGE.ACCEPT, then a store): the EPT
//!   violation exit, TDH.MEM.PAGE.AUG, the S-EPT-mirrored memslot update and the ACCEPT — vs
//!   M first-touch stores in the plain VM (KVM faults the host page in).
//! * **launch to first guest exit**: TD create, memory, vCPU, initial image (measured),
//!   finalize, first guest instructions up to the marker's exit — vs VM create, memory,
//!   vCPU, run to the marker.
//! * **measured build per page**: TDH.MEM.PAGE.ADD + 16 × TDH.MR.EXTEND through the backend vs
//!   SHA-384 of the same 6,272 bytes (`sha2`).
//! * **TDMR/PAMT plan for 4 TiB** (64 regions with holes, 64 TDMRs) vs sorting the regions.
//! * **virtio-blk read per request at 4 KiB and 64 KiB**: the same polled virtio-mmio driver
//!   (`guests/blk_bench.s`, assembled by build.rs) in both VMs — in the TD with MMIO through
//!   TDG.VP.VMCALL and the queue and buffers in MapGPA'd shared memory, in the plain VM with
//!   ordinary MMIO exits to the same `tdx-devices` virtio-blk (normal-VM mode).
use std::hint::black_box;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use sha2::{Digest, Sha384};
use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
use tdx_host::backend::{GuestEntry, TdVm, TdxBackend};
use tdx_host::emulated::kvm::apply_entry;
use tdx_host::emulated::PlatformConfig;

use crate::config::TdConfig;
use crate::image::{identity_page_tables, payload_plan, PML4_GPA};
use crate::vmm::{self, ExitStatus, LaunchOptions};

/// Where the guest code is loaded (and entered).
const CODE_GPA: u64 = 0x10_0000;
/// First page the accept/touch loops use.
const TOUCH_GPA: u64 = 0x100_0000;
/// Guest RAM of both VMs.
const RAM: u64 = 64 << 20;

/// A bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// KVM or the emulated backend is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// A run did not end as the guest program should.
    #[error("{what}: {why}")]
    Run {
        /// Which run.
        what: String,
        /// What happened.
        why: String,
    },
}

fn run_err(what: &str, why: impl std::fmt::Display) -> BenchError {
    BenchError::Run {
        what: what.into(),
        why: why.to_string(),
    }
}

/// Knobs.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Exits per round-trip run.
    pub exits: u32,
    /// Pages per lazy-accept run.
    pub pages: u32,
    /// Runs per measurement (the best is kept).
    pub repeats: u32,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            exits: 2000,
            pages: 1024,
            repeats: 3,
        }
    }
}

/// One comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// What is measured.
    pub name: String,
    /// The TD / module figure, in microseconds.
    pub td_us: f64,
    /// The floor, in microseconds.
    pub floor_us: f64,
    /// What the floor is.
    pub floor: String,
    /// `td_us / floor_us`.
    pub ratio: f64,
}

/// The bench results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The rows.
    pub rows: Vec<Row>,
    /// The knobs used.
    pub exits: u32,
    /// The knobs used.
    pub pages: u32,
}

impl BenchReport {
    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "{:<40} {:>12} {:>12} {:>8}  floor\n",
            "measure", "TD (µs)", "floor (µs)", "ratio"
        );
        for r in &self.rows {
            s += &format!(
                "{:<40} {:>12.2} {:>12.2} {:>7.2}×  {}\n",
                r.name, r.td_us, r.floor_us, r.ratio, r.floor
            );
        }
        s
    }
}

fn row(name: &str, td: Duration, floor: Duration, floor_name: &str, per: u32) -> Row {
    let td_us = td.as_secs_f64() * 1e6 / f64::from(per.max(1));
    let floor_us = floor.as_secs_f64() * 1e6 / f64::from(per.max(1));
    Row {
        name: name.into(),
        td_us,
        floor_us,
        floor: floor_name.into(),
        ratio: if floor_us > 0.0 {
            td_us / floor_us
        } else {
            f64::INFINITY
        },
    }
}

/// A ring-0 x86-64 program built from fixed encodings (checked against GNU as):
/// `mov ebx, imm32` BB id; `mov edi, imm32` BF id; `test ebx, ebx` 85 DB; `jz rel32`
/// 0F 84 cd; `dec ebx` FF CB; `jmp rel32` E9 cd; `xor eax, eax` 31 C0; `mov eax, imm32` B8 id;
/// `mov ecx, imm32` B9 id; `xor r10d, r10d` 45 31 D2; `mov r11d..r14d, imm32` 41 BB..BE id;
/// `xor r15d, r15d` 45 31 FF; `mov rcx, rdi` 48 89 F9; `mov [rdi], rbx` 48 89 1F;
/// `add rdi, imm32` 48 81 C7 id; `out imm8, al` E6 ib; `mov dx, imm16` 66 BA iw;
/// `out dx, al` EE; `hlt` F4.
#[derive(Default)]
pub struct Code(Vec<u8>);

impl Code {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn imm(&mut self, op: &[u8], v: u32) -> &mut Self {
        self.b(op).b(&v.to_le_bytes())
    }
    /// `loop: test ebx, ebx; jz end` — returns (loop start, jz displacement position).
    fn loop_head(&mut self) -> (usize, usize) {
        let start = self.0.len();
        self.b(&[0x85, 0xDB, 0x0F, 0x84, 0, 0, 0, 0]);
        (start, self.0.len() - 4)
    }
    /// `dec ebx; jmp loop`, then patches the loop's `jz` to land here.
    fn loop_tail(&mut self, (start, jz): (usize, usize)) {
        self.b(&[0xFF, 0xCB, 0xE9]);
        let rel = start as i64 - (self.0.len() as i64 + 4);
        self.b(&(rel as i32).to_le_bytes());
        let rel = self.0.len() as i64 - (jz as i64 + 4);
        self.0[jz..jz + 4].copy_from_slice(&(rel as i32).to_le_bytes());
    }
    /// TDG.VP.VMCALL<Instruction.IO> write of 1 byte (0) to `port`, via the doorbell.
    fn tdvmcall_out(&mut self, port: u16) -> &mut Self {
        self.b(&[0x31, 0xC0])
            .imm(&[0xB9], 0xFC00)
            .b(&[0x45, 0x31, 0xD2])
            .imm(&[0x41, 0xBB], 30)
            .imm(&[0x41, 0xBC], 1)
            .imm(&[0x41, 0xBD], 1)
            .imm(&[0x41, 0xBE], u32::from(port))
            .b(&[0x45, 0x31, 0xFF, 0xE6, 0xDC])
    }
    /// TDG.MEM.PAGE.ACCEPT of the 4 KiB page at RDI, via the doorbell.
    fn accept_rdi(&mut self) -> &mut Self {
        self.imm(&[0xB8], 6).b(&[0x48, 0x89, 0xF9, 0xE6, 0xDC])
    }
    /// `mov [rdi], rbx; add rdi, 4096`.
    fn touch_next(&mut self) -> &mut Self {
        self.b(&[0x48, 0x89, 0x1F]).imm(&[0x48, 0x81, 0xC7], 4096)
    }
    /// The plain VM's end: `mov dx, 0x501; out dx, al; hlt`.
    fn plain_exit(&mut self) -> &mut Self {
        self.b(&[0x66, 0xBA, 0x01, 0x05, 0xEE, 0xF4])
    }
    /// The TD's end: exit status 0 to port 0x501, `hlt`.
    fn td_exit(&mut self) -> &mut Self {
        self.tdvmcall_out(0x501).b(&[0xF4])
    }
}

/// The guest programs: `td` selects the TD form.
fn marker(c: &mut Code, td: bool) {
    if td {
        c.tdvmcall_out(0x80);
    } else {
        c.b(&[0xE6, 0x80]);
    }
}

fn exits_program(n: u32, td: bool) -> Vec<u8> {
    let mut c = Code::default();
    marker(&mut c, td);
    c.imm(&[0xBB], n);
    let l = c.loop_head();
    if td {
        c.tdvmcall_out(0x80);
    } else {
        c.b(&[0xE6, 0x80]);
    }
    c.loop_tail(l);
    if td {
        c.td_exit();
    } else {
        c.plain_exit();
    }
    c.0
}

fn touch_program(m: u32, td: bool) -> Vec<u8> {
    let mut c = Code::default();
    marker(&mut c, td);
    c.imm(&[0xBB], m).imm(&[0xBF], TOUCH_GPA as u32);
    let l = c.loop_head();
    if td {
        c.accept_rdi();
    }
    c.touch_next();
    c.loop_tail(l);
    if td {
        c.td_exit();
    } else {
        c.plain_exit();
    }
    c.0
}

/// A one-segment ELF64 executable loading `code` at [`CODE_GPA`].
fn flat_elf(code: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&CODE_GPA.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    let size = (code.len() as u64).next_multiple_of(4096);
    let ph = [1u32.to_le_bytes(), 5u32.to_le_bytes()].concat();
    f[64..72].copy_from_slice(&ph);
    f[72..80].copy_from_slice(&0x1000u64.to_le_bytes());
    f[80..88].copy_from_slice(&CODE_GPA.to_le_bytes());
    f[88..96].copy_from_slice(&CODE_GPA.to_le_bytes());
    f[96..104].copy_from_slice(&size.to_le_bytes());
    f[104..112].copy_from_slice(&size.to_le_bytes());
    f.extend_from_slice(code);
    f.resize(0x1000 + size as usize, 0);
    f
}

fn td_config() -> TdConfig {
    TdConfig::parse(
        "memory = \"64M\"\npayload = \"bench.elf\"\n[td]\nsept_ve_disable = false\n",
        std::path::Path::new("bench.toml"),
        std::path::Path::new("/"),
    )
    .expect("the bench's td.toml is valid")
}

/// The timings of one run: start → first exit (the marker), first exit → end.
#[derive(Debug, Clone, Copy)]
struct Timing {
    to_first_exit: Duration,
    first_exit_to_end: Duration,
}

impl Timing {
    fn min(self, o: Timing) -> Timing {
        Timing {
            to_first_exit: self.to_first_exit.min(o.to_first_exit),
            first_exit_to_end: self.first_exit_to_end.min(o.first_exit_to_end),
        }
    }
}

/// One TD launch of `code`.
fn run_td(backend: &EmulatedBackend, code: &[u8], what: &str) -> Result<Timing, BenchError> {
    let plan = payload_plan(&td_config(), &flat_elf(code)).map_err(|e| run_err(what, e))?;
    let opts = LaunchOptions {
        quiet: true,
        ..LaunchOptions::default()
    };
    let out = vmm::launch(backend, &plan, &opts).map_err(|e| run_err(what, e))?;
    if out.status != ExitStatus::Exited(0) {
        return Err(run_err(what, format!("the TD ended with {}", out.status)));
    }
    let tl = out.timeline;
    let (Some(first), Some(end)) = (tl.first_exit, tl.ended) else {
        return Err(run_err(what, "no exit timestamps"));
    };
    Ok(Timing {
        to_first_exit: first - tl.started,
        first_exit_to_end: end - first,
    })
}

/// One plain KVM VM run of `code` (same page tables and entry state).
fn run_plain(kvm: &Kvm, code: &[u8], what: &str) -> Result<Timing, BenchError> {
    run_plain_with(kvm, code, None, what)
}

/// [`run_plain`] with a virtio-blk disk (virtio-mmio at 0xFEB0_0000, normal-VM mode, the
/// VM's whole RAM as the device's memory).
fn run_plain_with(
    kvm: &Kvm,
    code: &[u8],
    disk: Option<&std::path::Path>,
    what: &str,
) -> Result<Timing, BenchError> {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
    let t = Instant::now();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)])
        .map_err(|e| run_err(what, e))?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| run_err(what, e))?;
    mem.write_slice(&identity_page_tables(), GuestAddress(PML4_GPA))
        .and_then(|()| mem.write_slice(code, GuestAddress(CODE_GPA)))
        .map_err(|e| run_err(what, e))?;
    let vm = kvm.create_vm().map_err(|e| run_err(what, e))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: RAM,
        userspace_addr: host as u64,
    };
    // SAFETY: `host` is the start of `mem`'s single RAM-sized anonymous mapping, which
    // outlives `vm` (dropped first, at the end of this function); nothing else maps it.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| run_err(what, e))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| run_err(what, e))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| run_err(what, e))?;
    let mut regs = vcpu.get_regs().map_err(|e| run_err(what, e))?;
    let entry = GuestEntry::Long64 {
        rip: CODE_GPA,
        cr3: PML4_GPA,
    };
    apply_entry(&entry, &mut sregs, &mut regs);
    vcpu.set_sregs(&sregs).map_err(|e| run_err(what, e))?;
    vcpu.set_regs(&regs).map_err(|e| run_err(what, e))?;
    let mut device = match disk {
        None => None,
        Some(path) => {
            let attrs =
                std::sync::Arc::new(tdx_memory::AttributeMap::new(tdx_abi::gpa::Gpaw::Gpaw48));
            let all = tdx_memory::GpaRange::new(tdx_abi::gpa::Gpa(0), RAM)
                .map_err(|e| run_err(what, e))?;
            attrs
                .convert(all, tdx_memory::PageState::Shared)
                .map_err(|e| run_err(what, e))?;
            let shared = tdx_memory::SharedGuestMemory::new(attrs, mem.clone())
                .map_err(|e| run_err(what, e))?;
            let file = std::fs::File::open(path).map_err(|e| run_err(what, e))?;
            let raw = tdx_devices::blk::RawFile::new(file).map_err(|e| run_err(what, e))?;
            Some(tdx_devices::mmio::MmioTransport::new(
                tdx_devices::blk::BlkDevice::new(raw, tdx_devices::blk::BlkConfig::default()),
                shared,
                tdx_devices::interrupt::NoInterrupt,
                tdx_devices::mmio::MmioConfig {
                    mode: tdx_devices::mmio::DeviceMode::Normal,
                    ..tdx_devices::mmio::MmioConfig::default()
                },
            ))
        }
    };
    let mut first = None;
    let mut status = 0u8;
    let end = loop {
        let exit = vcpu.run().map_err(|e| run_err(what, e))?;
        let now = Instant::now();
        first.get_or_insert(now);
        match exit {
            VcpuExit::IoOut(0x501, d) => {
                status = d.first().copied().unwrap_or(0);
                break now;
            }
            VcpuExit::Hlt => break now,
            VcpuExit::IoOut(..) => {}
            VcpuExit::MmioRead(a, d) => match device.as_mut() {
                Some(t) if a >= crate::plan::VIRTIO_MMIO_BASE => {
                    t.read(a - crate::plan::VIRTIO_MMIO_BASE, d)
                }
                _ => d.fill(0xFF),
            },
            VcpuExit::MmioWrite(a, d) => {
                if let Some(t) = device.as_mut() {
                    if a >= crate::plan::VIRTIO_MMIO_BASE {
                        t.write(a - crate::plan::VIRTIO_MMIO_BASE, d);
                    }
                }
            }
            other => return Err(run_err(what, format!("unexpected exit {other:?}"))),
        }
    };
    if status != 0 {
        return Err(run_err(
            what,
            format!("the guest exited with status {status}"),
        ));
    }
    drop(device);
    drop(vcpu);
    drop(vm);
    drop(mem);
    let first = first.unwrap_or(end);
    Ok(Timing {
        to_first_exit: first - t,
        first_exit_to_end: end - first,
    })
}

fn best(
    repeats: u32,
    mut f: impl FnMut() -> Result<Timing, BenchError>,
) -> Result<Timing, BenchError> {
    let mut best = f()?;
    for _ in 1..repeats.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// The bench's virtio-blk guests (`guests/blk_bench.s`, assembled by build.rs; empty when
/// binutils was missing at build time).
const BLK_TD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/blk_bench_td.bin"));
const BLK_VM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/blk_bench_vm.bin"));

/// The virtio-blk guest image at [`CODE_GPA`]: code, the PDPT/PD that map the shared alias
/// (0x103000/0x104000), the parameters N and S at 0x105000.
fn blk_image(code: &[u8], n: u64, size: u64) -> Vec<u8> {
    let mut body = vec![0u8; 6 * 4096];
    body[..code.len()].copy_from_slice(code);
    body[0x3000..0x3008].copy_from_slice(&(0x10_4000u64 | 7).to_le_bytes());
    body[0x4008..0x4010].copy_from_slice(&(0x8000_0020_0000u64 | 0x87).to_le_bytes());
    body[0x5000..0x5008].copy_from_slice(&n.to_le_bytes());
    body[0x5008..0x5010].copy_from_slice(&size.to_le_bytes());
    body
}

/// TD and plain-VM time for `n` reads of `size` bytes (best of `repeats`).
fn blk_pair(
    backend: &EmulatedBackend,
    kvm: &Kvm,
    n: u32,
    size: u64,
    repeats: u32,
) -> Result<(Timing, Timing), BenchError> {
    if BLK_TD.is_empty() || BLK_VM.is_empty() {
        return Err(BenchError::Unavailable(
            "the virtio-blk bench guests were not assembled (binutils missing at build time)"
                .into(),
        ));
    }
    let dir = std::env::temp_dir().join(format!("tdx-vmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| run_err("virtio-blk disk", e))?;
    let disk = dir.join("disk.img");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&disk, data).map_err(|e| run_err("virtio-blk disk", e))?;
    let toml = format!(
        "memory = \"64M\"\npayload = \"bench.elf\"\n[td]\nsept_ve_disable = false\n[[disk]]\npath = {:?}\n",
        disk.display().to_string()
    );
    let config = TdConfig::parse(
        &toml,
        std::path::Path::new("bench.toml"),
        std::path::Path::new("/"),
    )
    .map_err(|e| run_err("virtio-blk td.toml", e))?;
    let td_elf = flat_elf(&blk_image(BLK_TD, u64::from(n), size));
    let plan = payload_plan(&config, &td_elf).map_err(|e| run_err("virtio-blk TD", e))?;
    let td = best(repeats, || {
        let out = vmm::launch(
            backend,
            &plan,
            &LaunchOptions {
                quiet: true,
                ..LaunchOptions::default()
            },
        )
        .map_err(|e| run_err("virtio-blk TD", e))?;
        if out.status != ExitStatus::Exited(0) {
            return Err(run_err(
                "virtio-blk TD",
                format!("the TD ended with {}", out.status),
            ));
        }
        let tl = out.timeline;
        let (Some(first), Some(end)) = (tl.first_exit, tl.ended) else {
            return Err(run_err("virtio-blk TD", "no exit timestamps"));
        };
        Ok(Timing {
            to_first_exit: first - tl.started,
            first_exit_to_end: end - first,
        })
    })?;
    let vm_image = blk_image(BLK_VM, u64::from(n), size);
    let vm = best(repeats, || {
        run_plain_with(kvm, &vm_image, Some(&disk), "virtio-blk VM")
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((td, vm))
}

/// Measured build per page through the backend vs SHA-384 of the same bytes.
fn measured_build(pages: u32) -> Result<(Duration, Duration), BenchError> {
    let backend = EmulatedBackend::new(EmulatedBackendConfig {
        platform: PlatformConfig {
            memory_size: 64 << 20,
            ..PlatformConfig::default()
        },
        engine: EngineChoice::Scripted,
        ..EmulatedBackendConfig::default()
    })
    .map_err(|e| BenchError::Unavailable(e.to_string()))?;
    let vm = backend
        .create_vm(&tdx_host::backend::TdVmConfig::default())
        .map_err(|e| run_err("measured build", e))?;
    let data: Vec<u8> = (0..pages as usize * 4096).map(|i| (i * 31) as u8).collect();
    let ram =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 32 << 20)])
            .map_err(|e| run_err("measured build", e))?;
    let mem = tdx_memory::SharedGuestMemory::new(
        std::sync::Arc::new(tdx_memory::AttributeMap::new(tdx_abi::gpa::Gpaw::Gpaw48)),
        ram,
    )
    .map_err(|e| run_err("measured build", e))?;
    vm.set_memory(&mem)
        .map_err(|e| run_err("measured build", e))?;
    let t = Instant::now();
    vm.add_initial_pages(0x10_0000, &data, true)
        .map_err(|e| run_err("measured build", e))?;
    let td = t.elapsed();
    // Floor: SHA-384 over each page's 49 blocks (one PAGE.ADD block, 16 × (header + 256 B)).
    let t = Instant::now();
    for page in data.chunks(4096) {
        let mut h = Sha384::new();
        h.update([0u8; 128]);
        for chunk in page.chunks(256) {
            h.update([0u8; 128]);
            h.update(chunk);
        }
        black_box(h.finalize());
    }
    Ok((td, t.elapsed()))
}

/// TDMR/PAMT plan for 4 TiB (64 regions of 64 GiB, each after a 256 MiB hole) vs sorting
/// and walking the same regions; per plan, averaged over `iters`.
fn tdmr_plan(iters: u32) -> Result<(Duration, Duration), BenchError> {
    use tdx_abi::tdmr::CmrInfoEntry;
    use tdx_memory::tdmr::{plan_tdmrs, TdmrConstraints, UsableRegion};
    const GIB: u64 = 1 << 30;
    let regions: Vec<UsableRegion> = (0..64u64)
        .rev()
        .map(|i| UsableRegion {
            start: i * 64 * GIB + (256 << 20),
            end: (i + 1) * 64 * GIB,
            node: (i / 32) as u32,
        })
        .collect();
    // At most 32 CMRs: one per pair of slices.
    let cmrs: Vec<CmrInfoEntry> = (0..32u64)
        .map(|p| CmrInfoEntry {
            cmr_base: p * 128 * GIB + (256 << 20),
            cmr_size: 128 * GIB - (256 << 20),
        })
        .collect();
    let constraints = TdmrConstraints::default();
    let plan = plan_tdmrs(&regions, &cmrs, &constraints).map_err(|e| run_err("TDMR plan", e))?;
    if plan.tdmrs.len() != 64 {
        return Err(run_err(
            "TDMR plan",
            format!("{} TDMRs, expected 64", plan.tdmrs.len()),
        ));
    }
    let t = Instant::now();
    for _ in 0..iters {
        black_box(plan_tdmrs(black_box(&regions), black_box(&cmrs), &constraints).ok());
    }
    let td = t.elapsed();
    let t = Instant::now();
    for _ in 0..iters {
        let mut v = black_box(&regions).clone();
        v.sort_unstable_by_key(|r| r.start);
        black_box(v.iter().fold(0u64, |a, r| a + (r.end - r.start)));
    }
    Ok((td, t.elapsed()))
}

/// Runs every comparison (see the module docs).
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let kvm = Kvm::new().map_err(|e| BenchError::Unavailable(format!("/dev/kvm: {e}")))?;
    let backend = EmulatedBackend::new(EmulatedBackendConfig {
        platform: PlatformConfig {
            memory_size: 160 << 20,
            ..PlatformConfig::default()
        },
        engine: EngineChoice::Kvm,
        ..EmulatedBackendConfig::default()
    })
    .map_err(|e| BenchError::Unavailable(e.to_string()))?;
    let r = opts.repeats;
    let (n, m) = (opts.exits, opts.pages);
    let td_e = best(r, || run_td(&backend, &exits_program(n, true), "TD, exits"))?;
    let vm_e = best(r, || run_plain(&kvm, &exits_program(n, false), "VM, exits"))?;
    let td_a = best(r, || {
        run_td(&backend, &touch_program(m, true), "TD, lazy accept")
    })?;
    let vm_a = best(r, || {
        run_plain(&kvm, &touch_program(m, false), "VM, first touch")
    })?;
    let blk_n = opts.exits.clamp(1, 100_000) / 4;
    let (td_b4, vm_b4) = blk_pair(&backend, &kvm, blk_n.max(1), 4096, r)?;
    let (td_b64, vm_b64) = blk_pair(&backend, &kvm, blk_n.max(1), 65536, r)?;
    let (mb_td, mb_floor) = measured_build(256)?;
    let (plan_td, plan_floor) = tdmr_plan(200)?;
    let rows = vec![
        row(
            "launch to first guest exit",
            td_e.to_first_exit.min(td_a.to_first_exit),
            vm_e.to_first_exit.min(vm_a.to_first_exit),
            "plain KVM VM, same guest",
            1,
        ),
        row(
            "exit round trip (TDVMCALL IO vs OUT)",
            td_e.first_exit_to_end,
            vm_e.first_exit_to_end,
            "plain KVM_EXIT_IO",
            n + 1,
        ),
        row(
            "lazy accept per 4 KiB page",
            td_a.first_exit_to_end,
            vm_a.first_exit_to_end,
            "plain VM first-touch fault",
            m,
        ),
        row(
            "virtio-blk 4 KiB read, per request",
            td_b4.first_exit_to_end,
            vm_b4.first_exit_to_end,
            "plain VM, same driver, MMIO exits",
            blk_n.max(1) + 1,
        ),
        row(
            "virtio-blk 64 KiB read, per request",
            td_b64.first_exit_to_end,
            vm_b64.first_exit_to_end,
            "plain VM, same driver, MMIO exits",
            blk_n.max(1) + 1,
        ),
        row(
            "measured build per page (ADD + 16 EXTEND)",
            mb_td,
            mb_floor,
            "SHA-384 of the same 6,272 bytes (sha2)",
            256,
        ),
        row(
            "TDMR/PAMT plan, 4 TiB, 64 TDMRs",
            plan_td,
            plan_floor,
            "sort + walk of the 64 regions",
            200,
        ),
    ];
    Ok(BenchReport {
        rows,
        exits: n,
        pages: m,
    })
}
