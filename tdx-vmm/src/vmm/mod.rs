//! The exit loop: runs a [`LaunchPlan`] on any [`TdxBackend`].
//!
//! [`launch`] gives the TD its guest RAM (a `GuestMemoryMmap` as the shared backing plus an
//! [`AttributeMap`], all private at start), creates the TD and its vCPUs, adds the initial
//! image region by region, finalizes, builds the devices and runs one host thread per vCPU
//! until the TD ends. Exits:
//!
//! | exit | answer |
//! |---|---|
//! | port write 0x3F8 | serial console output (stdout unless quiet; always captured) |
//! | port read 0x3F8+5 (LSR) | 0x60: transmitter empty, so polling guests proceed; other serial reads 0 |
//! | port write [`EXIT_PORT`] | the TD ends with that byte as its exit status |
//! | other port reads / writes | all-ones / ignored (traced) |
//! | MMIO in a virtio-mmio window | the device's register file (`tdx_devices::mmio`) |
//! | other MMIO | all-ones / ignored (traced) |
//! | CPUID | zeros (the module answers the leaves a TD may rely on) |
//! | RDMSR / WRMSR | `TDG.VP.VMCALL_INVALID_OPERAND` |
//! | MapGPA | page-aligned (`ALIGN_ERROR`), inside RAM (`INVALID_OPERAND`), then [`TdVm::convert`] |
//! | GetQuote | header and TDREPORT read from shared memory, the [`QuoteProvider`]'s quote written back |
//! | SetupEventNotifyInterrupt | recorded, success |
//! | ReportFatalError | every vCPU stopped; [`ExitStatus::Fatal`] with the guest's message |
//! | HLT | the vCPU stops (no interrupt sources exist); all halted → [`ExitStatus::Halted`] |
//! | shutdown / triple fault | [`ExitStatus::Shutdown`] |
//!
//! Devices are polled by the guest: the `TdVcpu` seam has no interrupt injection yet, so
//! virtio interrupts are not delivered (the guest reads the used ring / InterruptStatus).
//! Ctrl-C: [`LaunchOptions::stop`] (see [`install_ctrlc`]) kicks every vCPU; the TD is then
//! torn down when its handles drop.
pub mod quote;
pub mod report;

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tdx_abi::gpa::Gpa;
use tdx_abi::leaf::{GetQuoteHeader, GetQuoteStatus, GET_QUOTE_HEADER_SIZE};
use tdx_abi::measure::Measurement;
use tdx_devices::blk::{BlkConfig, BlkDevice, RawFile};
use tdx_devices::interrupt::NoInterrupt;
use tdx_devices::mmio::{MmioConfig, MmioTransport};
use tdx_host::backend::{BackendError, TdExit, TdVcpu, TdVm, TdxBackend, VcpuKicker, VmcallStatus};
use tdx_memory::attributes::AttributeMap;
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::SharedGuestMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

use crate::plan::{
    LaunchPlan, EXIT_PORT, SERIAL_PORT, VIRTIO_MMIO_BASE, VIRTIO_MMIO_MAX, VIRTIO_MMIO_STRIDE,
};
pub use quote::{EmulatedQuoteProvider, QuoteError, QuoteProvider, UnixSocketQuoteProvider};
pub use report::FinalReport;

/// How a launch runs.
pub struct LaunchOptions {
    /// Do not copy the serial console to stdout.
    pub quiet: bool,
    /// Set (e.g. by Ctrl-C) to stop the TD.
    pub stop: Arc<AtomicBool>,
    /// Answers GetQuote; without one GetQuote fails with GET_QUOTE_SERVICE_UNAVAILABLE.
    pub quote: Option<Arc<dyn QuoteProvider>>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            quiet: false,
            stop: Arc::new(AtomicBool::new(false)),
            quote: None,
        }
    }
}

/// How the TD ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest wrote its exit status to [`EXIT_PORT`].
    Exited(u8),
    /// `TDG.VP.VMCALL<ReportFatalError>`.
    Fatal {
        /// R12.
        code: u64,
        /// The guest's message.
        message: String,
    },
    /// Every vCPU halted.
    Halted,
    /// The guest shut down or triple-faulted.
    Shutdown,
    /// Stopped by the host ([`LaunchOptions::stop`]).
    Stopped,
}

impl ExitStatus {
    /// The VMM process's exit code: the guest's status for [`ExitStatus::Exited`], 3 for a
    /// fatal error, 4 for a shutdown/triple fault, 130 when stopped, 0 when halted.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Fatal { .. } => 3,
            ExitStatus::Shutdown => 4,
            ExitStatus::Stopped => 130,
            ExitStatus::Halted => 0,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exited with status {c}"),
            ExitStatus::Fatal { code, message } => {
                write!(
                    f,
                    "fatal error {code:#x} reported by the guest: {message:?}"
                )
            }
            ExitStatus::Halted => f.write_str("all vCPUs halted"),
            ExitStatus::Shutdown => f.write_str("shutdown (or triple fault)"),
            ExitStatus::Stopped => f.write_str("stopped by the host"),
        }
    }
}

/// What a launch produced.
#[derive(Debug, Clone)]
pub struct LaunchOutcome {
    /// How the TD ended.
    pub status: ExitStatus,
    /// MRTD as the backend reported it at finalize (`None` on KVM).
    pub mrtd: Option<Measurement>,
    /// Everything the guest wrote to the serial console.
    pub console: Vec<u8>,
    /// The last TDREPORT the guest handed out with GetQuote.
    pub report: Option<FinalReport>,
    /// The last quote produced.
    pub quote: Option<Vec<u8>>,
    /// When things happened (for benchmarks).
    pub timeline: Timeline,
}

/// Timestamps of a launch.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// [`launch`] was called.
    pub started: Instant,
    /// The first exit of any vCPU reached the exit loop (the guest had run).
    pub first_exit: Option<Instant>,
    /// The TD's end was decided (exit port, fatal error, shutdown, stop, all halted).
    pub ended: Option<Instant>,
}

/// A launch failed (as opposed to the TD ending badly, which is an [`ExitStatus`]).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The plan cannot be run.
    #[error("invalid launch plan: {0}")]
    Plan(String),
    /// Guest RAM could not be allocated.
    #[error("guest RAM of {size:#x} bytes: {why}")]
    Memory {
        /// Size.
        size: u64,
        /// Why.
        why: String,
    },
    /// A backend step failed.
    #[error("{step}")]
    Backend {
        /// The step ("create_vm", "vCPU 1", "initial pages at 0x100000", …).
        step: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A device could not be set up.
    #[error("device {index} ({what}): {why}")]
    Device {
        /// Device index.
        index: usize,
        /// Disk path or socket.
        what: String,
        /// Why.
        why: String,
    },
}

/// Installs a SIGINT/SIGTERM handler that sets `stop` (for the CLI).
pub fn install_ctrlc(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(stop))?;
    Ok(())
}

/// Measured bytes above which `launch` shows a progress bar (on a terminal).
const PROGRESS_THRESHOLD: u64 = 64 << 20;
/// Initial pages are added in chunks of this many bytes.
const PROGRESS_CHUNK: usize = 2 << 20;

type BlkTransport = MmioTransport<BlkDevice<RawFile>, SharedGuestMemory, NoInterrupt>;

/// A virtio-mmio device of the TD.
enum Device {
    /// In-process virtio-blk over a raw file.
    Blk(Box<BlkTransport>),
    /// vhost-user-blk: an external backend (e.g. qemu-storage-daemon).
    VhostUser(Box<tdx_devices::vhost_user_mmio::VhostUserBlkMmio>),
}

impl Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self {
            Device::Blk(t) => t.read(offset, data),
            Device::VhostUser(d) => d.read(offset, data),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match self {
            Device::Blk(t) => t.write(offset, data),
            Device::VhostUser(d) => d.write(offset, data),
        }
    }
}

/// Guest RAM backed by memfds (vhost-user backends map it from the memory table).
fn memfd_ram(ranges: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, String> {
    use std::os::fd::FromRawFd;
    let mut with_files = Vec::new();
    for &(gpa, len) in ranges {
        // SAFETY: the name is a NUL-terminated literal; memfd_create returns a new descriptor
        // (or -1), which File takes ownership of just below.
        let fd = unsafe { libc::memfd_create(c"tdx-vmm-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(len as u64)
            .map_err(|e| format!("memfd size {len:#x}: {e}"))?;
        with_files.push((gpa, len, Some(vm_memory::FileOffset::new(file, 0))));
    }
    GuestMemoryMmap::<()>::from_ranges_with_files(&with_files).map_err(|e| e.to_string())
}

/// State the vCPU threads share.
struct Run<'a, V> {
    vm: &'a V,
    mem: SharedGuestMemory,
    plan: &'a LaunchPlan,
    opts: &'a LaunchOptions,
    console: Mutex<Vec<u8>>,
    devices: Vec<Mutex<Device>>,
    status: Mutex<Option<ExitStatus>>,
    error: Mutex<Option<VmmError>>,
    report: Mutex<Option<FinalReport>>,
    quote: Mutex<Option<Vec<u8>>>,
    kickers: Vec<Arc<dyn VcpuKicker>>,
    done: AtomicBool,
    running: AtomicUsize,
    first_exit: Mutex<Option<Instant>>,
    ended: Mutex<Option<Instant>>,
}

impl<V: TdVm> Run<'_, V> {
    /// Ends the TD with `status` (the first status wins) and kicks every vCPU.
    fn finish(&self, status: ExitStatus) {
        let now = Instant::now();
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(now);
        {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if s.is_none() {
                *s = Some(status);
            }
        }
        self.done.store(true, Ordering::SeqCst);
        for k in &self.kickers {
            k.kick();
        }
    }

    fn fail(&self, e: VmmError) {
        {
            let mut s = self.error.lock().unwrap_or_else(|e| e.into_inner());
            if s.is_none() {
                *s = Some(e);
            }
        }
        self.finish(ExitStatus::Stopped);
    }

    fn device(&self, gpa: u64) -> Option<(&Mutex<Device>, u64)> {
        let off = gpa.checked_sub(VIRTIO_MMIO_BASE)?;
        let index = off / VIRTIO_MMIO_STRIDE;
        if index >= VIRTIO_MMIO_MAX {
            return None;
        }
        Some((self.devices.get(index as usize)?, off % VIRTIO_MMIO_STRIDE))
    }

    fn serial_out(&self, byte: u8) {
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(byte);
        if !self.opts.quiet {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&[byte]);
            if byte == b'\n' {
                let _ = out.flush();
            }
        }
    }

    fn map_gpa(&self, gpa: u64, size: u64, to: tdx_memory::PageState) -> VmcallStatus {
        if gpa % 4096 != 0 || size % 4096 != 0 || size == 0 {
            return VmcallStatus::AlignError;
        }
        let inside = gpa
            .checked_add(size)
            .is_some_and(|end| end <= self.plan.memory_size);
        if !inside {
            tracing::warn!(gpa, size, "MapGPA outside guest RAM refused");
            return VmcallStatus::InvalidOperand;
        }
        let Ok(range) = GpaRange::new(Gpa(gpa), size) else {
            return VmcallStatus::InvalidOperand;
        };
        match self.vm.convert(range, to) {
            Ok(()) => VmcallStatus::Success,
            Err(e) => {
                tracing::warn!(gpa, size, ?to, error = %e, "MapGPA conversion failed");
                VmcallStatus::InvalidOperand
            }
        }
    }

    /// GetQuote: header + TDREPORT in, header + quote out, all through the shared view.
    fn get_quote(&self, gpa: u64, size: u64) -> VmcallStatus {
        let hdr_len = GET_QUOTE_HEADER_SIZE as u64;
        if size < hdr_len + quote::TDREPORT_SIZE as u64 || size > 1 << 20 {
            tracing::warn!(gpa, size, "GetQuote buffer size refused");
            return VmcallStatus::InvalidOperand;
        }
        let view = self.mem.view();
        let mut hb = [0u8; GET_QUOTE_HEADER_SIZE];
        if view.read_slice(&mut hb, GuestAddress(gpa)).is_err() {
            return VmcallStatus::InvalidOperand;
        }
        let Ok(mut header) = GetQuoteHeader::read_from_bytes(&hb) else {
            return VmcallStatus::InvalidOperand;
        };
        if header.version != 1 || header.in_len as usize != quote::TDREPORT_SIZE {
            tracing::warn!(
                version = header.version,
                in_len = header.in_len,
                "GetQuote header refused"
            );
            return VmcallStatus::InvalidOperand;
        }
        let mut report = [0u8; quote::TDREPORT_SIZE];
        if view
            .read_slice(&mut report, GuestAddress(gpa + hdr_len))
            .is_err()
        {
            return VmcallStatus::InvalidOperand;
        }
        if let Some(r) = FinalReport::from_tdreport(&report) {
            *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
        let result = match &self.opts.quote {
            None => Err(GetQuoteStatus::SERVICE_UNAVAILABLE),
            Some(p) => p.quote(&report).map_err(|e| {
                tracing::warn!(error = %e, "quote provider failed");
                GetQuoteStatus::ERROR
            }),
        };
        let mut body: &[u8] = &[];
        match &result {
            Ok(q) if q.len() as u64 <= size - hdr_len => {
                header.status = GetQuoteStatus::SUCCESS.raw();
                header.out_len = q.len() as u32;
                body = q;
            }
            Ok(q) => {
                tracing::warn!(quote = q.len(), size, "GetQuote buffer too small");
                header.status = GetQuoteStatus::ERROR.raw();
                header.out_len = 0;
            }
            Err(s) => {
                header.status = s.raw();
                header.out_len = 0;
            }
        }
        if view.write_slice(body, GuestAddress(gpa + hdr_len)).is_err()
            || view
                .write_slice(header.as_bytes(), GuestAddress(gpa))
                .is_err()
        {
            return VmcallStatus::InvalidOperand;
        }
        drop(view);
        if let Ok(q) = result {
            *self.quote.lock().unwrap_or_else(|e| e.into_inner()) = Some(q);
        }
        VmcallStatus::Success
    }
}

fn vcpu_loop<V: TdVm>(run: &Run<'_, V>, mut vcpu: V::Vcpu) {
    let index = vcpu.index();
    loop {
        if run.done.load(Ordering::SeqCst) {
            break;
        }
        let exit = match vcpu.run() {
            Ok(e) => {
                run.first_exit
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(Instant::now);
                e
            }
            Err(source) => {
                run.fail(VmmError::Backend {
                    step: format!("vCPU {index} run"),
                    source,
                });
                break;
            }
        };
        match exit {
            TdExit::IoOut { port, data } => match port {
                SERIAL_PORT => {
                    for &b in data.iter() {
                        run.serial_out(b);
                    }
                }
                EXIT_PORT => {
                    let code = data.first().copied().unwrap_or(0);
                    run.finish(ExitStatus::Exited(code));
                }
                _ => tracing::trace!(port, ?data, "port write ignored"),
            },
            TdExit::IoIn { port, data } => {
                let v = match port {
                    p if p == SERIAL_PORT + 5 => 0x60,
                    p if (SERIAL_PORT..SERIAL_PORT + 8).contains(&p) => 0,
                    _ => {
                        tracing::trace!(port, "port read of nothing");
                        0xFF
                    }
                };
                data.fill(v);
            }
            TdExit::MmioRead { gpa, data } => match run.device(gpa) {
                Some((d, off)) => d.lock().unwrap_or_else(|e| e.into_inner()).read(off, data),
                None => {
                    tracing::trace!(gpa, "MMIO read of nothing");
                    data.fill(0xFF);
                }
            },
            TdExit::MmioWrite { gpa, data } => match run.device(gpa) {
                Some((d, off)) => d.lock().unwrap_or_else(|e| e.into_inner()).write(off, data),
                None => tracing::trace!(gpa, "MMIO write to nothing ignored"),
            },
            TdExit::Cpuid { regs, .. } => *regs = [0; 4],
            TdExit::RdMsr { status, .. } | TdExit::WrMsr { status, .. } => {
                *status = VmcallStatus::InvalidOperand
            }
            TdExit::MapGpa {
                gpa,
                size,
                to,
                status,
                ..
            } => *status = run.map_gpa(gpa, size, to),
            TdExit::GetQuote { gpa, size, status } => *status = run.get_quote(gpa, size),
            TdExit::SetupEventNotifyInterrupt { vector, status } => {
                tracing::info!(vector, "guest set up its event-notify interrupt");
                *status = VmcallStatus::Success;
            }
            TdExit::ReportFatalError {
                error_code,
                message,
                ..
            } => {
                run.finish(ExitStatus::Fatal {
                    code: error_code,
                    message,
                });
                break;
            }
            TdExit::Hlt => {
                tracing::debug!(index, "vCPU halted");
                break;
            }
            TdExit::Shutdown => {
                run.finish(ExitStatus::Shutdown);
                break;
            }
            TdExit::Interrupted => {}
            other => tracing::warn!(index, exit = ?other, "exit not handled by this VMM"),
        }
    }
    if run.running.fetch_sub(1, Ordering::SeqCst) == 1 {
        run.finish(ExitStatus::Halted);
    }
}

fn backend_err(step: impl Into<String>) -> impl FnOnce(BackendError) -> VmmError {
    let step = step.into();
    move |source| VmmError::Backend { step, source }
}

/// Runs `plan` on `backend` until the TD ends (see the module docs).
pub fn launch<B: TdxBackend>(
    backend: &B,
    plan: &LaunchPlan,
    opts: &LaunchOptions,
) -> Result<LaunchOutcome, VmmError> {
    let started = Instant::now();
    if plan.vcpus == 0 || plan.vcpus > u32::from(plan.vm.max_vcpus) {
        return Err(VmmError::Plan(format!(
            "{} vCPUs with max_vcpus {}",
            plan.vcpus, plan.vm.max_vcpus
        )));
    }
    if plan.memory_size == 0 || plan.memory_size % 4096 != 0 || plan.memory_size > VIRTIO_MMIO_BASE
    {
        return Err(VmmError::Plan(format!(
            "memory size {:#x} (a non-zero multiple of 4 KiB up to {VIRTIO_MMIO_BASE:#x})",
            plan.memory_size
        )));
    }
    let ndev = plan.devices.blk.len() + plan.devices.vhost_user_blk.len();
    if ndev as u64 > VIRTIO_MMIO_MAX {
        return Err(VmmError::Plan(format!(
            "{ndev} devices (at most {VIRTIO_MMIO_MAX})"
        )));
    }
    // Guest RAM, plus the firmware volumes a TDVF places above it (their shared backing).
    let mut ranges = vec![(GuestAddress(0), plan.memory_size as usize)];
    ranges.extend(
        crate::image::regions_outside_ram(plan)
            .into_iter()
            .map(|(gpa, len)| (GuestAddress(gpa), len as usize)),
    );
    let ram = if plan.devices.vhost_user_blk.is_empty() {
        GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(|e| e.to_string())
    } else {
        memfd_ram(&ranges)
    }
    .map_err(|why| VmmError::Memory {
        size: plan.memory_size,
        why,
    })?;
    let attrs = Arc::new(AttributeMap::new(plan.vm.gpaw));
    let mem = SharedGuestMemory::new(attrs, ram).map_err(|e| VmmError::Memory {
        size: plan.memory_size,
        why: e.to_string(),
    })?;

    let vm = backend
        .create_vm(&plan.vm)
        .map_err(backend_err("create_vm"))?;
    vm.set_memory(&mem).map_err(backend_err("set_memory"))?;
    let mut vcpus = Vec::new();
    for i in 0..plan.vcpus {
        vcpus.push(
            vm.create_vcpu(i, plan.vcpu_rcx)
                .map_err(backend_err(format!("vCPU {i}")))?,
        );
    }
    // A progress bar on a terminal when much measured memory is added (chunks of 2 MiB keep
    // the per-page order, hence MRTD, unchanged).
    let measured: u64 = plan
        .initial
        .iter()
        .filter(|r| r.measure)
        .map(|r| r.data.len() as u64)
        .sum();
    let bar = (measured > PROGRESS_THRESHOLD && std::io::stderr().is_terminal()).then(|| {
        let total: u64 = plan.initial.iter().map(|r| r.data.len() as u64).sum();
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "adding initial pages {bar:40} {binary_bytes}/{binary_total_bytes}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    for r in &plan.initial {
        let step = |off: usize| {
            backend_err(format!(
                "initial pages {} at {:#x}+{:#x}",
                r.name,
                r.gpa + off as u64,
                r.data.len()
            ))
        };
        for (i, chunk) in r.data.chunks(PROGRESS_CHUNK).enumerate() {
            let off = i * PROGRESS_CHUNK;
            vm.add_initial_pages(r.gpa + off as u64, chunk, r.measure)
                .map_err(step(off))?;
            if let Some(b) = &bar {
                b.inc(chunk.len() as u64);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mrtd = vm.finalize().map_err(backend_err("finalize"))?;
    if let Some(m) = &mrtd {
        tracing::info!(%m, "TD finalized");
    }

    let mut devices = Vec::new();
    for (index, disk) in plan.devices.blk.iter().enumerate() {
        let dev_err = |why: String| VmmError::Device {
            index,
            what: disk.path.display().to_string(),
            why,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!disk.read_only)
            .open(&disk.path)
            .map_err(|e| dev_err(e.to_string()))?;
        let backend = RawFile::new(file).map_err(|e| dev_err(e.to_string()))?;
        let cfg = BlkConfig {
            read_only: disk.read_only,
            ..BlkConfig::default()
        };
        devices.push(Mutex::new(Device::Blk(Box::new(MmioTransport::new(
            BlkDevice::new(backend, cfg),
            mem.clone(),
            NoInterrupt,
            MmioConfig::default(),
        )))));
    }
    for (i, sock) in plan.devices.vhost_user_blk.iter().enumerate() {
        if !sock.exists() {
            return Err(VmmError::Device {
                index: plan.devices.blk.len() + i,
                what: sock.display().to_string(),
                why: "no vhost-user socket at this path".into(),
            });
        }
        devices.push(Mutex::new(Device::VhostUser(Box::new(
            tdx_devices::vhost_user_mmio::VhostUserBlkMmio::new(sock.clone(), mem.clone()),
        ))));
    }

    let kickers = vcpus.iter().map(|v| v.kicker()).collect();
    let run = Run {
        vm: &vm,
        mem: mem.clone(),
        plan,
        opts,
        console: Mutex::new(Vec::new()),
        devices,
        status: Mutex::new(None),
        error: Mutex::new(None),
        report: Mutex::new(None),
        quote: Mutex::new(None),
        kickers,
        done: AtomicBool::new(false),
        running: AtomicUsize::new(vcpus.len()),
        first_exit: Mutex::new(None),
        ended: Mutex::new(None),
    };
    std::thread::scope(|s| {
        let run = &run;
        for vcpu in vcpus {
            s.spawn(move || vcpu_loop(run, vcpu));
        }
        // Watcher: Ctrl-C (or the embedding program) stops the TD.
        s.spawn(move || {
            while !run.done.load(Ordering::SeqCst) {
                if run.opts.stop.load(Ordering::SeqCst) {
                    run.finish(ExitStatus::Stopped);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    });
    if let Some(e) = run.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let status = run
        .status
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(ExitStatus::Halted);
    if !opts.quiet {
        let _ = std::io::stdout().flush();
    }
    Ok(LaunchOutcome {
        status,
        mrtd,
        console: run.console.into_inner().unwrap_or_else(|e| e.into_inner()),
        report: run.report.into_inner().unwrap_or_else(|e| e.into_inner()),
        quote: run.quote.into_inner().unwrap_or_else(|e| e.into_inner()),
        timeline: Timeline {
            started,
            first_exit: run
                .first_exit
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
            ended: run.ended.into_inner().unwrap_or_else(|e| e.into_inner()),
        },
    })
}
