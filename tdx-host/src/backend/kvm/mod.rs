//! The hardware backend: [`TdxBackend`] over the Linux KVM TDX uAPI (Linux ≥ 6.16, VM type
//! `KVM_X86_TDX_VM`), with kvm-ioctls/kvm-bindings for everything they provide and our own
//! definitions ([`uapi`]) for the TDX structs, the vCPU-level `KVM_MEMORY_ENCRYPT_OP` and the
//! `KVM_EXIT_TDX` exit.
//!
//! | trait call | KVM |
//! |---|---|
//! | [`KvmTdxBackend::open`] | `/dev/kvm`; `KVM_CAP_VM_TYPES` must offer type 5, plus guest_memfd, memslot v2 and the PRIVATE memory attribute |
//! | [`TdxBackend::capabilities`] | `KVM_TDX_CAPABILITIES` on a probe VM |
//! | [`TdxBackend::create_vm`] | `KVM_CREATE_VM(5)`, split irqchip, `KVM_CAP_EXIT_HYPERCALL` (MAP_GPA_RANGE), `KVM_TDX_INIT_VM` |
//! | [`TdVm::set_memory`] | per RAM region: `KVM_CREATE_GUEST_MEMFD`, `KVM_SET_USER_MEMORY_REGION2` (shared backing + guest_memfd), `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` |
//! | [`TdVm::create_vcpu`] | `KVM_CREATE_VCPU`, `KVM_TDX_INIT_VCPU` (initial RCX) |
//! | [`TdVm::add_initial_pages`] | `KVM_TDX_INIT_MEM_REGION` (MEASURE flag), re-issued on EINTR/EAGAIN |
//! | [`TdVm::finalize`] | `KVM_TDX_FINALIZE_VM` (KVM gives no MRTD: returns `None`) |
//! | [`TdVm::convert`] | `KVM_SET_MEMORY_ATTRIBUTES` + the attribute map; to shared also punches the range out of the guest_memfd |
//! | [`TdVcpu::run`] | `KVM_RUN`: IO, MMIO, `KVM_EXIT_HYPERCALL(MAP_GPA_RANGE)` → MapGPA, `KVM_EXIT_MEMORY_FAULT` → implicit conversion, `KVM_EXIT_TDX` → GetQuote / SetupEventNotifyInterrupt (GetTdVmCallInfo answered here), `KVM_EXIT_SYSTEM_EVENT` → ReportFatalError / shutdown |
//!
//! **Measurement order.** KVM's INIT_MEM_REGION with the MEASURE flag issues, per 4 KiB page,
//! TDH.MEM.PAGE.ADD then 16 × TDH.MR.EXTEND; [`tdx_abi::measure::MrtdBuilder`] and
//! `tdx-vmm measure` predict MRTD in exactly that order, as the emulated backend does.
//!
//! Without TDX (no VM type 5), [`KvmTdxBackend::open`] fails with
//! [`BackendError::Unavailable`] naming what is missing. `GuestEntry::Long64` is refused:
//! hardware enters every TD at the reset vector.
pub mod uapi;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_create_guest_memfd, kvm_enable_cap, kvm_memory_attributes, kvm_userspace_memory_region2,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use tdx_abi::gpa::Gpaw;
use tdx_abi::measure::Measurement;
use tdx_abi::status::TdxStatus;
use tdx_memory::attributes::PageState;
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::SharedGuestMemory;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::{
    BackendError, GuestEntry, TdExit, TdVcpu, TdVm, TdVmConfig, TdxBackend, TdxCapabilities,
    VcpuKicker, VmcallStatus,
};
use uapi::*;

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BackendError {
    move |e| BackendError::Kvm {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// Why a TDX sub-command failed: errno plus the decoded `hw_error`.
fn tdx_cmd_err(op: &'static str, errno: i32, hw_error: u64) -> BackendError {
    if hw_error != 0 {
        BackendError::Module {
            op,
            status: format!("{} (errno {errno})", TdxStatus::from_raw(hw_error)),
        }
    } else {
        BackendError::Kvm {
            op,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }
}

/// `KVM_MEMORY_ENCRYPT_OP` on any KVM fd (VM or vCPU) with a TDX command.
fn tdx_cmd(
    fd: &impl AsRawFd,
    op: &'static str,
    id: u32,
    flags: u32,
    data: u64,
) -> Result<(), BackendError> {
    let mut cmd = KvmTdxCmd {
        id,
        flags,
        data,
        hw_error: 0,
    };
    // SAFETY: KVM_MEMORY_ENCRYPT_OP reads and writes exactly one `struct kvm_tdx_cmd` behind
    // the pointer, which is a live, exclusively borrowed local; `data` is either an immediate
    // or a pointer the caller keeps alive and writable for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_MEMORY_ENCRYPT_OP as _, &mut cmd) };
    if r < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(tdx_cmd_err(op, errno, cmd.hw_error));
    }
    Ok(())
}

/// The KVM TDX backend.
#[derive(Debug)]
pub struct KvmTdxBackend {
    kvm: Kvm,
    path: PathBuf,
}

impl KvmTdxBackend {
    /// Opens `/dev/kvm` and checks that it runs TDs.
    pub fn open() -> Result<Self, BackendError> {
        Self::open_path(Path::new("/dev/kvm"))
    }

    /// Opens the KVM device at `path` (tests use this to name a missing device).
    pub fn open_path(path: &Path) -> Result<Self, BackendError> {
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            BackendError::Invalid {
                what: "KVM device path",
                why: format!("{} contains a NUL byte", path.display()),
            }
        })?;
        let kvm = Kvm::new_with_path(cpath.as_c_str()).map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot open {}: {} (KVM not loaded or no permission)",
                path.display(),
                std::io::Error::from_raw_os_error(e.errno())
            ))
        })?;
        let b = KvmTdxBackend {
            kvm,
            path: path.to_path_buf(),
        };
        b.check()?;
        Ok(b)
    }

    /// What this KVM lacks for TDX, as a message (`Ok` when nothing is missing).
    fn check(&self) -> Result<(), BackendError> {
        let types = self.kvm.check_extension_raw(KVM_CAP_VM_TYPES as _);
        if types < 0 || types & (1 << KVM_X86_TDX_VM) == 0 {
            let names = ["DEFAULT", "SW_PROTECTED", "SEV", "SEV_ES", "SNP", "TDX"];
            let offered: Vec<&str> = (0..names.len())
                .filter(|i| types > 0 && types & (1 << i) != 0)
                .map(|i| names[i])
                .collect();
            return Err(BackendError::Unavailable(format!(
                "KVM at {} offers VM types {{{}}} (KVM_CAP_VM_TYPES = {types:#x}): no \
                 KVM_X86_TDX_VM (5). TDX needs a TDX-capable CPU with TDX enabled in the \
                 BIOS, the TDX module loaded, Linux >= 6.16 and kvm_intel.tdx=1",
                self.path.display(),
                offered.join(", ")
            )));
        }
        let missing: Vec<&str> = [
            (KVM_CAP_GUEST_MEMFD, "KVM_CAP_GUEST_MEMFD"),
            (KVM_CAP_USER_MEMORY2, "KVM_CAP_USER_MEMORY2"),
        ]
        .iter()
        .filter(|(c, _)| self.kvm.check_extension_raw(*c as _) <= 0)
        .map(|(_, n)| *n)
        .collect();
        let attrs = self.kvm.check_extension_raw(KVM_CAP_MEMORY_ATTRIBUTES as _);
        if !missing.is_empty() || attrs < 0 || (attrs as u64) & KVM_MEMORY_ATTRIBUTE_PRIVATE == 0 {
            return Err(BackendError::Unavailable(format!(
                "KVM at {} offers TDX VMs but lacks {}{}",
                self.path.display(),
                missing.join(", "),
                if (attrs.max(0) as u64) & KVM_MEMORY_ATTRIBUTE_PRIVATE == 0 {
                    " KVM_MEMORY_ATTRIBUTE_PRIVATE"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    fn tdx_vm(&self) -> Result<VmFd, BackendError> {
        self.kvm
            .create_vm_with_type(KVM_X86_TDX_VM)
            .map_err(kvm_err("KVM_CREATE_VM(KVM_X86_TDX_VM)"))
    }
}

/// `KVM_TDX_CAPABILITIES` on `vm`.
fn tdx_capabilities(vm: &VmFd) -> Result<Box<KvmTdxCapabilities>, BackendError> {
    // SAFETY: KvmTdxCapabilities is plain integers and arrays of them: all-zero is valid.
    let mut caps: Box<KvmTdxCapabilities> = Box::new(unsafe { std::mem::zeroed() });
    caps.nent = MAX_CPUID_ENTRIES as u32;
    let ptr = &mut *caps as *mut KvmTdxCapabilities as u64;
    tdx_cmd(
        vm,
        "KVM_TDX_CAPABILITIES",
        cmd::KVM_TDX_CAPABILITIES,
        0,
        ptr,
    )?;
    Ok(caps)
}

/// Checks the arguments of [`TdVm::add_initial_pages`] (4 KiB aligned GPA, non-empty whole
/// pages, no overflow).
pub fn check_initial_pages(gpa: u64, len: usize) -> Result<u64, BackendError> {
    if gpa % 4096 != 0 || len == 0 || len % 4096 != 0 {
        return Err(BackendError::Invalid {
            what: "initial pages",
            why: format!("GPA {gpa:#x} + {len:#x} bytes: need a 4 KiB aligned GPA and whole pages"),
        });
    }
    if gpa.checked_add(len as u64).is_none() {
        return Err(BackendError::Invalid {
            what: "initial pages",
            why: format!("GPA {gpa:#x} + {len:#x} bytes overflows"),
        });
    }
    Ok(len as u64 / 4096)
}

/// Checks a TD configuration against what KVM's INIT_VM can express on this backend.
pub fn check_config(config: &TdVmConfig) -> Result<(), BackendError> {
    if let GuestEntry::Long64 { .. } = config.entry {
        return Err(BackendError::Invalid {
            what: "entry",
            why: "the KVM TDX backend starts every TD at the reset vector (TDVF); a 64-bit ELF \
                  entry exists only on the emulated backend"
                .into(),
        });
    }
    if config.cpuid.len() > MAX_CPUID_ENTRIES {
        return Err(BackendError::Invalid {
            what: "cpuid",
            why: format!(
                "{} entries (at most {MAX_CPUID_ENTRIES})",
                config.cpuid.len()
            ),
        });
    }
    if config.max_vcpus == 0 {
        return Err(BackendError::Invalid {
            what: "max_vcpus",
            why: "0".into(),
        });
    }
    Ok(())
}

fn words(b: &[u8; 48]) -> [u64; 6] {
    let mut w = [0u64; 6];
    for (i, c) in b.chunks(8).enumerate() {
        w[i] = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    }
    w
}

/// The `kvm_tdx_init_vm` block for `config` (CPUID 0x80000008 EAX bits 23:16 set from the GPA
/// width, which is how KVM selects GPAW).
pub fn init_vm_block(config: &TdVmConfig) -> Box<KvmTdxInitVm> {
    // SAFETY: KvmTdxInitVm is plain integers and arrays of them: all-zero is valid.
    let mut b: Box<KvmTdxInitVm> = Box::new(unsafe { std::mem::zeroed() });
    b.attributes = config.attributes;
    b.xfam = config.xfam;
    b.mrconfigid = words(&config.mrconfigid);
    b.mrowner = words(&config.mrowner);
    b.mrownerconfig = words(&config.mrownerconfig);
    let mut n = 0;
    let mut has_8008 = false;
    for e in config.cpuid.iter().take(MAX_CPUID_ENTRIES) {
        let ent = &mut b.entries[n];
        ent.function = e.leaf;
        ent.index = e.subleaf.unwrap_or(0);
        ent.flags = if e.subleaf.is_some() { 1 } else { 0 }; // KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        [ent.eax, ent.ebx, ent.ecx, ent.edx] = e.regs;
        if e.leaf == 0x8000_0008 {
            has_8008 = true;
            let bits = if config.gpaw == Gpaw::Gpaw52 { 52 } else { 48 };
            ent.eax = (ent.eax & !0x00FF_0000) | (bits << 16);
        }
        n += 1;
    }
    if !has_8008 && n < MAX_CPUID_ENTRIES {
        let ent = &mut b.entries[n];
        ent.function = 0x8000_0008;
        ent.eax = if config.gpaw == Gpaw::Gpaw52 { 52 } else { 48 } << 16;
        n += 1;
    }
    b.nent = n as u32;
    b
}

impl TdxBackend for KvmTdxBackend {
    type Vm = KvmTdxVm;

    fn name(&self) -> &'static str {
        "kvm"
    }

    fn capabilities(&self) -> Result<TdxCapabilities, BackendError> {
        let vm = self.tdx_vm()?;
        let caps = tdx_capabilities(&vm)?;
        let n = (caps.nent as usize).min(MAX_CPUID_ENTRIES);
        Ok(TdxCapabilities {
            supported_attributes: caps.supported_attrs,
            supported_xfam: caps.supported_xfam,
            max_vcpus: vm.check_extension_raw(66).max(1) as u32,
            gpaws: vec![Gpaw::Gpaw48, Gpaw::Gpaw52],
            configurable_cpuid: caps.entries[..n]
                .iter()
                .map(|e| {
                    let sub = (e.flags & 1 != 0).then_some(e.index);
                    (e.function, sub, [e.eax, e.ebx, e.ecx, e.edx])
                })
                .collect(),
        })
    }

    fn create_vm(&self, config: &TdVmConfig) -> Result<KvmTdxVm, BackendError> {
        check_config(config)?;
        let vm = self.tdx_vm()?;
        let enable = |cap: u32, arg0: u64, op: &'static str| {
            let c = kvm_enable_cap {
                cap,
                args: [arg0, 0, 0, 0],
                ..Default::default()
            };
            vm.enable_cap(&c).map_err(kvm_err(op))
        };
        enable(KVM_CAP_SPLIT_IRQCHIP, 24, "KVM_ENABLE_CAP(SPLIT_IRQCHIP)")?;
        enable(
            KVM_CAP_EXIT_HYPERCALL,
            1 << KVM_HC_MAP_GPA_RANGE,
            "KVM_ENABLE_CAP(EXIT_HYPERCALL)",
        )?;
        let mut block = init_vm_block(config);
        let ptr = &mut *block as *mut KvmTdxInitVm as u64;
        tdx_cmd(&vm, "KVM_TDX_INIT_VM", cmd::KVM_TDX_INIT_VM, 0, ptr)?;
        Ok(KvmTdxVm {
            vm,
            config: config.clone(),
            state: Mutex::new(VmState::default()),
        })
    }
}

#[derive(Debug, Default)]
struct VmState {
    memory: Option<SharedGuestMemory>,
    /// guest_memfd per RAM region: (region GPA, size, fd).
    gmem: Vec<(u64, u64, OwnedFd)>,
    vcpu0: Option<Arc<Mutex<OwnedFd>>>,
    finalized: bool,
}

/// A TD on KVM.
#[derive(Debug)]
pub struct KvmTdxVm {
    vm: VmFd,
    config: TdVmConfig,
    state: Mutex<VmState>,
}

impl KvmTdxVm {
    fn st(&self) -> std::sync::MutexGuard<'_, VmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_attributes(&self, gpa: u64, size: u64, to: PageState) -> Result<(), BackendError> {
        let attr = kvm_memory_attributes {
            address: gpa,
            size,
            attributes: if to == PageState::Private {
                KVM_MEMORY_ATTRIBUTE_PRIVATE
            } else {
                0
            },
            flags: 0,
        };
        self.vm
            .set_memory_attributes(attr)
            .map_err(kvm_err("KVM_SET_MEMORY_ATTRIBUTES"))
    }

    /// The TD's configuration.
    pub fn config(&self) -> &TdVmConfig {
        &self.config
    }

    /// `KVM_TDX_GET_CPUID` on vCPU 0: the CPUID values the module presents.
    pub fn tdx_cpuid(&self) -> Result<Vec<kvm_bindings::kvm_cpuid_entry2>, BackendError> {
        let v = self.st().vcpu0.clone().ok_or(BackendError::State {
            op: "KVM_TDX_GET_CPUID",
            why: "no vCPU created yet".into(),
        })?;
        let mut cpuid =
            kvm_bindings::CpuId::new(MAX_CPUID_ENTRIES).map_err(|_| BackendError::Invalid {
                what: "cpuid",
                why: "allocation".into(),
            })?;
        let fd = v.lock().unwrap_or_else(|e| e.into_inner());
        let ptr = cpuid.as_mut_fam_struct_ptr() as u64;
        tdx_cmd(&*fd, "KVM_TDX_GET_CPUID", cmd::KVM_TDX_GET_CPUID, 0, ptr)?;
        Ok(cpuid.as_slice().to_vec())
    }
}

/// A page-aligned copy of initial contents (INIT_MEM_REGION needs a page-aligned source).
struct AlignedPages {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedPages {
    fn copy_of(data: &[u8]) -> Result<Self, BackendError> {
        let layout = std::alloc::Layout::from_size_align(data.len(), 4096).map_err(|e| {
            BackendError::Invalid {
                what: "initial pages",
                why: e.to_string(),
            }
        })?;
        // SAFETY: `layout` has a non-zero size (checked by check_initial_pages).
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `ptr` is a fresh allocation of `data.len()` bytes, disjoint from `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, data.len()) };
        Ok(AlignedPages { ptr, layout })
    }
}

impl Drop for AlignedPages {
    fn drop(&mut self) {
        // SAFETY: allocated in `copy_of` with this layout and not freed elsewhere.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

impl TdVm for KvmTdxVm {
    type Vcpu = KvmTdxVcpu;

    fn set_memory(&self, memory: &SharedGuestMemory) -> Result<(), BackendError> {
        let mut st = self.st();
        if st.memory.is_some() {
            return Err(BackendError::State {
                op: "set_memory",
                why: "memory was already set".into(),
            });
        }
        for (slot, region) in memory.backing().iter().enumerate() {
            let gpa = region.start_addr().0;
            let size = region.len();
            let gmem = kvm_create_guest_memfd {
                size,
                flags: 0,
                reserved: [0; 6],
            };
            let fd = self
                .vm
                .create_guest_memfd(gmem)
                .map_err(kvm_err("KVM_CREATE_GUEST_MEMFD"))?;
            // SAFETY: KVM just returned `fd` as a new descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let host = memory
                .backing()
                .get_host_address(region.start_addr())
                .map_err(|e| BackendError::Invalid {
                    what: "memory",
                    why: format!("region at {gpa:#x}: {e}"),
                })?;
            let r = kvm_userspace_memory_region2 {
                slot: slot as u32,
                flags: KVM_MEM_GUEST_MEMFD,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: host as u64,
                guest_memfd_offset: 0,
                guest_memfd: fd.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: `host` maps `size` bytes of `memory`'s backing, which the VM keeps (in
            // `st.memory`) for as long as the memslot exists; `fd` is kept in `st.gmem`.
            unsafe { self.vm.set_user_memory_region2(r) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION2"))?;
            self.set_attributes(gpa, size, PageState::Private)?;
            st.gmem.push((gpa, size, fd));
        }
        st.memory = Some(memory.clone());
        Ok(())
    }

    fn create_vcpu(&self, index: u32, rcx: u64) -> Result<KvmTdxVcpu, BackendError> {
        crate::emulated::kvm::install_kick_handler()
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        let fd = self
            .vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        tdx_cmd(&fd, "KVM_TDX_INIT_VCPU", cmd::KVM_TDX_INIT_VCPU, 0, rcx)?;
        let mut st = self.st();
        if st.vcpu0.is_none() {
            // SAFETY: dup of a live descriptor; the copy is owned by the returned OwnedFd.
            let dup = unsafe { libc::dup(fd.as_raw_fd()) };
            if dup < 0 {
                return Err(BackendError::Kvm {
                    op: "dup(vCPU fd)",
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: `dup` is a new descriptor we own.
            let owned = unsafe { OwnedFd::from_raw_fd(dup) };
            st.vcpu0 = Some(Arc::new(Mutex::new(owned)));
        }
        Ok(KvmTdxVcpu {
            fd,
            index,
            kicker: Arc::new(KvmKicker::default()),
            pending: Pending::None,
            status: VmcallStatus::Success,
            retry_gpa: 0,
        })
    }

    fn add_initial_pages(&self, gpa: u64, data: &[u8], measure: bool) -> Result<(), BackendError> {
        let pages = check_initial_pages(gpa, data.len())?;
        let st = self.st();
        if st.finalized {
            return Err(BackendError::State {
                op: "add_initial_pages",
                why: "the TD is finalized".into(),
            });
        }
        let v = st.vcpu0.clone().ok_or(BackendError::State {
            op: "add_initial_pages",
            why: "KVM_TDX_INIT_MEM_REGION needs an initialized vCPU: create one first".into(),
        })?;
        drop(st);
        let src = AlignedPages::copy_of(data)?;
        let mut region = KvmTdxInitMemRegion {
            source_addr: src.ptr as u64,
            gpa,
            nr_pages: pages,
        };
        let flags = if measure {
            KVM_TDX_MEASURE_MEMORY_REGION
        } else {
            0
        };
        let fd = v.lock().unwrap_or_else(|e| e.into_inner());
        // KVM writes the remaining range back; EINTR/EAGAIN mean "call again" (bounded).
        for _ in 0..10_000 {
            let ptr = &mut region as *mut KvmTdxInitMemRegion as u64;
            match tdx_cmd(
                &*fd,
                "KVM_TDX_INIT_MEM_REGION",
                cmd::KVM_TDX_INIT_MEM_REGION,
                flags,
                ptr,
            ) {
                Ok(()) if region.nr_pages == 0 => return Ok(()),
                Ok(()) => continue,
                Err(BackendError::Kvm { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(BackendError::Module {
            op: "KVM_TDX_INIT_MEM_REGION",
            status: format!("still {} pages left after 10,000 retries", region.nr_pages),
        })
    }

    fn finalize(&self) -> Result<Option<Measurement>, BackendError> {
        let mut st = self.st();
        if st.finalized {
            return Err(BackendError::State {
                op: "finalize",
                why: "already finalized".into(),
            });
        }
        tdx_cmd(
            &self.vm,
            "KVM_TDX_FINALIZE_VM",
            cmd::KVM_TDX_FINALIZE_VM,
            0,
            0,
        )?;
        st.finalized = true;
        Ok(None)
    }

    fn convert(&self, range: GpaRange, to: PageState) -> Result<(), BackendError> {
        let mem = self.st().memory.clone().ok_or(BackendError::State {
            op: "convert",
            why: "no memory set".into(),
        })?;
        self.set_attributes(range.start().raw(), range.len(), to)?;
        if to == PageState::Shared {
            // Free the private pages (QEMU does the same): punch the range out of each
            // guest_memfd it overlaps.
            let st = self.st();
            for (base, size, fd) in &st.gmem {
                let start = range.start().raw().max(*base);
                let end = (range.start().raw() + range.len()).min(base + size);
                if start >= end {
                    continue;
                }
                // SAFETY: fallocate on a descriptor we own, within its size; no memory is
                // touched by the call.
                let r = unsafe {
                    libc::fallocate(
                        fd.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        (start - base) as libc::off_t,
                        (end - start) as libc::off_t,
                    )
                };
                if r != 0 {
                    return Err(BackendError::Kvm {
                        op: "fallocate(PUNCH_HOLE) on guest_memfd",
                        source: std::io::Error::last_os_error(),
                    });
                }
            }
        }
        mem.attributes()
            .convert(range, to)
            .map(|_| ())
            .map_err(|e| BackendError::Invalid {
                what: "conversion",
                why: e.to_string(),
            })
    }
}

/// Kicks a vCPU out of KVM_RUN: a flag checked before every entry plus the engine's kick
/// signal to the thread inside KVM_RUN (KVM_RUN then returns EINTR).
#[derive(Debug, Default)]
struct KvmKicker {
    flag: AtomicBool,
    thread: Mutex<Option<libc::pthread_t>>,
}

impl VcpuKicker for KvmKicker {
    fn kick(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tid) = *t {
            // SAFETY: `tid` is the live thread inside `run` (it clears the slot, under this
            // lock, before it returns); the signal has a no-op handler installed.
            unsafe { libc::pthread_kill(tid, crate::emulated::kvm::kick_signal()) };
        }
    }
}

/// The completion owed to KVM from the previous exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    /// `kvm_run.hypercall.ret` of a MAP_GPA_RANGE exit.
    MapGpa,
    /// `kvm_run.tdx.*.ret` of a KVM_EXIT_TDX exit.
    Tdx,
}

/// `kvm_run.hypercall.ret` offset.
const RUN_HYPERCALL_RET: usize = 88;

/// GHCI status value of a [`VmcallStatus`].
pub fn ghci_status(s: VmcallStatus) -> u64 {
    match s {
        VmcallStatus::Success => 0,
        VmcallStatus::Retry => 1,
        VmcallStatus::InvalidOperand => 0x8000_0000_0000_0000,
        VmcallStatus::GpaInUse => 0x8000_0000_0000_0001,
        VmcallStatus::AlignError => 0x8000_0000_0000_0002,
    }
}

/// A vCPU of a TD on KVM.
#[derive(Debug)]
pub struct KvmTdxVcpu {
    fd: VcpuFd,
    index: u32,
    kicker: Arc<KvmKicker>,
    pending: Pending,
    status: VmcallStatus,
    retry_gpa: u64,
}

fn run_bytes(fd: &mut VcpuFd) -> &mut [u8] {
    let run = fd.get_kvm_run();
    // SAFETY: `kvm_run` is a plain C struct in the vCPU's mmapped run page, exclusively
    // borrowed through `fd` for the slice's lifetime; viewing it as bytes is valid.
    unsafe {
        std::slice::from_raw_parts_mut(
            run as *mut kvm_bindings::kvm_run as *mut u8,
            std::mem::size_of::<kvm_bindings::kvm_run>(),
        )
    }
}

impl TdVcpu for KvmTdxVcpu {
    fn run(&mut self) -> Result<TdExit<'_>, BackendError> {
        let KvmTdxVcpu {
            fd,
            kicker,
            pending,
            status,
            retry_gpa,
            ..
        } = self;
        // Hand the previous exit's answer to KVM.
        match std::mem::replace(pending, Pending::None) {
            Pending::None => {}
            Pending::MapGpa => {
                // KVM turns a nonzero ret into INVALID_OPERAND for the guest.
                let ret: u64 = if *status == VmcallStatus::Success {
                    0
                } else {
                    1
                };
                let run = run_bytes(fd);
                run[RUN_HYPERCALL_RET..RUN_HYPERCALL_RET + 8].copy_from_slice(&ret.to_le_bytes());
            }
            Pending::Tdx => complete_tdx_exit(run_bytes(fd), ghci_status(*status), None),
        }
        let fd_ptr: *mut VcpuFd = fd;
        for _ in 0..1_000_000 {
            // SAFETY: `fd_ptr` comes from the exclusive borrow `fd` of `self`, which outlives
            // the returned exit. Each iteration's reborrow either is returned (ending the
            // loop) or is dead before the next iteration starts: the rejection is the NLL
            // "conditional return in a loop" limitation (accepted by Polonius), not aliasing.
            let fd = unsafe { &mut *fd_ptr };
            if kicker.flag.swap(false, Ordering::SeqCst) {
                return Ok(TdExit::Interrupted);
            }
            // SAFETY: pthread_self has no preconditions.
            *kicker.thread.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(unsafe { libc::pthread_self() });
            let r = fd.run();
            *kicker.thread.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let exit = match r {
                Ok(e) => e,
                Err(e) if e.errno() == libc::EINTR => {
                    kicker.flag.store(false, Ordering::SeqCst);
                    return Ok(TdExit::Interrupted);
                }
                Err(e) => return Err(kvm_err("KVM_RUN")(e)),
            };
            match exit {
                VcpuExit::IoIn(port, data) => return Ok(TdExit::IoIn { port, data }),
                VcpuExit::IoOut(port, data) => return Ok(TdExit::IoOut { port, data }),
                VcpuExit::MmioRead(gpa, data) => return Ok(TdExit::MmioRead { gpa, data }),
                VcpuExit::MmioWrite(gpa, data) => return Ok(TdExit::MmioWrite { gpa, data }),
                VcpuExit::Hlt => return Ok(TdExit::Hlt),
                VcpuExit::Intr => return Ok(TdExit::Interrupted),
                VcpuExit::Shutdown => return Ok(TdExit::Shutdown),
                VcpuExit::Hypercall(h) if h.nr == KVM_HC_MAP_GPA_RANGE => {
                    *pending = Pending::MapGpa;
                    *status = VmcallStatus::Success;
                    *retry_gpa = 0;
                    let to = if h.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED != 0 {
                        PageState::Private
                    } else {
                        PageState::Shared
                    };
                    return Ok(TdExit::MapGpa {
                        gpa: h.args[0],
                        size: h.args[1].saturating_mul(4096),
                        to,
                        status,
                        retry_gpa,
                    });
                }
                VcpuExit::Hypercall(h) => {
                    *h.ret = u64::MAX; // -KVM_ENOSYS-like: unknown hypercall
                }
                VcpuExit::MemoryFault { flags, gpa, size } => {
                    // QEMU's answer: an implicit conversion to the state of the access.
                    let to = if flags & KVM_MEMORY_EXIT_FLAG_PRIVATE != 0 {
                        PageState::Private
                    } else {
                        PageState::Shared
                    };
                    // Presented as a MapGPA request: the VMM answers with TdVm::convert,
                    // which changes the KVM attribute and the attribute map together (the
                    // answer's status is not seen by the guest).
                    tracing::debug!(gpa, size, ?to, "KVM_EXIT_MEMORY_FAULT: implicit conversion");
                    return Ok(TdExit::MapGpa {
                        gpa,
                        size: size.max(4096),
                        to,
                        status,
                        retry_gpa,
                    });
                }
                VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_TDX_FATAL, data) => {
                    let (error_code, message, data_gpa) = fatal_error_from_gprs(data);
                    return Ok(TdExit::ReportFatalError {
                        error_code,
                        message,
                        data_gpa,
                    });
                }
                VcpuExit::SystemEvent(..) => return Ok(TdExit::Shutdown),
                VcpuExit::Unsupported(KVM_EXIT_TDX) => {
                    // SAFETY: this exit variant holds no reference into the vCPU (only the
                    // exit number), so no other borrow of `*fd_ptr` is live here.
                    let run = run_bytes(unsafe { &mut *fd_ptr });
                    match decode_tdx_exit(run) {
                        Some(TdxRunExit::GetQuote { gpa, size }) => {
                            *pending = Pending::Tdx;
                            *status = VmcallStatus::Success;
                            return Ok(TdExit::GetQuote { gpa, size, status });
                        }
                        Some(TdxRunExit::SetupEventNotifyInterrupt { vector }) => {
                            *pending = Pending::Tdx;
                            *status = VmcallStatus::Success;
                            return Ok(TdExit::SetupEventNotifyInterrupt {
                                vector: vector as u8,
                                status,
                            });
                        }
                        Some(TdxRunExit::GetTdVmCallInfo { .. }) => {
                            // Leaf 1: this VMM serves GetQuote and SetupEventNotifyInterrupt.
                            complete_tdx_exit(run, 0, Some([(1 << 1), 0, 0, 0]));
                        }
                        Some(TdxRunExit::Unknown { nr }) => {
                            tracing::warn!(nr, "unknown KVM_EXIT_TDX leaf");
                            complete_tdx_exit(run, 0x8000_0000_0000_0003, None);
                        }
                        None => {}
                    }
                }
                other => {
                    return Err(BackendError::Dead(format!("unexpected KVM exit {other:?}")));
                }
            }
        }
        Err(BackendError::Dead(
            "1,000,000 exits handled inside the backend in a row".into(),
        ))
    }

    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        Arc::clone(&self.kicker) as Arc<dyn VcpuKicker>
    }

    fn index(&self) -> u32 {
        self.index
    }
}
