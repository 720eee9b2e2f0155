//! The emulated backend behind `TdxBackend`/`TdVm`/`TdVcpu`: a scripted guest
//! (`ScriptedVcpu`) issues TDCALLs, the backend runs TDH.VP.ENTER and turns the exits into
//! `TdExit`s, the test answers as a VMM would and checks the GHCI registers the guest got back.
//! Exits the scripted engine cannot produce (triple fault, a vCPU blocked in the guest until
//! kicked) come from a small queue engine installed with `EngineChoice::custom`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tdx_abi::call::Regs;
use tdx_abi::gpa::{EptLevel, Gpa, GpaAndLevel, Gpaw};
use tdx_abi::leaf::{TdVmCallStatus, TdVmCallSubFunction, TdcallLeaf};
use tdx_abi::measure::MrtdBuilder;
use tdx_abi::phys::Hpa;
use tdx_abi::sept::SeptPublicState;
use tdx_abi::status::TdxStatus;
use tdx_abi::tdh::tdh_mem_sept_rd;
use tdx_abi::tdvmcall::{Direction, TdVmCallRequest, FATAL_ERROR_MESSAGE_MAX};
use tdx_host::backend::emulated::{
    EmulatedBackend, EmulatedBackendConfig, EmulatedVcpu, EmulatedVm, EngineChoice,
};
use tdx_host::backend::{
    BackendError, CpuidEntry, TdExit, TdVcpu, TdVm, TdVmConfig, TdxBackend, VmcallStatus,
};
use tdx_host::emulated::guest::TDCALL_EXITED;
use tdx_host::emulated::{
    EngineExit, EngineVcpu, ExecutionEngine, GuestAccessFault, KotState, PamtPageType,
    PlatformConfig, ScriptedVcpu,
};
use tdx_memory::attributes::{AttributeMap, PageState};
use tdx_memory::layout::GpaRange;
use tdx_memory::shared::SharedGuestMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 8 MiB at GPA 0.
const RAM: u64 = 8 << 20;
/// The initial image page.
const IMAGE: u64 = 0x10_0000;
/// A page the guest accepts lazily.
const LAZY: u64 = 0x20_0000;
const SHARED_BIT: u64 = 1 << 47;

struct Td {
    backend: EmulatedBackend,
    vm: EmulatedVm,
    vcpu: EmulatedVcpu,
    mem: SharedGuestMemory,
}

fn memory(gpaw: Gpaw) -> SharedGuestMemory {
    let mmap =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("guest RAM");
    SharedGuestMemory::new(Arc::new(AttributeMap::new(gpaw)), mmap).expect("shared memory")
}

fn backend(engine: EngineChoice) -> EmulatedBackend {
    EmulatedBackend::new(EmulatedBackendConfig {
        platform: PlatformConfig {
            memory_size: 64 << 20,
            report_mac_key: [3; 32],
            ..PlatformConfig::default()
        },
        engine,
        ..EmulatedBackendConfig::default()
    })
    .expect("emulated backend")
}

/// A finalized TD with one vCPU and one measured page at `IMAGE`.
fn td_with(engine: EngineChoice, config: TdVmConfig) -> Td {
    let backend = backend(engine);
    let vm = backend.create_vm(&config).expect("create_vm");
    let mem = memory(config.gpaw);
    vm.set_memory(&mem).expect("set_memory");
    let vcpu = vm.create_vcpu(0, 0x1234).expect("create_vcpu");
    vm.add_initial_pages(IMAGE, &[0x90; 4096], true)
        .expect("initial page");
    vm.finalize().expect("finalize");
    Td {
        backend,
        vm,
        vcpu,
        mem,
    }
}

fn td() -> Td {
    td_with(EngineChoice::Scripted, TdVmConfig::default())
}

impl Td {
    fn guest(&self) -> ScriptedVcpu {
        self.backend.module().scripted_vcpu(self.vcpu.tdvpr())
    }
}

/// The guest issues `regs` as TDG.VP.VMCALL (queued for the next VP.ENTER).
fn vmcall(g: &ScriptedVcpu, mut regs: Regs) {
    let s = g.tdcall(&mut regs);
    assert_eq!(
        s.raw(),
        TdxStatus::SUCCESS.raw(),
        "TDG.VP.VMCALL refused: {s}"
    );
}

/// Runs until the scripted guest idles (the answer of the last exit is delivered then).
fn run_idle(v: &mut EmulatedVcpu) {
    match v.run().expect("run") {
        TdExit::Interrupted => {}
        other => panic!("expected the scripted guest to idle, got {other:?}"),
    }
}

/// The GHCI registers the guest got for its last TDG.VP.VMCALL.
fn response(g: &ScriptedVcpu) -> Regs {
    g.take_vmcall_response().expect("a TDVMCALL response")
}

/// Guest sends `req`, the VMM answers the exit with `answer`, the guest gets the response.
fn round_trip(t: &mut Td, req: TdVmCallRequest, answer: impl FnOnce(TdExit<'_>)) -> Regs {
    let g = t.guest();
    vmcall(&g, req.encode());
    answer(t.vcpu.run().expect("run"));
    run_idle(&mut t.vcpu);
    response(&g)
}

/// A test engine: returns queued exits; with none queued it blocks until kicked and then
/// returns an external interrupt. Counts runs and kicks.
#[derive(Debug, Default)]
struct QueueEngine {
    exits: Mutex<VecDeque<EngineExit>>,
    kicked: Mutex<bool>,
    cv: Condvar,
    runs: AtomicU32,
    kicks: AtomicU32,
}

impl QueueEngine {
    fn push(&self, e: EngineExit) {
        self.exits.lock().unwrap().push_back(e);
    }
}

fn async_exit(reason: u32, gpa: u64) -> EngineExit {
    EngineExit::Async {
        exit_reason: reason,
        exit_qualification: 0,
        ext_exit_qualification: 0,
        gpa,
        intr_info: 0,
    }
}

impl ExecutionEngine for QueueEngine {
    fn run(&self, _vcpu: &mut EngineVcpu<'_>) -> EngineExit {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.exits.lock().unwrap().pop_front() {
            return e;
        }
        let mut k = self.kicked.lock().unwrap();
        while !*k {
            let (g, to) = self.cv.wait_timeout(k, Duration::from_secs(20)).unwrap();
            k = g;
            assert!(!to.timed_out(), "the vCPU was never kicked");
        }
        *k = false;
        async_exit(1, 0)
    }

    fn kick(&self, _tdvpr: Hpa) {
        self.kicks.fetch_add(1, Ordering::SeqCst);
        *self.kicked.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

fn queue_td() -> (Td, Arc<QueueEngine>) {
    let engine = Arc::new(QueueEngine::default());
    let e = Arc::clone(&engine);
    let t = td_with(
        EngineChoice::custom(move |_| Ok(e as Arc<dyn ExecutionEngine>)),
        TdVmConfig::default(),
    );
    (t, engine)
}

const SUCCESS: u64 = 0;

#[test]
fn port_io_and_mmio_exits_carry_data_both_ways() {
    let mut t = td();
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Io {
            size: 2,
            direction: Direction::Read,
            port: 0x3F8,
            data: 0,
        },
        |exit| match exit {
            TdExit::IoIn { port, data } => {
                assert_eq!((port, data.len()), (0x3F8, 2));
                data.copy_from_slice(&[0x34, 0x12]);
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!((r.r10, r.r11), (SUCCESS, 0x1234), "IN data in R11");
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Io {
            size: 4,
            direction: Direction::Write,
            port: 0xCF8,
            data: 0x8000_1234,
        },
        |exit| match exit {
            TdExit::IoOut { port, data } => {
                assert_eq!(port, 0xCF8);
                assert_eq!(data, &0x8000_1234u32.to_le_bytes());
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!(r.r10, SUCCESS);
    let mmio = 0xFEC0_0000u64;
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Mmio {
            size: 8,
            direction: Direction::Read,
            gpa: Gpa(mmio | SHARED_BIT),
            data: 0,
        },
        |exit| match exit {
            TdExit::MmioRead { gpa, data } => {
                assert_eq!(gpa, mmio, "the shared bit is stripped");
                data.copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!((r.r10, r.r11), (SUCCESS, 0x1122_3344_5566_7788));
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Mmio {
            size: 4,
            direction: Direction::Write,
            gpa: Gpa((mmio + 4) | SHARED_BIT),
            data: 0xDEAD_BEEF,
        },
        |exit| match exit {
            TdExit::MmioWrite { gpa, data } => {
                assert_eq!(gpa, mmio + 4);
                assert_eq!(data, &0xDEAD_BEEFu32.to_le_bytes());
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!(r.r10, SUCCESS);
}

#[test]
fn cpuid_msr_quote_notify_and_hlt_exits() {
    let mut t = td();
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Cpuid {
            leaf: 0x4000_0000,
            subleaf: 3,
        },
        |exit| match exit {
            TdExit::Cpuid {
                leaf,
                subleaf,
                regs,
            } => {
                assert_eq!((leaf, subleaf), (0x4000_0000, 3));
                *regs = [1, 2, 3, 4];
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!((r.r10, r.r12, r.r13, r.r14, r.r15), (SUCCESS, 1, 2, 3, 4));
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Rdmsr { index: 0x1B },
        |exit| match exit {
            TdExit::RdMsr { index, value, .. } => {
                assert_eq!(index, 0x1B);
                *value = 0xFEE0_0900;
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!((r.r10, r.r11), (SUCCESS, 0xFEE0_0900));
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Rdmsr { index: 0xC000_0080 },
        |exit| match exit {
            TdExit::RdMsr { value, status, .. } => {
                *value = 77;
                *status = VmcallStatus::InvalidOperand;
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!(
        (r.r10, r.r11),
        (TdVmCallStatus::INVALID_OPERAND.raw(), 0),
        "a refused RDMSR returns no value"
    );
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Wrmsr {
            index: 0x10,
            value: 0xABCD,
        },
        |exit| match exit {
            TdExit::WrMsr {
                index,
                value,
                status,
            } => {
                assert_eq!((index, value), (0x10, 0xABCD));
                *status = VmcallStatus::GpaInUse;
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!(r.r10, TdVmCallStatus::GPA_INUSE.raw());
    let r = round_trip(
        &mut t,
        TdVmCallRequest::GetQuote {
            gpa: Gpa(0x30_0000 | SHARED_BIT),
            size: 0x2000,
        },
        |exit| match exit {
            TdExit::GetQuote { gpa, size, .. } => assert_eq!((gpa, size), (0x30_0000, 0x2000)),
            other => panic!("{other:?}"),
        },
    );
    assert_eq!(r.r10, SUCCESS);
    let r = round_trip(
        &mut t,
        TdVmCallRequest::SetupEventNotifyInterrupt { vector: 0xEC },
        |exit| match exit {
            TdExit::SetupEventNotifyInterrupt { vector, status } => {
                assert_eq!(vector, 0xEC);
                *status = VmcallStatus::Retry;
            }
            other => panic!("{other:?}"),
        },
    );
    assert_eq!(r.r10, TdVmCallStatus::RETRY.raw());
    let r = round_trip(
        &mut t,
        TdVmCallRequest::Hlt {
            interrupts_blocked: false,
        },
        |exit| assert!(matches!(exit, TdExit::Hlt), "{exit:?}"),
    );
    assert_eq!(r.r10, SUCCESS);
    // Registers the answer does not define come back as the guest sent them.
    assert_eq!(r.r11, TdVmCallSubFunction::INSTRUCTION_HLT.raw());
}

#[test]
fn report_fatal_error_carries_the_message_and_kills_the_td() {
    let mut t = td();
    let mut message = [0u8; FATAL_ERROR_MESSAGE_MAX];
    let text = b"payload panicked at main.rs:42";
    message[..text.len()].copy_from_slice(text);
    let g = t.guest();
    vmcall(
        &g,
        TdVmCallRequest::ReportFatalError {
            code: (1 << 63) | 0x5,
            gpa: Gpa(0x7000),
            message,
        }
        .encode(),
    );
    match t.vcpu.run().expect("run") {
        TdExit::ReportFatalError {
            error_code,
            message,
            data_gpa,
        } => {
            assert_eq!(error_code, (1 << 63) | 5);
            assert_eq!(message, "payload panicked at main.rs:42");
            assert_eq!(data_gpa, Some(0x7000));
        }
        other => panic!("{other:?}"),
    }
    let e = t.vcpu.run().unwrap_err();
    assert!(
        matches!(e, BackendError::Dead(ref m) if m.contains("main.rs:42")),
        "{e}"
    );
    assert!(t.vm.dead().is_some());
}

/// A malformed or backend-answered TDVMCALL never reaches the VMM: the run goes straight on
/// (the scripted guest then idles) and the guest sees the status in R10.
fn answered_by_backend(t: &mut Td, regs: Regs) -> Regs {
    let g = t.guest();
    vmcall(&g, regs);
    run_idle(&mut t.vcpu);
    response(&g)
}

#[test]
fn malformed_tdvmcalls_are_answered_without_the_vmm() {
    let mut t = td();
    let io = |size: u64, dir: u64, port: u64| {
        let mut r = TdVmCallRequest::Io {
            size: 1,
            direction: Direction::Read,
            port: 0,
            data: 0,
        }
        .encode();
        (r.r12, r.r13, r.r14) = (size, dir, port);
        r
    };
    let invalid = TdVmCallStatus::INVALID_OPERAND.raw();
    for (what, regs, want) in [
        ("IO size 3", io(3, 0, 0x80), invalid),
        ("IO direction 2", io(1, 2, 0x80), invalid),
        ("IO port 0x10000", io(1, 1, 0x1_0000), invalid),
        (
            "MMIO to a private GPA",
            TdVmCallRequest::Mmio {
                size: 4,
                direction: Direction::Read,
                gpa: Gpa(0xFEC0_0000),
                data: 0,
            }
            .encode(),
            invalid,
        ),
        (
            "MMIO above GPAW",
            TdVmCallRequest::Mmio {
                size: 4,
                direction: Direction::Read,
                gpa: Gpa(1 << 50),
                data: 0,
            }
            .encode(),
            invalid,
        ),
        (
            "RDMSR index above 32 bits",
            {
                let mut r = TdVmCallRequest::Rdmsr { index: 0 }.encode();
                r.r12 = 1 << 40;
                r
            },
            invalid,
        ),
        (
            "MapGPA misaligned",
            {
                let mut r = TdVmCallRequest::MapGpa {
                    start: Gpa(0),
                    size: 4096,
                }
                .encode();
                r.r12 = 0x1234;
                r
            },
            TdVmCallStatus::ALIGN_ERROR.raw(),
        ),
        (
            "MapGPA crossing the shared bit",
            TdVmCallRequest::MapGpa {
                start: Gpa(SHARED_BIT - 4096),
                size: 8192,
            }
            .encode(),
            invalid,
        ),
        (
            "SetupEventNotifyInterrupt vector 5",
            {
                let mut r = TdVmCallRequest::SetupEventNotifyInterrupt { vector: 32 }.encode();
                r.r12 = 5;
                r
            },
            invalid,
        ),
        (
            "GetQuote on a private GPA",
            {
                let mut r = TdVmCallRequest::GetQuote {
                    gpa: Gpa(SHARED_BIT),
                    size: 4096,
                }
                .encode();
                r.r12 = 0x30_0000;
                r
            },
            invalid,
        ),
        (
            "GetQuote misaligned",
            TdVmCallRequest::GetQuote {
                gpa: Gpa(SHARED_BIT | 0x30_0010),
                size: 4096,
            }
            .encode(),
            invalid,
        ),
        (
            "unknown sub-function",
            TdVmCallRequest::Other {
                sub_function: TdVmCallSubFunction::from_raw(0x9_9999),
                args: [0; 4],
            }
            .encode(),
            TdVmCallStatus::SUBFUNC_UNSUPPORTED.raw(),
        ),
        (
            "vendor call",
            TdVmCallRequest::Vendor {
                r10: 1,
                args: [0; 5],
            }
            .encode(),
            TdVmCallStatus::SUBFUNC_UNSUPPORTED.raw(),
        ),
        (
            "GetTdVmCallInfo leaf 7",
            TdVmCallRequest::GetTdVmCallInfo { leaf: 7 }.encode(),
            invalid,
        ),
    ] {
        let r = answered_by_backend(&mut t, regs);
        assert_eq!(r.r10, want, "{what}");
    }
    // A malformed call followed by a good one: the VMM sees only the good one.
    let g = t.guest();
    vmcall(&g, io(3, 0, 0x80));
    vmcall(
        &g,
        TdVmCallRequest::Io {
            size: 1,
            direction: Direction::Write,
            port: 0x80,
            data: 0x5A,
        }
        .encode(),
    );
    match t.vcpu.run().expect("run") {
        TdExit::IoOut { port, data } => assert_eq!((port, data), (0x80, &[0x5A][..])),
        other => panic!("{other:?}"),
    }
    assert_eq!(response(&g).r10, invalid, "the bad call got its answer");
    run_idle(&mut t.vcpu);
    assert_eq!(response(&g).r10, SUCCESS);
}

#[test]
fn get_td_vm_call_info_and_wbinvd_are_answered_by_the_backend() {
    let mut t = td();
    let r = answered_by_backend(
        &mut t,
        TdVmCallRequest::GetTdVmCallInfo { leaf: 0 }.encode(),
    );
    assert_eq!((r.r10, r.r11, r.r12, r.r13, r.r14), (SUCCESS, 0, 0, 0, 0));
    let r = answered_by_backend(
        &mut t,
        TdVmCallRequest::GetTdVmCallInfo { leaf: 1 }.encode(),
    );
    assert_eq!(
        (r.r10, r.r11),
        (SUCCESS, 0b11),
        "GetQuote and SetupEventNotifyInterrupt"
    );
    let r = answered_by_backend(
        &mut t,
        TdVmCallRequest::Wbinvd { invalidate: true }.encode(),
    );
    assert_eq!(r.r10, SUCCESS);
}

fn accept(g: &ScriptedVcpu, gpa: u64) -> TdxStatus {
    let mut r = Regs {
        rax: u64::from(TdcallLeaf::TDG_MEM_PAGE_ACCEPT.raw()),
        rcx: gpa,
        ..Regs::default()
    };
    g.tdcall(&mut r)
}

fn sept_state(t: &Td, gpa: u64) -> SeptPublicState {
    let lp = t.backend.module().lp(0).expect("LP 0");
    let gl = GpaAndLevel::new(Gpa(gpa), EptLevel::Pt).expect("GPA and level");
    tdh_mem_sept_rd(&lp, gl, t.vm.tdr())
        .expect("TDH.MEM.SEPT.RD")
        .1
        .state()
}

fn private_pa(t: &Td, gpa: u64) -> Option<u64> {
    t.vm.td()
        .private_pages()
        .into_iter()
        .find(|&(g, _)| g == gpa)
        .map(|(_, p)| p.pa)
}

#[test]
fn lazy_aug_then_scripted_accept() {
    let mut t = td();
    let g = t.guest();
    assert_eq!(
        accept(&g, LAZY).raw(),
        TDCALL_EXITED.raw(),
        "nothing AUGed yet"
    );
    run_idle(&mut t.vcpu);
    let pa = private_pa(&t, LAZY).expect("the backend AUGed the page");
    assert_eq!(sept_state(&t, LAZY), SeptPublicState::PENDING);
    assert_eq!(t.backend.module().page_type(pa), Some(PamtPageType::PT_REG));
    assert_eq!(accept(&g, LAZY).raw(), TdxStatus::SUCCESS.raw());
    assert_eq!(sept_state(&t, LAZY), SeptPublicState::MAPPED);
    g.write(Gpa(LAZY + 8), b"private!").expect("guest write");
    let mut buf = [0u8; 8];
    g.read(Gpa(LAZY + 8), &mut buf).expect("guest read");
    assert_eq!(&buf, b"private!");
    let mut host = [0xFFu8; 8];
    t.backend
        .module()
        .physical_memory()
        .read(pa + 8, &mut host)
        .expect("host read");
    assert_eq!(host, [0; 8], "the host reads zeros from a private page");
    // A plain access to a never-touched page: EPT violation, AUG, then #VE (pending page).
    let other = LAZY + 0x1000;
    assert_eq!(
        g.read(Gpa(other), &mut buf),
        Err(GuestAccessFault::EptViolation { gpa: other })
    );
    run_idle(&mut t.vcpu);
    assert_eq!(
        g.read(Gpa(other), &mut buf),
        Err(GuestAccessFault::VirtualizationException { gpa: other })
    );
    // A private access outside the TD's memory is refused, nothing is AUGed.
    let outside = RAM + 0x1000;
    assert!(g.read(Gpa(outside), &mut buf).is_err());
    let e = t.vcpu.run().unwrap_err();
    assert!(
        matches!(e, BackendError::Invalid { ref why, .. } if why.contains("outside")),
        "{e}"
    );
    assert_eq!(private_pa(&t, outside), None);
}

/// The guest asks MapGPA; the VMM converts with `TdVm::convert`; returns the guest's R10/R11.
fn map_gpa(t: &mut Td, gpa: u64, size: u64, to: PageState) -> Regs {
    let start = match to {
        PageState::Shared => gpa | SHARED_BIT,
        PageState::Private => gpa,
    };
    let vm = t.vm.clone();
    round_trip(
        t,
        TdVmCallRequest::MapGpa {
            start: Gpa(start),
            size,
        },
        |exit| match exit {
            TdExit::MapGpa {
                gpa: g,
                size: s,
                to: want,
                status,
                ..
            } => {
                assert_eq!((g, s, want), (gpa, size, to));
                let range = GpaRange::new(Gpa(g), s).unwrap();
                vm.convert(range, want).expect("convert");
                *status = VmcallStatus::Success;
            }
            other => panic!("{other:?}"),
        },
    )
}

#[test]
fn map_gpa_round_trip_keeps_sept_and_attributes_in_step() {
    let mut t = td();
    let g = t.guest();
    let attrs = Arc::clone(t.mem.attributes());
    // A private page with data.
    assert_eq!(accept(&g, LAZY).raw(), TDCALL_EXITED.raw());
    run_idle(&mut t.vcpu);
    assert_eq!(accept(&g, LAZY).raw(), TdxStatus::SUCCESS.raw());
    g.write(Gpa(LAZY), &[0xAB; 64]).unwrap();
    let pa = private_pa(&t, LAZY).unwrap();

    // Private → shared: BLOCK, TRACK, REMOVE; the frame is the host's again.
    let r = map_gpa(&mut t, LAZY, 4096, PageState::Shared);
    assert_eq!(r.r10, SUCCESS);
    assert_eq!(attrs.state(Gpa(LAZY)).unwrap(), PageState::Shared);
    assert_eq!(private_pa(&t, LAZY), None);
    assert_eq!(sept_state(&t, LAZY), SeptPublicState::FREE);
    assert_eq!(t.backend.module().page_type(pa), Some(PamtPageType::PT_NDA));
    // The VMM (devices) can use the shared page; the private data is gone.
    let view = t.mem.view();
    let mut buf = [0xEEu8; 64];
    view.read_slice(&mut buf, GuestAddress(LAZY))
        .expect("shared read");
    assert_eq!(buf, [0; 64]);
    view.write_slice(&[0x11; 64], GuestAddress(LAZY))
        .expect("shared write");
    drop(view);

    // Shared → private: attribute only, the page comes back lazily (and zeroed).
    let r = map_gpa(&mut t, LAZY, 4096, PageState::Private);
    assert_eq!(r.r10, SUCCESS);
    assert_eq!(attrs.state(Gpa(LAZY)).unwrap(), PageState::Private);
    assert_eq!(private_pa(&t, LAZY), None, "not AUGed until touched");
    assert!(t
        .mem
        .view()
        .read_slice(&mut buf, GuestAddress(LAZY))
        .is_err());
    assert_eq!(accept(&g, LAZY).raw(), TDCALL_EXITED.raw());
    run_idle(&mut t.vcpu);
    assert_eq!(accept(&g, LAZY).raw(), TdxStatus::SUCCESS.raw());
    assert_eq!(sept_state(&t, LAZY), SeptPublicState::MAPPED);
    g.read(Gpa(LAZY), &mut buf).unwrap();
    assert_eq!(buf, [0; 64], "a re-accepted page is zeroed");
    t.backend.module().check_invariants().unwrap();
}

#[test]
fn map_gpa_retry_answer_and_a_bad_retry_gpa() {
    let mut t = td();
    let g = t.guest();
    vmcall(
        &g,
        TdVmCallRequest::MapGpa {
            start: Gpa(LAZY | SHARED_BIT),
            size: 0x3000,
        }
        .encode(),
    );
    match t.vcpu.run().unwrap() {
        TdExit::MapGpa {
            status, retry_gpa, ..
        } => {
            *status = VmcallStatus::Retry;
            *retry_gpa = LAZY + 0x5000;
        }
        other => panic!("{other:?}"),
    }
    // The answer is refused before reaching the guest; the next run shows the exit again.
    let e = t.vcpu.run().unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::Invalid {
                what: "MapGPA retry_gpa",
                ..
            }
        ),
        "{e}"
    );
    assert!(g.take_vmcall_response().is_none());
    match t.vcpu.run().unwrap() {
        TdExit::MapGpa {
            gpa,
            size,
            status,
            retry_gpa,
            ..
        } => {
            assert_eq!((gpa, size), (LAZY, 0x3000));
            *status = VmcallStatus::Retry;
            *retry_gpa = LAZY + 0x1000;
        }
        other => panic!("{other:?}"),
    }
    run_idle(&mut t.vcpu);
    let r = response(&g);
    assert_eq!(r.r10, TdVmCallStatus::RETRY.raw());
    assert_eq!(
        r.r11,
        (LAZY + 0x1000) | SHARED_BIT,
        "retry GPA in the guest's alias"
    );
}

#[test]
fn private_access_to_a_shared_page_is_converted_back_implicitly() {
    let mut t = td();
    let g = t.guest();
    let page = 0x40_0000;
    t.vm.convert(GpaRange::new(Gpa(page), 4096).unwrap(), PageState::Shared)
        .unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        g.read(Gpa(page), &mut buf),
        Err(GuestAccessFault::EptViolation { gpa: page })
    );
    run_idle(&mut t.vcpu);
    assert_eq!(
        t.mem.attributes().state(Gpa(page)).unwrap(),
        PageState::Private,
        "QEMU-style implicit conversion"
    );
    assert!(private_pa(&t, page).is_some(), "and AUGed");
    assert_eq!(sept_state(&t, page), SeptPublicState::PENDING);
}

#[test]
fn mrtd_equals_the_offline_prediction() {
    let backend = backend(EngineChoice::Scripted);
    let vm = backend.create_vm(&TdVmConfig::default()).unwrap();
    vm.set_memory(&memory(Gpaw::Gpaw48)).unwrap();
    let _v = vm.create_vcpu(0, 0).unwrap();
    let code: Vec<u8> = (0..3 * 4096).map(|i| (i * 7 % 251) as u8).collect();
    let hob = [0x5Cu8; 4096];
    vm.add_initial_pages(0x60_0000, &code, true).unwrap();
    vm.add_initial_pages(0x5F_F000, &hob, false).unwrap();
    let mut want = MrtdBuilder::new();
    for (i, page) in code.chunks_exact(4096).enumerate() {
        let page: &[u8; 4096] = page.try_into().unwrap();
        want.add_page(Gpa(0x60_0000 + 4096 * i as u64), page, true)
            .unwrap();
    }
    want.add_page(Gpa(0x5F_F000), &hob, false).unwrap();
    let got = vm.finalize().unwrap();
    assert_eq!(got, Some(want.finalize()));
    // A different image gives a different MRTD (the comparison can fail).
    let vm2 = backend.create_vm(&TdVmConfig::default()).unwrap();
    vm2.set_memory(&memory(Gpaw::Gpaw48)).unwrap();
    let _v2 = vm2.create_vcpu(0, 0).unwrap();
    vm2.add_initial_pages(0x60_0000, &code, false).unwrap();
    vm2.add_initial_pages(0x5F_F000, &hob, false).unwrap();
    assert_ne!(vm2.finalize().unwrap(), got);
}

fn assert_state<T: std::fmt::Debug>(r: Result<T, BackendError>, op: &str) {
    match r {
        Err(BackendError::State { op: o, .. }) => assert_eq!(o, op),
        other => panic!("{op}: expected a state error, got {other:?}"),
    }
}

#[test]
fn wrong_phase_calls_are_state_errors() {
    let backend = backend(EngineChoice::Scripted);
    let vm = backend.create_vm(&TdVmConfig::default()).unwrap();
    let mem = memory(Gpaw::Gpaw48);
    let page = GpaRange::new(Gpa(LAZY), 4096).unwrap();
    assert_state(
        vm.add_initial_pages(IMAGE, &[0; 4096], true),
        "add_initial_pages",
    );
    assert_state(vm.convert(page, PageState::Shared), "convert");
    vm.set_memory(&mem).unwrap();
    assert_state(vm.set_memory(&mem), "set_memory");
    let mut v = vm.create_vcpu(0, 0).unwrap();
    assert_state(vm.create_vcpu(0, 0), "create_vcpu");
    assert_state(v.run(), "run");
    vm.add_initial_pages(IMAGE, &[1; 4096], true).unwrap();
    vm.finalize().unwrap();
    assert_state(vm.finalize(), "finalize");
    assert_state(
        vm.add_initial_pages(LAZY, &[0; 4096], true),
        "add_initial_pages",
    );
    assert_state(vm.create_vcpu(1, 0), "create_vcpu");
    // A finalized TD without memory cannot run (its engine has no configuration).
    let bare = backend.create_vm(&TdVmConfig::default()).unwrap();
    let mut bv = bare.create_vcpu(0, 0).unwrap();
    bare.finalize().unwrap();
    assert_state(bv.run(), "run");
    // Arguments are checked too.
    let v8 = TdVmConfig {
        max_vcpus: 8,
        ..TdVmConfig::default()
    };
    let vm = backend.create_vm(&v8).unwrap();
    vm.set_memory(&memory(Gpaw::Gpaw48)).unwrap();
    assert!(matches!(
        vm.create_vcpu(8, 0),
        Err(BackendError::Invalid {
            what: "vCPU index",
            ..
        })
    ));
    for (gpa, len) in [
        (IMAGE + 1, 4096),
        (IMAGE, 100),
        (RAM, 4096),
        (SHARED_BIT, 4096),
    ] {
        let e = vm.add_initial_pages(gpa, &vec![0; len], true).unwrap_err();
        assert!(
            matches!(e, BackendError::Invalid { .. }),
            "{gpa:#x}+{len}: {e}"
        );
    }
    let shared = GpaRange::new(Gpa(LAZY), 4096).unwrap();
    vm.convert(shared, PageState::Shared).unwrap();
    let e = vm.add_initial_pages(LAZY, &[0; 4096], true).unwrap_err();
    assert!(
        matches!(e, BackendError::Invalid { .. }),
        "shared page: {e}"
    );
    let e = vm
        .set_memory(&memory(Gpaw::Gpaw52))
        .expect_err("memory already set");
    assert!(matches!(e, BackendError::State { .. }));
    let vm52 = backend
        .create_vm(&TdVmConfig {
            gpaw: Gpaw::Gpaw52,
            ..TdVmConfig::default()
        })
        .unwrap();
    let e = vm52.set_memory(&memory(Gpaw::Gpaw48)).unwrap_err();
    assert!(
        matches!(e, BackendError::Invalid { what: "memory", .. }),
        "{e}"
    );
}

#[test]
fn configs_the_module_would_refuse_are_invalid_with_field_and_value() {
    let backend = backend(EngineChoice::Scripted);
    let caps = backend.capabilities().unwrap();
    let info = backend.driver().info();
    assert_eq!(caps.supported_attributes, info.attributes_fixed0);
    assert_eq!(caps.supported_xfam, info.xfam_fixed0);
    assert_eq!(
        caps.max_vcpus,
        u32::from(info.max_vcpus_per_td.unwrap_or(576))
    );
    assert_eq!(caps.configurable_cpuid.len(), info.cpuid_configs.len());
    assert!(!caps.configurable_cpuid.is_empty());
    let bad_attr = (0..64)
        .map(|b| 1u64 << b)
        .find(|b| b & caps.supported_attributes == 0)
        .expect("an unsupported attribute bit");
    let (leaf, subleaf, allowed) = caps.configurable_cpuid[0];
    let bad_reg = allowed.iter().position(|&m| m != u32::MAX).unwrap();
    let mut regs = [0u32; 4];
    regs[bad_reg] = !allowed[bad_reg];
    let cases: Vec<(TdVmConfig, &str, String)> = vec![
        (
            TdVmConfig {
                attributes: bad_attr,
                ..TdVmConfig::default()
            },
            "attributes",
            format!("{bad_attr:#x}"),
        ),
        (
            TdVmConfig {
                xfam: 0x1,
                ..TdVmConfig::default()
            },
            "xfam",
            "0x1".into(),
        ),
        (
            TdVmConfig {
                max_vcpus: 0,
                ..TdVmConfig::default()
            },
            "max_vcpus",
            "0".into(),
        ),
        (
            TdVmConfig {
                tsc_hz: 2_510_000_000,
                ..TdVmConfig::default()
            },
            "tsc_hz",
            "2510000000".into(),
        ),
        (
            TdVmConfig {
                tsc_hz: 25_000_000,
                ..TdVmConfig::default()
            },
            "tsc_hz",
            "25000000".into(),
        ),
        (
            TdVmConfig {
                cpuid: vec![CpuidEntry {
                    leaf: 0x7777_0000,
                    subleaf: None,
                    regs: [0; 4],
                }],
                ..TdVmConfig::default()
            },
            "cpuid",
            "0x77770000".into(),
        ),
        (
            TdVmConfig {
                cpuid: vec![CpuidEntry {
                    leaf,
                    subleaf,
                    regs,
                }],
                ..TdVmConfig::default()
            },
            "cpuid",
            format!("{:#x}", regs[bad_reg]),
        ),
    ];
    for (cfg, field, value) in cases {
        match backend.create_vm(&cfg) {
            Err(BackendError::Invalid { what, why }) => {
                assert_eq!(what, field);
                assert!(why.contains(&value), "{field}: {why:?} lacks {value}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    // Allowed values pass, and the TSC frequency reaches TD_PARAMS in 25 MHz units.
    let ok = TdVmConfig {
        tsc_hz: 3_000_000_000,
        cpuid: vec![CpuidEntry {
            leaf,
            subleaf,
            regs: allowed,
        }],
        ..TdVmConfig::default()
    };
    assert_eq!(backend.td_config(&ok).unwrap().tsc_frequency, 120);
    let default = backend.td_config(&TdVmConfig::default()).unwrap();
    assert_eq!(default.tsc_frequency, 100, "tsc_hz 0: 2.5 GHz");
    backend.create_vm(&ok).unwrap();
}

#[test]
fn dropping_the_td_reclaims_every_page() {
    let mut t = td();
    let m = Arc::clone(t.backend.module());
    let g = t.guest();
    assert_eq!(accept(&g, LAZY).raw(), TDCALL_EXITED.raw());
    run_idle(&mut t.vcpu);
    let free0 = t.backend.driver().frames().free_frames();
    let hkid = t.vm.td().hkid();
    let owned = t.vm.td().owned_pages();
    assert!(owned.len() > 10, "TDR, TDCS, TDVPS, S-EPT, private pages");
    for &p in &owned {
        assert_ne!(m.page_type(p), Some(PamtPageType::PT_NDA), "{p:#x}");
        assert!(m.physical_memory().is_td_owned(p), "{p:#x}");
    }
    assert_eq!(m.hkid_state(hkid), Some(KotState::ASSIGNED));
    let Td {
        backend, vm, vcpu, ..
    } = t;
    drop(vm);
    // The vCPU keeps the TD alive.
    assert_eq!(m.hkid_state(hkid), Some(KotState::ASSIGNED));
    drop(vcpu);
    for &p in &owned {
        assert_eq!(m.page_type(p), Some(PamtPageType::PT_NDA), "{p:#x}");
    }
    assert_eq!(m.hkid_state(hkid), Some(KotState::FREE));
    assert_eq!(
        backend.driver().frames().free_frames(),
        free0 + owned.len() as u64,
        "every frame of the TD is back in the allocator"
    );
    m.check_invariants().unwrap();
}

#[test]
fn kicker_interrupts_a_vcpu_running_on_another_thread() {
    let (t, engine) = queue_td();
    let Td {
        backend: _b,
        vm: _vm,
        mut vcpu,
        ..
    } = t;
    // A host interrupt without a kick is re-entered, not reported.
    engine.push(async_exit(1, 0));
    let kicker = vcpu.kicker();
    let runner = std::thread::spawn(move || {
        let exit = vcpu.run().map(|e| format!("{e:?}"));
        (exit, vcpu)
    });
    // Wait until the vCPU is inside the guest (second engine run), then kick.
    while engine.runs.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    kicker.kick();
    let (exit, mut vcpu) = runner.join().expect("vCPU thread");
    assert_eq!(exit.unwrap(), "Interrupted");
    assert_eq!(engine.runs.load(Ordering::SeqCst), 2, "one re-entry");
    assert_eq!(engine.kicks.load(Ordering::SeqCst), 1);
    // A kick while the vCPU is outside `run` makes the next run return at once.
    kicker.kick();
    assert!(matches!(vcpu.run().unwrap(), TdExit::Interrupted));
    assert_eq!(engine.runs.load(Ordering::SeqCst), 2, "not entered");
}

#[test]
fn triple_fault_is_shutdown_and_ept_violations_aug_lazily() {
    let (mut t, engine) = queue_td();
    // Lazy accept on a custom engine: EPT violation on a private GPA → AUG → re-entry.
    engine.push(async_exit(48, LAZY + 0x123));
    engine.push(async_exit(2, 0));
    assert!(matches!(t.vcpu.run().unwrap(), TdExit::Shutdown));
    assert!(
        private_pa(&t, LAZY).is_some(),
        "AUGed before the triple fault"
    );
    assert_eq!(engine.runs.load(Ordering::SeqCst), 2);
    let e = t.vcpu.run().unwrap_err();
    assert!(
        matches!(e, BackendError::Dead(ref m) if m.contains("triple")),
        "{e}"
    );
}

#[test]
fn conversion_to_shared_kicks_the_vcpus_and_removes_the_page() {
    let (mut t, engine) = queue_td();
    engine.push(async_exit(48, LAZY));
    // The vCPU blocks in the guest after the AUG; the kick of the conversion does not
    // reach the VMM as an exit (no kicker fired), so end the run with the kicker.
    let kicker = t.vcpu.kicker();
    let k = std::thread::spawn({
        let engine = Arc::clone(&engine);
        move || {
            while engine.runs.load(Ordering::SeqCst) < 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            kicker.kick();
        }
    });
    assert!(matches!(t.vcpu.run().unwrap(), TdExit::Interrupted));
    k.join().unwrap();
    assert!(private_pa(&t, LAZY).is_some());
    let kicks = engine.kicks.load(Ordering::SeqCst);
    t.vm.convert(GpaRange::new(Gpa(LAZY), 4096).unwrap(), PageState::Shared)
        .unwrap();
    assert!(
        engine.kicks.load(Ordering::SeqCst) > kicks,
        "TRACK is followed by a kick"
    );
    assert_eq!(private_pa(&t, LAZY), None);
    assert_eq!(sept_state(&t, LAZY), SeptPublicState::FREE);
    // A repeated EPT violation on a page that is already there is bounded.
    engine.push(async_exit(48, IMAGE));
    for _ in 0..70 {
        engine.push(async_exit(48, IMAGE));
    }
    let e = t.vcpu.run().unwrap_err();
    assert!(
        matches!(e, BackendError::Dead(ref m) if m.contains("no progress")),
        "{e}"
    );
}

#[test]
fn two_vcpus_run_on_their_own_threads_and_lps() {
    let backend = backend(EngineChoice::Scripted);
    let config = TdVmConfig {
        max_vcpus: 2,
        ..TdVmConfig::default()
    };
    let vm = backend.create_vm(&config).unwrap();
    vm.set_memory(&memory(Gpaw::Gpaw48)).unwrap();
    let vcpus: Vec<EmulatedVcpu> = (0..2).map(|i| vm.create_vcpu(i, 0).unwrap()).collect();
    assert_eq!(vcpus.iter().map(|v| v.lp()).collect::<Vec<_>>(), [0, 1]);
    vm.add_initial_pages(IMAGE, &[0; 4096], true).unwrap();
    vm.finalize().unwrap();
    let threads: Vec<_> = vcpus
        .into_iter()
        .map(|mut v| {
            let g = backend.module().scripted_vcpu(v.tdvpr());
            std::thread::spawn(move || {
                let i = v.index();
                for n in 0..50u32 {
                    vmcall(
                        &g,
                        TdVmCallRequest::Io {
                            size: 4,
                            direction: Direction::Read,
                            port: 0x510 + i as u16,
                            data: 0,
                        }
                        .encode(),
                    );
                    match v.run().unwrap() {
                        TdExit::IoIn { port, data } => {
                            assert_eq!(port, 0x510 + i as u16);
                            data.copy_from_slice(&(i * 1000 + n).to_le_bytes());
                        }
                        other => panic!("vCPU {i}: {other:?}"),
                    }
                    run_idle(&mut v);
                    assert_eq!(response(&g).r11, u64::from(i * 1000 + n));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("vCPU thread");
    }
    backend.module().check_invariants().unwrap();
}

/// Deterministic pseudo-random source for the hostile-register test.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Mostly small or boundary values, sometimes anything.
    fn operand(&mut self) -> u64 {
        match self.next() % 6 {
            0 => self.next(),
            1 => self.next() % 16,
            2 => (self.next() % RAM) & !0xFFF,
            3 => ((self.next() % RAM) & !0xFFF) | SHARED_BIT,
            4 => [0, 1, 2, 4, 8, 32, 255, 256, u64::MAX, 1 << 63][(self.next() % 10) as usize],
            _ => self.next() % 0x1_0000,
        }
    }
}

#[test]
fn hostile_tdvmcall_registers_never_panic_the_backend() {
    let subs: Vec<u64> = (0x10000..=0x10005)
        .chain([10, 12, 30, 31, 32, 48, 54])
        .collect();
    let mut rng = SplitMix(0x7D5_2026);
    let mut t = td();
    let mut exits = 0u32;
    for i in 0..3000u32 {
        let mut regs = Regs {
            rax: u64::from(TdcallLeaf::TDG_VP_VMCALL.raw()),
            rcx: 0xFC00 | (rng.next() & 0x3CC),
            r10: if rng.next() % 8 == 0 {
                rng.operand()
            } else {
                0
            },
            r11: if rng.next() % 8 == 0 {
                rng.operand()
            } else {
                subs[(rng.next() % subs.len() as u64) as usize]
            },
            r12: rng.operand(),
            r13: rng.operand(),
            r14: rng.operand(),
            r15: rng.operand(),
            rbx: rng.next(),
            rdx: rng.next(),
            ..Regs::default()
        };
        let g = t.guest();
        assert_eq!(
            g.tdcall(&mut regs).raw(),
            TdxStatus::SUCCESS.raw(),
            "call {i}"
        );
        // The VMM answers every exit with plausible values (a random status).
        let mut fatal = false;
        for _ in 0..4 {
            let vm = t.vm.clone();
            let pick = rng.next();
            match t.vcpu.run() {
                Ok(TdExit::Interrupted) => break,
                Ok(TdExit::ReportFatalError { .. }) => {
                    fatal = true;
                    break;
                }
                Ok(exit) => {
                    exits += 1;
                    match exit {
                        TdExit::IoIn { data, .. } | TdExit::MmioRead { data, .. } => {
                            data.fill(pick as u8)
                        }
                        TdExit::Cpuid { regs, .. } => *regs = [pick as u32; 4],
                        TdExit::RdMsr { value, .. } => *value = pick,
                        TdExit::MapGpa {
                            gpa,
                            size,
                            to,
                            status,
                            ..
                        } => {
                            if pick % 2 == 0 {
                                if let Ok(r) = GpaRange::new(Gpa(gpa), size) {
                                    let _ = vm.convert(r, to);
                                }
                            } else {
                                *status = VmcallStatus::InvalidOperand;
                            }
                        }
                        TdExit::GetQuote { status, .. } => *status = VmcallStatus::GpaInUse,
                        _ => {}
                    }
                }
                Err(e) => panic!("call {i} ({regs:x?}): {e}"),
            }
        }
        if fatal {
            assert!(matches!(t.vcpu.run(), Err(BackendError::Dead(_))));
            t = td();
        }
    }
    assert!(exits > 500, "the VMM saw {exits} exits");
    t.backend.module().check_invariants().unwrap();
}

#[test]
fn shared_access_to_a_private_page_is_converted_to_shared_implicitly() {
    let (mut t, engine) = queue_td();
    // The initial image page is private and mapped; a shared-alias access converts it.
    engine.push(async_exit(48, IMAGE | SHARED_BIT));
    engine.push(async_exit(2, 0));
    assert!(matches!(t.vcpu.run().unwrap(), TdExit::Shutdown));
    assert_eq!(
        t.mem.attributes().state(Gpa(IMAGE)).unwrap(),
        PageState::Shared
    );
    assert_eq!(private_pa(&t, IMAGE), None, "removed from the S-EPT");
    assert_eq!(sept_state(&t, IMAGE), SeptPublicState::FREE);
}
